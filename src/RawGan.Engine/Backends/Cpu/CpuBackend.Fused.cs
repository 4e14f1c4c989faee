using System.Numerics;
using System.Runtime.Intrinsics;

namespace RawGan.Engine.Backends.Cpu;

// Resampling, channel copies, and the fused ops: pixel norm, minibatch standard deviation, the
// per-sample gradient-norm penalty, and the optimizer updates (each cites the paper it is from).
public sealed unsafe partial class CpuBackend
{
    // ------------------------------------------------------------------ resample

    public void Upsample2x(DeviceBuffer x, DeviceBuffer y, int planes, int h, int w, float gain)
    {
        CpuParallel.For((long)planes * h, 256, new Upsample2xLoop(P(x), P(y), w, gain));
    }

    private readonly struct Upsample2xLoop(float* px, float* py, int w, float gain) : IRangeBody
    {
        public void Run(long r0, long r1)
        {
            int w2 = 2 * w;
            for (long r = r0; r < r1; r++)          // r = one input row (plane, i)
            {
                float* src = px + r * w, dst = py + r * 2 * w2;
                for (int j = 0; j < w; j++)
                {
                    float v = gain * src[j];
                    dst[2 * j] = v; dst[2 * j + 1] = v;
                    dst[w2 + 2 * j] = v; dst[w2 + 2 * j + 1] = v;
                }
            }
        }
    }

    public void AvgPool2x(DeviceBuffer x, DeviceBuffer y, int planes, int h, int w, float gain)
    {
        if (h % 2 != 0 || w % 2 != 0) throw new ArgumentException($"avgpool2x: height and width must be even, got {h}x{w}");
        CpuParallel.For((long)planes * (h / 2), 256, new AvgPool2xLoop(P(x), P(y), w, 0.25f * gain));
    }

    private readonly struct AvgPool2xLoop(float* px, float* py, int w, float g) : IRangeBody
    {
        public void Run(long r0, long r1)
        {
            int wo = w / 2;
            for (long r = r0; r < r1; r++)          // r = one output row (plane, i)
            {
                float* src = px + r * 2 * w, dst = py + r * wo;
                for (int j = 0; j < wo; j++)
                    dst[j] = g * (src[2 * j] + src[2 * j + 1] + src[w + 2 * j] + src[w + 2 * j + 1]);
            }
        }
    }

    // ------------------------------------------------------------------ channels

    public void CopyChannels(DeviceBuffer src, int srcChannels, int srcStart, DeviceBuffer dst, int dstChannels, int dstStart, int count, int samples, int plane)
    {
        CpuParallel.For(samples, 16, new CopyChannelsLoop(P(src), srcChannels, srcStart, P(dst), dstChannels, dstStart, (long)count * plane * sizeof(float), plane));
    }

    private readonly struct CopyChannelsLoop(float* ps, int srcChannels, int srcStart, float* pd, int dstChannels, int dstStart, long bytes, int plane) : IRangeBody
    {
        public void Run(long s0, long s1)
        {
            for (long s = s0; s < s1; s++)
                Buffer.MemoryCopy(ps + (s * srcChannels + srcStart) * plane, pd + (s * dstChannels + dstStart) * plane, bytes, bytes);
        }
    }

    // ------------------------------------------------------------------ pixel norm (ProGAN 4.2)

    // Pixel norm works along the channel axis, which has stride `plane`; the loops below run
    // over a row of pixels at a time, so that the inner loops are contiguous (SIMD) and each pixel's
    // sum over channels is a vector of independent accumulators.
    private const int PixelBlock = 256;

    public void PixelNormForward(DeviceBuffer x, DeviceBuffer y, int n, int c, int plane, float eps, DeviceBuffer inv = default)
    {
        int blocks = (plane + PixelBlock - 1) / PixelBlock;
        CpuParallel.For((long)n * blocks, Math.Max(1, 4096 / Math.Max(1, c)),
            new PixelNormForwardLoop(P(x), P(y), inv.IsNull ? null : P(inv), c, plane, blocks, eps));
    }

