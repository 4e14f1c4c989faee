using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace RawGan.Engine.Backends.Cpu;

// ---------------------------------------------------------------------------------------------
// Winograd F(4x4, 3x3) for CPUs with AVX2 and no AVX-512: the arithmetic of ForwardF4 and of
// BackwardWeight with f4 (Winograd.cs, where the matrices B^T, G and A^T are written out), in the
// three stages a textbook draws, one plain pass each, 8 tiles in every vector.
//
// The tiles (4x4 outputs, 6x6 input patches) are numbered over the batch, sample by sample, and
// taken Chunk = 64 at a time: one micro-kernel width (Sgemm.NR). For each chunk
//   1. input     V[xi][ci][t] = (B^T d B)[xi] of tile t's patch d in channel ci. Where each tile's six patch
//                rows lie, and which columns are in the image, is worked out once per 8 tiles (offsets and
//                masks; a row outside the image has an empty mask), so the loads of every channel are
//                straight-line code: a patch row of 8 tiles is 16 masked loads of 4 columns and two 4x4
//                transposes per 128-bit half (Quads), or, for a run of 8 tiles along a tile row (32x32
//                maps and up), nine 128-bit loads 4 floats apart, since tile t + 1's first columns are
//                tile t's fifth and sixth. The transform runs on vectors of 8 tiles and stores whole
//                vectors: V[xi] is laid out as the micro-kernel's packed B panel, [ci][64].
//   2. products  M[xi][co][t] = sum over ci of U[xi][co, ci] V[xi][ci][t]: 36 products, each the
//                AVX2 micro-kernel (Sgemm.Kernel16: 6 x 16 per pass, a pass's 16 columns of V kept in
//                L1 while every strip of U streams past) on U and V read in place. Its tile is six rows
//                of M, so it writes M directly; K = cin exactly (129 costs nothing extra). U = G g G^T
//                is made once per call, straight into the micro-kernel's packed-A layout (the one
//                FilterLoopF4 writes for the AVX-512 version), the six output channels of a strip in
//                the lanes (eight filters' taps at a time staged by transposes), with multiplies for
//                the 1/6, 1/12 and 1/24: at 8x8 the 128 x 128 filters
//                cost as much to transform as the 64 tiles' products, and the scalar version, which
//                divides, took longer than them.
//   3. output    y = A^T M A, 8 tiles per vector, the layer's bias and leaky ReLU (Epilogue.cs), and
//                the 4x4 transposes back to each tile's four rows of four pixels.
// Every stage is split across the cores (1 by input channels, 2 by xi, 3 by output channels). A
// chunk with fewer than 64 tiles (the last; the only one at 8x8 and below with batch 16) runs its
// tiles rounded up to 16 (a micro-kernel pass), the extra ones zero patches whose outputs are not
// stored.
//
// The weight gradient's products dU[xi][co, ci] = sum over the chunk's tiles t of dM[xi][co][t]
// V[xi][ci][t] have the tiles as K, so it keeps both operands channels last instead: stage 1 makes
// V[xi][t][ci] (eight channels' vectors of 8 tiles transposed 8 x 8 on their way out), the output
// gradient's tiles are expanded the other way, dM = A dY A^T, into dM[xi][t][co] the same way, and
// then row t of each is six adjacent output channels (the micro-kernel's A) and sixteen adjacent
// input channels (its B): the 36 products run the micro-kernel on both in place
// (Sgemm.Kernel16Strided), each chunk's sum added into dU (split by xi, so each dU[xi] has one
// writer), with no packing. At the end dg = scale G^T dU G per filter, 8 input channels per vector.
// Packing both operands through Sgemm.Multiply for every chunk (K = 64) had made these products
// half as fast per FLOP as the forward's.
// ---------------------------------------------------------------------------------------------

internal static unsafe partial class Winograd
{
    private const int Chunk = Sgemm.NR;   // tiles per chunk: one micro-kernel width

    /// <summary>Floats from one xi's plane of V, M or dM to the next: the plane and a cache line more. Planes of
    /// exactly 32 KiB (128 channels x 64 tiles) would put the 36 stores of a tile's transform in one L1 set
    /// (8 ways), each evicting another.</summary>
    private static long Plane(int channels) => (long)channels * Chunk + 16;

    /// <summary>Floats of scratch <see cref="Avx2Forward"/> needs: the packed filters, and V and M of one chunk.</summary>
    public static long Avx2ForwardScratchLength(int inC, int outC) => PackedFilterLengthF4(inC, outC) + 36 * (Plane(inC) + Plane(RoundUp(outC, MR)));

    /// <summary>The weight gradient's layouts, channels last: V[xi][t][ci] in rows of <see cref="InRow"/> floats,
    /// dM[xi][t][co] in rows of <see cref="OutRow"/>, dU[xi][co][ci] of <see cref="OutStrips"/> rows of InRow, each
    /// padded with zeros (16 input channels per micro-kernel pass, 6 output channels per strip, 8 per vector).</summary>
    private readonly struct WeightLayout(int cin, int cout)
    {
        public readonly int InRow = RoundUp(cin, 16), OutStrips = RoundUp(cout, MR), OutRow = RoundUp(RoundUp(cout, MR), 8);

        /// <summary>Floats from one xi's plane of V (or dM) to the next: a chunk's rows and a cache line more.</summary>
        public long InPlane => (long)Chunk * InRow + 16;
        public long OutPlane => (long)Chunk * OutRow + 16;
        public long DuLength => 36L * OutStrips * InRow;
        public long ChunkLength => 36 * (InPlane + OutPlane);

        /// <summary>V and dM of one chunk, and a dU for each of <paramref name="parts"/> cores.</summary>
        public long Length(int parts) => ChunkLength + parts * DuLength;
    }

