using RawGan.Engine.Backends;
using RawGan.Engine.Backends.Cpu;
using RawGan.Engine.Backends.Reference;

namespace RawGan.Engine.Tests;

/// <summary>The kernel tests' harness: BackendCheck's runner and inputs, and a closeness check.</summary>
internal static class ReferenceBackendHarness
{
    public static float[][] Run(IBackend backend, float[][] inputs, long[] outputs, Action<IBackend, DeviceBuffer[]> kernel) =>
        BackendCheck.Execute(backend, inputs, outputs, kernel);

    /// <summary>|actual - expected| &lt;= tolerance max(1, |expected|) for every element (NaN matches NaN).</summary>
    public static void AssertClose(float[] expected, float[] actual, double tolerance, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
        {
            float e = expected[i], a = actual[i];
            if (e == a || (float.IsNaN(e) && float.IsNaN(a))) continue;
            double error = Math.Abs((double)e - a), bound = tolerance * Math.Max(1, Math.Abs((double)e));
            Assert.True(error <= bound, $"{what}: element {i} of {expected.Length}: expected {e:G9}, got {a:G9} (error {error:G3}, bound {bound:G3})");
        }
    }

    public static float[] Normal(long n, int seed, float scale = 1f) => BackendCheck.Normal(n, seed, scale);

    public static float[] Uniform(long n, int seed, float lo, float hi) => BackendCheck.Uniform(n, seed, lo, hi);

    /// <summary>An Adam step count t as the kernels keep it: an int in one float's storage.</summary>
    public static float StepCount(int t) => BitConverter.Int32BitsToSingle(t);

    /// <summary>A 64-bit non-finite count as the kernels keep it, in two floats.</summary>
    public static float[] SkipCount(long count) => [BitConverter.Int32BitsToSingle((int)count), BitConverter.Int32BitsToSingle((int)(count >> 32))];
}

/// <summary>The reference backend against answers worked out by hand: if these hold, the plain
/// loops mean what the formulas in IBackend say.</summary>
public class ReferenceBackendTests
{
    private static readonly ReferenceBackend R = ReferenceBackend.Shared;

    /// <summary>Runs <paramref name="kernel"/> on the reference and returns buffer <paramref name="which"/>.</summary>
    private static float[] On(float[][] inputs, long[] outputs, Action<IBackend, DeviceBuffer[]> kernel, int which) =>
        ReferenceBackendHarness.Run(R, inputs, outputs, kernel)[which];

    private static void Near(float[] expected, float[] actual, double tolerance = 1e-6, string what = "") =>
        ReferenceBackendHarness.AssertClose(expected, actual, tolerance, what);

    // ------------------------------------------------------------------ gemm

    [Fact]
    public void GemmOfTwoByTwoMatricesWithEachTranspose()
    {
        // A = [[1, 2], [3, 4]], B = [[5, 6], [7, 8]], both stored row-major.
        float[] a = [1, 2, 3, 4], b = [5, 6, 7, 8];
        var cases = new (bool ta, bool tb, float[] c)[]
        {
            (false, false, [19, 22, 43, 50]),   // A B
            (true, false, [26, 30, 38, 44]),    // A^T B
            (false, true, [17, 23, 39, 53]),    // A B^T
            (true, true, [23, 31, 34, 46]),     // A^T B^T = (B A)^T
        };
        foreach (var (ta, tb, c) in cases)
        {
            Near(c, On([a, b], [4], (be, p) => be.Gemm(ta, tb, 2, 2, 2, 1f, p[0], p[1], 0f, p[2]), 2), 0, $"ta={ta} tb={tb}");
            // alpha 2, beta 0.5 on C = 1: 2 op(A) op(B) + 0.5.
            var expected = c.Select(v => 2 * v + 0.5f).ToArray();
            Near(expected, On([a, b, [1, 1, 1, 1]], [], (be, p) => be.Gemm(ta, tb, 2, 2, 2, 2f, p[0], p[1], 0.5f, p[2]), 2), 0, $"beta ta={ta} tb={tb}");
        }
    }

    [Fact]
    public void GemmOfNonSquareMatricesReadsTransposedOperandsWithTheRightStrides()
    {
        // op(A) = [[1, 2, 3], [4, 5, 6]] (m 2, k 3), op(B) = [1, 0, -1]^T (k 3, n 1): C = [-2, -2].
        float[] a = [1, 2, 3, 4, 5, 6], aT = [1, 4, 2, 5, 3, 6], b = [1, 0, -1];
        foreach (bool ta in new[] { false, true })
            foreach (bool tb in new[] { false, true })   // B [3, 1] and B^T [1, 3] have the same values in memory
                Near([-2, -2], On([ta ? aT : a, b], [2], (be, p) => be.Gemm(ta, tb, 2, 1, 3, 1f, p[0], p[1], 0f, p[2]), 2), 0, $"ta={ta} tb={tb}");
        // k = 0: C = beta C.
        Near([1.5f, 3f], On([[], [], [3, 6]], [], (be, p) => be.Gemm(false, false, 2, 1, 0, 1f, p[0], p[1], 0.5f, p[2]), 2), 0);
    }

    // ------------------------------------------------------------------ conv