    /// <summary>One block of pixels at a time: the sums of squares, the factors (kept in pr when asked),
    /// then the scaled rows. Every read of a block comes before its writes, so y may be x.</summary>
    private readonly struct PixelNormForwardLoop(float* px, float* py, float* pr, int c, int plane, int blocks, float eps) : IRangeBody
    {
        public void Run(long q0, long q1)
        {
            float* r = stackalloc float[PixelBlock];
            for (long q = q0; q < q1; q++)
            {
                long s = q / blocks;
                int p0 = (int)(q % blocks) * PixelBlock, len = Math.Min(PixelBlock, plane - p0);
                float* xs = px + s * c * plane + p0, ys = py + s * c * plane + p0;
                int wide = Vector512.IsHardwareAccelerated ? len / 16 * 16 : 0;   // 16 pixels per vector, the same sums lane by lane
                new Span<float>(r, len).Clear();
                for (int ch = 0; ch < c; ch++)
                {
                    float* row = xs + (long)ch * plane;
                    int i = 0;
                    for (; i < wide; i += 16)
                    {
                        var v = Vector512.Load(row + i);
                        Vector512.Store(Vector512.Load(r + i) + v * v, r + i);
                    }
                    for (; i < len; i++) r[i] += row[i] * row[i];
                }
                for (int i = 0; i < len; i++) r[i] = 1f / MathF.Sqrt(r[i] / c + eps);
                if (pr != null) new Span<float>(r, len).CopyTo(new Span<float>(pr + s * plane + p0, len));
                for (int ch = 0; ch < c; ch++)
                {
                    float* row = xs + (long)ch * plane, outRow = ys + (long)ch * plane;
                    int i = 0;
                    for (; i < wide; i += 16) Vector512.Store(Vector512.Load(row + i) * Vector512.Load(r + i), outRow + i);
                    for (; i < len; i++) outRow[i] = row[i] * r[i];
                }
            }
        }
    }

    public void PixelNormBackward(DeviceBuffer x, DeviceBuffer gy, DeviceBuffer gx, int n, int c, int plane, float eps)
    {
        int blocks = (plane + PixelBlock - 1) / PixelBlock;
        CpuParallel.For((long)n * blocks, Math.Max(1, 4096 / Math.Max(1, c)), new PixelNormBackwardLoop(P(x), P(gy), P(gx), c, plane, blocks, eps));
    }

    private readonly struct PixelNormBackwardLoop(float* px, float* pg, float* po, int c, int plane, int blocks, float eps) : IRangeBody
    {
        public void Run(long q0, long q1)
        {
            float* r = stackalloc float[PixelBlock];
            float* k = stackalloc float[PixelBlock];
            for (long q = q0; q < q1; q++)
            {
                long s = q / blocks;
                int p0 = (int)(q % blocks) * PixelBlock, len = Math.Min(PixelBlock, plane - p0);
                long o = s * c * plane + p0;
                new Span<float>(r, len).Clear();
                new Span<float>(k, len).Clear();
                for (int ch = 0; ch < c; ch++)
                {
                    float* xr = px + o + (long)ch * plane, gr = pg + o + (long)ch * plane;
                    for (int i = 0; i < len; i++) { r[i] += xr[i] * xr[i]; k[i] += gr[i] * xr[i]; }
                }
                // gx = r gy - r^3 x mean_c(gy x)   (= r (gy - y mean_c(gy y)))
                for (int i = 0; i < len; i++)
                {
                    float ri = 1f / MathF.Sqrt(r[i] / c + eps);
                    r[i] = ri;
                    k[i] = ri * ri * ri * k[i] / c;
                }
                for (int ch = 0; ch < c; ch++)
                {
                    float* xr = px + o + (long)ch * plane, gr = pg + o + (long)ch * plane, outRow = po + o + (long)ch * plane;
                    for (int i = 0; i < len; i++) outRow[i] = r[i] * gr[i] - k[i] * xr[i];
                }
            }
        }
    }

