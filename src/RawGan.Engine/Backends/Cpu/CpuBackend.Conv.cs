using System.Runtime.Intrinsics;

namespace RawGan.Engine.Backends.Cpu;

public sealed unsafe partial class CpuBackend
{
    // With AVX-512 or AVX2, convolutions run as implicit GEMMs (ConvGemm.cs; with AVX-512 the 3x3 ones
    // as Winograd transforms, Winograd.cs). Otherwise, and as the
    // simple version benchmarks compare against: im2col + GEMM, one sample at a time. For sample s:
    //   col[(ci k + ky) k + kx, p] = x[s, ci, py + ky - k/2, px + kx - k/2]   (0 outside the image)
    //   y[s]   = scale * W[cout, cin k k] . col                   (forward)
    //   gcol   = scale * W^T . gy[s];  gx[s] = col2im(gcol)       (input gradient, a transposed conv)
    //   gW    += scale * gy[s] . col^T                            (weight gradient)
    // A 1x1 convolution needs no col: x[s] itself is [cin, h w].
    // A forward convolution with a bias ends a layer (bias + leaky ReLU, Epilogue.cs): every method
    // applies it where it writes its output, or (im2col) to each sample's output right after its
    // GEMM, while that sample's maps are still in cache.

    private static void CheckConv(int n, int cin, int h, int w, int cout, int k)
    {
        if (n <= 0 || cin <= 0 || h <= 0 || w <= 0 || cout <= 0 || k <= 0 || k % 2 == 0)
            throw new ArgumentException($"conv2d: invalid sizes n={n} cin={cin} h={h} w={w} cout={cout} k={k} (k must be odd)");
    }

    private static void Im2Col(float* x, float* col, int cin, int h, int w, int k)
    {
        int pad = k / 2, plane = h * w;
        CpuParallel.For((long)cin * k * k, 64, (r0, r1) =>
        {
            for (long r = r0; r < r1; r++)
            {
                int ci = (int)(r / (k * k)), ky = (int)(r / k % k), kx = (int)(r % k);
                float* dst = col + r * plane, src = x + (long)ci * plane;
                for (int py = 0; py < h; py++)
                {
                    int sy = py + ky - pad;
                    float* drow = dst + py * w;
                    if ((uint)sy >= (uint)h) { new Span<float>(drow, w).Clear(); continue; }
                    float* srow = src + sy * w;
                    for (int px = 0; px < w; px++)
                    {
                        int sx = px + kx - pad;
                        drow[px] = (uint)sx < (uint)w ? srow[sx] : 0f;
                    }
                }
            }
        });
    }

    private static void Col2Im(float* col, float* gx, int cin, int h, int w, int k)
    {
        int pad = k / 2, plane = h * w;
        // Each input channel gathers from its own k*k rows of col, so channels split across cores.
        CpuParallel.For(cin, 4, (c0, c1) =>
        {
            for (long ci = c0; ci < c1; ci++)
            {
                float* dst = gx + ci * plane;
                new Span<float>(dst, plane).Clear();
                for (int ky = 0; ky < k; ky++)
                    for (int kx = 0; kx < k; kx++)
                    {
                        float* src = col + ((ci * k + ky) * k + kx) * plane;
                        for (int py = 0; py < h; py++)
                        {
                            int sy = py + ky - pad;
                            if ((uint)sy >= (uint)h) continue;
                            float* srow = src + py * w, drow = dst + sy * w;
                            for (int px = 0; px < w; px++)
                            {
                                int sx = px + kx - pad;
                                if ((uint)sx < (uint)w) drow[sx] += srow[px];
                            }
                        }
                    }
            }
        });
    }