    [Fact]
    public void ConvolutionOfADeltaImageGivesTheKernelFlippedForwardAndUnflippedBackward()
    {
        float[] delta = [0, 0, 0, 0, 1, 0, 0, 0, 0];          // 3x3, 1 at the centre
        float[] w = [1, 2, 3, 4, 5, 6, 7, 8, 9];
        float[] flipped = [9, 8, 7, 6, 5, 4, 3, 2, 1];
        // Forward (a cross-correlation): y[i, j] = w[2 - i, 2 - j].
        Near(flipped, On([delta, w], [9], (be, p) => be.Conv2dForward(p[0], p[1], p[2], 1, 1, 3, 3, 1, 3, 1f), 2), 0, "forward");
        // Backward input of a delta gradient: gx[i, j] = w[i, j]; scale 0.5 halves it.
        Near(w.Select(v => 0.5f * v).ToArray(), On([delta, w], [9], (be, p) => be.Conv2dBackwardInput(p[0], p[1], p[2], 1, 1, 3, 3, 1, 3, 0.5f), 2), 0, "backward input");
        // Backward weight with a delta input: gw[a, b] = gy[2 - a, 2 - b].
        Near(flipped, On([delta, w], [9], (be, p) => be.Conv2dBackwardWeight(p[0], p[1], p[2], 1, 1, 3, 3, 1, 3, 1f), 2), 0, "backward weight");
        // The epilogue: bias -5, then leaky ReLU with slope 0.5 (z = 0 stays 0).
        Near([4, 3, 2, 1, 0, -0.5f, -1, -1.5f, -2], On([delta, w, [-5]], [9], (be, p) => be.Conv2dForward(p[0], p[1], p[3], 1, 1, 3, 3, 1, 3, 1f, p[2], 0.5f), 3), 0, "epilogue");
        // Zero padding: a 3x3 box filter on a 2x2 image of ones sees 4 pixels at every position.
        Near([4, 4, 4, 4], On([[1, 1, 1, 1], Enumerable.Repeat(1f, 9).ToArray()], [4], (be, p) => be.Conv2dForward(p[0], p[1], p[2], 1, 1, 2, 2, 1, 3, 1f), 2), 0, "padding");
    }

    // ------------------------------------------------------------------ broadcast

    [Fact]
    public void SumToOfOnesCountsTheSummedElementsAndBroadcastAddsABias()
    {
        var x = new Dims4(2, 3, 4, 5);
        var ones = Enumerable.Repeat(1f, 120).ToArray();
        foreach (var (y, count) in new[] { (new Dims4(1, 3, 1, 1), 40f), (new Dims4(1, 1, 1, 1), 120f), (new Dims4(2, 1, 4, 1), 15f), (x, 1f) })
            Near(Enumerable.Repeat(count, (int)y.Length).ToArray(), On([ones], [y.Length], (be, p) => be.SumTo(p[0], x, p[1], y), 1), 0, $"sum_to {y}");
        // [2, 3] + bias [1, 3], and [2, 3] - a column [2, 1].
        Near([11, 22, 33, 14, 25, 36], On([[1, 2, 3, 4, 5, 6], [10, 20, 30]], [6],
            (be, p) => be.Add(p[0], new(1, 1, 2, 3), p[1], new(1, 1, 1, 3), p[2], new(1, 1, 2, 3)), 2), 0, "bias");
        Near([0, 1, 2, -6, -5, -4], On([[1, 2, 3, 4, 5, 6], [1, 10]], [6],
            (be, p) => be.Sub(p[0], new(1, 1, 2, 3), p[1], new(1, 1, 2, 1), p[2], new(1, 1, 2, 3)), 2), 0, "column");
    }

    // ------------------------------------------------------------------ elementwise, resample, channels

    [Fact]
    public void ElementwiseResampleAndChannelKernelsOnSmallExamples()
    {
        Near([-0.4f, 0, 3], On([[-2, 0, 3]], [3], (be, p) => be.LeakyReluForward(p[0], p[1], 3, 0.2f), 1), 1e-7, "leaky relu");
        Near([2f, 2f, 10], On([[-2, 0, 3], [10, 10, 10]], [3], (be, p) => be.LeakyReluBackward(p[0], p[1], p[2], 3, 0.2f), 2), 1e-7, "leaky relu backward");
        Near([0.5f, 4f], On([[0.25f, 16]], [2], (be, p) => be.Sqrt(p[0], p[1], 2), 1), 0, "sqrt");
        Near([2f, 0.25f], On([[0.25f, 16]], [2], (be, p) => be.Rsqrt(p[0], p[1], 2), 1), 0, "rsqrt");
        // log 2 at 0; x + log(1 + e^-x) far out on both sides (neither e^100 nor 1 + e^-100 is a float's business).
        Near([0.6931472f, 100f, 0f, 1.3132617f, 0.3132617f], On([[0, 100, -100, 1, -1]], [5], (be, p) => be.Softplus(p[0], p[1], 5), 1), 1e-7, "softplus");
        Near([0.5f, 1f, 0f, 0.7310586f, 0.2689414f], On([[0, 100, -100, 1, -1]], [5], (be, p) => be.Sigmoid(p[0], p[1], 5), 1), 1e-7, "sigmoid");
        // Two samples of two values; t = [0, 0.25].
        Near([1, 2, 5, 7], On([[1, 2, 4, 6], [9, 9, 8, 10], [0, 0.25f]], [4], (be, p) => be.LerpPerSample(p[0], p[1], p[2], p[3], 2, 2), 3), 0, "lerp per sample");
        // [[1, 2], [3, 4]] upsampled with gain 2, then pooled back with gain 0.5.
        float[] up = [2, 2, 4, 4, 2, 2, 4, 4, 6, 6, 8, 8, 6, 6, 8, 8];
        Near(up, On([[1, 2, 3, 4]], [16], (be, p) => be.Upsample2x(p[0], p[1], 1, 2, 2, 2f), 1), 0, "upsample");
        Near([1, 2, 3, 4], On([up], [4], (be, p) => be.AvgPool2x(p[0], p[1], 1, 4, 4, 0.5f), 1), 0, "avgpool");
        // Channel 1 of 2 samples of [3 channels, 1 pixel] into channel 0 of [2 channels]: the other channel is kept.
        Near([2, -1, 5, -1], On([[1, 2, 3, 4, 5, 6], [-1, -1, -1, -1]], [], (be, p) => be.CopyChannels(p[0], 3, 1, p[1], 2, 0, 1, 2, 1), 1), 0, "copy channels");
    }

    // ------------------------------------------------------------------ normalization

