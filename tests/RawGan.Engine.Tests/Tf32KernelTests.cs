using RawGan.Engine.Backends;
using RawGan.Engine.Backends.Cuda;
using RawGan.Engine.Backends.Reference;

namespace RawGan.Engine.Tests;

/// <summary>
/// Version 2 of the matrix product and the convolutions (kernels/gemm_tf32.cu, conv_tf32.cu: TF32
/// tensor cores, a cp.async pipeline) against <see cref="ReferenceBackend"/>, on the emulator
/// (and on the GPU when one with TF32 is in the test devices), through CudaBackend at
/// <see cref="Precision.Tf32"/>. Block sizes 32 to 1024 give blocks of 1 x 1, 2 x 2, 4 x 2 and 4 x 4
/// warps; the sizes are odd (M, N, K not multiples of the 32 x 32 warp tile, the 128 x 128 block
/// tile or the stage depth of 8), with batch 1, three channels, 1x1 and 3x3 kernels, and cases
/// larger than one block tile in every dimension. Outputs start as NaN.
///
/// The tolerance is derived from TF32, element by element, from the inputs. For an output
/// y = s sum_k a_k b_k (s the equalized-learning-rate scale or alpha):
/// <list type="bullet">
/// <item>each factor is rounded to 10 mantissa bits (round to nearest: relative error at most
/// u = 2^-11), so a product is off by at most (2u + u^2) |a_k b_k|;</item>
/// <item>a product of two tf32 values is exact in fp32, and the K products are summed in fp32 in
/// some order (a tree, once the weight gradient splits its sum): at most (K - 1) 2^-23 sum_k
/// |a_k b_k| to first order (2^-23 rather than 2^-24 because a tensor core's adder may truncate),
/// plus one rounding for the scale and one in the reference's own float result;</item>
/// </list>
/// so |y - reference| &lt;= |s| sum_k |a_k b_k| (2^-10 + 2^-22 + (K + 2) 2^-23), plus 2^-23 |beta c|
/// for sgemm's beta term. |s| sum_k |a_k b_k| is the reference run on |a|, |b| and |s|: the same
/// kernel on absolute values.
/// </summary>
public class Tf32KernelTests
{
    public static TheoryData<int> BlockSizes => new() { 32, 128, 256, 1024 };

    /// <summary>The relative error TF32 allows per product: 2 u + u^2 with u = 2^-11.</summary>
    private static readonly double ProductError = 2 * Math.Pow(2, -11) + Math.Pow(2, -22);
    /// <summary>One fp32 rounding of an addition on a tensor core (which may truncate).</summary>
    private static readonly double SumError = Math.Pow(2, -23);

    private static double Bound(int k) => ProductError + (k + 2) * SumError;

    // ------------------------------------------------------------------ against the reference

    /// <summary>The shared comparison (<see cref="ProductKernelCheck.Compare"/>) on every TF32
    /// backend at <paramref name="blockSize"/>, with TF32's bound.</summary>
    private static ProductKernelCheck.Checker Tf32Check(int blockSize) =>
        (what, inputs, outputs, k, kernel, magnitudeKernel, extra) =>
            ProductKernelCheck.Compare(TestBackends.Tf32(blockSize).Select(b =>
            {
                Assert.Equal(Precision.Tf32, b.Precision);
                return b;
            }), $"tf32, block {blockSize}", Bound, what, inputs, outputs, k, kernel, magnitudeKernel, extra);

    [Theory]
    [MemberData(nameof(BlockSizes))]
    public void SgemmTf32MatchesTheReferenceWithinTf32sBound(int blockSize) =>
        ProductKernelCheck.Gemms("sgemm_tf32", SumError, Tf32Check(blockSize));

    [Theory]
    [MemberData(nameof(BlockSizes))]
    public void ConvolutionTf32KernelsMatchTheReferenceWithinTf32sBound(int blockSize) =>
        ProductKernelCheck.Convolutions("_tf32", Tf32Check(blockSize));

