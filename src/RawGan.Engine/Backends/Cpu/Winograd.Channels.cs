using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace RawGan.Engine.Backends.Cpu;

// ---------------------------------------------------------------------------------------------
// Winograd F(4x4, 3x3) with the channels in the vector lanes: the version for small maps.
//
// Winograd.cs vectorizes its transforms over a run of tiles along one tile row. On a 16x16 map a
// row has 4 tiles of F(4x4), on 8x8 two, on 4x4 one: most of the 16 lanes idle, which is why the
// row version loses to the implicit GEMM below 32x32. Here every vector holds 16 channels of one
// pixel instead, so a tile's transform is full-width whatever the map's size, and the three
// products are the same arithmetic as before in another layout:
//
//   xt[s][py][px][ci]     the input, channels last, with a border of zeros (16x16 transposes; by blocks
//                         only the rows a block's tiles read, in its core's scratch)
//   U[xi][ci][co]         the transformed filters, co in the lanes (one pass per call)
//   V[xi][t][ci]          B^T d B of each 6x6 patch, 16 channels per vector
//   M[xi][t][co]          = sum over ci of V[xi][t][ci] U[xi][ci][co]: 36 matrix products
//                         (tiles x cin) (cin x cout), with the tiles as the micro-kernel's 6 rows and
//                         64 output channels as its 4 vectors of columns; K = cin exactly, so an odd
//                         channel count (129 in the critic's head) costs nothing extra here
//   y                     A^T M A of each tile, 16 output channels per vector, transposed back to
//                         [s][co][py][px] 16 pixels at a time, with a layer's bias and leaky ReLU when
//                         asked (Epilogue.cs), before the transpose
//
// Two schedules. With many tiles (16x16 maps and up at batch 16) the tiles are cut into blocks of
// at most ChannelStrips x 6; each core runs whole blocks (input transform, 36 products, output
// transform), so a block's V and M stay in its L2, and U is made once per call. With few tiles
// (ChannelRowsMaxTiles: 4x4 and 8x8 maps) U (2.4 MB for 128 x 128 channels) would outweigh the
// tiles, so it is never stored whole: every tile is transformed once, then each core computes a
// row of six planes of U at a time and runs their products over all the tiles ("by filter rows").
// The input gradient is the same forward pass with the filters read transposed and flipped. The
// weight gradient is the adjoint: A dY A^T of gy as G[xi][t][co] (each 4x4 tile of gy read where it
// lies, one vector per channel, and transposed in registers: gy is never laid out whole), the 36 products
// dU[xi][co][ci] = sum over t of G[xi][t][co] V[xi][t][ci] (K = the tiles), and G^T dU G back to
// 3x3, 16 input channels at a time; by blocks each core accumulates its share of the tiles into
// its own dU, by filter rows each row of dU is folded into the 3x3 result as soon as it is made.
// ---------------------------------------------------------------------------------------------

internal static unsafe partial class Winograd
{
    private const int ChannelStrips = 8;         // strips of MR tiles per block of the forward products
    private const int ChannelWeightChunk = 96;   // tiles per chunk of the weight gradient (its K)
    private const int ChannelRowsMaxTiles = 128; // up to this many tiles the products run by filter rows

    private static int Lanes16(int c) => RoundUp(c, 16);

    private static float* Align64(float* p) => (float*)(((nint)p + 63) & ~(nint)63);

    /// <summary>Floats of scratch <see cref="ChannelForward"/> needs: by filter rows the transposed filters, V and M
    /// of every tile; by blocks the transformed filters (each block lays out its image rows in its core's scratch).</summary>
    public static long ChannelForwardScratchLength(int n, int inC, int h, int wd, int outC)
    {
        int tilesY = (h + 3) / 4, tilesX = (wd + 3) / 4;
        long tiles = (long)n * tilesY * tilesX;
        if (tiles <= ChannelRowsMaxTiles)
            return 9L * inC * Lanes16(outC) + 36L * RoundUp((int)tiles, MR) * (Lanes16(inC) + Lanes16(outC)) + 32;
        return 36L * inC * Lanes16(outC) + 32;
    }

    /// <summary>Floats of scratch <see cref="ChannelBackwardWeight"/> needs.</summary>
    public static long ChannelWeightScratchLength(int n, int cin, int h, int wd, int cout)
    {
        int tilesY = (h + 3) / 4, tilesX = (wd + 3) / 4, iV = Lanes16(cin), oV = Lanes16(cout);
        long tiles = (long)n * tilesY * tilesX;
        if (tiles <= ChannelRowsMaxTiles)
            return 36 * tiles * (iV + oV) + CpuParallel.Threads * 9L * cout * iV + 64;
        long xt = (long)n * (4 * tilesY + 2) * (4 * tilesX + 2) * iV;
        return xt + CpuParallel.Threads * 36L * oV * iV + 64;
    }

    /// <summary>
    /// y = scale conv3x3(x, w) by F(4x4, 3x3) with channels in the lanes, then the
    /// <paramref name="epilogue"/> (a bias and leaky ReLU, or none). w is [outC, inC, 3, 3], or with
    /// <paramref name="transposed"/> [inC, outC, 3, 3] read flipped (the input gradient: x is then gy).
    /// </summary>
    public static void ChannelForward(float* x, float* w, float* y, float* scratch, int n, int inC, int h, int wd, int outC, float scale,
        bool transposed, Epilogue epilogue = default)
    {
        int tilesY = (h + 3) / 4, tilesX = (wd + 3) / 4, oV = Lanes16(outC), iV = Lanes16(inC);
        if ((long)n * tilesY * tilesX <= ChannelRowsMaxTiles)
        {
            ForwardByRows(x, w, y, scratch, n, inC, h, wd, outC, scale, transposed, epilogue);
            return;
        }
        float* u = Align64(scratch);
        // One region transforms the filters; each block lays out the image rows its tiles read.
        CpuParallel.For((long)inC * (oV / 16), 1, new ChannelFilters(w, u, inC, outC, scale, transposed));
        long tiles = (long)n * tilesY * tilesX;
        long strips = (tiles + MR - 1) / MR;
        long blocks = (strips + ChannelStrips - 1) / ChannelStrips;
        int threads = CpuParallel.Threads;
        if (blocks < threads) blocks = Math.Min(threads, strips);
        else blocks = (blocks + threads - 1) / threads * threads;
        int blockStrips = (int)((strips + blocks - 1) / blocks);
        CpuParallel.For(blocks, 1, new ChannelForwardBlocks(x, u, y, epilogue, inC, h, wd, outC, tilesY, tilesX, tiles, strips, blocks, blockStrips));
    }

    // ------------------------------------------------------------------ by filter rows (few tiles)
    //
    // With few tiles (a batch of 4x4 or 8x8 maps) the transformed filters U (36 values per filter,
    // 2.4 MB for 128 x 128 channels) outweigh the tiles' V and M, and writing U out and reading it
    // back per block of tiles would cost more than the products. So the filters are only
    // transposed (9 taps per filter, 16 output channels per vector), every tile is transformed into
    // V once, and the 36 products run a row of xi = 6 i + j at a time: each core computes the six
    // planes U[6 i .. 6 i + 5] of its row into its own scratch (G g once per filter, then the six
    // columns), runs their six products over all the tiles at once, and moves on. Three regions:
    // transpose the filters and transform each sample's tiles, the products by rows, the outputs.