    [Fact]
    public void PixelNormOfAConstantVectorIsOneAndItsGradientIsOrthogonal()
    {
        // 4 channels of 3 at each of 2 pixels: mean x^2 = 9, y = 3 / sqrt(9 + eps).
        var x = Enumerable.Repeat(3f, 8).ToArray();
        Near(Enumerable.Repeat(1f, 8).ToArray(), On([x], [8], (be, p) => be.PixelNormForward(p[0], p[1], 1, 4, 2, 0f), 1), 1e-7, "eps 0");
        Near(Enumerable.Repeat((float)(3 / Math.Sqrt(9.5)), 8).ToArray(), On([x], [8], (be, p) => be.PixelNormForward(p[0], p[1], 1, 4, 2, 0.5f), 1), 1e-7, "eps 0.5");
        // gy along y (all ones) has no effect: gx = r (gy - y mean(gy y)) = 0. gy orthogonal to y
        // (channels +1, -1, +1, -1) passes through scaled by r = 1 / 3.
        Near(new float[8], On([x, Enumerable.Repeat(1f, 8).ToArray()], [8], (be, p) => be.PixelNormBackward(p[0], p[1], p[2], 1, 4, 2, 0f), 2), 1e-7, "along y");
        float[] ortho = [1, 1, -1, -1, 1, 1, -1, -1];   // [channel, pixel]
        Near(ortho.Select(v => v / 3).ToArray(), On([x, ortho], [8], (be, p) => be.PixelNormBackward(p[0], p[1], p[2], 1, 4, 2, 0f), 2), 1e-7, "orthogonal");
    }

    [Fact]
    public void MinibatchStdDevOfKnownStridedGroups()
    {
        // 4 samples of one value, groups of 2, strided: group 0 = samples {0, 2} = {0, 2} (std 1),
        // group 1 = samples {1, 3} = {10, 14} (std 2). Contiguous groups would give 5 and 6.
        float[] x = [0, 10, 2, 14];
        Near([0, 1, 10, 2, 2, 1, 14, 2], On([x], [8], (be, p) => be.MinibatchStdDevForward(p[0], p[1], 4, 1, 1, 2, 0f), 1), 1e-7, "forward");
        // eps sits inside the root: one member, std = sqrt(0 + eps).
        Near([7, 0.5f], On([[7]], [2], (be, p) => be.MinibatchStdDevForward(p[0], p[1], 1, 1, 1, 1, 0.25f), 1), 1e-7, "eps");
        // Gradient 1 on each stat, 0 on the features: gx = gstat (x - mean) / (G F std) with gstat = 2, G = 2, F = 1.
        float[] gy = [0, 1, 0, 1, 0, 1, 0, 1];
        Near([-1, -1, 1, 1], On([x, gy], [4], (be, p) => be.MinibatchStdDevBackward(p[0], p[1], p[2], 4, 1, 1, 2, 0f), 2), 1e-7, "backward");
    }

    // ------------------------------------------------------------------ penalty, optimizers

    [Fact]
    public void GradientPenaltyOfAThreeFourFiveVector()
    {
        // Sample 0 = (3, 4): norm 5, penalty (5 - 1)^2 = 16; sample 1 = 0: norm 0, penalty 1.
        var r = ReferenceBackendHarness.Run(R, [[3, 4, 0, 0]], [2, 2], (be, p) => be.GradientPenaltyForward(p[0], p[1], p[2], 2, 2, 1f));
        Near([5, 0], r[1], 0, "norm");
        Near([16, 1], r[2], 0, "penalty");
        // gg = gpen 2 (5 - 1) g / 5 = 1.6 g with gpen = 1; the zero sample gets the subgradient 0.
        Near([4.8f, 6.4f, 0, 0], On([[3, 4, 0, 0], [5, 0], [1, 1]], [4], (be, p) => be.GradientPenaltyBackward(p[0], p[1], p[2], p[3], 2, 2, 1f), 3), 1e-7, "backward");
    }

    [Fact]
    public void AdamFirstStepMovesEachParameterByTheLearningRateAgainstItsGradient()
    {
        // t = 1 from m = v = 0: m = (1 - b1) g, v = (1 - b2) g^2, lr_t = lr sqrt(1 - b2) / (1 - b1),
        // so p -= lr g / (|g| + eps / sqrt(1 - b2)) ~ lr sign(g).
        float[] g = [0.5f, -2f, 0.01f, -300f];
        const float lr = 0.01f;
        var r = ReferenceBackendHarness.Run(R, [[1, 1, 1, 1], g, new float[4], new float[4], [ReferenceBackendHarness.StepCount(1)]], [],
            (be, p) => be.AdamUpdate(p[0], p[1], p[2], p[3], 4, lr, 0.9f, 0.99f, 1e-8f, p[4], DeviceBuffer.Null));
        Near(g.Select(v => 1 - lr * MathF.Sign(v)).ToArray(), r[0], 1e-6, "p");
        // 1 - b1 and 1 - b2 of the float betas (0.9f and 0.99f are not exactly 0.9 and 0.99).
        Near(g.Select(v => (float)((1 - (double)0.9f) * v)).ToArray(), r[2], 1e-6, "m");
        Near(g.Select(v => (float)((1 - (double)0.99f) * v * v)).ToArray(), r[3], 1e-6, "v");
        // ema = p + beta (ema - p).
        Near([1.9f, 0.1f], On([[2, 0], [1, 1]], [], (be, p) => be.EmaUpdate(p[0], p[1], 2, 0.9f, DeviceBuffer.Null), 0), 1e-7, "ema");
    }

