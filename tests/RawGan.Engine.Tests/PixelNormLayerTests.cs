using RawGan.Engine.Backends;
using RawGan.Engine.Backends.Cpu;
using RawGan.Engine.Backends.Cuda;
using RawGan.Engine.Backends.Reference;

namespace RawGan.Engine.Tests;

/// <summary>
/// The generator's layer with its pixel norm in one call (<c>Conv2dForwardPixelNorm</c>:
/// conv2d_forward_pixelnorm, versions 1 and 3 at fp32, version 2 at TF32, where one block holds every
/// output channel of its pixels; the layer then pixel norm in place elsewhere) and its backward
/// (<c>PixelNormLeakyReluBackward</c>, with the bias gradient), on the CPU, the emulator at fp32 and at TF32, and the GPU
/// when it is a test device.
/// <list type="bullet">
/// <item>Against the reference backend (fp32 backends): z and the kept factors, with the product
/// tolerance.</item>
/// <item>Against the same backend's unfused calls, the layer (the same product kernel, so the same
/// sums) and then pixel norm: this is what isolates the fused store (a wrong fragment row, a lane
/// left out of a column's sum, a warp's partial sum not added), whatever the product's
/// precision, so it runs at TF32 too.</item>
/// <item>The launches per call: one where the fused kernel should run (Cout within a block's rows),
/// two where it cannot (so both paths are known to have run).</item>
/// </list>
/// Output channel counts straddle every block height: 1, 5, 32 (one warp of rows), 48 (two), 64
/// (version 1's 16 rows of threads), 100 and 128 (four warps), 150 (no block holds them).
/// </summary>
public class PixelNormLayerTests
{
    private const double Product = 1e-4, Reduction = 1e-5;

    public static readonly (int n, int cin, int h, int w, int cout, int k)[] Cases =
    [
        (1, 1, 1, 1, 1, 1),
        (2, 3, 5, 7, 5, 3),
        (1, 3, 8, 8, 32, 1),
        (2, 8, 4, 4, 48, 3),
        (2, 4, 9, 11, 64, 3),
        (3, 6, 7, 5, 100, 3),
        (2, 16, 8, 8, 128, 3),
        (1, 5, 6, 6, 150, 3),
    ];

    public static TheoryData<int> BlockSizes => new() { 32, 128, 256, 1024 };

    private static float Scale(int cin, int k) => MathF.Sqrt(2f / (cin * k * k));

    private static Action<IBackend, DeviceBuffer[]> Fused(int n, int cin, int h, int w, int cout, int k, float slope) =>
        (be, p) => be.Conv2dForwardPixelNorm(p[0], p[1], p[3], p[4], n, cin, h, w, cout, k, Scale(cin, k), p[2], slope, 1e-8f);

    private static Action<IBackend, DeviceBuffer[]> Unfused(int n, int cin, int h, int w, int cout, int k, float slope) =>
        (be, p) =>
        {
            be.Conv2dForward(p[0], p[1], p[3], n, cin, h, w, cout, k, Scale(cin, k), p[2], slope);
            be.PixelNormForward(p[3], p[3], n, cout, h * w, 1e-8f, p[4]);
        };

    private static float[][] Inputs(int n, int cin, int h, int w, int cout, int k) =>
    [
        ReferenceBackendHarness.Normal((long)n * cin * h * w, 41),
        ReferenceBackendHarness.Normal((long)cout * cin * k * k, 42),
        ReferenceBackendHarness.Normal(cout, 43, 0.3f),
    ];

    private static void Close(float[] expected, float[] actual, double tolerance, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
        {
            double e = expected[i], a = actual[i];
            Assert.False(float.IsNaN(actual[i]), $"{what}: element {i} of {expected.Length} was not written");
            Assert.True(Math.Abs(e - a) <= tolerance * Math.Max(1, Math.Abs(e)), $"{what}: element {i} of {expected.Length}: expected {e:G9}, got {a:G9}");
        }
    }

