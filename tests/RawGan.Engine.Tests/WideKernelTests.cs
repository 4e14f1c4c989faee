using RawGan.Engine.Backends;
using RawGan.Engine.Backends.Cuda;

namespace RawGan.Engine.Tests;

/// <summary>
/// Version 3 of the matrix product and the convolutions (kernels/gemm_wide.cu, conv_wide.cu:
/// fp32, 128 x 128 tiles, 8 x 8 outputs per thread, the next stage's loads in flight during the
/// arithmetic) against <see cref="Backends.Reference.ReferenceBackend"/>, on the emulator (and on
/// the GPU when one is in the test devices), every product forced to version 3 whatever its
/// shape. On the emulator each comparison also runs with a block's 256 threads in reverse and in
/// random order, so that a stage read before its barrier or overwritten while another thread
/// still reads it (the pipeline has one barrier per stage) gives a wrong answer here.
///
/// The bound is fp32's. For y = s sum_k a_k b_k with the K products rounded (2^-24 each,
/// relative) and added one by one in fp32 (K - 1 roundings, each at most 2^-24 of a partial sum,
/// itself at most sum_k |a_k b_k|), one rounding for the scale and one in the reference's own
/// float result: |y - reference| &lt;= (K + 3) 2^-24 |s| sum_k |a_k b_k| to first order (fused
/// multiply-adds on a GPU only remove roundings).
/// </summary>
public class WideKernelTests
{
    private static readonly double Unit = Math.Pow(2, -24);

    private static double Bound(int k) => (k + 3) * Unit;

    public static TheoryData<SimtOrder> Orders => new() { SimtOrder.Default, SimtOrder.Reverse, SimtOrder.Random };

    private static ProductKernelCheck.Checker WideCheck(SimtOrder order) =>
        (what, inputs, outputs, k, kernel, magnitudeKernel, extra) =>
            ProductKernelCheck.Compare(TestBackends.Wide(order), $"version 3, {order} order", Bound, what, inputs, outputs, k, kernel, magnitudeKernel, extra);

    [Theory]
    [MemberData(nameof(Orders))]
    public void SgemmWideMatchesTheReferenceWithinFp32sBound(SimtOrder order) =>
        ProductKernelCheck.Gemms("sgemm_wide", Unit, WideCheck(order));

    [Theory]
    [MemberData(nameof(Orders))]
    public void ConvolutionWideKernelsMatchTheReferenceWithinFp32sBound(SimtOrder order) =>
        ProductKernelCheck.Convolutions("_wide", WideCheck(order));

    /// <summary>
    /// Versions 1 and 3 add the same products in the same order (each output's, one by one, in
    /// the order of k, padding as +0), so on the emulator, which compiles both with the same
    /// rounding (no fused multiply-add), they agree bit for bit, on sizes that cross tiles and
    /// stages of both (version 1: 64 x 64 tiles of depth 16, version 3: 128 x 128 of depth 8).
    /// A version 3 that skipped, repeated or reordered a product would differ here in the last
    /// bits, where the reference comparison above allows them. The weight gradient is compared
    /// where neither splits its sum (under 2,048 pixels), since the split depends on the tiles.
    /// </summary>
    [Fact]
    public void OnTheEmulatorVersion3AddsTheSameProductsInTheSameOrderAsVersion1()
    {
        var wide = TestBackends.Wide().First();
        Assert.Equal("cuda-emulated", wide.Name);
        using var v1 = new CudaBackend(new EmulatedDriver(), 256, Precision.Fp32) { Fp32Tiling = ProductTiling.Version1 };

        void Same(string what, float[][] inputs, long output, Action<IBackend, DeviceBuffer[]> kernel)
        {
            var expected = ReferenceBackendHarness.Run(v1, inputs, [output], kernel)[^1];
            var actual = ReferenceBackendHarness.Run(wide, inputs, [output], kernel)[^1];
            for (int i = 0; i < expected.Length; i++)
                Assert.True(BitConverter.SingleToInt32Bits(expected[i]) == BitConverter.SingleToInt32Bits(actual[i]),
                    $"{what}: element {i} of {expected.Length}: version 1 gives {expected[i]:G9}, version 3 {actual[i]:G9}");
        }

        foreach (var (m, n, k) in new[] { (130, 200, 75), (7, 300, 33), (257, 9, 18) })
            foreach (bool ta in new[] { false, true })
                foreach (bool tb in new[] { false, true })
                    Same($"sgemm {m}x{n}x{k} ta={ta} tb={tb}", [ReferenceBackendHarness.Normal((long)m * k, 1), ReferenceBackendHarness.Normal((long)k * n, 2)], (long)m * n,
                        (be, p) => be.Gemm(ta, tb, m, n, k, 0.75f, p[0], p[1], 0f, p[2]));

        var (cn, cin, h, w, cout, kk) = (3, 19, 10, 9, 140, 3);   // 270 pixels, K = 171 and 1260
        long xs = cn * cin * h * w, ws = cout * cin * kk * kk, ys = cn * cout * h * w;
        var x = ReferenceBackendHarness.Normal(xs, 3);
        var wt = ReferenceBackendHarness.Normal(ws, 4);
        var gy = ReferenceBackendHarness.Normal(ys, 5);
        var bias = ReferenceBackendHarness.Normal(cout, 6);
        Same("conv2d_forward", [x, wt], ys, (be, p) => be.Conv2dForward(p[0], p[1], p[2], cn, cin, h, w, cout, kk, 0.3f));
        Same("conv2d_forward with bias and leaky ReLU", [x, wt, bias], ys, (be, p) => be.Conv2dForward(p[0], p[1], p[3], cn, cin, h, w, cout, kk, 0.3f, p[2], 0.2f));
        Same("conv2d_backward_input", [gy, wt], xs, (be, p) => be.Conv2dBackwardInput(p[0], p[1], p[2], cn, cin, h, w, cout, kk, 0.3f));
        Same("conv2d_backward_weight", [x, gy], ws, (be, p) => be.Conv2dBackwardWeight(p[0], p[1], p[2], cn, cin, h, w, cout, kk, 0.3f));
    }

