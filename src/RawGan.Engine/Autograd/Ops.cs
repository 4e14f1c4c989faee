using RawGan.Engine.Backends;

namespace RawGan.Engine.Autograd;

/// <summary>
/// The closed set of differentiable operations. Each op checks its arguments (naming itself and
/// the shapes involved), runs one backend kernel, and, if the tape is recording and an input
/// requires a gradient, records a <see cref="Node"/> whose backward rule is written with these
/// same ops. Results belong to the current <see cref="Scope"/>.
/// </summary>
public static partial class Ops
{
    // ------------------------------------------------------------------ helpers

    private static bool Recording(Tensor a) => Tape.IsRecording && a.RequiresGrad;
    private static bool Recording(Tensor a, Tensor b) => Tape.IsRecording && (a.RequiresGrad || b.RequiresGrad);
    private static bool Recording(Tensor a, Tensor b, Tensor c) => Tape.IsRecording && (a.RequiresGrad || b.RequiresGrad || c.RequiresGrad);

    private static IBackend SameBackend(string op, Tensor a, Tensor b)
    {
        if (!ReferenceEquals(a.Backend, b.Backend))
            throw new ArgumentException($"{op}: {a.Describe()} is on {a.Backend.Name} but {b.Describe()} is on {b.Backend.Name}");
        return a.Backend;
    }

    /// <summary>NumPy broadcasting (right-aligned): each dimension equal, or 1 on one side.</summary>
    public static Shape BroadcastShape(string op, Shape a, Shape b)
    {
        int rank = Math.Max(a.Rank, b.Rank);
        Span<int> dims = stackalloc int[rank];
        for (int i = 0; i < rank; i++)
        {
            int da = i - (rank - a.Rank) >= 0 ? a[i - (rank - a.Rank)] : 1;
            int db = i - (rank - b.Rank) >= 0 ? b[i - (rank - b.Rank)] : 1;
            if (da != db && da != 1 && db != 1)
                throw new ArgumentException($"{op}: shapes {a} and {b} do not broadcast (axis {i} of the aligned shapes: {da} vs {db})");
            dims[i] = da == 1 ? db : da;
        }
        return new Shape(dims);
    }

    /// <summary>True if <paramref name="small"/> broadcasts to exactly <paramref name="big"/>.</summary>
    private static bool BroadcastsTo(Shape small, Shape big)
    {
        if (small.Rank > big.Rank) return false;
        for (int i = 0; i < small.Rank; i++)
        {
            int ds = small[i], db = big[i + big.Rank - small.Rank];
            if (ds != db && ds != 1) return false;
        }
        return true;
    }

    /// <summary>Which axes of x are reduced: the given ones (negative counts from the end), or all if none are given.</summary>
    private static Dims4Mask ReducedAxes(string op, Tensor x, ReadOnlySpan<int> axes)
    {
        if (axes.IsEmpty) return new Dims4Mask((1 << x.Shape.Rank) - 1);
        int mask = 0;
        foreach (int axis in axes)
        {
            int a = axis < 0 ? axis + x.Shape.Rank : axis;
            if (a < 0 || a >= x.Shape.Rank)
                throw new ArgumentException($"{op}: axis {axis} is out of range for {x.Describe()}");
            mask |= 1 << a;
        }
        return new Dims4Mask(mask);
    }

    /// <summary>A set of axes as bits (axis i is bit i): no array to allocate.</summary>
    private readonly record struct Dims4Mask(int Bits)
    {
        public bool Has(int axis) => (Bits >> axis & 1) != 0;
    }

    // ------------------------------------------------------------------ broadcasting arithmetic

    private delegate void BinaryKernel(IBackend be, DeviceBuffer a, Dims4 ad, DeviceBuffer b, Dims4 bd, DeviceBuffer y, Dims4 yd);

    private static Tensor Binary(string op, Tensor a, Tensor b, BinaryKernel kernel, BackwardRule rule)
    {
        var backend = SameBackend(op, a, b);
        var shape = BroadcastShape(op, a.Shape, b.Shape);
        var y = Tensor.Empty(backend, shape);
        kernel(backend, a.Buffer, a.Dims, b.Buffer, b.Dims, y.Buffer, y.Dims);
        if (Recording(a, b)) y.GradFn = Node.Record(op, a, b, y, rule);
        return y;
    }

