using RawGan.Engine.Backends;
using RawGan.Engine.Backends.Cuda;
using RawGan.Engine.Backends.Reference;

namespace RawGan.Engine.Tests;

/// <summary>
/// The comparison every version of the matrix product and the convolutions (kernels/*.cu) passes
/// against <see cref="ReferenceBackend"/>: the same odd sizes (M, N, K not multiples of any tile
/// or stage: batch 1, three channels, 1x1, 3x3, 5x5 and 7x7 kernels, cases larger than one
/// 128 x 128 tile in every dimension), outputs starting as NaN, and a bound per element derived
/// from the kernel's precision and the inputs: |y - reference| &lt;= bound(K) |s| sum_k |a_k b_k|
/// + extra, where |s| sum_k |a_k b_k| is the reference run on absolute values.
/// </summary>
internal static class ProductKernelCheck
{
    /// <summary>One comparison: what it is, the inputs, the outputs' sizes (none: the last input is
    /// read and written), K, the kernel, the kernel for the magnitudes (null: the same), and an
    /// extra bound per element.</summary>
    public delegate void Checker(string what, float[][] inputs, long[] outputs, int k, Action<IBackend, DeviceBuffer[]> kernel,
        Action<IBackend, DeviceBuffer[]>? magnitudeKernel = null, Func<int, double>? extra = null);

    /// <summary>
    /// Runs <paramref name="kernel"/> on the reference (with the inputs, and with their absolute
    /// values for the magnitudes) and on every backend in <paramref name="backends"/>, and checks
    /// the last buffer (the output) element by element against
    /// <c>bound(k) * magnitude + extra</c>.
    /// </summary>
    public static void Compare(IEnumerable<CudaBackend> backends, string label, Func<int, double> bound, string what, float[][] inputs, long[] outputs, int k,
        Action<IBackend, DeviceBuffer[]> kernel, Action<IBackend, DeviceBuffer[]>? magnitudeKernel = null, Func<int, double>? extra = null)
    {
        var expected = ReferenceBackendHarness.Run(ReferenceBackend.Shared, inputs, outputs, kernel);
        var magnitude = ReferenceBackendHarness.Run(ReferenceBackend.Shared, inputs.Select(v => v.Select(MathF.Abs).ToArray()).ToArray(), outputs, magnitudeKernel ?? kernel);
        int last = expected.Length - 1, compared = 0;
        foreach (var backend in backends)
        {
            var actual = ReferenceBackendHarness.Run(backend, inputs, outputs, kernel);
            for (int i = 0; i < expected[last].Length; i++)
            {
                double e = expected[last][i], a = actual[last][i];
                double limit = bound(k) * magnitude[last][i] + (extra?.Invoke(i) ?? 0) + 1e-30;
                Assert.True(Math.Abs(e - a) <= limit,
                    $"{what} on {backend.Name} ({label}): element {i} of {expected[last].Length}: expected {e:G9}, got {a:G9} " +
                    $"(error {Math.Abs(e - a):G3}, bound {limit:G3} = {bound(k):G3} x sum |a b| {magnitude[last][i]:G4})");
            }
            compared++;
        }
        Assert.True(compared > 0, $"{what} ({label}): no backend to compare");
    }

    /// <summary>sgemm's cases: (1, 1, 1) to more than one 128 x 128 tile along M and N, K over
    /// several stages, K = 0; every transpose, beta 0 (C written without being read: it starts
    /// as NaN) and beta 0.5 (C read and scaled; the magnitude run leaves beta C out, and
    /// <paramref name="sumError"/> per rounding bounds it).</summary>
    public static void Gemms(string kernel, double sumError, Checker check)
    {
        foreach (var (m, n, k) in new[] { (1, 1, 1), (3, 5, 7), (17, 33, 9), (64, 70, 130), (5, 600, 3), (130, 7, 257), (150, 270, 100), (4, 4, 0) })
            foreach (bool ta in new[] { false, true })
                foreach (bool tb in new[] { false, true })
                {
                    var a = ReferenceBackendHarness.Normal((long)m * k, m + k);
                    var b = ReferenceBackendHarness.Normal((long)k * n, n + 1);
                    var c = ReferenceBackendHarness.Normal((long)m * n, 99);
                    string at = $"{kernel} {m}x{n}x{k} ta={ta} tb={tb}";
                    check($"{at} beta=0", [a, b], [(long)m * n], k,
                        (be, p) => be.Gemm(ta, tb, m, n, k, 0.75f, p[0], p[1], 0f, p[2]));
                    check($"{at} beta=0.5", [a, b, c], [], k,
                        (be, p) => be.Gemm(ta, tb, m, n, k, -1.5f, p[0], p[1], 0.5f, p[2]),
                        (be, p) => be.Gemm(ta, tb, m, n, k, 1.5f, p[0], p[1], 0f, p[2]),
                        i => 2 * sumError * Math.Abs(0.5 * c[i]));
                }
    }

