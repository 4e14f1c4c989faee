using RawGan.Engine.Autograd;
using RawGan.Engine.Backends.Cpu;
using RawGan.Tests;

namespace RawGan.Engine.Tests;

/// <summary>
/// The CPU's convolution algorithms (im2col, implicit GEMM, GEMM over a padded copy, Winograd) each
/// against plain loops, forward and both adjoints, on shapes from 1x1 images to odd sizes and
/// batches whose columns straddle GEMM strips.
/// </summary>
public class CpuConvolutionAlgorithmTests
{
    /// <summary>Every algorithm at every level of vector instructions this CPU has (a backend can be set to
    /// fewer than the hardware's, so an AVX-512 machine also checks the AVX2 and portable code).</summary>
    public static TheoryData<CpuBackend.ConvolutionAlgorithm, CpuBackend.CpuVectors> Algorithms()
    {
        var data = new TheoryData<CpuBackend.ConvolutionAlgorithm, CpuBackend.CpuVectors>();
        foreach (var vectors in new[] { CpuBackend.CpuVectors.Portable, CpuBackend.CpuVectors.Avx2, CpuBackend.CpuVectors.Avx512 })
        {
            if (vectors > CpuBackend.HardwareVectors) continue;
            data.Add(CpuBackend.ConvolutionAlgorithm.Im2Col, vectors);
            data.Add(CpuBackend.ConvolutionAlgorithm.Auto, vectors);
            if (vectors == CpuBackend.CpuVectors.Portable) continue;
            data.Add(CpuBackend.ConvolutionAlgorithm.ImplicitGemm, vectors);
            data.Add(CpuBackend.ConvolutionAlgorithm.Winograd4, vectors);
            if (vectors == CpuBackend.CpuVectors.Avx2) continue;
            data.Add(CpuBackend.ConvolutionAlgorithm.Winograd, vectors);
            data.Add(CpuBackend.ConvolutionAlgorithm.WinogradChannels, vectors);
        }
        return data;
    }