    /// <summary>Floats of scratch <see cref="Avx2BackwardWeight"/> needs: V and dM of one chunk, and a dU per core.</summary>
    public static long Avx2WeightScratchLength(int cin, int cout) => new WeightLayout(cin, cout).Length(CpuParallel.Threads);

    /// <summary>y = scale conv3x3(x, w) by F(4x4, 3x3) with AVX2, then the <paramref name="epilogue"/>;
    /// w is [outC, inC, 3, 3]; <paramref name="scratch"/> holds <see cref="Avx2ForwardScratchLength"/> floats.</summary>
    public static void Avx2Forward(float* x, float* w, float* y, float* scratch, int n, int inC, int h, int wd, int outC, float scale, Epilogue epilogue)
    {
        int coutPad = RoundUp(outC, MR);
        float* u = scratch, v = u + PackedFilterLengthF4(inC, outC), m = v + 36 * Plane(inC);
        CpuParallel.For(coutPad / MR, 1, new Avx2FilterStage(w, u, inC, outC, scale));
        var grid = new TileGrid(n, h, wd);
        long chunks = (grid.Tiles + Chunk - 1) / Chunk;
        if (chunks >= 2 * CpuParallel.Threads)
        {
            // Enough chunks to share out: each core runs whole chunks, all three stages in its own V and M,
            // taking the next chunk when it is done (no barrier between the stages).
            CpuParallel.For(chunks, 1, new Avx2Chunks(x, u, y, inC, outC, coutPad, grid, epilogue), (int)chunks);
            return;
        }
        for (long t0 = 0; t0 < grid.Tiles; t0 += Chunk)
        {
            int active = grid.Active(t0);
            CpuParallel.For(inC, 1, new Avx2InputStage(x, v, inC, grid, t0, active));
            CpuParallel.For(36, 1, new Avx2ProductStage(u, v, m, inC, coutPad, active));
            CpuParallel.For(outC, 1, new Avx2OutputStage(m, y, outC, coutPad, grid, t0, epilogue));
        }
    }

    /// <summary>gw = the weight gradient of y = scale conv3x3(x, w) for the output gradient gy, by F(4x4, 3x3) with
    /// AVX2; <paramref name="scratch"/> holds <see cref="Avx2WeightScratchLength"/> floats.</summary>
    public static void Avx2BackwardWeight(float* x, float* gy, float* gw, float* scratch, int n, int cin, int h, int wd, int cout, float scale)
    {
        var layout = new WeightLayout(cin, cout);
        float* v = scratch, g = v + 36 * layout.InPlane, du = g + 36 * layout.OutPlane;
        var grid = new TileGrid(n, h, wd);
        long chunks = (grid.Tiles + Chunk - 1) / Chunk;
        int parts = CpuParallel.Threads;
        if (chunks >= 2 * parts)
        {
            // Enough chunks to share out: core p runs the p-th share of them whole (all three stages, its own V
            // and dM) into its own dU, and the adjoint adds the dUs in order. The shares are fixed, so the sum
            // is the same from run to run.
            CpuParallel.For(parts, 1, new Avx2WeightChunks(x, gy, du, cin, cout, layout, grid, chunks, parts));
            CpuParallel.For(cout, 1, new Avx2FilterAdjoint(du, gw, cin, layout, parts, scale));
            return;
        }
        for (long t0 = 0; t0 < grid.Tiles; t0 += Chunk)
        {
            int active = grid.Active(t0);
            CpuParallel.For(layout.InRow / 8, 1, new Avx2InputStage(x, v, cin, grid, t0, active, true, layout));
            CpuParallel.For(layout.OutRow / 8, 1, new Avx2GradientStage(gy, g, cout, layout, grid, t0, active));
            CpuParallel.For(36, 1, new Avx2WeightProducts(g, v, du, layout, active, t0 == 0));
        }
        CpuParallel.For(cout, 1, new Avx2FilterAdjoint(du, gw, cin, layout, 1, scale));
    }

    /// <summary>Chunks [k0, k1) of the forward pass, each through the three stages on this core, in its V and M.</summary>
    private readonly struct Avx2Chunks(float* x, float* u, float* y, int inC, int outC, int coutPad, TileGrid grid, Epilogue epilogue) : IRangeBody
    {
        public void Run(long k0, long k1)
        {
            float* v = Scratch(36 * (Plane(inC) + Plane(coutPad))), m = v + 36 * Plane(inC);
            for (long k = k0; k < k1; k++)
            {
                long t0 = k * Chunk;
                int active = grid.Active(t0);
                new Avx2InputStage(x, v, inC, grid, t0, active).Run(0, inC);
                new Avx2ProductStage(u, v, m, inC, coutPad, active).Run(0, 36);
                new Avx2OutputStage(m, y, outC, coutPad, grid, t0, epilogue).Run(0, outC);
            }
        }
    }

    /// <summary>Shares [p0, p1) of <paramref name="parts"/> of the weight gradient's chunks: share p's chunks through
    /// the three stages on this core, its V and dM in this core's scratch, summed into dU number p.</summary>
    private readonly struct Avx2WeightChunks(float* x, float* gy, float* du, int cin, int cout, WeightLayout layout, TileGrid grid, long chunks, int parts)
        : IRangeBody
    {
        public void Run(long p0, long p1)
        {
            float* v = Scratch(layout.ChunkLength), g = v + 36 * layout.InPlane;
            for (long p = p0; p < p1; p++)
            {
                long k0 = chunks * p / parts, k1 = chunks * (p + 1) / parts;
                for (long k = k0; k < k1; k++)
                {
                    long t0 = k * Chunk;
                    int active = grid.Active(t0);
                    new Avx2InputStage(x, v, cin, grid, t0, active, true, layout).Run(0, layout.InRow / 8);
                    new Avx2GradientStage(gy, g, cout, layout, grid, t0, active).Run(0, layout.OutRow / 8);
                    new Avx2WeightProducts(g, v, du + p * layout.DuLength, layout, active, k == k0).Run(0, 36);
                }
            }
        }
    }