    [Theory]
    [MemberData(nameof(TestBackends.All), MemberType = typeof(TestBackends))]
    public void AStepWithANonFiniteCountChangesNoParameterMomentOrStepCount(string backend)
    {
        var be = TestBackends.Get(backend);
        float[] p = [1, -2, 3], g = [0.5f, -1, 2], m = [0.1f, 0.2f, 0.3f], v = [0.01f, 0.02f, 0.03f];
        // A count above 2^32 too: the whole 64 bits are read, not the low word.
        foreach (long count in new long[] { 1, 1L << 32 })
        {
            var r = ReferenceBackendHarness.Run(be, [p, g, m, v, [ReferenceBackendHarness.StepCount(4)], ReferenceBackendHarness.SkipCount(count), [9, 8, 7]], [], (b, q) =>
            {
                b.AdamStep(q[4], q[5]);
                b.AdamUpdate(q[0], q[1], q[2], q[3], 3, 0.1f, 0.9f, 0.99f, 1e-8f, q[4], q[5]);
                b.EmaUpdate(q[6], q[0], 3, 0.5f, q[5]);
            });
            Assert.Equal(p, r[0]);
            Assert.Equal(m, r[2]);
            Assert.Equal(v, r[3]);
            Assert.Equal(4, BitConverter.SingleToInt32Bits(r[4][0]));
            Assert.Equal([9f, 8f, 7f], r[6]);
        }
        // A zero count, or none: the step count goes up by one each time, and the update runs.
        var run = ReferenceBackendHarness.Run(be, [p, g, m, v, [ReferenceBackendHarness.StepCount(4)], ReferenceBackendHarness.SkipCount(0)], [], (b, q) =>
        {
            b.AdamStep(q[4], q[5]);
            b.AdamStep(q[4], DeviceBuffer.Null);
            b.AdamUpdate(q[0], q[1], q[2], q[3], 3, 0.1f, 0.9f, 0.99f, 1e-8f, q[4], q[5]);
        });
        Assert.Equal(6, BitConverter.SingleToInt32Bits(run[4][0]));
        Assert.NotEqual(p, run[0]);
    }

    /// <summary>
    /// The update kernels count the non-finite values they write (the state check of a training
    /// step, without a pass of its own): on every backend the count equals count_nonfinite run
    /// over the new p, m, v (and the new average) afterwards, on inputs where some updates
    /// overflow (a gradient of 1e30 squares to infinity in v), some read a NaN and some are
    /// fine; it adds to what the counter held; a skipped update adds nothing.
    /// </summary>
    [Theory]
    [MemberData(nameof(TestBackends.All), MemberType = typeof(TestBackends))]
    public void TheUpdatesCountTheNonFiniteValuesTheyWrite(string backend)
    {
        var be = TestBackends.Get(backend);
        const int n = 3000;   // more than one block and one CPU chunk
        var p = ReferenceBackendHarness.Normal(n, 1);
        var g = ReferenceBackendHarness.Normal(n, 2);
        var m = ReferenceBackendHarness.Normal(n, 3, 0.1f);
        var v = ReferenceBackendHarness.Uniform(n, 4, 0, 0.1f);
        var ema = ReferenceBackendHarness.Normal(n, 5);
        for (int i = 0; i < n; i += 97) g[i] = 1e30f;            // v overflows; p and m stay finite (p may be 0/inf: counted either way)
        for (int i = 13; i < n; i += 211) m[i] = float.NaN;      // m, v finite, p NaN
        for (int i = 7; i < n; i += 389) ema[i] = float.PositiveInfinity;
        float[] start = ReferenceBackendHarness.SkipCount(5);   // the counter already holds 5
        var r = ReferenceBackendHarness.Run(be, [p, g, m, v, [ReferenceBackendHarness.StepCount(3)], start, ema, ReferenceBackendHarness.SkipCount(0)], [], (b, q) =>
        {
            b.AdamUpdate(q[0], q[1], q[2], q[3], n, 0.1f, 0.9f, 0.99f, 1e-8f, q[4], q[7], q[5]);
            b.EmaUpdate(q[6], q[0], n, 0.5f, q[7], q[5]);
        });
        long Count(float[] values) => values.LongCount(x => !float.IsFinite(x));
        long expected = 5 + Count(r[0]) + Count(r[2]) + Count(r[3]) + Count(r[6]);
        Assert.True(expected - 5 >= n / 97 + 2 * (n / 211), $"the inputs should make many values non-finite ({expected - 5})");
        Assert.Equal(expected, BitConverter.ToInt64(MemoryMarshalBytes(r[5])));

        // Skipped: nothing written, nothing counted.
        var skipped = ReferenceBackendHarness.Run(be, [p, g, m, v, [ReferenceBackendHarness.StepCount(3)], ReferenceBackendHarness.SkipCount(0), ema, ReferenceBackendHarness.SkipCount(1)], [], (b, q) =>
        {
            b.AdamUpdate(q[0], q[1], q[2], q[3], n, 0.1f, 0.9f, 0.99f, 1e-8f, q[4], q[7], q[5]);
            b.EmaUpdate(q[6], q[0], n, 0.5f, q[7], q[5]);
        });
        Assert.Equal(0, BitConverter.ToInt64(MemoryMarshalBytes(skipped[5])));
    }

    private static byte[] MemoryMarshalBytes(float[] twoFloats) => System.Runtime.InteropServices.MemoryMarshal.AsBytes(twoFloats.AsSpan()).ToArray();

    [Fact]
    public void CountNonFiniteCountsNaNAndBothInfinitiesOnly()
    {
        float[] x = [1, float.NaN, float.PositiveInfinity, float.NegativeInfinity, float.MaxValue, float.MinValue, 0, -0f, float.Epsilon, float.NaN];
        var b = R.Allocate(x.Length);
        try
        {
            R.Upload(x, b);
            Assert.Equal(4, NonFiniteCount.Of(R, b, x.Length));
            Assert.Equal(3, NonFiniteCount.Of(R, b, 4));
            Assert.Equal(0, NonFiniteCount.Of(R, b, 0));
            Assert.Equal(7 + 4, NonFiniteCount.Of(R, b, x.Length, start: 7));   // it adds to the counter
        }
        finally { R.Free(b); }
    }

    // ------------------------------------------------------------------ memory and bad input

