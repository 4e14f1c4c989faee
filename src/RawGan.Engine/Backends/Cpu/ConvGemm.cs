namespace RawGan.Engine.Backends.Cpu;

// Convolution as implicit GEMM (see Sgemm.cs): the im2col matrix is never built; the packers read
// the image directly.
//
//   forward         y[s, co, p]      = scale sum over (ci, dy, dx) of w[co, ci, dy, dx] x[s, ci, p + d - pad]
//                   A = w [cout, cin k k], B = im2col(x) [cin k k, batch * pixels], C = y
//   input gradient  the same product with w transposed and flipped: gx = conv(gy, w'),
//                   w'[ci, co, dy, dx] = w[co, ci, k - 1 - dy, k - 1 - dx]
//   weight gradient gw[co, (ci, dy, dx)] = scale sum over (s, p) of gy[s, co, p] x[s, ci, p + d - pad]
//                   A = gy as [cout, batch * pixels], B = im2col(x)^T, C = gw
// Every sample of the batch is one GEMM, so even 4x4 layers give the cores wide matrices.

/// <summary>op(B)[(ci, dy, dx), (s, p)] = x[s, ci, py + dy - pad, px + dx - pad] (0 outside the image).</summary>
internal readonly unsafe struct Im2ColB(float* x, int cin, int h, int w, int k) : IPackB
{
    public void Pack(float* dst, int k0, int kc, int j0, int n)
    {
        int plane = h * w, pad = k / 2, cols = Math.Min(Sgemm.NR, n - j0);
        int s0 = j0 / plane, pix0 = j0 % plane;
        for (int p = 0; p < kc; p++)
        {
            int kk = k0 + p, ci = kk / (k * k), dy = kk / k % k - pad, dx = kk % k - pad;
            float* d = dst + p * Sgemm.NR;
            int s = s0, py = pix0 / w, px = pix0 % w;
            // The strip is a run of pixels: copy it an image row at a time, zeros where the
            // shifted row or column falls outside the image (the 'same' padding).
            for (int c = 0; c < cols;)
            {
                int run = Math.Min(cols - c, w - px);
                int sy = py + dy;
                if ((uint)sy >= (uint)h) new Span<float>(d + c, run).Clear();
                else
                {
                    float* src = x + ((long)s * cin + ci) * plane + sy * w;
                    int lo = Math.Max(px, -dx), hi = Math.Min(px + run, w - dx);   // valid px range: 0 <= px + dx < w
                    int t = 0;
                    for (; t < run && px + t < lo; t++) d[c + t] = 0f;
                    if (hi > lo)
                    {
                        new ReadOnlySpan<float>(src + lo + dx, hi - lo).CopyTo(new Span<float>(d + c + (lo - px), hi - lo));
                        t = hi - px;
                    }
                    for (; t < run; t++) d[c + t] = 0f;
                }
                c += run;
                px += run;
                if (px == w)
                {
                    px = 0;
                    if (++py == h) { py = 0; s++; }
                }
            }
            for (int c = cols; c < Sgemm.NR; c++) d[c] = 0f;
        }
    }

    /// <summary>A 1x1 convolution's op(B) is x itself, [cin, pixels] per sample: a strip within one sample is in place.</summary>
    public float* InPlace(int j0, int n, out long ldb)
    {
        int plane = h * w, pix0 = j0 % plane;
        ldb = plane;
        return k == 1 && j0 + Sgemm.NR <= n && pix0 + Sgemm.NR <= plane ? x + (long)(j0 / plane) * cin * plane + pix0 : null;
    }
}