    /// <summary>How CpuBackend computes convolutions. Several versions live side by side so that
    /// benchmarks and tests can compare them; the default is the fastest this CPU can run.</summary>
    public enum ConvolutionAlgorithm
    {
        /// <summary>im2col into a buffer, then one GEMM per sample (portable; the simple version).</summary>
        Im2Col,
        /// <summary>Implicit GEMM: the GEMM's packer reads im2col columns straight from the image (AVX-512 or AVX2).</summary>
        ImplicitGemm,
        /// <summary>Winograd F(2x2, 3x3) for 3x3 kernels (Winograd.cs): 16/36 of the multiplies;
        /// other kernel sizes run the implicit GEMM (AVX-512).</summary>
        Winograd,
        /// <summary>Winograd F(4x4, 3x3) for 3x3 kernels (36/144 of the multiplies); other kernel
        /// sizes run the implicit GEMM (AVX-512).</summary>
        Winograd4,
        /// <summary>Winograd F(4x4, 3x3) with 16 channels in each vector instead of a run of tiles
        /// (Winograd.Channels.cs): full vectors on any map size, for the small maps; other kernel sizes
        /// run the implicit GEMM (AVX-512).</summary>
        WinogradChannels,
        /// <summary>Per product and size, the fastest: for 3x3 products the Winograd version that
        /// measured fastest on this CPU for this shape (CpuBackend.Tuning.cs; with
        /// RAWGAN_CONV_TUNING=off the fixed table: the channel-lane F(4x4) up to 16x16 maps and for
        /// 32x32 weight gradients, F(4x4) by rows above), dot products for 1x1 weight gradients with
        /// few channels, the implicit GEMM otherwise (AVX-512). With AVX2 only: the AVX2 F(4x4) for 3x3 products
        /// (not measured per shape), the same dot products for those 1x1 weight gradients, the implicit GEMM otherwise.</summary>
        Auto,
    }

    private ConvolutionAlgorithm _convolution = ConvolutionAlgorithm.Auto;

    /// <summary>The algorithm, Auto unless set. The implicit GEMM and F(4x4) Winograd need AVX2 (with FMA),
    /// the other Winograd versions AVX-512, on this CPU; a backend whose <see cref="Vectors"/> are fewer runs
    /// what they allow (with AVX2, every Winograd algorithm is the AVX2 F(4x4), Winograd.Avx2.cs).</summary>
    public ConvolutionAlgorithm Convolution
    {
        get => _convolution;
        set => _convolution = value switch
        {
            ConvolutionAlgorithm.Im2Col or ConvolutionAlgorithm.Auto => value,
            ConvolutionAlgorithm.ImplicitGemm or ConvolutionAlgorithm.Winograd4 when HardwareVectors >= CpuVectors.Avx2 => value,
            ConvolutionAlgorithm.ImplicitGemm or ConvolutionAlgorithm.Winograd4 =>
                throw new NotSupportedException($"{value} convolution needs AVX2 and FMA; this CPU runs Im2Col"),
            _ when HardwareVectors == CpuVectors.Avx512 => value,
            _ => throw new NotSupportedException($"{value} convolution needs AVX-512; this CPU runs {(HardwareVectors == CpuVectors.Avx2 ? "ImplicitGemm" : "Im2Col")}"),
        };
    }

    /// <summary>The three products of a convolution.</summary>
    internal enum ConvProduct { Forward, InputGradient, WeightGradient }

    /// <summary>How one product is computed.</summary>
    internal enum ConvMethod { Im2Col, ImplicitGemm, WinogradF2, WinogradF4, WinogradChannels, WinogradAvx2, Pointwise }

    /// <summary>
    /// The choice of method, in one table: the first row that matches decides. The algorithm
    /// set on <see cref="Convolution"/> forces one method where it applies (Winograd is for 3x3
    /// kernels only); Auto chooses by product and map size from the measurements recorded beside
    /// the thresholds below, and then, for a 3x3 product, the public methods replace that choice
    /// with the measured one for the shape (<see cref="Tunes"/>, CpuBackend.Tuning.cs).
    /// </summary>
    internal ConvMethod Choose(ConvProduct product, int k, int h, int w, int cin, int cout) => (_convolution, product) switch
    {
        (ConvolutionAlgorithm.Im2Col, _) => ConvMethod.Im2Col,
        _ when _vectors == CpuVectors.Portable => ConvMethod.Im2Col,
        (_, ConvProduct.WeightGradient) when k == 1 && Math.Min(cin, cout) <= PointwiseFewChannels => ConvMethod.Pointwise,
        (ConvolutionAlgorithm.ImplicitGemm, _) => ConvMethod.ImplicitGemm,
        _ when k != 3 => ConvMethod.ImplicitGemm,
        _ when _vectors == CpuVectors.Avx2 => ConvMethod.WinogradAvx2,
        (ConvolutionAlgorithm.Winograd, _) => ConvMethod.WinogradF2,
        (ConvolutionAlgorithm.Winograd4, _) => ConvMethod.WinogradF4,
        (ConvolutionAlgorithm.WinogradChannels, _) => ConvMethod.WinogradChannels,
        (_, ConvProduct.WeightGradient) when Math.Max(h, w) <= WinogradChannelsMaxSide => ConvMethod.WinogradChannels,
        _ when Math.Max(h, w) <= WinogradChannelsMaxSideForward => ConvMethod.WinogradChannels,
        (_, ConvProduct.WeightGradient) when h * w < WinogradWeightMinPixels => ConvMethod.ImplicitGemm,
        (_, ConvProduct.WeightGradient) => Math.Min(h, w) >= WinogradF4WeightMinSide ? ConvMethod.WinogradF4 : ConvMethod.WinogradF2,
        _ => Math.Min(h, w) >= WinogradF4MinSide ? ConvMethod.WinogradF4 : ConvMethod.WinogradF2,
    };

