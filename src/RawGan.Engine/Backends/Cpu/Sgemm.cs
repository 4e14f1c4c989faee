using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace RawGan.Engine.Backends.Cpu;

// ---------------------------------------------------------------------------------------------
// How the CPU multiplies matrices fast (the layout of BLIS / GotoBLAS, written for AVX-512).
//
// C[m, n] = alpha op(A)[m, k] op(B)[k, n] + beta C. The work is cut three ways so that each piece
// of data sits in the cache level that reuses it most:
//
//   for each panel of KC rows of op(B) (and KC columns of op(A)):
//     pack that K-slice of op(B), NR columns at a time, into a contiguous "B panel"      (L3)
//     for each block of MC rows of op(A):
//       pack it, MR rows at a time, into a contiguous "A block"                          (L2)
//       for each NR-wide strip of the B panel:          its KC x NR floats come into L2
//         for each MR-tall strip of the A block:        and serve every strip of the block
//           micro-kernel: an MR x NR tile of C held in 24 AVX-512 registers, updated by KC
//           rank-1 steps (4 loads of B, 6 broadcasts of A, 24 fused multiply-adds)
//
// The sizes (KC 512, MC 96, NC 2048) were measured on this project's machine (Zen 4: 32 KiB L1,
// 1 MiB L2 per core, 32 MiB L3). C is read and written once per K panel, so a long KC matters
// most for large matrices: at n = 2048, KC 256 with NC 512 (a B panel that fits L2) reached
// 165 GFLOP/s on two cores; KC 512 with a B panel in L3 reaches 200, level with OpenBLAS.
//
// "op(A)" and "op(B)" are not necessarily matrices in memory: they are whatever the packers
// read. A dense (possibly transposed) matrix is one packer; the columns of an image unfolded
// for a 3x3 convolution (im2col) are another, read straight from the image while packing, so a
// convolution never materializes its im2col matrix. Likewise the writer decides where element
// (i, j) of C lives (a plain row-major matrix, or [sample, channel, pixel] for a convolution).
// The two cores split the columns of C (or its rows, when C is tall and narrow); each packs
// what it needs, so one GEMM is one parallel region. An epilogue (Epilogue.cs: a bias per row of
// C and leaky ReLU, a convolution layer's) is applied by the store of the last K panel, to a
// tile that is still in L1.
// ---------------------------------------------------------------------------------------------

/// <summary>Reads op(A): element (i, k) for rows [i0, i0 + MR) of the MR-tall strip.</summary>
internal interface IPackA
{
    /// <summary>Writes dst[p * MR + r] = op(A)[i0 + r, k0 + p] for p &lt; kc, r &lt; MR (0 past row m).</summary>
    unsafe void Pack(float* dst, int i0, int k0, int kc, int m);
}

/// <summary>Reads op(B): dst[p * NR + c] = op(B)[k0 + p, j0 + c] for p &lt; kc, c &lt; NR (0 past column n).</summary>
internal interface IPackB
{
    unsafe void Pack(float* dst, int k0, int kc, int j0, int n);

    /// <summary>Where op(B)[0, j0 .. j0 + NR) lies in memory, if those NR columns are one run in every row of
    /// op(B), row p at the result + p <paramref name="ldb"/>; null otherwise (then the strip is packed).</summary>
    unsafe float* InPlace(int j0, int n, out long ldb);
}

/// <summary>Where C's element (i, j) lives: <c>Row(i) + Column(j)</c> floats from the base. A
/// negative <c>Column(j)</c> means column j is not stored (padding columns of a convolution).</summary>
internal interface ICLayout
{
    unsafe float* Base { get; }
    long Row(int i);
    long Column(int j);
    /// <summary>True if columns j0 .. j0 + count - 1 are adjacent in memory (so rows store as vectors).</summary>
    bool Contiguous(int j0, int count);
    /// <summary>columns[c] = Column(j0 + c) for c &lt; count, computed incrementally (no division per column).</summary>
    unsafe void FillColumns(int j0, int count, long* columns);
}

internal static unsafe partial class Sgemm
{
    public const int MR = 6, NR = 64, KC = 512, MC = 96, NC = 2048;

