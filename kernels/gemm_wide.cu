// gemm_wide.cu: single-precision matrix multiply, row-major; version 3 of gemm.cu's sgemm,
// computing the same thing with the same sums (fp32, each output's products added in the order
// of k):
//
//   sgemm_wide  C[m, n] = alpha op(A) op(B) + beta C
//               op(A) = A [m, k], or A^T when transA (A is stored [k, m])
//               op(B) = B [k, n], or B^T when transB (B is stored [n, k])
//
// When beta is 0, C is written without being read, as BLAS does.
//
// Threads: the tiling of wide_tile.cuh. A block of 256 threads computes a 128 x 128 tile of C,
// each thread 8 x 8 of its outputs (wide_row, wide_col), walking k in stages of 8 with the next
// stage's loads in flight during the current one's arithmetic. Launch: block 256, grid
// (ceil(n / 128), ceil(m / 128)), wide_tile_shared_bytes() of dynamic shared memory.
#include "common.cuh"
#include "wide_tile.cuh"

// The four cases of gemm.cu, each a pair of matrix_operand (operands.cuh), as in gemm_tf32.cu:
//   A [m, k]        A[r, d] = a[d + r * k]    k fastest
//   A^T, A [k, m]   A[r, d] = a[r + d * m]
//   B [k, n]        B[d, c] = b[c + d * n]
//   B^T, B [n, k]   B[d, c] = b[d + c * k]    k fastest
extern "C" __global__ void __launch_bounds__(WIDE_THREADS, WIDE_MIN_BLOCKS) sgemm_wide(int transA, int transB, int m, int n, int k, float alpha,
                                 const float* __restrict__ a, const float* __restrict__ b, float beta, float* __restrict__ c)
{
    float acc[WIDE_T][WIDE_T];
    if (!transA && !transB) wide_tile_range(m, n, 0, k, matrix_operand<true>{a, k}, matrix_operand<false>{b, n}, acc);
    else if (!transA) wide_tile_range(m, n, 0, k, matrix_operand<true>{a, k}, matrix_operand<true>{b, k}, acc);
    else if (!transB) wide_tile_range(m, n, 0, k, matrix_operand<false>{a, m}, matrix_operand<false>{b, n}, acc);
    else wide_tile_range(m, n, 0, k, matrix_operand<false>{a, m}, matrix_operand<true>{b, k}, acc);

#pragma unroll
    for (int i = 0; i < WIDE_T; i++)
    {
        const int row = wide_row(i);
        if (row >= m) continue;
#pragma unroll
        for (int g = 0; g < WIDE_T; g += 4)
        {
            // Four consecutive columns: col .. col + 3, of which `valid` are inside C.
            const int col = wide_col(g), valid = n - col;
            if (valid <= 0) continue;
            float* p = c + (long long)row * n + col;
            float v[4];
#pragma unroll
            for (int q = 0; q < 4; q++)
                v[q] = beta == 0.0f || q >= valid ? alpha * acc[i][g + q] : alpha * acc[i][g + q] + beta * p[q];
            wide_store4(p, valid, v[0], v[1], v[2], v[3]);
        }
    }
}
