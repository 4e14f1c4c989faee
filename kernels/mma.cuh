// mma.cuh: tensor-core matrix multiply-accumulate (mma.sync) for every target RawGan builds for.
//
// One warp computes D = A B + C on a small tile, every lane holding a few elements of each
// matrix in registers ("fragments"). Which lane holds which element is fixed by the PTX ISA,
// section 9.7.14.5.7 "Matrix Fragments for mma.m16n8k8" (.tf32) and 9.7.14.5.8 "Matrix Fragments
// for mma.m16n8k16 with floating point type" (.bf16). With g = lane / 4 (groupID) and
// t = lane % 4 (threadID_in_group), and A row-major, B column-major (.row.col):
//
//   m16n8k8, tf32 (A 16 x 8, B 8 x 8), each register one tf32 value (an fp32 bit pattern):
//     a[0] = A[g][t]    a[1] = A[g+8][t]    a[2] = A[g][t+4]    a[3] = A[g+8][t+4]
//     b[0] = B[t][g]    b[1] = B[t+4][g]
//   m16n8k16, bf16 (A 16 x 16, B 16 x 8), each register two bf16, the first in the low half:
//     a[0] = A[g][2t, 2t+1]      a[1] = A[g+8][2t, 2t+1]
//     a[2] = A[g][2t+8, 2t+9]    a[3] = A[g+8][2t+8, 2t+9]
//     b[0] = B[2t, 2t+1][g]      b[1] = B[2t+8, 2t+9][g]
//   both, C and D (16 x 8, fp32):
//     c[0] = C[g][2t]   c[1] = C[g][2t+1]   c[2] = C[g+8][2t]   c[3] = C[g+8][2t+1]
//
// Every lane of a full warp must call the same mma together (mma.sync.aligned): no lane may have
// exited, and not in divergent code. The emulator fails a launch that breaks this.
//
// What runs where:
//   the GPU, sm_80 and newer   inline PTX: mma.sync, cvt.rna.tf32.f32, cvt.rn.bf16x2.f32.
//   the GPU, sm_70 and sm_75   no tf32 or bf16 tensor cores. The same fragments in and out,
//                              computed by warp shuffles and FMAs (the *_by_shuffles functions
//                              below): correct, so a kernel runs everywhere, but some 30 times
//                              slower; a kernel that cares should take another path there.
//   the emulator               simt::mma_* (kernels/simt/simt.cpp): the warp's fragments
//                              gathered, multiplied in fp32 and scattered back, by the layout
//                              above; the *_by_shuffles functions compile there too, and its
//                              self-tests check that both give the same bits.
// Inputs are tf32 (or bf16) values; a register with more precision is rounded as by
// cvt.rna.tf32.f32 first, and products are summed in fp32 in the order k = 0, 1, ... (the GPU's
// accumulation order is unspecified, so its last bits may differ).
#pragma once

#if !defined(__CUDACC__) && !defined(SIMT_EMULATOR)
#error "compile kernels with NVRTC, or with g++ after including simt/simt.h"
#endif

// The calling thread's lane in its warp (warps are 32 consecutive linear thread ids).
__device__ __forceinline__ unsigned warp_lane()
{
#if defined(__CUDACC__)
    unsigned lane;
    asm("mov.u32 %0, %%laneid;" : "=r"(lane));
    return lane;
#else
    return ((threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x) % 32;
#endif
}

// ------------------------------------------------------------------ conversions

// Rounding by bit arithmetic, for targets without the cvt instructions: the same results.
// tf32: round to nearest, ties away from zero, to 10 mantissa bits (adding half a tf32 ulp to the
// magnitude carries into the exponent when it must); Inf stays, NaN stays NaN.
__device__ __forceinline__ unsigned tf32_bits_by_arithmetic(float x)
{
    unsigned u = __float_as_uint(x);
    if ((u & 0x7f800000u) == 0x7f800000u) return (u & 0x007fffffu) ? ((u | 0x00400000u) & 0xffffe000u) : u;
    return (u + 0x1000u) & 0xffffe000u;
}

// bf16: round to nearest, ties to even; NaN stays NaN.
__device__ __forceinline__ unsigned bf16_bits_by_arithmetic(float x)
{
    unsigned u = __float_as_uint(x);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (u >> 16) | 0x0040u;
    return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
}

// x as a tf32 operand: cvt.rna.tf32.f32 (an fp32 bit pattern with the low 13 bits zero).
__device__ __forceinline__ unsigned f32_to_tf32(float x)
{
#if defined(SIMT_EMULATOR)
    return simt::cvt_rna_tf32(x);
#elif __CUDA_ARCH__ >= 800
    unsigned r;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
    return r;
#else
    return tf32_bits_by_arithmetic(x);
#endif
}

// Two floats as one bf16x2 operand register, `lo` in the low half: cvt.rn.bf16x2.f32.
__device__ __forceinline__ unsigned f32x2_to_bf16x2(float lo, float hi)
{
#if defined(SIMT_EMULATOR)
    return simt::cvt_rn_bf16x2(hi, lo);
#elif __CUDA_ARCH__ >= 800
    unsigned r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));   // d = {a: high half, b: low half}
    return r;
