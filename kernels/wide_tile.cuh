// wide_tile.cuh: version 3 of the tiled matrix product: fp32 on the ordinary cores (SIMT), with
// larger tiles than version 1 (gemm_tile.cuh) and its global loads overlapped with the
// arithmetic. Shared by sgemm_wide (gemm_wide.cu) and the three convolutions of conv_wide.cu.
// This is the fp32 path for GPUs without TF32 tensor cores (sm_70, sm_75) and for
// --precision fp32 on newer ones; version 2 (mma_tile.cuh) is the tensor-core one.
//
// The product. C[M, N] = A[M, K] B[K, N], the operands read through the operand objects of
// operands.cuh (a plain matrix, or a convolution's gathered windows: an implicit GEMM), exactly
// the sums of version 1: every output adds its K products one by one in the order of k, in fp32.
//
// Why version 1 is slow, and what changes here:
//   - 4 x 4 outputs per thread: each multiply-add needs half a shared-memory read (8 reads for
//     16 multiply-adds per step of k), and shared-memory bandwidth, not arithmetic, bounds it.
//     Here a thread owns 8 x 8 outputs and reads its 8 + 8 operands as four 16-byte loads:
//     4 shared-memory instructions per 64 multiply-adds.
//   - load, wait, compute, wait: while a block copies its next tiles from global memory its
//     threads do no arithmetic, and with one or two blocks per multiprocessor nothing else
//     hides that latency. Here each thread first issues its global loads of the next stage into
//     registers, then multiplies the current stage from shared memory while they are in flight,
//     and only then stores them to the second shared buffer ("register double buffering").
//   - divisions in the loaders: version 1's convolution operands divide by the plane, the width,
//     k * k and k with `/` for every element; here they are multiply-highs (fast_divmod).
//
// The tiling, from the block down to a thread:
//   block   WIDE_THREADS = 256 threads, one-dimensional (tid = threadIdx.x), always: the block
//           computes the 128 x 128 tile of C at rows blockIdx.y * 128 and columns
//           blockIdx.x * 128, so the grid is (ceil(N / 128), ceil(M / 128)) (and gridDim.z for
//           a split reduction, see conv2d_backward_weight_wide).
//   thread  (tx, ty) = (tid % 16, tid / 16) owns rows 4 ty + {0..3} and 64 + 4 ty + {0..3},
//           columns 4 tx + {0..3} and 64 + 4 tx + {0..3} of the tile: 64 accumulators
//           (wide_row, wide_col). Two groups of four rather than eight in a row: a group is one
//           aligned 16-byte shared load, and the 16 threads of a half-warp that differ in tx
//           read 16 consecutive groups (every bank once, no conflict), while the two values of ty
//           in a warp read one group each (a broadcast).
//   depth   K is walked in stages of WIDE_BK = 8.
//
// Shared memory. Two buffers, each a stage of A and of B, every operand's slice stored depth by
// depth: s[kk * WIDE_PITCH + l] = element (l, kk), l < 128 the row (of A) or column (of B) in
// the tile. WIDE_PITCH = 132 (128 + 4): a thread's 16-byte group stays aligned (132 * 4 bytes is
// a multiple of 16), and the stores of a k-fastest operand (below), where the 32 threads of a
// warp write depths kk = 0..7 of four consecutive l, land in 32 different banks
// ((4 kk + l) % 32) rather than 8 threads on each of 4. 2 x 2 x 8 x 132 floats = 16.5 KiB
// (wide_tile_shared_bytes), so shared memory never limits the blocks per multiprocessor before
// registers do.
//
// Loading a stage. Each thread loads WIDE_LOADS = 4 elements of each operand (128 x 8 / 256),
// in the operand's memory order so that a warp's loads are adjacent:
//   k-fastest operands: kk = tid % 8 and l = tid / 8 + 32 e (e < 4); fixed(k) once per stage;
//   the others:         l = tid % 128 and kk = tid / 128 + 2 e; the thread's l never changes,
//                       so fixed(l) (for a convolution: the pixel's sample, row and column) is
//                       found once for the whole product.
// Elements outside M, N or K, and a convolution's padding (a null address), load as 0.
//
// The pipeline, with one barrier per stage:
//   fetch stage 0 into registers, store it to buffer 0, barrier
//   for t = 0, 1, ..., stages - 1:
//       fetch stage t + 1 into registers (if any): the loads are in flight during ...
//       ... the 8 x 64 multiply-adds of stage t, from buffer t % 2
//       store the registers to buffer (t + 1) % 2
//       barrier: stage t + 1 is complete for every thread, and every thread has finished
//           reading buffer t % 2, which the next iteration's stores overwrite
//
// Registers and occupancy. 64 accumulators, 16 operands, 8 values in flight and the loaders'
// state: ptxas is asked for two blocks per multiprocessor (__launch_bounds__(256, 2): at most
// 128 registers a thread; it takes 121 to 128, no spills), 512 threads of the 1,024 to 2,048 a
// multiprocessor holds. The usual trade of a SIMT matrix product: fewer threads, each with more
// independent multiply-adds in flight, instead of many threads that wait on shared memory.
//
// When version 3 is used. A 128 x 128 tile wastes most of its work on a thin product (toRGB's 3
// rows) and leaves a large GPU idle when the product has few tiles (a 4x4 layer: 512 x 256 is 8
// tiles for 132 multiprocessors); CudaBackend takes version 1's 64 x 64 tiles there (see
// CudaBackend.TilingFor).
#pragma once
#include "common.cuh"
#include "operands.cuh"

