// gemm.cu: single-precision matrix multiply, row-major.
//
//   sgemm  C[m, n] = alpha op(A) op(B) + beta C
//          op(A) = A [m, k], or A^T when transA (A is stored [k, m])
//          op(B) = B [k, n], or B^T when transB (B is stored [n, k])
//
// Every MatMul of the engine comes here (ProGAN's dense layers among them); the two products of
// its backward pass are the same kernel with the transpose flags flipped.
//
// Threads: the shared-memory tiling of gemm_tile.cuh. Each block computes a (4 blockDim.y) x
// (4 blockDim.x) tile of C, each thread 4 x 4 of its outputs, walking k in steps of 16 through
// shared memory. Launch: a 2-D block chosen by the host from its BlockSize (16 x 16 for 256),
// grid (ceil(n / (4 blockDim.x)), ceil(m / (4 blockDim.y))), and gemm_tile_shared_bytes of
// dynamic shared memory.
//
// When beta is 0, C is written without being read, as BLAS does: C may hold garbage (or NaN)
// before the call.
#include "common.cuh"
#include "gemm_tile.cuh"

// Each operand is a strided_operand (gemm_tile.cuh), read at p[i + j * stride] with i the
// index adjacent in memory (r, c, d: row, column and depth (k) indices; m, n, k: the sizes):
//   A [m, k]        A[r, d] = a[d + r * k]    i = d (depth fastest)
//   A^T, A [k, m]   A[r, d] = a[r + d * m]    i = r
//   B [k, n]        B[d, c] = b[c + d * n]    i = c
//   B^T, B [n, k]   B[d, c] = b[d + c * k]    i = d (depth fastest)
extern "C" __global__ void __launch_bounds__(GEMM_MAX_THREADS, 1) sgemm(int transA, int transB, int m, int n, int k, float alpha,
                                 const float* __restrict__ a, const float* __restrict__ b, float beta, float* __restrict__ c)
{
    const strided_operand A = {a, transA ? (long long)m : (long long)k, transA == 0};
    const strided_operand B = {b, transB ? (long long)k : (long long)n, transB != 0};
    float acc[GEMM_TM][GEMM_TN];
    gemm_tile(m, n, k, A, B, acc);

    for (int i = 0; i < GEMM_TM; i++)
    {
        const int row = gemm_tile_row(i);
        if (row >= m) continue;
        for (int j = 0; j < GEMM_TN; j++)
        {
            const int col = gemm_tile_col(j);
            if (col >= n) continue;
            const long long idx = (long long)row * n + col;
            c[idx] = beta == 0.0f ? alpha * acc[i][j] : alpha * acc[i][j] + beta * c[idx];
        }
    }
}