    /// <summary>fp32 backends at <paramref name="blockSize"/>: the emulator (version 1 and its
    /// fallback), the CPU, and the GPU when it is a test device.</summary>
    private static IEnumerable<IBackend> Fp32Backends(int blockSize) => TestBackends.Cuda(blockSize).Append<IBackend>(CpuBackend.Shared);

    [Theory]
    [MemberData(nameof(BlockSizes))]
    public void TheFusedLayerMatchesTheReference(int blockSize)
    {
        foreach (var (n, cin, h, w, cout, k) in Cases)
            foreach (float slope in new[] { 0.2f, 1f })
            {
                var inputs = Inputs(n, cin, h, w, cout, k);
                long[] outputs = [(long)n * cout * h * w, (long)n * h * w];
                var expected = ReferenceBackendHarness.Run(ReferenceBackend.Shared, inputs, outputs, Fused(n, cin, h, w, cout, k, slope));
                foreach (var backend in Fp32Backends(blockSize))
                {
                    var actual = ReferenceBackendHarness.Run(backend, inputs, outputs, Fused(n, cin, h, w, cout, k, slope));
                    string at = $"n={n} cin={cin} {h}x{w} cout={cout} k={k} slope {slope} on {backend.Name}, block {blockSize}";
                    Close(expected[3], actual[3], Product, $"z, {at}");
                    Close(expected[4], actual[4], Product, $"the kept factors, {at}");
                }
            }
    }

    /// <summary>This class's own emulated backends (fp32 by the default tiling, TF32 with tensor-core
    /// blocks of at most <paramref name="blockSize"/> threads, fp32 with every product on version 3
    /// and a block's threads run in reverse order), so that the kernels it sees launched are its own: the
    /// shared test backends serve other test classes at the same time.</summary>
    private static readonly Dictionary<int, CudaBackend[]> OwnBackends = new();

    private static CudaBackend[] Own(int blockSize)
    {
        lock (OwnBackends)
        {
            if (!OwnBackends.TryGetValue(blockSize, out var backends))
                OwnBackends[blockSize] = backends =
                [
                    new CudaBackend(new EmulatedDriver(), blockSize),
                    new CudaBackend(new EmulatedDriver(), blockSize, Precision.Tf32) { TensorCoreThreads = blockSize },
                    new CudaBackend(new EmulatedDriver { Order = SimtOrder.Reverse }, blockSize) { Fp32Tiling = ProductTiling.Version3 },
                ];
            return backends;
        }
    }

    [Theory]
    [MemberData(nameof(BlockSizes))]
    public void TheFusedStoreEqualsTheLayerThenPixelNormAtEveryPrecision(int blockSize)
    {
        Assert.Contains("cuda-emulated", TestBackends.Names);
        foreach (var backend in Own(blockSize))
            foreach (var (n, cin, h, w, cout, k) in Cases)
            {
                var inputs = Inputs(n, cin, h, w, cout, k);
                long[] outputs = [(long)n * cout * h * w, (long)n * h * w];
                var expected = ReferenceBackendHarness.Run(backend, inputs, outputs, Unfused(n, cin, h, w, cout, k, 0.2f));
                var launched = new List<string>();
                backend.LaunchObserver = (kernel, _) => launched.Add(kernel);
                float[][] actual;
                try
                {
                    actual = ReferenceBackendHarness.Run(backend, inputs, outputs, Fused(n, cin, h, w, cout, k, 0.2f));
                }
                finally
                {
                    backend.LaunchObserver = null;
                }
                string at = $"n={n} cin={cin} {h}x{w} cout={cout} k={k} on {backend.Name} at {backend.Precision}, block {blockSize}";
                // The same product and epilogue; only the sums of squares differ in their order (and width).
                Close(expected[3], actual[3], Reduction, $"z, {at}");
                Close(expected[4], actual[4], Reduction, $"the kept factors, {at}");

                // Which kernels ran: the fused one alone where a block holds all of a pixel's channels.
                long columns = (long)n * h * w;
                var tiling = backend.TilingFor(cout, columns);
                var (blockRows, fused) = tiling switch
                {
                    ProductTiling.Version2 => (32 * CudaBackend.MmaBlock(backend.ThreadsPerBlock("conv2d_forward_pixelnorm_tf32"), cout, columns).Y, "conv2d_forward_pixelnorm_tf32"),
                    ProductTiling.Version3 => (128L, "conv2d_forward_pixelnorm_wide"),
                    _ => (4 * CudaBackend.TileBlock(backend.ThreadsPerBlock("conv2d_forward_pixelnorm")).Y, "conv2d_forward_pixelnorm"),
                };
                var kernels = launched.Where(kernel => kernel.StartsWith("conv2d_") || kernel.StartsWith("pixelnorm_")).ToList();
                if (cout <= blockRows)
                    Assert.True(kernels.SequenceEqual([fused]), $"{at}: launched {string.Join(", ", kernels)}");
                else
                    Assert.True(kernels.Count == 2 && kernels[0].StartsWith("conv2d_forward") && !kernels[0].Contains("pixelnorm") && kernels[1] == "pixelnorm_forward",
                        $"{at}: launched {string.Join(", ", kernels)} (blocks of {blockRows} rows)");
            }
    }