    /// <summary>Products of fewer FLOPs than this run on one core: a hand-off would cost more than it saves.</summary>
    private const long ParallelMinFlops = 4_000_000;

    /// <summary>True when the AVX-512 micro-kernel can run: the 6 x 64 tile in 24 zmm registers.</summary>
    public static bool Wide => Vector512.IsHardwareAccelerated && Avx512F.IsSupported;

    /// <summary>True when the AVX2 micro-kernel can run (AVX2 and FMA, 16 ymm registers): the same 6 x 64
    /// tile as four passes of 6 x 16 (12 accumulators, 2 loads of B and 6 broadcasts of A per step).</summary>
    public static bool Narrow => Vector256.IsHardwareAccelerated && Avx2.IsSupported && Fma.IsSupported;

    [ThreadStatic] private static float* _packA, _packB, _tile;
    [ThreadStatic] private static int _packBCapacity;

    private static void EnsureBuffers(int nc)
    {
        if (_packA == null)
        {
            _packA = (float*)NativeMemory.AlignedAlloc((nuint)(MC * KC * sizeof(float)), 64);
            _tile = (float*)NativeMemory.AlignedAlloc((nuint)(MR * NR * sizeof(float)), 64);
        }
        int needed = KC * ((nc + NR - 1) / NR * NR);
        if (_packBCapacity < needed)
        {
            if (_packB != null) NativeMemory.AlignedFree(_packB);
            _packB = (float*)NativeMemory.AlignedAlloc((nuint)needed * sizeof(float), 64);
            _packBCapacity = needed;
        }
    }

    /// <summary>C = alpha op(A) op(B) + beta C for the given readers and layout, then the
    /// <paramref name="epilogue"/> of each row of C (none by default).</summary>
    public static void Multiply<TA, TB, TC>(int m, int n, int k, float alpha, TA a, TB b, float beta, TC c, Epilogue epilogue, bool wide)
        where TA : struct, IPackA where TB : struct, IPackB where TC : struct, ICLayout
    {
        if (m <= 0 || n <= 0) return;
        if (ReadsBInPlace(m, n, k, b))
        {
            MultiplyInPlace(m, n, k, alpha, a, b, beta, c, epilogue, wide);
            return;
        }
        long flops = 2L * m * n * Math.Max(k, 1);
        int threads = flops < ParallelMinFlops ? 1 : CpuParallel.Threads;
        // Split the longer side of C so that each core gets a full-width share of micro-tiles.
        bool splitColumns = (long)n * MR >= (long)m * NR / 4 || m < 2 * MR;
        int units = splitColumns ? (n + NR - 1) / NR : (m + MR - 1) / MR;
        threads = Math.Min(threads, units);
        if (threads <= 1)
        {
            Run(0, m, 0, n, k, alpha, a, b, beta, c, epilogue, wide);
            return;
        }
        CpuParallel.For(threads, 1, new Shares<TA, TB, TC>(m, n, k, alpha, a, b, beta, c, epilogue, wide, splitColumns, units, threads));
    }

    /// <summary>Core t of <paramref name="threads"/> runs its share of the column strips (or row strips).</summary>
    private readonly struct Shares<TA, TB, TC>(int m, int n, int k, float alpha, TA a, TB b, float beta, TC c, Epilogue epilogue, bool wide, bool splitColumns, int units,
        int threads) : IRangeBody
        where TA : struct, IPackA where TB : struct, IPackB where TC : struct, ICLayout
    {
        public void Run(long t0, long t1)
        {
            for (long t = t0; t < t1; t++)
            {
                int u0 = (int)(units * t / threads), u1 = (int)(units * (t + 1) / threads);
                if (splitColumns) Sgemm.Run(0, m, u0 * NR, Math.Min(n, u1 * NR), k, alpha, a, b, beta, c, epilogue, wide);
                else Sgemm.Run(u0 * MR, Math.Min(m, u1 * MR), 0, n, k, alpha, a, b, beta, c, epilogue, wide);
            }
        }
    }