    /// <summary>The batch's 4x4 output tiles: n samples of tilesY x tilesX.</summary>
    private readonly struct TileGrid(int n, int h, int wd)
    {
        public readonly int H = h, W = wd, TilesY = (h + 3) / 4, TilesX = (wd + 3) / 4;
        public long Tiles => (long)n * TilesY * TilesX;

        /// <summary>Tiles of the chunk from <paramref name="t0"/> that the stages run: its count rounded up to a micro-kernel pass.</summary>
        public int Active(long t0) => RoundUp((int)Math.Min(Chunk, Tiles - t0), 16);

        /// <summary>The chunk's tiles from <paramref name="t0"/> (at most Chunk; the count past the batch's end is cut).</summary>
        public void Decode(long t0, ref TileBlock block) => block.Decode(t0, (int)Math.Min(Chunk, Tiles - t0), TilesY, TilesX, 4);
    }

    /// <summary>V = B^T d B for the chunk's active tiles (0 for tiles past the batch), in one of two layouts. The
    /// forward's (<paramref name="last"/> false): V[xi][ci][t] for the channels [i0, i1). The weight gradient's, channels
    /// last: V[xi][t][ci] in <paramref name="layout"/> for the groups [i0, i1) of 8 input channels (0 past cin), each
    /// group's 36 x 8 vectors of 8 tiles transposed on their way out.</summary>
    private readonly struct Avx2InputStage(float* x, float* v, int cin, TileGrid grid, long t0, int active, bool last = false, WeightLayout layout = default)
        : IRangeBody
    {
        public void Run(long i0, long i1)
        {
            TileBlock block = default;
            grid.Decode(t0, ref block);
            long plane = (long)grid.H * grid.W;
            long* offsets = stackalloc long[48];
            var masks = stackalloc Vector128<float>[96];
            var e = stackalloc Vector256<float>[36];
            var staged = stackalloc Vector256<float>[36 * 8];   // channels last: staged[8 xi + l] for channel 8 g + l, 8 tiles
            for (int o = 0; o < active / 8; o++)
            {
                int run = LocatePatches(ref block, o, grid, cin, offsets, masks);
                if (!last)
                {
                    for (long ci = i0; ci < i1; ci++)
                        TransformPatches(x + ci * plane, run, offsets, masks, e, (Vector256<float>*)(v + ci * Chunk + 8 * o), (int)(Plane(cin) / 8));
                    continue;
                }
                for (long grp = i0; grp < i1; grp++)
                {
                    for (int l = 0; l < 8; l++)
                    {
                        long ci = 8 * grp + l;
                        if (ci < cin) TransformPatches(x + ci * plane, run, offsets, masks, e, staged + l, 8);
                        else for (int xi = 0; xi < 36; xi++) staged[8 * xi + l] = Vector256<float>.Zero;
                    }
                    for (int xi = 0; xi < 36; xi++)
                        Transpose8(staged + 8 * xi, v + xi * layout.InPlane + (long)(8 * o) * layout.InRow + 8 * grp, layout.InRow);
                }
            }
        }
    }

    /// <summary>For tiles 8 o .. 8 o + 7 of the block, where row r of each one's 6x6 patch lies in channel 0 of its
    /// sample, offsets[8 r + t] floats from the base (the tile's row - 1 + r, column - 1), and which of its columns
    /// are in the image, masks[16 r + 2 t] for columns 0-3 and masks[16 r + 2 t + 1] for 4-5: all clear for a row
    /// outside the image and for tiles past the block, whose loads then read nothing.</summary>
    /// <returns>When the eight tiles are one run along a tile row (consecutive in the same row of the same sample, their
    /// columns up to the last one's fourth in the map), bit r set where patch row r lies in the image; otherwise -1.</returns>
    private static int LocatePatches(ref TileBlock block, int o, TileGrid grid, int channels, long* offsets, Vector128<float>* masks)
    {
        long plane = (long)grid.H * grid.W;
        int first = 8 * o, run = -1;
        if (first + 7 < block.Count && block.Sample[first + 7] == block.Sample[first] && block.Y[first + 7] == block.Y[first]
            && block.X[first + 7] == block.X[first] + 28 && block.X[first] + 31 <= grid.W)
        {
            run = 0;
            for (int r = 0; r < 6; r++)
                if ((uint)(block.Y[first] - 1 + r) < (uint)grid.H) run |= 1 << r;
        }
        for (int t = 0; t < 8; t++)
        {
            int j = 8 * o + t;
            bool tile = j < block.Count;
            int oy = tile ? block.Y[j] : 0, ox = tile ? block.X[j] : 0;
            long corner = tile ? (long)block.Sample[j] * channels * plane + (long)(oy - 1) * grid.W + ox - 1 : 0;
            var column = Vector256<int>.Indices + Vector256.Create(ox - 1);
            var columns = (Vector256.GreaterThanOrEqual(column, Vector256<int>.Zero) & Vector256.LessThan(column, Vector256.Create(grid.W))
                & Vector256.LessThan(Vector256<int>.Indices, Vector256.Create(6))).AsSingle();
            for (int r = 0; r < 6; r++)
            {
                bool inside = tile && (uint)(oy - 1 + r) < (uint)grid.H;
                offsets[8 * r + t] = inside ? corner + (long)r * grid.W : 0;
                masks[16 * r + 2 * t] = inside ? columns.GetLower() : Vector128<float>.Zero;
                masks[16 * r + 2 * t + 1] = inside ? columns.GetUpper() : Vector128<float>.Zero;
            }
        }
        return run;
    }

