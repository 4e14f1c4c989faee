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
//               run on different OS threads), bit casts, the math functions kernels call, and
//               the float4 vector type.
//   warps       __shfl_sync, __shfl_up_sync, __shfl_down_sync, __shfl_xor_sync (with width),
//               __ballot_sync, __any_sync, __all_sync, __syncwarp: a rendezvous of the warp's
//               fibers (lanes are 32 consecutive linear thread ids). Stricter than a GPU: every
//               lane named in the mask must reach the same collective with the same mask, and a
//               mask may name only lanes that exist (a partial warp's mask is its lanes); a lane
//               that finishes or waits elsewhere fails the launch instead of hanging it or
//               reading an undefined value. A shuffle from a lane outside the mask (undefined
//               on a GPU) reads all one bits (-1, or NaN as a float).
//   tensor and  simt::mma_m16n8k8_tf32, simt::mma_m16n8k16_bf16 (mma.sync: the warp's
//   copy units  fragments gathered, multiplied exactly as the PTX ISA lays them out, scattered
//               back) and simt::cp_async* (cp.async: the destination reads as NaN until the
//               issuing thread waits for the copy's group). Kernels call them through the
//               wrappers of kernels/mma.cuh and kernels/async_copy.cuh, which are inline PTX on
//               the GPU.
//   launching   SIMT_EXPORT(kernel) defines the C entry point
//                   int simt_launch_<kernel>(const simt_launch_config*, void** args)
//               which takes its arguments the way cuLaunchKernel does (one pointer per
//               parameter, each to storage of exactly that parameter's C type), copies them,
//               and runs the whole grid before it returns (0 = success), and
//                   int simt_argument_sizes_<kernel>(int* sizes, int capacity)
//               which says how many bytes each parameter takes (what a captured launch copies).
//
// How a grid runs is in simt.cpp, including the schedule orders (RAWGAN_SIMT_ORDER) that resume
// a block's threads forward, in reverse or shuffled, to expose races.
//
// Not emulated, and why:
//   - __activemask, __match_*_sync, __reduce_*_sync, ldmatrix, other mma shapes and types, wmma,
//     cp.async.bulk / TMA, mbarrier: nothing in RawGan uses them yet; each is a few lines on the
//     pattern of the collectives here.
//   - __constant__ memory set from the host: the kernels take their constants as arguments.
//   - streams: every launch is synchronous, so a missing synchronisation on the host never shows.
//   - printf from many threads in order, and out-of-bounds checks (a bad address crashes the
//     process instead of returning CUDA_ERROR_ILLEGAL_ADDRESS): a CPU has no cheap way to check
//     every access.
//   - weak memory ordering and preemption: a fiber runs until it waits, so its writes are seen at
//     once and in order by the fibers that run after it, and a thread that spins on a flag set by
//     another thread of its block never yields (it hangs; use a barrier).
//   - independent progress inside a warp: lanes run one after another between collectives,
//     never in lock-step, so code that relies on implicit warp synchrony (no __syncwarp) is
//     caught only when a schedule order makes the race visible.
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
// CUDA's vector type of four floats, 16-byte aligned: on a GPU one float4 load is one 128-bit
// access (wide_tile.cuh reads its shared tiles this way) and a misaligned one faults. Here g++
// may use aligned vector moves for it, which fault the same way, but need not: an alignment
// error can pass here that a GPU reports.
struct __attribute__((aligned(16))) float4 { float x, y, z, w; };
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

// ------------------------------------------------------------------ warp collectives
// Every collective is one call into the runtime (simt::warp_collective in simt.cpp): the lane
// posts a request (what it asks for and its value), and waits until every lane named in the
// mask has posted a matching request. The last lane to arrive computes every lane's result into
// that lane's own request, then the others resume and read it. Each request lives on its own
// lane's stack, so no lane can overwrite a value another lane has yet to read.
namespace simt
{
enum class collective : unsigned
{
    shfl_idx, shfl_up, shfl_down, shfl_xor,   // shfl.sync's four modes
    ballot, any, all,                         // vote.sync
    syncwarp,                                 // bar.warp.sync
    mma_m16n8k8_tf32, mma_m16n8k16_bf16,      // mma.sync (all 32 lanes)
};

struct warp_request
{
    collective op;
    unsigned mask;        // lanes taking part (mma: all 32)
    int b;                // shuffles: source lane, delta or lane mask
    int width;            // shuffles: segment width, a power of two up to 32
    uint64_t value;       // this lane's value (shuffles, votes)
    uint64_t result;      // written for this lane when the collective completes
    const void* in;       // mma: this lane's fragments, read when the collective completes
    void* out;            // mma: this lane's part of D, written when the collective completes
};

void warp_collective(warp_request& request);

template <typename T>
inline T shuffle(collective op, unsigned mask, T var, int b, int width)
{
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "a shuffle moves up to 8 bytes");
    warp_request r{};
    r.op = op;
    r.mask = mask;
    r.b = b;
    r.width = width;
    memcpy(&r.value, &var, sizeof(T));
    __asm__ __volatile__("" ::: "memory");
    warp_collective(r);
    __asm__ __volatile__("" ::: "memory");
    T result;
    memcpy(&result, &r.result, sizeof(T));
    return result;
}

inline unsigned vote(collective op, unsigned mask, int predicate)
{
    warp_request r{};
    r.op = op;
    r.mask = mask;
    r.value = predicate != 0;
    __asm__ __volatile__("" ::: "memory");
    warp_collective(r);
    __asm__ __volatile__("" ::: "memory");
    return static_cast<unsigned>(r.result);
}
} // namespace simt