    public static readonly (int n, int cin, int h, int w, int cout, int k)[] ConvCases =
    [
        (1, 1, 1, 1, 1, 1),       // a single pixel
        (1, 1, 4, 4, 1, 3),       // batch 1, one channel
        (2, 3, 5, 7, 4, 3),       // three channels (RGB), a non-square image
        (1, 3, 8, 8, 5, 1),       // fromRGB / toRGB: 1x1
        (3, 4, 6, 5, 2, 5),       // k = 5
        (2, 8, 4, 4, 16, 3),      // ProGAN's 4x4 stage in miniature
        (4, 16, 16, 16, 8, 3),
        (1, 2, 3, 3, 3, 7),       // a kernel larger than the image
        (2, 3, 32, 32, 4, 3),     // few weight tiles, many pixels: the weight gradient splits its sum
        (4, 1, 32, 32, 3, 1),     // toRGB-like, split four ways on a small machine
        (2, 20, 9, 11, 150, 3),   // more than a 128 x 128 tile: forward (150 x 198), weight gradient (150 x 180)
        (3, 136, 7, 9, 12, 3),    // and the input gradient (136 x 189)
    ];

    /// <summary>The three convolutions (kernel names ending in <paramref name="suffix"/>) on
    /// <see cref="ConvCases"/>, the forward pass with and without its bias and leaky-ReLU epilogue.</summary>
    public static void Convolutions(string suffix, Checker check)
    {
        foreach (var (n, cin, h, w, cout, k) in ConvCases)
        {
            long xs = (long)n * cin * h * w, ws = (long)cout * cin * k * k, ys = (long)n * cout * h * w;
            float scale = (float)(Math.Sqrt(2) / Math.Sqrt(cin * k * k));
            var x = ReferenceBackendHarness.Normal(xs, 21);
            var wt = ReferenceBackendHarness.Normal(ws, 22);
            var gy = ReferenceBackendHarness.Normal(ys, 23);
            string at = $"n={n} cin={cin} {h}x{w} cout={cout} k={k}";
            check($"conv2d_forward{suffix} {at}", [x, wt], [ys], cin * k * k,
                (be, p) => be.Conv2dForward(p[0], p[1], p[2], n, cin, h, w, cout, k, scale));
            // With the epilogue: z = y + b, then leaky ReLU (1-Lipschitz, so z's error bounds y's). The
            // magnitude is |scale| sum |a b| + |b| (the bias alone on absolute values), which also
            // covers the rounding of the bias addition.
            var bias = ReferenceBackendHarness.Normal(cout, 24);
            check($"conv2d_forward{suffix} {at} with bias and leaky ReLU", [x, wt, bias], [ys], cin * k * k,
                (be, p) => be.Conv2dForward(p[0], p[1], p[3], n, cin, h, w, cout, k, scale, p[2], 0.2f),
                (be, p) => be.Conv2dForward(p[0], p[1], p[3], n, cin, h, w, cout, k, scale, p[2], 1f));
            check($"conv2d_backward_input{suffix} {at}", [gy, wt], [xs], cout * k * k,
                (be, p) => be.Conv2dBackwardInput(p[0], p[1], p[2], n, cin, h, w, cout, k, scale));
            check($"conv2d_backward_weight{suffix} {at}", [x, gy], [ws], n * h * w,
                (be, p) => be.Conv2dBackwardWeight(p[0], p[1], p[2], n, cin, h, w, cout, k, scale));
        }
    }
}
