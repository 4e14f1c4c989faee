using RawGan.Engine.Backends;
using RawGan.Engine.Backends.Cpu;
using RawGan.Engine.Backends.Reference;

namespace RawGan.Engine.Tests;

/// <summary>
/// Every kernel of every backend against <see cref="ReferenceBackend"/>, the plain loops that
/// define "correct" (docs/DESIGN.md, decision 10): the CUDA kernels run on the emulator through
/// the real CudaBackend (its argument packing, grid arithmetic and the .cu source are what is
/// tested), and CpuBackend's optimized kernels (SIMD, Winograd, blocking) on the same inputs. Each kernel runs at several block sizes
/// (every one must be right for any power of two from 32 to 1024) and on sizes that are not
/// multiples of the block: 1 element, batch 1, one channel, three channels, odd planes, and
/// arrays larger than one grid pass so the grid-stride loops wrap.
///
/// Outputs start as NaN on both backends, so an element a kernel forgets to write fails.
///
/// Tolerances, relative to max(1, |expected|):
/// - exact kernels (copies, one float operation per element, integer counts): 0, or 1e-6 where
///   the GPU may fuse a multiply-add (the emulator's g++ build does not, but the bound is the one
///   that must also hold on a GPU);
/// - reductions (sum_to, pixel norm, minibatch stddev, gradient penalty), summed in double by the
///   reference and in float or double by the others: 1e-5, the float rounding of the result plus
///   a different summation order;
/// - matrix products and convolutions (float accumulation in a different order, K up to a few
///   hundred terms of order 1): 1e-4.
/// </summary>
public class CudaKernelTests
{
    public static TheoryData<int> BlockSizes => new() { 32, 128, 256, 1024 };

    private const double Exact = 0, Elementwise = 1e-6, Reduction = 1e-5, Product = 1e-4;

    // ------------------------------------------------------------------ harness

    /// <summary>
    /// Runs <paramref name="kernel"/> on the CPU and on the emulated GPU with the same inputs,
    /// then compares every buffer (inputs too: some kernels update them in place). Buffers are
    /// the inputs in order, then one buffer per entry of <paramref name="outputs"/>, filled with NaN.
    /// </summary>
    private static void Compare(int blockSize, string what, float[][] inputs, long[] outputs, Action<IBackend, DeviceBuffer[]> kernel, double tolerance)
    {
        var expected = Run(ReferenceBackend.Shared, inputs, outputs, kernel);
        foreach (var backend in TestBackends.Cuda(blockSize).Append<IBackend>(CpuBackend.Shared))
        {
            var actual = Run(backend, inputs, outputs, kernel);
            for (int b = 0; b < expected.Length; b++)
            {
                string buffer = b < inputs.Length ? $"input {b}" : $"output {b - inputs.Length}";
                AssertClose(expected[b], actual[b], tolerance, $"{what} on {backend.Name}, block {blockSize}, {buffer}");
            }
        }
    }

    private static float[][] Run(IBackend backend, float[][] inputs, long[] outputs, Action<IBackend, DeviceBuffer[]> kernel) =>
        ReferenceBackendHarness.Run(backend, inputs, outputs, kernel);

    private static void AssertClose(float[] expected, float[] actual, double tolerance, string what) =>
        ReferenceBackendHarness.AssertClose(expected, actual, tolerance, what);

    private static float[] Normal(long n, int seed, float scale = 1f) => ReferenceBackendHarness.Normal(n, seed, scale);

    private static float[] Uniform(long n, int seed, float lo, float hi) => ReferenceBackendHarness.Uniform(n, seed, lo, hi);

    /// <summary>1 element, under a warp, odd, over a block, and (70001) more than one pass of
    /// the largest grid the backend launches on a small machine, so the grid-stride loops wrap.</summary>
    private static readonly long[] ElementCounts = [1, 31, 1000, 4097, 70001];

    // ------------------------------------------------------------------ elementwise.cu

