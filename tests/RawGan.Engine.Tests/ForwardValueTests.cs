using RawGan.Engine.Autograd;
using RawGan.Engine.Backends;
using RawGan.Engine.Backends.Reference;

namespace RawGan.Engine.Tests;

/// <summary>
/// Forward values of every op against something independent: the reference backend's plain
/// loops, or numbers computed by hand. (Gradient checks only prove that a backward matches
/// its forward; these prove the forward is the right function.)
/// </summary>
public class ForwardValueTests
{
    private static Tensor T(string backend, float[] v, params int[] shape) => Tensor.FromArray(TestBackends.Get(backend), v, new Shape(shape));

    private static void Close(double[] expected, float[] actual, double tol = 1e-4, string what = "")
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
            Assert.True(Math.Abs(expected[i] - actual[i]) <= tol * Math.Max(1, Math.Abs(expected[i])),
                $"{what} element {i}: expected {expected[i]:G7}, got {actual[i]:G7}");
    }

    // ------------------------------------------------------------------ the reference backend's loops

    /// <summary>The convolution by <see cref="ReferenceBackend"/> (plain loops, double sums).</summary>
    internal static double[] NaiveConv(float[] x, float[] w, int n, int cin, int h, int wd, int cout, int k, double scale) =>
        RunReference([x, w], n * cout * h * wd, (be, p) => be.Conv2dForward(p[0], p[1], p[2], n, cin, h, wd, cout, k, (float)scale));

    private static double[] NaiveMatMul(float[] a, float[] b, int m, int n, int k, bool ta, bool tb, double alpha) =>
        RunReference([a, b], m * n, (be, p) => be.Gemm(ta, tb, m, n, k, (float)alpha, p[0], p[1], 0f, p[2]));

    /// <summary>Uploads the inputs to the reference backend, runs <paramref name="kernel"/> with one
    /// more buffer of <paramref name="outputLength"/> floats, and returns that buffer.</summary>
    internal static double[] RunReference(float[][] inputs, int outputLength, Action<IBackend, DeviceBuffer[]> kernel)
    {
        var be = ReferenceBackend.Shared;
        var buffers = inputs.Select(v => { var d = be.Allocate(Math.Max(1, v.Length)); be.Upload(v, d); return d; }).Append(be.Allocate(Math.Max(1, outputLength))).ToArray();
        try
        {
            kernel(be, buffers);
            var result = new float[outputLength];
            be.Download(buffers[^1], result);
            return result.Select(v => (double)v).ToArray();
        }
        finally
        {
            foreach (var d in buffers) be.Free(d);
        }
    }

    public static TheoryData<string> Backends => TestBackends.All;

    // ------------------------------------------------------------------ tests

    [Theory]
    [MemberData(nameof(Backends))]
    public void MatMulMatchesNaiveLoopsForEveryTransposeAndOddSizes(string backend)
    {
        foreach (var (m, n, k) in new[] { (1, 1, 1), (3, 5, 7), (17, 33, 9), (64, 70, 130), (5, 600, 3) })
            foreach (var ta in new[] { false, true })
                foreach (var tb in new[] { false, true })
                {
                    using var scope = new Scope();
                    var av = GradCheck.Normal(new Shape(m * k), m + n);
                    var bv = GradCheck.Normal(new Shape(k * n), k + 3);
                    var a = T(backend, av, ta ? [k, m] : [m, k]);
                    var b = T(backend, bv, tb ? [n, k] : [k, n]);
                    var c = Ops.MatMul(a, b, ta, tb, 0.75f);
                    Close(NaiveMatMul(av, bv, m, n, k, ta, tb, 0.75), c.ToArray(), 1e-4, $"{m}x{n}x{k} ta={ta} tb={tb}");
                }
    }

    [Theory]
    [MemberData(nameof(Backends))]
    public void GemmAccumulatesWithBeta(string backend)
    {
        var be = TestBackends.Get(backend);
        using var scope = new Scope();
        var a = T(backend, [1, 2, 3, 4], 2, 2);
        var b = T(backend, [5, 6, 7, 8], 2, 2);
        var c = T(backend, [1, 1, 1, 1], 2, 2);
        be.Gemm(false, false, 2, 2, 2, 1f, a.Buffer, b.Buffer, 2f, c.Buffer);
        // [1 2; 3 4] [5 6; 7 8] = [19 22; 43 50], plus 2 * 1
        Assert.Equal([21f, 24f, 45f, 52f], c.ToArray());
    }

    [Theory]
    [MemberData(nameof(Backends))]
    public void ConvolutionAndItsAdjointsMatchNaiveLoops(string backend)
    {
        foreach (var (n, cin, h, w, cout, k) in new[] { (1, 1, 1, 1, 1, 3), (2, 3, 5, 7, 4, 3), (1, 3, 4, 4, 2, 1), (3, 2, 6, 3, 5, 3), (1, 4, 8, 8, 3, 5) })
        {
            using var scope = new Scope();
            var xv = GradCheck.Normal(new Shape(n * cin * h * w), n + h);
            var wv = GradCheck.Normal(new Shape(cout * cin * k * k), cout + k);
            var x = T(backend, xv, n, cin, h, w);
            var wt = T(backend, wv, cout, cin, k, k);
            float scale = 1f / MathF.Sqrt(cin * k * k);
            var expected = NaiveConv(xv, wv, n, cin, h, w, cout, k, scale);
            Close(expected, Ops.Conv2d(x, wt, scale).ToArray(), 1e-4, $"conv {n}x{cin}x{h}x{w} k{k}");

            // Adjoints by their defining identity <gy, conv(x, w)> = <conv_t(gy, w), x> = <gw(x, gy), w>,
            // with the forward checked above against the loops.
            var gyv = GradCheck.Normal(new Shape(n * cout * h * w), 99);
            var gy = T(backend, gyv, n, cout, h, w);
            double lhs = expected.Select((v, i) => v * gyv[i]).Sum();
            var gx = Ops.ConvInputGrad(gy, wt, x.Shape, scale).ToArray();
            var gw = Ops.ConvWeightGrad(x, gy, wt.Shape, scale).ToArray();
            double viaInput = gx.Select((v, i) => (double)v * xv[i]).Sum();
            double viaWeight = gw.Select((v, i) => (double)v * wv[i]).Sum();
            Assert.True(Math.Abs(lhs - viaInput) < 1e-3 * Math.Max(1, Math.Abs(lhs)), $"input adjoint: {lhs} vs {viaInput}");
            Assert.True(Math.Abs(lhs - viaWeight) < 1e-3 * Math.Max(1, Math.Abs(lhs)), $"weight adjoint: {lhs} vs {viaWeight}");
        }
    }

    [Theory]
    [MemberData(nameof(Backends))]
    public void ConvolutionOfAKnownImage(string backend)
    {
        using var scope = new Scope();
        // A 3x3 image and the kernel that sums the 4-neighbourhood: corners see 2 neighbours + self.
        var x = T(backend, [1, 2, 3, 4, 5, 6, 7, 8, 9], 1, 1, 3, 3);
        var w = T(backend, [0, 1, 0, 1, 1, 1, 0, 1, 0], 1, 1, 3, 3);
        // Within float rounding, not to the bit: on small maps the CPU runs Winograd F(4x4, 3x3), whose
        // transforms have coefficients like 1/6 (the direct algorithms give these integers exactly).
        Close([7, 11, 11, 17, 25, 23, 19, 29, 23], Ops.Conv2d(x, w).ToArray(), 1e-6);
    }

    [Theory]
    [MemberData(nameof(Backends))]
    public void ResamplingByHand(string backend)
    {
        using var scope = new Scope();
        var x = T(backend, [1, 2, 3, 4], 1, 1, 2, 2);
        Assert.Equal([1f, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4], Ops.Upsample2x(x).ToArray());
        var y = T(backend, [1, 2, 3, 4, 5, 6, 7, 8], 1, 1, 2, 4);
        Assert.Equal([3.5f, 5.5f], Ops.AvgPool2x(y).ToArray());
        // Average pooling undoes nearest upsampling exactly.
        Assert.Equal(x.ToArray(), Ops.AvgPool2x(Ops.Upsample2x(x)).ToArray());
    }

    [Theory]
    [MemberData(nameof(Backends))]
    public void BroadcastingAndReductionsByHand(string backend)
    {
        using var scope = new Scope();
        var x = T(backend, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], 2, 3, 2);   // [N=2, C=3, W=2]
        var bias = T(backend, [10, 20, 30], 3, 1);
        Assert.Equal([11f, 12, 23, 24, 35, 36, 17, 18, 29, 30, 41, 42], Ops.Add(x, bias).ToArray());
        var perSample = T(backend, [1, -1], 2, 1, 1);
        Assert.Equal([1f, 2, 3, 4, 5, 6, -7, -8, -9, -10, -11, -12], Ops.Mul(x, perSample).ToArray());
        Assert.Equal([0.5f, 1, 1.5f, 2, 2.5f, 3, 3.5f, 4, 4.5f, 5, 5.5f, 6], Ops.Div(x, T(backend, [2], 1)).ToArray());
        Assert.Equal([18f, 26, 34], Ops.Sum(x, [0, 2]).ToArray());
        Assert.Equal([9f, 12, 27, 30], Ops.Sum(x, [1]).ToArray());
        Assert.Equal(78f, Ops.Sum(x).Item());
        Assert.Equal(6.5f, Ops.Mean(x).Item());
        Assert.Equal([10f, 20, 30, 10, 20, 30], Ops.BroadcastTo(T(backend, [10, 20, 30], 1, 3), new Shape(2, 3)).ToArray());
        Assert.Equal([1f, 2, 3, 4, 5, 6], Ops.Sub(T(backend, [2, 3, 4, 5, 6, 7], 2, 3), T(backend, [1], 1)).ToArray());
    }

    [Theory]
    [MemberData(nameof(Backends))]
    public void ElementwiseByHand(string backend)
    {
        using var scope = new Scope();
        var x = T(backend, [-2, -0.5f, 0, 0.25f, 4], 5);
        Assert.Equal([-0.4f, -0.1f, 0, 0.25f, 4], Ops.LeakyRelu(x, 0.2f).ToArray());
        Assert.Equal([4f, 0.25f, 0, 0.0625f, 16], Ops.Square(x).ToArray());
        Assert.Equal([-1f, -0.25f, 0, 0.125f, 2], Ops.Scale(x, 0.5f).ToArray());
        Assert.Equal([-1f, 0.5f, 1, 1.25f, 5], Ops.AddScalar(x, 1).ToArray());
        var p = T(backend, [0.25f, 1, 4, 16], 4);
        Assert.Equal([0.5f, 1, 2, 4], Ops.Sqrt(p).ToArray());
        Assert.Equal([2f, 1, 0.5f, 0.25f], Ops.Rsqrt(p).ToArray());
        var g = T(backend, [1, 1, 1, 1, 1], 5);
        Assert.Equal([0.2f, 0.2f, 0.2f, 1, 1], Ops.LeakyReluMask(x, g, 0.2f).ToArray());
        var a = T(backend, [0, 0, 10, 10], 2, 2);
        var b = T(backend, [4, 8, 20, 30], 2, 2);
        Assert.Equal([1f, 2, 12.5f, 15], Ops.Lerp(a, b, 0.25f).ToArray());
        Assert.Equal([2f, 4, 20, 30], Ops.Lerp(a, b, T(backend, [0.5f, 1f], 2)).ToArray());
    }

    [Theory]
    [MemberData(nameof(Backends))]
    public void ConcatSliceAndPadByHand(string backend)
    {
        using var scope = new Scope();
        var a = T(backend, [1, 2, 3, 4], 2, 1, 2);
        var b = T(backend, [5, 6, 7, 8, 9, 10, 11, 12], 2, 2, 2);
        var c = Ops.Concat(a, b);
        Assert.Equal(new Shape(2, 3, 2), c.Shape);
        Assert.Equal([1f, 2, 5, 6, 7, 8, 3, 4, 9, 10, 11, 12], c.ToArray());
        Assert.Equal([5f, 6, 7, 8, 9, 10, 11, 12], Ops.SliceChannels(c, 1, 2).ToArray());
        Assert.Equal([0f, 0, 1, 2, 0, 0, 0, 0, 3, 4, 0, 0], Ops.PadChannels(a, 1, 3).ToArray());
        var r = Ops.Reshape(c, new Shape(3, 4));
        Assert.Equal(c.ToArray(), r.ToArray());
    }

    [Theory]
    [MemberData(nameof(Backends))]
    public void PixelNormByHand(string backend)
    {
        using var scope = new Scope();
        // One pixel with channels (3, 4): mean of squares 12.5, so y = (3, 4) / sqrt(12.5 + 1e-8).
        // A second pixel of zeros stays zero (eps keeps the division finite).
        var x = T(backend, [3, 0, 4, 0], 1, 2, 1, 2);
        var y = Ops.PixelNorm(x).ToArray();
        double r = 1 / Math.Sqrt(12.5 + 1e-8);
        Close([3 * r, 0, 4 * r, 0], y, 1e-6);
        // The latent form [N, C] normalizes each row: after it, the mean of squares is 1.
        var z = Ops.PixelNorm(T(backend, GradCheck.Normal(new Shape(4 * 16), 5), 4, 16)).ToArray();
        for (int s = 0; s < 4; s++)
            Assert.Equal(1.0, z.Skip(s * 16).Take(16).Select(v => (double)v * v).Average(), 5);
    }

    [Theory]
    [MemberData(nameof(Backends))]
    public void MinibatchStdDevByHand(string backend)
    {
        using var scope = new Scope();
        // N = 4, G = 2 -> M = 2 groups, strided: group 0 = samples {0, 2}, group 1 = samples {1, 3}.
        // One channel, two pixels. Group 0 pixels: (1, 5) and (3, 5): population stds 2 and 1;
        // group 1: (0, 4) and (2, 8): stds 2 and 3. Each std is sqrt(var + 1e-8).
        var x = T(backend, [1, 3, 0, 2, 5, 5, 4, 8], 4, 1, 1, 2);
        var y = Ops.MinibatchStdDev(x, groupSize: 2);
        Assert.Equal(new Shape(4, 2, 1, 2), y.Shape);
        double g0 = (Math.Sqrt(4 + 1e-8) + Math.Sqrt(1 + 1e-8)) / 2, g1 = (Math.Sqrt(4 + 1e-8) + Math.Sqrt(9 + 1e-8)) / 2;
        Close([1, 3, g0, g0, 0, 2, g1, g1, 5, 5, g0, g0, 4, 8, g1, g1], y.ToArray(), 1e-6);

        // A batch of one: the statistic is sqrt(1e-8) = 1e-4, and neither it nor its gradient is NaN.
        var one = T(backend, [0.3f, -1.2f, 2f, 0.5f], 1, 1, 2, 2);
        one.RequiresGrad = true;
        var y1 = Ops.MinibatchStdDev(one);
        Close([0.3, -1.2, 2, 0.5, 1e-4, 1e-4, 1e-4, 1e-4], y1.ToArray(), 1e-6);
        var g = Tape.Grad(Ops.Sum(y1), one).ToArray();
        Assert.All(g, v => Assert.True(float.IsFinite(v)));
        Assert.Equal([1f, 1, 1, 1], g);
    }

    [Theory]
    [MemberData(nameof(Backends))]
    public void FusedOpsEqualTheirPrimitiveReferences(string backend)
    {
        var be = TestBackends.Get(backend);
        using var scope = new Scope();
        var x = Tensor.FromArray(be, GradCheck.Normal(new Shape(8 * 5 * 3 * 3), 3), new Shape(8, 5, 3, 3));
        Close(Ops.PixelNormReference(x).ToArray().Select(v => (double)v).ToArray(), Ops.PixelNorm(x).ToArray(), 1e-5, "pixel norm");
        Close(Ops.MinibatchStdDevReference(x).ToArray().Select(v => (double)v).ToArray(), Ops.MinibatchStdDev(x).ToArray(), 1e-5, "mbstd");
        Close(Ops.GradientPenaltyReference(x).ToArray().Select(v => (double)v).ToArray(), Ops.GradientPenalty(x).ToArray(), 1e-5, "penalty");
        var b = Tensor.FromArray(be, GradCheck.Normal(new Shape(5), 4), new Shape(5));
        Close(Ops.BiasLeakyReluReference(x, b, 0.2f).ToArray().Select(v => (double)v).ToArray(), Ops.BiasLeakyRelu(x, b, 0.2f).ToArray(), 1e-6, "bias + leaky ReLU");
        // A convolution layer with its bias and activation in the convolution's output pass: 3x3 and 1x1, slopes 0.2 and 1.
        var w3 = Tensor.FromArray(be, GradCheck.Normal(new Shape(4 * 5 * 3 * 3), 5), new Shape(4, 5, 3, 3));
        var w1 = Tensor.FromArray(be, GradCheck.Normal(new Shape(4 * 5), 6), new Shape(4, 5, 1, 1));
        var b4 = Tensor.FromArray(be, GradCheck.Normal(new Shape(4), 7), new Shape(4));
        foreach (var (w, scale) in new[] { (w3, 0.15f), (w1, 0.6f) })
            foreach (float slope in new[] { 0.2f, 1f })
                Close(Ops.Conv2dBiasLeakyReluReference(x, w, scale, b4, slope).ToArray().Select(v => (double)v).ToArray(),
                    Ops.Conv2dBiasLeakyRelu(x, w, scale, b4, slope).ToArray(), 1e-5, $"conv {w.Shape} + bias + leaky ReLU {slope}");
        // The generator's layer: the same, then pixel norm.
        foreach (var (w, scale) in new[] { (w3, 0.15f), (w1, 0.6f) })
            Close(Ops.Conv2dBiasLeakyReluPixelNormReference(x, w, scale, b4).ToArray().Select(v => (double)v).ToArray(),
                Ops.Conv2dBiasLeakyReluPixelNorm(x, w, scale, b4).ToArray(), 1e-5, $"conv {w.Shape} + bias + leaky ReLU + pixel norm");
    }

    [Theory]
    [MemberData(nameof(Backends))]
    public void GradientPenaltyByHand(string backend)
    {
        using var scope = new Scope();
        // Sample 0 has norm 5 -> (5 - 1)^2 = 16; sample 1 has norm 1 -> 0.
        var g = T(backend, [3, 4, 0, 0, 0, 0.6f, 0.8f, 0], 2, 4);
        Close([16, 0], Ops.GradientPenalty(g).ToArray(), 1e-6);
    }

    [Theory]
    [MemberData(nameof(Backends))]
    public void OptimizerKernelsByHand(string backend)
    {
        var be = TestBackends.Get(backend);
        using var scope = new Scope();
        var p = T(backend, [1, 2], 2);
        var g = T(backend, [0.5f, -2], 2);
        var m = T(backend, [0, 0], 2);
        var v = T(backend, [0, 0], 2);
        // Step 1, beta1 = 0, beta2 = 0.99: m = g, v = 0.01 g^2, lr_t = lr sqrt(0.01) / 1 = 0.1 lr,
        // so p -= 0.1 lr g / (0.1 |g| + eps) = lr sign(g) (up to eps).
        var step = T(backend, [BitConverter.Int32BitsToSingle(1)], 1);
        be.AdamUpdate(p.Buffer, g.Buffer, m.Buffer, v.Buffer, 2, 0.001f, 0f, 0.99f, 1e-8f, step.Buffer, DeviceBuffer.Null);
        Close([1 - 0.001, 2 + 0.001], p.ToArray(), 1e-6);
        Close([0.5, -2], m.ToArray(), 1e-7);
        Close([0.0025, 0.04], v.ToArray(), 1e-6);

        var ema = T(backend, [10, 20], 2);
        be.EmaUpdate(ema.Buffer, T(backend, [0, 0], 2).Buffer, 2, 0.999f, DeviceBuffer.Null);
        Close([9.99, 19.98], ema.ToArray(), 1e-6);

        var bad = T(backend, [1, float.NaN, 3, float.PositiveInfinity, float.NegativeInfinity, 0], 6);
        Assert.Equal(3, bad.CountNonFinite());
        Assert.Equal(5 + 3, NonFiniteCount.Of(be, bad.Buffer, 6, start: 5));
    }
}