#define WIDE_THREADS 256   // threads per block, one-dimensional: 16 x 16 threads of 8 x 8 outputs
#define WIDE_MIN_BLOCKS 2  // blocks per multiprocessor asked of ptxas: at most 128 registers
#define WIDE_TILE 128      // the block's tile of C is WIDE_TILE x WIDE_TILE
#define WIDE_T 8           // outputs per thread along each side
#define WIDE_BK 8          // depth of one stage
#define WIDE_PITCH 132     // floats per depth row of a shared slice: WIDE_TILE + 4
#define WIDE_LOADS 4       // elements of each operand a thread loads per stage: WIDE_TILE * WIDE_BK / WIDE_THREADS

// Dynamic shared memory of a block, in bytes; the host computes the same number.
__host__ __device__ __forceinline__ unsigned wide_tile_shared_bytes()
{
    return (unsigned)sizeof(float) * 2 * 2 * WIDE_BK * WIDE_PITCH;   // 2 buffers x 2 operands
}

// The C coordinates of this thread's accumulator acc[i][j] (i, j < 8).
__device__ __forceinline__ int wide_row(int i)
{
    return (int)blockIdx.y * WIDE_TILE + 64 * (i >> 2) + 4 * (int)(threadIdx.x / 16) + (i & 3);
}
__device__ __forceinline__ int wide_col(int j)
{
    return (int)blockIdx.x * WIDE_TILE + 64 * (j >> 2) + 4 * (int)(threadIdx.x % 16) + (j & 3);
}

// Stores the four consecutive outputs v0..v3 of one group of this thread's columns at p[0..3],
// of which the first `valid` lie inside the output: one 128-bit store (st.global.v4.f32) when all
// four do and p is 16-byte aligned, which is the common case (an even map's rows, a matrix whose
// width is a multiple of 4), else one store per valid value. A warp's 16 column groups then
// write 16 x 16 contiguous bytes per row with a quarter of the store instructions.
__device__ __forceinline__ void wide_store4(float* p, int valid, float v0, float v1, float v2, float v3)
{
    if (valid >= 4 && ((unsigned long long)p & 15) == 0)
    {
#if defined(SIMT_EMULATOR)
        float4 q;
        q.x = v0; q.y = v1; q.z = v2; q.w = v3;
        *reinterpret_cast<float4*>(p) = q;
#else
        // Written out: left to itself the compiler splits this store into four where it cannot
        // see the alignment that the test above establishes.
        asm volatile("st.global.v4.f32 [%0], {%1, %2, %3, %4};" ::"l"(__cvta_generic_to_global(p)), "f"(v0), "f"(v1), "f"(v2), "f"(v3) : "memory");
#endif
        return;
    }
    if (valid > 0) p[0] = v0;
    if (valid > 1) p[1] = v1;
    if (valid > 2) p[2] = v2;
    if (valid > 3) p[3] = v3;
}

// One operand's loads: fetch() reads a stage from global memory into r, store() writes r to a
// shared slice. l0 is the tile's first row (of A) or column (of B), limit M or N.
template <typename Operand>
struct wide_loader
{
    Operand op;
    int l0, limit;
    typename Operand::fixed_t f;   // not k-fastest: fixed(l0 + tid % 128), for the whole product
    bool inside;                   // not k-fastest: l0 + tid % 128 < limit
    float r[WIDE_LOADS];

    __device__ __forceinline__ wide_loader(const Operand& o, int first, int end) : op(o), l0(first), limit(end), f(), inside(false)
    {
        if (!Operand::k_fastest)
        {
            const int l = (int)threadIdx.x % WIDE_TILE;
            inside = l0 + l < limit;
            if (inside) f = op.fixed(l0 + l);
        }
    }