    [Theory]
    [MemberData(nameof(BlockSizes))]
    public void ElementwiseKernelsMatchTheReference(int blockSize)
    {
        foreach (long n in ElementCounts)
        {
            var x = Normal(n, 1);
            x[0] = 0f;   // the kink of leaky ReLU: x > 0 is false at 0
            var pos = Uniform(n, 2, 0.01f, 10f);
            var g = Normal(n, 3);
            var b = Normal(n, 4);
            string at = $"n={n}";
            Compare(blockSize, $"fill {at}", [], [n], (be, p) => be.Fill(p[0], n, 1.25f), Exact);
            Compare(blockSize, $"scale {at}", [x], [n], (be, p) => be.Scale(p[0], p[1], n, -0.7f), Exact);
            Compare(blockSize, $"add_scalar {at}", [x], [n], (be, p) => be.AddScalar(p[0], p[1], n, 3.5f), Exact);
            Compare(blockSize, $"square {at}", [x], [n], (be, p) => be.Square(p[0], p[1], n), Exact);
            Compare(blockSize, $"sqrt_forward {at}", [pos], [n], (be, p) => be.Sqrt(p[0], p[1], n), Exact);
            Compare(blockSize, $"rsqrt_forward {at}", [pos], [n], (be, p) => be.Rsqrt(p[0], p[1], n), Elementwise);   // two roundings (1 / sqrt) against the reference's one
            Compare(blockSize, $"softplus_forward {at}", [x], [n], (be, p) => be.Softplus(p[0], p[1], n), Elementwise);   // expf and log1pf in float, the reference in double
            Compare(blockSize, $"sigmoid_forward {at}", [x], [n], (be, p) => be.Sigmoid(p[0], p[1], n), Elementwise);
            Compare(blockSize, $"leaky_relu_forward {at}", [x], [n], (be, p) => be.LeakyReluForward(p[0], p[1], n, 0.2f), Exact);
            Compare(blockSize, $"leaky_relu_backward {at}", [x, g], [n], (be, p) => be.LeakyReluBackward(p[0], p[1], p[2], n, 0.2f), Exact);
            Compare(blockSize, $"lerp_scalar {at}", [x, b], [n], (be, p) => be.LerpScalar(p[0], p[1], p[2], n, 0.3f), Elementwise);
        }
    }

    [Theory]
    [MemberData(nameof(BlockSizes))]
    public void LerpPerSampleMatchesTheReference(int blockSize)
    {
        foreach (var (samples, inner) in new[] { (1, 1), (1, 48), (3, 3 * 5 * 5), (16, 3 * 16 * 16), (5, 4099) })
        {
            long n = (long)samples * inner;
            var t = Uniform(samples, 5, 0f, 1f);
            Compare(blockSize, $"lerp_per_sample {samples}x{inner}", [Normal(n, 6), Normal(n, 7), t], [n],
                (be, p) => be.LerpPerSample(p[0], p[1], p[2], p[3], samples, inner), Elementwise);
        }
    }

    // ------------------------------------------------------------------ broadcast.cu

    private static readonly (Dims4 y, Dims4 a, Dims4 b)[] BroadcastCases =
    [
        (new(2, 3, 4, 5), new(2, 3, 4, 5), new(2, 3, 4, 5)),      // same shape
        (new(2, 3, 4, 5), new(2, 3, 4, 5), new(1, 3, 1, 1)),      // a bias
        (new(4, 3, 5, 7), new(1, 3, 1, 1), new(4, 3, 5, 7)),      // the bias on the left
        (new(4, 3, 5, 7), new(4, 1, 1, 1), new(4, 3, 5, 7)),      // one value per sample
        (new(1, 1, 1, 1), new(1, 1, 1, 1), new(1, 1, 1, 1)),      // scalars
        (new(1, 1, 9, 33), new(1, 1, 1, 33), new(1, 1, 9, 1)),    // an outer product
        (new(3, 1, 2, 1), new(3, 1, 1, 1), new(1, 1, 2, 1)),
        (new(2, 8, 16, 16), new(2, 8, 16, 16), new(1, 1, 1, 1)),  // a scalar on a feature map
        (new(1, 1, 1, 70001), new(1, 1, 1, 70001), new(1, 1, 1, 70001)),
    ];