    /// <summary>The forward products when the tiles are few (<see cref="ChannelRowsMaxTiles"/>).</summary>
    private static void ForwardByRows(float* x, float* w, float* y, float* scratch, int n, int inC, int h, int wd, int outC, float scale,
        bool transposed, Epilogue epilogue)
    {
        int tilesY = (h + 3) / 4, tilesX = (wd + 3) / 4, oV = Lanes16(outC), iV = Lanes16(inC);
        int tiles = n * tilesY * tilesX, padded = RoundUp(tiles, MR);
        float* wt = Align64(scratch);
        float* v = wt + 9L * inC * oV;
        float* m = v + 36L * padded * iV;
        // Rows past the last tile feed the last strip of the products: zeros, not stale values.
        if (padded > tiles)
            for (int xi = 0; xi < 36; xi++) new Span<float>(v + ((long)xi * padded + tiles) * iV, (padded - tiles) * iV).Clear();
        long filterItems = (long)inC * (oV / 16);
        CpuParallel.For(filterItems + n, 1, new RowsPrepare(x, w, wt, v, n, inC, h, wd, outC, transposed, padded, filterItems));
        CpuParallel.For(6, 1, new RowsProducts(wt, v, m, inC, outC, padded, scale));
        CpuParallel.For(n, 1, new RowsOutputs(m, y, epilogue, outC, h, wd, padded));
    }

    /// <summary>Filter items transpose a filter group (one input channel, 16 output channels: wt[ci][tap][o]);
    /// sample items lay one sample out channels last in the core's scratch and transform its tiles into V. The two
    /// kinds are interleaved (<see cref="Interleave"/>), so that each core's contiguous share holds half of each.</summary>
    private readonly struct RowsPrepare(float* x, float* w, float* wt, float* v, int n, int inC, int h, int wd, int outC, bool transposed,
        int padded, long filterItems) : IRangeBody
    {
        [SkipLocalsInit]
        public void Run(long i0, long i1)
        {
            int iV = Lanes16(inC), oV = Lanes16(outC), tilesY = (h + 3) / 4, tilesX = (wd + 3) / 4, hp = 4 * tilesY + 2, wp = 4 * tilesX + 2;
            var taps = stackalloc Vector512<float>[16];
            for (long i = i0; i < i1; i++)
            {
                if (Interleave(i, filterItems, filterItems + n, out long j))
                {
                    int ci = (int)(j / (oV / 16)), o0 = (int)(j % (oV / 16)) * 16;
                    FilterTaps(w, taps, ci, o0, inC, outC, transposed);
                    for (int k = 0; k < 9; k++) taps[k].Store(wt + ((long)ci * 9 + k) * oV + o0);
                }
                else
                {
                    float* xt = Align64(Scratch((long)hp * wp * iV + 16));
                    float* sample = x + j * inC * h * wd;
                    for (int c0 = 0; c0 < inC; c0 += 16) ChannelsLast(sample, xt, 0, c0, inC, h, wd, hp, wp);
                    for (int r = 0; r < tilesY * tilesX; r++)
                    {
                        float* patch = xt + ((long)4 * (r / tilesX) * wp + 4 * (r % tilesX)) * iV;
                        InputTile(patch, (long)wp * iV, iV, v + (j * tilesY * tilesX + r) * iV, (long)padded * iV);
                    }
                }
            }
        }
    }

    /// <summary>Rows [i0, i1) of xi: U[6 i + j] = scale (G g G^T)[i, j] for every filter into the core's scratch,
    /// then the six products M[6 i + j] = V[6 i + j] U[6 i + j] over every tile.</summary>
    private readonly struct RowsProducts(float* wt, float* v, float* m, int inC, int outC, int padded, float scale) : IRangeBody
    {
        [SkipLocalsInit]
        public void Run(long i0, long i1)
        {
            int iV = Lanes16(inC), oV = Lanes16(outC);
            long plane = (long)inC * oV;
            float* u = Align64(Scratch(6 * plane + 16));
            for (int i = (int)i0; i < i1; i++)
            {
                for (int ci = 0; ci < inC; ci++)
                    for (int o0 = 0; o0 < oV; o0 += 16)
                    {
                        float* g = wt + (long)ci * 9 * oV + o0;
                        // Row i of G g (column c of g is taps c, 3 + c, 6 + c), then G along it: U[i, 0..5].
                        var t0 = RowOfG(i, Vector512.Load(g), Vector512.Load(g + 3 * oV), Vector512.Load(g + 6 * oV));
                        var t1 = RowOfG(i, Vector512.Load(g + oV), Vector512.Load(g + 4 * oV), Vector512.Load(g + 7 * oV));
                        var t2 = RowOfG(i, Vector512.Load(g + 2 * oV), Vector512.Load(g + 5 * oV), Vector512.Load(g + 8 * oV));
                        InterpolateFilter(t0, t1, t2, (Vector512<float>*)(u + (long)ci * oV + o0), (int)(plane / 16), scale);
                    }
                for (int j = 0; j < 6; j++)
                {
                    int xi = 6 * i + j;
                    float* vx = v + (long)xi * padded * iV, mx = m + (long)xi * padded * oV, ux = u + j * plane;
                    int o0 = 0;
                    for (; o0 + 64 <= oV; o0 += 64)
                        for (int t = 0; t < padded; t += MR) RowsKernel64(inC, vx + (long)t * iV, iV, ux + o0, oV, mx + (long)t * oV + o0, oV);
                    for (; o0 < oV; o0 += 16)
                        for (int t = 0; t < padded; t += MR) RowsKernel16(inC, vx + (long)t * iV, iV, ux + o0, oV, mx + (long)t * oV + o0, oV);
                }
            }
        }
    }

    /// <summary>Samples [s0, s1): every tile's Y = A^T M A with the epilogue, into y.</summary>
    private readonly struct RowsOutputs(float* m, float* y, Epilogue epilogue, int outC, int h, int wd, int padded) : IRangeBody
    {
        public void Run(long s0, long s1)
        {
            int oV = Lanes16(outC), tilesY = (h + 3) / 4, tilesX = (wd + 3) / 4;
            for (long s = s0; s < s1; s++)
                for (int r = 0; r < tilesY * tilesX; r++)
                    OutputTile(m + (s * tilesY * tilesX + r) * oV, (long)padded * oV, y, epilogue, (int)s, 4 * (r / tilesX), 4 * (r % tilesX), outC, h, wd);
        }
    }

    /// <summary>
    /// The weight gradient when the tiles are few: every sample's tiles transformed once (V of the
    /// image, G = A dY A^T of the output gradient), then a row i of xi at a time per core: the six
    /// products dU[6 i + j] = G^T V over every tile into the core's scratch, folded at once into
    /// its share of the 3x3 result (dg = G^T dU G is a sum over the rows i of G^T[., i] times row
    /// i of dU G), so dU is never stored whole. The cores' shares are added at the end.
    /// </summary>
    private static void BackwardWeightByRows(float* x, float* gy, float* gw, float* scratch, int n, int cin, int h, int wd, int cout, float scale)
    {
        int tilesY = (h + 3) / 4, tilesX = (wd + 3) / 4, iV = Lanes16(cin), oV = Lanes16(cout);
        int tiles = n * tilesY * tilesX, threads = Math.Min(CpuParallel.Threads, 6);
        float* v = Align64(scratch);
        float* g = v + 36L * tiles * iV;
        float* acc = g + 36L * tiles * oV + 16;   // the last strip of output channels reads up to 5 floats past G
        new Span<float>(acc, (int)(threads * 9L * cout * iV)).Clear();
        CpuParallel.For(n, 1, new RowsWeightTransforms(x, gy, v, g, cin, h, wd, cout, tiles));
        CpuParallel.For(threads, 1, new RowsWeightProducts(v, g, acc, cin, cout, tiles, threads));
        CpuParallel.For(cout, 1, new RowsWeightOutputs(acc, gw, cin, cout, scale, threads));
    }

