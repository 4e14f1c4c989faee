using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace RawGan.Engine.Backends.Cpu;

// ---------------------------------------------------------------------------------------------
// Winograd F(2x2, 3x3): a 3x3 convolution (stride 1, 'same' padding) with 2.25x fewer multiplies.
//
// Cut the output into 2x2 tiles. Tile (ty, tx) of output map co needs the 4x4 input patch
// d[r, c] = x[2ty - 1 + r, 2tx - 1 + c] of every channel ci (0 outside the image). In one
// dimension, two outputs of a 3-tap correlation take four multiplies instead of six:
//
//   y = A^T [ (G g) * (B^T d) ]            (* elementwise)
//
//          | 1  0 -1  0 |          | 1    0    0  |          | 1  1  1  0 |
//   B^T =  | 0  1  1  0 |     G =  | 1/2  1/2  1/2|    A^T = | 0  1 -1 -1 |
//          | 0 -1  1  0 |          | 1/2 -1/2  1/2|
//          | 0  1  0 -1 |          | 0    0    1  |
//
// and nested in two dimensions, Y = A^T [ U * V ] A with U = G g G^T and V = B^T d B (4x4 each).
// Summing over input channels happens in the transformed domain, where it is 16 independent
// matrix products, one per position xi of the 4x4 tile:
//
//   M[xi][co, t] = sum over ci of U[xi][co, ci] V[xi][ci, t]        (t: the tiles)
//
// 16 products of (cout x cin) (cin x tiles) replace one of (cout x 9 cin) (9 cin x 4 tiles):
// 16 / 36 of the multiplies. The transforms are additions only (the halves are folded into U).
//
// How it runs: the filters are transformed once per call, straight into the GEMM micro-kernel's
// packed-A layout (Sgemm.cs). The tiles are cut into blocks of NR = 64; each core takes whole
// blocks, and for each block it
//   1. transforms the input patches into V, written directly as 16 packed-B panels [cin x 64];
//   2. runs the micro-kernel on (U[xi], V[xi]) for every strip of MR output channels, with K = cin
//      (no K blocking: a panel is at most cin x 64 floats);
//   3. transforms M back (16 values -> a 2x2 output tile), 16 tiles at a time in AVX-512 lanes,
//      adding a layer's bias and leaky ReLU there when asked (Epilogue.cs) before the store.
// Nothing of size batch x tiles is ever materialized, so a block's V and M stay in the core's L2.
//
// The input gradient is the forward convolution of gy with the flipped, transposed kernel. The
// weight gradient is the adjoint of the same formula:
//
//   dU[xi][co, ci] = sum over tiles of (A dY A^T)[xi][co, t] V[xi][ci, t],   dg = G^T dU G
//
// 16 products with K = the tiles (long), accumulated per core and summed at the end.
// ---------------------------------------------------------------------------------------------

internal static unsafe partial class Winograd
{
    private const int MR = Sgemm.MR, TB = Sgemm.NR;   // a block of tiles is one micro-kernel width
    private const int WeightBlock = 256;                // tiles per block of the weight gradient (its K)

    private static int RoundUp(int v, int m) => (v + m - 1) / m * m;

    /// <summary>Floats of the transformed, packed filters that <see cref="Forward"/> needs.</summary>
    public static long PackedFilterLength(int cin, int cout) => 16L * RoundUp(cout, MR) * cin;

    /// <summary>Floats of scratch that <see cref="BackwardWeight"/> needs for <paramref name="threads"/> cores.</summary>
    public static long WeightScratchLength(int cin, int cout, int threads) => (long)threads * 36 * RoundUp(cout, DotRows) * RoundUp(cin, DotColumns);

    [ThreadStatic] private static float* _scratch;
    [ThreadStatic] private static long _scratchLength;

    private static float* Scratch(long floats)
    {
        if (_scratchLength < floats)
        {
            if (_scratch != null) NativeMemory.AlignedFree(_scratch);
            _scratch = (float*)NativeMemory.AlignedAlloc((nuint)(floats * sizeof(float)), 64);
            _scratchLength = floats;
        }
        return _scratch;
    }

    /// <summary>The position of each tile of a block: its sample and the top-left output pixel.</summary>
    private struct TileBlock
    {
        public fixed int Sample[WeightBlock];
        public fixed int Y[WeightBlock];
        public fixed int X[WeightBlock];
        public int Count, Size;

        /// <summary>Tiles t0 .. t0 + count - 1 of a batch cut into tilesY x tilesX tiles of size x size outputs.</summary>
        public void Decode(long t0, int count, int tilesY, int tilesX, int size = 2)
        {
            Count = count;
            Size = size;
            int perSample = tilesY * tilesX;
            int s = (int)(t0 / perSample), r = (int)(t0 % perSample), ty = r / tilesX, tx = r % tilesX;
            for (int j = 0; j < count; j++)
            {
                Sample[j] = s;
                Y[j] = size * ty;
                X[j] = size * tx;
                if (++tx == tilesX)
                {
                    tx = 0;
                    if (++ty == tilesY) { ty = 0; s++; }
                }
            }
        }
    }

    // ----------------------------------------------------------------------------- forward

    /// <summary>y = scale conv3x3(x, w) (w: [cout, cin, 3, 3]), then the epilogue; <paramref name="packed"/> is scratch of
    /// <see cref="PackedFilterLength"/>.</summary>
    public static void Forward(float* x, float* w, float* packed, float* y, int n, int cin, int h, int wd, int cout, float scale, Epilogue epilogue = default)
    {
        TransformFilters(w, packed, cin, cout, scale);
        int tilesY = (h + 1) / 2, tilesX = (wd + 1) / 2, coutPad = RoundUp(cout, MR);
        long tiles = (long)n * tilesY * tilesX;
        long blocks = (tiles + TB - 1) / TB;
        CpuParallel.For(blocks, 1, new ForwardLoop(x, packed, y, cin, h, wd, cout, tilesY, tilesX, tiles, f4: false, epilogue));
    }

    /// <summary>Forward blocks [b0, b1): transform the inputs, 16 (or 36) x (cout / MR) micro-kernel calls, transform back.</summary>
    private readonly struct ForwardLoop(float* x, float* packed, float* y, int cin, int h, int wd, int cout, int tilesY, int tilesX, long tiles, bool f4,
        Epilogue epilogue) : IRangeBody
    {
        public void Run(long b0, long b1)
        {
            int coutPad = RoundUp(cout, MR), planes = f4 ? 36 : 16;
            float* v = Scratch((long)planes * TB * (cin + coutPad));
            float* m = v + (long)planes * TB * cin;
            TileBlock block = default;
            for (long b = b0; b < b1; b++)
            {
                long t0 = b * TB;
                block.Decode(t0, (int)Math.Min(TB, tiles - t0), tilesY, tilesX, f4 ? 4 : 2);
                if (f4) TransformInputRowsF4(x, v, ref block, cin, cin, h, wd, tilesX, TB);
                else TransformInputRows(x, v, ref block, cin, cin, h, wd, tilesX, TB);
                for (int xi = 0; xi < planes; xi++)
                    for (int co = 0; co < coutPad; co += MR)
                        Sgemm.Kernel(cin, packed + ((long)xi * coutPad + co) * cin, v + (long)xi * cin * TB, m + ((long)xi * coutPad + co) * TB);
                if (f4) TransformOutputRowsF4(m, y, ref block, cout, coutPad, h, wd, tilesX, epilogue);
                else TransformOutputRows(m, y, ref block, cout, coutPad, h, wd, tilesX, epilogue);
            }
        }
    }

