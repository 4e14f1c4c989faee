// simt.h: CUDA's execution model on the CPU, for g++.
//
// RawGan's emulator compiles the very .cu files that NVRTC compiles for the GPU, with g++, after
// this header. Everything a kernel may use is defined here; anything else fails to compile,
// which is the point: a kernel that builds here uses only what both worlds share.
//
//   keywords    __global__, __device__, __host__ vanish; __forceinline__ is always_inline;
//               __shared__ becomes `static thread_local` (a block runs on one OS thread, so
//               every fiber of the block sees the same copy, and blocks on other OS threads
//               have their own); __restrict__ is already a GNU keyword.
//   builtins    threadIdx, blockIdx, blockDim, gridDim (per OS thread, rewritten by the runtime
//               before each fiber runs), warpSize, __syncthreads, atomics (real atomics: blocks
//               run on different OS threads), bit casts, and the math functions kernels call.
//   launching   SIMT_EXPORT(kernel) defines the C entry point
//                   int simt_launch_<kernel>(const simt_launch_config*, void** args)
//               which takes its arguments the way cuLaunchKernel does (one pointer per
//               parameter, each to storage of exactly that parameter's C type), copies them,
//               and runs the whole grid before it returns (0 = success).
//
// How a grid runs is in simt.cpp. Not emulated: warp shuffles and votes, __syncwarp,
// __constant__ memory set from the host, streams (every launch is synchronous), printf from
// many threads in order, and out-of-bounds checks (a bad address crashes the process instead of
// returning CUDA_ERROR_ILLEGAL_ADDRESS).
#pragma once

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <tuple>
#include <type_traits>
#include <utility>

// Only the launchers are exported from the shared library; kernels and runtime internals stay
// hidden, so a kernel named `fill` or `scale` cannot collide with a symbol of another library.
// (So a file that includes system headers must include them before this one.)
#pragma GCC visibility push(hidden)

#define SIMT_EMULATOR 1

// ------------------------------------------------------------------ keywords
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __shared__ static thread_local
#define __align__(n) __attribute__((aligned(n)))
#define __launch_bounds__(...)

// ------------------------------------------------------------------ built-in variables
struct uint3 { unsigned int x, y, z; };
struct dim3
{
    unsigned int x, y, z;
    constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1) : x(vx), y(vy), z(vz) {}
    constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
};

// Written by the runtime before a fiber (one CUDA thread) runs or resumes; read by kernels.
// All four live in one GNU __thread struct: plain data needs no initialisation check, and one
// thread variable costs a kernel one thread-local address lookup instead of four.
// blockDim and gridDim are uint3 here (dim3 on a GPU); a dim3 converts from one.
struct simt_builtin_variables
{
    uint3 threadIdx, blockIdx, blockDim, gridDim;
};
extern __thread simt_builtin_variables simt_builtins;
#define threadIdx (simt_builtins.threadIdx)
#define blockIdx (simt_builtins.blockIdx)
#define blockDim (simt_builtins.blockDim)
#define gridDim (simt_builtins.gridDim)
constexpr int warpSize = 32;

// ------------------------------------------------------------------ synchronisation
// A barrier: the calling fiber yields, and resumes only after every thread of its block has
// reached the barrier (simt_barrier in simt.cpp). The other threads of the block run in between
// and write shared memory, so the compiler must not keep shared values in registers across it:
// the call is opaque, and the empty asm statements with a "memory" clobber say so explicitly.
void simt_barrier();
inline void __syncthreads()
{
    __asm__ __volatile__("" ::: "memory");
    simt_barrier();
    __asm__ __volatile__("" ::: "memory");
}
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() { __atomic_signal_fence(__ATOMIC_SEQ_CST); }