    public void Conv2dForward(DeviceBuffer x, DeviceBuffer w, DeviceBuffer y, int n, int cin, int h, int wd, int cout, int k, float scale,
        DeviceBuffer bias = default, float slope = 1f)
    {
        CheckConv(n, cin, h, wd, cout, k);
        var method = Choose(ConvProduct.Forward, k, h, wd, cin, cout);
        if (Tunes(method) && !Remembered(ConvProduct.Forward, n, cin, h, wd, cout, out method)) method = TuneForward(x, w, y, n, cin, h, wd, cout, scale, bias, slope);
        Conv2dForward(method, x, w, y, n, cin, h, wd, cout, k, scale, bias, slope);
    }

    /// <summary>The generator's layer: the layer (its bias and activation in the product's output pass),
    /// then pixel norm in place over its output, while that output is still in the caches as far
    /// as they hold it.</summary>
    public void Conv2dForwardPixelNorm(DeviceBuffer x, DeviceBuffer w, DeviceBuffer z, DeviceBuffer inv, int n, int cin, int h, int wd, int cout, int k,
        float scale, DeviceBuffer bias, float slope, float eps)
    {
        PixelNormLayerChecks.RequireFactors(inv);
        Conv2dForward(x, w, z, n, cin, h, wd, cout, k, scale, bias, slope);
        PixelNormForward(z, z, n, cout, h * wd, eps, inv);
    }

    private void Conv2dForward(ConvMethod method, DeviceBuffer x, DeviceBuffer w, DeviceBuffer y, int n, int cin, int h, int wd, int cout, int k,
        float scale, DeviceBuffer bias, float slope)
    {
        var epilogue = bias.IsNull ? Epilogue.None : new Epilogue(P(bias), slope);
        switch (method)
        {
            case ConvMethod.WinogradChannels:
                ChannelForward(P(x), P(w), P(y), n, cin, h, wd, cout, scale, transposed: false, epilogue);
                return;
            case ConvMethod.WinogradF2 or ConvMethod.WinogradF4:
                WinogradForward(P(x), P(w), P(y), n, cin, h, wd, cout, scale, method == ConvMethod.WinogradF4, epilogue);
                return;
            case ConvMethod.ImplicitGemm:
                ConvGemm.Forward(P(x), P(w), P(y), n, cin, h, wd, cout, k, scale, epilogue, Wide);
                return;
            case ConvMethod.WinogradAvx2:
                Avx2Forward(P(x), P(w), P(y), n, cin, h, wd, cout, scale, epilogue);
                return;
        }
        int plane = h * wd, ckk = cin * k * k;
        DeviceBuffer col = k == 1 ? DeviceBuffer.Null : Allocate((long)ckk * plane);
        try
        {
            for (int s = 0; s < n; s++)
            {
                var xs = Offset(x, (long)s * cin * plane);
                var ys = Offset(y, (long)s * cout * plane);
                if (k != 1) Im2Col(P(xs), P(col), cin, h, wd, k);
                Gemm(false, false, cout, plane, ckk, scale, w, k == 1 ? xs : col, 0f, ys);
                if (!bias.IsNull) BiasLeakyRelu(ys, bias, ys, 1, cout, plane, slope);
            }
        }
        finally { Free(col); }
    }

