using RawGan.Engine.Autograd;
using RawGan.Engine.Backends.Cpu;

namespace RawGan.Engine.Tests;

public class TapeAndScopeTests
{
    public static TheoryData<string> Backends => TestBackends.All;

    [Theory]
    [MemberData(nameof(Backends))]
    public void BackwardAccumulatesIntoLeafGradients(string backend)
    {
        var be = TestBackends.Get(backend);
        using var w = Tensor.FromArray(be, [1, 2, 3], new Shape(3));
        w.RequiresGrad = true;
        using (var scope = new Scope())
        {
            // L = sum(w^2) + sum(3 w): dL/dw = 2 w + 3. w is used twice: both paths must add up.
            Tape.Backward(Ops.Add(Ops.Sum(Ops.Square(w)), Ops.Sum(Ops.Scale(w, 3))));
        }
        Assert.Equal([5f, 7, 9], w.Grad!.ToArray());
        using (var scope = new Scope()) Tape.Backward(Ops.Sum(w));
        Assert.Equal([6f, 8, 10], w.Grad!.ToArray());
        w.ZeroGrad();
        Assert.Null(w.Grad);
    }

    [Theory]
    [MemberData(nameof(Backends))]
    public void NoGradRecordsNothing(string backend)
    {
        var be = TestBackends.Get(backend);
        using var scope = new Scope();
        var w = Tensor.FromArray(be, [1, 2], new Shape(2));
        w.RequiresGrad = true;
        using (Tape.NoGrad())
        {
            var y = Ops.Square(w);
            Assert.Null(y.GradFn);
            Assert.False(y.RequiresGrad);
        }
        Assert.NotNull(Ops.Square(w).GradFn);
        Assert.Null(Ops.Detach(Ops.Square(w)).GradFn);
    }

    [Theory]
    [MemberData(nameof(Backends))]
    public void GradOfAnUnusedInputIsZeroAndGradStopsAtTheRequestedInputs(string backend)
    {
        var be = TestBackends.Get(backend);
        using var scope = new Scope();
        var a = Tensor.FromArray(be, [1, 2], new Shape(2)); a.RequiresGrad = true;
        var b = Tensor.FromArray(be, [5, 5], new Shape(2)); b.RequiresGrad = true;
        var h = Ops.Square(a);               // an intermediate
        var y = Ops.Sum(Ops.Mul(h, h));      // y = sum(a^4)
        var grads = Tape.Grad([y], [h, b]);
        Assert.Equal([2f, 8], grads[0].ToArray());   // dy/dh = 2h
        Assert.Equal([0f, 0], grads[1].ToArray());
        Assert.Null(a.Grad);                         // Grad never touches .Grad
    }

    [Fact]
    public void GradientsNobodyAskedForAreNotComputed()
    {
        // The gradient with respect to an input of a convolution needs no weight gradient, even
        // though the weight requires one: the tape tells each rule which inputs are wanted.
        using var cpu = new CpuBackend();
        var profiler = new RawGan.Engine.Backends.ProfilingBackend(cpu);
        using var scope = new Scope();
        var w = Tensor.RandomNormal(profiler, new Shape(4, 3, 3, 3), new Rng(1));
        w.RequiresGrad = true;
        var x = Tensor.RandomNormal(profiler, new Shape(2, 3, 5, 5), new Rng(2));
        x.RequiresGrad = true;
        var y = Ops.Sum(Ops.LeakyRelu(Ops.Conv2d(Ops.LeakyRelu(Ops.Conv2d(x, w)), Ops.Reshape(Ops.Scale(w, 1f), new Shape(3, 4, 3, 3)))));
        profiler.Reset();
        Tape.Grad([y], [x]);
        var calls = profiler.Report().ToDictionary(r => r.Kernel, r => r.Calls);
        Assert.Equal(2, calls["Conv2dBackwardInput"]);
        Assert.False(calls.ContainsKey("Conv2dBackwardWeight"));
        profiler.Reset();
        Tape.Grad([y], [w]);
        calls = profiler.Report().ToDictionary(r => r.Kernel, r => r.Calls);
        Assert.Equal(2, calls["Conv2dBackwardWeight"]);
        Assert.Equal(1, calls["Conv2dBackwardInput"]);   // only between the two convolutions
    }