    // r[e] = element (l, k) of this thread's e-th place in the stage at depth k0 (0 past kEnd).
    __device__ __forceinline__ void fetch(int k0, int kEnd)
    {
        const int tid = (int)threadIdx.x;
        if (Operand::k_fastest)
        {
            const int k = k0 + tid % WIDE_BK;
            const bool kInside = k < kEnd;
            typename Operand::fixed_t fk = typename Operand::fixed_t();
            if (kInside) fk = op.fixed(k);
            for (int e = 0; e < WIDE_LOADS; e++)
            {
                const int l = l0 + tid / WIDE_BK + (WIDE_THREADS / WIDE_BK) * e;
                const float* src = kInside && l < limit ? op.address(fk, l) : nullptr;
                r[e] = src ? *src : 0.0f;
            }
        }
        else
        {
            for (int e = 0; e < WIDE_LOADS; e++)
            {
                const int k = k0 + tid / WIDE_TILE + (WIDE_THREADS / WIDE_TILE) * e;
                const float* src = inside && k < kEnd ? op.address(f, k) : nullptr;
                r[e] = src ? *src : 0.0f;
            }
        }
    }

    __device__ __forceinline__ void store(float* s) const
    {
        const int tid = (int)threadIdx.x;
        for (int e = 0; e < WIDE_LOADS; e++)
        {
            if (Operand::k_fastest) s[(tid % WIDE_BK) * WIDE_PITCH + tid / WIDE_BK + (WIDE_THREADS / WIDE_BK) * e] = r[e];
            else s[(tid / WIDE_TILE + (WIDE_THREADS / WIDE_TILE) * e) * WIDE_PITCH + tid % WIDE_TILE] = r[e];
        }
    }
};

// The 16-byte group of a slice's depth row kk at offset l (a multiple of 4).
__device__ __forceinline__ float4 wide_group(const float* s, int kk, int l)
{
    return *reinterpret_cast<const float4*>(s + kk * WIDE_PITCH + l);
}

// One stage: acc += this thread's 8 rows of the A slice times its 8 columns of the B slice.
__device__ __forceinline__ void wide_stage(const float* As, const float* Bs, float acc[WIDE_T][WIDE_T])
{
    const int tx = (int)threadIdx.x % 16, ty = (int)threadIdx.x / 16;
    for (int kk = 0; kk < WIDE_BK; kk++)
    {
        const float4 a0 = wide_group(As, kk, 4 * ty), a1 = wide_group(As, kk, 64 + 4 * ty);
        const float4 b0 = wide_group(Bs, kk, 4 * tx), b1 = wide_group(Bs, kk, 64 + 4 * tx);
        const float a[WIDE_T] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
        const float b[WIDE_T] = {b0.x, b0.y, b0.z, b0.w, b1.x, b1.y, b1.z, b1.w};
        for (int i = 0; i < WIDE_T; i++)
            for (int j = 0; j < WIDE_T; j++) acc[i][j] += a[i] * b[j];
    }
}

// Accumulates this thread's 8 x 8 outputs of the block's tile of A B over the depths kBegin <= k
// < kEnd (a slice of K when several blocks share one tile: see conv2d_backward_weight_wide).
// Every thread of the block must call it (it has barriers).
template <typename OperandA, typename OperandB>
__device__ __forceinline__ void wide_tile_range(int M, int N, int kBegin, int kEnd, const OperandA& a, const OperandB& b, float acc[WIDE_T][WIDE_T])
{
    DYNAMIC_SHARED(float, tiles);
    const int slice = WIDE_BK * WIDE_PITCH;   // one operand's slice of one stage; a buffer is two
    wide_loader<OperandA> loadA(a, (int)blockIdx.y * WIDE_TILE, M);
    wide_loader<OperandB> loadB(b, (int)blockIdx.x * WIDE_TILE, N);

    for (int i = 0; i < WIDE_T; i++)
        for (int j = 0; j < WIDE_T; j++) acc[i][j] = 0.0f;

    const int stages = kEnd > kBegin ? (kEnd - kBegin + WIDE_BK - 1) / WIDE_BK : 0;
    if (stages == 0) return;   // the same for every thread of the block: no barrier is skipped by some
    loadA.fetch(kBegin, kEnd);
    loadB.fetch(kBegin, kEnd);
    loadA.store(tiles);
    loadB.store(tiles + slice);
    __syncthreads();
    for (int t = 0; t < stages; t++)
    {
        const float* current = tiles + (t & 1) * 2 * slice;
        const bool more = t + 1 < stages;
        if (more)
        {
            loadA.fetch(kBegin + (t + 1) * WIDE_BK, kEnd);
            loadB.fetch(kBegin + (t + 1) * WIDE_BK, kEnd);
        }
        wide_stage(current, current + slice, acc);
        if (more)
        {
            float* next = tiles + ((t + 1) & 1) * 2 * slice;
            loadA.store(next);
            loadB.store(next + slice);
        }
        __syncthreads();
    }
}
