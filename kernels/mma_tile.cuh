// mma_tile.cuh: version 2 of the tiled matrix product, on tensor cores. Shared by sgemm_tf32
// (gemm_tf32.cu) and the three tf32 convolutions (conv_tf32.cu); version 1 is gemm_tile.cuh.
//
// The product. C[M, N] = A[M, K] B[K, N], the operands read through operand objects with the
// same index mapping as gemm_tile.cuh's (so an implicit GEMM never builds its im2col matrix),
// with one difference: an operand here returns the *address* of an element, or null where the
// element is 0 (a convolution's padding), because the element is copied to shared memory by
// cp.async, without passing through registers.
//
// Precision (TF32). Each element of A and B is rounded to tf32 (10 explicit mantissa bits, round
// to nearest with ties away from zero: cvt.rna.tf32.f32, f32_to_tf32 in mma.cuh) as it is read
// from shared memory into a fragment. mma.sync.m16n8k8 multiplies the rounded values exactly and
// accumulates in fp32. So each product carries a relative error of at most about 2 * 2^-11 (both
// factors rounded), and the sum the usual fp32 rounding: a result is within
// (2^-10 + (K + 2) 2^-23) sum_k |a_k b_k| of the exact one (the tests' bound), and for inputs of
// mixed signs typically far closer. That is what PyTorch's default for convolutions on Ampere and
// newer (torch.backends.cudnn.allow_tf32) accepts.
//
// The tiling, from the block down to a thread:
//   block   (32, WM, WN) threads, WM x WN warps with WM, WN in {1, 2, 4}, chosen by the host from
//           the size of C: the block computes the BM x BN = (32 WM) x (32 WN) tile of C at rows
//           blockIdx.y * BM and columns blockIdx.x * BN, so the grid is (ceil(N / BN),
//           ceil(M / BM)). Every large product runs 4 x 4 warps: 512 threads, 128 x 128 tiles.
//   warp    (wm, wn) = (threadIdx.y, threadIdx.z) owns the 32 x 32 sub-tile at rows 32 wm and
//           columns 32 wn of the block's tile: MMA_MI x MMA_NI = 2 x 4 fragments of 16 x 8, so
//           each thread holds 2 x 4 x 4 = 32 fp32 accumulators.
//   lane    threadIdx.x = 4 g + t holds, of each fragment, C[g][2t], C[g][2t+1], C[g+8][2t],
//           C[g+8][2t+1] (the PTX ISA's layout, see mma.cuh; mma_row and mma_col below).
//   depth   K is walked in stages of MMA_BK = 8, one m16n8k8 per fragment per stage.
// Why 32 x 32 per warp and not 64 x 64 as CUTLASS does: 32 accumulators fit 64 registers per
// thread, so two blocks of 512 threads (1024 threads, half of an A100's or H100's 2048) can be
// resident on one multiprocessor; 64 x 64 would need 128 accumulators and allow a quarter. The
// price is more shared-memory reads per multiply (16 per 8 mma instead of 32 per 32).
//
// The pipeline. MMA_STAGES = 3 buffers of shared memory, each holding a BM x 8 slice of A and an
// 8 x BN slice of B. While the warps multiply stage t, the copies of stages t+1 and t+2 are in
// flight:
//
//   prologue: issue the copies of stages 0 and 1, one commit group each
//   for t = 0, 1, ..., stages - 1:
//       cp_async_wait<1>: at most the newest group is in flight, so this thread's copies of
//           stage t have landed; __syncthreads: so have every thread's, and every warp has
//           finished multiplying stage t-1, whose buffer is the one refilled next
//       issue the copies of stage t+2 into buffer (t+2) % 3 and commit (an empty group past the
//           end, so that there is always one group per iteration and the wait count holds)
//       multiply buffer t % 3
//
// One barrier per stage does both jobs. Where an element is 0 (outside M, N or K, or in a
// convolution's padding) the thread stores 0 with a plain store instead of copying: the barrier
// publishes it like the copies.
//
// Shared memory. One operand's slice holds element (l, kk), l < L the row (of A) or column (of
// B) in the tile and kk < 8 the depth, in the layout that keeps the copies contiguous:
//   k-fastest operands (consecutive k adjacent in memory):  s[l * 12 + kk]       rows of 8 + 4 floats
//   the others (consecutive rows or columns adjacent):       s[kk * (L + 8) + l]  rows of L + 8 floats
// The padding makes a fragment's 32 reads hit 32 different banks: lane (g, t) reads element
// (g, t) of a 8 x 4 block, at bank (12 g + t) % 32 in the first layout (0-3, 12-15, 24-27, 4-7,
// ...) and (8 t + g) % 32 in the second (L + 8 = 8 mod 32), both a permutation of 0..31. A row
// stays 16-byte aligned (48 bytes; 4 (L + 8) bytes with L a multiple of 32), as 16-byte copies
// need. The first layout is the larger, L * 12 floats (L >= 32), so every slice is given that
// much: MMA_STAGES * 12 * (BM + BN) floats of dynamic shared memory in all,
// mma_tile_shared_bytes(WM, WN): 36 KiB for 4 x 4 warps, under the 48 KiB a block has without
// opting in, and small enough for two blocks on every multiprocessor (100 KiB on sm_86/89).
//
// Loading a slice. Each thread copies L * 8 / threads elements of each operand per stage:
//   a plain row-major matrix (matrix_operand: sgemm, the forward convolution's weights):
//       chunks of 4 elements adjacent in memory, one 16-byte cp.async each where the chunk is
//       inside the matrix and 16-byte aligned, else element by element;
//   any other operand (the gathered convolution operands): one 4-byte cp.async per element,
//       with the fixed/address split of gemm_tile.cuh: consecutive threads take consecutive
//       addresses (kk = tid % 8 when k is fastest, l = tid % L otherwise), so each thread keeps
//       one index and walks the other. When k is not the fastest, the thread's l never changes,
//       and its fixed part (for a convolution: a pixel's sample, row and column) is found once
//       for the whole product instead of once per stage.
//
// Fragments. Lane (g, t) reads, for each m16 fragment at row r0 of the warp's sub-tile,
// A(r0 + g, t), A(r0 + g + 8, t), A(r0 + g, t + 4), A(r0 + g + 8, t + 4), and for each n8
// fragment at column c0, B(t, c0 + g) and B(t + 4, c0 + g), rounding each with f32_to_tf32.
//
// On sm_70 and sm_75 (no tf32 tensor cores, no cp.async) this compiles to mma.cuh's shuffle
// fallback and plain copies: correct but slow. The host launches these kernels only on sm_80 and
// newer (CudaBackend.Precision).
#pragma once
#include "common.cuh"
#include "mma.cuh"
#include "async_copy.cuh"
#include "operands.cuh"