    /// <summary>a + b, broadcasting.</summary>
    public static Tensor Add(Tensor a, Tensor b) => Binary("Add", a, b,
        static (be, a, ad, b, bd, y, yd) => be.Add(a, ad, b, bd, y, yd),
        static (n, g, gi) =>
        {
            if (n.Wants(0)) gi[0] = SumTo(g, n.Inputs[0].Shape);
            if (n.Wants(1)) gi[1] = SumTo(g, n.Inputs[1].Shape);
        });

    /// <summary>a - b, broadcasting.</summary>
    public static Tensor Sub(Tensor a, Tensor b) => Binary("Sub", a, b,
        static (be, a, ad, b, bd, y, yd) => be.Sub(a, ad, b, bd, y, yd),
        static (n, g, gi) =>
        {
            if (n.Wants(0)) gi[0] = SumTo(g, n.Inputs[0].Shape);
            if (n.Wants(1)) gi[1] = Scale(SumTo(g, n.Inputs[1].Shape), -1f);
        });

    /// <summary>a * b elementwise, broadcasting.</summary>
    public static Tensor Mul(Tensor a, Tensor b) => Binary("Mul", a, b,
        static (be, a, ad, b, bd, y, yd) => be.Mul(a, ad, b, bd, y, yd),
        static (n, g, gi) =>
        {
            var (a, b) = (n.Inputs[0], n.Inputs[1]);
            if (n.Wants(0)) gi[0] = SumTo(Mul(g, b), a.Shape);
            if (n.Wants(1)) gi[1] = SumTo(Mul(g, a), b.Shape);
        });

    /// <summary>a / b elementwise, broadcasting.</summary>
    public static Tensor Div(Tensor a, Tensor b) => Binary("Div", a, b,
        static (be, a, ad, b, bd, y, yd) => be.Div(a, ad, b, bd, y, yd),
        static (n, g, gi) =>
        {
            var (a, b) = (n.Inputs[0], n.Inputs[1]);
            if (n.Wants(0)) gi[0] = SumTo(Div(g, b), a.Shape);
            // d(a/b)/db = -a/b^2 = -y/b
            if (n.Wants(1)) gi[1] = Scale(SumTo(Div(Mul(g, n.Output), b), b.Shape), -1f);
        });

    /// <summary>Repeats x along its size-1 axes to <paramref name="shape"/>. Adjoint of <see cref="SumTo"/>.</summary>
    public static Tensor BroadcastTo(Tensor x, Shape shape)
    {
        if (!BroadcastsTo(x.Shape, shape))
            throw new ArgumentException($"BroadcastTo: {x.Describe()} cannot be broadcast to {shape}");
        if (x.Shape == shape) return x;
        var y = Tensor.Empty(x.Backend, shape);
        x.Backend.BroadcastTo(x.Buffer, x.Dims, y.Buffer, y.Dims);
        if (Recording(x)) y.GradFn = Node.Record("BroadcastTo", x, y, static (n, g, gi) => gi[0] = SumTo(g, n.Inputs[0].Shape));
        return y;
    }

    /// <summary>Sums x over the axes where <paramref name="shape"/> is 1 (right-aligned), giving
    /// that shape: how a broadcast operand's gradient is reduced. Adjoint of <see cref="BroadcastTo"/>.</summary>
    public static Tensor SumTo(Tensor x, Shape shape)
    {
        if (!BroadcastsTo(shape, x.Shape))
            throw new ArgumentException($"SumTo: {x.Describe()} cannot be summed to {shape}");
        if (x.Shape == shape) return x;
        var y = Tensor.Empty(x.Backend, shape);
        x.Backend.SumTo(x.Buffer, x.Dims, y.Buffer, y.Dims);
        if (Recording(x)) y.GradFn = Node.Record("SumTo", x, y, static (n, g, gi) => gi[0] = BroadcastTo(g, n.Inputs[0].Shape));
        return y;
    }

    /// <summary>Sum over the given axes (all axes if none are given).</summary>
    public static Tensor Sum(Tensor x, ReadOnlySpan<int> axes = default, bool keepDims = false) =>
        Sum(x, ReducedAxes("Sum", x, axes), keepDims);

    private static Tensor Sum(Tensor x, Dims4Mask reduced, bool keepDims)
    {
        int rank = x.Shape.Rank, squeezedRank = 0;
        Span<int> kept = stackalloc int[rank], squeezed = stackalloc int[rank];
        for (int i = 0; i < rank; i++)
        {
            kept[i] = reduced.Has(i) ? 1 : x.Shape[i];
            if (!reduced.Has(i)) squeezed[squeezedRank++] = x.Shape[i];
        }
        var s = SumTo(x, new Shape(kept));
        return keepDims ? s : Reshape(s, new Shape(squeezed[..squeezedRank]));
    }