    /// <summary>dst[xi xiStride] = (B^T d B)[xi] of the eight located patches d of channel plane xc, 8 tiles per
    /// vector: each patch row as 16 masked 128-bit loads, tiles t and t + 4 in one vector's halves (a 256-bit lane
    /// permute costs several times more on some AVX2 cores), transposed by Quads; B^T along the rows into e, then
    /// B^T down the columns. No branches: what lies outside the image is masked.
    /// A run of eight tiles along a row (<paramref name="run"/> not -1) reads each patch row as nine 128-bit loads instead:
    /// tile t's columns 0-3 start 4 t floats after tile 0's, and its columns 4-5 are tile t + 1's 0-1, so the
    /// quads q_0 .. q_8 four floats apart give both transposes (q_0 and q_8, at the map's borders, masked).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void TransformPatches(float* xc, int run, long* offsets, Vector128<float>* masks, Vector256<float>* e, Vector256<float>* dst, int xiStride)
    {
        for (int r = 0; r < 6; r++)
        {
            long* at = offsets + 8 * r;
            var mask = masks + 16 * r;
            if (run < 0)
            {
                TransformRow(Avx.MaskLoad(xc + at[0], mask[0]), Avx.MaskLoad(xc + at[1], mask[2]), Avx.MaskLoad(xc + at[2], mask[4]),
                    Avx.MaskLoad(xc + at[3], mask[6]), Avx.MaskLoad(xc + at[4], mask[8]), Avx.MaskLoad(xc + at[5], mask[10]),
                    Avx.MaskLoad(xc + at[6], mask[12]), Avx.MaskLoad(xc + at[7], mask[14]),
                    Avx.MaskLoad(xc + at[0] + 4, mask[1]), Avx.MaskLoad(xc + at[1] + 4, mask[3]), Avx.MaskLoad(xc + at[2] + 4, mask[5]),
                    Avx.MaskLoad(xc + at[3] + 4, mask[7]), Avx.MaskLoad(xc + at[4] + 4, mask[9]), Avx.MaskLoad(xc + at[5] + 4, mask[11]),
                    Avx.MaskLoad(xc + at[6] + 4, mask[13]), Avx.MaskLoad(xc + at[7] + 4, mask[15]), e + 6 * r);
            }
            else if ((run >> r & 1) == 0)
            {
                for (int j = 0; j < 6; j++) e[6 * r + j] = Vector256<float>.Zero;
            }
            else
            {
                float* q = xc + at[0];
                Vector128<float> q1 = Vector128.Load(q + 4), q2 = Vector128.Load(q + 8), q3 = Vector128.Load(q + 12), q4 = Vector128.Load(q + 16),
                    q5 = Vector128.Load(q + 20), q6 = Vector128.Load(q + 24), q7 = Vector128.Load(q + 28);
                TransformRow(Avx.MaskLoad(q, mask[0]), q1, q2, q3, q4, q5, q6, q7,
                    q1, q2, q3, q4, q5, q6, q7, Avx.MaskLoad(xc + at[7] + 4, mask[15]), e + 6 * r);
            }
        }
        for (int j = 0; j < 6; j++)
            BTransform8(e[j], e[6 + j], e[12 + j], e[18 + j], e[24 + j], e[30 + j], dst + j * xiStride, 6 * xiStride);
    }