    /// <summary>Samples [s0, s1): V[xi][t] of the image and G[xi][t] = A dY A^T of the output gradient, for the sample's tiles.</summary>
    private readonly struct RowsWeightTransforms(float* x, float* gy, float* v, float* g, int cin, int h, int wd, int cout, int tiles) : IRangeBody
    {
        public void Run(long s0, long s1)
        {
            int iV = Lanes16(cin), oV = Lanes16(cout), tilesY = (h + 3) / 4, tilesX = (wd + 3) / 4, hp = 4 * tilesY + 2, wp = 4 * tilesX + 2;
            float* xt = Align64(Scratch((long)hp * wp * iV + 16));
            for (long s = s0; s < s1; s++)
            {
                for (int c0 = 0; c0 < cin; c0 += 16) ChannelsLast(x + s * cin * h * wd, xt, 0, c0, cin, h, wd, hp, wp);
                for (int r = 0; r < tilesY * tilesX; r++)
                {
                    int ty = r / tilesX, tx = r % tilesX;
                    long t = s * tilesY * tilesX + r;
                    InputTile(xt + ((long)4 * ty * wp + 4 * tx) * iV, (long)wp * iV, iV, v + t * iV, (long)tiles * iV);
                    GradientTile(gy, (int)s, 4 * ty, 4 * tx, cout, h, wd, g + t * oV, (long)tiles * oV);
                }
            }
        }
    }