    [Fact]
    public void MemoryIsTrackedAndUnknownOrDoubleFreesThrow()
    {
        using var be = new ReferenceBackend();
        var a = be.Allocate(10);
        var b = be.Allocate(0);
        Assert.Equal(2, be.Memory.SystemAllocations);
        Assert.Equal(44, be.Memory.BytesInUse);                   // 40 bytes + 4 for the empty buffer
        be.Upload([1, 2, 3], a);
        var back = new float[3];
        be.Download(a, back);
        Assert.Equal([1f, 2, 3], back);
        Assert.Throws<ArgumentException>(() => be.Upload(new float[11], a));
        Assert.Throws<ArgumentException>(() => be.Download(a, new float[11]));
        Assert.Throws<ArgumentException>(() => be.Copy(a, b, 1));
        be.Free(b);
        Assert.Throws<InvalidOperationException>(() => be.Free(b));                                   // twice
        Assert.Throws<InvalidOperationException>(() => be.Free(new DeviceBuffer(a.Address + 4, 1)));  // not an allocation
        Assert.Throws<InvalidOperationException>(() => ReferenceBackend.Shared.Free(a));                 // another backend's
        be.Free(DeviceBuffer.Null);
        be.Free(a);
        Assert.Equal(0, be.Memory.BytesInUse);
        Assert.Equal(44, be.Memory.PeakBytesInUse);
        Assert.Equal(2, be.Memory.SystemFrees);
    }

    [Fact]
    public void BadArgumentsThrowTheSameExceptionsAsTheCpuBackend()
    {
        foreach (IBackend be in new IBackend[] { CpuBackend.Shared, ReferenceBackend.Shared })
        {
            var buf = be.Allocate(64);
            try
            {
                var gemm = Assert.Throws<ArgumentException>(() => be.Gemm(false, false, 2, -1, 2, 1f, buf, buf, 0f, buf));
                Assert.Contains("Gemm", gemm.Message);
                var conv = Assert.Throws<ArgumentException>(() => be.Conv2dForward(buf, buf, buf, 1, 1, 2, 2, 1, 2, 1f));
                Assert.Contains("odd", conv.Message);
                Assert.Throws<ArgumentException>(() => be.Conv2dBackwardInput(buf, buf, buf, 0, 1, 2, 2, 1, 1, 1f));
                Assert.Throws<ArgumentException>(() => be.Conv2dBackwardWeight(buf, buf, buf, 1, 1, 2, 2, 1, -3, 1f));
                Assert.Throws<ArgumentException>(() => be.AvgPool2x(buf, buf, 1, 3, 4, 1f));
                var mbstd = Assert.Throws<ArgumentException>(() => be.MinibatchStdDevForward(buf, buf, 6, 1, 1, 4, 1e-8f));
                Assert.Contains("batch 6", mbstd.Message);
                Assert.Throws<ArgumentException>(() => be.MinibatchStdDevBackward(buf, buf, buf, 4, 1, 1, 0, 1e-8f));
                Assert.Throws<ArgumentException>(() => be.Upload(new float[65], buf));
                Assert.Throws<ArgumentOutOfRangeException>(() => be.Allocate(-1));
                Assert.Throws<InvalidOperationException>(() => be.Free(new DeviceBuffer(buf.Address + 4, 1)));
            }
            finally { be.Free(buf); }
        }
    }
}

/// <summary>
/// CpuBackend (the optimized C# backend) against the reference, one test per kernel family, on
/// random inputs at odd sizes. The reference's result is the expected one. Tolerances, relative
/// to max(1, |expected|): 1e-6 for elementwise kernels (a float operation or two, or a double
/// one rounded once), 1e-5 for reductions (the CPU sums pixel norm in float), 1e-4 for matrix
/// products and convolutions (the CPU accumulates in float, in another order; Winograd adds
/// transform rounding).
/// </summary>
public class ReferenceBackendMatchesCpuTests
{
    private const double Elementwise = 1e-6, Reduction = 1e-5, Product = 1e-4;

    private static float[] Normal(long n, int seed, float scale = 1f) => ReferenceBackendHarness.Normal(n, seed, scale);
    private static float[] Uniform(long n, int seed, float lo, float hi) => ReferenceBackendHarness.Uniform(n, seed, lo, hi);

    /// <summary>Runs the kernel on both backends and compares every buffer, inputs included
    /// (Adam, EMA and copy_channels update theirs in place).</summary>
    private static void Compare(string what, float[][] inputs, long[] outputs, Action<IBackend, DeviceBuffer[]> kernel, double tolerance,
        CpuBackend? cpu = null)
    {
        var expected = ReferenceBackendHarness.Run(ReferenceBackend.Shared, inputs, outputs, kernel);
        var actual = ReferenceBackendHarness.Run(cpu ?? CpuBackend.Shared, inputs, outputs, kernel);
        for (int b = 0; b < expected.Length; b++)
            ReferenceBackendHarness.AssertClose(expected[b], actual[b], tolerance, $"{what}, {(b < inputs.Length ? $"input {b}" : $"output {b - inputs.Length}")}");
    }