    [Theory]
    [MemberData(nameof(Backends))]
    public void SecondDerivativeOfACubicIsExact(string backend)
    {
        var be = TestBackends.Get(backend);
        using var scope = new Scope();
        var x = Tensor.FromArray(be, [2f], new Shape(1)); x.RequiresGrad = true;
        var y = Ops.Sum(Ops.Mul(Ops.Square(x), x));             // x^3
        var dy = Tape.Grad(y, x, createGraph: true);             // 3x^2 = 12
        Assert.Equal(12f, dy.Item());
        var d2y = Tape.Grad(Ops.Sum(dy), x, createGraph: true);  // 6x = 12
        Assert.Equal(12f, d2y.Item());
        var d3y = Tape.Grad(Ops.Sum(d2y), x);                    // 6
        Assert.Equal(6f, d3y.Item());
    }

    [Fact]
    public void ScopedForwardAndBackwardReturnMemoryToBaseline()
    {
        using var be = new CpuBackend();   // a private backend, so the counters are ours alone
        using var w = Tensor.RandomNormal(be, new Shape(4, 3, 3, 3), new Rng(1));
        w.RequiresGrad = true;
        long baseline = be.Memory.BytesInUse;
        for (int step = 0; step < 3; step++)
        {
            using var scope = new Scope();
            var x = Tensor.RandomNormal(be, new Shape(2, 3, 8, 8), new Rng(2));
            x.RequiresGrad = true;
            var y = Ops.MinibatchStdDev(Ops.AvgPool2x(Ops.LeakyRelu(Ops.Conv2d(x, w, 0.2f))));
            var g = Tape.Grad([Ops.Sum(y)], [x], createGraph: true)[0];
            var loss = Ops.Mean(Ops.GradientPenalty(g));
            Tape.Backward(loss);
            Assert.True(scope.Count > 10);
            Assert.True(be.Memory.BytesInUse > baseline);
        }
        // Only the weight's accumulated gradient outlives the scopes.
        Assert.Equal(baseline + RawGan.Engine.Backends.CachingAllocator.RoundUp(w.Grad!.Length) * sizeof(float), be.Memory.BytesInUse);
        w.ZeroGrad();
        Assert.Equal(baseline, be.Memory.BytesInUse);
        // After the first step the cache serves every request: no new system allocations.
        long allocations = be.Memory.SystemAllocations;
        using (var scope = new Scope())
        {
            var x = Tensor.RandomNormal(be, new Shape(2, 3, 8, 8), new Rng(2));
            Tape.Backward(Ops.Sum(Ops.Conv2d(x, w, 0.2f)));
        }
        w.ZeroGrad();
        Assert.Equal(allocations, be.Memory.SystemAllocations);
    }

    [Fact]
    public void ABackwardPassThroughAFreedTensorThrows()
    {
        var be = CpuBackend.Shared;
        using var w = Tensor.FromArray(be, [1, 2, 3], new Shape(3));
        w.RequiresGrad = true;
        using var scope = new Scope();
        var h = Ops.Square(w);
        var y = Ops.Sum(Ops.Scale(h, 2));
        h.Dispose();
        Assert.Null(h.GradFn);      // its node went back to the pool...
        _ = Ops.Square(w);          // ...and is probably serving this op now
        var e = Assert.Throws<InvalidOperationException>(() => Tape.Backward(y));
        Assert.Contains("freed", e.Message);
    }