    /// <summary>Core p of <paramref name="threads"/>: rows i of xi in its share of 0..5; for each, the six products
    /// dU[6 i + j][co][ci] over every tile, then acc_p[co][3 a + b][ci] += G^T[a, i] (dU G)[i, b].</summary>
    private readonly struct RowsWeightProducts(float* v, float* g, float* acc, int cin, int cout, int tiles, int threads) : IRangeBody
    {
        [SkipLocalsInit]
        public void Run(long p0, long p1)
        {
            int iV = Lanes16(cin), oV = Lanes16(cout);
            long plane = (long)cout * iV;
            float* du = Align64(Scratch(6 * plane + 16));
            var r = stackalloc Vector512<float>[3];
            for (long p = p0; p < p1; p++)
            {
                float* share = acc + p * 9 * plane;
                for (int i = (int)(6 * p / threads); i < 6 * (p + 1) / threads; i++)
                {
                    for (int j = 0; j < 6; j++)
                    {
                        int xi = 6 * i + j;
                        float* vx = v + (long)xi * tiles * iV, gx = g + (long)xi * tiles * oV, dx = du + j * plane;
                        for (int co = 0; co < cout; co += MR)
                        {
                            int rows = Math.Min(MR, cout - co);
                            int ci = 0;
                            for (; ci + 64 <= iV; ci += 64) ColumnsKernel64(tiles, gx + co, oV, vx + ci, iV, dx + (long)co * iV + ci, iV, rows, false);
                            for (; ci < iV; ci += 16) ColumnsKernel16(tiles, gx + co, oV, vx + ci, iV, dx + (long)co * iV + ci, iV, rows, false);
                        }
                    }
                    // G^T[a, i] for a = 0, 1, 2 (the columns of G, the interpolation points' weights).
                    var (k0, k1, k2) = GTransposeColumn(i);
                    for (long e = 0; e < plane; e += 16)
                    {
                        float* d = du + e;
                        ProjectFilter(Vector512.Load(d), Vector512.Load(d + plane), Vector512.Load(d + 2 * plane), Vector512.Load(d + 3 * plane),
                            Vector512.Load(d + 4 * plane), Vector512.Load(d + 5 * plane), r, 1, 1f);
                        // acc[co][3 a + b][ci]: e = co iV + ci, so tap k of (co, ci) is at co 9 iV + k iV + ci.
                        long co = e / iV, ci = e % iV;
                        float* o = share + co * 9 * iV + ci;
                        for (int b = 0; b < 3; b++)
                        {
                            Accumulate(o + (long)b * iV, k0, r[b]);
                            Accumulate(o + (long)(3 + b) * iV, k1, r[b]);
                            Accumulate(o + (long)(6 + b) * iV, k2, r[b]);
                        }
                    }
                }
            }
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private static void Accumulate(float* dst, float k, Vector512<float> value)
        {
            if (k != 0) Vector512.FusedMultiplyAdd(value, Vector512.Create(k), Vector512.Load(dst)).Store(dst);
        }
    }

    /// <summary>Row i of G^T: the weights of interpolation point i in the three filter taps (see ProjectFilter).</summary>
    private static (float, float, float) GTransposeColumn(int i) => i switch
    {
        0 => (1f / 4, 0f, 0f),
        1 => (-1f / 6, -1f / 6, -1f / 6),
        2 => (-1f / 6, 1f / 6, -1f / 6),
        3 => (1f / 24, 1f / 12, 1f / 6),
        4 => (1f / 24, -1f / 12, 1f / 6),
        _ => (0f, 0f, 1f),
    };

    /// <summary>Output channels [c0, c1): gw[co, ci, tap] = scale times the sum of the cores' acc[co][tap][ci].</summary>
    private readonly struct RowsWeightOutputs(float* acc, float* gw, int cin, int cout, float scale, int threads) : IRangeBody
    {
        [SkipLocalsInit]
        public void Run(long c0, long c1)
        {
            int iV = Lanes16(cin);
            long share = 9L * cout * iV;
            var taps = stackalloc Vector512<float>[16];
            var filters = stackalloc Vector512<float>[16];
            var nine = Vector512.LessThan(Vector512<int>.Indices, Vector512.Create(9)).AsSingle();
            var vscale = Vector512.Create(scale);
            for (int k = 9; k < 16; k++) taps[k] = Vector512<float>.Zero;
            for (long co = c0; co < c1; co++)
                for (int i0 = 0; i0 < cin; i0 += 16)
                {
                    float* src = acc + co * 9 * iV + i0;
                    for (int k = 0; k < 9; k++)
                    {
                        var total = Vector512.Load(src + k * iV);
                        for (int p = 1; p < threads; p++) total += Vector512.Load(src + p * share + k * iV);
                        taps[k] = total * vscale;
                    }
                    Simd.Transpose16(taps, filters);
                    int ni = Math.Min(16, cin - i0);
                    float* dst = gw + (co * cin + i0) * 9;
                    for (int l = 0; l < ni; l++) Avx512F.MaskStore(dst + l * 9, nine, filters[l]);
                }
        }
    }

    /// <summary>(G g)[i] for one column (g0, g1, g2) of 16 filters: row i of the interpolation at the six points.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> RowOfG(int i, Vector512<float> g0, Vector512<float> g1, Vector512<float> g2) => i switch
    {
        0 => g0 * 0.25f,
        1 => (g0 + g1 + g2) * (-1f / 6),
        2 => (g0 - g1 + g2) * (-1f / 6),
        3 => g0 * (1f / 24) + g1 * (1f / 12) + g2 * (1f / 6),
        4 => g0 * (1f / 24) - g1 * (1f / 12) + g2 * (1f / 6),
        _ => g2,
    };

    /// <summary>Items [i0, i1) of the forward's filters: one input channel and 16 output channels each, into U.</summary>
    private readonly struct ChannelFilters(float* w, float* u, int inC, int outC, float scale, bool transposed) : IRangeBody
    {
        public void Run(long i0, long i1)
        {
            int oGroups = Lanes16(outC) / 16;
            for (long i = i0; i < i1; i++) FilterChannels(w, u, (int)(i / oGroups), (int)(i % oGroups) * 16, inC, outC, scale, transposed);
        }
    }

    /// <summary>Items [i0, i1) of the weight gradient's image: one sample and 16 channels each, laid out channels last
    /// with a zero border.</summary>
    private readonly struct ChannelImages(float* x, float* xt, int inC, int h, int wd) : IRangeBody
    {
        public void Run(long i0, long i1)
        {
            int groups = Lanes16(inC) / 16, hp = 4 * ((h + 3) / 4) + 2, wp = 4 * ((wd + 3) / 4) + 2;
            for (long i = i0; i < i1; i++) ChannelsLast(x, xt, (int)(i / groups), (int)(i % groups) * 16, inC, h, wd, hp, wp);
        }
    }

    /// <summary>dst[s][py + 1][px + 1][c0 .. c0 + 15] = src[s, c, py, px] for one sample and 16 channels
    /// (zeros past the channel count); dst is hp x wp pixels of Lanes16(channels) floats, zero outside the image
    /// (the border of one pixel every 6x6 patch of F(4x4) reads).</summary>
    private static void ChannelsLast(float* src, float* dst, int s, int c0, int channels, int h, int wd, int hp, int wp) =>
        ChannelsLastRows(src, dst + (long)s * hp * wp * Lanes16(channels), s, c0, channels, h, wd, wp, -1, hp);

    /// <summary>Rows of sample s, 16 channels from c0, channels last: dst row r (wp pixels of Lanes16(channels)
    /// floats) holds image row firstRow + r at columns 1 .. wd, and zeros where there is no image (rows above
    /// or below it, the columns beside it, channels past the count).</summary>
    [SkipLocalsInit]
    private static void ChannelsLastRows(float* src, float* dst, int s, int c0, int channels, int h, int wd, int wp, int firstRow, int rows)
    {
        int cV = Lanes16(channels), plane = h * wd, nc = Math.Min(16, channels - c0);
        float* first = dst + c0;
        var zero = Vector512<float>.Zero;
        // The frame around the image: rows above and below, columns left and right.
        for (int r = 0; r < rows; r++)
        {
            int iy = firstRow + r;
            bool inside = iy >= 0 && iy < h;
            float* row = first + (long)r * wp * cV;
            for (int px = 0; px < wp; px++)
                if (!inside || px < 1 || px > wd) zero.Store(row + (long)px * cV);
        }
        int y = Math.Max(firstRow, 0), y1 = Math.Min(firstRow + rows, h), x = 0;
        if (y1 <= y) return;
        float* maps = src + ((long)s * channels + c0) * plane;
        var pixels = stackalloc Vector512<float>[16];
        var cols = stackalloc Vector512<float>[16];
        for (int p0 = y * wd, end = y1 * wd; p0 < end; p0 += 16)
        {
            int np = Math.Min(16, end - p0);
            var mask = Vector512.LessThan(Vector512<int>.Indices, Vector512.Create(np)).AsSingle();
            for (int l = 0; l < 16; l++)
                pixels[l] = l < nc ? Avx512F.MaskLoad(maps + (long)l * plane + p0, mask, zero) : zero;
            Simd.Transpose16(pixels, cols);
            for (int j = 0; j < np; j++)
            {
                cols[j].Store(first + ((long)(y - firstRow) * wp + x + 1) * cV);
                if (++x == wd) { x = 0; y++; }
            }
        }
    }

    /// <summary>U[xi][ci][o0 .. o0 + 15] = scale G g G^T for the 16 filters (o, ci): w[o, ci] or, transposed,
    /// w[ci, o] with the taps flipped (0 past outC).</summary>
    [SkipLocalsInit]
    private static void FilterChannels(float* w, float* u, int ci, int o0, int inC, int outC, float scale, bool transposed)
    {
        int oV = Lanes16(outC);
        var taps = stackalloc Vector512<float>[16];
        FilterTaps(w, taps, ci, o0, inC, outC, transposed);
        var t = stackalloc Vector512<float>[18];   // G g: 6 rows of 3
        for (int c = 0; c < 3; c++)
            InterpolateFilter(taps[c], taps[3 + c], taps[6 + c], t + c, 3, 1f);
        float* dst = u + (long)ci * oV + o0;
        long xiStride = (long)inC * oV;
        var row = stackalloc Vector512<float>[6];
        for (int i = 0; i < 6; i++)
        {
            InterpolateFilter(t[3 * i], t[3 * i + 1], t[3 * i + 2], row, 1, scale);
            for (int j = 0; j < 6; j++) row[j].Store(dst + (6 * i + j) * xiStride);
        }
    }

    /// <summary>taps[3 r + c] = g[r][c] of the 16 filters (o0 + lane, ci): w[o, ci] or, transposed, w[ci, o] rotated by
    /// 180 degrees (the input gradient's kernel); 0 past outC. taps has room for 16 vectors.</summary>
    [SkipLocalsInit]
    private static void FilterTaps(float* w, Vector512<float>* taps, int ci, int o0, int inC, int outC, bool transposed)
    {
        int no = Math.Min(16, outC - o0);
        var rows = stackalloc Vector512<float>[16];
        var nine = Vector512.LessThan(Vector512<int>.Indices, Vector512.Create(9)).AsSingle();
        float* first = transposed ? w + ((long)ci * outC + o0) * 9 : w + ((long)o0 * inC + ci) * 9;
        long stride = transposed ? 9 : (long)inC * 9;
        for (int l = 0; l < 16; l++)
            rows[l] = l < no ? Avx512F.MaskLoad(first + l * stride, nine, Vector512<float>.Zero) : Vector512<float>.Zero;
        Simd.Transpose16(rows, taps);
        if (transposed)
            for (int k = 0; k < 4; k++) (taps[k], taps[8 - k]) = (taps[8 - k], taps[k]);
    }

    /// <summary>dst[k stride] = scale (G g)[k] for k &lt; 6, 16 filters at a time (<see cref="InterpolateFilter(float, float, float, float*, int, float)"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void InterpolateFilter(Vector512<float> g0, Vector512<float> g1, Vector512<float> g2, Vector512<float>* dst, int stride, float scale)
    {
        var even = g0 + g2;
        dst[0] = g0 * (scale / 4);
        dst[stride] = (even + g1) * (-scale / 6);
        dst[2 * stride] = (even - g1) * (-scale / 6);
        var quarter = Vector512.FusedMultiplyAdd(g0, Vector512.Create(scale / 24), g2 * (scale / 6));
        dst[3 * stride] = Vector512.FusedMultiplyAdd(g1, Vector512.Create(scale / 12), quarter);
        dst[4 * stride] = Vector512.FusedMultiplyAdd(g1, Vector512.Create(-scale / 12), quarter);
        dst[5 * stride] = g2 * scale;
    }

    /// <summary>Blocks [b0, b1) of the forward products: the image rows the block's tiles read laid out channels
    /// last, input transform, 36 products, output transform.</summary>
    private readonly struct ChannelForwardBlocks(float* x, float* u, float* y, Epilogue epilogue, int inC, int h, int wd, int outC,
        int tilesY, int tilesX, long tiles, long strips, long blocks, int blockStrips) : IRangeBody
    {
        [SkipLocalsInit]
        public void Run(long b0, long b1)
        {
            int iV = Lanes16(inC), oV = Lanes16(outC), rows = blockStrips * MR, perSample = tilesY * tilesX, wp = 4 * tilesX + 2;
            long most = 0;
            for (long b = b0; b < b1; b++) most = Math.Max(most, ImageRows(b));
            float* v = Align64(Scratch(36L * rows * (iV + oV) + most * wp * iV + 16));
            float* m = v + 36L * rows * iV;
            float* xt = m + 36L * rows * oV;
            // A block's tiles lie in at most one sample each: room for a segment per tile.
            var segments = stackalloc float*[rows];
            var firstTileRow = stackalloc int[rows];
            for (long b = b0; b < b1; b++)
            {
                var (t0, t1) = Tiles(b);
                int count = (int)(t1 - t0), padded = RoundUp(count, MR);
                // The block's image rows, sample by sample: the tile rows its tiles lie in, with the two
                // rows of border each 6x6 patch reads (so a sample's segment is 4 k + 2 rows for k tile rows).
                long s0 = t0 / perSample, sLast = (t1 - 1) / perSample;
                float* next = xt;
                for (long s = s0; s <= sLast; s++)
                {
                    var (tyA, segmentRows) = Segment(s, t0, t1);
                    segments[s - s0] = next;
                    firstTileRow[s - s0] = tyA;
                    for (int c0 = 0; c0 < iV; c0 += 16) ChannelsLastRows(x, next, (int)s, c0, inC, h, wd, wp, 4 * tyA - 1, segmentRows);
                    next += (long)segmentRows * wp * iV;
                }
                // Rows past the block's tiles feed the last strip: zeros, not stale values.
                if (padded > count)
                    for (int xi = 0; xi < 36; xi++) new Span<float>(v + ((long)xi * rows + count) * iV, (padded - count) * iV).Clear();
                for (int j = 0; j < count; j++)
                {
                    long t = t0 + j;
                    long s = t / perSample;
                    int r = (int)(t % perSample), ty = r / tilesX - firstTileRow[s - s0];
                    float* patch = segments[s - s0] + ((long)4 * ty * wp + 4 * (r % tilesX)) * iV;
                    InputTile(patch, (long)wp * iV, iV, v + (long)j * iV, (long)rows * iV);
                }
                for (int xi = 0; xi < 36; xi++)
                {
                    float* vx = v + (long)xi * rows * iV, mx = m + (long)xi * rows * oV, ux = u + (long)xi * inC * oV;
                    int o0 = 0;
                    for (; o0 + 64 <= oV; o0 += 64)
                        for (int t = 0; t < padded; t += MR) RowsKernel64(inC, vx + (long)t * iV, iV, ux + o0, oV, mx + (long)t * oV + o0, oV);
                    for (; o0 < oV; o0 += 16)
                        for (int t = 0; t < padded; t += MR) RowsKernel16(inC, vx + (long)t * iV, iV, ux + o0, oV, mx + (long)t * oV + o0, oV);
                }
                for (int j = 0; j < count; j++)
                {
                    long t = t0 + j;
                    int s = (int)(t / perSample), r = (int)(t % perSample);
                    OutputTile(m + (long)j * oV, (long)rows * oV, y, epilogue, s, 4 * (r / tilesX), 4 * (r % tilesX), outC, h, wd);
                }
            }
        }

        /// <summary>The tiles [t0, t1) of block b.</summary>
        private (long, long) Tiles(long b) => (strips * b / blocks * MR, Math.Min(tiles, strips * (b + 1) / blocks * MR));

        /// <summary>Sample s's part of the tiles [t0, t1): its first tile row, and the image rows it reads (4 k + 2
        /// for k tile rows: the tiles' rows and the border row above and below).</summary>
        private (int FirstTileRow, int Rows) Segment(long s, long t0, long t1)
        {
            int perSample = tilesY * tilesX;
            int first = s == t0 / perSample ? (int)(t0 % perSample) / tilesX : 0;
            int last = s == (t1 - 1) / perSample ? (int)((t1 - 1) % perSample) / tilesX : tilesY - 1;
            return (first, 4 * (last - first + 1) + 2);
        }

        /// <summary>Image rows block b lays out: its samples' segments together.</summary>
        private long ImageRows(long b)
        {
            var (t0, t1) = Tiles(b);
            int perSample = tilesY * tilesX;
            long total = 0;
            for (long s = t0 / perSample; s <= (t1 - 1) / perSample; s++) total += Segment(s, t0, t1).Rows;
            return total;
        }
    }

    /// <summary>V = B^T d B of one 6x6 patch (rows rowStride apart, pixels cV apart), every 16-channel group:
    /// dst[xi xiStride + c] for channels c &lt; cV.</summary>
    [SkipLocalsInit]
    private static void InputTile(float* patch, long rowStride, int cV, float* dst, long xiStride)
    {
        var e = stackalloc Vector512<float>[36];
        for (int c0 = 0; c0 < cV; c0 += 16)
        {
            for (int r = 0; r < 6; r++)
            {
                float* p = patch + r * rowStride + c0;
                BTransform(Vector512.Load(p), Vector512.Load(p + cV), Vector512.Load(p + 2 * cV), Vector512.Load(p + 3 * cV),
                    Vector512.Load(p + 4 * cV), Vector512.Load(p + 5 * cV), out e[6 * r], out e[6 * r + 1], out e[6 * r + 2],
                    out e[6 * r + 3], out e[6 * r + 4], out e[6 * r + 5]);
            }
            float* d = dst + c0;
            for (int c = 0; c < 6; c++)
            {
                BTransform(e[c], e[6 + c], e[12 + c], e[18 + c], e[24 + c], e[30 + c], out var v0, out var v1, out var v2, out var v3, out var v4, out var v5);
                v0.Store(d + c * xiStride); v1.Store(d + (6 + c) * xiStride); v2.Store(d + (12 + c) * xiStride);
                v3.Store(d + (18 + c) * xiStride); v4.Store(d + (24 + c) * xiStride); v5.Store(d + (30 + c) * xiStride);
            }
        }
    }

    /// <summary>Y = A^T M A of one tile for every 16 output channels (m[xi xiStride + co]), with the epilogue,
    /// transposed to [co][pixel] and stored where inside the image.</summary>
    [SkipLocalsInit]
    private static void OutputTile(float* m, long xiStride, float* y, Epilogue epilogue, int s, int oy, int ox, int outC, int h, int wd)
    {
        var srows = stackalloc Vector512<float>[24];   // A^T M: 4 rows of 6
        var pixels = stackalloc Vector512<float>[16];
        var channels = stackalloc Vector512<float>[16];
        int rowsInside = Math.Min(4, h - oy), colsInside = Math.Min(4, wd - ox);
        long plane = (long)h * wd;
        for (int o0 = 0; o0 < outC; o0 += 16)
        {
            float* src = m + o0;
            for (int c = 0; c < 6; c++)
            {
                float* col = src + c * xiStride;
                ATransform(Vector512.Load(col), Vector512.Load(col + 6 * xiStride), Vector512.Load(col + 12 * xiStride),
                    Vector512.Load(col + 18 * xiStride), Vector512.Load(col + 24 * xiStride), Vector512.Load(col + 30 * xiStride),
                    out srows[c], out srows[6 + c], out srows[12 + c], out srows[18 + c]);
            }
            for (int r = 0; r < 4; r++)
            {
                Vector512<float>* sr = srows + 6 * r;
                ATransform(sr[0], sr[1], sr[2], sr[3], sr[4], sr[5], out pixels[4 * r], out pixels[4 * r + 1], out pixels[4 * r + 2], out pixels[4 * r + 3]);
            }
            if (epilogue.Active)
            {
                // 16 output channels per vector: each lane its own bias.
                var b = epilogue.Lanes(o0, outC);
                for (int p = 0; p < 16; p++) pixels[p] = epilogue.Apply(pixels[p], b);
            }
            Simd.Transpose16(pixels, channels);
            int no = Math.Min(16, outC - o0);
            float* dst = y + ((long)s * outC + o0) * plane + (long)oy * wd + ox;
            if (wd == 4 && rowsInside == 4)
            {
                // The tile is four whole image rows: one vector per channel.
                for (int l = 0; l < no; l++) channels[l].Store(dst + l * plane);
            }
            else if (colsInside == 4)
            {
                for (int l = 0; l < no; l++)
                {
                    float* d = dst + l * plane;
                    var q = channels[l];
                    q.GetLower().GetLower().Store(d);
                    if (rowsInside > 1) Avx512F.ExtractVector128(q, 1).Store(d + wd);
                    if (rowsInside > 2) Avx512F.ExtractVector128(q, 2).Store(d + 2L * wd);
                    if (rowsInside > 3) Avx512F.ExtractVector128(q, 3).Store(d + 3L * wd);
                }
            }
            else
            {
                for (int l = 0; l < no; l++)
                {
                    float* d = dst + l * plane, lane = (float*)(channels + l);
                    for (int r = 0; r < rowsInside; r++)
                        for (int c = 0; c < colsInside; c++) d[(long)r * wd + c] = lane[4 * r + c];
                }
            }
        }
    }

    // ----------------------------------------------------------------------------- weight gradient

    /// <summary>gw = scale sum over the batch of the correlation of gy with x (gw: [cout, cin, 3, 3]) by F(4x4, 3x3)
    /// with channels in the lanes; <paramref name="scratch"/> holds <see cref="ChannelWeightScratchLength"/> floats.</summary>
    public static void ChannelBackwardWeight(float* x, float* gy, float* gw, float* scratch, int n, int cin, int h, int wd, int cout, float scale)
    {
        int tilesY = (h + 3) / 4, tilesX = (wd + 3) / 4, iV = Lanes16(cin), oV = Lanes16(cout);
        long tiles = (long)n * tilesY * tilesX;
        if (tiles <= ChannelRowsMaxTiles)
        {
            BackwardWeightByRows(x, gy, gw, scratch, n, cin, h, wd, cout, scale);
            return;
        }
        int threads = (int)Math.Min(CpuParallel.Threads, tiles);
        float* xt = Align64(scratch);
        float* du = xt + (long)n * (4 * tilesY + 2) * (4 * tilesX + 2) * iV;
        CpuParallel.For((long)n * (iV / 16), 1, new ChannelImages(x, xt, cin, h, wd));
        CpuParallel.For(threads, 1, new ChannelWeightShares(xt, gy, du, cin, cout, h, wd, tilesY, tilesX, tiles, threads));
        CpuParallel.For(cout, 1, new ChannelFilterAdjoint(du, gw, cin, cout, scale, threads));
    }

    /// <summary>Core p of <paramref name="threads"/>: its share of the tiles, ChannelWeightChunk at a time (V[xi][t]
    /// from the image, G[xi][t] = A dY A^T from the output gradient), then dU_p[xi][co][ci] += sum over the chunk's
    /// tiles of G[xi][t][co] V[xi][t][ci], in its own slice of dU.</summary>
    private readonly struct ChannelWeightShares(float* xt, float* gy, float* du, int cin, int cout, int h, int wd, int tilesY, int tilesX, long tiles,
        int threads) : IRangeBody
    {
        public void Run(long p0, long p1)
        {
            int iV = Lanes16(cin), oV = Lanes16(cout), wp = 4 * tilesX + 2;
            // G gets 16 floats of slack: the last strip of output channels reads up to 5 past the last tile.
            float* v = Align64(Scratch(36L * ChannelWeightChunk * (iV + oV) + 48));
            float* g = v + 36L * ChannelWeightChunk * iV;
            for (long p = p0; p < p1; p++)
            {
                float* dUp = du + p * 36L * oV * iV;
                long first = tiles * p / threads, last = tiles * (p + 1) / threads;
                for (long c0 = first; c0 < last; c0 += ChannelWeightChunk)
                {
                    int count = (int)Math.Min(ChannelWeightChunk, last - c0);
                    for (int j = 0; j < count; j++)
                    {
                        long t = c0 + j;
                        int s = (int)(t / (tilesY * tilesX)), r = (int)(t % (tilesY * tilesX)), ty = r / tilesX, tx = r % tilesX;
                        float* patch = xt + (((long)s * (4 * tilesY + 2) + 4 * ty) * wp + 4 * tx) * iV;
                        InputTile(patch, (long)wp * iV, iV, v + (long)j * iV, (long)count * iV);
                        GradientTile(gy, s, 4 * ty, 4 * tx, cout, h, wd, g + (long)j * oV, (long)count * oV);
                    }
                    bool accumulate = c0 > first;
                    for (int xi = 0; xi < 36; xi++)
                    {
                        float* vx = v + (long)xi * count * iV, gx = g + (long)xi * count * oV, dx = dUp + (long)xi * oV * iV;
                        for (int co = 0; co < cout; co += MR)
                        {
                            int rows = Math.Min(MR, cout - co);
                            int ci = 0;
                            for (; ci + 64 <= iV; ci += 64) ColumnsKernel64(count, gx + co, oV, vx + ci, iV, dx + (long)co * iV + ci, iV, rows, accumulate);
                            for (; ci < iV; ci += 16) ColumnsKernel16(count, gx + co, oV, vx + ci, iV, dx + (long)co * iV + ci, iV, rows, accumulate);
                        }
                    }
                }
            }
        }
    }

    /// <summary>Lanes 4 r .. 4 r + 3 (row r of a 4x4 tile, one vector per channel) set, the others clear.</summary>
    private static readonly Vector512<float> TileRow1 = TileRow(1), TileRow2 = TileRow(2), TileRow3 = TileRow(3);

    private static Vector512<float> TileRow(int r) => Vector512.Equals(Vector512<int>.Indices >>> 2, Vector512.Create(r)).AsSingle();

    /// <summary>A dY A^T (6x6) of the 4x4 tile of gy (NCHW) whose top-left pixel is (oy, ox) in sample s, every
    /// 16-channel group: dst[xi xiStride + c] for c &lt; Lanes16(cout). The tile is read where it lies: one vector
    /// per channel (its 16 pixels, 0 outside the map), transposed in registers to one vector per pixel.</summary>
    [SkipLocalsInit]
    private static void GradientTile(float* gy, int s, int oy, int ox, int cout, int h, int wd, float* dst, long xiStride)
    {
        var e = stackalloc Vector512<float>[24];   // dY A^T: 4 rows of 6
        var channels = stackalloc Vector512<float>[16];
        var pixels = stackalloc Vector512<float>[16];
        int cV = Lanes16(cout), rowsInside = Math.Min(4, h - oy), colsInside = Math.Min(4, wd - ox);
        long plane = (long)h * wd;
        var inRow = Vector128.LessThan(Vector128<int>.Indices, Vector128.Create(colsInside)).AsSingle();
        for (int c0 = 0; c0 < cV; c0 += 16)
        {
            int nc = Math.Min(16, cout - c0);
            float* first = gy + ((long)s * cout + c0) * plane + (long)oy * wd + ox;
            if (rowsInside == 4 && colsInside == 4)
                for (int l = 0; l < nc; l++)
                {
                    float* q = first + l * plane;
                    var v = Avx512F.BroadcastVector128ToVector512(q);
                    v = Avx512F.BlendVariable(v, Avx512F.BroadcastVector128ToVector512(q + wd), TileRow1);
                    v = Avx512F.BlendVariable(v, Avx512F.BroadcastVector128ToVector512(q + 2L * wd), TileRow2);
                    channels[l] = Avx512F.BlendVariable(v, Avx512F.BroadcastVector128ToVector512(q + 3L * wd), TileRow3);
                }
            else
                for (int l = 0; l < nc; l++)
                {
                    float* q = first + l * plane;
                    var r0 = Avx.MaskLoad(q, inRow);
                    var r1 = rowsInside > 1 ? Avx.MaskLoad(q + wd, inRow) : Vector128<float>.Zero;
                    var r2 = rowsInside > 2 ? Avx.MaskLoad(q + 2L * wd, inRow) : Vector128<float>.Zero;
                    var r3 = rowsInside > 3 ? Avx.MaskLoad(q + 3L * wd, inRow) : Vector128<float>.Zero;
                    channels[l] = Vector512.Create(Vector256.Create(r0, r1), Vector256.Create(r2, r3));
                }
            for (int l = nc; l < 16; l++) channels[l] = Vector512<float>.Zero;
            Simd.Transpose16(channels, pixels);
            for (int r = 0; r < 4; r++)
            {
                Vector512<float>* p = pixels + 4 * r;
                ATransposeTransform(p[0], p[1], p[2], p[3],
                    out e[6 * r], out e[6 * r + 1], out e[6 * r + 2], out e[6 * r + 3], out e[6 * r + 4], out e[6 * r + 5]);
            }
            float* d = dst + c0;
            for (int c = 0; c < 6; c++)
            {
                ATransposeTransform(e[c], e[6 + c], e[12 + c], e[18 + c], out var z0, out var z1, out var z2, out var z3, out var z4, out var z5);
                z0.Store(d + c * xiStride); z1.Store(d + (6 + c) * xiStride); z2.Store(d + (12 + c) * xiStride);
                z3.Store(d + (18 + c) * xiStride); z4.Store(d + (24 + c) * xiStride); z5.Store(d + (30 + c) * xiStride);
            }
        }
    }

    /// <summary>Output channels [c0, c1): gw[co, ci] = scale G^T dU[.][co][ci] G, 16 input channels at a time, dU
    /// summed over the cores' slices first.</summary>
    private readonly struct ChannelFilterAdjoint(float* du, float* gw, int cin, int cout, float scale, int threads) : IRangeBody
    {
        [SkipLocalsInit]
        public void Run(long c0, long c1)
        {
            int iV = Lanes16(cin), oV = Lanes16(cout);
            var t = stackalloc Vector512<float>[18];      // G^T dU: 3 rows of 6
            var taps = stackalloc Vector512<float>[16];   // the 3x3 result, one vector per tap (7 unused)
            var filters = stackalloc Vector512<float>[16];
            var nine = Vector512.LessThan(Vector512<int>.Indices, Vector512.Create(9)).AsSingle();
            var sums = stackalloc Vector512<float>[36];
            long xiStride = (long)oV * iV, slice = 36 * xiStride;
            for (long co = c0; co < c1; co++)
                for (int i0 = 0; i0 < cin; i0 += 16)
                {
                    float* src = du + co * iV + i0;
                    for (int xi = 0; xi < 36; xi++)
                    {
                        var total = Vector512.Load(src + xi * xiStride);
                        for (int p = 1; p < threads; p++) total += Vector512.Load(src + p * slice + xi * xiStride);
                        sums[xi] = total;
                    }
                    for (int c = 0; c < 6; c++)
                        ProjectFilter(sums[c], sums[6 + c], sums[12 + c], sums[18 + c], sums[24 + c], sums[30 + c], t + c, 6, 1f);
                    for (int r = 0; r < 3; r++)
                        ProjectFilter(t[6 * r], t[6 * r + 1], t[6 * r + 2], t[6 * r + 3], t[6 * r + 4], t[6 * r + 5], taps + 3 * r, 1, scale);
                    for (int k = 9; k < 16; k++) taps[k] = Vector512<float>.Zero;
                    Simd.Transpose16(taps, filters);
                    int ni = Math.Min(16, cin - i0);
                    float* dst = gw + (co * cin + i0) * 9;
                    for (int l = 0; l < ni; l++) Avx512F.MaskStore(dst + l * 9, nine, filters[l]);
                }
        }
    }

    /// <summary>dst[k stride] = scale (G^T u)[k] for k &lt; 3, 16 at a time (<see cref="ProjectFilter(float, float, float, float, float, float, float*, int, float)"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void ProjectFilter(Vector512<float> u0, Vector512<float> u1, Vector512<float> u2, Vector512<float> u3, Vector512<float> u4,
        Vector512<float> u5, Vector512<float>* dst, int stride, float scale)
    {
        var sum12 = u1 + u2;
        var sum34 = u3 + u4;
        dst[0] = (u0 * (1f / 4) - sum12 * (1f / 6) + sum34 * (1f / 24)) * scale;
        dst[stride] = ((u2 - u1) * (1f / 6) + (u3 - u4) * (1f / 12)) * scale;
        dst[2 * stride] = ((sum34 - sum12) * (1f / 6) + u5) * scale;
    }