    [Fact]
    public void ElementwiseKernels()
    {
        foreach (long n in new long[] { 1, 31, 1000, 4097 })
        {
            var x = Normal(n, 1);
            x[0] = 0f;   // the kink of leaky ReLU
            var pos = Uniform(n, 2, 0.01f, 10f);
            var g = Normal(n, 3);
            var b = Normal(n, 4);
            string at = $"n={n}";
            Compare($"fill {at}", [], [n], (be, p) => be.Fill(p[0], n, 1.25f), Elementwise);
            Compare($"scale {at}", [x], [n], (be, p) => be.Scale(p[0], p[1], n, -0.7f), Elementwise);
            Compare($"add_scalar {at}", [x], [n], (be, p) => be.AddScalar(p[0], p[1], n, 3.5f), Elementwise);
            Compare($"square {at}", [x], [n], (be, p) => be.Square(p[0], p[1], n), Elementwise);
            Compare($"sqrt {at}", [pos], [n], (be, p) => be.Sqrt(p[0], p[1], n), Elementwise);
            Compare($"rsqrt {at}", [pos], [n], (be, p) => be.Rsqrt(p[0], p[1], n), Elementwise);
            Compare($"softplus {at}", [x], [n], (be, p) => be.Softplus(p[0], p[1], n), Elementwise);
            Compare($"sigmoid {at}", [x], [n], (be, p) => be.Sigmoid(p[0], p[1], n), Elementwise);
            Compare($"leaky_relu_forward {at}", [x], [n], (be, p) => be.LeakyReluForward(p[0], p[1], n, 0.2f), Elementwise);
            Compare($"leaky_relu_backward {at}", [x, g], [n], (be, p) => be.LeakyReluBackward(p[0], p[1], p[2], n, 0.2f), Elementwise);
            Compare($"lerp_scalar {at}", [x, b], [n], (be, p) => be.LerpScalar(p[0], p[1], p[2], n, 0.3f), Elementwise);
        }
        foreach (var (samples, inner) in new[] { (1, 1), (3, 75), (5, 409) })
        {
            long n = (long)samples * inner;
            Compare($"lerp_per_sample {samples}x{inner}", [Normal(n, 6), Normal(n, 7), Uniform(samples, 5, 0f, 1f)], [n],
                (be, p) => be.LerpPerSample(p[0], p[1], p[2], p[3], samples, inner), Elementwise);
        }
    }

    [Fact]
    public void BroadcastKernels()
    {
        var cases = new (Dims4 y, Dims4 a, Dims4 b)[]
        {
            (new(2, 3, 4, 5), new(2, 3, 4, 5), new(2, 3, 4, 5)),
            (new(2, 3, 4, 5), new(2, 3, 4, 5), new(1, 3, 1, 1)),      // a bias
            (new(4, 3, 5, 7), new(4, 1, 1, 1), new(4, 3, 5, 7)),      // one value per sample, on the left
            (new(1, 1, 9, 33), new(1, 1, 1, 33), new(1, 1, 9, 1)),    // an outer product
            (new(3, 1, 2, 1), new(3, 1, 1, 1), new(1, 1, 2, 1)),
            (new(1, 1, 1, 1), new(1, 1, 1, 1), new(1, 1, 1, 1)),
        };
        foreach (var (y, a, b) in cases)
        {
            var av = Normal(a.Length, 8);
            var bv = Normal(b.Length, 9);
            var nonzero = Uniform(b.Length, 10, 0.5f, 2f);
            string at = $"y={y} a={a} b={b}";
            Compare($"add {at}", [av, bv], [y.Length], (be, p) => be.Add(p[0], a, p[1], b, p[2], y), Elementwise);
            Compare($"sub {at}", [av, bv], [y.Length], (be, p) => be.Sub(p[0], a, p[1], b, p[2], y), Elementwise);
            Compare($"mul {at}", [av, bv], [y.Length], (be, p) => be.Mul(p[0], a, p[1], b, p[2], y), Elementwise);
            Compare($"div {at}", [av, nonzero], [y.Length], (be, p) => be.Div(p[0], a, p[1], b, p[2], y), Elementwise);
            Compare($"broadcast_to {at}", [av], [y.Length], (be, p) => be.BroadcastTo(p[0], a, p[1], y), Elementwise);
        }
        var d = new Dims4(3, 5, 7, 11);   // the tape accumulates gradients in place: y is a
        Compare("add in place", [Normal(d.Length, 11), Normal(d.Length, 12)], [], (be, p) => be.Add(p[0], d, p[1], d, p[0], d), Elementwise);
        foreach (var (x, y) in new (Dims4, Dims4)[] { (new(4, 3, 5, 5), new(1, 3, 5, 5)), (new(16, 8, 9, 9), new(1, 8, 1, 1)),
                     (new(3, 1, 1, 100), new(3, 1, 1, 1)), (new(2, 3, 33, 35), new(1, 1, 1, 1)), (new(6, 5, 4, 3), new(6, 1, 4, 1)) })
            Compare($"sum_to {x} -> {y}", [Normal(x.Length, 13)], [y.Length], (be, p) => be.SumTo(p[0], x, p[1], y), Reduction);
    }

    [Fact]
    public void BiasLeakyReluKernels()
    {
        // A dense layer's [n, c], odd maps (a vector and a tail per plane), the head's 129 channels.
        foreach (var (n, c, plane) in new[] { (1, 1, 1), (3, 5, 1), (2, 3, 35), (16, 129, 16), (4, 7, 4097) })
        {
            long total = (long)n * c * plane;
            var x = Normal(total, 14);
            x[0] = 0f;
            var b = Normal(c, 15);
            string at = $"{n}x{c}x{plane}";
            foreach (float slope in new[] { 0.2f, 1f })
            {
                Compare($"bias_leaky_relu {at} slope {slope}", [x, b], [total], (be, p) => be.BiasLeakyRelu(p[0], p[1], p[2], n, c, plane, slope), Elementwise);
                Compare($"bias_leaky_relu_backward {at} slope {slope}", [x, Normal(total, 16)], [total, c],
                    (be, p) => be.BiasLeakyReluBackward(p[0], p[1], p[2], p[3], n, c, plane, slope), Reduction);
            }
            // In place, as a layer may run it: y over x, gx over gy.
            Compare($"bias_leaky_relu in place {at}", [x, b], [], (be, p) => be.BiasLeakyRelu(p[0], p[1], p[0], n, c, plane, 0.2f), Elementwise);
            Compare($"bias_leaky_relu_backward in place {at}", [x, Normal(total, 16)], [c],
                (be, p) => be.BiasLeakyReluBackward(p[0], p[1], p[1], p[2], n, c, plane, 0.2f), Reduction);
        }
    }