/// <summary>op(B)[(s, p), (ci, dy, dx)] = x[s, ci, py + dy - pad, px + dx - pad]: im2col transposed, for the weight gradient.</summary>
internal readonly unsafe struct Im2ColTransposedB(float* x, int cin, int h, int w, int k) : IPackB
{
    public void Pack(float* dst, int k0, int kc, int j0, int n)
    {
        int plane = h * w, pad = k / 2, kk2 = k * k, cols = Math.Min(Sgemm.NR, n - j0);
        // The columns of the strip, decoded once: channel offset and tap (dy, dx) of each.
        int* offset = stackalloc int[Sgemm.NR], dy = stackalloc int[Sgemm.NR], dx = stackalloc int[Sgemm.NR];
        for (int c = 0; c < cols; c++)
        {
            int j = j0 + c, r = j % kk2;
            offset[c] = j / kk2 * plane;
            dy[c] = r / k - pad;
            dx[c] = r % k - pad;
        }
        int row = k0, s = row / plane, pix = row % plane, py = pix / w, px = pix % w;
        for (int p = 0; p < kc; p++)
        {
            float* sample = x + (long)s * cin * plane;
            float* d = dst + p * Sgemm.NR;
            for (int c = 0; c < cols; c++)
            {
                int sy = py + dy[c], sx = px + dx[c];
                d[c] = (uint)sy < (uint)h && (uint)sx < (uint)w ? sample[offset[c] + sy * w + sx] : 0f;
            }
            for (int c = cols; c < Sgemm.NR; c++) d[c] = 0f;
            if (++px == w)
            {
                px = 0;
                if (++py == h) { py = 0; s++; }
            }
        }
    }

    /// <summary>Its rows run over pixels and its columns over taps: never a run in memory.</summary>
    public float* InPlace(int j0, int n, out long ldb)
    {
        ldb = 0;
        return null;
    }
}

/// <summary>op(A)[co, (s, p)] = g[s, co, p]: a batch of [channels, pixels] maps read as one wide matrix.</summary>
internal readonly unsafe struct BatchedMapsA(float* g, int channels, int plane) : IPackA
{
    public void Pack(float* dst, int i0, int k0, int kc, int m)
    {
        int rows = Math.Min(Sgemm.MR, m - i0);
        if (rows < Sgemm.MR) new Span<float>(dst, kc * Sgemm.MR).Clear();
        for (int r = 0; r < rows; r++)
        {
            int s = k0 / plane, pix = k0 % plane;
            float* src = g + ((long)s * channels + i0 + r) * plane + pix;
            for (int p = 0; p < kc; p++)
            {
                dst[p * Sgemm.MR + r] = *src++;
                if (++pix == plane)
                {
                    pix = 0;
                    src += (long)(channels - 1) * plane;
                }
            }
        }
    }
}

/// <summary>C[co, (s, p)] at y[s, co, p]: the output maps of a convolution.</summary>
internal readonly unsafe struct BatchedMapsC(float* y, int channels, int plane) : ICLayout
{
    public float* Base => y;
    public long Row(int i) => (long)i * plane;
    public long Column(int j) => (long)(j / plane) * channels * plane + j % plane;
    public bool Contiguous(int j0, int count) => j0 % plane + count <= plane;
    public void FillColumns(int j0, int count, long* columns)
    {
        int s = j0 / plane, p = j0 % plane;
        long sample = (long)s * channels * plane;
        for (int c = 0; c < count; c++)
        {
            columns[c] = sample + p;
            if (++p == plane) { p = 0; sample += (long)channels * plane; }
        }
    }
}

internal static unsafe class ConvGemm
{
    /// <summary>y = scale conv(x, w), then the epilogue of each output channel (C's rows), in the GEMM's store.</summary>
    public static void Forward(float* x, float* w, float* y, int n, int cin, int h, int wd, int cout, int k, float scale, Epilogue epilogue, bool wide)
    {
        int plane = h * wd;
        Sgemm.Multiply(cout, n * plane, cin * k * k, scale,
            new DenseA(w, cin * k * k, false), new Im2ColB(x, cin, h, wd, k), 0f, new BatchedMapsC(y, cout, plane), epilogue, wide);
    }

    /// <summary>w'[ci, co, dy, dx] = w[co, ci, k - 1 - dy, k - 1 - dx]: the kernel whose forward
    /// convolution of gy is the input gradient.</summary>
    public static void Flip(float* w, float* flipped, int cin, int cout, int k)
    {
        int kk = k * k;
        for (int co = 0; co < cout; co++)
            for (int ci = 0; ci < cin; ci++)
                for (int t = 0; t < kk; t++)
                    flipped[((long)ci * cout + co) * kk + (kk - 1 - t)] = w[((long)co * cin + ci) * kk + t];
    }

    public static void BackwardWeight(float* x, float* gy, float* gw, int n, int cin, int h, int wd, int cout, int k, float scale, bool wide)
    {
        int plane = h * wd;
        Sgemm.Multiply(cout, cin * k * k, n * plane, scale,
            new BatchedMapsA(gy, cout, plane), new Im2ColTransposedB(x, cin, h, wd, k), 0f, new DenseC(gw, cin * k * k), Epilogue.None, wide);
    }
}