    /// <summary>One core's share: rows [i0, i1) and columns [j0, j1) of C, in column panels of at
    /// most NC (a packed B panel of KC x NC floats, 4 MiB, lives in L3; each core has its own).</summary>
    private static void Run<TA, TB, TC>(int i0, int i1, int j0, int j1, int k, float alpha, TA a, TB b, float beta, TC c, Epilogue epilogue, bool wide)
        where TA : struct, IPackA where TB : struct, IPackB where TC : struct, ICLayout
    {
        for (int jc = j0; jc < j1; jc += NC)
            RunPanel(i0, i1, jc, Math.Min(j1, jc + NC), k, alpha, a, b, beta, c, epilogue, wide);
    }

    private static void RunPanel<TA, TB, TC>(int i0, int i1, int j0, int j1, int k, float alpha, TA a, TB b, float beta, TC c, Epilogue epilogue, bool wide)
        where TA : struct, IPackA where TB : struct, IPackB where TC : struct, ICLayout
    {
        int nc = j1 - j0;
        EnsureBuffers(nc);
        float* packA = _packA, packB = _packB, tile = _tile;
        if (k == 0)
        {
            // No products: C = beta C.
            for (int i = i0; i < i1; i++)
                for (int j = j0; j < j1; j++)
                {
                    float* p = c.Base + c.Row(i) + c.Column(j);
                    *p = beta == 0 ? 0 : beta * *p;
                    if (epilogue.Active) *p = epilogue.Apply(*p, i);
                }
            return;
        }
        for (int pc = 0; pc < k; pc += KC)
        {
            int kc = Math.Min(KC, k - pc);
            float betaHere = pc == 0 ? beta : 1f;
            var epilogueHere = pc + kc == k ? epilogue : Epilogue.None;   // once C is complete
            for (int jr = 0; jr < nc; jr += NR)
                b.Pack(packB + (long)jr * kc, pc, kc, j0 + jr, j1);
            for (int ic = i0; ic < i1; ic += MC)
            {
                int mc = Math.Min(MC, i1 - ic);
                for (int ir = 0; ir < mc; ir += MR)
                    a.Pack(packA + ir * kc, ic + ir, pc, kc, i1);
                for (int jr = 0; jr < nc; jr += NR)
                {
                    int nr = Math.Min(NR, nc - jr);
                    for (int ir = 0; ir < mc; ir += MR)
                    {
                        int mr = Math.Min(MR, mc - ir);
                        Kernel(kc, packA + ir * kc, packB + (long)jr * kc, NR, tile, nr, wide);
                        Store(tile, mr, nr, ic + ir, j0 + jr, alpha, betaHere, c, epilogueHere, wide);
                    }
                }
            }
        }
    }

    /// <summary>The micro-kernel: tile[MR x NR] = sum over p &lt; kc of a[p, :]^T b[p, :], row p of B at b + p
    /// <paramref name="ldb"/> (a packed panel, ldb = NR, or NR columns of a row-major matrix read in
    /// place); tile 64-byte aligned. Of the tile's columns, at least the first <paramref name="nr"/> are
    /// computed (the AVX2 kernel skips its passes past them); the store reads no others.</summary>
    internal static void Kernel(int kc, float* a, float* b, long ldb, float* tile, int nr, bool wide)
    {
        if (wide)
        {
            Kernel(kc, a, b, ldb, tile);
            return;
        }
        for (int q = 0; q < nr; q += 16) Kernel16(kc, a, b + q, ldb, tile + q);
    }

    /// <summary>The AVX-512 micro-kernel on a packed B panel (Winograd.cs's products).</summary>
    internal static void Kernel(int kc, float* a, float* b, float* tile) => Kernel(kc, a, b, NR, tile);