    public void Conv2dBackwardInput(DeviceBuffer gy, DeviceBuffer w, DeviceBuffer gx, int n, int cin, int h, int wd, int cout, int k, float scale)
    {
        CheckConv(n, cin, h, wd, cout, k);
        var method = Choose(ConvProduct.InputGradient, k, h, wd, cin, cout);
        if (Tunes(method) && !Remembered(ConvProduct.InputGradient, n, cin, h, wd, cout, out method)) method = TuneBackwardInput(gy, w, gx, n, cin, h, wd, cout, scale);
        Conv2dBackwardInput(method, gy, w, gx, n, cin, h, wd, cout, k, scale);
    }

    private void Conv2dBackwardInput(ConvMethod method, DeviceBuffer gy, DeviceBuffer w, DeviceBuffer gx, int n, int cin, int h, int wd, int cout, int k, float scale)
    {
        if (method == ConvMethod.WinogradChannels)
        {
            // The input gradient is the forward convolution of gy with the transposed, flipped kernel, read so.
            ChannelForward(P(gy), P(w), P(gx), n, cout, h, wd, cin, scale, transposed: true);
            return;
        }
        if (method != ConvMethod.Im2Col)
        {
            // The input gradient is the forward convolution of gy with the transposed, flipped kernel.
            var flipped = Allocate((long)cin * cout * k * k);
            try
            {
                ConvGemm.Flip(P(w), P(flipped), cin, cout, k);
                if (method == ConvMethod.ImplicitGemm) ConvGemm.Forward(P(gy), P(flipped), P(gx), n, cout, h, wd, cin, k, scale, Epilogue.None, Wide);
                else if (method == ConvMethod.WinogradAvx2) Avx2Forward(P(gy), P(flipped), P(gx), n, cout, h, wd, cin, scale, Epilogue.None);
                else WinogradForward(P(gy), P(flipped), P(gx), n, cout, h, wd, cin, scale, method == ConvMethod.WinogradF4);
            }
            finally { Free(flipped); }
            return;
        }
        int plane = h * wd, ckk = cin * k * k;
        DeviceBuffer col = k == 1 ? DeviceBuffer.Null : Allocate((long)ckk * plane);
        try
        {
            for (int s = 0; s < n; s++)
            {
                var gxs = Offset(gx, (long)s * cin * plane);
                Gemm(true, false, ckk, plane, cout, scale, w, Offset(gy, (long)s * cout * plane), 0f, k == 1 ? gxs : col);
                if (k != 1) Col2Im(P(col), P(gxs), cin, h, wd, k);
            }
        }
        finally { Free(col); }
    }

    public void Conv2dBackwardWeight(DeviceBuffer x, DeviceBuffer gy, DeviceBuffer gw, int n, int cin, int h, int wd, int cout, int k, float scale)
    {
        CheckConv(n, cin, h, wd, cout, k);
        var method = Choose(ConvProduct.WeightGradient, k, h, wd, cin, cout);
        if (Tunes(method) && !Remembered(ConvProduct.WeightGradient, n, cin, h, wd, cout, out method)) method = TuneBackwardWeight(x, gy, gw, n, cin, h, wd, cout, scale);
        Conv2dBackwardWeight(method, x, gy, gw, n, cin, h, wd, cout, k, scale);
    }

    private void Conv2dBackwardWeight(ConvMethod method, DeviceBuffer x, DeviceBuffer gy, DeviceBuffer gw, int n, int cin, int h, int wd, int cout, int k, float scale)
    {
        switch (method)
        {
            case ConvMethod.Pointwise:
                PointwiseWeightGradient(P(x), P(gy), P(gw), n, cin, h * wd, cout, scale, Wide);
                return;
            case ConvMethod.WinogradChannels:
                var channelScratch = Allocate(Winograd.ChannelWeightScratchLength(n, cin, h, wd, cout));
                try { Winograd.ChannelBackwardWeight(P(x), P(gy), P(gw), P(channelScratch), n, cin, h, wd, cout, scale); }
                finally { Free(channelScratch); }
                return;
            case ConvMethod.WinogradF2 or ConvMethod.WinogradF4:
                var scratch = Allocate(Winograd.WeightScratchLength(cin, cout, CpuParallel.Threads));
                try { Winograd.BackwardWeight(P(x), P(gy), P(gw), P(scratch), n, cin, h, wd, cout, scale, method == ConvMethod.WinogradF4); }
                finally { Free(scratch); }
                return;
            case ConvMethod.ImplicitGemm:
                ConvGemm.BackwardWeight(P(x), P(gy), P(gw), n, cin, h, wd, cout, k, scale, Wide);
                return;
            case ConvMethod.WinogradAvx2:
                var avx2Scratch = Allocate(Winograd.Avx2WeightScratchLength(cin, cout));
                try { Winograd.Avx2BackwardWeight(P(x), P(gy), P(gw), P(avx2Scratch), n, cin, h, wd, cout, scale); }
                finally { Free(avx2Scratch); }
                return;
        }
        int plane = h * wd, ckk = cin * k * k;
        DeviceBuffer col = k == 1 ? DeviceBuffer.Null : Allocate((long)ckk * plane);
        try
        {
            for (int s = 0; s < n; s++)
            {
                var xs = Offset(x, (long)s * cin * plane);
                if (k != 1) Im2Col(P(xs), P(col), cin, h, wd, k);
                Gemm(false, true, cout, ckk, plane, scale, Offset(gy, (long)s * cout * plane), k == 1 ? xs : col, s == 0 ? 0f : 1f, gw);
            }
        }
        finally { Free(col); }
    }