    [Theory]
    [MemberData(nameof(BlockSizes))]
    public void BroadcastBinaryKernelsMatchTheReference(int blockSize)
    {
        foreach (var (y, a, b) in BroadcastCases)
        {
            var av = Normal(a.Length, 8);
            var bv = Normal(b.Length, 9);
            var nonzero = Uniform(b.Length, 10, 0.5f, 2f);
            string at = $"y={y} a={a} b={b}";
            Compare(blockSize, $"add_broadcast {at}", [av, bv], [y.Length], (be, p) => be.Add(p[0], a, p[1], b, p[2], y), Exact);
            Compare(blockSize, $"sub_broadcast {at}", [av, bv], [y.Length], (be, p) => be.Sub(p[0], a, p[1], b, p[2], y), Exact);
            Compare(blockSize, $"mul_broadcast {at}", [av, bv], [y.Length], (be, p) => be.Mul(p[0], a, p[1], b, p[2], y), Exact);
            Compare(blockSize, $"div_broadcast {at}", [av, nonzero], [y.Length], (be, p) => be.Div(p[0], a, p[1], b, p[2], y), Exact);
            Compare(blockSize, $"broadcast_to {at}", [av], [y.Length], (be, p) => be.BroadcastTo(p[0], a, p[1], y), Exact);
        }
    }

    [Theory]
    [MemberData(nameof(BlockSizes))]
    public void InPlaceAddMatchesTheReference(int blockSize)
    {
        // The tape accumulates gradients with y = a + b where y is a.
        var d = new Dims4(3, 5, 7, 11);
        Compare(blockSize, "add_broadcast in place", [Normal(d.Length, 11), Normal(d.Length, 12)], [],
            (be, p) => be.Add(p[0], d, p[1], d, p[0], d), Exact);
    }

    [Theory]
    [MemberData(nameof(BlockSizes))]
    public void SumToMatchesTheReference(int blockSize)
    {
        var cases = new (Dims4 x, Dims4 y)[]
        {
            (new(2, 3, 4, 5), new(2, 3, 4, 5)),        // nothing to sum: one value per output
            (new(4, 3, 5, 5), new(1, 3, 5, 5)),        // over the batch: few values per output, one thread each
            (new(2, 3, 4, 5), new(1, 3, 1, 1)),        // a bias gradient with 40 values per output
            (new(16, 8, 9, 9), new(1, 8, 1, 1)),       // a bias gradient with 1296 values per output: one block each
            (new(3, 1, 1, 100), new(3, 1, 1, 1)),      // the innermost axis
            (new(5, 7, 1, 1), new(1, 1, 1, 1)),        // everything, few values
            (new(2, 3, 33, 35), new(1, 1, 1, 1)),      // everything, many values
            (new(6, 5, 4, 3), new(6, 1, 4, 1)),        // interleaved kept and summed axes
            (new(1, 3, 65, 1), new(1, 1, 65, 1)),      // exactly over the one-thread-per-output limit
            (new(1, 1, 1, 1), new(1, 1, 1, 1)),
        };
        foreach (var (x, y) in cases)
            Compare(blockSize, $"sum_to {x} -> {y}", [Normal(x.Length, 13)], [y.Length], (be, p) => be.SumTo(p[0], x, p[1], y), Reduction);
    }

    // ------------------------------------------------------------------ bias.cu

    [Theory]
    [MemberData(nameof(BlockSizes))]
    public void BiasLeakyReluMatchesTheReference(int blockSize)
    {
        // A dense layer's [n, c], small and odd maps, a channel with more values than a block has threads.
        foreach (var (n, c, plane) in new[] { (1, 1, 1), (3, 5, 1), (2, 3, 35), (16, 8, 81), (1, 2, 1500) })
        {
            long total = (long)n * c * plane;
            var x = Normal(total, 14);
            x[0] = 0f;   // the kink: z = x + b is then b, which may be either sign
            var b = Normal(c, 15);
            string at = $"{n}x{c}x{plane}";
            foreach (float slope in new[] { 0.2f, 1f })
            {
                Compare(blockSize, $"bias_leaky_relu {at} slope {slope}", [x, b], [total], (be, p) => be.BiasLeakyRelu(p[0], p[1], p[2], n, c, plane, slope), Exact);
                Compare(blockSize, $"bias_leaky_relu_backward {at} slope {slope}", [x, Normal(total, 16)], [total, c],
                    (be, p) => be.BiasLeakyReluBackward(p[0], p[1], p[2], p[3], n, c, plane, slope), Reduction);
            }
        }
    }

    // ------------------------------------------------------------------ gemm.cu

