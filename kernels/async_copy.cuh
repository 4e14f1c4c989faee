// async_copy.cuh: asynchronous copies from global to shared memory (cp.async) for every target.
//
// cp.async moves 4, 8 or 16 bytes from global to shared memory without passing through
// registers, while the thread goes on; the copies a thread issued since its last commit form a
// group when it calls cp_async_commit(), and cp_async_wait<N>() waits until at most the newest N
// of its committed groups are still in flight. The wait covers only the calling thread's copies:
// to read what other threads copied, every thread waits and then the block passes a
// __syncthreads(). Both addresses must be aligned to the copy's size.
//
//     cp_async_16(&tile[next][i], &x[offset + i]);    // prefetch the next tile
//     cp_async_commit();
//     ... compute on tile[current] ...
//     cp_async_wait<0>();
//     __syncthreads();
//
// What runs where:
//   the GPU, sm_80 and newer   inline PTX: cp.async.ca.shared.global (4 and 8 bytes: cached in
//                              L1), cp.async.cg.shared.global (16 bytes: L2 only, which .cg
//                              allows for 16 bytes alone), cp.async.commit_group,
//                              cp.async.wait_group N.
//   the GPU, sm_70 and sm_75   no cp.async: a plain load and store, so the copy is done when the
//                              call returns; commit and wait do nothing.
//   the emulator               simt::cp_async* (kernels/simt/simt.cpp): the destination holds a
//                              quiet NaN (0x7fc0dead) until the thread waits for the group, so a
//                              missing wait or barrier shows as NaN in a test.
#pragma once

#if !defined(__CUDACC__) && !defined(SIMT_EMULATOR)
#error "compile kernels with NVRTC, or with g++ after including simt/simt.h"
#endif

#if defined(__CUDACC__) && __CUDA_ARCH__ >= 800
// cp.async names its destination in the shared state space (a 32-bit offset) and its source in
// the global state space.
__device__ __forceinline__ unsigned shared_address(void* p) { return static_cast<unsigned>(__cvta_generic_to_shared(p)); }
__device__ __forceinline__ size_t global_address(const void* p) { return __cvta_generic_to_global(p); }
#endif

__device__ __forceinline__ void cp_async_4(void* shared, const void* global)
{
#if defined(SIMT_EMULATOR)
    simt::cp_async(shared, global, 4);
#elif __CUDA_ARCH__ >= 800
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" ::"r"(shared_address(shared)), "l"(global_address(global)) : "memory");
#else
    *static_cast<unsigned*>(shared) = *static_cast<const unsigned*>(global);
#endif
}

__device__ __forceinline__ void cp_async_8(void* shared, const void* global)
{
#if defined(SIMT_EMULATOR)
    simt::cp_async(shared, global, 8);
#elif __CUDA_ARCH__ >= 800
    asm volatile("cp.async.ca.shared.global [%0], [%1], 8;" ::"r"(shared_address(shared)), "l"(global_address(global)) : "memory");
#else
    *static_cast<uint2*>(shared) = *static_cast<const uint2*>(global);
#endif
}

__device__ __forceinline__ void cp_async_16(void* shared, const void* global)
{
#if defined(SIMT_EMULATOR)
    simt::cp_async(shared, global, 16);
#elif __CUDA_ARCH__ >= 800
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(shared_address(shared)), "l"(global_address(global)) : "memory");
#else
    *static_cast<uint4*>(shared) = *static_cast<const uint4*>(global);
#endif
}

// The copies issued since the last commit become a group.
__device__ __forceinline__ void cp_async_commit()
{
#if defined(SIMT_EMULATOR)
    simt::cp_async_commit();
#elif __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;" ::: "memory");
#endif
}

// Waits until at most the newest N committed groups of this thread are in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait()
{
    static_assert(N >= 0, "cp.async.wait_group takes a count of groups");
#if defined(SIMT_EMULATOR)
    simt::cp_async_wait(N);
#elif __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
#endif
}