#else
    return (bf16_bits_by_arithmetic(hi) << 16) | bf16_bits_by_arithmetic(lo);
#endif
}

// ------------------------------------------------------------------ the same products by shuffles

// D = A B + C (m16n8k8, tf32) with the fragments above, from warp shuffles and FMAs: lane (g, t)
// needs rows g and g+8 of A, which lanes 4g .. 4g+3 hold, and columns 2t and 2t+1 of B, which
// lanes 8t .. 8t+7 hold. A product of two tf32 values is exact in fp32, so each FMA rounds as
// an addition would (unless the product underflows).
__device__ __forceinline__ void mma_m16n8k8_tf32_by_shuffles(float d[4], const unsigned a[4], const unsigned b[2], const float c[4])
{
    const unsigned all = 0xffffffffu;
    const int lane = static_cast<int>(warp_lane()), g = lane >> 2, t = lane & 3;
    unsigned ra[4], rb[2];
    for (int i = 0; i < 4; i++) ra[i] = tf32_bits_by_arithmetic(__uint_as_float(a[i]));
    for (int i = 0; i < 2; i++) rb[i] = tf32_bits_by_arithmetic(__uint_as_float(b[i]));
    float acc[4] = {c[0], c[1], c[2], c[3]};
#pragma unroll
    for (int k = 0; k < 8; k++)
    {
        const int half = k >> 2, q = k & 3;   // k = 4 half + q
        // A[g][k], A[g+8][k] are a[2 half], a[2 half + 1] of lane 4g + q; B[k][n] is b[half] of lane 4n + q.
        const float top = __uint_as_float(__shfl_sync(all, ra[2 * half], 4 * g + q));
        const float bottom = __uint_as_float(__shfl_sync(all, ra[2 * half + 1], 4 * g + q));
        const float left = __uint_as_float(__shfl_sync(all, rb[half], 8 * t + q));
        const float right = __uint_as_float(__shfl_sync(all, rb[half], 8 * t + 4 + q));
        acc[0] = fmaf(top, left, acc[0]);
        acc[1] = fmaf(top, right, acc[1]);
        acc[2] = fmaf(bottom, left, acc[2]);
        acc[3] = fmaf(bottom, right, acc[3]);
    }
    for (int i = 0; i < 4; i++) d[i] = acc[i];
}

// D = A B + C (m16n8k16, bf16) the same way: one shuffle brings a pair k, k+1 of bf16 values.
__device__ __forceinline__ void mma_m16n8k16_bf16_by_shuffles(float d[4], const unsigned a[4], const unsigned b[2], const float c[4])
{
    const unsigned all = 0xffffffffu;
    const int lane = static_cast<int>(warp_lane()), g = lane >> 2, t = lane & 3;
    float acc[4] = {c[0], c[1], c[2], c[3]};
#pragma unroll
    for (int pair = 0; pair < 8; pair++)   // k = 2 pair and 2 pair + 1
    {
        const int half = pair >> 2, q = pair & 3;
        const unsigned top = __shfl_sync(all, a[2 * half], 4 * g + q);
        const unsigned bottom = __shfl_sync(all, a[2 * half + 1], 4 * g + q);
        const unsigned left = __shfl_sync(all, b[half], 8 * t + q);
        const unsigned right = __shfl_sync(all, b[half], 8 * t + 4 + q);
        for (int e = 0; e < 2; e++)   // the low half (k even), then the high half
        {
            const int shift = 16 * (1 - e);
            const float ta = __uint_as_float((top << shift) & 0xffff0000u), ba = __uint_as_float((bottom << shift) & 0xffff0000u);
            const float lb = __uint_as_float((left << shift) & 0xffff0000u), rb = __uint_as_float((right << shift) & 0xffff0000u);
            acc[0] = fmaf(ta, lb, acc[0]);
            acc[1] = fmaf(ta, rb, acc[1]);
            acc[2] = fmaf(ba, lb, acc[2]);
            acc[3] = fmaf(ba, rb, acc[3]);
        }
    }
    for (int i = 0; i < 4; i++) d[i] = acc[i];
}

// ------------------------------------------------------------------ the instructions

// mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32: d = a b + c; d may be c.
__device__ __forceinline__ void mma_m16n8k8_tf32(float d[4], const unsigned a[4], const unsigned b[2], const float c[4])
{
#if defined(SIMT_EMULATOR)
    simt::mma_m16n8k8_tf32(d, a, b, c);
#elif __CUDA_ARCH__ >= 800
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%10, %11, %12, %13};"
                 : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
#else
    mma_m16n8k8_tf32_by_shuffles(d, a, b, c);
#endif
}

// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32: d = a b + c; d may be c.
__device__ __forceinline__ void mma_m16n8k16_bf16(float d[4], const unsigned a[4], const unsigned b[2], const float c[4])
{
#if defined(SIMT_EMULATOR)
    simt::mma_m16n8k16_bf16(d, a, b, c);
#elif __CUDA_ARCH__ >= 800
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%10, %11, %12, %13};"
                 : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
#else
    mma_m16n8k16_bf16_by_shuffles(d, a, b, c);
#endif
}