    private static float[] Abs(float[] v) => v.Select(MathF.Abs).ToArray();

    private static float[][] Run(IBackend backend, float[][] inputs, long[] outputs, Action<IBackend, DeviceBuffer[]> kernel) =>
        ReferenceBackendHarness.Run(backend, inputs, outputs, kernel);

    private static float[] Normal(long n, int seed, float scale = 1f) => ReferenceBackendHarness.Normal(n, seed, scale);

    // ------------------------------------------------------------------ TF32 is really TF32

    /// <summary>
    /// Every factor 1 + 2^-11 (exactly halfway between two tf32 values) times 1: cvt.rna rounds
    /// the tie away from zero to 1 + 2^-10, so a sum of K such products is K (1 + 2^-10) exactly
    /// in TF32, where fp32 gives K (1 + 2^-11), truncation (a tensor core fed unrounded values)
    /// K, and rounding ties to even K as well. A TF32 backend that silently ran version 1, or
    /// rounded the wrong way, fails here; the fp32 backend gives fp32's answer.
    /// </summary>
    [Fact]
    public void Tf32KernelsRoundTiesAwayFromZeroWhereFp32KeepsEveryBit()
    {
        float tie = 1f + MathF.Pow(2, -11), rounded = 1f + MathF.Pow(2, -10);
        var fp32 = TestBackends.Emulated();
        foreach (var tf32 in TestBackends.Tf32(256))
        {
            // sgemm 37 x 45 x 83: C[r, c] = sum of 83 products.
            const int m = 37, n = 45, k = 83;
            var a = Enumerable.Repeat(tie, m * k).ToArray();
            var b = Enumerable.Repeat(1f, k * n).ToArray();
            void Gemm(IBackend be, DeviceBuffer[] p) => be.Gemm(false, true, m, n, k, 1f, p[0], p[1], 0f, p[2]);
            var t = Run(tf32, [a, b], [m * n], Gemm)[2];
            var f = Run(fp32, [a, b], [m * n], Gemm)[2];
            Assert.All(t, v => Assert.Equal(k * rounded, v, (double)k * rounded * SumError * (k + 2)));
            Assert.All(f, v => Assert.Equal(k * (double)tie, v, (double)k * tie * Math.Pow(2, -24) * (k + 2)));
            Assert.True(Math.Abs(t[0] - f[0]) > 0.5 * k * Math.Pow(2, -11), $"tf32 {t[0]:G9} and fp32 {f[0]:G9} should differ by about K 2^-11");

            // A 3x3 convolution of 7 channels at an interior pixel: 63 products.
            const int cn = 1, cin = 7, h = 5, w = 6, cout = 3, kk = 3;
            var x = Enumerable.Repeat(tie, cn * cin * h * w).ToArray();
            var wt = Enumerable.Repeat(1f, cout * cin * kk * kk).ToArray();
            void Conv(IBackend be, DeviceBuffer[] p) => be.Conv2dForward(p[0], p[1], p[2], cn, cin, h, w, cout, kk, 1f);
            var ty = Run(tf32, [x, wt], [cn * cout * h * w], Conv)[2];
            var fy = Run(fp32, [x, wt], [cn * cout * h * w], Conv)[2];
            int interior = 2 * w + 2;
            Assert.Equal(63 * rounded, ty[interior], 63.0 * rounded * SumError * 65);
            Assert.Equal(63 * (double)tie, fy[interior], 63.0 * tie * Math.Pow(2, -24) * 65);
        }
    }

