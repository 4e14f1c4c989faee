using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace RawGan.Engine.Backends.Cpu;

// ---------------------------------------------------------------------------------------------
// Products with few rows: the dense layers of a training step, whose rows are the batch.
//
// G's latent layer is z [16, 128] x W [128, 2048]; D's head is x [16, 2048] x W^T with W
// [128, 2048]. Here the big operand is the weight matrix, read once, and there is almost nothing
// to reuse it for: 16 rows of C are three micro-kernel strips. Sgemm.cs would still pack all of
// W into its B panel first, which writes as many bytes as it reads and then reads them again. In
// a training step W has left the caches since its last use (the convolutions in between move
// tens of megabytes), so that packing costs three trips to memory where one suffices: on a
// 2-core machine with 10 GB/s to memory, `bench --profile` timed these products at 400-700 us
// inside the step against 50-130 us back to back.
//
// So with at most FewRows rows of C:
//   C = A B    B's strips of NR columns are read where they are (the micro-kernel takes a row
//              stride); only A (a few KB) is packed, and a last partial strip. Sgemm.Multiply
//              takes this path by itself for any B whose strips lie in memory (IPackB.InPlace):
//              a dense B, and the image of a 1x1 convolution, whose toRGB (3 output channels)
//              and the input gradient of fromRGB are such products.
//   C = A B^T  each entry is a dot product of a row of A with a row of B, both contiguous: a 4 x 4
//              block of C is 16 vector accumulators over k, 16 lanes at a time, summed at the end
//              (for k >= FewRowsDotMinK, 128; shorter rows go to Sgemm.cs). In the 8x8 step,
//              16x2048x128 with B^T took 0.94-1.95 ms packed, 0.72 as dot products with 16 separate
//              sums across lanes and 0.53 with the sums as one tree (2 calls).
// Each entry of C is computed the same way whichever core computes it, so results do not depend
// on the number of threads.
// ---------------------------------------------------------------------------------------------

internal static unsafe partial class Sgemm
{
    /// <summary>Up to this many rows of C, dense products take the paths below.</summary>
    public const int FewRows = 32;

    [ThreadStatic] private static float* _fewA, _fewB;
    [ThreadStatic] private static long _fewACapacity, _fewBCapacity;

    private static float* FewBuffer(ref float* buffer, ref long capacity, long floats)
    {
        if (capacity < floats)
        {
            if (buffer != null) System.Runtime.InteropServices.NativeMemory.AlignedFree(buffer);
            buffer = (float*)System.Runtime.InteropServices.NativeMemory.AlignedAlloc((nuint)(floats * sizeof(float)), 64);
            capacity = floats;
        }
        return buffer;
    }

    /// <summary>With B transposed, from this k on: each dot product ends in a sum across 16 lanes (a
    /// tree, Fold1..Fold4), which would cost as much as a shorter row's multiply-adds.</summary>
    public const int FewRowsDotMinK = 128;

    /// <summary>Whether <see cref="MultiplyDotProducts"/> takes C[m, n] = alpha op(A) op(B) + beta C.</summary>
    public static bool TakesDotProducts(int m, int k, bool transA, bool transB) => m <= FewRows && k >= FewRowsDotMinK && !transA && transB;

    // With AVX2 instead of AVX-512, the same blocks of 4 x 4 dot products run 8 lanes at a time
    // (Dot4x4Narrow), each of the 16 sums across its lanes reduced on its own.

    /// <summary>At most this k for B read in place: A, packed whole, stays a few hundred KB.</summary>
    public const int FewRowsMaxK = 4096;

    /// <summary>C = alpha A B^T + beta C for m &lt;= <see cref="FewRows"/> and k &gt;= <see cref="FewRowsDotMinK"/>:
    /// A [m, k] row-major, B [n, k] row-major, C [m, n] row-major.</summary>
    public static void MultiplyDotProducts(int m, int n, int k, float alpha, float* a, float* b, float beta, float* c, bool wide)
    {
        if (m <= 0 || n <= 0) return;
        long blocks = (n + 3) / 4;
        CpuParallel.For(blocks, 2L * m * n * k < ParallelMinFlops ? blocks : 1, new DotBlocks(m, n, k, alpha, a, b, beta, c, wide));
    }