    [Fact]
    public void GemmForEveryTransposeAndBeta()
    {
        // The CPU's few-rows paths (m <= 32, op(A) not transposed): full and partial 64-column strips,
        // rows and columns that do not fill 4 x 4 blocks, k with and without a tail of 16 lanes (the dot
        // products of B^T from k = 128 on).
        (int, int, int)[] fewRows = [(16, 200, 128), (13, 130, 37), (32, 67, 2050), (1, 64, 16), (30, 5, 1), (33, 129, 20), (7, 9, 300), (16, 130, 256)];
        // Every level of vector instructions this CPU has: AVX-512's 6 x 64 micro-kernel, AVX2's four 6 x 16
        // passes (whose last strip may stop short of 64 columns), the portable loops.
        foreach (var vectors in VectorLevels())
        {
            using var cpu = new CpuBackend { Vectors = vectors };
            foreach (var (m, n, k) in new[] { (1, 1, 1), (3, 5, 7), (17, 33, 9), (64, 70, 130), (5, 600, 3), (130, 7, 257), (4, 4, 0), (13, 40, 600) }.Concat(fewRows))
                foreach (bool ta in new[] { false, true })
                    foreach (bool tb in new[] { false, true })
                    {
                        var a = Normal((long)m * k, m + k);
                        var b = Normal((long)k * n, n + 1);
                        string at = $"{m}x{n}x{k} ta={ta} tb={tb} {vectors}";
                        // A float sum of k terms of either sign rounds about sqrt(k) times as much as one
                        // term: the SGEMM sums at most 512 (KC) before it adds into C, the portable loop all k.
                        double tolerance = Product * Math.Max(1, Math.Sqrt(k / 512.0));
                        Compare($"gemm {at} beta=0", [a, b], [(long)m * n], (be, p) => be.Gemm(ta, tb, m, n, k, 0.75f, p[0], p[1], 0f, p[2]), tolerance, cpu);
                        Compare($"gemm {at} beta=0.5", [a, b, Normal((long)m * n, 99)], [], (be, p) => be.Gemm(ta, tb, m, n, k, -1.5f, p[0], p[1], 0.5f, p[2]), tolerance, cpu);
                    }
        }
    }

    /// <summary>The levels of <see cref="CpuBackend.CpuVectors"/> this CPU runs (a backend can be set to fewer than its hardware's).</summary>
    internal static IEnumerable<CpuBackend.CpuVectors> VectorLevels() =>
        Enum.GetValues<CpuBackend.CpuVectors>().Where(v => v <= CpuBackend.HardwareVectors);

    [Fact]
    public void ConvolutionForwardAndBothAdjoints()
    {
        var cases = new (int n, int cin, int h, int w, int cout, int k)[]
        {
            (1, 1, 1, 1, 1, 1),
            (1, 1, 4, 4, 1, 3),
            (2, 3, 5, 7, 4, 3),      // RGB, a non-square image
            (1, 3, 8, 8, 5, 1),      // fromRGB: 1x1 with few input channels
            (2, 16, 5, 5, 12, 1),    // 1x1 with many channels
            (3, 8, 12, 12, 3, 1),    // toRGB-like 1x1: few output rows, 64-pixel strips in place and across samples
            (2, 3, 16, 16, 8, 1),    // fromRGB-like 1x1: its input gradient has 3 rows
            (3, 4, 6, 5, 2, 5),      // k = 5
            (1, 2, 3, 3, 3, 7),      // a kernel larger than the image
            (2, 8, 8, 8, 8, 3),
            (2, 4, 32, 32, 4, 3),    // Winograd F(4x4) forward on this size
            (1, 2, 64, 64, 3, 3),    // and for the weight gradient
        };
        foreach (var vectors in VectorLevels())
        {
            using var cpu = new CpuBackend { Vectors = vectors };
            foreach (var (n, cin, h, w, cout, k) in cases)
            {
                long xs = (long)n * cin * h * w, ws = (long)cout * cin * k * k, ys = (long)n * cout * h * w;
                float scale = (float)(Math.Sqrt(2) / Math.Sqrt(cin * k * k));
                var x = Normal(xs, 21);
                var wt = Normal(ws, 22);
                var gy = Normal(ys, 23);
                string at = $"n={n} cin={cin} {h}x{w} cout={cout} k={k} {vectors}";
                Compare($"conv2d_forward {at}", [x, wt], [ys], (be, p) => be.Conv2dForward(p[0], p[1], p[2], n, cin, h, w, cout, k, scale), Product, cpu);
                foreach (float slope in new[] { 0.2f, 1f })
                    Compare($"conv2d_forward {at} with bias, slope {slope}", [x, wt, Normal(cout, 24)], [ys],
                        (be, p) => be.Conv2dForward(p[0], p[1], p[3], n, cin, h, w, cout, k, scale, p[2], slope), Product, cpu);
                Compare($"conv2d_backward_input {at}", [gy, wt], [xs], (be, p) => be.Conv2dBackwardInput(p[0], p[1], p[2], n, cin, h, w, cout, k, scale), Product, cpu);
                Compare($"conv2d_backward_weight {at}", [x, gy], [ws], (be, p) => be.Conv2dBackwardWeight(p[0], p[1], p[2], n, cin, h, w, cout, k, scale), Product, cpu);
            }
        }
    }

    [Fact]
    public void ResampleAndChannelKernels()
    {
        foreach (var (planes, h, w) in new[] { (1, 1, 1), (3, 5, 7), (10, 33, 17) })
            foreach (float gain in new[] { 1f, 2.5f })
            {
                Compare($"upsample2x {planes}x{h}x{w} gain={gain}", [Normal((long)planes * h * w, 31)], [4L * planes * h * w],
                    (be, p) => be.Upsample2x(p[0], p[1], planes, h, w, gain), Elementwise);
                Compare($"avgpool2x {planes}x{2 * h}x{2 * w} gain={gain}", [Normal(4L * planes * h * w, 32)], [(long)planes * h * w],
                    (be, p) => be.AvgPool2x(p[0], p[1], planes, 2 * h, 2 * w, gain), Elementwise);
            }
        foreach (var (srcC, srcStart, dstC, dstStart, count, samples, plane) in new[] { (5, 1, 7, 3, 3, 2, 9), (1, 0, 4, 3, 1, 4, 16), (6, 2, 6, 2, 4, 3, 1031) })
            Compare($"copy_channels {srcC}[{srcStart}..] -> {dstC}[{dstStart}..] x{count}", [Normal((long)samples * srcC * plane, 41), Normal((long)samples * dstC * plane, 42)], [],
                (be, p) => be.CopyChannels(p[0], srcC, srcStart, p[1], dstC, dstStart, count, samples, plane), Elementwise);
    }