    /// <summary>
    /// On the emulator, TF32 is exactly "round the inputs with cvt.rna, multiply, sum in fp32":
    /// the kernels' results equal the reference on inputs rounded on the host by the same rule,
    /// up to fp32's summation error alone (far tighter than the TF32 bound above). This checks
    /// that every element of A and B passes through the rounding once, by the fragment layout.
    /// </summary>
    [Fact]
    public void OnTheEmulatorTf32IsTheReferenceOnRoundedInputs()
    {
        var emulated = TestBackends.Tf32(256).First();
        Assert.Equal("cuda-emulated", emulated.Name);

        void Check(string what, float[][] inputs, long output, int k, Action<IBackend, DeviceBuffer[]> kernel)
        {
            var rounded = inputs.Select(v => v.Select(RoundToTf32).ToArray()).ToArray();
            var expected = Run(ReferenceBackend.Shared, rounded, [output], kernel)[^1];
            var magnitude = Run(ReferenceBackend.Shared, rounded.Select(Abs).ToArray(), [output], kernel)[^1];
            var actual = Run(emulated, inputs, [output], kernel)[^1];
            var unrounded = Run(ReferenceBackend.Shared, inputs, [output], kernel)[^1];
            double differs = 0;
            for (int i = 0; i < expected.Length; i++)
            {
                double bound = (k + 2) * Math.Pow(2, -24) * magnitude[i] + 1e-30;
                Assert.True(Math.Abs(expected[i] - (double)actual[i]) <= bound,
                    $"{what}: element {i}: the reference on rounded inputs gives {expected[i]:G9}, the kernel {actual[i]:G9} (bound {bound:G3})");
                differs = Math.Max(differs, Math.Abs(unrounded[i] - (double)actual[i]) / (magnitude[i] + 1e-30));
            }
            // And the rounding is visible: somewhere the result is further from the unrounded
            // inputs' than fp32 alone could be.
            Assert.True(differs > 4 * (k + 2) * Math.Pow(2, -24), $"{what}: the TF32 result is within fp32's error of the unrounded reference everywhere ({differs:G3})");
        }

        const int m = 70, n = 90, kk = 41;
        Check("sgemm_tf32 70x90x41", [Normal(m * kk, 1), Normal(kk * n, 2)], m * n, kk,
            (be, p) => be.Gemm(false, false, m, n, kk, 1.25f, p[0], p[1], 0f, p[2]));
        var (cn, cin, h, w, cout, k) = (2, 5, 6, 7, 9, 3);
        long xs = cn * cin * h * w, ws = cout * cin * k * k, ys = cn * cout * h * w;
        Check("conv2d_forward_tf32", [Normal(xs, 3), Normal(ws, 4)], ys, cin * k * k,
            (be, p) => be.Conv2dForward(p[0], p[1], p[2], cn, cin, h, w, cout, k, 0.5f));
        Check("conv2d_backward_input_tf32", [Normal(ys, 5), Normal(ws, 4)], xs, cout * k * k,
            (be, p) => be.Conv2dBackwardInput(p[0], p[1], p[2], cn, cin, h, w, cout, k, 0.5f));
        Check("conv2d_backward_weight_tf32", [Normal(xs, 3), Normal(ys, 5)], ws, cn * h * w,
            (be, p) => be.Conv2dBackwardWeight(p[0], p[1], p[2], cn, cin, h, w, cout, k, 0.5f));
    }

    /// <summary>cvt.rna.tf32.f32 on the host: add half a tf32 ulp to the magnitude, truncate to
    /// 10 mantissa bits (finite values).</summary>
    private static float RoundToTf32(float x) => BitConverter.UInt32BitsToSingle((BitConverter.SingleToUInt32Bits(x) + 0x1000u) & 0xffffe000u);

    // ------------------------------------------------------------------ the host's choices

