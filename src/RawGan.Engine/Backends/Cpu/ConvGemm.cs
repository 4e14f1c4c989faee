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
    public static void Forward(float* x, float* w, float* y, int n, int cin, int h, int wd, int cout, int k, float scale)
    {
        int plane = h * wd;
        Sgemm.Multiply(cout, n * plane, cin * k * k, scale,
            new DenseA(w, cin * k * k, false), new Im2ColB(x, cin, h, wd, k), 0f, new BatchedMapsC(y, cout, plane));
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

    public static void BackwardWeight(float* x, float* gy, float* gw, int n, int cin, int h, int wd, int cout, int k, float scale)
    {
        int plane = h * wd;
        Sgemm.Multiply(cout, cin * k * k, n * plane, scale,
            new BatchedMapsA(gy, cout, plane), new Im2ColTransposedB(x, cin, h, wd, k), 0f, new DenseC(gw, cin * k * k));
    }
}

// ---------------------------------------------------------------------------------------------
// Convolution on a padded copy of the input. The input is copied once, channel-major across the
// batch, into xp[ci][s][h + 2 pad][w + 2 pad] with zero borders. In that layout the im2col row of
// tap (ci, dy, dx) is simply the contiguous run of xp starting dy * wp + dx floats after channel
// ci's start: every "column" q is a position of the padded batch, q = (s hp + y) wp + x. So the
// GEMM packs B by copying runs (no per-element bounds checks), computes a few junk columns where
// x >= w or y >= h (the price of the borders: 11% at 32x32, more at 4x4 where it does not
// matter), and the writer drops them.
// ---------------------------------------------------------------------------------------------

/// <summary>op(B)[(ci, dy, dx), q] = xp[offset(ci, dy, dx) + q]: shifted runs of the padded input.</summary>
internal readonly unsafe struct ShiftedRowsB(float* xp, int* offsets) : IPackB
{
    public void Pack(float* dst, int k0, int kc, int j0, int n)
    {
        int cols = Math.Min(Sgemm.NR, n - j0);
        for (int p = 0; p < kc; p++)
        {
            float* src = xp + offsets[k0 + p] + j0;
            float* d = dst + p * Sgemm.NR;
            if (cols == Sgemm.NR)
            {
                for (int v = 0; v < Sgemm.NR; v += 16)
                    System.Runtime.Intrinsics.Vector512.Store(System.Runtime.Intrinsics.Vector512.Load(src + v), d + v);
            }
            else
            {
                new ReadOnlySpan<float>(src, cols).CopyTo(new Span<float>(d, cols));
                new Span<float>(d + cols, Sgemm.NR - cols).Clear();
            }
        }
    }
}

/// <summary>op(A)[(ci, dy, dx), q] = xp[offset(ci, dy, dx) + q]: the same runs as rows of A (weight gradient).</summary>
internal readonly unsafe struct ShiftedRowsA(float* xp, int* offsets) : IPackA
{
    public void Pack(float* dst, int i0, int k0, int kc, int m)
    {
        int rows = Math.Min(Sgemm.MR, m - i0);
        if (rows < Sgemm.MR) new Span<float>(dst, kc * Sgemm.MR).Clear();
        for (int r = 0; r < rows; r++)
        {
            float* src = xp + offsets[i0 + r] + k0;
            for (int p = 0; p < kc; p++) dst[p * Sgemm.MR + r] = src[p];
        }
    }
}

/// <summary>C[co, q] at y[s, co, y, x] for the padded-batch position q = (s hp + y) wp + x; junk positions are dropped.</summary>
internal readonly unsafe struct PaddedMapsC(float* y, int channels, int h, int w, int hp, int wp) : ICLayout
{
    public float* Base => y;
    public long Row(int i) => (long)i * h * w;
    public long Column(int q)
    {
        int plane = hp * wp, s = q / plane, r = q % plane, py = r / wp, px = r % wp;
        return py < h && px < w ? (long)s * channels * h * w + py * w + px : -1;
    }
    public bool Contiguous(int j0, int count) => false;
    public void FillColumns(int q0, int count, long* columns)
    {
        int plane = hp * wp, s = q0 / plane, r = q0 % plane, py = r / wp, px = r % wp;
        long sample = (long)s * channels * h * w;
        for (int c = 0; c < count; c++)
        {
            columns[c] = py < h && px < w ? sample + py * w + px : -1;
            if (++px == wp)
            {
                px = 0;
                if (++py == hp) { py = 0; sample += (long)channels * h * w; }
            }
        }
    }
}

