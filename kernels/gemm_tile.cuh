// gemm_tile.cuh: the tiled matrix product shared by sgemm (gemm.cu) and the three convolution
// kernels (conv.cu).
//
// The product. C[M, N] = A[M, K] B[K, N], where A and B are never passed as arrays: an operand
// object returns A[row, k] and B[k, col] on demand. For sgemm the operands read row-major
// matrices (transposed or not); for a convolution one of them gathers the right input pixel for
// each (k, col) on the fly, an "implicit GEMM": the im2col matrix is never built in memory.
//
// The tiling. A block of blockDim.x * blockDim.y threads computes one tile of C with
// BM = GEMM_TM * blockDim.y rows and BN = GEMM_TN * blockDim.x columns, at
//   rows    blockIdx.y * BM ...
//   columns blockIdx.x * BN ...
// so the grid is (ceil(N / BN), ceil(M / BM)). It walks K in steps of GEMM_BK: the block's
// threads first copy a BK x BM slice of A and a BK x BN slice of B into shared memory together
// (each element is loaded from global memory once, then read from shared memory by TN or TM
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
// Operands. An operand says whether consecutive k are adjacent in memory (k_fastest), and splits
// the work of finding an element in two: fixed(i) does the part that depends on one index, and
// load(f, j) the rest, where (i, j) = (k, row or column) if k_fastest, else (row or column, k).
// A tile is walked in the operand's memory order, so the threads of a warp read adjacent
// addresses either way. With the host's block shapes every thread then keeps the same i for a
// whole K step and only j varies: fixed() runs once per thread and step (for a convolution it
// holds the divisions that turn a flat pixel index into a sample, a row and a column), and
// load() once per element. Any other block shape takes a generic path that calls both per
// element. Elements outside M, N or K load as 0, so sizes need not be multiples of anything.
// Tiles are padded by one float per row so that threads writing down a column of a tile hit
// different shared-memory banks.
//
// Launch shape. The host picks a two-dimensional block from its BlockSize, at most
// GEMM_MAX_THREADS (16 x 16 for 256 threads: 64 x 64 tiles; 8 x 4 for 32; 32 x 16 for 512) and
// passes gemm_tile_shared_bytes(bx, by) of dynamic shared memory: 12.3 KiB for the largest block,
// well under the 48 KiB limit. The kernel is correct for any block shape; only its speed depends
// on the shape.
#pragma once
#include "common.cuh"

#define GEMM_TM 4    // rows of C per thread
#define GEMM_TN 4    // columns of C per thread
#define GEMM_BK 16   // depth of one K step

// The largest block of a tiled kernel, declared on each with __launch_bounds__. Holding 16
// accumulators, two operand pointers and their loaders, these kernels take 99 to 118 registers
// per thread when ptxas is free to choose; 1024 threads x 118 registers would need 120,832 of
// the 65,536 a block may have, so a launch of 1024 threads fails on every GPU (701,
// LAUNCH_OUT_OF_RESOURCES). Declared as 512, ptxas keeps them within 128 registers, and the
// host (CudaBackend) lowers larger block sizes to this bound.
#define GEMM_MAX_THREADS 512

// Dynamic shared memory for a (bx, by) block, in bytes; the host computes the same number.
__host__ __device__ __forceinline__ unsigned gemm_tile_shared_bytes(unsigned bx, unsigned by)
{
    return (unsigned)sizeof(float) * GEMM_BK * ((GEMM_TM * by + 1) + (GEMM_TN * bx + 1));
}

// A row-major matrix operand read at p[i + j * stride]: i is the index adjacent in memory.
// All four sgemm cases are one of these (see gemm.cu), and so is a convolution's weight matrix.
struct strided_operand
{
    const float* p;
    long long stride;
    bool k_fastest;
    __device__ __forceinline__ const float* fixed(int i) const { return p + i; }
    __device__ __forceinline__ float load(const float* f, int j) const { return f[j * stride]; }
};