#define MMA_MI 2          // m16 fragments along M in a warp's 32 x 32 sub-tile
#define MMA_NI 4          // n8 fragments along N
#define MMA_BK 8          // depth of one stage
#define MMA_STAGES 3      // shared-memory buffers in the cp.async pipeline
#define MMA_K_PITCH 12    // floats per row of a k-fastest slice: MMA_BK + 4 of padding
#define MMA_L_PAD 8       // floats of padding per row of the other layout

// The largest block (4 x 4 warps) and the blocks per multiprocessor asked of ptxas: 2 x 512
// threads leave 65536 / 1024 = 64 registers per thread, which ptxas then stays within. On sm_70
// and sm_75, where the host never launches these kernels, mma.cuh's shuffle fallback needs more
// than 64 (ptxas would spill), so one block is asked for there.
#define MMA_MAX_THREADS 512
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
#define MMA_MIN_BLOCKS 1
#else
#define MMA_MIN_BLOCKS 2
#endif

// Dynamic shared memory for a block of wm x wn warps, in bytes; the host computes the same number.
__host__ __device__ __forceinline__ unsigned mma_tile_shared_bytes(unsigned wm, unsigned wn)
{
    return (unsigned)sizeof(float) * MMA_STAGES * MMA_K_PITCH * 32u * (wm + wn);
}

// The calling thread's linear index in its block, and the block's size.
__device__ __forceinline__ int mma_tid() { return (int)(threadIdx.x + 32u * (threadIdx.y + blockDim.y * threadIdx.z)); }
__device__ __forceinline__ int mma_threads() { return (int)(32u * blockDim.y * blockDim.z); }

// The C coordinates of accumulator acc[mi][ni][2 half + e] (half, e in {0, 1}).
__device__ __forceinline__ int mma_row(int mi, int half)
{
    return (int)(blockIdx.y * 32u * blockDim.y + 32u * threadIdx.y) + 16 * mi + 8 * half + (int)(threadIdx.x >> 2);
}
__device__ __forceinline__ int mma_col(int ni, int e)
{
    return (int)(blockIdx.x * 32u * blockDim.z + 32u * threadIdx.z) + 8 * ni + 2 * (int)(threadIdx.x & 3u) + e;
}

