// common.cuh: what every RawGan kernel file shares.
//
// - struct dims4: four dimensions, right-aligned (the host passes four ints), passed by value.
// - DYNAMIC_SHARED(T, name): the block's dynamic shared memory (the launch's sharedBytes) as a
//   T array. On the GPU it is CUDA's `extern __shared__ T name[]`; under RawGan's CPU emulator
//   (kernels/simt) it is a pointer to a per-block buffer.
// - Grid-stride loop helpers and a block-wide sum.
//
// The same text is compiled by NVRTC (which defines __CUDACC__) and by g++ after simt/simt.h.
#pragma once

#if !defined(__CUDACC__) && !defined(SIMT_EMULATOR)
#error "compile kernels with NVRTC, or with g++ after including simt/simt.h"
#endif

struct dims4
{
    int d0, d1, d2, d3;
};

#if defined(__CUDACC__)
#define DYNAMIC_SHARED(T, name) extern __shared__ T name[]
#else
#define DYNAMIC_SHARED(T, name) SIMT_DYNAMIC_SHARED(T, name)
#endif

// The largest block a launch may use: every reduction's shared scratch is this long.
#define MAX_BLOCK 1024

// Grid-stride loops (one-dimensional grids and blocks): thread t of the grid handles items
// t, t + stride, t + 2 stride, ... so any grid size covers any n, and the host can size the
// grid to the device rather than to the data. 64-bit, because n may exceed 2^31.
__device__ __forceinline__ long long grid_start() { return (long long)blockIdx.x * blockDim.x + threadIdx.x; }
__device__ __forceinline__ long long grid_stride() { return (long long)gridDim.x * blockDim.x; }

// Sum of one value per thread over a one-dimensional block, left in every thread.
//
// A tree in shared memory: at each step the lower half of the active range adds the upper half,
// with a barrier between steps, so no step reads a value before it is written. The first step
// folds a block of any size (not only a power of two) onto a power of two. No step relies on
// threads of a warp moving in lock-step. `scratch` holds blockDim.x values; every thread of the
// block must call this (it contains barriers), and it ends with a barrier so the caller may reuse
// `scratch` at once.
template <typename T>
__device__ T block_sum(T value, T* scratch)
{
    const unsigned tid = threadIdx.x, n = blockDim.x;
    scratch[tid] = value;
    __syncthreads();
    unsigned half = 1;
    while (half * 2 < n) half *= 2;      // the largest power of two below n (1 when n <= 2)
    for (unsigned s = half; s > 0; s >>= 1)
    {
        if (tid < s && tid + s < n) scratch[tid] += scratch[tid + s];
        __syncthreads();
    }
    T total = scratch[0];
    __syncthreads();
    return total;
}