// CUDA's overloads: the 4- and 8-byte integer and floating-point types.
#define SIMT_SHUFFLES(T)                                                                                                   \
    inline T __shfl_sync(unsigned mask, T var, int srcLane, int width = warpSize)                                           \
    {                                                                                                                      \
        return simt::shuffle(simt::collective::shfl_idx, mask, var, srcLane, width);                                       \
    }                                                                                                                      \
    inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize)                                     \
    {                                                                                                                      \
        return simt::shuffle(simt::collective::shfl_up, mask, var, static_cast<int>(delta), width);                        \
    }                                                                                                                      \
    inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize)                                   \
    {                                                                                                                      \
        return simt::shuffle(simt::collective::shfl_down, mask, var, static_cast<int>(delta), width);                      \
    }                                                                                                                      \
    inline T __shfl_xor_sync(unsigned mask, T var, int laneMask, int width = warpSize)                                      \
    {                                                                                                                      \
        return simt::shuffle(simt::collective::shfl_xor, mask, var, laneMask, width);                                      \
    }
SIMT_SHUFFLES(int)
SIMT_SHUFFLES(unsigned int)
SIMT_SHUFFLES(long)
SIMT_SHUFFLES(unsigned long)
SIMT_SHUFFLES(long long)
SIMT_SHUFFLES(unsigned long long)
SIMT_SHUFFLES(float)
SIMT_SHUFFLES(double)
#undef SIMT_SHUFFLES

inline unsigned __ballot_sync(unsigned mask, int predicate) { return simt::vote(simt::collective::ballot, mask, predicate); }
inline int __any_sync(unsigned mask, int predicate) { return static_cast<int>(simt::vote(simt::collective::any, mask, predicate)); }
inline int __all_sync(unsigned mask, int predicate) { return static_cast<int>(simt::vote(simt::collective::all, mask, predicate)); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { simt::vote(simt::collective::syncwarp, mask, 0); }

// ------------------------------------------------------------------ tensor cores and async copies
// What kernels/mma.cuh and kernels/async_copy.cuh call under the emulator (on the GPU they are
// inline PTX). The fragment layouts and the copy semantics are described in simt.cpp.
namespace simt
{
// cvt.rna.tf32.f32: round to nearest, ties away from zero, to 10 mantissa bits; the result is
// an fp32 bit pattern whose low 13 bits are zero. Inf stays Inf and NaN stays NaN (quiet).
inline unsigned cvt_rna_tf32(float x)
{
    unsigned u;
    memcpy(&u, &x, 4);
    if ((u & 0x7f800000u) == 0x7f800000u)                              // Inf or NaN: no rounding
        return (u & 0x007fffffu) ? ((u | 0x00400000u) & 0xffffe000u) : u;
    return (u + 0x1000u) & 0xffffe000u;   // add half an ulp of tf32 to the magnitude, then truncate;
                                          // a carry into the exponent is the right rounding too
}

// cvt.rn.bf16x2.f32 (d, hi, lo): two floats rounded to nearest even to bfloat16, `lo` in the low
// half of the result. NaN stays NaN (quiet).
inline unsigned cvt_rn_bf16(float x)
{
    unsigned u;
    memcpy(&u, &x, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (u >> 16) | 0x0040u;   // NaN
    return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
}
inline unsigned cvt_rn_bf16x2(float hi, float lo) { return (cvt_rn_bf16(hi) << 16) | cvt_rn_bf16(lo); }

// mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 and .m16n8k16.row.col.f32.bf16.bf16.f32.
// d may be c.
void mma_m16n8k8_tf32(float d[4], const unsigned a[4], const unsigned b[2], const float c[4]);
void mma_m16n8k16_bf16(float d[4], const unsigned a[4], const unsigned b[2], const float c[4]);

// cp.async of 4, 8 or 16 bytes from global to shared memory; commit_group; wait_group n.
void cp_async(void* shared, const void* global, unsigned bytes);
void cp_async_commit();
void cp_async_wait(unsigned newestPending);
} // namespace simt

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
inline long long __double_as_longlong(double d) { long long i; memcpy(&i, &d, 8); return i; }
inline double __longlong_as_double(long long i) { double d; memcpy(&d, &i, 8); return d; }

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
    unsigned schedule;   // 0: RAWGAN_SIMT_ORDER (default forward); 1 forward, 2 reverse, 3 random
    unsigned seed;       // for random: 0 takes RAWGAN_SIMT_SEED (default 1)
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

// The size of each parameter's C type, into sizes (at most capacity); returns how many parameters
// the kernel has. A captured launch (a CUDA graph) copies this many bytes of each argument, as the
// driver does from the kernel's parameter layout in the machine code.
template <typename... P>
inline int argument_sizes(void (*)(P...), int* sizes, int capacity)
{
    const int all[] = {0, (int)sizeof(std::decay_t<P>)...};
    const int count = (int)sizeof...(P);
    for (int i = 0; i < count && i < capacity; i++) sizes[i] = all[i + 1];
    return count;
}
} // namespace simt

// One exported launcher per kernel; the host looks it up by name ("simt_launch_" + kernel).
#define SIMT_EXPORT(name)                                                                              \
    extern "C" __attribute__((visibility("default"))) int simt_launch_##name(const simt_launch_config* config, void** args) \
    {                                                                                                  \
        return simt::launch_kernel(#name, &name, config, args);                                        \
    }                                                                                                  \
    extern "C" __attribute__((visibility("default"))) int simt_argument_sizes_##name(int* sizes, int capacity) \
    {                                                                                                  \
        return simt::argument_sizes(&name, sizes, capacity);                                           \
    }