    /// <summary>Mean over the given axes (all axes if none are given).</summary>
    public static Tensor Mean(Tensor x, ReadOnlySpan<int> axes = default, bool keepDims = false)
    {
        var reduced = ReducedAxes("Mean", x, axes);
        long count = 1;
        for (int i = 0; i < x.Shape.Rank; i++) if (reduced.Has(i)) count *= x.Shape[i];
        if (count == 0) throw new ArgumentException($"Mean: no elements to average in {x.Describe()}");
        return Scale(Sum(x, reduced, keepDims), 1f / count);
    }

    // ------------------------------------------------------------------ unary

    /// <summary>a * x (also how an equalized-learning-rate multiplier is applied outside conv and matmul).</summary>
    public static Tensor Scale(Tensor x, float a)
    {
        var y = Tensor.Empty(x.Backend, x.Shape);
        x.Backend.Scale(x.Buffer, y.Buffer, x.Length, a);
        if (Recording(x)) y.GradFn = Node.Record("Scale", x, y, static (n, g, gi) => gi[0] = Scale(g, n.Scale)).With(scale: a);
        return y;
    }

    /// <summary>x + b.</summary>
    public static Tensor AddScalar(Tensor x, float b)
    {
        var y = Tensor.Empty(x.Backend, x.Shape);
        x.Backend.AddScalar(x.Buffer, y.Buffer, x.Length, b);
        if (Recording(x)) y.GradFn = Node.Record("AddScalar", x, y, static (n, g, gi) => gi[0] = g);
        return y;
    }

    /// <summary>x^2.</summary>
    public static Tensor Square(Tensor x)
    {
        var y = Tensor.Empty(x.Backend, x.Shape);
        x.Backend.Square(x.Buffer, y.Buffer, x.Length);
        if (Recording(x)) y.GradFn = Node.Record("Square", x, y, static (n, g, gi) => gi[0] = Mul(g, Scale(n.Inputs[0], 2f)));
        return y;
    }

    /// <summary>sqrt(x).</summary>
    public static Tensor Sqrt(Tensor x)
    {
        var y = Tensor.Empty(x.Backend, x.Shape);
        x.Backend.Sqrt(x.Buffer, y.Buffer, x.Length);
        if (Recording(x)) y.GradFn = Node.Record("Sqrt", x, y, static (n, g, gi) => gi[0] = Div(Scale(g, 0.5f), n.Output));
        return y;
    }

    /// <summary>1 / sqrt(x).</summary>
    public static Tensor Rsqrt(Tensor x)
    {
        var y = Tensor.Empty(x.Backend, x.Shape);
        x.Backend.Rsqrt(x.Buffer, y.Buffer, x.Length);
        // d x^(-1/2) / dx = -1/2 x^(-3/2) = -1/2 y^3
        if (Recording(x)) y.GradFn = Node.Record("Rsqrt", x, y,
            static (n, g, gi) => gi[0] = Mul(g, Scale(Mul(n.Output, Square(n.Output)), -0.5f)));
        return y;
    }

    /// <summary>softplus(x) = log(1 + e^x): the logistic GAN loss is softplus(D(fake)) + softplus(-D(real)).</summary>
    public static Tensor Softplus(Tensor x)
    {
        var y = Tensor.Empty(x.Backend, x.Shape);
        x.Backend.Softplus(x.Buffer, y.Buffer, x.Length);
        // d softplus(x) / dx = sigmoid(x), itself differentiable (a loss's second order, if asked).
        if (Recording(x)) y.GradFn = Node.Record("Softplus", x, y, static (n, g, gi) => gi[0] = Mul(g, Sigmoid(n.Inputs[0])));
        return y;
    }

    /// <summary>sigmoid(x) = 1 / (1 + e^-x).</summary>
    public static Tensor Sigmoid(Tensor x)
    {
        var y = Tensor.Empty(x.Backend, x.Shape);
        x.Backend.Sigmoid(x.Buffer, y.Buffer, x.Length);
        // d sigmoid / dx = y (1 - y)
        if (Recording(x)) y.GradFn = Node.Record("Sigmoid", x, y,
            static (n, g, gi) => gi[0] = Mul(g, Mul(n.Output, AddScalar(Scale(n.Output, -1f), 1f))));
        return y;
    }