    // ----------------------------------------------------------------------------- helpers

    /// <summary>
    /// Item <paramref name="i"/> of a region that mixes <paramref name="first"/> items of one kind with
    /// total - first of another, spread evenly (as a line is drawn on a grid): true with its index
    /// among the first kind, or false with its index among the second. Any contiguous range of
    /// items then holds each kind in proportion, so the equal shares CpuParallel cuts give every
    /// core its part of both (two kinds placed one after the other would give one core all of one).
    /// </summary>
    internal static bool Interleave(long i, long first, long total, out long index)
    {
        long before = i * first / total, through = (i + 1) * first / total;
        if (through > before)
        {
            index = before;
            return true;
        }
        index = i - before;
        return false;
    }

    /// <summary>c[r ldc + j] = sum over p &lt; k of a[r lda + p] b[p ldb + j] for r &lt; 6, j &lt; 64: the micro-kernel
    /// with A read as six rows (the tiles, K along each) instead of packed; b and c 64-byte aligned.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void RowsKernel64(int k, float* a, long lda, float* b, long ldb, float* c, long ldc)
    {
        float* a0 = a, a1 = a + lda, a2 = a + 2 * lda, a3 = a + 3 * lda, a4 = a + 4 * lda, a5 = a + 5 * lda;
        Vector512<float> c00 = default, c01 = default, c02 = default, c03 = default;
        Vector512<float> c10 = default, c11 = default, c12 = default, c13 = default;
        Vector512<float> c20 = default, c21 = default, c22 = default, c23 = default;
        Vector512<float> c30 = default, c31 = default, c32 = default, c33 = default;
        Vector512<float> c40 = default, c41 = default, c42 = default, c43 = default;
        Vector512<float> c50 = default, c51 = default, c52 = default, c53 = default;
        for (int p = 0; p < k; p++, b += ldb)
        {
            var b0 = Avx512F.LoadAlignedVector512(b);
            var b1 = Avx512F.LoadAlignedVector512(b + 16);
            var b2 = Avx512F.LoadAlignedVector512(b + 32);
            var b3 = Avx512F.LoadAlignedVector512(b + 48);
            var x = Vector512.Create(a0[p]);
            c00 = Avx512F.FusedMultiplyAdd(x, b0, c00); c01 = Avx512F.FusedMultiplyAdd(x, b1, c01);
            c02 = Avx512F.FusedMultiplyAdd(x, b2, c02); c03 = Avx512F.FusedMultiplyAdd(x, b3, c03);
            x = Vector512.Create(a1[p]);
            c10 = Avx512F.FusedMultiplyAdd(x, b0, c10); c11 = Avx512F.FusedMultiplyAdd(x, b1, c11);
            c12 = Avx512F.FusedMultiplyAdd(x, b2, c12); c13 = Avx512F.FusedMultiplyAdd(x, b3, c13);
            x = Vector512.Create(a2[p]);
            c20 = Avx512F.FusedMultiplyAdd(x, b0, c20); c21 = Avx512F.FusedMultiplyAdd(x, b1, c21);
            c22 = Avx512F.FusedMultiplyAdd(x, b2, c22); c23 = Avx512F.FusedMultiplyAdd(x, b3, c23);
            x = Vector512.Create(a3[p]);
            c30 = Avx512F.FusedMultiplyAdd(x, b0, c30); c31 = Avx512F.FusedMultiplyAdd(x, b1, c31);
            c32 = Avx512F.FusedMultiplyAdd(x, b2, c32); c33 = Avx512F.FusedMultiplyAdd(x, b3, c33);
            x = Vector512.Create(a4[p]);
            c40 = Avx512F.FusedMultiplyAdd(x, b0, c40); c41 = Avx512F.FusedMultiplyAdd(x, b1, c41);
            c42 = Avx512F.FusedMultiplyAdd(x, b2, c42); c43 = Avx512F.FusedMultiplyAdd(x, b3, c43);
            x = Vector512.Create(a5[p]);
            c50 = Avx512F.FusedMultiplyAdd(x, b0, c50); c51 = Avx512F.FusedMultiplyAdd(x, b1, c51);
            c52 = Avx512F.FusedMultiplyAdd(x, b2, c52); c53 = Avx512F.FusedMultiplyAdd(x, b3, c53);
        }
        Store4(c, c00, c01, c02, c03); Store4(c + ldc, c10, c11, c12, c13); Store4(c + 2 * ldc, c20, c21, c22, c23);
        Store4(c + 3 * ldc, c30, c31, c32, c33); Store4(c + 4 * ldc, c40, c41, c42, c43); Store4(c + 5 * ldc, c50, c51, c52, c53);
    }