    /// <summary>The AVX-512 micro-kernel: all NR = 64 columns, four zmm registers per row of the tile.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void Kernel(int kc, float* a, float* b, long ldb, float* tile)
    {
        Vector512<float> c00 = default, c01 = default, c02 = default, c03 = default;
        Vector512<float> c10 = default, c11 = default, c12 = default, c13 = default;
        Vector512<float> c20 = default, c21 = default, c22 = default, c23 = default;
        Vector512<float> c30 = default, c31 = default, c32 = default, c33 = default;
        Vector512<float> c40 = default, c41 = default, c42 = default, c43 = default;
        Vector512<float> c50 = default, c51 = default, c52 = default, c53 = default;
        for (int p = 0; p < kc; p++)
        {
            var b0 = Vector512.Load(b);
            var b1 = Vector512.Load(b + 16);
            var b2 = Vector512.Load(b + 32);
            var b3 = Vector512.Load(b + 48);
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
            a += MR;
            b += ldb;
        }
        Avx512F.StoreAligned(tile + 0, c00); Avx512F.StoreAligned(tile + 16, c01); Avx512F.StoreAligned(tile + 32, c02); Avx512F.StoreAligned(tile + 48, c03);
        Avx512F.StoreAligned(tile + 64, c10); Avx512F.StoreAligned(tile + 80, c11); Avx512F.StoreAligned(tile + 96, c12); Avx512F.StoreAligned(tile + 112, c13);
        Avx512F.StoreAligned(tile + 128, c20); Avx512F.StoreAligned(tile + 144, c21); Avx512F.StoreAligned(tile + 160, c22); Avx512F.StoreAligned(tile + 176, c23);
        Avx512F.StoreAligned(tile + 192, c30); Avx512F.StoreAligned(tile + 208, c31); Avx512F.StoreAligned(tile + 224, c32); Avx512F.StoreAligned(tile + 240, c33);
        Avx512F.StoreAligned(tile + 256, c40); Avx512F.StoreAligned(tile + 272, c41); Avx512F.StoreAligned(tile + 288, c42); Avx512F.StoreAligned(tile + 304, c43);
        Avx512F.StoreAligned(tile + 320, c50); Avx512F.StoreAligned(tile + 336, c51); Avx512F.StoreAligned(tile + 352, c52); Avx512F.StoreAligned(tile + 368, c53);
    }

    /// <summary>The AVX2 micro-kernel: 16 columns of the tile (two ymm registers per row, 12 accumulators),
    /// row r at tile + r NR. FMA's latency is 4-5 cycles and a core issues one or two per cycle, so 12
    /// independent accumulators keep both pipes busy; the other four registers hold B's two vectors and
    /// A's broadcast.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void Kernel16(int kc, float* a, float* b, long ldb, float* tile) => Kernel16(kc, a, MR, b, ldb, tile, NR, false);

    /// <summary>The AVX2 micro-kernel on operands read in place: c[r ldc + j] (+)= sum over p &lt; kc of
    /// a[p lda + r] b[p ldb + j] for r &lt; 6, j &lt; 16, added to c when <paramref name="accumulate"/>
    /// (Winograd.Avx2.cs's weight gradient, whose operands have their six rows and sixteen columns
    /// adjacent in every row p).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void Kernel16Strided(int kc, float* a, long lda, float* b, long ldb, float* c, long ldc, bool accumulate) =>
        Kernel16(kc, a, lda, b, ldb, c, ldc, accumulate);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Kernel16(int kc, float* a, long lda, float* b, long ldb, float* c, long ldc, bool accumulate)
    {
        Vector256<float> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default;
        Vector256<float> c30 = default, c31 = default, c40 = default, c41 = default, c50 = default, c51 = default;
        for (int p = 0; p < kc; p++)
        {
            var b0 = Vector256.Load(b);
            var b1 = Vector256.Load(b + 8);
            var x = Vector256.Create(a[0]);
            c00 = Fma.MultiplyAdd(x, b0, c00); c01 = Fma.MultiplyAdd(x, b1, c01);
            x = Vector256.Create(a[1]);
            c10 = Fma.MultiplyAdd(x, b0, c10); c11 = Fma.MultiplyAdd(x, b1, c11);
            x = Vector256.Create(a[2]);
            c20 = Fma.MultiplyAdd(x, b0, c20); c21 = Fma.MultiplyAdd(x, b1, c21);
            x = Vector256.Create(a[3]);
            c30 = Fma.MultiplyAdd(x, b0, c30); c31 = Fma.MultiplyAdd(x, b1, c31);
            x = Vector256.Create(a[4]);
            c40 = Fma.MultiplyAdd(x, b0, c40); c41 = Fma.MultiplyAdd(x, b1, c41);
            x = Vector256.Create(a[5]);
            c50 = Fma.MultiplyAdd(x, b0, c50); c51 = Fma.MultiplyAdd(x, b1, c51);
            a += lda;
            b += ldb;
        }
        if (accumulate)
        {
            // The product's kc terms summed on their own, then added: blocks of kc keep a long sum's rounding low.
            c00 += Vector256.Load(c); c01 += Vector256.Load(c + 8);
            c10 += Vector256.Load(c + ldc); c11 += Vector256.Load(c + ldc + 8);
            c20 += Vector256.Load(c + 2 * ldc); c21 += Vector256.Load(c + 2 * ldc + 8);
            c30 += Vector256.Load(c + 3 * ldc); c31 += Vector256.Load(c + 3 * ldc + 8);
            c40 += Vector256.Load(c + 4 * ldc); c41 += Vector256.Load(c + 4 * ldc + 8);
            c50 += Vector256.Load(c + 5 * ldc); c51 += Vector256.Load(c + 5 * ldc + 8);
        }
        c00.Store(c); c01.Store(c + 8);
        c10.Store(c + ldc); c11.Store(c + ldc + 8);
        c20.Store(c + 2 * ldc); c21.Store(c + 2 * ldc + 8);
        c30.Store(c + 3 * ldc); c31.Store(c + 3 * ldc + 8);
        c40.Store(c + 4 * ldc); c41.Store(c + 4 * ldc + 8);
        c50.Store(c + 5 * ldc); c51.Store(c + 5 * ldc + 8);
    }