// One operand's slice of one stage: element (l, kk) at s[l * ls + kk * ks].
struct mma_slice
{
    float* s;
    int ls, ks;
    __device__ __forceinline__ float* at(int l, int kk) const { return s + l * ls + kk * ks; }
};

__device__ __forceinline__ mma_slice mma_make_slice(float* s, int L, bool k_fastest)
{
    mma_slice r = {s, k_fastest ? MMA_K_PITCH : 1, k_fastest ? 1 : L + MMA_L_PAD};
    return r;
}

// Copies one stage of an operand into its slice: (l, kk) = the operand at (l0 + l, k0 + kk) for
// l < L, kk < MMA_BK, and 0 where l0 + l >= limit (M or N), k0 + kk >= kEnd, or the operand says
// so. The generic loader takes the operands of operands.cuh, with their fixed/address split; a
// matrix_operand has its own loader below, which copies 16 bytes at a time.
template <typename Operand>
struct mma_loader
{
    Operand op;
    int L, l0, limit;
    typename Operand::fixed_t f;   // not k-fastest: fixed(l0 + tid % L), the same for every stage
    bool inside;                   // not k-fastest: l0 + tid % L < limit

    __device__ __forceinline__ mma_loader(const Operand& o, int tileLength, int first, int end)
        : op(o), L(tileLength), l0(first), limit(end), f(), inside(false)
    {
        if (!Operand::k_fastest)
        {
            const int l = mma_tid() % L;
            inside = l0 + l < limit;
            if (inside) f = op.fixed(l0 + l);
        }
    }

    __device__ __forceinline__ void load(const mma_slice& slice, int k0, int kEnd) const
    {
        const int tid = mma_tid(), threads = mma_threads();
        if (Operand::k_fastest)
        {
            // This thread keeps one depth kk and walks the rows (or columns) of the tile.
            const int kk = tid % MMA_BK, k = k0 + kk;
            const bool kInside = k < kEnd;
            typename Operand::fixed_t fk = typename Operand::fixed_t();
            if (kInside) fk = op.fixed(k);
            for (int l = tid / MMA_BK; l < L; l += threads / MMA_BK)
            {
                float* dst = slice.at(l, kk);
                const float* src = kInside && l0 + l < limit ? op.address(fk, l0 + l) : nullptr;
                if (src) cp_async_4(dst, src);
                else *dst = 0.0f;
            }
        }
        else
        {
            // This thread keeps one row (or column) l and walks the depths of the slice.
            const int l = tid % L;
            for (int kk = tid / L; kk < MMA_BK; kk += threads / L)
            {
                float* dst = slice.at(l, kk);
                const float* src = inside && k0 + kk < kEnd ? op.address(f, k0 + kk) : nullptr;
                if (src) cp_async_4(dst, src);
                else *dst = 0.0f;
            }
        }
    }
};

// A row-major matrix: chunks of 4 elements along i (adjacent in memory and in the slice).
template <bool KF>
struct mma_loader<matrix_operand<KF>>
{
    matrix_operand<KF> op;
    int L, l0, limit;

    __device__ __forceinline__ mma_loader(const matrix_operand<KF>& o, int tileLength, int first, int end) : op(o), L(tileLength), l0(first), limit(end) {}

    // dst[e] = p[i + e + j * stride] for e < 4, 0 outside i < iEnd, j < jEnd.
    __device__ __forceinline__ void copy4(float* dst, int i, int iEnd, int j, int jEnd) const
    {
        if (j >= jEnd)
        {
            for (int e = 0; e < 4; e++) dst[e] = 0.0f;
            return;
        }
        const float* src = op.p + i + j * op.stride;
        if (i + 3 < iEnd && (reinterpret_cast<size_t>(src) & 15u) == 0)
        {
            cp_async_16(dst, src);
            return;
        }
        for (int e = 0; e < 4; e++)
        {
            if (i + e < iEnd) cp_async_4(dst + e, src + e);
            else dst[e] = 0.0f;
        }
    }

    __device__ __forceinline__ void load(const mma_slice& slice, int k0, int kEnd) const
    {
        const int tid = mma_tid(), threads = mma_threads();
        if (KF)
        {
            // Chunk c covers depths 4 (c % 2) ... + 3 of row l = c / 2.
            for (int c = tid; c < L * (MMA_BK / 4); c += threads)
            {
                const int l = c / (MMA_BK / 4), kk = 4 * (c % (MMA_BK / 4));
                copy4(slice.at(l, kk), k0 + kk, kEnd, l0 + l, limit);
            }
        }
        else
        {
            // Chunk c covers rows (or columns) 4 (c % (L / 4)) ... + 3 at depth kk = c / (L / 4).
            const int quads = L / 4;
            for (int c = tid; c < quads * MMA_BK; c += threads)
            {
                const int l = 4 * (c % quads), kk = c / quads;
                copy4(slice.at(l, kk), l0 + l, limit, k0 + kk, kEnd);
            }
        }
    }
};