    /// <summary>Leaky ReLU: x if x &gt; 0, else slope * x (ProGAN uses slope 0.2).</summary>
    public static Tensor LeakyRelu(Tensor x, float slope = 0.2f)
    {
        var y = Tensor.Empty(x.Backend, x.Shape);
        x.Backend.LeakyReluForward(x.Buffer, y.Buffer, x.Length, slope);
        if (Recording(x)) y.GradFn = Node.Record("LeakyRelu", x, y,
            static (n, g, gi) => gi[0] = LeakyReluMask(n.Inputs[0], g, n.Slope)).With(slope: slope);
        return y;
    }

    /// <summary>
    /// g masked by the sign of x: g where x &gt; 0, slope * g elsewhere. The backward of leaky ReLU;
    /// linear in g, and piecewise constant in x, so its own gradient with respect to x is zero
    /// almost everywhere.
    /// </summary>
    public static Tensor LeakyReluMask(Tensor x, Tensor g, float slope)
    {
        if (x.Shape != g.Shape) throw new ArgumentException($"LeakyReluMask: {x.Describe()} and {g.Describe()} differ");
        var backend = SameBackend("LeakyReluMask", x, g);
        var y = Tensor.Empty(backend, x.Shape);
        backend.LeakyReluBackward(x.Buffer, g.Buffer, y.Buffer, x.Length, slope);
        if (Tape.IsRecording && g.RequiresGrad)
            y.GradFn = Node.Record("LeakyReluMask", x, g, y, static (n, gg, gi) => gi[1] = LeakyReluMask(n.Inputs[0], gg, n.Slope)).With(slope: slope);
        return y;
    }

    // ------------------------------------------------------------------ matrix product

    /// <summary>
    /// alpha * op(a) op(b) for 2-D a and b, op = transpose when asked. A dense layer with weight
    /// [out, in] (PyTorch's layout) is MatMul(x, w, transB: true, alpha: equalized-LR scale).
    /// </summary>
    public static Tensor MatMul(Tensor a, Tensor b, bool transA = false, bool transB = false, float alpha = 1f)
    {
        var backend = SameBackend("MatMul", a, b);
        if (a.Shape.Rank != 2 || b.Shape.Rank != 2)
            throw new ArgumentException($"MatMul: needs 2-D operands, got {a.Describe()} and {b.Describe()}");
        int m = transA ? a.Shape[1] : a.Shape[0], ka = transA ? a.Shape[0] : a.Shape[1];
        int kb = transB ? b.Shape[1] : b.Shape[0], n = transB ? b.Shape[0] : b.Shape[1];
        if (ka != kb)
            throw new ArgumentException($"MatMul: inner dimensions differ: {a.Describe()}{(transA ? "^T" : "")} x {b.Describe()}{(transB ? "^T" : "")} ({ka} vs {kb})");
        var y = Tensor.Empty(backend, new Shape(m, n));
        backend.Gemm(transA, transB, m, n, ka, alpha, a.Buffer, b.Buffer, 0f, y.Buffer);
        if (Recording(a, b))
        {
            y.GradFn = Node.Record("MatMul", a, b, y, static (node, g, gi) =>
            {
                var (a, b) = (node.Inputs[0], node.Inputs[1]);
                bool ta = node.TransposeA, tb = node.TransposeB;
                float alpha = node.Scale;
                // C = alpha op(A) op(B):  d op(A) = alpha G op(B)^T,  d op(B) = alpha op(A)^T G.
                if (node.Wants(0)) gi[0] = ta ? MatMul(b, g, tb, true, alpha) : MatMul(g, b, false, !tb, alpha);
                if (node.Wants(1)) gi[1] = tb ? MatMul(g, a, true, ta, alpha) : MatMul(a, g, !ta, false, alpha);
            }).With(scale: alpha, transposeA: transA, transposeB: transB);
        }
        return y;
    }

    // ------------------------------------------------------------------ shape

    /// <summary>The same values with another shape of equal length (no copy: the memory is shared).</summary>
    public static Tensor Reshape(Tensor x, Shape shape)
    {
        if (shape.Length != x.Length)
            throw new ArgumentException($"Reshape: {x.Describe()} has {x.Length} elements, shape {shape} has {shape.Length}");
        var y = x.View(shape);
        if (Recording(x)) y.GradFn = Node.Record("Reshape", x, y, static (n, g, gi) => gi[0] = Reshape(g, n.Inputs[0].Shape));
        return y;
    }

    /// <summary>The same memory, cut from the graph: no gradient flows through the result.</summary>
    public static Tensor Detach(Tensor x) => x.View(x.Shape);
}