    /// <summary>
    /// The generator layer's backward in one pass over its output: each block of pixels takes its dot
    /// products over the channels, then writes ga channel by channel, adding each channel's row into
    /// the block's own partial bias sum (partials[item * c + channel]: no two blocks share one); the
    /// partials are then added per channel in the order of the blocks, in double, so the result does
    /// not depend on how the blocks were shared between the cores.
    /// </summary>
    public void PixelNormLeakyReluBackward(DeviceBuffer z, DeviceBuffer inv, DeviceBuffer gz, DeviceBuffer ga, DeviceBuffer gb, int n, int c, int plane, float slope)
    {
        int blocks = (plane + PixelBlock - 1) / PixelBlock;
        long items = (long)n * blocks;
        var partials = Allocate(items * c);
        try
        {
            float* pp = P(partials);
            CpuParallel.For(items, Math.Max(1, 4096 / Math.Max(1, c)), new PixelNormLeakyReluBackwardLoop(P(z), P(inv), P(gz), P(ga), pp, c, plane, blocks, slope));
            float* pb = P(gb);
            for (int ch = 0; ch < c; ch++)
            {
                double sum = 0;
                for (long q = 0; q < items; q++) sum += pp[q * c + ch];
                pb[ch] = (float)sum;
            }
        }
        finally
        {
            Free(partials);
        }
    }

    /// <summary>ga = m(z) r (gz - z mean_c(gz z)) for one block of pixels, 16 at a time: the dot
    /// products over the channels first (all reads), then the rows (so ga may be gz), each row's sum
    /// into the block's partial bias sums.</summary>
    private readonly struct PixelNormLeakyReluBackwardLoop(float* pz, float* pr, float* pg, float* po, float* partials, int c, int plane, int blocks, float slope)
        : IRangeBody
    {
        public void Run(long q0, long q1)
        {
            float* m = stackalloc float[PixelBlock];
            var vs = Vector512.Create(slope);
            for (long q = q0; q < q1; q++)
            {
                long s = q / blocks;
                int p0 = (int)(q % blocks) * PixelBlock, len = Math.Min(PixelBlock, plane - p0), wide = Vector512.IsHardwareAccelerated ? len / 16 * 16 : 0;
                long o = s * c * plane + p0;
                float* r = pr + s * plane + p0;
                new Span<float>(m, len).Clear();
                for (int ch = 0; ch < c; ch++)
                {
                    float* zr = pz + o + (long)ch * plane, gr = pg + o + (long)ch * plane;
                    int i = 0;
                    for (; i < wide; i += 16) Vector512.Store(Vector512.Load(m + i) + Vector512.Load(gr + i) * Vector512.Load(zr + i), m + i);
                    for (; i < len; i++) m[i] += gr[i] * zr[i];
                }
                for (int i = 0; i < len; i++) m[i] /= c;
                for (int ch = 0; ch < c; ch++)
                {
                    float* zr = pz + o + (long)ch * plane, gr = pg + o + (long)ch * plane, outRow = po + o + (long)ch * plane;
                    var vsum = Vector512<float>.Zero;
                    float tail = 0;
                    int i = 0;
                    for (; i < wide; i += 16)
                    {
                        var zv = Vector512.Load(zr + i);
                        var g = Vector512.Load(r + i) * (Vector512.Load(gr + i) - zv * Vector512.Load(m + i));
                        g = Vector512.ConditionalSelect(Vector512.GreaterThan(zv, Vector512<float>.Zero), g, g * vs);
                        g.Store(outRow + i);
                        vsum += g;
                    }
                    for (; i < len; i++)
                    {
                        float g = r[i] * (gr[i] - zr[i] * m[i]);
                        g = zr[i] > 0 ? g : slope * g;
                        outRow[i] = g;
                        tail += g;
                    }
                    partials[q * c + ch] = Vector512.Sum(vsum) + tail;
                }
            }
        }
    }

    // ------------------------------------------------------------------ minibatch stddev (ProGAN 3)

    private static void CheckGroups(int n, int groupSize, string op)
    {
        if (groupSize <= 0 || n % groupSize != 0)
            throw new ArgumentException($"{op}: batch {n} is not divisible by group size {groupSize}");
    }

    /// <summary>Population standard deviation (eps inside the root) of feature e over the members of group m.</summary>
    private static double GroupStd(float* x, int groups, int groupSize, long m, long e, long feat, float eps, out double mean)
    {
        mean = 0;
        for (int g = 0; g < groupSize; g++) mean += x[(g * groups + m) * feat + e];
        mean /= groupSize;
        double var = 0;
        for (int g = 0; g < groupSize; g++) { double d = x[(g * groups + m) * feat + e] - mean; var += d * d; }
        return Math.Sqrt(var / groupSize + eps);
    }