    [Theory]
    [MemberData(nameof(BlockSizes))]
    public void SgemmMatchesTheCpuForEveryTransposeAndOddSizes(int blockSize)
    {
        foreach (var (m, n, k) in new[] { (1, 1, 1), (3, 5, 7), (17, 33, 9), (64, 70, 130), (5, 600, 3), (130, 7, 257), (4, 4, 0) })
            foreach (bool ta in new[] { false, true })
                foreach (bool tb in new[] { false, true })
                {
                    var a = Normal((long)m * k, m + k);
                    var b = Normal((long)k * n, n + 1);
                    string at = $"{m}x{n}x{k} ta={ta} tb={tb}";
                    // beta = 0: C is written without being read (it starts as NaN).
                    Compare(blockSize, $"sgemm {at} beta=0", [a, b], [(long)m * n],
                        (be, p) => be.Gemm(ta, tb, m, n, k, 0.75f, p[0], p[1], 0f, p[2]), Product);
                    // beta != 0: C is read and scaled.
                    Compare(blockSize, $"sgemm {at} beta=0.5", [a, b, Normal((long)m * n, 99)], [],
                        (be, p) => be.Gemm(ta, tb, m, n, k, -1.5f, p[0], p[1], 0.5f, p[2]), Product);
                }
    }

    /// <summary>
    /// The tiled kernels take their tile size from the block shape. CudaBackend only launches
    /// near-square power-of-two blocks, where each thread keeps one row or depth per step; any
    /// other shape takes the generic element-by-element path of gemm_tile.cuh. Both must be right,
    /// so this launches sgemm and the convolutions directly with odd shapes.
    /// </summary>
    [Theory]
    [InlineData(1u, 1u)]
    [InlineData(5u, 3u)]
    [InlineData(32u, 1u)]
    [InlineData(1u, 32u)]
    [InlineData(7u, 9u)]
    [InlineData(64u, 8u)]
    [InlineData(4u, 2u)]
    public unsafe void TiledKernelsAreRightForAnyBlockShape(uint bx, uint by)
    {
        var gpu = TestBackends.Emulated(256);
        var block = new Backends.Cuda.Dim3(bx, by);
        uint shared = 4u * 16u * ((4u * by + 1) + (4u * bx + 1));

        void LaunchTiled(string kernel, long rows, long columns, Backends.Cuda.KernelArgs args)
        {
            var grid = new Backends.Cuda.Dim3((uint)((columns + 4 * bx - 1) / (4 * bx)), (uint)((rows + 4 * by - 1) / (4 * by)));
            void** pointers = stackalloc void*[Backends.Cuda.KernelArgs.MaxArguments];
            args.FillPointers(pointers);
            gpu.Driver.Launch(gpu.Driver.GetFunction(kernel), kernel, grid, block, shared, pointers);
        }

        foreach (var (m, n, k) in new[] { (3, 5, 7), (17, 33, 20), (1, 1, 1) })
            foreach (bool ta in new[] { false, true })
                foreach (bool tb in new[] { false, true })
                {
                    var a = Normal((long)m * k, 1);
                    var b = Normal((long)k * n, 2);
                    var expected = Run(ReferenceBackend.Shared, [a, b], [(long)m * n], (be, p) => be.Gemm(ta, tb, m, n, k, 1.5f, p[0], p[1], 0f, p[2]));
                    var actual = Run(gpu, [a, b], [(long)m * n], (_, p) => LaunchTiled("sgemm", m, n,
                        new Backends.Cuda.KernelArgs().Int(ta ? 1 : 0).Int(tb ? 1 : 0).Int(m).Int(n).Int(k).Float(1.5f).Ptr(p[0]).Ptr(p[1]).Float(0f).Ptr(p[2])));
                    AssertClose(expected[2], actual[2], Product, $"sgemm {m}x{n}x{k} ta={ta} tb={tb}, block ({bx}, {by})");
                }

        var (cn, cin, h, w, cout, kk) = (2, 3, 5, 6, 4, 3);
        long xs = (long)cn * cin * h * w, ws = (long)cout * cin * kk * kk, ys = (long)cn * cout * h * w;
        var x = Normal(xs, 3);
        var wt = Normal(ws, 4);
        var gy = Normal(ys, 5);
        Backends.Cuda.KernelArgs Args(DeviceBuffer p0, DeviceBuffer p1, DeviceBuffer p2) =>
            new Backends.Cuda.KernelArgs().Ptr(p0).Ptr(p1).Ptr(p2).Int(cn).Int(cin).Int(h).Int(w).Int(cout).Int(kk).Float(0.5f);

        var cases = new (string kernel, float[] first, float[] second, long output, long rows, long columns, Action<IBackend, DeviceBuffer[]> cpu)[]
        {
            ("conv2d_forward", x, wt, ys, cout, (long)cn * h * w, (be, p) => be.Conv2dForward(p[0], p[1], p[2], cn, cin, h, w, cout, kk, 0.5f)),
            ("conv2d_backward_input", gy, wt, xs, cin, (long)cn * h * w, (be, p) => be.Conv2dBackwardInput(p[0], p[1], p[2], cn, cin, h, w, cout, kk, 0.5f)),
            ("conv2d_backward_weight", x, gy, ws, cout, (long)cin * kk * kk, (be, p) => be.Conv2dBackwardWeight(p[0], p[1], p[2], cn, cin, h, w, cout, kk, 0.5f)),
        };
        foreach (var (kernel, first, second, output, rows, columns, cpu) in cases)
        {
            var expected = Run(ReferenceBackend.Shared, [first, second], [output], cpu);
            // conv2d_forward takes its epilogue's bias (null: none) and slope after the scale.
            var actual = Run(gpu, [first, second], [output], (_, p) => LaunchTiled(kernel, rows, columns,
                kernel == "conv2d_forward" ? Args(p[0], p[1], p[2]).Ptr(DeviceBuffer.Null).Float(1f) : Args(p[0], p[1], p[2])));
            AssertClose(expected[2], actual[2], Product, $"{kernel}, block ({bx}, {by})");
        }
        // And with the epilogue: a bias per output channel and leaky ReLU in the output store.
        var bias = Normal(cout, 6);
        var fused = Run(ReferenceBackend.Shared, [x, wt, bias], [ys], (be, p) => be.Conv2dForward(p[0], p[1], p[3], cn, cin, h, w, cout, kk, 0.5f, p[2], 0.2f));
        var fusedGpu = Run(gpu, [x, wt, bias], [ys], (_, p) => LaunchTiled("conv2d_forward", cout, (long)cn * h * w, Args(p[0], p[1], p[3]).Ptr(p[2]).Float(0.2f)));
        AssertClose(fused[3], fusedGpu[3], Product, $"conv2d_forward with bias and leaky ReLU, block ({bx}, {by})");
    }

