// gemm_tf32.cu: matrix multiply on tensor cores (TF32 inputs, fp32 accumulation), row-major;
// version 2 of gemm.cu's sgemm, computing the same thing:
//
//   sgemm_tf32  C[m, n] = alpha op(A) op(B) + beta C
//               op(A) = A [m, k], or A^T when transA (A is stored [k, m])
//               op(B) = B [k, n], or B^T when transB (B is stored [n, k])
//
// except that A and B are rounded to tf32 (10 mantissa bits) before they are multiplied; the
// sums are fp32 (see mma_tile.cuh for the error this brings). When beta is 0, C is written
// without being read, as BLAS does.
//
// Threads: the tensor-core tiling of mma_tile.cuh. A block of (32, WM, WN) threads computes a
// (32 WM) x (32 WN) tile of C, each warp a 32 x 32 part of it as 2 x 4 mma.sync.m16n8k8
// fragments, each thread 32 of its outputs (mma_row, mma_col), walking k in stages of 8 through
// a three-stage cp.async pipeline. Launch: WM, WN in {1, 2, 4} chosen by the host (4 x 4 unless
// m or n is small), grid (ceil(n / (32 WN)), ceil(m / (32 WM))), mma_tile_shared_bytes(WM, WN)
// of dynamic shared memory. The host launches it only on sm_80 and newer.
#include "common.cuh"
#include "mma_tile.cuh"

// The four cases of gemm.cu, each a pair of matrix_operand (i is the index adjacent in memory;
// r, c, d: row, column and depth indices):
//   A [m, k]        A[r, d] = a[d + r * k]    i = d: k fastest
//   A^T, A [k, m]   A[r, d] = a[r + d * m]    i = r
//   B [k, n]        B[d, c] = b[c + d * n]    i = c
//   B^T, B [n, k]   B[d, c] = b[d + c * k]    i = d: k fastest
// Each is its own instantiation of the tile, since the layout of a slice in shared memory
// follows its operand's memory order.
extern "C" __global__ void __launch_bounds__(MMA_MAX_THREADS, MMA_MIN_BLOCKS) sgemm_tf32(int transA, int transB, int m, int n, int k, float alpha,
                                 const float* __restrict__ a, const float* __restrict__ b, float beta, float* __restrict__ c)
{
    float acc[MMA_MI][MMA_NI][4];
    if (!transA && !transB) mma_tile_range(m, n, 0, k, matrix_operand<true>{a, k}, matrix_operand<false>{b, n}, acc);
    else if (!transA) mma_tile_range(m, n, 0, k, matrix_operand<true>{a, k}, matrix_operand<true>{b, k}, acc);
    else if (!transB) mma_tile_range(m, n, 0, k, matrix_operand<false>{a, m}, matrix_operand<false>{b, n}, acc);
    else mma_tile_range(m, n, 0, k, matrix_operand<false>{a, m}, matrix_operand<true>{b, k}, acc);

    for (int mi = 0; mi < MMA_MI; mi++)
        for (int half = 0; half < 2; half++)
        {
            const int row = mma_row(mi, half);
            if (row >= m) continue;
            for (int ni = 0; ni < MMA_NI; ni++)
                for (int e = 0; e < 2; e++)
                {
                    const int col = mma_col(ni, e);
                    if (col >= n) continue;
                    const long long idx = (long long)row * n + col;
                    const float v = alpha * acc[mi][ni][2 * half + e];
                    c[idx] = beta == 0.0f ? v : v + beta * c[idx];
                }
        }
}