internal static unsafe class PaddedConv
{
    /// <summary>Floats of the padded copy of [n, c, h, w], including a tail that the last strip may read.</summary>
    public static long PaddedLength(int n, int c, int h, int w, int k)
    {
        int pad = k / 2;
        return (long)c * n * (h + 2 * pad) * (w + 2 * pad) + (2L * pad * (w + 2 * pad) + 2 * pad) + Sgemm.NR;
    }

    /// <summary>xp[c][s][pad + y][pad + x] = x[s][c][y][x], zeros elsewhere.</summary>
    public static void Pad(float* x, float* xp, int n, int c, int h, int w, int k, long length)
    {
        int pad = k / 2, hp = h + 2 * pad, wp = w + 2 * pad;
        long plane = (long)hp * wp;
        new Span<float>(xp + (long)c * n * plane, (int)(length - (long)c * n * plane)).Clear();
        CpuParallel.For((long)c * n, 8, (p0, p1) =>
        {
            for (long p = p0; p < p1; p++)
            {
                long ch = p / n, s = p % n;
                float* dst = xp + p * plane;
                float* src = x + (s * c + ch) * h * w;
                new Span<float>(dst, pad * wp + pad).Clear();
                for (int yy = 0; yy < h; yy++)
                {
                    float* row = dst + (yy + pad) * wp + pad;
                    new ReadOnlySpan<float>(src + yy * w, w).CopyTo(new Span<float>(row, w));
                    new Span<float>(row + w, 2 * pad).Clear();   // right border of this row, left border of the next
                }
                new Span<float>(dst + (h + pad) * wp + pad, (int)(plane - ((h + pad) * wp + pad))).Clear();
            }
        });
    }

    /// <summary>Start of tap (ci, dy, dx)'s run in xp, for every im2col row.</summary>
    public static void Offsets(int* offsets, int n, int c, int h, int w, int k)
    {
        int pad = k / 2, wp = w + 2 * pad;
        long plane = (long)(h + 2 * pad) * wp;
        for (int ci = 0; ci < c; ci++)
            for (int dy = 0; dy < k; dy++)
                for (int dx = 0; dx < k; dx++)
                    offsets[(ci * k + dy) * k + dx] = checked((int)(ci * n * plane + dy * wp + dx));
    }

    /// <summary>y = conv(x, scale w): GEMM of the weights [cout, cin k k] with the shifted runs of xp.</summary>
    public static void Forward(float* xp, int* offsets, float* w, float* y, int n, int cin, int h, int wd, int cout, int k, float scale)
    {
        int pad = k / 2, hp = h + 2 * pad, wp = wd + 2 * pad;
        // The last stored position is the bottom-right pixel of the last sample.
        int columns = (n - 1) * hp * wp + (h - 1) * wp + wd;
        Sgemm.Multiply(cout, columns, cin * k * k, scale, new DenseA(w, cin * k * k, false), new ShiftedRowsB(xp, offsets), 0f,
            new PaddedMapsC(y, cout, h, wd, hp, wp));
    }

    /// <summary>gw^T[(ci, dy, dx), co] = scale sum over q of xp[offset + q] gyp[co, q], where gyp is gy
    /// in the padded-batch layout (zero at junk positions).</summary>
    public static void WeightGradientTransposed(float* xp, int* offsets, float* gyp, float* gwT, int n, int cin, int h, int wd, int cout, int k, float scale)
    {
        int pad = k / 2, hp = h + 2 * pad, wp = wd + 2 * pad;
        int positions = n * hp * wp;
        Sgemm.Multiply(cin * k * k, cout, positions, scale, new ShiftedRowsA(xp, offsets), new DenseB(gyp, positions, true), 0f,
            new DenseC(gwT, cout));
    }

    /// <summary>gyp[co][s][y][x] = gy[s][co][y][x] for y &lt; h, x &lt; w, zeros elsewhere (no borders before the data).</summary>
    public static void PadOutputGradient(float* gy, float* gyp, int n, int cout, int h, int w, int k)
    {
        int pad = k / 2, hp = h + 2 * pad, wp = w + 2 * pad;
        long plane = (long)hp * wp;
        CpuParallel.For((long)cout * n, 8, (p0, p1) =>
        {
            for (long p = p0; p < p1; p++)
            {
                long co = p / n, s = p % n;
                float* dst = gyp + p * plane;
                float* src = gy + (s * cout + co) * h * w;
                new Span<float>(dst, (int)plane).Clear();
                for (int yy = 0; yy < h; yy++)
                    new ReadOnlySpan<float>(src + yy * w, w).CopyTo(new Span<float>(dst + yy * wp, w));
            }
        });
    }
}