// One stage: this warp's 2 x 4 fragments of C += its 32 x 8 slice of A times the 8 x 32 of B.
__device__ __forceinline__ void mma_stage(const mma_slice& A, const mma_slice& B, float acc[MMA_MI][MMA_NI][4])
{
    const int g = (int)(threadIdx.x >> 2), t = (int)(threadIdx.x & 3u);
    const int r0 = 32 * (int)threadIdx.y + g, c0 = 32 * (int)threadIdx.z + g;
    unsigned a[MMA_MI][4];
    for (int mi = 0; mi < MMA_MI; mi++)
    {
        const int r = r0 + 16 * mi;
        a[mi][0] = f32_to_tf32(*A.at(r, t));
        a[mi][1] = f32_to_tf32(*A.at(r + 8, t));
        a[mi][2] = f32_to_tf32(*A.at(r, t + 4));
        a[mi][3] = f32_to_tf32(*A.at(r + 8, t + 4));
    }
    for (int ni = 0; ni < MMA_NI; ni++)
    {
        const int c = c0 + 8 * ni;
        const unsigned b[2] = {f32_to_tf32(*B.at(c, t)), f32_to_tf32(*B.at(c, t + 4))};
        for (int mi = 0; mi < MMA_MI; mi++) mma_m16n8k8_tf32(acc[mi][ni], a[mi], b, acc[mi][ni]);
    }
}

// Accumulates this thread's fragments of the block's tile of A B over the depths kBegin <= k <
// kEnd (a slice of K when several blocks share one tile: see conv2d_backward_weight_tf32). Every
// thread of the block must call it (it has barriers and warp-wide mma).
template <typename OperandA, typename OperandB>
__device__ __forceinline__ void mma_tile_range(int M, int N, int kBegin, int kEnd, const OperandA& a, const OperandB& b, float acc[MMA_MI][MMA_NI][4])
{
    DYNAMIC_SHARED(float, tiles);
    const int BM = 32 * (int)blockDim.y, BN = 32 * (int)blockDim.z;
    const int sliceA = MMA_K_PITCH * BM, stageFloats = MMA_K_PITCH * (BM + BN);
    const mma_loader<OperandA> loadA(a, BM, (int)blockIdx.y * BM, M);
    const mma_loader<OperandB> loadB(b, BN, (int)blockIdx.x * BN, N);

    for (int mi = 0; mi < MMA_MI; mi++)
        for (int ni = 0; ni < MMA_NI; ni++)
            for (int e = 0; e < 4; e++) acc[mi][ni][e] = 0.0f;

    const int stages = kEnd > kBegin ? (kEnd - kBegin + MMA_BK - 1) / MMA_BK : 0;
    for (int s = 0; s < MMA_STAGES - 1; s++)
    {
        if (s < stages)
        {
            float* buffer = tiles + s * stageFloats;
            loadA.load(mma_make_slice(buffer, BM, OperandA::k_fastest), kBegin + s * MMA_BK, kEnd);
            loadB.load(mma_make_slice(buffer + sliceA, BN, OperandB::k_fastest), kBegin + s * MMA_BK, kEnd);
        }
        cp_async_commit();
    }
    for (int t = 0; t < stages; t++)
    {
        cp_async_wait<MMA_STAGES - 2>();
        __syncthreads();
        const int next = t + MMA_STAGES - 1;
        if (next < stages)
        {
            float* buffer = tiles + (next % MMA_STAGES) * stageFloats;
            loadA.load(mma_make_slice(buffer, BM, OperandA::k_fastest), kBegin + next * MMA_BK, kEnd);
            loadB.load(mma_make_slice(buffer + sliceA, BN, OperandB::k_fastest), kBegin + next * MMA_BK, kEnd);
        }
        cp_async_commit();
        float* buffer = tiles + (t % MMA_STAGES) * stageFloats;
        mma_stage(mma_make_slice(buffer, BM, OperandA::k_fastest), mma_make_slice(buffer + sliceA, BN, OperandB::k_fastest), acc);
    }
}