    /// <summary>U[xi] = scale G g G^T for every (co, ci), stored as the micro-kernel's A panels:
    /// packed[(xi coutPad + co0) cin + ci MR + r] = U[xi][co0 + r, ci] (co0 a multiple of MR; 0 past cout).</summary>
    private static void TransformFilters(float* w, float* packed, int cin, int cout, float scale) =>
        CpuParallel.For(RoundUp(cout, MR), MR, new FilterLoop(w, packed, cin, cout, scale));

    private readonly struct FilterLoop(float* w, float* packed, int cin, int cout, float scale) : IRangeBody
    {
        public void Run(long c0, long c1)
        {
            int coutPad = RoundUp(cout, MR);
            float* u = stackalloc float[16];
            for (long co = c0; co < c1; co++)
            {
                long strip = co - co % MR;
                int r = (int)(co % MR);
                for (int ci = 0; ci < cin; ci++)
                {
                    if (co < cout) FilterTransform(w + (co * cin + ci) * 9, u, scale);
                    else new Span<float>(u, 16).Clear();
                    for (int xi = 0; xi < 16; xi++)
                        packed[((long)xi * coutPad + strip) * cin + ci * MR + r] = u[xi];
                }
            }
        }
    }

    /// <summary>u = scale G g G^T for one 3x3 filter g (row-major), u row-major 4x4.</summary>
    private static void FilterTransform(float* g, float* u, float scale)
    {
        float* t = stackalloc float[12];   // G g: 4 rows of 3
        for (int c = 0; c < 3; c++)
        {
            float g0 = g[c], g1 = g[3 + c], g2 = g[6 + c];
            t[c] = g0;
            t[3 + c] = 0.5f * (g0 + g1 + g2);
            t[6 + c] = 0.5f * (g0 - g1 + g2);
            t[9 + c] = g2;
        }
        for (int r = 0; r < 4; r++)
        {
            float g0 = t[3 * r], g1 = t[3 * r + 1], g2 = t[3 * r + 2];
            u[4 * r] = scale * g0;
            u[4 * r + 1] = scale * 0.5f * (g0 + g1 + g2);
            u[4 * r + 2] = scale * 0.5f * (g0 - g1 + g2);
            u[4 * r + 3] = scale * g2;
        }
    }

    // The forward transforms work on runs of up to 16 tiles of one tile row, one tile per AVX-512
    // lane. The 4x4 patches of a run overlap (tile t starts two columns after tile t - 1), so
    // column c of all 16 patches is every other element of one image row from 2 tx0 - 1 + c:
    // two loads and one two-source permute (vpermt2ps) per column. Masked loads read zeros
    // outside the image, masked stores write only inside it: no tile needs a special case.

    private static readonly Vector512<int> Lanes = Vector512<int>.Indices;
    private static readonly Vector512<int> Even = Lanes * 2, Odd = Lanes * 2 + Vector512<int>.One;
    private static readonly Vector512<int> InterleaveLow = Vector512.Create(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    private static readonly Vector512<int> InterleaveHigh = InterleaveLow + Vector512.Create(8);

    /// <summary>Lanes l with lo &lt;= start + l &lt; hi, as a load/store mask.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Between(int start, int lo, int hi)
    {
        var col = Lanes + Vector512.Create(start);
        return (Vector512.GreaterThanOrEqual(col, Vector512.Create(lo)) & Vector512.LessThan(col, Vector512.Create(hi))).AsSingle();
    }

    /// <summary>The length of the run of tiles starting at block position j: at most 16, within one tile row.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int RunLength(ref TileBlock block, int j, int tilesX) => Math.Min(Math.Min(16, block.Count - j), tilesX - block.X[j] / block.Size);

    /// <summary>V = B^T d B for the block: v[(xi cinPad + ci) width + j]. For the forward products
    /// (width TB) these are the micro-kernel's B panels. Rows past cin, and lanes past the block's
    /// count up to a multiple of 16, are zero.</summary>
    private static void TransformInputRows(float* x, float* v, ref TileBlock block, int cin, int cinPad, int h, int wd, int tilesX, int width)
    {
        long plane = (long)h * wd, xiStride = (long)cinPad * width;
        ClearPadding(v, ref block, cin, cinPad, width);
        for (int j = 0; j < block.Count;)
        {
            int run = RunLength(ref block, j, tilesX);
            int c0 = block.X[j] - 1, iy0 = block.Y[j] - 1, end = Math.Min(wd, c0 + 2 * run + 2);
            // Columns 0 and 1 of the patches come from image columns c0 .. c0 + 31, columns 2 and 3 from c0 + 2 .. c0 + 33.
            Vector512<float> mask0 = Between(c0, 0, end), mask1 = Between(c0 + 16, 0, end);
            Vector512<float> mask2 = Between(c0 + 2, 0, end), mask3 = Between(c0 + 18, 0, end);
            var store = Vector512.LessThan(Lanes, Vector512.Create(run)).AsSingle();
            for (int ci = 0; ci < cin; ci++)
            {
                float* src = x + (block.Sample[j] * (long)cin + ci) * plane;
                LoadRow(src, iy0, h, wd, c0, mask0, mask1, mask2, mask3, out var d00, out var d01, out var d02, out var d03);
                LoadRow(src, iy0 + 1, h, wd, c0, mask0, mask1, mask2, mask3, out var d10, out var d11, out var d12, out var d13);
                LoadRow(src, iy0 + 2, h, wd, c0, mask0, mask1, mask2, mask3, out var d20, out var d21, out var d22, out var d23);
                LoadRow(src, iy0 + 3, h, wd, c0, mask0, mask1, mask2, mask3, out var d30, out var d31, out var d32, out var d33);
                float* dst = v + (long)ci * width + j;
                // Rows of B^T d, then (B^T d) B along each row.
                StoreColumns(d00 - d20, d01 - d21, d02 - d22, d03 - d23, dst, 0, xiStride, store);
                StoreColumns(d10 + d20, d11 + d21, d12 + d22, d13 + d23, dst, 4, xiStride, store);
                StoreColumns(d20 - d10, d21 - d11, d22 - d12, d23 - d13, dst, 8, xiStride, store);
                StoreColumns(d10 - d30, d11 - d31, d12 - d32, d13 - d33, dst, 12, xiStride, store);
            }
            j += run;
        }
    }

    /// <summary>Columns 0..3 of the run's patches in image row iy (zeros outside the image).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void LoadRow(float* src, int iy, int h, int wd, int c0, Vector512<float> mask0, Vector512<float> mask1,
        Vector512<float> mask2, Vector512<float> mask3, out Vector512<float> d0, out Vector512<float> d1, out Vector512<float> d2, out Vector512<float> d3)
    {
        if ((uint)iy >= (uint)h)
        {
            d0 = d1 = d2 = d3 = Vector512<float>.Zero;
            return;
        }
        float* row = src + (long)iy * wd + c0;
        var a = Avx512F.MaskLoad(row, mask0, Vector512<float>.Zero);
        var b = Avx512F.MaskLoad(row + 16, mask1, Vector512<float>.Zero);
        var c = Avx512F.MaskLoad(row + 2, mask2, Vector512<float>.Zero);
        var d = Avx512F.MaskLoad(row + 18, mask3, Vector512<float>.Zero);
        d0 = Avx512F.PermuteVar16x32x2(a, Even, b);
        d1 = Avx512F.PermuteVar16x32x2(a, Odd, b);
        d2 = Avx512F.PermuteVar16x32x2(c, Even, d);
        d3 = Avx512F.PermuteVar16x32x2(c, Odd, d);
    }