    // ------------------------------------------------------------------ conv.cu

    // The cases every version of the convolutions is compared on: ProductKernelCheck.ConvCases.

    [Theory]
    [MemberData(nameof(BlockSizes))]
    public void ConvolutionKernelsMatchTheReference(int blockSize)
    {
        foreach (var (n, cin, h, w, cout, k) in ProductKernelCheck.ConvCases)
        {
            long xs = (long)n * cin * h * w, ws = (long)cout * cin * k * k, ys = (long)n * cout * h * w;
            float scale = (float)(Math.Sqrt(2) / Math.Sqrt(cin * k * k));
            var x = Normal(xs, 21);
            var wt = Normal(ws, 22);
            var gy = Normal(ys, 23);
            string at = $"n={n} cin={cin} {h}x{w} cout={cout} k={k}";
            Compare(blockSize, $"conv2d_forward {at}", [x, wt], [ys],
                (be, p) => be.Conv2dForward(p[0], p[1], p[2], n, cin, h, w, cout, k, scale), Product);
            // With the epilogue (a layer's bias and leaky ReLU in the output store), and the bias alone.
            foreach (float slope in new[] { 0.2f, 1f })
                Compare(blockSize, $"conv2d_forward {at} with bias, slope {slope}", [x, wt, Normal(cout, 24)], [ys],
                    (be, p) => be.Conv2dForward(p[0], p[1], p[3], n, cin, h, w, cout, k, scale, p[2], slope), Product);
            Compare(blockSize, $"conv2d_backward_input {at}", [gy, wt], [xs],
                (be, p) => be.Conv2dBackwardInput(p[0], p[1], p[2], n, cin, h, w, cout, k, scale), Product);
            Compare(blockSize, $"conv2d_backward_weight {at}", [x, gy], [ws],
                (be, p) => be.Conv2dBackwardWeight(p[0], p[1], p[2], n, cin, h, w, cout, k, scale), Product);
        }
    }

    // ------------------------------------------------------------------ resample.cu, channels.cu