    [Fact]
    public void KeepHandsATensorToTheEnclosingScope()
    {
        var be = CpuBackend.Shared;
        Tensor kept, dropped;
        using (var outer = new Scope())
        {
            using (var inner = new Scope())
            {
                kept = inner.Keep(Tensor.Zeros(be, new Shape(3)));
                dropped = Tensor.Zeros(be, new Shape(3));
            }
            Assert.True(dropped.IsDisposed);
            Assert.False(kept.IsDisposed);
            Assert.Equal(1, outer.Count);
        }
        Assert.True(kept.IsDisposed);
        var ex = Assert.Throws<ObjectDisposedException>(() => kept.ToArray());
        Assert.Contains("[3]", ex.Message);
    }

    [Fact]
    public void RngIsDeterministicAndHasTheRightMoments()
    {
        var a = new float[100_000];
        var b = new float[100_000];
        new Rng(42).FillNormal(a);
        new Rng(42).FillNormal(b);
        Assert.Equal(a, b);
        Assert.Equal(0, a.Average(), 2);
        Assert.Equal(1, Math.Sqrt(a.Select(v => (double)v * v).Average()), 2);
        var u = new float[100_000];
        var rng = new Rng(43);
        rng.FillUniform(u);
        Assert.All(u, v => Assert.InRange(v, 0f, 0.99999995f));
        Assert.Equal(0.5, u.Average(), 2);
        // The state round-trips: a restored generator continues the same sequence.
        var state = rng.GetState();
        ulong next = rng.NextUInt64();
        Assert.Equal(next, Rng.FromState(state).NextUInt64());
        // Different seeds differ.
        Assert.NotEqual(new Rng(1).NextUInt64(), new Rng(2).NextUInt64());
    }

    [Fact]
    public void RandomTensorsAreIdenticalOnEveryBackend()
    {
        var reference = Tensor.RandomNormal(CpuBackend.Shared, new Shape(3, 5), new Rng(9));
        try
        {
            foreach (var name in TestBackends.Names)
            {
                using var t = Tensor.RandomNormal(TestBackends.Get(name), new Shape(3, 5), new Rng(9));
                Assert.Equal(reference.ToArray(), t.ToArray());
            }
        }
        finally { reference.Dispose(); }
    }

    [Fact]
    public void ARecyclingScopeReusesTensorObjectsAndTheTapeNoticesARecycledInput()
    {
        using var be = new CpuBackend();
        using var w = Tensor.FromArray(be, [1, 2, 3], new Shape(3));
        w.RequiresGrad = true;
        using var outer = new Scope();
        Tensor a, y;
        using (var inner = Scope.Rent(recycle: true))
        {
            a = Ops.Scale(w, 2f);
            y = inner.Keep(Ops.Square(a));      // y outlives the scope; its node still points to a
        }
        Assert.True(a.IsDisposed);
        using (var next = Scope.Rent(recycle: true))
        {
            var b = Ops.Scale(w, 3f);
            Assert.Same(a, b);                  // the object came back as a new tensor
            Assert.False(b.IsDisposed);
            Assert.Equal([3f, 6f, 9f], b.ToArray());
            // A backward pass through y would read b's values as if they were a's: it must refuse.
            var e = Assert.Throws<InvalidOperationException>(() => Tape.Grad(Ops.Sum(y), w));
            Assert.Contains("freed before the backward pass", e.Message);
        }
        // An ordinary scope frees without recycling: the object stays disposed.
        Tensor c;
        using (new Scope()) c = Ops.Scale(w, 4f);
        using (Scope.Rent(recycle: true)) Assert.NotSame(c, Ops.Scale(w, 5f));
        Assert.True(c.IsDisposed);
    }

    [Fact]
    public void ScopesOpenedInsideARecyclingScopeRecycleAndRentedScopesAreReused()
    {
        using var rented = Scope.Rent(recycle: true);
        using (var nested = new Scope()) Assert.True(nested.Recycles);
        Scope first;
        using (first = Scope.Rent()) Assert.True(first.Recycles);
        using (var second = Scope.Rent()) Assert.Same(first, second);
    }
}