    [Fact]
    public void ThePaperPresetsLargeMapsAndTheSmallPresetsLayersTakeTheFusedKernel()
    {
        // What the host launches for the generator's layers at batch 16, over a driver that runs
        // nothing (an H100-sized device): at TF32 and at fp32 (version 3 for these sizes), the
        // fused kernel alone up to 128 output channels (the paper preset at 128x128 and 256x256,
        // the small preset everywhere), the layer then pixel norm at 256 and 512.
        foreach (var (precision, fused) in new[] { (Precision.Tf32, "conv2d_forward_pixelnorm_tf32"), (Precision.Fp32, "conv2d_forward_pixelnorm_wide") })
        {
            using var backend = new CudaBackend(new KernelSignatureTests.RecordingDriver(), precision: precision);
            var launched = new List<string>();
            backend.LaunchObserver = (kernel, _) => launched.Add(kernel);
            foreach (var (cin, cout, size, fits) in new[] { (128, 64, 256, true), (64, 64, 256, true), (256, 128, 128, true), (128, 128, 32, true),
                         (512, 256, 64, false), (512, 512, 32, false) })
            {
                long columns = 16L * size * size;
                var x = backend.Allocate(16L * cin * size * size);
                var w = backend.Allocate((long)cout * cin * 9);
                var b = backend.Allocate(cout);
                var z = backend.Allocate(16L * cout * size * size);
                var inv = backend.Allocate(columns);
                launched.Clear();
                backend.Conv2dForwardPixelNorm(x, w, z, inv, 16, cin, size, size, cout, 3, 0.1f, b, 0.2f, 1e-8f);
                string at = $"{cin} -> {cout} at {size}x{size}, {precision}: launched {string.Join(", ", launched)}";
                if (fits) Assert.True(launched.SequenceEqual([fused]), at);
                else Assert.True(launched.Count == 2 && !launched[0].Contains("pixelnorm") && launched[1] == "pixelnorm_forward", at);
                foreach (var buffer in new[] { x, w, b, z, inv }) backend.Free(buffer);
            }
        }
    }

    [Theory]
    [MemberData(nameof(BlockSizes))]
    public void OnEveryCudaBackendTheFusedLayerEqualsTheLayerThenPixelNorm(int blockSize)
    {
        // Values only, on the shared test backends (the GPU's too when it is a test device): fp32 by
        // the default tiling, TF32, and every product on version 3.
        var backends = TestBackends.Cuda(blockSize).Concat(TestBackends.Tf32(blockSize)).Concat(TestBackends.Wide()).ToList();
        Assert.NotEmpty(backends);
        foreach (var backend in backends)
            foreach (var (n, cin, h, w, cout, k) in Cases)
            {
                var inputs = Inputs(n, cin, h, w, cout, k);
                long[] outputs = [(long)n * cout * h * w, (long)n * h * w];
                var expected = ReferenceBackendHarness.Run(backend, inputs, outputs, Unfused(n, cin, h, w, cout, k, 0.2f));
                var actual = ReferenceBackendHarness.Run(backend, inputs, outputs, Fused(n, cin, h, w, cout, k, 0.2f));
                string at = $"n={n} cin={cin} {h}x{w} cout={cout} k={k} on {backend.Name} at {backend.Precision} ({backend.Fp32Tiling}), block {blockSize}";
                Close(expected[3], actual[3], Reduction, $"z, {at}");
                Close(expected[4], actual[4], Reduction, $"the kept factors, {at}");
            }
    }