    [Theory]
    [MemberData(nameof(BlockSizes))]
    public void ResampleKernelsMatchTheReference(int blockSize)
    {
        foreach (var (planes, h, w) in new[] { (1, 1, 1), (3, 5, 7), (6, 4, 4), (10, 33, 17), (2, 64, 64) })
            foreach (float gain in new[] { 1f, 2.5f })
            {
                long up = 4L * planes * h * w;
                Compare(blockSize, $"upsample2x_nearest {planes}x{h}x{w} gain={gain}", [Normal((long)planes * h * w, 31)], [up],
                    (be, p) => be.Upsample2x(p[0], p[1], planes, h, w, gain), Exact);
                int h2 = 2 * h, w2 = 2 * w;
                Compare(blockSize, $"avgpool2x {planes}x{h2}x{w2} gain={gain}", [Normal((long)planes * h2 * w2, 32)], [(long)planes * h * w],
                    (be, p) => be.AvgPool2x(p[0], p[1], planes, h2, w2, gain), Elementwise);   // a float sum of 4 against the reference's double
            }
    }

    [Theory]
    [MemberData(nameof(BlockSizes))]
    public void CopyChannelsMatchesTheReference(int blockSize)
    {
        var cases = new (int srcC, int srcStart, int dstC, int dstStart, int count, int samples, int plane)[]
        {
            (5, 1, 7, 3, 3, 2, 9),      // a middle range into a middle range
            (3, 0, 4, 0, 3, 4, 16),     // concatenation: the first input
            (1, 0, 4, 3, 1, 4, 16),     // concatenation: the appended stddev channel
            (4, 3, 1, 0, 1, 1, 1),      // slicing one channel of one pixel
            (6, 2, 6, 2, 4, 3, 1031),   // a plane larger than a block
        };
        foreach (var (srcC, srcStart, dstC, dstStart, count, samples, plane) in cases)
        {
            var src = Normal((long)samples * srcC * plane, 41);
            // The destination is an input: channels outside the copied range must keep their values.
            var dst = Normal((long)samples * dstC * plane, 42);
            Compare(blockSize, $"copy_channels {srcC}[{srcStart}..] -> {dstC}[{dstStart}..] x{count}, {samples} samples of {plane}", [src, dst], [],
                (be, p) => be.CopyChannels(p[0], srcC, srcStart, p[1], dstC, dstStart, count, samples, plane), Exact);
        }
    }

    // ------------------------------------------------------------------ pixelnorm.cu

    [Theory]
    [MemberData(nameof(BlockSizes))]
    public void PixelNormKernelsMatchTheReference(int blockSize)
    {
        foreach (var (n, c, plane) in new[] { (1, 1, 1), (2, 3, 16), (3, 17, 25), (4, 512, 16), (1, 8, 4099) })
        {
            long len = (long)n * c * plane;
            var x = Normal(len, 51, 3f);
            var gy = Normal(len, 52);
            string at = $"n={n} c={c} plane={plane}";
            Compare(blockSize, $"pixelnorm_forward {at}", [x], [len], (be, p) => be.PixelNormForward(p[0], p[1], n, c, plane, 1e-8f), Reduction);
            Compare(blockSize, $"pixelnorm_backward {at}", [x, gy], [len], (be, p) => be.PixelNormBackward(p[0], p[1], p[2], n, c, plane, 1e-8f), Reduction);
        }
    }

    // ------------------------------------------------------------------ mbstd.cu

    [Theory]
    [MemberData(nameof(BlockSizes))]
    public void MinibatchStdDevKernelsMatchTheReference(int blockSize)
    {
        var cases = new (int n, int c, int plane, int group)[]
        {
            (1, 3, 16, 1),      // a last batch of one: std = sqrt(eps), no NaN
            (4, 3, 16, 4),      // one group
            (8, 5, 9, 4),       // two strided groups
            (6, 2, 4, 2),       // three groups of two
            (16, 32, 16, 4),    // ProGAN's head in miniature
            (4, 1, 1, 4),       // one feature
            (2, 600, 3, 2),     // more features than the largest block
        };
        foreach (var (n, c, plane, group) in cases)
        {
            long xs = (long)n * c * plane, ys = (long)n * (c + 1) * plane;
            var x = Normal(xs, 61);
            var gy = Normal(ys, 62);
            string at = $"n={n} c={c} plane={plane} group={group}";
            Compare(blockSize, $"minibatch_stddev_forward {at}", [x], [ys],
                (be, p) => be.MinibatchStdDevForward(p[0], p[1], n, c, plane, group, 1e-8f), Reduction);
            Compare(blockSize, $"minibatch_stddev_backward {at}", [x, gy], [xs],
                (be, p) => be.MinibatchStdDevBackward(p[0], p[1], p[2], n, c, plane, group, 1e-8f), Reduction);
        }
    }