    /// <summary>Whether Multiply reads B's strips in place: few rows, and B is a matrix whose NR-column strips lie in memory
    /// (a dense B, or a 1x1 convolution's image).</summary>
    private static bool ReadsBInPlace<TB>(int m, int n, int k, TB b) where TB : struct, IPackB =>
        m <= FewRows && k > 0 && k <= FewRowsMaxK && b.InPlace(0, n, out _) != null;

    /// <summary>C = alpha op(A) B + beta C, then the epilogue, with B's strips read in place (ReadsBInPlace).</summary>
    private static void MultiplyInPlace<TA, TB, TC>(int m, int n, int k, float alpha, TA a, TB b, float beta, TC c, Epilogue epilogue, bool wide)
        where TA : struct, IPackA where TB : struct, IPackB where TC : struct, ICLayout
    {
        long strips = (n + NR - 1) / NR;
        CpuParallel.For(strips, 2L * m * n * k < ParallelMinFlops ? strips : 1, new InPlaceStrips<TA, TB, TC>(m, n, k, alpha, a, b, beta, c, epilogue, wide));
    }

    /// <summary>Column strips [s0, s1) of C: A packed whole, each strip of B read in place (or packed where it cannot be).</summary>
    private readonly struct InPlaceStrips<TA, TB, TC>(int m, int n, int k, float alpha, TA a, TB b, float beta, TC c, Epilogue epilogue, bool wide) : IRangeBody
        where TA : struct, IPackA where TB : struct, IPackB where TC : struct, ICLayout
    {
        public void Run(long s0, long s1)
        {
            int strips = (m + MR - 1) / MR;
            float* packA = FewBuffer(ref _fewA, ref _fewACapacity, (long)strips * MR * k);
            for (int r = 0; r < strips; r++) a.Pack(packA + (long)r * MR * k, r * MR, 0, k, m);
            EnsureBuffers(NR);
            float* tile = _tile;
            for (long s = s0; s < s1; s++)
            {
                int j0 = (int)s * NR, nr = Math.Min(NR, n - j0);
                float* strip = b.InPlace(j0, n, out long ldb);
                if (strip == null)
                {
                    // A strip that is not one run per row (the last, partial one; one that crosses samples).
                    strip = FewBuffer(ref _fewB, ref _fewBCapacity, (long)k * NR);
                    b.Pack(strip, 0, k, j0, n);
                    ldb = NR;
                }
                for (int r = 0; r < strips; r++)
                {
                    Kernel(k, packA + (long)r * MR * k, strip, ldb, tile, nr, wide);
                    Store(tile, Math.Min(MR, m - r * MR), nr, r * MR, j0, alpha, beta, c, epilogue, wide);
                }
            }
        }
    }

    /// <summary>Blocks [q0, q1) of four columns of C = alpha A B^T + beta C, B [n, k].</summary>
    private readonly struct DotBlocks(int m, int n, int k, float alpha, float* a, float* b, float beta, float* c, bool wide) : IRangeBody
    {
        public void Run(long q0, long q1)
        {
            float* sums = stackalloc float[16];
            for (long q = q0; q < q1; q++)
            {
                int j0 = (int)q * 4;
                for (int i0 = 0; i0 < m; i0 += 4)
                {
                    // Rows and columns past the matrix repeat its last one; their sums are not stored.
                    if (wide) Dot4x4(a, i0, m, b, j0, n, k, sums);
                    else Dot4x4Narrow(a, i0, m, b, j0, n, k, sums);
                    for (int r = 0; r < 4 && i0 + r < m; r++)
                        for (int t = 0; t < 4 && j0 + t < n; t++)
                        {
                            float* dst = c + (long)(i0 + r) * n + j0 + t;
                            float v = alpha * sums[4 * t + r];
                            *dst = beta == 0 ? v : v + beta * *dst;
                        }
                }
            }
        }
    }

    // The reduction tree. In 128-bit blocks (four per vector): Fold1(a, b) = [a0 + a2, a1 + a3, b0 + b2,
    // b1 + b3], whose blocks 0-1 sum to a's total and 2-3 to b's; Fold2 of two of those leaves one
    // block per source (4 sources); Fold4 of four of those, within each block, leaves one lane per
    // source: block t, lane r holds the total of the r-th argument's t-th source.
    private static Vector512<float> Fold1(Vector512<float> a, Vector512<float> b) =>
        Avx512F.Shuffle4x128(a, b, 0x44) + Avx512F.Shuffle4x128(a, b, 0xEE);