    [Fact]
    public void TheFactorsMustHaveSomewhereToGo()
    {
        foreach (var backend in new IBackend[] { CpuBackend.Shared, ReferenceBackend.Shared }.Concat(TestBackends.Cuda(256)))
        {
            var x = backend.Allocate(4);
            try
            {
                var e = Assert.Throws<ArgumentException>(() => backend.Conv2dForwardPixelNorm(x, x, x, DeviceBuffer.Null, 1, 1, 2, 2, 1, 1, 1f, x, 0.2f, 1e-8f));
                Assert.Contains("inv", e.Message);
            }
            finally
            {
                backend.Free(x);
            }
        }
    }

    [Fact]
    public void TheBackwardMatchesTheReferenceAndTheUnfusedPassesOnEveryBackend()
    {
        foreach (var (n, c, plane) in new[] { (1, 1, 1), (2, 5, 35), (3, 64, 17), (16, 128, 64), (2, 300, 3) })
            foreach (float slope in new[] { 0.2f, 1f })
            {
                long len = (long)n * c * plane;
                // z and its factors from a pixel norm of v (so that they belong together), and an upstream gradient.
                var v = ReferenceBackendHarness.Normal(len, 51);
                var norm = ReferenceBackendHarness.Run(ReferenceBackend.Shared, [v], [len, (long)n * plane],
                    (be, p) => be.PixelNormForward(p[0], p[1], n, c, plane, 1e-8f, p[2]));
                float[][] inputs = [norm[1], norm[2], ReferenceBackendHarness.Normal(len, 52)];
                Action<IBackend, DeviceBuffer[]> backward = (be, p) => be.PixelNormLeakyReluBackward(p[0], p[1], p[2], p[3], p[4], n, c, plane, slope);
                var expected = ReferenceBackendHarness.Run(ReferenceBackend.Shared, inputs, [len, c], backward);

                // Independently: pixelnorm_backward at v (lrelu(a) = v), then the mask of v's sign.
                var unfused = ReferenceBackendHarness.Run(ReferenceBackend.Shared, [v, inputs[2]], [len],
                    (be, p) => be.PixelNormBackward(p[0], p[1], p[2], n, c, plane, 1e-8f));
                var masked = unfused[2].Select((g, i) => v[i] > 0 ? g : slope * g).ToArray();
                string at = $"{n}x{c}x{plane}, slope {slope}";
                Close(masked, expected[3], Reduction, $"the reference's fused backward against pixel norm's backward and the mask, {at}");
                var sums = new float[c];
                for (int s = 0; s < n; s++)
                    for (int ch = 0; ch < c; ch++)
                        sums[ch] = (float)(sums[ch] + Enumerable.Range(0, plane).Sum(q => (double)masked[((long)s * c + ch) * plane + q]));
                Close(sums, expected[4], Reduction, $"the reference's bias gradient against the sums of the masked gradient, {at}");

                foreach (var backend in Fp32Backends(256).Concat(TestBackends.Cuda(32)))
                {
                    var actual = ReferenceBackendHarness.Run(backend, inputs, [len, c], backward);
                    Close(expected[3], actual[3], Reduction, $"pixelnorm_leaky_relu_backward {at} on {backend.Name}");
                    Close(expected[4], actual[4], Reduction, $"its bias gradient, {at} on {backend.Name}");
                }
            }
    }
}