    public void MinibatchStdDevForward(DeviceBuffer x, DeviceBuffer y, int n, int c, int plane, int groupSize, float eps)
    {
        CheckGroups(n, groupSize, "minibatch_stddev_forward");
        int groups = n / groupSize;          // sample s belongs to group s % groups
        CpuParallel.For(groups, 1, new MinibatchStdDevForwardLoop(P(x), P(y), groups, groupSize, (long)c * plane, plane, eps));
    }

    private readonly struct MinibatchStdDevForwardLoop(float* px, float* py, int groups, int groupSize, long feat, int plane, float eps) : IRangeBody
    {
        public void Run(long m0, long m1)
        {
            for (long m = m0; m < m1; m++)
            {
                double stdSum = 0;
                for (long e = 0; e < feat; e++) stdSum += GroupStd(px, groups, groupSize, m, e, feat, eps, out _);
                float stat = (float)(stdSum / feat);
                for (int g = 0; g < groupSize; g++)
                {
                    long s = g * groups + m;
                    float* ys = py + s * (feat + plane);
                    Buffer.MemoryCopy(px + s * feat, ys, feat * sizeof(float), feat * sizeof(float));
                    new Span<float>(ys + feat, plane).Fill(stat);
                }
            }
        }
    }

    public void MinibatchStdDevBackward(DeviceBuffer x, DeviceBuffer gy, DeviceBuffer gx, int n, int c, int plane, int groupSize, float eps)
    {
        CheckGroups(n, groupSize, "minibatch_stddev_backward");
        int groups = n / groupSize;
        CpuParallel.For(groups, 1, new MinibatchStdDevBackwardLoop(P(x), P(gy), P(gx), groups, groupSize, (long)c * plane, plane, eps));
    }

    private readonly struct MinibatchStdDevBackwardLoop(float* px, float* pg, float* po, int groups, int groupSize, long feat, int plane, float eps) : IRangeBody
    {
        public void Run(long m0, long m1)
        {
            for (long m = m0; m < m1; m++)
            {
                // Gradient reaching this group's statistic: every pixel of the extra channel of every member.
                double gstat = 0;
                for (int g = 0; g < groupSize; g++)
                {
                    float* gs = pg + (g * groups + m) * (feat + plane) + feat;
                    for (int p = 0; p < plane; p++) gstat += gs[p];
                }
                // d stat / d x[g, e] = (x[g, e] - mean_e) / (G std_e feat)
                double coef = gstat / ((double)groupSize * feat);
                for (long e = 0; e < feat; e++)
                {
                    double std = GroupStd(px, groups, groupSize, m, e, feat, eps, out double mean);
                    for (int g = 0; g < groupSize; g++)
                    {
                        long s = g * groups + m;
                        po[s * feat + e] = (float)(pg[s * (feat + plane) + e] + coef * (px[s * feat + e] - mean) / std);
                    }
                }
            }
        }
    }

    // ------------------------------------------------------------------ WGAN-GP (Gulrajani et al. 2017)

    public void GradientPenaltyForward(DeviceBuffer g, DeviceBuffer norm, DeviceBuffer penalty, int samples, int inner, float target)
    {
        CpuParallel.For(samples, 1, new GradientPenaltyForwardLoop(P(g), P(norm), P(penalty), inner, target));
    }

    private readonly struct GradientPenaltyForwardLoop(float* pg, float* pn, float* pp, int inner, float target) : IRangeBody
    {
        public void Run(long s0, long s1)
        {
            for (long s = s0; s < s1; s++)
            {
                double ss = 0;
                float* gs = pg + s * inner;
                for (int i = 0; i < inner; i++) ss += (double)gs[i] * gs[i];
                double nrm = Math.Sqrt(ss);
                pn[s] = (float)nrm;
                pp[s] = (float)((nrm - target) * (nrm - target));
            }
        }
    }