    private static Vector512<float> Fold2(Vector512<float> p, Vector512<float> q) =>
        Avx512F.Shuffle4x128(p, q, 0x88) + Avx512F.Shuffle4x128(p, q, 0xDD);

    private static Vector512<float> Fold4(Vector512<float> r0, Vector512<float> r1, Vector512<float> r2, Vector512<float> r3)
    {
        // Lanes 0 and 2 of each block from the first argument, 1 and 3 from the second.
        var t0 = Avx512F.UnpackLow(r0, r1) + Avx512F.UnpackHigh(r0, r1);
        var t1 = Avx512F.UnpackLow(r2, r3) + Avx512F.UnpackHigh(r2, r3);
        return Avx512F.Shuffle(t0, t1, 0x44) + Avx512F.Shuffle(t0, t1, 0xEE);
    }

    /// <summary>sums[4 t + r] = dot(A[i0 + r, :], B[j0 + t, :]) over k, rows clamped to m and n.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Dot4x4(float* a, int i0, int m, float* b, int j0, int n, int k, float* sums)
    {
        float* a0 = a + (long)Math.Min(i0, m - 1) * k, a1 = a + (long)Math.Min(i0 + 1, m - 1) * k;
        float* a2 = a + (long)Math.Min(i0 + 2, m - 1) * k, a3 = a + (long)Math.Min(i0 + 3, m - 1) * k;
        float* b0 = b + (long)Math.Min(j0, n - 1) * k, b1 = b + (long)Math.Min(j0 + 1, n - 1) * k;
        float* b2 = b + (long)Math.Min(j0 + 2, n - 1) * k, b3 = b + (long)Math.Min(j0 + 3, n - 1) * k;
        Vector512<float> s00 = default, s01 = default, s02 = default, s03 = default;
        Vector512<float> s10 = default, s11 = default, s12 = default, s13 = default;
        Vector512<float> s20 = default, s21 = default, s22 = default, s23 = default;
        Vector512<float> s30 = default, s31 = default, s32 = default, s33 = default;
        for (int p = 0; p < k; p += 16)
        {
            Vector512<float> x0, x1, x2, x3, y0, y1, y2, y3;
            if (p + 16 <= k)
            {
                x0 = Vector512.Load(a0 + p); x1 = Vector512.Load(a1 + p); x2 = Vector512.Load(a2 + p); x3 = Vector512.Load(a3 + p);
                y0 = Vector512.Load(b0 + p); y1 = Vector512.Load(b1 + p); y2 = Vector512.Load(b2 + p); y3 = Vector512.Load(b3 + p);
            }
            else
            {
                var mask = Vector512.LessThan(Vector512<int>.Indices, Vector512.Create(k - p)).AsSingle();
                var zero = Vector512<float>.Zero;
                x0 = Avx512F.MaskLoad(a0 + p, mask, zero); x1 = Avx512F.MaskLoad(a1 + p, mask, zero);
                x2 = Avx512F.MaskLoad(a2 + p, mask, zero); x3 = Avx512F.MaskLoad(a3 + p, mask, zero);
                y0 = Avx512F.MaskLoad(b0 + p, mask, zero); y1 = Avx512F.MaskLoad(b1 + p, mask, zero);
                y2 = Avx512F.MaskLoad(b2 + p, mask, zero); y3 = Avx512F.MaskLoad(b3 + p, mask, zero);
            }
            s00 = Avx512F.FusedMultiplyAdd(x0, y0, s00); s01 = Avx512F.FusedMultiplyAdd(x0, y1, s01);
            s02 = Avx512F.FusedMultiplyAdd(x0, y2, s02); s03 = Avx512F.FusedMultiplyAdd(x0, y3, s03);
            s10 = Avx512F.FusedMultiplyAdd(x1, y0, s10); s11 = Avx512F.FusedMultiplyAdd(x1, y1, s11);
            s12 = Avx512F.FusedMultiplyAdd(x1, y2, s12); s13 = Avx512F.FusedMultiplyAdd(x1, y3, s13);
            s20 = Avx512F.FusedMultiplyAdd(x2, y0, s20); s21 = Avx512F.FusedMultiplyAdd(x2, y1, s21);
            s22 = Avx512F.FusedMultiplyAdd(x2, y2, s22); s23 = Avx512F.FusedMultiplyAdd(x2, y3, s23);
            s30 = Avx512F.FusedMultiplyAdd(x3, y0, s30); s31 = Avx512F.FusedMultiplyAdd(x3, y1, s31);
            s32 = Avx512F.FusedMultiplyAdd(x3, y2, s32); s33 = Avx512F.FusedMultiplyAdd(x3, y3, s33);
        }
        // The 16 sums across lanes as one tree of 15 additions (and 30 shuffles) instead of 16 separate ones.
        var f = Fold4(Fold2(Fold1(s00, s01), Fold1(s02, s03)), Fold2(Fold1(s10, s11), Fold1(s12, s13)),
                      Fold2(Fold1(s20, s21), Fold1(s22, s23)), Fold2(Fold1(s30, s31), Fold1(s32, s33)));
        f.Store(sums);   // sums[4 t + r] = dot(A row i0 + r, B row j0 + t)
    }