    /// <summary><see cref="RowsKernel64"/> for the last 16 columns of a width that is not a multiple of 64.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void RowsKernel16(int k, float* a, long lda, float* b, long ldb, float* c, long ldc)
    {
        float* a0 = a, a1 = a + lda, a2 = a + 2 * lda, a3 = a + 3 * lda, a4 = a + 4 * lda, a5 = a + 5 * lda;
        Vector512<float> c0 = default, c1 = default, c2 = default, c3 = default, c4 = default, c5 = default;
        for (int p = 0; p < k; p++, b += ldb)
        {
            var b0 = Avx512F.LoadAlignedVector512(b);
            c0 = Avx512F.FusedMultiplyAdd(Vector512.Create(a0[p]), b0, c0);
            c1 = Avx512F.FusedMultiplyAdd(Vector512.Create(a1[p]), b0, c1);
            c2 = Avx512F.FusedMultiplyAdd(Vector512.Create(a2[p]), b0, c2);
            c3 = Avx512F.FusedMultiplyAdd(Vector512.Create(a3[p]), b0, c3);
            c4 = Avx512F.FusedMultiplyAdd(Vector512.Create(a4[p]), b0, c4);
            c5 = Avx512F.FusedMultiplyAdd(Vector512.Create(a5[p]), b0, c5);
        }
        c0.Store(c); c1.Store(c + ldc); c2.Store(c + 2 * ldc); c3.Store(c + 3 * ldc); c4.Store(c + 4 * ldc); c5.Store(c + 5 * ldc);
    }