    public void GradientPenaltyBackward(DeviceBuffer g, DeviceBuffer norm, DeviceBuffer gpenalty, DeviceBuffer gg, int samples, int inner, float target)
    {
        CpuParallel.For((long)samples * inner, ElementGrain, new GradientPenaltyBackwardLoop(P(g), P(norm), P(gpenalty), P(gg), inner, target));
    }

    private readonly struct GradientPenaltyBackwardLoop(float* pg, float* pn, float* pgp, float* po, int inner, float target) : IRangeBody
    {
        public void Run(long i0, long i1)
        {
            for (long i = i0; i < i1; i++)
            {
                long s = i / inner;
                float nrm = pn[s];
                // d (|g| - t)^2 / dg = 2 (|g| - t) g / |g|; at g = 0 the subgradient 0 is used.
                po[i] = nrm > 0 ? pgp[s] * 2f * (nrm - target) * pg[i] / nrm : 0f;
            }
        }
    }

    // ------------------------------------------------------------------ optimizers

    /// <summary>Whether a skip count (a 64-bit non-finite count) is given and not zero.</summary>
    private static bool Skipped(DeviceBuffer skip) => !skip.IsNull && *(long*)P(skip) != 0;

    public void AdamStep(DeviceBuffer step, DeviceBuffer skip)
    {
        CheckLength(step, 1, nameof(AdamStep));
        if (!Skipped(skip)) *(int*)P(step) += 1;
    }

    public void AdamUpdate(DeviceBuffer p, DeviceBuffer g, DeviceBuffer m, DeviceBuffer v, long n, float lr, float beta1, float beta2, float eps, DeviceBuffer stepCount, DeviceBuffer skip,
        DeviceBuffer nonFiniteCount = default)
    {
        if (Skipped(skip)) return;
        if (!nonFiniteCount.IsNull) CheckLength(nonFiniteCount, 2, nameof(AdamUpdate));
        int step = *(int*)P(stepCount);
        // TensorFlow's form (the official ProGAN's optimizer): the bias corrections fold into the
        // step size and eps is added to sqrt(v) unscaled.
        float lrT = (float)(lr * Math.Sqrt(1 - Math.Pow(beta2, step)) / (1 - Math.Pow(beta1, step)));
        CpuParallel.For(n, ElementGrain, new AdamLoop(P(p), P(g), P(m), P(v), lrT, beta1, beta2, eps, (long*)P(nonFiniteCount)));
    }

    // With a counter, each chunk counts the non-finite values it wrote and adds them once. Sixteen
    // parameters at a time where AVX-512 is there: the scalar loop spent its time in one square
    // root and one division per parameter (8% of an 8x8 step). The vector loop does the same
    // operations in the same order (the JIT fuses no multiply-add on its own), so its results
    // are the scalar loop's, bit for bit.
    private readonly struct AdamLoop(float* pp, float* pg, float* pm, float* pv, float lrT, float beta1, float beta2, float eps, long* count) : IRangeBody
    {
        public void Run(long s, long e)
        {
            long local = 0;
            long i = s;
            if (Vector512.IsHardwareAccelerated)
            {
                Vector512<float> b1 = Vector512.Create(beta1), c1 = Vector512.Create(1 - beta1);
                Vector512<float> b2 = Vector512.Create(beta2), c2 = Vector512.Create(1 - beta2);
                Vector512<float> lr = Vector512.Create(lrT), ep = Vector512.Create(eps);
                for (; i + 16 <= e; i += 16)
                {
                    var gi = Vector512.Load(pg + i);
                    var mi = b1 * Vector512.Load(pm + i) + c1 * gi;
                    var vi = b2 * Vector512.Load(pv + i) + c2 * gi * gi;
                    var pi = Vector512.Load(pp + i) - lr * mi / (Vector512.Sqrt(vi) + ep);
                    mi.Store(pm + i);
                    vi.Store(pv + i);
                    pi.Store(pp + i);
                    if (count != null) local += NonFiniteLanes(pi) + NonFiniteLanes(mi) + NonFiniteLanes(vi);
                }
            }
            else if (Vector256.IsHardwareAccelerated)
            {
                // The same with 8 lanes (AVX2): the scalar loop's operations in its order, so the same bits.
                Vector256<float> b1 = Vector256.Create(beta1), c1 = Vector256.Create(1 - beta1);
                Vector256<float> b2 = Vector256.Create(beta2), c2 = Vector256.Create(1 - beta2);
                Vector256<float> lr = Vector256.Create(lrT), ep = Vector256.Create(eps);
                for (; i + 8 <= e; i += 8)
                {
                    var gi = Vector256.Load(pg + i);
                    var mi = b1 * Vector256.Load(pm + i) + c1 * gi;
                    var vi = b2 * Vector256.Load(pv + i) + c2 * gi * gi;
                    var pi = Vector256.Load(pp + i) - lr * mi / (Vector256.Sqrt(vi) + ep);
                    mi.Store(pm + i);
                    vi.Store(pv + i);
                    pi.Store(pp + i);
                    if (count != null) local += NonFiniteLanes(pi) + NonFiniteLanes(mi) + NonFiniteLanes(vi);
                }
            }
            for (; i < e; i++)
            {
                float gi = pg[i];
                float mi = beta1 * pm[i] + (1 - beta1) * gi;
                float vi = beta2 * pv[i] + (1 - beta2) * gi * gi;
                float pi = pp[i] - lrT * mi / (MathF.Sqrt(vi) + eps);
                pm[i] = mi; pv[i] = vi; pp[i] = pi;
                if (count != null) local += NonFinite(pi) + NonFinite(mi) + NonFinite(vi);
            }
            if (local != 0) Interlocked.Add(ref *count, local);
        }
    }