    [Theory]
    [MemberData(nameof(Algorithms))]
    public void ForwardAndAdjointsMatchPlainLoops(CpuBackend.ConvolutionAlgorithm algorithm, CpuBackend.CpuVectors vectors)
    {
        using var be = new CpuBackend { Convolution = algorithm, Vectors = vectors };
        foreach (var (n, cin, h, w, cout, k) in new[] { (1, 1, 1, 1, 1, 3), (2, 3, 5, 7, 4, 3), (1, 3, 4, 4, 2, 1), (3, 2, 6, 3, 5, 3), (1, 4, 8, 8, 3, 5), (5, 7, 9, 11, 13, 3), (16, 8, 4, 4, 8, 3), (2, 3, 6, 5, 64, 3), (4, 5, 20, 17, 7, 3), (2, 70, 6, 6, 5, 3), (3, 3, 5, 7, 70, 1), (2, 70, 5, 7, 3, 1), (1, 3, 9, 70, 4, 3), (2, 129, 4, 4, 66, 3), (3, 66, 8, 8, 130, 3),
            // Over 128 tiles of F(4x4): the channel version by blocks of tiles (below, by filter rows); over
            // 64, the AVX2 version's chunks (the last one partial); from 4 chunks on, its forward runs whole
            // chunks per core, and on 64 columns its tiles come in runs of eight along a row (a partial tile row below).
            (10, 20, 16, 16, 18, 3), (3, 17, 28, 30, 33, 3), (4, 19, 22, 26, 35, 3), (5, 3, 20, 36, 6, 3), (2, 5, 34, 64, 7, 3) })
        {
            using var scope = new Scope();
            var xv = GradCheck.Normal(new Shape(n * cin * h * w), n + h);
            var wv = GradCheck.Normal(new Shape(cout * cin * k * k), cout + k);
            var gyv = GradCheck.Normal(new Shape(n * cout * h * w), 99);
            var x = Tensor.FromArray(be, xv, new Shape(n, cin, h, w));
            var wt = Tensor.FromArray(be, wv, new Shape(cout, cin, k, k));
            var gy = Tensor.FromArray(be, gyv, new Shape(n, cout, h, w));
            float scale = 0.7f;
            var expected = ForwardValueTests.NaiveConv(xv, wv, n, cin, h, w, cout, k, scale);
            var y = Ops.Conv2d(x, wt, scale).ToArray();
            // F(4x4, 3x3) multiplies its terms by transform coefficients up to 8 and 1/6 before
            // summing, so its rounding error is relative to the largest outputs (the size of the
            // terms), not to an output that happens to cancel: 1e-5 of the largest value on top (y, gx, gw).
            double floor = IsF4(algorithm) ? 1e-5 * expected.Max(Math.Abs) : 0;
            for (int i = 0; i < expected.Length; i++)
                Assert.True(Math.Abs(expected[i] - y[i]) <= 1e-4 * Math.Max(1, Math.Abs(expected[i])) + floor, $"{algorithm} {n}x{cin}x{h}x{w} k{k}: y[{i}] {y[i]} vs {expected[i]}");
            // The epilogue in each algorithm's output pass: leaky_relu(y + b), for a slope below 1, 1 (the
            // bias alone) and above 1 (so that max(z, slope z) in place of the sign test would fail).
            var bv = GradCheck.Normal(new Shape(cout), cout + 5);
            var bias = Tensor.FromArray(be, bv, new Shape(cout));
            foreach (float slope in new[] { 0.2f, 1f, 1.5f })
            {
                var fused = Ops.Conv2dBiasLeakyRelu(x, wt, scale, bias, slope).ToArray();
                for (int i = 0; i < expected.Length; i++)
                {
                    double z = expected[i] + bv[i / (h * w) % cout], e = z > 0 ? z : slope * z;
                    Assert.True(Math.Abs(e - fused[i]) <= 1e-4 * Math.Max(1, Math.Abs(e)) * Math.Max(1, slope) + floor * Math.Max(1, slope),
                        $"{algorithm} {n}x{cin}x{h}x{w} k{k} with bias, slope {slope}: y[{i}] {fused[i]} vs {e}");
                }
            }
            // Input gradient: each element is a convolution of gy with the flipped kernel, by loops here.
            var gx = Ops.ConvInputGrad(gy, wt, x.Shape, scale).ToArray();
            var gw = Ops.ConvWeightGrad(x, gy, wt.Shape, scale).ToArray();
            int pad = k / 2;
            var gxExpected = new double[gx.Length];
            for (int s = 0; s < n; s++)
                for (int c = 0; c < cin; c++)
                    for (int i = 0; i < h; i++)
                        for (int j = 0; j < w; j++)
                        {
                            double acc = 0;
                            for (int o = 0; o < cout; o++)
                                for (int a = 0; a < k; a++)
                                    for (int b = 0; b < k; b++)
                                    {
                                        int yy = i - a + pad, xx = j - b + pad;
                                        if (yy < 0 || yy >= h || xx < 0 || xx >= w) continue;
                                        acc += (double)wv[((o * cin + c) * k + a) * k + b] * gyv[((s * cout + o) * h + yy) * w + xx];
                                    }
                            gxExpected[((s * cin + c) * h + i) * w + j] = scale * acc;
                        }
            double gxFloor = IsF4(algorithm) ? 1e-5 * gxExpected.Max(Math.Abs) : 0;
            for (int idx = 0; idx < gx.Length; idx++)
                Assert.True(Math.Abs(gxExpected[idx] - gx[idx]) <= 1e-4 * Math.Max(1, Math.Abs(gxExpected[idx])) + gxFloor, $"{algorithm}: gx[{idx}] {gx[idx]} vs {gxExpected[idx]}");
            var gwExpected = new double[gw.Length];
            for (int o = 0; o < cout; o++)
                for (int c = 0; c < cin; c++)
                    for (int a = 0; a < k; a++)
                        for (int b = 0; b < k; b++)
                        {
                            double acc = 0;
                            for (int s = 0; s < n; s++)
                                for (int i = 0; i < h; i++)
                                    for (int j = 0; j < w; j++)
                                    {
                                        int yy = i + a - pad, xx = j + b - pad;
                                        if (yy < 0 || yy >= h || xx < 0 || xx >= w) continue;
                                        acc += (double)gyv[((s * cout + o) * h + i) * w + j] * xv[((s * cin + c) * h + yy) * w + xx];
                                    }
                            gwExpected[((o * cin + c) * k + a) * k + b] = scale * acc;
                        }
            double gwFloor = IsF4(algorithm) ? 1e-5 * gwExpected.Max(Math.Abs) : 0;
            for (int idx = 0; idx < gw.Length; idx++)
                Assert.True(Math.Abs(gwExpected[idx] - gw[idx]) <= 1e-4 * Math.Max(1, Math.Abs(gwExpected[idx])) + gwFloor, $"{algorithm}: gw[{idx}] {gw[idx]} vs {gwExpected[idx]}");
        }
    }