    [Fact]
    public void TheTilingFollowsThePrecisionAndTheShapeOfTheProduct()
    {
        // An H100 or H200: 132 multiprocessors.
        ProductTiling Auto(long rows, long columns, bool splittable = false) =>
            CudaBackend.ChooseTiling(Precision.Fp32, ProductTiling.Auto, 132, rows, columns, splittable);
        Assert.Equal(ProductTiling.Version1, Auto(128, 16 * 32 * 32));      // a 32x32 layer of 128 channels, batch 16: 128 tiles, under 132
        Assert.Equal(ProductTiling.Version3, Auto(256, 16 * 32 * 32));      // 256 channels: 256 tiles
        Assert.Equal(ProductTiling.Version3, Auto(64, 16 * 128 * 128));     // a 128x128 layer of 64 channels: 2048 tiles
        Assert.Equal(ProductTiling.Version1, Auto(512, 16 * 4 * 4));        // a 4x4 layer: 8 tiles; version 1 makes 32
        Assert.Equal(ProductTiling.Version1, Auto(3, 16 * 256 * 256));      // toRGB: three rows
        Assert.Equal(ProductTiling.Version1, Auto(512, 32));                // a dense layer at batch 32
        Assert.Equal(ProductTiling.Version3, Auto(512, 4608, splittable: true));   // a weight gradient: its sum splits
        Assert.Equal(ProductTiling.Version1, Auto(3, 4608, splittable: true));
        Assert.Equal(ProductTiling.Version2, CudaBackend.ChooseTiling(Precision.Tf32, ProductTiling.Auto, 132, 3, 3, false));
        Assert.Equal(ProductTiling.Version2, CudaBackend.ChooseTiling(Precision.Tf32, ProductTiling.Version3, 132, 1000, 1000, false));
        Assert.Equal(ProductTiling.Version3, CudaBackend.ChooseTiling(Precision.Fp32, ProductTiling.Version3, 132, 3, 3, false));
        Assert.Equal(ProductTiling.Version1, CudaBackend.ChooseTiling(Precision.Fp32, ProductTiling.Version1, 132, 1000, 100000, false));

        var error = Assert.Throws<ArgumentException>(() => new CudaBackend(new EmulatedDriver()) { Fp32Tiling = ProductTiling.Version2 });
        Assert.Contains("tf32", error.Message);
        Assert.Equal(16896u, CudaBackend.WideSharedBytes);   // 2 buffers x 2 operands x 8 x 132 floats
    }

    /// <summary>Whatever the block size asked of the backend, version 3 launches 256 threads.</summary>
    [Fact]
    public void Version3AlwaysLaunchesBlocksOf256Threads()
    {
        foreach (int blockSize in new[] { 32, 1024 })
        {
            using var backend = new CudaBackend(new EmulatedDriver(), blockSize, Precision.Fp32) { Fp32Tiling = ProductTiling.Version3 };
            Assert.Equal(256, backend.ThreadsPerBlock("sgemm_wide"));
            Assert.Equal(256, backend.ThreadsPerBlock("conv2d_backward_weight_wide"));
            ProductKernelCheck.Compare([backend], $"version 3, block size {blockSize}", Bound, "sgemm_wide 40x300x20", [ReferenceBackendHarness.Normal(800, 1), ReferenceBackendHarness.Normal(6000, 2)], [12000], 20,
                (be, p) => be.Gemm(false, false, 40, 300, 20, 1f, p[0], p[1], 0f, p[2]));
        }
    }
}