    [Fact]
    public void NormalizationKernels()
    {
        foreach (var (n, c, plane) in new[] { (1, 1, 1), (2, 3, 16), (3, 17, 25), (2, 512, 16), (1, 8, 300) })
        {
            long len = (long)n * c * plane;
            var x = Normal(len, 51, 3f);
            var gy = Normal(len, 52);
            string at = $"n={n} c={c} plane={plane}";
            Compare($"pixelnorm_forward {at}", [x], [len], (be, p) => be.PixelNormForward(p[0], p[1], n, c, plane, 1e-8f), Reduction);
            Compare($"pixelnorm_backward {at}", [x, gy], [len], (be, p) => be.PixelNormBackward(p[0], p[1], p[2], n, c, plane, 1e-8f), Reduction);
        }
        foreach (var (n, c, plane, group) in new[] { (1, 3, 16, 1), (4, 3, 16, 4), (8, 5, 9, 4), (6, 2, 4, 2), (16, 32, 16, 4), (4, 1, 1, 4) })
        {
            long xs = (long)n * c * plane, ys = (long)n * (c + 1) * plane;
            var x = Normal(xs, 61);
            var gy = Normal(ys, 62);
            string at = $"n={n} c={c} plane={plane} group={group}";
            Compare($"minibatch_stddev_forward {at}", [x], [ys], (be, p) => be.MinibatchStdDevForward(p[0], p[1], n, c, plane, group, 1e-8f), Reduction);
            Compare($"minibatch_stddev_backward {at}", [x, gy], [xs], (be, p) => be.MinibatchStdDevBackward(p[0], p[1], p[2], n, c, plane, group, 1e-8f), Reduction);
        }
    }

    [Fact]
    public void GradientPenaltyKernels()
    {
        foreach (var (samples, inner) in new[] { (1, 1), (3, 100), (4, 768), (3, 7) })
        {
            long n = (long)samples * inner;
            var g = Normal(n, 71, 0.1f);
            Array.Clear(g, 0, inner);   // sample 0 has a zero gradient: norm 0, subgradient 0
            string at = $"{samples}x{inner}";
            Compare($"gradient_penalty_forward {at}", [g], [samples, samples], (be, p) => be.GradientPenaltyForward(p[0], p[1], p[2], samples, inner, 1f), Reduction);
            var norms = ReferenceBackendHarness.Run(ReferenceBackend.Shared, [g], [samples, samples], (be, p) => be.GradientPenaltyForward(p[0], p[1], p[2], samples, inner, 1f))[1];
            Compare($"gradient_penalty_backward {at}", [g, norms, Normal(samples, 72)], [n],
                (be, p) => be.GradientPenaltyBackward(p[0], p[1], p[2], p[3], samples, inner, 1f), Elementwise);
        }
    }

    [Fact]
    public void OptimizerAndCountKernels()
    {
        foreach (long n in new long[] { 1, 31, 4097 })
        {
            var p = Normal(n, 81);
            var g = Normal(n, 82, 0.01f);
            var m = Normal(n, 83, 0.01f);
            var v = Uniform(n, 84, 0f, 1e-4f);
            foreach (var (beta1, step) in new[] { (0f, 1), (0f, 17), (0.9f, 3) })
                Compare($"adam n={n} beta1={beta1} step={step}", [p, g, m, v, [ReferenceBackendHarness.StepCount(step)]], [],
                    (be, b) => be.AdamUpdate(b[0], b[1], b[2], b[3], n, 1e-3f, beta1, 0.99f, 1e-8f, b[4], DeviceBuffer.Null), Elementwise);
            Compare($"ema n={n}", [Normal(n, 85), p], [], (be, b) => be.EmaUpdate(b[0], b[1], n, 0.999f, DeviceBuffer.Null), Elementwise);

            var x = Normal(n, 91);
            var rng = new Random(92);
            for (int i = 0; i < 7; i++) x[rng.NextInt64(n)] = (i % 3) switch { 0 => float.NaN, 1 => float.PositiveInfinity, _ => float.NegativeInfinity };
            long expected = Count(ReferenceBackend.Shared, x), actual = Count(CpuBackend.Shared, x);
            Assert.True(expected == actual, $"count_nonfinite n={n}: reference {expected}, cpu {actual}");
        }

        static long Count(IBackend be, float[] x)
        {
            var b = be.Allocate(x.Length);
            try
            {
                be.Upload(x, b);
                return NonFiniteCount.Of(be, b, x.Length);
            }
            finally { be.Free(b); }
        }
    }
}

/// <summary>Reads a backend's count_nonfinite through a fresh device counter.</summary>
internal static class NonFiniteCount
{
    public static long Of(IBackend backend, DeviceBuffer x, long n, long start = 0)
    {
        var counter = backend.Allocate(2);
        try
        {
            Span<float> host = stackalloc float[2];
            System.Runtime.InteropServices.MemoryMarshal.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(host), start);
            backend.Upload(host, counter);
            backend.CountNonFinite(x, n, counter);
            backend.Download(counter, host);
            return System.Runtime.InteropServices.MemoryMarshal.Read<long>(System.Runtime.InteropServices.MemoryMarshal.AsBytes(host));
        }
        finally { backend.Free(counter); }
    }
}