    private static bool IsF4(CpuBackend.ConvolutionAlgorithm algorithm) =>
        algorithm is CpuBackend.ConvolutionAlgorithm.Winograd4 or CpuBackend.ConvolutionAlgorithm.WinogradChannels or CpuBackend.ConvolutionAlgorithm.Auto;

    /// <summary>The preparing regions mix filter items with image items; each core's equal share must hold
    /// its part of both kinds (one after the other, one core got every image and the other filters only).</summary>
    [Theory]
    [InlineData(1024, 128)]
    [InlineData(1024, 16)]
    [InlineData(128, 128)]
    [InlineData(0, 64)]
    [InlineData(7, 0)]
    [InlineData(3, 10)]
    public void InterleavedItemsGiveEveryShareItsPartOfBothKinds(long first, long second)
    {
        long total = first + second;
        var firsts = new List<long>();
        var seconds = new List<long>();
        foreach (int shares in new[] { 2, 3, 4 })
            for (int p = 0; p < shares; p++)
            {
                long i0 = total * p / shares, i1 = total * (p + 1) / shares;
                long a = 0, b = 0;
                for (long i = i0; i < i1; i++)
                {
                    if (Winograd.Interleave(i, first, total, out long index)) { a++; if (shares == 2) firsts.Add(index); }
                    else { b++; if (shares == 2) seconds.Add(index); }
                }
                // In proportion to the share's length, within one item of each kind.
                Assert.InRange(a, first * (i1 - i0) / (double)total - 1, first * (i1 - i0) / (double)total + 1);
                Assert.InRange(b, second * (i1 - i0) / (double)total - 1, second * (i1 - i0) / (double)total + 1);
            }
        // Every item of each kind exactly once, in order.
        Assert.Equal(Enumerable.Range(0, (int)first).Select(i => (long)i), firsts);
        Assert.Equal(Enumerable.Range(0, (int)second).Select(i => (long)i), seconds);
    }