    /// <summary>C[i0 + r, j0 + col] = alpha tile[r, col] + beta C[...] for the valid part of the tile, then the
    /// epilogue of row i0 + r.</summary>
    internal static void Store<TC>(float* tile, int mr, int nr, int i0, int j0, float alpha, float beta, TC c, Epilogue epilogue, bool wide) where TC : struct, ICLayout
    {
        float* baseC = c.Base;
        if (nr == NR && c.Contiguous(j0, NR) && !wide)
        {
            var va = Vector256.Create(alpha);
            var vb = Vector256.Create(beta);
            long col = c.Column(j0);
            for (int r = 0; r < mr; r++)
            {
                float* dst = baseC + c.Row(i0 + r) + col;
                float* src = tile + r * NR;
                var bias = epilogue.Active ? epilogue.Broadcast8(i0 + r) : default;
                for (int v = 0; v < NR; v += 8)
                {
                    var acc = Vector256.Load(src + v) * va;
                    if (beta != 0) acc = Fma.MultiplyAdd(vb, Vector256.Load(dst + v), acc);
                    if (epilogue.Active) acc = epilogue.Apply(acc, bias);
                    acc.Store(dst + v);
                }
            }
            return;
        }
        if (nr == NR && c.Contiguous(j0, NR))
        {
            var va = Vector512.Create(alpha);
            var vb = Vector512.Create(beta);
            long col = c.Column(j0);
            for (int r = 0; r < mr; r++)
            {
                float* dst = baseC + c.Row(i0 + r) + col;
                float* src = tile + r * NR;
                var bias = epilogue.Active ? epilogue.Broadcast(i0 + r) : default;
                for (int v = 0; v < NR; v += 16)
                {
                    var acc = Vector512.Load(src + v) * va;
                    if (beta != 0) acc = Avx512F.FusedMultiplyAdd(vb, Vector512.Load(dst + v), acc);
                    if (epilogue.Active) acc = epilogue.Apply(acc, bias);
                    acc.Store(dst + v);
                }
            }
            return;
        }
        long* columns = stackalloc long[NR];
        c.FillColumns(j0, nr, columns);
        for (int r = 0; r < mr; r++)
        {
            float* row = baseC + c.Row(i0 + r);
            float* src = tile + r * NR;
            for (int col = 0; col < nr; col++)
            {
                if (columns[col] < 0) continue;
                float* dst = row + columns[col];
                float v = beta == 0 ? alpha * src[col] : alpha * src[col] + beta * *dst;
                *dst = epilogue.Active ? epilogue.Apply(v, i0 + r) : v;
            }
        }
    }
}

// ------------------------------------------------------------------ dense matrices