    [Fact]
    public void TheEmulatorDefaultsToFp32AndTf32IsRefusedBelowAmpere()
    {
        Assert.Equal(Precision.Fp32, TestBackends.Emulated().Precision);
        using var emulated = new CudaBackend(new EmulatedDriver(), precision: Precision.Tf32);
        Assert.Equal(Precision.Tf32, emulated.Precision);
        Assert.Contains("tf32", emulated.Description);
        Assert.True(CudaBackend.SupportsTf32(new DeviceInfo("A100", 8, 0, 0, 108, 1024, 48 * 1024, 32, "", "")));
        Assert.False(CudaBackend.SupportsTf32(new DeviceInfo("T4", 7, 5, 0, 40, 1024, 48 * 1024, 32, "", "")));
        Assert.Null(Devices.ParsePrecision("auto"));
        Assert.Equal(Precision.Tf32, Devices.ParsePrecision("TF32"));
        Assert.Throws<ArgumentException>(() => Devices.ParsePrecision("bf16"));
    }

    [Fact]
    public void ChoosingTheVersionAllocatesNoManagedMemory()
    {
        // A steady training step allocates nothing on the managed heap (docs/DESIGN.md): choosing
        // the kernel by precision and tiling must not build its name per call. On the tf32
        // backend, the one forced to version 3, and the default one (version 1 or 3 by shape).
        foreach (var gpu in new[] { TestBackends.Tf32(256).First(), TestBackends.Wide().First(), TestBackends.Emulated() })
        {
            var (n, cin, h, w, cout, k) = (2, 3, 48, 48, 4, 3);   // 4608 pixels: the weight gradient splits its sum
            var x = gpu.Allocate(n * cin * h * w);
            var wt = gpu.Allocate(cout * cin * k * k);
            var y = gpu.Allocate(n * cout * h * w);
            var c = gpu.Allocate(256 * 256);
            try
            {
                void Step()
                {
                    gpu.Conv2dForward(x, wt, y, n, cin, h, w, cout, k, 1f);
                    gpu.Conv2dBackwardInput(y, wt, x, n, cin, h, w, cout, k, 1f);
                    gpu.Conv2dBackwardWeight(x, y, wt, n, cin, h, w, cout, k, 1f);   // partial sums in a buffer from the cache
                    gpu.Gemm(false, true, 64, 64, 16, 1f, x, y, 0f, c);
                    gpu.Gemm(false, false, 256, 256, 16, 1f, x, y, 0f, c);   // four 128 x 128 tiles: version 3 by shape on a small machine
                }
                for (int i = 0; i < 3; i++) Step();
                long before = GC.GetAllocatedBytesForCurrentThread();
                Step();
                Assert.True(GC.GetAllocatedBytesForCurrentThread() - before == 0, $"{gpu.Description}: a step allocated managed memory");
            }
            finally
            {
                foreach (var b in new[] { x, wt, y, c }) gpu.Free(b);
            }
        }
    }

    [Fact]
    public void TheBlockGrowsWithTheOutputUpToFourByFourWarps()
    {
        Assert.Equal(new Dim3(32, 4, 4), CudaBackend.MmaBlock(512, 1000, 1000));
        Assert.Equal(new Dim3(32, 4, 4), CudaBackend.MmaBlock(1024, 1000, 1000));   // at most 16 warps
        Assert.Equal(new Dim3(32, 1, 4), CudaBackend.MmaBlock(512, 3, 65536));      // toRGB: three rows
        Assert.Equal(new Dim3(32, 4, 1), CudaBackend.MmaBlock(512, 512, 16));
        Assert.Equal(new Dim3(32, 2, 2), CudaBackend.MmaBlock(128, 1000, 1000));
        Assert.Equal(new Dim3(32, 4, 2), CudaBackend.MmaBlock(256, 1000, 1000));
        Assert.Equal(new Dim3(32, 1, 1), CudaBackend.MmaBlock(32, 1000, 1000));
        Assert.Equal(new Dim3(32, 1, 1), CudaBackend.MmaBlock(512, 1, 1));
        Assert.Equal(36864u, CudaBackend.MmaSharedBytes(new Dim3(32, 4, 4)));       // 3 stages x 12 x (128 + 128) floats
    }
}