    /// <summary>c[r ldc + j] = sum over p &lt; k of a[p lda + r] b[p ldb + j] for r &lt; rows (of 6), j &lt; 64: the
    /// micro-kernel with A read as K rows of six consecutive values (output channels of one tile).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void ColumnsKernel64(int k, float* a, long lda, float* b, long ldb, float* c, long ldc, int rows, bool accumulate)
    {
        Vector512<float> c00 = default, c01 = default, c02 = default, c03 = default;
        Vector512<float> c10 = default, c11 = default, c12 = default, c13 = default;
        Vector512<float> c20 = default, c21 = default, c22 = default, c23 = default;
        Vector512<float> c30 = default, c31 = default, c32 = default, c33 = default;
        Vector512<float> c40 = default, c41 = default, c42 = default, c43 = default;
        Vector512<float> c50 = default, c51 = default, c52 = default, c53 = default;
        for (int p = 0; p < k; p++, a += lda, b += ldb)
        {
            var b0 = Avx512F.LoadAlignedVector512(b);
            var b1 = Avx512F.LoadAlignedVector512(b + 16);
            var b2 = Avx512F.LoadAlignedVector512(b + 32);
            var b3 = Avx512F.LoadAlignedVector512(b + 48);
            var x = Vector512.Create(a[0]);
            c00 = Avx512F.FusedMultiplyAdd(x, b0, c00); c01 = Avx512F.FusedMultiplyAdd(x, b1, c01);
            c02 = Avx512F.FusedMultiplyAdd(x, b2, c02); c03 = Avx512F.FusedMultiplyAdd(x, b3, c03);
            x = Vector512.Create(a[1]);
            c10 = Avx512F.FusedMultiplyAdd(x, b0, c10); c11 = Avx512F.FusedMultiplyAdd(x, b1, c11);
            c12 = Avx512F.FusedMultiplyAdd(x, b2, c12); c13 = Avx512F.FusedMultiplyAdd(x, b3, c13);
            x = Vector512.Create(a[2]);
            c20 = Avx512F.FusedMultiplyAdd(x, b0, c20); c21 = Avx512F.FusedMultiplyAdd(x, b1, c21);
            c22 = Avx512F.FusedMultiplyAdd(x, b2, c22); c23 = Avx512F.FusedMultiplyAdd(x, b3, c23);
            x = Vector512.Create(a[3]);
            c30 = Avx512F.FusedMultiplyAdd(x, b0, c30); c31 = Avx512F.FusedMultiplyAdd(x, b1, c31);
            c32 = Avx512F.FusedMultiplyAdd(x, b2, c32); c33 = Avx512F.FusedMultiplyAdd(x, b3, c33);
            x = Vector512.Create(a[4]);
            c40 = Avx512F.FusedMultiplyAdd(x, b0, c40); c41 = Avx512F.FusedMultiplyAdd(x, b1, c41);
            c42 = Avx512F.FusedMultiplyAdd(x, b2, c42); c43 = Avx512F.FusedMultiplyAdd(x, b3, c43);
            x = Vector512.Create(a[5]);
            c50 = Avx512F.FusedMultiplyAdd(x, b0, c50); c51 = Avx512F.FusedMultiplyAdd(x, b1, c51);
            c52 = Avx512F.FusedMultiplyAdd(x, b2, c52); c53 = Avx512F.FusedMultiplyAdd(x, b3, c53);
        }
        Store4(c, c00, c01, c02, c03, accumulate);
        if (rows > 1) Store4(c + ldc, c10, c11, c12, c13, accumulate);
        if (rows > 2) Store4(c + 2 * ldc, c20, c21, c22, c23, accumulate);
        if (rows > 3) Store4(c + 3 * ldc, c30, c31, c32, c33, accumulate);
        if (rows > 4) Store4(c + 4 * ldc, c40, c41, c42, c43, accumulate);
        if (rows > 5) Store4(c + 5 * ldc, c50, c51, c52, c53, accumulate);
    }