    // ------------------------------------------------------------------ wgan_gp.cu

    [Theory]
    [MemberData(nameof(BlockSizes))]
    public void GradientPenaltyKernelsMatchTheReference(int blockSize)
    {
        foreach (var (samples, inner) in new[] { (1, 1), (3, 100), (4, 3 * 16 * 16), (2, 5000), (3, 7) })
        {
            long n = (long)samples * inner;
            var g = Normal(n, 71, 0.1f);
            Array.Clear(g, 0, inner);   // sample 0 has a zero gradient: norm 0, subgradient 0
            var gpen = Normal(samples, 72);
            string at = $"{samples}x{inner}";
            Compare(blockSize, $"gradient_penalty_forward {at}", [g], [samples, samples],
                (be, p) => be.GradientPenaltyForward(p[0], p[1], p[2], samples, inner, 1f), Reduction);

            // The backward takes the forward's norms: compute them on the CPU once.
            var norms = new float[samples];
            for (int s = 0; s < samples; s++)
            {
                double ss = 0;
                for (int i = 0; i < inner; i++) ss += (double)g[s * inner + i] * g[s * inner + i];
                norms[s] = (float)Math.Sqrt(ss);
            }
            Compare(blockSize, $"gradient_penalty_backward {at}", [g, norms, gpen], [n],
                (be, p) => be.GradientPenaltyBackward(p[0], p[1], p[2], p[3], samples, inner, 1f), Elementwise);
        }
    }

    // ------------------------------------------------------------------ optim.cu

    [Theory]
    [MemberData(nameof(BlockSizes))]
    public void OptimizerKernelsMatchTheReference(int blockSize)
    {
        foreach (long n in ElementCounts)
        {
            var p = Normal(n, 81);
            var g = Normal(n, 82, 0.01f);
            var m = Normal(n, 83, 0.01f);
            var v = Uniform(n, 84, 0f, 1e-4f);
            foreach (var (beta1, step) in new[] { (0f, 1), (0f, 17), (0.9f, 3) })
                Compare(blockSize, $"adam_update n={n} beta1={beta1} step={step}", [p, g, m, v, [ReferenceBackendHarness.StepCount(step)]], [],
                    (be, b) => be.AdamUpdate(b[0], b[1], b[2], b[3], n, 1e-3f, beta1, 0.99f, 1e-8f, b[4], DeviceBuffer.Null), Elementwise);
            Compare(blockSize, $"ema_update n={n}", [Normal(n, 85), p], [],
                (be, b) => be.EmaUpdate(b[0], b[1], n, 0.999f, DeviceBuffer.Null), Elementwise);
        }
    }

    [Theory]
    [MemberData(nameof(BlockSizes))]
    public void CountNonFiniteMatchesTheReference(int blockSize)
    {
        var gpu = TestBackends.Emulated(blockSize);
        foreach (long n in ElementCounts)
            foreach (int bad in new[] { 0, 1, 7, 100 })
            {
                var x = Normal(n, 91);
                var rng = new Random(92 + bad);
                for (int i = 0; i < bad; i++)
                    x[rng.NextInt64(n)] = (i % 3) switch { 0 => float.NaN, 1 => float.PositiveInfinity, _ => float.NegativeInfinity };
                x[^1] = float.MaxValue;   // large but finite
                long expected = RunCount(ReferenceBackend.Shared, x), actual = RunCount(gpu, x);
                Assert.True(expected == actual, $"count_nonfinite n={n} bad={bad}, block {blockSize}: expected {expected}, got {actual}");
            }

        static long RunCount(IBackend backend, float[] x)
        {
            var b = backend.Allocate(x.Length);
            try
            {
                backend.Upload(x, b);
                return NonFiniteCount.Of(backend, b, x.Length, start: 1L << 40) - (1L << 40);
            }
            finally
            {
                backend.Free(b);
            }
        }
    }
}
