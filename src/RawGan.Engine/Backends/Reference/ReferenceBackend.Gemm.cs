namespace RawGan.Engine.Backends.Reference;

// Matrix product, row-major: C[m, n] = alpha op(A)[m, k] op(B)[k, n] + beta C, where
// op(A)[i, p] = A[i, p] (A stored [m, k]) or A[p, i] when transposed (A stored [k, m]), and
// op(B)[p, j] = B[p, j] (B stored [k, n]) or B[j, p] when transposed (B stored [n, k]).
// With beta = 0, C is not read (it may hold NaN), as in BLAS.
public sealed unsafe partial class ReferenceBackend
{
    public void Gemm(bool transA, bool transB, int m, int n, int k, float alpha, DeviceBuffer a, DeviceBuffer b, float beta, DeviceBuffer c)
    {
        if (m < 0 || n < 0 || k < 0) throw new ArgumentException($"Gemm: negative size m={m} n={n} k={k}");
        float* pa = P(a), pb = P(b), pc = P(c);
        for (long i = 0; i < m; i++)
            for (long j = 0; j < n; j++)
            {
                double sum = 0;
                for (long p = 0; p < k; p++)
                {
                    float aip = transA ? pa[p * m + i] : pa[i * k + p];
                    float bpj = transB ? pb[j * k + p] : pb[p * n + j];
                    sum += (double)aip * bpj;
                }
                double old = beta == 0 ? 0 : (double)beta * pc[i * n + j];
                pc[i * n + j] = (float)(alpha * sum + old);
            }
    }
}