    /// <summary>Dot4x4 with AVX2: the same sums, 8 lanes per vector, the last k % 8 terms added one by one.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Dot4x4Narrow(float* a, int i0, int m, float* b, int j0, int n, int k, float* sums)
    {
        float** rows = stackalloc float*[8];
        for (int r = 0; r < 4; r++) rows[r] = a + (long)Math.Min(i0 + r, m - 1) * k;
        for (int t = 0; t < 4; t++) rows[4 + t] = b + (long)Math.Min(j0 + t, n - 1) * k;
        float* a0 = rows[0], a1 = rows[1], a2 = rows[2], a3 = rows[3], b0 = rows[4], b1 = rows[5], b2 = rows[6], b3 = rows[7];
        Vector256<float> s00 = default, s01 = default, s02 = default, s03 = default;
        Vector256<float> s10 = default, s11 = default, s12 = default, s13 = default;
        Vector256<float> s20 = default, s21 = default, s22 = default, s23 = default;
        Vector256<float> s30 = default, s31 = default, s32 = default, s33 = default;
        int p = 0;
        for (; p + 8 <= k; p += 8)
        {
            var x0 = Vector256.Load(a0 + p); var x1 = Vector256.Load(a1 + p); var x2 = Vector256.Load(a2 + p); var x3 = Vector256.Load(a3 + p);
            var y0 = Vector256.Load(b0 + p); var y1 = Vector256.Load(b1 + p); var y2 = Vector256.Load(b2 + p); var y3 = Vector256.Load(b3 + p);
            s00 = Fma.MultiplyAdd(x0, y0, s00); s01 = Fma.MultiplyAdd(x0, y1, s01); s02 = Fma.MultiplyAdd(x0, y2, s02); s03 = Fma.MultiplyAdd(x0, y3, s03);
            s10 = Fma.MultiplyAdd(x1, y0, s10); s11 = Fma.MultiplyAdd(x1, y1, s11); s12 = Fma.MultiplyAdd(x1, y2, s12); s13 = Fma.MultiplyAdd(x1, y3, s13);
            s20 = Fma.MultiplyAdd(x2, y0, s20); s21 = Fma.MultiplyAdd(x2, y1, s21); s22 = Fma.MultiplyAdd(x2, y2, s22); s23 = Fma.MultiplyAdd(x2, y3, s23);
            s30 = Fma.MultiplyAdd(x3, y0, s30); s31 = Fma.MultiplyAdd(x3, y1, s31); s32 = Fma.MultiplyAdd(x3, y2, s32); s33 = Fma.MultiplyAdd(x3, y3, s33);
        }
        ReadOnlySpan<Vector256<float>> all = [s00, s01, s02, s03, s10, s11, s12, s13, s20, s21, s22, s23, s30, s31, s32, s33];
        for (int r = 0; r < 4; r++)
            for (int t = 0; t < 4; t++)
            {
                float sum = Vector256.Sum(all[4 * r + t]);
                for (int q = p; q < k; q++) sum += rows[r][q] * rows[4 + t][q];
                sums[4 * t + r] = sum;
            }
    }
}