/// <summary>op(A) of a row-major matrix: A[i, k] at a[i lda + k], or transposed at a[k lda + i].</summary>
internal readonly unsafe struct DenseA(float* a, int lda, bool transposed) : IPackA
{
    public void Pack(float* dst, int i0, int k0, int kc, int m)
    {
        int rows = Math.Min(Sgemm.MR, m - i0);
        if (rows < Sgemm.MR) new Span<float>(dst, kc * Sgemm.MR).Clear();
        if (transposed)
        {
            for (int p = 0; p < kc; p++)
            {
                float* src = a + (long)(k0 + p) * lda + i0;
                for (int r = 0; r < rows; r++) dst[p * Sgemm.MR + r] = src[r];
            }
        }
        else
        {
            for (int r = 0; r < rows; r++)
            {
                float* src = a + (long)(i0 + r) * lda + k0;
                for (int p = 0; p < kc; p++) dst[p * Sgemm.MR + r] = src[p];
            }
        }
    }
}

/// <summary>op(B) of a row-major matrix: B[k, j] at b[k ldb + j], or transposed at b[j ldb + k] (packed
/// with AVX-512 transposes when <paramref name="wide"/>, element by element otherwise).</summary>
internal readonly unsafe struct DenseB(float* b, int ldb, bool transposed, bool wide) : IPackB
{
    public void Pack(float* dst, int k0, int kc, int j0, int n)
    {
        int cols = Math.Min(Sgemm.NR, n - j0);
        if (!transposed)
        {
            for (int p = 0; p < kc; p++)
            {
                float* src = b + (long)(k0 + p) * ldb + j0;
                float* d = dst + p * Sgemm.NR;
                new ReadOnlySpan<float>(src, cols).CopyTo(new Span<float>(d, cols));
                if (cols < Sgemm.NR) new Span<float>(d + cols, Sgemm.NR - cols).Clear();
            }
        }
        else if (wide) PackTransposed(dst, k0, kc, j0, cols);
        else
        {
            // Column c of the strip is row j0 + c of B, contiguous along k: read each once, in order.
            for (int c = 0; c < Sgemm.NR; c++)
            {
                float* src = b + (long)(j0 + c) * ldb + k0;
                if (c < cols) for (int p = 0; p < kc; p++) dst[p * Sgemm.NR + c] = src[p];
                else for (int p = 0; p < kc; p++) dst[p * Sgemm.NR + c] = 0f;
            }
        }
    }

    public float* InPlace(int j0, int n, out long stride)
    {
        stride = ldb;
        return !transposed && j0 + Sgemm.NR <= n ? b + j0 : null;
    }

    /// <summary>The packed panel of B^T: 16 x 16 blocks of B's rows (contiguous along k) transposed in registers,
    /// so that each of the kc x 64 floats is moved by vector instructions (a dense layer's backward has k = 2048).</summary>
    [SkipLocalsInit]
    private void PackTransposed(float* dst, int k0, int kc, int j0, int cols)
    {
        var rows = stackalloc Vector512<float>[16];
        var columns = stackalloc Vector512<float>[16];
        for (int c0 = 0; c0 < Sgemm.NR; c0 += 16)
        {
            int nc = Math.Clamp(cols - c0, 0, 16);
            if (nc == 0)
            {
                for (int p = 0; p < kc; p++) Vector512<float>.Zero.Store(dst + p * Sgemm.NR + c0);
                continue;
            }
            for (int p0 = 0; p0 < kc; p0 += 16)
            {
                int np = Math.Min(16, kc - p0);
                var mask = Vector512.LessThan(Vector512<int>.Indices, Vector512.Create(np)).AsSingle();
                for (int l = 0; l < 16; l++)
                    rows[l] = l < nc ? Avx512F.MaskLoad(b + (long)(j0 + c0 + l) * ldb + k0 + p0, mask, Vector512<float>.Zero) : Vector512<float>.Zero;
                Simd.Transpose16(rows, columns);
                for (int q = 0; q < np; q++) columns[q].Store(dst + (p0 + q) * Sgemm.NR + c0);
            }
        }
    }
}

/// <summary>A row-major C with leading dimension ldc.</summary>
internal readonly unsafe struct DenseC(float* c, int ldc) : ICLayout
{
    public float* Base => c;
    public long Row(int i) => (long)i * ldc;
    public long Column(int j) => j;
    public bool Contiguous(int j0, int count) => true;
    public void FillColumns(int j0, int count, long* columns)
    {
        for (int c = 0; c < count; c++) columns[c] = j0 + c;
    }
}