    // Auto's thresholds, measured with `RawGan.Benchmarks -- --conv` (2 threads, best call; the
    // machine was shared with other work, so ratios within one run are what counts; bench/README.md
    // has the table). Up to 32x32 maps the channel-lane F(4x4) wins every product: 2.5-2.7x the next
    // best on 8x8 (426-515 GFLOP/s against 160-209 for F(2x2) by rows), 2.1-3.5x on D's 4x4 head
    // (256-327 against 94-125: its 129 input channels cost nothing extra), 1.2-1.7x on 16x16 and
    // 1.0-1.3x on 32x32 (weight gradient 366 against 277). On 64x64 maps with 64 channels F(4x4) by
    // rows is ahead in 8 of 9 products (forward 386-438 against 301-370), so larger maps keep it;
    // there weight gradients run F(4x4) from 64x64 up (F(2x2) ties at 32x32). A 1x1 convolution with
    // 3 channels on one side wastes 61 of the micro-kernel's 64 columns (4 GFLOP/s), so its weight
    // gradient runs as dot products over the pixels. (Before the channel-lane version, F(4x4) by rows
    // lost to F(2x2) below 32x32, where a run fills only 4 of a vector's 16 lanes, and on 4x4 maps a
    // weight gradient's row transforms cost more than Winograd saved.)
    // Forward and input gradients at 32x32 went back to F(4x4) by rows after a second machine: on
    // an Intel Xeon (Emerald Rapids, 2026-12-02, `--conv --case "32x32 128->128"`, median GFLOP/s)
    // rows beat channel lanes by 1.65x forward (391 against 236) and 1.39x for the input gradient
    // (410 against 294), where on the Zen 4 channel lanes led all three products by 1.0-1.3x, the
    // weight gradient most (366 against 277); the weight gradient keeps channel lanes, which lead
    // on the Xeon too (345 against 265). 8x8 and 16x16 keep channel lanes for every product on
    // both machines. On the Zen 4 this may cost the two 32x32 products up to the 1.0-1.3x lead
    // they had there (not measured since). On a Zen 5 channel lanes led all three 32x32 products
    // again (882, 933 and 760 GFLOP/s against 797, 789 and 600 for the best by rows): a third
    // machine, a third answer, which is why Auto now measures the 3x3 products per shape
    // (CpuBackend.Tuning.cs) and this table decides only with RAWGAN_CONV_TUNING=off, or where a
    // product's output shares memory with its input.
    private const int WinogradChannelsMaxSideForward = 16;
    private const int WinogradChannelsMaxSide = 32, WinogradWeightMinPixels = 64, PointwiseFewChannels = 8, WinogradF4MinSide = 32, WinogradF4WeightMinSide = 64;

    /// <summary>gw[co, ci] = scale sum over samples and pixels of gy[s, co, p] x[s, ci, p] when one
    /// side has at most <see cref="PointwiseFewChannels"/> channels (toRGB and fromRGB): each core takes
    /// channels of the wide side and runs along the pixel rows of both maps with one vector sum per pair.</summary>
    private static void PointwiseWeightGradient(float* x, float* gy, float* gw, int n, int cin, int plane, int cout, float scale, bool avx512)
    {
        bool wideOut = cout >= cin;
        CpuParallel.For(wideOut ? cout : cin, 1, new PointwiseWeightLoop(x, gy, gw, n, cin, plane, cout, scale, avx512));
    }

