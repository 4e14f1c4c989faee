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

// op(A)[row, k]: A is [m, k] row-major, or [k, m] when transposed.
struct sgemm_load_a
{
    const float* a;
    int m, k;
    bool transposed;
    bool k_fastest;   // consecutive k are adjacent in memory unless A is transposed

    __device__ __forceinline__ float operator()(int row, int kk) const
    {
        return transposed ? a[(long long)kk * m + row] : a[(long long)row * k + kk];
    }
};

// op(B)[k, col]: B is [k, n] row-major, or [n, k] when transposed.
struct sgemm_load_b
{
    const float* b;
    int n, k;
    bool transposed;
    bool k_fastest;   // consecutive k are adjacent in memory only if B is transposed

    __device__ __forceinline__ float operator()(int kk, int col) const
    {
        return transposed ? b[(long long)col * k + kk] : b[(long long)kk * n + col];
    }
};

extern "C" __global__ void sgemm(int transA, int transB, int m, int n, int k, float alpha,
                                 const float* __restrict__ a, const float* __restrict__ b, float beta, float* __restrict__ c)
{
    const sgemm_load_a loadA = {a, m, k, transA != 0, transA == 0};
    const sgemm_load_b loadB = {b, n, k, transB != 0, transB != 0};
    float acc[GEMM_TM][GEMM_TN];
    gemm_tile(m, n, k, loadA, loadB, acc);

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
