using System.Numerics;

namespace RawGan.Engine.Backends.Cpu;

public sealed unsafe partial class CpuBackend
{
    public void Gemm(bool transA, bool transB, int m, int n, int k, float alpha, DeviceBuffer a, DeviceBuffer b, float beta, DeviceBuffer c)
    {
        if (m < 0 || n < 0 || k < 0) throw new ArgumentException($"Gemm: negative size m={m} n={n} k={k}");
        if (_vectors != CpuVectors.Portable)
        {
            if (Sgemm.TakesDotProducts(m, k, transA, transB))
            {
                Sgemm.MultiplyDotProducts(m, n, k, alpha, P(a), P(b), beta, P(c), Wide);
                return;
            }
            Sgemm.Multiply(m, n, k, alpha, new DenseA(P(a), transA ? m : k, transA), new DenseB(P(b), transB ? k : n, transB, Wide), beta, new DenseC(P(c), n),
                Epilogue.None, Wide);
            return;
        }
        GemmPortable(transA, transB, m, n, k, alpha, a, b, beta, c);
    }

    // The portable SGEMM (neither AVX-512 nor AVX2 with FMA), also the simple version the benchmarks compare against:
    // C is cut into tiles of RowTile x ColTile, tiles are spread over the cores, and inside a tile
    // each step over k adds one row of op(B), times one scalar of op(A), to RowTile rows of C with
    // SIMD. When B is transposed its rows are already the columns we need, so each C element is a
    // SIMD dot product instead.
    private const int RowTile = 4, ColTile = 512;

    internal void GemmPortable(bool transA, bool transB, int m, int n, int k, float alpha, DeviceBuffer a, DeviceBuffer b, float beta, DeviceBuffer c)
    {
        int rowTiles = (m + RowTile - 1) / RowTile, colTiles = (n + ColTile - 1) / ColTile;
        long work = (long)m * n * Math.Max(1, k);
        CpuParallel.For((long)rowTiles * colTiles, Math.Max(1, (1L << 18) * rowTiles * colTiles / Math.Max(1, work)),
            new GemmPortableLoop(transA, transB, m, n, k, alpha, P(a), P(b), beta, P(c), colTiles));
    }

    private readonly struct GemmPortableLoop(bool transA, bool transB, int m, int n, int k, float alpha, float* pa, float* pb, float beta, float* pc, int colTiles) : IRangeBody
    {
        public void Run(long t0, long t1)
        {
            for (long t = t0; t < t1; t++)
            {
                int i0 = (int)(t / colTiles) * RowTile, j0 = (int)(t % colTiles) * ColTile;
                int i1 = Math.Min(m, i0 + RowTile), j1 = Math.Min(n, j0 + ColTile);
                if (transB) GemmTileDot(transA, m, k, alpha, pa, pb, beta, pc, n, i0, i1, j0, j1);
                else GemmTileAxpy(transA, m, k, alpha, pa, pb, beta, pc, n, i0, i1, j0, j1);
            }
        }
    }

    private static void GemmTileAxpy(bool transA, int m, int k, float alpha, float* a, float* b, float beta, float* c, int n, int i0, int i1, int j0, int j1)
    {
        int width = j1 - j0, vw = Vector<float>.Count;
        for (int i = i0; i < i1; i++)
        {
            float* ci = c + (long)i * n + j0;
            if (beta == 0) new Span<float>(ci, width).Clear();
            else if (beta != 1) for (int j = 0; j < width; j++) ci[j] *= beta;
        }
        for (int p = 0; p < k; p++)
        {
            float* bp = b + (long)p * n + j0;
            for (int i = i0; i < i1; i++)
            {
                float aip = alpha * (transA ? a[(long)p * m + i] : a[(long)i * k + p]);
                if (aip == 0) continue;
                float* ci = c + (long)i * n + j0;
                var va = new Vector<float>(aip);
                int j = 0;
                for (; j <= width - vw; j += vw)
                {
                    var acc = Vector.LoadUnsafe(ref ci[j]);
                    (acc + va * Vector.LoadUnsafe(ref bp[j])).StoreUnsafe(ref ci[j]);
                }
                for (; j < width; j++) ci[j] += aip * bp[j];
            }
        }
    }

    private static void GemmTileDot(bool transA, int m, int k, float alpha, float* a, float* b, float beta, float* c, int n, int i0, int i1, int j0, int j1)
    {
        int vw = Vector<float>.Count;
        float[]? rented = null;
        if (transA)
        {
            // op(A)'s row i is a column of A: gather it once so the dot products stream.
            rented = System.Buffers.ArrayPool<float>.Shared.Rent(k);
        }
        try
        {
            for (int i = i0; i < i1; i++)
            {
                ReadOnlySpan<float> ai;
                if (transA)
                {
                    for (int p = 0; p < k; p++) rented![p] = a[(long)p * m + i];
                    ai = rented.AsSpan(0, k);
                }
                else ai = new ReadOnlySpan<float>(a + (long)i * k, k);
                float* ci = c + (long)i * n;
                for (int j = j0; j < j1; j++)
                {
                    var bj = new ReadOnlySpan<float>(b + (long)j * k, k);
                    var acc = Vector<float>.Zero;
                    int p = 0;
                    for (; p <= k - vw; p += vw)
                        acc += Vector.LoadUnsafe(ref System.Runtime.InteropServices.MemoryMarshal.GetReference(ai), (nuint)p)
                             * Vector.LoadUnsafe(ref System.Runtime.InteropServices.MemoryMarshal.GetReference(bj), (nuint)p);
                    float sum = Vector.Sum(acc);
                    for (; p < k; p++) sum += ai[p] * bj[p];
                    ci[j] = alpha * sum + (beta == 0 ? 0 : beta * ci[j]);
                }
            }
        }
        finally
        {
            if (rented != null) System.Buffers.ArrayPool<float>.Shared.Return(rented);
        }
    }
}