    private static int NonFinite(float x) => float.IsFinite(x) ? 0 : 1;

    /// <summary>How many of the 16 lanes are NaN or infinite (exponent bits all ones).</summary>
    private static int NonFiniteLanes(Vector512<float> v)
    {
        var exponent = Vector512.Create(0x7f800000u);
        return BitOperations.PopCount(Vector512.Equals(v.AsUInt32() & exponent, exponent).ExtractMostSignificantBits());
    }

    /// <summary>How many of the 8 lanes are NaN or infinite.</summary>
    private static int NonFiniteLanes(Vector256<float> v)
    {
        var exponent = Vector256.Create(0x7f800000u);
        return BitOperations.PopCount(Vector256.Equals(v.AsUInt32() & exponent, exponent).ExtractMostSignificantBits());
    }

    public void EmaUpdate(DeviceBuffer ema, DeviceBuffer p, long n, float beta, DeviceBuffer skip, DeviceBuffer nonFiniteCount = default)
    {
        if (!nonFiniteCount.IsNull) CheckLength(nonFiniteCount, 2, nameof(EmaUpdate));
        if (!Skipped(skip)) CpuParallel.For(n, ElementGrain, new EmaLoop(P(ema), P(p), beta, (long*)P(nonFiniteCount)));
    }

    private readonly struct EmaLoop(float* pe, float* pp, float beta, long* count) : IRangeBody
    {
        public void Run(long s, long e)
        {
            long local = 0;
            long i = s;
            if (Vector512.IsHardwareAccelerated)
            {
                var b = Vector512.Create(beta);
                for (; i + 16 <= e; i += 16)
                {
                    var p = Vector512.Load(pp + i);
                    var v = p + b * (Vector512.Load(pe + i) - p);
                    v.Store(pe + i);
                    if (count != null) local += NonFiniteLanes(v);
                }
            }
            for (; i < e; i++)
            {
                float v = pp[i] + beta * (pe[i] - pp[i]);
                pe[i] = v;
                if (count != null) local += NonFinite(v);
            }
            if (local != 0) Interlocked.Add(ref *count, local);
        }
    }

    public void CountNonFinite(DeviceBuffer x, long n, DeviceBuffer count)
    {
        CheckLength(count, 2, nameof(CountNonFinite));
        // The chunks add their counts to the 64-bit counter: the loop returns only when all of them are done.
        CpuParallel.For(n, ElementGrain, new CountNonFiniteLoop(P(x), (long*)P(count)));
    }

    private readonly struct CountNonFiniteLoop(float* px, long* total) : IRangeBody
    {
        public void Run(long s, long e)
        {
            long local = 0;
            for (long i = s; i < e; i++) if (!float.IsFinite(px[i])) local++;
            Interlocked.Add(ref *total, local);
        }
    }
}