// ------------------------------------------------------------------ atomics (relaxed, as CUDA's)
inline int atomicAdd(int* p, int v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
inline unsigned int atomicAdd(unsigned int* p, unsigned int v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
inline int atomicSub(int* p, int v) { return __atomic_fetch_sub(p, v, __ATOMIC_RELAXED); }
inline unsigned int atomicSub(unsigned int* p, unsigned int v) { return __atomic_fetch_sub(p, v, __ATOMIC_RELAXED); }
inline int atomicExch(int* p, int v) { return __atomic_exchange_n(p, v, __ATOMIC_RELAXED); }
inline unsigned int atomicExch(unsigned int* p, unsigned int v) { return __atomic_exchange_n(p, v, __ATOMIC_RELAXED); }
template <typename T>
inline T simt_atomic_cas(T* p, T compare, T value)
{
    __atomic_compare_exchange_n(p, &compare, value, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
    return compare;   // the old value, whether or not the exchange happened
}
inline int atomicCAS(int* p, int compare, int value) { return simt_atomic_cas(p, compare, value); }
inline unsigned int atomicCAS(unsigned int* p, unsigned int compare, unsigned int value) { return simt_atomic_cas(p, compare, value); }
inline unsigned long long atomicCAS(unsigned long long* p, unsigned long long compare, unsigned long long value) { return simt_atomic_cas(p, compare, value); }

// Max and min as compare-and-swap loops; each returns the old value.
template <typename T, bool Max>
inline T simt_atomic_extreme(T* p, T v)
{
    T old = __atomic_load_n(p, __ATOMIC_RELAXED);
    while ((Max ? v > old : v < old) &&
           !__atomic_compare_exchange_n(p, &old, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
    {
    }
    return old;
}
inline int atomicMax(int* p, int v) { return simt_atomic_extreme<int, true>(p, v); }
inline int atomicMin(int* p, int v) { return simt_atomic_extreme<int, false>(p, v); }
inline unsigned int atomicMax(unsigned int* p, unsigned int v) { return simt_atomic_extreme<unsigned int, true>(p, v); }
inline unsigned int atomicMin(unsigned int* p, unsigned int v) { return simt_atomic_extreme<unsigned int, false>(p, v); }

// Floating-point atomicAdd as the classic compare-and-swap loop on the bit pattern.
template <typename F, typename U>
inline F simt_atomic_add_float(F* p, F v)
{
    static_assert(sizeof(F) == sizeof(U), "bit pattern size");
    U* bits = reinterpret_cast<U*>(p);
    U old = __atomic_load_n(bits, __ATOMIC_RELAXED);
    for (;;)
    {
        F oldValue, newValue;
        memcpy(&oldValue, &old, sizeof(F));
        newValue = oldValue + v;
        U desired;
        memcpy(&desired, &newValue, sizeof(F));
        if (__atomic_compare_exchange_n(bits, &old, desired, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
            return oldValue;
    }
}
inline float atomicAdd(float* p, float v) { return simt_atomic_add_float<float, uint32_t>(p, v); }
inline double atomicAdd(double* p, double v) { return simt_atomic_add_float<double, uint64_t>(p, v); }

// ------------------------------------------------------------------ bit casts and math
inline unsigned int __float_as_uint(float f) { unsigned int u; memcpy(&u, &f, 4); return u; }
inline float __uint_as_float(unsigned int u) { float f; memcpy(&f, &u, 4); return f; }
inline int __float_as_int(float f) { int i; memcpy(&i, &f, 4); return i; }
inline float __int_as_float(int i) { float f; memcpy(&f, &i, 4); return f; }

// On the GPU rsqrtf is a hardware approximation (2 ulp); here it is the exact quotient.
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }

inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned int min(unsigned int a, unsigned int b) { return a < b ? a : b; }
inline unsigned int max(unsigned int a, unsigned int b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }

// ------------------------------------------------------------------ dynamic shared memory
// The launch's shared_bytes, one buffer per OS thread (so per running block), 64-byte aligned.
// kernels/common.cuh wraps it as DYNAMIC_SHARED(T, name).
unsigned char* simt_dynamic_shared();
#define SIMT_DYNAMIC_SHARED(T, name) T* name = reinterpret_cast<T*>(simt_dynamic_shared())

// ------------------------------------------------------------------ launching
extern "C" {
// The launch shape, exactly as the host passes it (the C# side mirrors this layout).
struct simt_launch_config
{
    unsigned grid[3];
    unsigned block[3];
    unsigned shared_bytes;
};

// Why the last launch on the calling OS thread failed ("" if it did not).
__attribute__((visibility("default"))) const char* simt_last_error(void);
}

namespace simt
{
// Runs one CUDA thread: the kernel applied to the launch's copied arguments.
using thread_body = void (*)(const void* bound);

// Validates the launch, runs every block of the grid, and returns 0, or nonzero with the reason
// in simt_last_error().
int launch(const char* kernel, thread_body body, const void* bound, const simt_launch_config* config);
int fail(const char* kernel, const char* message);

// A kernel together with a copy of its arguments (cuLaunchKernel also copies them at the call).
template <typename... P>
struct bound_kernel
{
    void (*kernel)(P...);
    std::tuple<std::decay_t<P>...> args;

    static void run(const void* self)
    {
        const auto* b = static_cast<const bound_kernel*>(self);
        std::apply(b->kernel, b->args);
    }
};

// Reads argument I from the pointer the host gave for it. memcpy, not a cast: the host's storage
// only promises the size of the C type, not its alignment.
template <typename T>
inline T read_argument(const void* p)
{
    static_assert(std::is_trivially_copyable<T>::value, "kernel arguments must be plain data");
    T value;
    memcpy(&value, p, sizeof(T));
    return value;
}

template <typename... P, size_t... I>
inline int launch_with(const char* name, void (*kernel)(P...), const simt_launch_config* config, void** args, std::index_sequence<I...>)
{
    if (sizeof...(P) > 0 && args == nullptr) return fail(name, "kernel arguments are missing (args is null)");
    for (size_t i = 0; i < sizeof...(P); i++)
        if (args[i] == nullptr) return fail(name, "a kernel argument pointer is null");
    bound_kernel<P...> bound{kernel, std::tuple<std::decay_t<P>...>(read_argument<std::decay_t<P>>(args[I])...)};
    return launch(name, &bound_kernel<P...>::run, &bound, config);
}

template <typename... P>
inline int launch_kernel(const char* name, void (*kernel)(P...), const simt_launch_config* config, void** args)
{
    return launch_with(name, kernel, config, args, std::index_sequence_for<P...>{});
}
} // namespace simt

// One exported launcher per kernel; the host looks it up by name ("simt_launch_" + kernel).
#define SIMT_EXPORT(name)                                                                              \
    extern "C" __attribute__((visibility("default"))) int simt_launch_##name(const simt_launch_config* config, void** args) \
    {                                                                                                  \
        return simt::launch_kernel(#name, &name, config, args);                                        \
    }