    // With AVX-512 16 lanes per sum, with AVX2 8 (the first half of each sum's 16 floats).
    private readonly struct PointwiseWeightLoop(float* x, float* gy, float* gw, int n, int cin, int plane, int cout, float scale, bool avx512) : IRangeBody
    {
        public void Run(long w0, long w1)
        {
            bool wideOut = cout >= cin;
            int wide = wideOut ? cout : cin, few = wideOut ? cin : cout;
            float* wideMaps = wideOut ? gy : x, fewMaps = wideOut ? x : gy;
            float* sums = stackalloc float[PointwiseFewChannels * 16];
            var tails = stackalloc float[PointwiseFewChannels];    // pixels past the last whole vector
            for (long b = w0; b < w1; b++)
            {
                new Span<float>(sums, PointwiseFewChannels * 16).Clear();
                for (int f = 0; f < few; f++) tails[f] = 0;
                for (int s = 0; s < n; s++)
                {
                    float* row = wideMaps + ((long)s * wide + b) * plane;
                    float* fewRows = fewMaps + (long)s * few * plane;
                    int p = 0;
                    if (avx512)
                        for (; p + 16 <= plane; p += 16)
                        {
                            var v = Vector512.Load(row + p);
                            for (int f = 0; f < few; f++)
                                Vector512.FusedMultiplyAdd(v, Vector512.Load(fewRows + (long)f * plane + p), Vector512.Load(sums + 16 * f)).Store(sums + 16 * f);
                        }
                    else
                        for (; p + 8 <= plane; p += 8)
                        {
                            var v = Vector256.Load(row + p);
                            for (int f = 0; f < few; f++)
                                Vector256.FusedMultiplyAdd(v, Vector256.Load(fewRows + (long)f * plane + p), Vector256.Load(sums + 16 * f)).Store(sums + 16 * f);
                        }
                    for (; p < plane; p++)
                        for (int f = 0; f < few; f++) tails[f] += row[p] * fewRows[(long)f * plane + p];
                }
                for (int f = 0; f < few; f++)
                {
                    float lanes = avx512 ? Vector512.Sum(Vector512.Load(sums + 16 * f)) : Vector256.Sum(Vector256.Load(sums + 16 * f));
                    float total = scale * (lanes + tails[f]);
                    if (wideOut) gw[b * few + f] = total;        // gw[co = b, ci = f]
                    else gw[(long)f * wide + b] = total;          // gw[co = f, ci = b]
                }
            }
        }
    }

    private void ChannelForward(float* x, float* w, float* y, int n, int inC, int h, int wd, int outC, float scale, bool transposed,
        Epilogue epilogue = default)
    {
        var scratch = Allocate(Winograd.ChannelForwardScratchLength(n, inC, h, wd, outC));
        try { Winograd.ChannelForward(x, w, y, P(scratch), n, inC, h, wd, outC, scale, transposed, epilogue); }
        finally { Free(scratch); }
    }

    private void Avx2Forward(float* x, float* w, float* y, int n, int cin, int h, int wd, int cout, float scale, Epilogue epilogue)
    {
        var scratch = Allocate(Winograd.Avx2ForwardScratchLength(cin, cout));
        try { Winograd.Avx2Forward(x, w, y, P(scratch), n, cin, h, wd, cout, scale, epilogue); }
        finally { Free(scratch); }
    }

    private void WinogradForward(float* x, float* w, float* y, int n, int cin, int h, int wd, int cout, float scale, bool f4, Epilogue epilogue = default)
    {
        var packed = Allocate(f4 ? Winograd.PackedFilterLengthF4(cin, cout) : Winograd.PackedFilterLength(cin, cout));
        try
        {
            if (f4) Winograd.ForwardF4(x, w, P(packed), y, n, cin, h, wd, cout, scale, epilogue);
            else Winograd.Forward(x, w, P(packed), y, n, cin, h, wd, cout, scale, epilogue);
        }
        finally { Free(packed); }
    }

    private static DeviceBuffer Offset(DeviceBuffer b, long floats) => new(b.Address + (nint)(floats * sizeof(float)), b.Length - floats);
}