    /// <summary><see cref="ColumnsKernel64"/> for the last 16 columns of a width that is not a multiple of 64.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void ColumnsKernel16(int k, float* a, long lda, float* b, long ldb, float* c, long ldc, int rows, bool accumulate)
    {
        Vector512<float> c0 = default, c1 = default, c2 = default, c3 = default, c4 = default, c5 = default;
        for (int p = 0; p < k; p++, a += lda, b += ldb)
        {
            var b0 = Avx512F.LoadAlignedVector512(b);
            c0 = Avx512F.FusedMultiplyAdd(Vector512.Create(a[0]), b0, c0);
            c1 = Avx512F.FusedMultiplyAdd(Vector512.Create(a[1]), b0, c1);
            c2 = Avx512F.FusedMultiplyAdd(Vector512.Create(a[2]), b0, c2);
            c3 = Avx512F.FusedMultiplyAdd(Vector512.Create(a[3]), b0, c3);
            c4 = Avx512F.FusedMultiplyAdd(Vector512.Create(a[4]), b0, c4);
            c5 = Avx512F.FusedMultiplyAdd(Vector512.Create(a[5]), b0, c5);
        }
        Store1(c, c0, accumulate);
        if (rows > 1) Store1(c + ldc, c1, accumulate);
        if (rows > 2) Store1(c + 2 * ldc, c2, accumulate);
        if (rows > 3) Store1(c + 3 * ldc, c3, accumulate);
        if (rows > 4) Store1(c + 4 * ldc, c4, accumulate);
        if (rows > 5) Store1(c + 5 * ldc, c5, accumulate);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store4(float* c, Vector512<float> v0, Vector512<float> v1, Vector512<float> v2, Vector512<float> v3, bool accumulate = false)
    {
        Store1(c, v0, accumulate); Store1(c + 16, v1, accumulate); Store1(c + 32, v2, accumulate); Store1(c + 48, v3, accumulate);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store1(float* c, Vector512<float> v, bool accumulate)
    {
        if (accumulate) v += Vector512.Load(c);
        v.Store(c);
    }
}