    [Avx512Fact]
    public void AutoChoosesByProductAndMapSizeAsItsTableSays()
    {
        using var be = new CpuBackend { Vectors = CpuBackend.CpuVectors.Avx512 };
        var (fwd, gx, gw) = (CpuBackend.ConvProduct.Forward, CpuBackend.ConvProduct.InputGradient, CpuBackend.ConvProduct.WeightGradient);
        Assert.Equal(CpuBackend.ConvMethod.WinogradF4, be.Choose(fwd, 3, 32, 32, 128, 128));
        Assert.Equal(CpuBackend.ConvMethod.WinogradF4, be.Choose(gx, 3, 32, 32, 128, 128));
        Assert.Equal(CpuBackend.ConvMethod.WinogradChannels, be.Choose(gw, 3, 32, 32, 128, 128));
        Assert.Equal(CpuBackend.ConvMethod.WinogradF4, be.Choose(fwd, 3, 64, 64, 64, 64));
        Assert.Equal(CpuBackend.ConvMethod.WinogradChannels, be.Choose(gx, 3, 16, 16, 128, 128));
        Assert.Equal(CpuBackend.ConvMethod.WinogradChannels, be.Choose(gw, 3, 4, 4, 129, 128));  // the 4x4 head
        Assert.Equal(CpuBackend.ConvMethod.WinogradChannels, be.Choose(fwd, 3, 8, 8, 128, 128));
        Assert.Equal(CpuBackend.ConvMethod.WinogradChannels, be.Choose(gw, 3, 32, 32, 64, 64));
        Assert.Equal(CpuBackend.ConvMethod.WinogradF4, be.Choose(gx, 3, 64, 64, 128, 64));
        Assert.Equal(CpuBackend.ConvMethod.WinogradF4, be.Choose(gw, 3, 64, 64, 64, 64));
        Assert.Equal(CpuBackend.ConvMethod.Pointwise, be.Choose(gw, 1, 32, 32, 128, 3));         // toRGB
        Assert.Equal(CpuBackend.ConvMethod.ImplicitGemm, be.Choose(fwd, 1, 32, 32, 3, 128));     // fromRGB
        be.Convolution = CpuBackend.ConvolutionAlgorithm.Winograd4;
        Assert.Equal(CpuBackend.ConvMethod.WinogradF4, be.Choose(gw, 3, 4, 4, 8, 8));
        Assert.Equal(CpuBackend.ConvMethod.ImplicitGemm, be.Choose(fwd, 5, 8, 8, 8, 8));          // Winograd is 3x3 only
        be.Convolution = CpuBackend.ConvolutionAlgorithm.Im2Col;
        Assert.Equal(CpuBackend.ConvMethod.Im2Col, be.Choose(gw, 1, 32, 32, 128, 3));
    }

    [Fact]
    public void WithFewerVectorsAutoChoosesWhatTheyRun()
    {
        var (fwd, gx, gw) = (CpuBackend.ConvProduct.Forward, CpuBackend.ConvProduct.InputGradient, CpuBackend.ConvProduct.WeightGradient);
        using var be = new CpuBackend { Vectors = CpuBackend.CpuVectors.Portable };
        Assert.Equal(CpuBackend.ConvMethod.Im2Col, be.Choose(fwd, 3, 8, 8, 128, 128));
        Assert.Equal(CpuBackend.ConvMethod.Im2Col, be.Choose(gw, 1, 32, 32, 128, 3));
        if (CpuBackend.HardwareVectors < CpuBackend.CpuVectors.Avx2)
        {
            Assert.Throws<NotSupportedException>(() => be.Vectors = CpuBackend.CpuVectors.Avx2);
            return;
        }
        be.Vectors = CpuBackend.CpuVectors.Avx2;
        foreach (int side in new[] { 4, 8, 16, 32, 64 })
            foreach (var product in new[] { fwd, gx, gw })
                Assert.Equal(CpuBackend.ConvMethod.WinogradAvx2, be.Choose(product, 3, side, side, 128, 128));
        Assert.Equal(CpuBackend.ConvMethod.Pointwise, be.Choose(gw, 1, 32, 32, 128, 3));         // toRGB
        Assert.Equal(CpuBackend.ConvMethod.ImplicitGemm, be.Choose(fwd, 1, 32, 32, 3, 128));     // fromRGB
        Assert.Equal(CpuBackend.ConvMethod.ImplicitGemm, be.Choose(fwd, 5, 8, 8, 8, 8));
        be.Convolution = CpuBackend.ConvolutionAlgorithm.ImplicitGemm;
        Assert.Equal(CpuBackend.ConvMethod.ImplicitGemm, be.Choose(gw, 3, 8, 8, 128, 128));
        if (CpuBackend.HardwareVectors < CpuBackend.CpuVectors.Avx512)
        {
            Assert.Throws<NotSupportedException>(() => be.Vectors = CpuBackend.CpuVectors.Avx512);
            Assert.Throws<NotSupportedException>(() => be.Convolution = CpuBackend.ConvolutionAlgorithm.WinogradChannels);
        }
    }
}