    /// <summary>[t0 - t2, t1 + t2, t2 - t1, t1 - t3] (one row of V) into xi0 .. xi0 + 3.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreColumns(Vector512<float> t0, Vector512<float> t1, Vector512<float> t2, Vector512<float> t3,
        float* dst, int xi0, long xiStride, Vector512<float> store)
    {
        Avx512F.MaskStore(dst + xi0 * xiStride, store, t0 - t2);
        Avx512F.MaskStore(dst + (xi0 + 1) * xiStride, store, t1 + t2);
        Avx512F.MaskStore(dst + (xi0 + 2) * xiStride, store, t2 - t1);
        Avx512F.MaskStore(dst + (xi0 + 3) * xiStride, store, t1 - t3);
    }

    /// <summary>Y = A^T M A for every (co, tile) of the block, a run of tiles per vector; the two
    /// output columns of each tile are interleaved into image rows and stored where inside the image.</summary>
    private static void TransformOutputRows(float* m, float* y, ref TileBlock block, int cout, int coutPad, int h, int wd, int tilesX, Epilogue epilogue)
    {
        long plane = (long)h * wd, xiStride = (long)coutPad * TB;
        for (int j = 0; j < block.Count;)
        {
            int run = RunLength(ref block, j, tilesX);
            int ox = block.X[j], oy = block.Y[j], end = Math.Min(wd, ox + 2 * run);
            Vector512<float> maskLow = Between(ox, 0, end), maskHigh = Between(ox + 16, 0, end);
            bool down = oy + 1 < h;
            for (int co = 0; co < cout; co++)
            {
                float* src = m + (long)co * TB + j;
                // Rows of A^T M: s0 = M0 + M1 + M2, s1 = M1 - M2 - M3 (Mr: row r, four columns).
                var m1c0 = Vector512.Load(src + 4 * xiStride); var m2c0 = Vector512.Load(src + 8 * xiStride);
                var m1c1 = Vector512.Load(src + 5 * xiStride); var m2c1 = Vector512.Load(src + 9 * xiStride);
                var m1c2 = Vector512.Load(src + 6 * xiStride); var m2c2 = Vector512.Load(src + 10 * xiStride);
                var m1c3 = Vector512.Load(src + 7 * xiStride); var m2c3 = Vector512.Load(src + 11 * xiStride);
                Vector512<float> s00 = Vector512.Load(src) + m1c0 + m2c0, s10 = m1c0 - m2c0 - Vector512.Load(src + 12 * xiStride);
                Vector512<float> s01 = Vector512.Load(src + xiStride) + m1c1 + m2c1, s11 = m1c1 - m2c1 - Vector512.Load(src + 13 * xiStride);
                Vector512<float> s02 = Vector512.Load(src + 2 * xiStride) + m1c2 + m2c2, s12 = m1c2 - m2c2 - Vector512.Load(src + 14 * xiStride);
                Vector512<float> s03 = Vector512.Load(src + 3 * xiStride) + m1c3 + m2c3, s13 = m1c3 - m2c3 - Vector512.Load(src + 15 * xiStride);
                // Columns: Y[a, 0] = s_a0 + s_a1 + s_a2, Y[a, 1] = s_a1 - s_a2 - s_a3; interleaved they are image row oy + a.
                Vector512<float> y00 = s00 + s01 + s02, y01 = s01 - s02 - s03, y10 = s10 + s11 + s12, y11 = s11 - s12 - s13;
                if (epilogue.Active)
                {
                    var b = epilogue.Broadcast(co);
                    (y00, y01, y10, y11) = (epilogue.Apply(y00, b), epilogue.Apply(y01, b), epilogue.Apply(y10, b), epilogue.Apply(y11, b));
                }
                float* dst = y + (block.Sample[j] * (long)cout + co) * plane + (long)oy * wd + ox;
                StoreInterleaved(dst, y00, y01, maskLow, maskHigh);
                if (down) StoreInterleaved(dst + wd, y10, y11, maskLow, maskHigh);
            }
            j += run;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreInterleaved(float* dst, Vector512<float> left, Vector512<float> right, Vector512<float> maskLow, Vector512<float> maskHigh)
    {
        Avx512F.MaskStore(dst, maskLow, Avx512F.PermuteVar16x32x2(left, InterleaveLow, right));
        Avx512F.MaskStore(dst + 16, maskHigh, Avx512F.PermuteVar16x32x2(left, InterleaveHigh, right));
    }

    // ----------------------------------------------------------------------------- F(4x4, 3x3)
    //
    // The same scheme with 4x4 output tiles and 6x6 input patches: 36 products per 16 outputs
    // instead of 16 per 4, so 36 / 144 of a direct convolution's multiplies (F(2x2) does 64 / 144).
    // The transforms (interpolation points 0, 1, -1, 2, -2 and infinity) have larger coefficients,
    // so rounding grows a little: relative errors stay near 1e-6 for ProGAN's sizes (the tests bound them).
    //
    //          | 4  0 -5  0  1  0 |         |  1/4    0     0  |
    //          | 0 -4 -4  1  1  0 |         | -1/6  -1/6  -1/6 |           | 1  1  1  1  1  0 |
    //   B^T =  | 0  4 -4 -1  1  0 |    G =  | -1/6   1/6  -1/6 |    A^T =  | 0  1 -1  2 -2  0 |
    //          | 0 -2 -1  2  1  0 |         |  1/24  1/12  1/6 |           | 0  1  1  4  4  0 |
    //          | 0  2 -1 -2  1  0 |         |  1/24 -1/12  1/6 |           | 0  1 -1  8 -8  1 |
    //          | 0  4  0 -5  0  1 |         |  0     0     1   |
    //
    // The weight gradient runs the same adjoint scheme as F(2x2) (BackwardWeight with f4), with A
    // expanding 4x4 tiles of gy to 6x6 and G^T folding 6x6 back to 3x3.

    /// <summary>Floats of the transformed, packed filters that <see cref="ForwardF4"/> needs.</summary>
    public static long PackedFilterLengthF4(int cin, int cout) => 36L * RoundUp(cout, MR) * cin;

    /// <summary>y = scale conv3x3(x, w) by F(4x4, 3x3), then the epilogue; <paramref name="packed"/> holds
    /// <see cref="PackedFilterLengthF4"/> floats.</summary>
    public static void ForwardF4(float* x, float* w, float* packed, float* y, int n, int cin, int h, int wd, int cout, float scale, Epilogue epilogue = default)
    {
        CpuParallel.For(RoundUp(cout, MR), MR, new FilterLoopF4(w, packed, cin, cout, scale));
        int tilesY = (h + 3) / 4, tilesX = (wd + 3) / 4;
        long tiles = (long)n * tilesY * tilesX;
        CpuParallel.For((tiles + TB - 1) / TB, 1, new ForwardLoop(x, packed, y, cin, h, wd, cout, tilesY, tilesX, tiles, f4: true, epilogue));
    }

    private readonly struct FilterLoopF4(float* w, float* packed, int cin, int cout, float scale) : IRangeBody
    {
        public void Run(long c0, long c1)
        {
            int coutPad = RoundUp(cout, MR);
            float* t = stackalloc float[18];   // G g: 6 rows of 3
            float* u = stackalloc float[6];
            for (long co = c0; co < c1; co++)
            {
                long strip = co - co % MR;
                int r = (int)(co % MR);
                for (int ci = 0; ci < cin; ci++)
                {
                    float* g = w + (co * cin + ci) * 9;
                    for (int c = 0; c < 3; c++)
                        if (co < cout) InterpolateFilter(g[c], g[3 + c], g[6 + c], t + c, 3, 1f);
                        else InterpolateFilter(0, 0, 0, t + c, 3, 1f);
                    for (int i = 0; i < 6; i++)
                    {
                        // Row i of G g, through G along its three columns: U[i, 0..5].
                        InterpolateFilter(t[3 * i], t[3 * i + 1], t[3 * i + 2], u, 1, scale);
                        for (int j = 0; j < 6; j++)
                            packed[((long)(6 * i + j) * coutPad + strip) * cin + ci * MR + r] = u[j];
                    }
                }
            }
        }
    }

    /// <summary>dst[k stride] = scale (G g)[k] for k &lt; 6: one filter row or column at the six points.</summary>
    private static void InterpolateFilter(float g0, float g1, float g2, float* dst, int stride, float scale)
    {
        dst[0] = scale * g0 / 4;
        dst[stride] = -scale * (g0 + g1 + g2) / 6;
        dst[2 * stride] = -scale * (g0 - g1 + g2) / 6;
        dst[3 * stride] = scale * (g0 / 24 + g1 / 12 + g2 / 6);
        dst[4 * stride] = scale * (g0 / 24 - g1 / 12 + g2 / 6);
        dst[5 * stride] = scale * g2;
    }

    // Phase c of 64 consecutive floats: elements c, c + 4, ..., c + 60, one per tile of a run.
    private static readonly Vector512<int> Stride4 = Lanes * 4;
    private static readonly Vector512<float> LowEight = Vector512.LessThan(Lanes, Vector512.Create(8)).AsSingle();
    private static readonly Vector512<long> PairsLow = Vector512.Create(0L, 8, 1, 9, 2, 10, 3, 11), PairsHigh = Vector512.Create(4L, 12, 5, 13, 6, 14, 7, 15);

    /// <summary>Element 4 t + c of the 64 floats a, b, c, d, for the 16 lanes t.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Phase(Vector512<float> a, Vector512<float> b, Vector512<float> c, Vector512<float> d, int phase)
    {
        var index = Stride4 + Vector512.Create(phase);                        // lanes 0..7 pick from (a, b)
        var low = Avx512F.PermuteVar16x32x2(a, index, b);
        var high = Avx512F.PermuteVar16x32x2(c, index - Vector512.Create(32), d); // lanes 8..15 pick from (c, d)
        return Vector512.ConditionalSelect(LowEight, low, high);
    }

    /// <summary>V = B^T d B (6x6) for the block: v[(xi cinPad + ci) width + j], xi = 6 i + j'. Rows past
    /// cin, and lanes past the count up to a multiple of 16, are zero.</summary>
    private static void TransformInputRowsF4(float* x, float* v, ref TileBlock block, int cin, int cinPad, int h, int wd, int tilesX, int width)
    {
        long plane = (long)h * wd, xiStride = (long)cinPad * width;
        ClearPadding(v, ref block, cin, cinPad, width, 36);
        float* e = stackalloc float[36 * 16 + 16];   // the six rows, each transformed along its columns
        float* rows = (float*)(((nint)e + 63) & ~(nint)63);
        for (int j = 0; j < block.Count;)
        {
            int run = RunLength(ref block, j, tilesX);
            int c0 = block.X[j] - 1, iy0 = block.Y[j] - 1, end = Math.Min(wd, c0 + 4 * run + 2);
            Vector512<float> m0 = Between(c0, 0, end), m1 = Between(c0 + 16, 0, end), m2 = Between(c0 + 32, 0, end);
            Vector512<float> m3 = Between(c0 + 48, 0, end), m4 = Between(c0 + 64, 0, end);
            var store = Vector512.LessThan(Lanes, Vector512.Create(run)).AsSingle();
            for (int ci = 0; ci < cin; ci++)
            {
                float* src = x + (block.Sample[j] * (long)cin + ci) * plane;
                for (int r = 0; r < 6; r++)
                {
                    int iy = iy0 + r;
                    float* dst = rows + r * 6 * 16;
                    if ((uint)iy >= (uint)h)
                    {
                        for (int c = 0; c < 6; c++) Vector512<float>.Zero.Store(dst + 16 * c);
                        continue;
                    }
                    float* row = src + (long)iy * wd + c0;
                    var q0 = Avx512F.MaskLoad(row, m0, Vector512<float>.Zero);
                    var q1 = Avx512F.MaskLoad(row + 16, m1, Vector512<float>.Zero);
                    var q2 = Avx512F.MaskLoad(row + 32, m2, Vector512<float>.Zero);
                    var q3 = Avx512F.MaskLoad(row + 48, m3, Vector512<float>.Zero);
                    var next = Avx512F.MaskLoad(row + 64, m4, Vector512<float>.Zero).AsInt32();
                    var d0 = Phase(q0, q1, q2, q3, 0);
                    var d1 = Phase(q0, q1, q2, q3, 1);
                    // Columns 4 and 5 of tile t are columns 0 and 1 of tile t + 1: shift by one lane,
                    // taking the last tile's from the next 16 floats.
                    var d4 = Avx512F.AlignRight32(next, d0.AsInt32(), 1).AsSingle();
                    var d5 = Avx512F.AlignRight32(Avx512F.AlignRight32(next, next, 1), d1.AsInt32(), 1).AsSingle();
                    Interpolate(d0, d1, Phase(q0, q1, q2, q3, 2), Phase(q0, q1, q2, q3, 3), d4, d5, dst, 16);
                }
                float* out0 = v + (long)ci * width + j;
                for (int c = 0; c < 6; c++)
                {
                    // Column c of the six transformed rows, transformed along the rows: V[0..5, c].
                    float* col = rows + 16 * c;
                    InterpolateMasked(Vector512.Load(col), Vector512.Load(col + 96), Vector512.Load(col + 192), Vector512.Load(col + 288),
                        Vector512.Load(col + 384), Vector512.Load(col + 480), out0 + c * xiStride, 6 * xiStride, store);
                }
            }
            j += run;
        }
    }

    /// <summary>B^T d for one row of six (one vector per element): dst[k stride floats] = row k of the result.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Interpolate(Vector512<float> d0, Vector512<float> d1, Vector512<float> d2, Vector512<float> d3,
        Vector512<float> d4, Vector512<float> d5, float* dst, int stride)
    {
        BTransform(d0, d1, d2, d3, d4, d5, out var v0, out var v1, out var v2, out var v3, out var v4, out var v5);
        v0.Store(dst); v1.Store(dst + stride); v2.Store(dst + 2 * stride);
        v3.Store(dst + 3 * stride); v4.Store(dst + 4 * stride); v5.Store(dst + 5 * stride);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void InterpolateMasked(Vector512<float> d0, Vector512<float> d1, Vector512<float> d2, Vector512<float> d3,
        Vector512<float> d4, Vector512<float> d5, float* dst, long stride, Vector512<float> store)
    {
        BTransform(d0, d1, d2, d3, d4, d5, out var v0, out var v1, out var v2, out var v3, out var v4, out var v5);
        Avx512F.MaskStore(dst, store, v0); Avx512F.MaskStore(dst + stride, store, v1); Avx512F.MaskStore(dst + 2 * stride, store, v2);
        Avx512F.MaskStore(dst + 3 * stride, store, v3); Avx512F.MaskStore(dst + 4 * stride, store, v4); Avx512F.MaskStore(dst + 5 * stride, store, v5);
    }

    /// <summary>v = B^T d for six values (each a vector of tiles).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void BTransform(Vector512<float> d0, Vector512<float> d1, Vector512<float> d2, Vector512<float> d3, Vector512<float> d4, Vector512<float> d5,
        out Vector512<float> v0, out Vector512<float> v1, out Vector512<float> v2, out Vector512<float> v3, out Vector512<float> v4, out Vector512<float> v5)
    {
        var four = Vector512.Create(4f);
        var t0 = Vector512.FusedMultiplyAdd(-four, d2, d4);          // d4 - 4 d2
        var t1 = Vector512.FusedMultiplyAdd(-four, d1, d3);          // d3 - 4 d1
        var t2 = d4 - d2;
        var t3 = (d3 - d1) * 2f;
        v0 = Vector512.FusedMultiplyAdd(four, d0, Vector512.FusedMultiplyAdd(Vector512.Create(-5f), d2, d4));
        v1 = t0 + t1;
        v2 = t0 - t1;
        v3 = t2 + t3;
        v4 = t2 - t3;
        v5 = Vector512.FusedMultiplyAdd(four, d1, Vector512.FusedMultiplyAdd(Vector512.Create(-5f), d3, d5));
    }

    /// <summary>y = A^T m for six values: four outputs.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void ATransform(Vector512<float> m0, Vector512<float> m1, Vector512<float> m2, Vector512<float> m3, Vector512<float> m4, Vector512<float> m5,
        out Vector512<float> y0, out Vector512<float> y1, out Vector512<float> y2, out Vector512<float> y3)
    {
        var a = m1 + m2;
        var b = m1 - m2;
        var c = m3 + m4;
        var d = m3 - m4;
        y0 = m0 + a + c;
        y1 = Vector512.FusedMultiplyAdd(Vector512.Create(2f), d, b);
        y2 = Vector512.FusedMultiplyAdd(Vector512.Create(4f), c, a);
        y3 = Vector512.FusedMultiplyAdd(Vector512.Create(8f), d, b) + m5;
    }

    /// <summary>Y = A^T M A (4x4 per tile) for the block; each output row of a run is 64 consecutive pixels.</summary>
    private static void TransformOutputRowsF4(float* m, float* y, ref TileBlock block, int cout, int coutPad, int h, int wd, int tilesX, Epilogue epilogue)
    {
        long plane = (long)h * wd, xiStride = (long)coutPad * TB;
        float* sBuffer = stackalloc float[24 * 16 + 16];
        float* srows = (float*)(((nint)sBuffer + 63) & ~(nint)63);    // A^T M: 4 rows of 6
        for (int j = 0; j < block.Count;)
        {
            int run = RunLength(ref block, j, tilesX);
            int ox = block.X[j], oy = block.Y[j], end = Math.Min(wd, ox + 4 * run);
            Vector512<float> mask0 = Between(ox, 0, end), mask1 = Between(ox + 16, 0, end);
            Vector512<float> mask2 = Between(ox + 32, 0, end), mask3 = Between(ox + 48, 0, end);
            int rowsInside = Math.Min(4, h - oy);
            for (int co = 0; co < cout; co++)
            {
                float* src = m + (long)co * TB + j;
                for (int c = 0; c < 6; c++)
                {
                    float* col = src + c * xiStride;
                    ATransform(Vector512.Load(col), Vector512.Load(col + 6 * xiStride), Vector512.Load(col + 12 * xiStride),
                        Vector512.Load(col + 18 * xiStride), Vector512.Load(col + 24 * xiStride), Vector512.Load(col + 30 * xiStride),
                        out var s0, out var s1, out var s2, out var s3);
                    s0.Store(srows + 16 * c); s1.Store(srows + 96 + 16 * c); s2.Store(srows + 192 + 16 * c); s3.Store(srows + 288 + 16 * c);
                }
                float* dst = y + (block.Sample[j] * (long)cout + co) * plane + (long)oy * wd + ox;
                var bias = epilogue.Active ? epilogue.Broadcast(co) : default;
                for (int r = 0; r < rowsInside; r++)
                {
                    float* s = srows + 96 * r;
                    ATransform(Vector512.Load(s), Vector512.Load(s + 16), Vector512.Load(s + 32), Vector512.Load(s + 48), Vector512.Load(s + 64), Vector512.Load(s + 80),
                        out var y0, out var y1, out var y2, out var y3);
                    if (epilogue.Active)
                        (y0, y1, y2, y3) = (epilogue.Apply(y0, bias), epilogue.Apply(y1, bias), epilogue.Apply(y2, bias), epilogue.Apply(y3, bias));
                    // Interleave the four columns of the tiles: pixel 4 t + k of the row is y_k[t].
                    var p01 = Avx512F.PermuteVar16x32x2(y0, InterleaveLow, y1).AsDouble();
                    var q01 = Avx512F.PermuteVar16x32x2(y0, InterleaveHigh, y1).AsDouble();
                    var p23 = Avx512F.PermuteVar16x32x2(y2, InterleaveLow, y3).AsDouble();
                    var q23 = Avx512F.PermuteVar16x32x2(y2, InterleaveHigh, y3).AsDouble();
                    float* row = dst + (long)r * wd;
                    Avx512F.MaskStore(row, mask0, Avx512F.PermuteVar8x64x2(p01, PairsLow, p23).AsSingle());
                    Avx512F.MaskStore(row + 16, mask1, Avx512F.PermuteVar8x64x2(p01, PairsHigh, p23).AsSingle());
                    Avx512F.MaskStore(row + 32, mask2, Avx512F.PermuteVar8x64x2(q01, PairsLow, q23).AsSingle());
                    Avx512F.MaskStore(row + 48, mask3, Avx512F.PermuteVar8x64x2(q01, PairsHigh, q23).AsSingle());
                }
            }
            j += run;
        }
    }

    // ----------------------------------------------------------------------------- weight gradient

    private const int DotRows = 6, DotColumns = 4;   // the weight gradient's register tile: 6 output x 4 input channels

    /// <summary>gw = scale sum over the batch of the correlation of gy with x (gw: [cout, cin, 3, 3]);
    /// <paramref name="scratch"/> holds <see cref="WeightScratchLength"/> floats.</summary>
    public static void BackwardWeight(float* x, float* gy, float* gw, float* scratch, int n, int cin, int h, int wd, int cout, float scale, bool f4 = false)
    {
        int size = f4 ? 4 : 2, planes = f4 ? 36 : 16;
        int tilesY = (h + size - 1) / size, tilesX = (wd + size - 1) / size;
        int coutPad = RoundUp(cout, DotRows), cinPad = RoundUp(cin, DotColumns);
        long tiles = (long)n * tilesY * tilesX;
        // Blocks of WeightBlock tiles, or shorter ones (a multiple of 16) when there are too few tiles to give every core one.
        int width = (int)Math.Min(WeightBlock, RoundUp((int)((tiles + CpuParallel.Threads - 1) / CpuParallel.Threads), 16));
        long blocks = (tiles + width - 1) / width;
        int threads = (int)Math.Min(CpuParallel.Threads, blocks);
        long accLength = (long)planes * coutPad * cinPad;
        // Each core accumulates dU[xi][co, ci] over its blocks in its own slice of scratch.
        new Span<float>(scratch, (int)(accLength * threads)).Clear();
        CpuParallel.For(threads, 1, new WeightLoop(x, gy, scratch, cin, h, wd, cout, tilesY, tilesX, tiles, width, threads, f4));
        // Sum the cores' dU, then dg = G^T dU G.
        for (int p = 1; p < threads; p++)
        {
            float* src = scratch + p * accLength;
            for (long i = 0; i < accLength; i++) scratch[i] += src[i];
        }
        CpuParallel.For(cout, 4, new FilterAdjointLoop(scratch, gw, cin, cout, scale, f4));
    }

    /// <summary>Core p of <paramref name="threads"/>: its share of the blocks, accumulated into its slice of scratch.</summary>
    private readonly struct WeightLoop(float* x, float* gy, float* scratch, int cin, int h, int wd, int cout, int tilesY, int tilesX, long tiles, int width, int threads, bool f4) : IRangeBody
    {
        public void Run(long p0, long p1)
        {
            int coutPad = RoundUp(cout, DotRows), cinPad = RoundUp(cin, DotColumns), planes = f4 ? 36 : 16;
            long accLength = (long)planes * coutPad * cinPad, blocks = (tiles + width - 1) / width;
            for (long p = p0; p < p1; p++)
            {
                float* acc = scratch + p * accLength;
                float* v = Scratch((long)planes * width * (cinPad + coutPad));
                float* g = v + (long)planes * width * cinPad;
                TileBlock block = default;
                for (long b = blocks * p / threads; b < blocks * (p + 1) / threads; b++)
                {
                    long t0 = b * width;
                    block.Decode(t0, (int)Math.Min(width, tiles - t0), tilesY, tilesX, f4 ? 4 : 2);
                    if (f4)
                    {
                        TransformInputRowsF4(x, v, ref block, cin, cinPad, h, wd, tilesX, width);
                        TransformOutputGradientRowsF4(gy, g, ref block, cout, coutPad, h, wd, tilesX, width);
                    }
                    else
                    {
                        TransformInputRows(x, v, ref block, cin, cinPad, h, wd, tilesX, width);
                        TransformOutputGradientRows(gy, g, ref block, cout, coutPad, h, wd, tilesX, width);
                    }
                    int steps = (block.Count + 15) / 16;
                    for (int xi = 0; xi < planes; xi++)
                        for (int co = 0; co < coutPad; co += DotRows)
                            for (int ci = 0; ci < cinPad; ci += DotColumns)
                                Dot(g + ((long)xi * coutPad + co) * width, v + ((long)xi * cinPad + ci) * width, width, steps,
                                    acc + ((long)xi * coutPad + co) * cinPad + ci, cinPad);
                }
            }
        }
    }

    private readonly struct FilterAdjointLoop(float* scratch, float* gw, int cin, int cout, float scale, bool f4) : IRangeBody
    {
        public void Run(long c0, long c1)
        {
            int coutPad = RoundUp(cout, DotRows), cinPad = RoundUp(cin, DotColumns), planes = f4 ? 36 : 16;
            float* u = stackalloc float[36];
            for (long co = c0; co < c1; co++)
                for (int ci = 0; ci < cin; ci++)
                {
                    for (int xi = 0; xi < planes; xi++) u[xi] = scratch[((long)xi * coutPad + co) * cinPad + ci];
                    if (f4) FilterTransformAdjointF4(u, gw + (co * cin + ci) * 9, scale);
                    else FilterTransformAdjoint(u, gw + (co * cin + ci) * 9, scale);
                }
        }
    }

    /// <summary>g = scale G^T u G for F(4x4): u 6x6, g 3x3, row-major.</summary>
    private static void FilterTransformAdjointF4(float* u, float* g, float scale)
    {
        float* t = stackalloc float[18];   // G^T u: 3 rows of 6
        for (int c = 0; c < 6; c++)
            ProjectFilter(u[c], u[6 + c], u[12 + c], u[18 + c], u[24 + c], u[30 + c], t + c, 6, 1f);
        for (int r = 0; r < 3; r++)
            ProjectFilter(t[6 * r], t[6 * r + 1], t[6 * r + 2], t[6 * r + 3], t[6 * r + 4], t[6 * r + 5], g + 3 * r, 1, scale);
    }

    /// <summary>dst[k stride] = scale (G^T u)[k] for k &lt; 3: the adjoint of <see cref="InterpolateFilter(float, float, float, float*, int, float)"/>.</summary>
    private static void ProjectFilter(float u0, float u1, float u2, float u3, float u4, float u5, float* dst, int stride, float scale)
    {
        dst[0] = scale * (u0 / 4 - (u1 + u2) / 6 + (u3 + u4) / 24);
        dst[stride] = scale * ((u2 - u1) / 6 + (u3 - u4) / 12);
        dst[2 * stride] = scale * ((u3 + u4 - u1 - u2) / 6 + u5);
    }

    /// <summary>g = scale G^T u G: the adjoint of <see cref="FilterTransform"/> (u 4x4, g 3x3, row-major).</summary>
    private static void FilterTransformAdjoint(float* u, float* g, float scale)
    {
        float* t = stackalloc float[12];   // G^T u: 3 rows of 4
        for (int c = 0; c < 4; c++)
        {
            float u0 = u[c], u1 = u[4 + c], u2 = u[8 + c], u3 = u[12 + c];
            t[c] = u0 + 0.5f * (u1 + u2);
            t[4 + c] = 0.5f * (u1 - u2);
            t[8 + c] = 0.5f * (u1 + u2) + u3;
        }
        for (int r = 0; r < 3; r++)
        {
            float u0 = t[4 * r], u1 = t[4 * r + 1], u2 = t[4 * r + 2], u3 = t[4 * r + 3];
            g[3 * r] = scale * (u0 + 0.5f * (u1 + u2));
            g[3 * r + 1] = scale * 0.5f * (u1 - u2);
            g[3 * r + 2] = scale * (0.5f * (u1 + u2) + u3);
        }
    }

    /// <summary>A dY A^T for the block, one row of tiles per vector like the inputs:
    /// g[(xi coutPad + co) width + j]; rows past cout and lanes past the count are zero.</summary>
    private static void TransformOutputGradientRows(float* gy, float* g, ref TileBlock block, int cout, int coutPad, int h, int wd, int tilesX, int width)
    {
        long plane = (long)h * wd, xiStride = (long)coutPad * width;
        ClearPadding(g, ref block, cout, coutPad, width);
        for (int j = 0; j < block.Count;)
        {
            int run = RunLength(ref block, j, tilesX);
            int ox = block.X[j], oy = block.Y[j], end = Math.Min(wd, ox + 2 * run);
            Vector512<float> mask0 = Between(ox, 0, end), mask1 = Between(ox + 16, 0, end);
            var store = Vector512.LessThan(Lanes, Vector512.Create(run)).AsSingle();
            bool down = oy + 1 < h;
            for (int co = 0; co < cout; co++)
            {
                // The run's 2x2 tiles of gy: columns 0 and 1 of rows oy and oy + 1 (0 outside the image).
                float* row = gy + (block.Sample[j] * (long)cout + co) * plane + (long)oy * wd + ox;
                var a = Avx512F.MaskLoad(row, mask0, Vector512<float>.Zero);
                var b = Avx512F.MaskLoad(row + 16, mask1, Vector512<float>.Zero);
                var y00 = Avx512F.PermuteVar16x32x2(a, Even, b);
                var y01 = Avx512F.PermuteVar16x32x2(a, Odd, b);
                Vector512<float> y10 = Vector512<float>.Zero, y11 = Vector512<float>.Zero;
                if (down)
                {
                    a = Avx512F.MaskLoad(row + wd, mask0, Vector512<float>.Zero);
                    b = Avx512F.MaskLoad(row + wd + 16, mask1, Vector512<float>.Zero);
                    y10 = Avx512F.PermuteVar16x32x2(a, Even, b);
                    y11 = Avx512F.PermuteVar16x32x2(a, Odd, b);
                }
                // Rows of A dY: (y0, y0 + y1, y0 - y1, -y1) with two columns each; each row then becomes
                // four columns the same way.
                float* dst = g + (long)co * width + j;
                Expand(y00, y01, dst, 0, xiStride, store);
                Expand(y00 + y10, y01 + y11, dst, 4, xiStride, store);
                Expand(y00 - y10, y01 - y11, dst, 8, xiStride, store);
                Expand(-y10, -y11, dst, 12, xiStride, store);
            }
            j += run;
        }
    }

    /// <summary>A dY A^T (6x6 from each 4x4 tile of gy) for the block: g[(xi coutPad + co) width + j];
    /// rows past cout and lanes past the count are zero.</summary>
    private static void TransformOutputGradientRowsF4(float* gy, float* g, ref TileBlock block, int cout, int coutPad, int h, int wd, int tilesX, int width)
    {
        long plane = (long)h * wd, xiStride = (long)coutPad * width;
        ClearPadding(g, ref block, cout, coutPad, width, 36);
        float* buffer = stackalloc float[24 * 16 + 16];
        float* rows = (float*)(((nint)buffer + 63) & ~(nint)63);   // A applied along each of the 4 rows: 4 x 6
        for (int j = 0; j < block.Count;)
        {
            int run = RunLength(ref block, j, tilesX);
            int ox = block.X[j], oy = block.Y[j], end = Math.Min(wd, ox + 4 * run);
            Vector512<float> m0 = Between(ox, 0, end), m1 = Between(ox + 16, 0, end), m2 = Between(ox + 32, 0, end), m3 = Between(ox + 48, 0, end);
            var store = Vector512.LessThan(Lanes, Vector512.Create(run)).AsSingle();
            for (int co = 0; co < cout; co++)
            {
                float* src = gy + (block.Sample[j] * (long)cout + co) * plane + (long)oy * wd + ox;
                for (int r = 0; r < 4; r++)
                {
                    Vector512<float> q0 = default, q1 = default, q2 = default, q3 = default;
                    if (oy + r < h)
                    {
                        float* row = src + (long)r * wd;
                        q0 = Avx512F.MaskLoad(row, m0, Vector512<float>.Zero);
                        q1 = Avx512F.MaskLoad(row + 16, m1, Vector512<float>.Zero);
                        q2 = Avx512F.MaskLoad(row + 32, m2, Vector512<float>.Zero);
                        q3 = Avx512F.MaskLoad(row + 48, m3, Vector512<float>.Zero);
                    }
                    ATransposeTransform(Phase(q0, q1, q2, q3, 0), Phase(q0, q1, q2, q3, 1), Phase(q0, q1, q2, q3, 2), Phase(q0, q1, q2, q3, 3),
                        out var z0, out var z1, out var z2, out var z3, out var z4, out var z5);
                    float* dst = rows + 96 * r;
                    z0.Store(dst); z1.Store(dst + 16); z2.Store(dst + 32); z3.Store(dst + 48); z4.Store(dst + 64); z5.Store(dst + 80);
                }
                float* out0 = g + (long)co * width + j;
                for (int c = 0; c < 6; c++)
                {
                    float* col = rows + 16 * c;
                    ATransposeTransform(Vector512.Load(col), Vector512.Load(col + 96), Vector512.Load(col + 192), Vector512.Load(col + 288),
                        out var z0, out var z1, out var z2, out var z3, out var z4, out var z5);
                    float* dst = out0 + c * xiStride;
                    long step = 6 * xiStride;
                    Avx512F.MaskStore(dst, store, z0); Avx512F.MaskStore(dst + step, store, z1); Avx512F.MaskStore(dst + 2 * step, store, z2);
                    Avx512F.MaskStore(dst + 3 * step, store, z3); Avx512F.MaskStore(dst + 4 * step, store, z4); Avx512F.MaskStore(dst + 5 * step, store, z5);
                }
            }
            j += run;
        }
    }

    /// <summary>z = A y for four values: six (the adjoint of <see cref="ATransform"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void ATransposeTransform(Vector512<float> y0, Vector512<float> y1, Vector512<float> y2, Vector512<float> y3,
        out Vector512<float> z0, out Vector512<float> z1, out Vector512<float> z2, out Vector512<float> z3, out Vector512<float> z4, out Vector512<float> z5)
    {
        var even = y0 + y2;
        var odd = y1 + y3;
        var even4 = Vector512.FusedMultiplyAdd(Vector512.Create(4f), y2, y0);
        var odd8 = Vector512.FusedMultiplyAdd(Vector512.Create(8f), y3, y1 * 2f);
        z0 = y0;
        z1 = even + odd;
        z2 = even - odd;
        z3 = even4 + odd8;
        z4 = even4 - odd8;
        z5 = y3;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Expand(Vector512<float> a, Vector512<float> b, float* dst, int xi0, long xiStride, Vector512<float> store)
    {
        Avx512F.MaskStore(dst + xi0 * xiStride, store, a);
        Avx512F.MaskStore(dst + (xi0 + 1) * xiStride, store, a + b);
        Avx512F.MaskStore(dst + (xi0 + 2) * xiStride, store, a - b);
        Avx512F.MaskStore(dst + (xi0 + 3) * xiStride, store, -b);
    }

    /// <summary>Zeros what the transforms do not write but the dot products read: rows from
    /// <paramref name="rows"/> to <paramref name="rowsPad"/>, and the lanes of the last vector past the block's count.</summary>
    private static void ClearPadding(float* buffer, ref TileBlock block, int rows, int rowsPad, int width, int planes = 16)
    {
        int tail = RoundUp(block.Count, 16) - block.Count;
        for (int xi = 0; xi < planes; xi++)
        {
            float* plane = buffer + (long)xi * rowsPad * width;
            if (rowsPad > rows) new Span<float>(plane + (long)rows * width, (rowsPad - rows) * width).Clear();
            if (tail > 0)
                for (int r = 0; r < rows; r++) new Span<float>(plane + (long)r * width + block.Count, tail).Clear();
        }
    }

    /// <summary>acc[r, c] += sum over the block's tiles of a[r, t] b[c, t] for a 6 x 4 tile (rows of a:
    /// output channels, rows of b: input channels, both W apart; acc rows accStride apart).
    /// The tiles run along the vectors, so each of the 24 sums is a vector until the end.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Dot(float* a, float* b, int W, int steps, float* acc, long accStride)
    {
        Vector512<float> c00 = default, c01 = default, c02 = default, c03 = default;
        Vector512<float> c10 = default, c11 = default, c12 = default, c13 = default;
        Vector512<float> c20 = default, c21 = default, c22 = default, c23 = default;
        Vector512<float> c30 = default, c31 = default, c32 = default, c33 = default;
        Vector512<float> c40 = default, c41 = default, c42 = default, c43 = default;
        Vector512<float> c50 = default, c51 = default, c52 = default, c53 = default;
        for (int s = 0; s < steps; s++, a += 16, b += 16)
        {
            var b0 = Vector512.Load(b); var b1 = Vector512.Load(b + W); var b2 = Vector512.Load(b + 2 * W); var b3 = Vector512.Load(b + 3 * W);
            var x = Vector512.Load(a);
            c00 = Avx512F.FusedMultiplyAdd(x, b0, c00); c01 = Avx512F.FusedMultiplyAdd(x, b1, c01);
            c02 = Avx512F.FusedMultiplyAdd(x, b2, c02); c03 = Avx512F.FusedMultiplyAdd(x, b3, c03);
            x = Vector512.Load(a + W);
            c10 = Avx512F.FusedMultiplyAdd(x, b0, c10); c11 = Avx512F.FusedMultiplyAdd(x, b1, c11);
            c12 = Avx512F.FusedMultiplyAdd(x, b2, c12); c13 = Avx512F.FusedMultiplyAdd(x, b3, c13);
            x = Vector512.Load(a + 2 * W);
            c20 = Avx512F.FusedMultiplyAdd(x, b0, c20); c21 = Avx512F.FusedMultiplyAdd(x, b1, c21);
            c22 = Avx512F.FusedMultiplyAdd(x, b2, c22); c23 = Avx512F.FusedMultiplyAdd(x, b3, c23);
            x = Vector512.Load(a + 3 * W);
            c30 = Avx512F.FusedMultiplyAdd(x, b0, c30); c31 = Avx512F.FusedMultiplyAdd(x, b1, c31);
            c32 = Avx512F.FusedMultiplyAdd(x, b2, c32); c33 = Avx512F.FusedMultiplyAdd(x, b3, c33);
            x = Vector512.Load(a + 4 * W);
            c40 = Avx512F.FusedMultiplyAdd(x, b0, c40); c41 = Avx512F.FusedMultiplyAdd(x, b1, c41);
            c42 = Avx512F.FusedMultiplyAdd(x, b2, c42); c43 = Avx512F.FusedMultiplyAdd(x, b3, c43);
            x = Vector512.Load(a + 5 * W);
            c50 = Avx512F.FusedMultiplyAdd(x, b0, c50); c51 = Avx512F.FusedMultiplyAdd(x, b1, c51);
            c52 = Avx512F.FusedMultiplyAdd(x, b2, c52); c53 = Avx512F.FusedMultiplyAdd(x, b3, c53);
        }
        AddSums(acc, c00, c01, c02, c03);
        AddSums(acc + accStride, c10, c11, c12, c13);
        AddSums(acc + 2 * accStride, c20, c21, c22, c23);
        AddSums(acc + 3 * accStride, c30, c31, c32, c33);
        AddSums(acc + 4 * accStride, c40, c41, c42, c43);
        AddSums(acc + 5 * accStride, c50, c51, c52, c53);
    }

    /// <summary>acc[0..3] += the lane sums of p, q, r, s (halves added, then two horizontal adds).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void AddSums(float* acc, Vector512<float> p, Vector512<float> q, Vector512<float> r, Vector512<float> s)
    {
        var pq = Avx.HorizontalAdd(p.GetLower() + p.GetUpper(), q.GetLower() + q.GetUpper());
        var rs = Avx.HorizontalAdd(r.GetLower() + r.GetUpper(), s.GetLower() + s.GetUpper());
        var all = Avx.HorizontalAdd(pq, rs);        // [p q r s] partial sums in each 128-bit half
        var sums = all.GetLower() + all.GetUpper();
        (Vector128.Load(acc) + sums).Store(acc);
    }
}
