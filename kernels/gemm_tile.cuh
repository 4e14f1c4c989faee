// gemm_tile.cuh: the tiled matrix product shared by sgemm (gemm.cu) and the three convolution
// kernels (conv.cu).
//
// The product. C[M, N] = A[M, K] B[K, N], where A and B are never passed as arrays: a "loader"
// returns A[row, k] and B[k, col] on demand. For sgemm the loaders read row-major matrices
// (transposed or not); for a convolution they gather the right input pixel for each (row, k) or
// (k, col) on the fly, an "implicit GEMM": the im2col matrix is never built in memory.
//
// The tiling. A block of blockDim.x * blockDim.y threads computes one tile of C with
// BM = GEMM_TM * blockDim.y rows and BN = GEMM_TN * blockDim.x columns, at
//   rows    blockIdx.y * BM ...
//   columns blockIdx.x * BN ...
// so the grid is (ceil(N / BN), ceil(M / BM)). It walks K in steps of GEMM_BK: the block's
// threads first copy a BK x BM slice of A and a BK x BN slice of B into shared memory together
// (each element of the tiles is loaded once from global memory and then read by TN or TM
// threads), a barrier makes the tiles complete, every thread does BK rank-1 updates of its own
// GEMM_TM x GEMM_TN accumulators held in registers, and a second barrier keeps the next copy from
// overwriting tiles that slower threads are still reading.
//
// Which outputs a thread owns. Thread (tx, ty) owns rows ty + i * blockDim.y (i < TM) and
// columns tx + j * blockDim.x (j < TN): strided rather than a contiguous 4x4 patch, so threads
// of a warp read consecutive shared-memory words (no bank conflicts) and store consecutive C
// elements (coalesced). Each shared value read feeds TM or TN multiply-adds from registers,
// which is what lifts this above a naive one-output-per-thread kernel.
//
// Loading. Every tile element is loaded by some thread in a loop striding over the block, so
// any block shape works. The order in which a block walks a tile follows the operand's memory
// layout (loader.k_fastest says whether consecutive k are adjacent in memory), so the threads of
// a warp read adjacent addresses either way. Tiles are padded by one float per row so that
// threads writing down a column of the tile hit different banks. Elements outside M, N or K
// load as 0, so sizes need not be multiples of anything.
//
// Launch shape. The host picks a two-dimensional block from its BlockSize (e.g. 16 x 16 for
// 256 threads: 64 x 64 tiles) and passes gemm_tile_shared_bytes(bx, by) of dynamic shared
// memory: 16.5 KiB for the largest (32 x 32) block, well under the 48 KiB limit. The kernel is
// correct for any block shape; only the speed depends on it.
#pragma once
#include "common.cuh"

#define GEMM_TM 4    // rows of C per thread
#define GEMM_TN 4    // columns of C per thread
#define GEMM_BK 16   // depth of one K step

// Dynamic shared memory for a (bx, by) block, in bytes; the host computes the same number.
__host__ __device__ __forceinline__ unsigned gemm_tile_shared_bytes(unsigned bx, unsigned by)
{
    return (unsigned)sizeof(float) * GEMM_BK * ((GEMM_TM * by + 1) + (GEMM_TN * bx + 1));
}

// Accumulates this thread's GEMM_TM x GEMM_TN outputs of the block's tile of A B into acc.
// LoadA: float operator()(int row, int k) const, bool k_fastest; LoadB: float operator()(int k,
// int col) const, bool k_fastest. Every thread of the block must call it (it has barriers).
template <typename LoadA, typename LoadB>
__device__ __forceinline__ void gemm_tile(int M, int N, int K, const LoadA& loadA, const LoadB& loadB, float acc[GEMM_TM][GEMM_TN])
{
    DYNAMIC_SHARED(float, tiles);
    const int bx = blockDim.x, by = blockDim.y;
    const int BM = GEMM_TM * by, BN = GEMM_TN * bx;
    const int lda = BM + 1, ldb = BN + 1;          // padded row lengths of the shared tiles
    float* As = tiles;                              // As[kk * lda + r] = A[row0 + r, k0 + kk]
    float* Bs = tiles + GEMM_BK * lda;              // Bs[kk * ldb + c] = B[k0 + kk, col0 + c]
    const int row0 = blockIdx.y * BM, col0 = blockIdx.x * BN;
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int tid = ty * bx + tx, threads = bx * by;

    for (int i = 0; i < GEMM_TM; i++)
        for (int j = 0; j < GEMM_TN; j++) acc[i][j] = 0.0f;

    for (int k0 = 0; k0 < K; k0 += GEMM_BK)
    {
        for (int e = tid; e < GEMM_BK * BM; e += threads)
        {
            int r, kk;
            if (loadA.k_fastest) { r = e / GEMM_BK; kk = e % GEMM_BK; }
            else { kk = e / BM; r = e % BM; }
            const int row = row0 + r, k = k0 + kk;
            As[kk * lda + r] = (row < M && k < K) ? loadA(row, k) : 0.0f;
        }
        for (int e = tid; e < GEMM_BK * BN; e += threads)
        {
            int c, kk;
            if (loadB.k_fastest) { c = e / GEMM_BK; kk = e % GEMM_BK; }
            else { kk = e / BN; c = e % BN; }
            const int col = col0 + c, k = k0 + kk;
            Bs[kk * ldb + c] = (k < K && col < N) ? loadB(k, col) : 0.0f;
        }
        __syncthreads();

        for (int kk = 0; kk < GEMM_BK; kk++)
        {
            float a[GEMM_TM], b[GEMM_TN];
            for (int i = 0; i < GEMM_TM; i++) a[i] = As[kk * lda + ty + i * by];
            for (int j = 0; j < GEMM_TN; j++) b[j] = Bs[kk * ldb + tx + j * bx];
            for (int i = 0; i < GEMM_TM; i++)
                for (int j = 0; j < GEMM_TN; j++) acc[i][j] += a[i] * b[j];
        }
        __syncthreads();
    }
}

// The C coordinates of this thread's accumulator acc[i][j].
__device__ __forceinline__ int gemm_tile_row(int i) { return blockIdx.y * (GEMM_TM * blockDim.y) + threadIdx.y + i * blockDim.y; }
__device__ __forceinline__ int gemm_tile_col(int j) { return blockIdx.x * (GEMM_TN * blockDim.x) + threadIdx.x + j * blockDim.x; }