// One operand tile: tile[kk * pitch + l] = operand at (l0 + l, k0 + kk) for l < L, kk < GEMM_BK,
// where l is the row (of A) or column (of B), limit the matrix's row or column count, and K the
// end of the depths to read (zeros beyond).
template <typename Operand>
__device__ __forceinline__ void gemm_load_tile(const Operand& op, float* tile, int pitch, int L, int l0, int limit, int k0, int K)
{
    const int tid = threadIdx.y * blockDim.x + threadIdx.x;
    const int threads = blockDim.x * blockDim.y;
    if (op.k_fastest && threads % GEMM_BK == 0)
    {
        // This thread keeps one depth kk and walks the rows (or columns) of the tile.
        const int kk = tid % GEMM_BK, k = k0 + kk;
        if (k < K)
        {
            const auto f = op.fixed(k);
            for (int l = tid / GEMM_BK; l < L; l += threads / GEMM_BK)
                tile[kk * pitch + l] = l0 + l < limit ? op.load(f, l0 + l) : 0.0f;
        }
        else
        {
            for (int l = tid / GEMM_BK; l < L; l += threads / GEMM_BK) tile[kk * pitch + l] = 0.0f;
        }
    }
    else if (!op.k_fastest && threads % L == 0)
    {
        // This thread keeps one row (or column) l and walks the depths of the tile.
        const int l = tid % L;
        if (l0 + l < limit)
        {
            const auto f = op.fixed(l0 + l);
            for (int kk = tid / L; kk < GEMM_BK; kk += threads / L)
                tile[kk * pitch + l] = k0 + kk < K ? op.load(f, k0 + kk) : 0.0f;
        }
        else
        {
            for (int kk = tid / L; kk < GEMM_BK; kk += threads / L) tile[kk * pitch + l] = 0.0f;
        }
    }
    else
    {
        // Any other block shape: every element on its own.
        for (int e = tid; e < GEMM_BK * L; e += threads)
        {
            int l, kk;
            if (op.k_fastest) { l = e / GEMM_BK; kk = e % GEMM_BK; }
            else { kk = e / L; l = e % L; }
            const int li = l0 + l, k = k0 + kk;
            float v = 0.0f;
            if (li < limit && k < K) v = op.k_fastest ? op.load(op.fixed(k), li) : op.load(op.fixed(li), k);
            tile[kk * pitch + l] = v;
        }
    }
}

// Accumulates this thread's GEMM_TM x GEMM_TN outputs of the block's tile of A B into acc, over
// the depths kBegin <= k < kEnd (a slice of K when several blocks share one tile; see
// conv2d_backward_weight). Every thread of the block must call it (it has barriers).
template <typename OperandA, typename OperandB>
__device__ __forceinline__ void gemm_tile_range(int M, int N, int kBegin, int kEnd, const OperandA& a, const OperandB& b, float acc[GEMM_TM][GEMM_TN])
{
    DYNAMIC_SHARED(float, tiles);
    const int bx = blockDim.x, by = blockDim.y;
    const int BM = GEMM_TM * by, BN = GEMM_TN * bx;
    const int lda = BM + 1, ldb = BN + 1;          // padded row lengths of the shared tiles
    float* As = tiles;                              // As[kk * lda + r] = A[row0 + r, k0 + kk]
    float* Bs = tiles + GEMM_BK * lda;              // Bs[kk * ldb + c] = B[k0 + kk, col0 + c]
    const int row0 = blockIdx.y * BM, col0 = blockIdx.x * BN;
    const int tx = threadIdx.x, ty = threadIdx.y;

    for (int i = 0; i < GEMM_TM; i++)
        for (int j = 0; j < GEMM_TN; j++) acc[i][j] = 0.0f;

    for (int k0 = kBegin; k0 < kEnd; k0 += GEMM_BK)
    {
        gemm_load_tile(a, As, lda, BM, row0, M, k0, kEnd);
        gemm_load_tile(b, Bs, ldb, BN, col0, N, k0, kEnd);
        __syncthreads();

        for (int kk = 0; kk < GEMM_BK; kk++)
        {
            float av[GEMM_TM], bv[GEMM_TN];
            for (int i = 0; i < GEMM_TM; i++) av[i] = As[kk * lda + ty + i * by];
            for (int j = 0; j < GEMM_TN; j++) bv[j] = Bs[kk * ldb + tx + j * bx];
            for (int i = 0; i < GEMM_TM; i++)
                for (int j = 0; j < GEMM_TN; j++) acc[i][j] += av[i] * bv[j];
        }
        __syncthreads();
    }
}

// The whole product: every depth 0 <= k < K.
template <typename OperandA, typename OperandB>
__device__ __forceinline__ void gemm_tile(int M, int N, int K, const OperandA& a, const OperandB& b, float acc[GEMM_TM][GEMM_TN])
{
    gemm_tile_range(M, N, 0, K, a, b, acc);
}

// The C coordinates of this thread's accumulator acc[i][j].
__device__ __forceinline__ int gemm_tile_row(int i) { return blockIdx.y * (GEMM_TM * blockDim.y) + threadIdx.y + i * blockDim.y; }
__device__ __forceinline__ int gemm_tile_col(int j) { return blockIdx.x * (GEMM_TN * blockDim.x) + threadIdx.x + j * blockDim.x; }