    /// <summary>B^T along one patch row of eight tiles into e[0..5]: lo_t holds tile t's columns 0-3, hi_t its
    /// columns 4-5 (and two it does not use), transposed by Quads with tiles t and t + 4 in one vector's halves.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void TransformRow(Vector128<float> lo0, Vector128<float> lo1, Vector128<float> lo2, Vector128<float> lo3,
        Vector128<float> lo4, Vector128<float> lo5, Vector128<float> lo6, Vector128<float> lo7,
        Vector128<float> hi0, Vector128<float> hi1, Vector128<float> hi2, Vector128<float> hi3,
        Vector128<float> hi4, Vector128<float> hi5, Vector128<float> hi6, Vector128<float> hi7, Vector256<float>* e)
    {
        Quads(Vector256.Create(lo0, lo4), Vector256.Create(lo1, lo5), Vector256.Create(lo2, lo6), Vector256.Create(lo3, lo7),
            out var d0, out var d1, out var d2, out var d3);
        Quads(Vector256.Create(hi0, hi4), Vector256.Create(hi1, hi5), Vector256.Create(hi2, hi6), Vector256.Create(hi3, hi7),
            out var d4, out var d5, out _, out _);
        BTransform8(d0, d1, d2, d3, d4, d5, e, 1);
    }

    /// <summary>dst[t ld + l] = lane t of src[l] for l, t &lt; 8: an 8 x 8 transpose, read as 128-bit halves and
    /// transposed by Quads (no 256-bit lane permutes).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Transpose8(Vector256<float>* src, float* dst, long ld)
    {
        var half = (Vector128<float>*)src;   // half[2 l]: lanes 0-3 of src[l], half[2 l + 1]: lanes 4-7
        Quads(Vector256.Create(half[0], half[8]), Vector256.Create(half[2], half[10]), Vector256.Create(half[4], half[12]),
            Vector256.Create(half[6], half[14]), out var q0, out var q1, out var q2, out var q3);
        q0.Store(dst); q1.Store(dst + ld); q2.Store(dst + 2 * ld); q3.Store(dst + 3 * ld);
        Quads(Vector256.Create(half[1], half[9]), Vector256.Create(half[3], half[11]), Vector256.Create(half[5], half[13]),
            Vector256.Create(half[7], half[15]), out q0, out q1, out q2, out q3);
        q0.Store(dst + 4 * ld); q1.Store(dst + 5 * ld); q2.Store(dst + 6 * ld); q3.Store(dst + 7 * ld);
    }

    /// <summary>M[xi] = U[xi] V[xi] for xi in [xi0, xi1): six output channels per micro-kernel call, written into M.</summary>
    private readonly struct Avx2ProductStage(float* u, float* v, float* m, int cin, int coutPad, int active) : IRangeBody
    {
        public void Run(long xi0, long xi1)
        {
            for (long xi = xi0; xi < xi1; xi++)
            {
                float* ux = u + xi * coutPad * cin, vx = v + xi * Plane(cin), mx = m + xi * Plane(coutPad);
                // A pass's 16 columns of V (cin x 64 bytes) stay in L1 while every strip of U streams past them.
                for (int q = 0; q < active; q += 16)
                    for (int co = 0; co < coutPad; co += MR)
                        Sgemm.Kernel16(cin, ux + (long)co * cin, vx + q, Chunk, mx + (long)co * Chunk + q);
            }
        }
    }

    /// <summary>y = A^T M A with the epilogue for output channels [c0, c1) of the chunk's tiles.</summary>
    private readonly struct Avx2OutputStage(float* m, float* y, int outC, int coutPad, TileGrid grid, long t0, Epilogue epilogue) : IRangeBody
    {
        public void Run(long c0, long c1)
        {
            TileBlock block = default;
            grid.Decode(t0, ref block);
            long plane = (long)grid.H * grid.W, xiStride = Plane(coutPad);
            var a = stackalloc Vector256<float>[24];     // A^T along each row of M: a[4 i + q]
            var z = stackalloc Vector256<float>[16];     // the outputs: z[4 p + q], 8 tiles each
            long* offsets = stackalloc long[32];         // offsets[8 p + t]: output row p of tile t in channel 0 (-1: not stored)
            int* widths = stackalloc int[8];             // the tile's columns inside the map (4 but at a right border)
            for (int o = 0; o < (block.Count + 7) / 8; o++)
            {
                for (int t = 0; t < 8; t++)
                {
                    int j = 8 * o + t;
                    bool tile = j < block.Count;
                    widths[t] = tile ? Math.Min(4, grid.W - block.X[j]) : 0;
                    for (int p = 0; p < 4; p++)
                        offsets[8 * p + t] = tile && block.Y[j] + p < grid.H
                            ? (long)block.Sample[j] * outC * plane + (long)(block.Y[j] + p) * grid.W + block.X[j] : -1;
                }
                for (long co = c0; co < c1; co++)
                {
                    float* mc = m + co * Chunk + 8 * o;
                    for (int i = 0; i < 6; i++)
                    {
                        float* row = mc + 6 * i * xiStride;
                        ATransform8(Vector256.Load(row), Vector256.Load(row + xiStride), Vector256.Load(row + 2 * xiStride),
                            Vector256.Load(row + 3 * xiStride), Vector256.Load(row + 4 * xiStride), Vector256.Load(row + 5 * xiStride), a + 4 * i, 1);
                    }
                    for (int q = 0; q < 4; q++) ATransform8(a[q], a[4 + q], a[8 + q], a[12 + q], a[16 + q], a[20 + q], z + q, 4);
                    if (epilogue.Active)
                    {
                        var bias = epilogue.Broadcast8((int)co);
                        for (int k = 0; k < 16; k++) z[k] = epilogue.Apply(z[k], bias);
                    }
                    float* yc = y + co * plane;
                    for (int p = 0; p < 4; p++)
                    {
                        // u_k: output row p of tile k in its low half, of tile k + 4 in its high half.
                        Quads(z[4 * p], z[4 * p + 1], z[4 * p + 2], z[4 * p + 3], out var u0, out var u1, out var u2, out var u3);
                        long* at = offsets + 8 * p;
                        StoreRow(yc, at[0], widths[0], u0.GetLower()); StoreRow(yc, at[1], widths[1], u1.GetLower());
                        StoreRow(yc, at[2], widths[2], u2.GetLower()); StoreRow(yc, at[3], widths[3], u3.GetLower());
                        StoreRow(yc, at[4], widths[4], u0.GetUpper()); StoreRow(yc, at[5], widths[5], u1.GetUpper());
                        StoreRow(yc, at[6], widths[6], u2.GetUpper()); StoreRow(yc, at[7], widths[7], u3.GetUpper());
                    }
                }
            }
        }

        /// <summary>The first <paramref name="width"/> floats of a tile's output row at yc + offset (none for a negative offset).</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private static void StoreRow(float* yc, long offset, int width, Vector128<float> quad)
        {
            if (offset < 0) return;
            if (width == 4) quad.Store(yc + offset);
            else for (int c = 0; c < width; c++) yc[offset + c] = quad.GetElement(c);
        }
    }

    /// <summary>dM[xi][t][co] = (A dY A^T)[xi] of tile t of gy for the groups [g0, g1) of 8 output channels (0 past
    /// cout and for tiles past the batch), channels last: each group's 36 x 8 vectors of 8 tiles transposed on their way out.</summary>
    private readonly struct Avx2GradientStage(float* gy, float* g, int cout, WeightLayout layout, TileGrid grid, long t0, int active) : IRangeBody
    {
        public void Run(long g0, long g1)
        {
            TileBlock block = default;
            grid.Decode(t0, ref block);
            long plane = (long)grid.H * grid.W;
            long* offsets = stackalloc long[32];                 // offsets[8 p + t]: row p of tile t in channel 0
            var masks = stackalloc Vector128<float>[32];         // its columns inside the map (none outside it or past the batch)
            var e = stackalloc Vector256<float>[24];             // A along each row of the tile: e[6 p + j]
            var staged = stackalloc Vector256<float>[36 * 8];    // staged[8 xi + l]: channel 8 g + l, 8 tiles
            for (int o = 0; o < active / 8; o++)
            {
                for (int t = 0; t < 8; t++)
                {
                    int j = 8 * o + t;
                    bool tile = j < block.Count;
                    int oy = tile ? block.Y[j] : 0, ox = tile ? block.X[j] : 0;
                    var columns = Vector128.LessThan(Vector128<int>.Indices, Vector128.Create(grid.W - ox)).AsSingle();
                    for (int p = 0; p < 4; p++)
                    {
                        bool inside = tile && oy + p < grid.H;
                        offsets[8 * p + t] = inside ? (long)block.Sample[j] * cout * plane + (long)(oy + p) * grid.W + ox : 0;
                        masks[8 * p + t] = inside ? columns : Vector128<float>.Zero;
                    }
                }
                for (long grp = g0; grp < g1; grp++)
                {
                    for (int l = 0; l < 8; l++)
                    {
                        long co = 8 * grp + l;
                        if (co >= cout)
                        {
                            for (int xi = 0; xi < 36; xi++) staged[8 * xi + l] = Vector256<float>.Zero;
                            continue;
                        }
                        float* gc = gy + co * plane;
                        for (int p = 0; p < 4; p++)
                        {
                            long* at = offsets + 8 * p;
                            var mask = masks + 8 * p;
                            Quads(Vector256.Create(Avx.MaskLoad(gc + at[0], mask[0]), Avx.MaskLoad(gc + at[4], mask[4])),
                                Vector256.Create(Avx.MaskLoad(gc + at[1], mask[1]), Avx.MaskLoad(gc + at[5], mask[5])),
                                Vector256.Create(Avx.MaskLoad(gc + at[2], mask[2]), Avx.MaskLoad(gc + at[6], mask[6])),
                                Vector256.Create(Avx.MaskLoad(gc + at[3], mask[3]), Avx.MaskLoad(gc + at[7], mask[7])), out var d0, out var d1, out var d2, out var d3);
                            Expand8(d0, d1, d2, d3, e + 6 * p, 1);
                        }
                        for (int j = 0; j < 6; j++) Expand8(e[j], e[6 + j], e[12 + j], e[18 + j], staged + 8 * j + l, 48);
                    }
                    for (int xi = 0; xi < 36; xi++)
                        Transpose8(staged + 8 * xi, g + xi * layout.OutPlane + (long)(8 * o) * layout.OutRow + 8 * grp, layout.OutRow);
                }
            }
        }
    }

    /// <summary>dU[xi] (+)= dM[xi]^T V[xi] for xi in [xi0, xi1), K = the chunk's active tiles: both read in place,
    /// six output channels (a row of dM) by sixteen input channels (a row of V) per micro-kernel call, added into dU
    /// after the first chunk.</summary>
    private readonly struct Avx2WeightProducts(float* g, float* v, float* du, WeightLayout layout, int active, bool first) : IRangeBody
    {
        public void Run(long xi0, long xi1)
        {
            for (long xi = xi0; xi < xi1; xi++)
            {
                float* gx = g + xi * layout.OutPlane, vx = v + xi * layout.InPlane, dx = du + xi * layout.OutStrips * layout.InRow;
                // A pass's 16 columns of V (active x 64 bytes) stay in L1 while every strip of dM streams past them.
                for (int ci = 0; ci < layout.InRow; ci += 16)
                    for (int co = 0; co < layout.OutStrips; co += MR)
                        Sgemm.Kernel16Strided(active, gx + co, layout.OutRow, vx + ci, layout.InRow, dx + (long)co * layout.InRow + ci, layout.InRow, !first);
            }
        }
    }

    /// <summary>U = G (scale g) G^T for the strips [s0, s1) of MR output channels, in FilterLoopF4's packed layout
    /// packed[((xi coutPad + co0) cin + ci) MR + r] for output channel co0 + r (0 past outC).</summary>
    private readonly struct Avx2FilterStage(float* w, float* packed, int cin, int cout, float scale) : IRangeBody
    {
        public void Run(long s0, long s1)
        {
            int coutPad = RoundUp(cout, MR);
            var t = stackalloc Vector256<float>[18];   // G g: t[3 i + b]
            var u = stackalloc Vector256<float>[6];    // row i of G g G^T
            float* tail = stackalloc float[8];
            float* taps = stackalloc float[8 * 72];   // taps[8 (9 l + k) + r]: tap k of filter (co0 + r, ci0 + l)
            new Span<float>(taps, 8 * 72).Clear();
            var vScale = Vector256.Create(scale);
            for (long s = s0; s < s1; s++)
            {
                int co0 = (int)s * MR;
                int rows = Math.Min(MR, cout - co0);
                if (rows < MR) new Span<float>(taps, 8 * 72).Clear();     // lanes past the last output channel stay 0
                for (int ci = 0; ci < cin; ci++)
                {
                    // Tap k of the strip's six filters (co0 + r, ci) at tl[8 k + r], then one vector per tap: eight
                    // channels at a time by transposes (StageEight), the last cin % 8 one by one.
                    int l = ci % 8;
                    if (l == 0 && ci + 8 <= cin) StageEight(w + ((long)co0 * cin + ci) * 9, (long)cin * 9, rows, taps);
                    else if (ci >= cin / 8 * 8)
                    {
                        l = 0;
                        for (int r = 0; r < rows; r++)
                        {
                            float* g = w + ((long)(co0 + r) * cin + ci) * 9;
                            for (int k = 0; k < 9; k++) taps[8 * k + r] = g[k];
                        }
                    }
                    float* tl = taps + 72 * l;
                    for (int b = 0; b < 3; b++)
                        InterpolateFilter8(Vector256.Load(tl + 8 * b) * vScale, Vector256.Load(tl + 8 * (3 + b)) * vScale,
                            Vector256.Load(tl + 8 * (6 + b)) * vScale, t + b, 3);
                    for (int i = 0; i < 6; i++)
                    {
                        InterpolateFilter8(t[3 * i], t[3 * i + 1], t[3 * i + 2], u, 1);
                        for (int j = 0; j < 6; j++)
                        {
                            float* dst = packed + ((long)(6 * i + j) * coutPad + co0) * cin + (long)ci * MR;
                            // Lanes 6 and 7 fall on the next channel's first two entries, written after this one;
                            // the strip's last channel stores its six alone.
                            if (ci + 1 < cin) u[j].Store(dst);
                            else
                            {
                                u[j].Store(tail);
                                for (int r = 0; r < MR; r++) dst[r] = tail[r];
                            }
                        }
                    }
                }
            }
        }
    }

    /// <summary>taps[8 f + r] = g[r rowStride + f] for the 72 floats f of eight consecutive filters (nine taps each) of
    /// each of the strip's rows r &lt; <paramref name="rows"/> (0 for the others): 9 blocks of 8 x 8 transposed by Quads.</summary>
    private static void StageEight(float* g, long rowStride, int rows, float* taps)
    {
        var lo = stackalloc Vector128<float>[8];
        var hi = stackalloc Vector128<float>[8];
        for (int b = 0; b < 9; b++)
        {
            for (int r = 0; r < 8; r++)
            {
                float* src = g + r * rowStride + 8 * b;
                lo[r] = r < rows ? Vector128.Load(src) : Vector128<float>.Zero;
                hi[r] = r < rows ? Vector128.Load(src + 4) : Vector128<float>.Zero;
            }
            float* dst = taps + 64 * b;
            Quads(Vector256.Create(lo[0], lo[4]), Vector256.Create(lo[1], lo[5]), Vector256.Create(lo[2], lo[6]), Vector256.Create(lo[3], lo[7]),
                out var c0, out var c1, out var c2, out var c3);
            Quads(Vector256.Create(hi[0], hi[4]), Vector256.Create(hi[1], hi[5]), Vector256.Create(hi[2], hi[6]), Vector256.Create(hi[3], hi[7]),
                out var c4, out var c5, out var c6, out var c7);
            c0.Store(dst); c1.Store(dst + 8); c2.Store(dst + 16); c3.Store(dst + 24);
            c4.Store(dst + 32); c5.Store(dst + 40); c6.Store(dst + 48); c7.Store(dst + 56);
        }
    }

    /// <summary>dst[k stride] = (G g)[k] for three values: six (InterpolateFilter's formulas, 8 lanes, multiplies for its divisions).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void InterpolateFilter8(Vector256<float> g0, Vector256<float> g1, Vector256<float> g2, Vector256<float>* dst, int stride)
    {
        var outer = g0 + g2;
        var sixth = Vector256.Create(1f / 6);
        var ends = Vector256.FusedMultiplyAdd(g0, Vector256.Create(1f / 24), g2 * sixth);   // g0 / 24 + g2 / 6
        var middle = g1 * Vector256.Create(1f / 12);
        dst[0] = g0 * Vector256.Create(0.25f);
        dst[stride] = -(outer + g1) * sixth;
        dst[2 * stride] = (g1 - outer) * sixth;
        dst[3 * stride] = ends + middle;
        dst[4 * stride] = ends - middle;
        dst[5 * stride] = g2;
    }

    /// <summary>dst[k stride] = (G^T u)[k] for six values: three (ProjectFilter's formulas, 8 lanes, multiplies for its divisions).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void ProjectFilter8(Vector256<float> u0, Vector256<float> u1, Vector256<float> u2, Vector256<float> u3, Vector256<float> u4,
        Vector256<float> u5, Vector256<float>* dst, int stride)
    {
        var sixth = Vector256.Create(1f / 6);
        var inner = u1 + u2;
        var outer = u3 + u4;
        dst[0] = Vector256.FusedMultiplyAdd(u0, Vector256.Create(0.25f), Vector256.FusedMultiplyAdd(outer, Vector256.Create(1f / 24), -inner * sixth));
        dst[stride] = Vector256.FusedMultiplyAdd(u2 - u1, sixth, (u3 - u4) * Vector256.Create(1f / 12));
        dst[2 * stride] = Vector256.FusedMultiplyAdd(outer - inner, sixth, u5);
    }

    /// <summary>gw = scale G^T dU G for output channels [c0, c1), 8 input channels per vector, dU the sum of
    /// <paramref name="parts"/> partial sums <see cref="WeightLayout.DuLength"/> floats apart (in order: the same
    /// result whichever core made which).</summary>
    private readonly struct Avx2FilterAdjoint(float* du, float* gw, int cin, WeightLayout layout, int parts, float scale) : IRangeBody
    {
        public void Run(long c0, long c1)
        {
            var t = stackalloc Vector256<float>[18];   // G^T dU: t[6 k + c]
            var g = stackalloc Vector256<float>[9];    // the 3x3 gradient, tap k = 3 a + b
            float* taps = (float*)g;
            long xiStride = (long)layout.OutStrips * layout.InRow;
            for (long co = c0; co < c1; co++)
                for (int ci = 0; ci < cin; ci += 8)
                {
                    float* d = du + co * layout.InRow + ci;
                    for (int c = 0; c < 6; c++)
                        ProjectFilter8(Sum(d + c * xiStride), Sum(d + (6 + c) * xiStride), Sum(d + (12 + c) * xiStride),
                            Sum(d + (18 + c) * xiStride), Sum(d + (24 + c) * xiStride), Sum(d + (30 + c) * xiStride), t + c, 6);
                    for (int a = 0; a < 3; a++) ProjectFilter8(t[6 * a], t[6 * a + 1], t[6 * a + 2], t[6 * a + 3], t[6 * a + 4], t[6 * a + 5], g + 3 * a, 1);
                    // taps[8 k + l]: tap k of input channel ci + l (the lanes past cin, dU's zero padding, are not stored).
                    float* dst = gw + (co * cin + ci) * 9;
                    for (int l = 0; l < Math.Min(8, cin - ci); l++)
                        for (int k = 0; k < 9; k++) dst[9 * l + k] = scale * taps[8 * k + l];
                }
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private Vector256<float> Sum(float* at)
        {
            var sum = Vector256.Load(at);
            for (int p = 1; p < parts; p++) sum += Vector256.Load(at + p * layout.DuLength);
            return sum;
        }
    }

    /// <summary>Four 4x4 transposes, one per 128-bit half: q_c lane k = column c of a, b, c, d's k-th quad
    /// (lane 4 h + r of q_c = element c of half h of the r-th argument).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Quads(Vector256<float> a, Vector256<float> b, Vector256<float> c, Vector256<float> d,
        out Vector256<float> q0, out Vector256<float> q1, out Vector256<float> q2, out Vector256<float> q3)
    {
        var t0 = Avx.UnpackLow(a, b);    // a0 b0 a1 b1 per half
        var t1 = Avx.UnpackHigh(a, b);   // a2 b2 a3 b3
        var t2 = Avx.UnpackLow(c, d);
        var t3 = Avx.UnpackHigh(c, d);
        q0 = Avx.Shuffle(t0, t2, 0x44);  // a0 b0 c0 d0
        q1 = Avx.Shuffle(t0, t2, 0xEE);  // a1 b1 c1 d1
        q2 = Avx.Shuffle(t1, t3, 0x44);
        q3 = Avx.Shuffle(t1, t3, 0xEE);
    }

    /// <summary>dst[k stride] = (B^T d)[k] for six values, 8 tiles per vector (BTransform's formulas).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void BTransform8(Vector256<float> d0, Vector256<float> d1, Vector256<float> d2, Vector256<float> d3, Vector256<float> d4,
        Vector256<float> d5, Vector256<float>* dst, int stride)
    {
        var four = Vector256.Create(4f);
        var t0 = Vector256.FusedMultiplyAdd(-four, d2, d4);          // d4 - 4 d2
        var t1 = Vector256.FusedMultiplyAdd(-four, d1, d3);          // d3 - 4 d1
        var t2 = d4 - d2;
        var t3 = (d3 - d1) * 2f;
        dst[0] = Vector256.FusedMultiplyAdd(four, d0, Vector256.FusedMultiplyAdd(Vector256.Create(-5f), d2, d4));
        dst[stride] = t0 + t1;
        dst[2 * stride] = t0 - t1;
        dst[3 * stride] = t2 + t3;
        dst[4 * stride] = t2 - t3;
        dst[5 * stride] = Vector256.FusedMultiplyAdd(four, d1, Vector256.FusedMultiplyAdd(Vector256.Create(-5f), d3, d5));
    }

    /// <summary>dst[k stride] = (A^T m)[k] for six values: four outputs (ATransform's formulas).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void ATransform8(Vector256<float> m0, Vector256<float> m1, Vector256<float> m2, Vector256<float> m3, Vector256<float> m4,
        Vector256<float> m5, Vector256<float>* dst, int stride)
    {
        var a = m1 + m2;
        var b = m1 - m2;
        var c = m3 + m4;
        var d = m3 - m4;
        dst[0] = m0 + a + c;
        dst[stride] = Vector256.FusedMultiplyAdd(Vector256.Create(2f), d, b);
        dst[2 * stride] = Vector256.FusedMultiplyAdd(Vector256.Create(4f), c, a);
        dst[3 * stride] = Vector256.FusedMultiplyAdd(Vector256.Create(8f), d, b) + m5;
    }

    /// <summary>dst[k stride] = (A d)[k] for four values: six (the adjoint of ATransform8:
    /// d0, d0 + d1 + d2 + d3, d0 - d1 + d2 - d3, d0 + 2 d1 + 4 d2 + 8 d3, d0 - 2 d1 + 4 d2 - 8 d3, d3).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Expand8(Vector256<float> d0, Vector256<float> d1, Vector256<float> d2, Vector256<float> d3, Vector256<float>* dst, int stride)
    {
        var even = d0 + d2;
        var odd = d1 + d3;
        var evenWide = Vector256.FusedMultiplyAdd(Vector256.Create(4f), d2, d0);
        var oddWide = Vector256.FusedMultiplyAdd(Vector256.Create(8f), d3, d1 * 2f);
        dst[0] = d0;
        dst[stride] = even + odd;
        dst[2 * stride] = even - odd;
        dst[3 * stride] = evenWide + oddWide;
        dst[4 * stride] = evenWide - oddWide;
        dst[5 * stride] = d3;
    }
}
