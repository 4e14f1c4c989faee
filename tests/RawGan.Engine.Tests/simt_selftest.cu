// simt_selftest.cu: small kernels that each exercise one feature of RawGan's CPU emulator
// (kernels/simt) on its own. EmulatorSelfTests.cs builds this file with the emulator and checks
// what every kernel wrote. It also compiles with NVRTC, like any kernel file (MachineCodeTests
// assembles it for every architecture), and the tests of what a GPU defines (shuffles, mma
// layouts, rounding) run on the GPU too when there is one.

#include "async_copy.cuh"
#include "mma.cuh"

// Every block reverses its own segment of x through static shared memory: thread t writes
// element t, and after the barrier reads element (blockDim - 1 - t), written by another thread.
// Without a working barrier in every block (not only the first), the reads see stale values.
extern "C" __global__ void reverse_static_shared(const float* x, float* y, int n)
{
    __shared__ float tile[1024];
    int t = threadIdx.x;
    int i = blockIdx.x * blockDim.x + t;
    tile[t] = i < n ? x[i] : -1.0f;
    __syncthreads();
    if (i < n) y[i] = tile[blockDim.x - 1 - t];
}

// The same through dynamic shared memory, whose size (blockDim.x floats) the launch gives.
extern "C" __global__ void reverse_dynamic_shared(const float* x, float* y, int n)
{
#if defined(__CUDACC__)
    extern __shared__ float tile[];
#else
    SIMT_DYNAMIC_SHARED(float, tile);
#endif
    int t = threadIdx.x;
    int i = blockIdx.x * blockDim.x + t;
    tile[t] = i < n ? x[i] : -1.0f;
    __syncthreads();
    if (i < n) y[i] = tile[blockDim.x - 1 - t];
}

// Many barriers in a row: an inclusive prefix sum per block (Hillis-Steele), double-buffered so
// each step reads only what the previous step finished writing.
extern "C" __global__ void block_prefix_sum(const int* x, int* y)
{
    __shared__ int buffer[2][1024];
    int t = threadIdx.x;
    int base = blockIdx.x * blockDim.x;
    int in = 0;
    buffer[in][t] = x[base + t];
    __syncthreads();
    for (int offset = 1; offset < (int)blockDim.x; offset *= 2)
    {
        int v = buffer[in][t];
        if (t >= offset) v += buffer[in][t - offset];
        buffer[1 - in][t] = v;
        in = 1 - in;
        __syncthreads();
    }
    y[base + t] = buffer[in][t];
}

// Atomics under contention: every thread of every block adds to the same counters.
extern "C" __global__ void atomic_contention(unsigned int* counter, float* sum, unsigned long long* wide, int repeats)
{
    for (int r = 0; r < repeats; r++)
    {
        atomicAdd(counter, 1u);
        atomicAdd(sum, 1.0f);
        atomicAdd(wide, 3ull);
    }
}

// Built-in variables for any grid and block shape: each thread writes its coordinates at its
// global linear index (x fastest, then y, then z; blocks in the same order).
extern "C" __global__ void write_coordinates(int* out)
{
    unsigned threads = blockDim.x * blockDim.y * blockDim.z;
    unsigned block = (blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
    unsigned thread = (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
    unsigned id = block * threads + thread;
    int* o = out + 7 * id;
    o[0] = (int)id;
    o[1] = (int)threadIdx.x; o[2] = (int)threadIdx.y; o[3] = (int)threadIdx.z;
    o[4] = (int)blockIdx.x; o[5] = (int)blockIdx.y; o[6] = (int)blockIdx.z;
}

// threadIdx must stay right for each thread across barriers in a 3-D block: write, barrier,
// then read back a neighbour's value by 3-D coordinates.
extern "C" __global__ void neighbour_3d(int* out)
{
    __shared__ int cell[8][8][8];
    unsigned x = threadIdx.x, y = threadIdx.y, z = threadIdx.z;
    cell[z][y][x] = (int)(100 * z + 10 * y + x);
    __syncthreads();
    unsigned nx = (x + 1) % blockDim.x, ny = (y + 1) % blockDim.y, nz = (z + 1) % blockDim.z;
    unsigned id = (z * blockDim.y + y) * blockDim.x + x;
    out[blockIdx.x * blockDim.x * blockDim.y * blockDim.z + id] = cell[nz][ny][nx];
}

// Misuse: half the threads of each block (thread 0 among those that wait) skip the barrier. On a
// GPU this hangs or corrupts; the emulator must fail the launch instead.
extern "C" __global__ void divergent_barrier(int* out)
{
    if (threadIdx.x % 2 == 0)
    {
        __syncthreads();
    }
    out[threadIdx.x] = 1;
}

// Misuse the other way round: thread 0 skips the barrier that the others reach.
extern "C" __global__ void barrier_skipped_by_thread_zero(int* out)
{
    if (threadIdx.x != 0)
    {
        __syncthreads();
    }
    out[threadIdx.x] = 1;
}

// ------------------------------------------------------------------ warp collectives

// The lanes of the calling thread's warp that exist: all 32, or fewer in the last warp of a
// block whose size is not a multiple of 32.
__device__ unsigned lanes_of_my_warp()
{
    unsigned linear = (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
    unsigned threads = blockDim.x * blockDim.y * blockDim.z;
    return min(32u, threads - (linear - linear % 32));
}

__device__ unsigned mask_of_lanes(unsigned lanes) { return lanes == 32 ? 0xffffffffu : (1u << lanes) - 1; }

// Every shuffle mode and vote, with the warp's exact mask, for int, unsigned, float and double.
// Thread i writes 10 ints at out + 10 i.
extern "C" __global__ void warp_shuffles(const int* x, int* out, int width)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    const unsigned lane = threadIdx.x % 32, mask = mask_of_lanes(lanes_of_my_warp());
    const int v = x[i];
    int* o = out + 10 * i;
    o[0] = __shfl_sync(mask, v, (int)(lane * 7 + 3) % 64, width);   // source lanes beyond width wrap
    o[1] = __shfl_up_sync(mask, v, 3, width);
    o[2] = __shfl_down_sync(mask, v, 5, width);
    o[3] = __shfl_xor_sync(mask, v, 6, width);
    o[4] = __float_as_int(__shfl_down_sync(mask, 0.5f * v, 1, width));
    o[5] = (int)__shfl_xor_sync(mask, 3u * (unsigned)v, 1, width);
    o[6] = (int)__ballot_sync(mask, v % 3 == 0);
    o[7] = __any_sync(mask, v > 90) | (__all_sync(mask, v >= 0) << 1);
    const long long bits = __double_as_longlong(__shfl_xor_sync(mask, v + 0.25, 2, width));
    o[8] = (int)(bits & 0xffffffff);
    o[9] = (int)(bits >> 32);
}

// A warp-wide sum by __shfl_down_sync: lane 0 of each warp writes its warp's sum. In a partial
// warp a lane adds only what came from a lane that exists. With skip_first_warp, warp 0 of each
// block (the one holding thread 0) returns at once and the others still meet.
extern "C" __global__ void warp_sum(const float* x, float* sums, int skip_first_warp)
{
    const unsigned warp = threadIdx.x / 32, lane = threadIdx.x % 32, lanes = lanes_of_my_warp();
    if (skip_first_warp && warp == 0) return;
    const unsigned mask = mask_of_lanes(lanes);
    float v = x[blockIdx.x * blockDim.x + threadIdx.x];
    for (int offset = 16; offset > 0; offset /= 2)
    {
        float other = __shfl_down_sync(mask, v, offset);
        if (lane + offset < lanes) v += other;
    }
    const unsigned warps = (blockDim.x + 31) / 32;
    if (lane == 0) sums[blockIdx.x * warps + warp] = v;
}

// __syncwarp orders shared memory within a warp: each lane writes its slot, then reads the next
// lane's (without the __syncwarp that would be a race).
extern "C" __global__ void warp_rotate_shared(const int* x, int* y)
{
    __shared__ int slot[1024];
    const unsigned t = threadIdx.x, lane = t % 32, lanes = lanes_of_my_warp();
    slot[t] = x[blockIdx.x * blockDim.x + t];
    __syncwarp(mask_of_lanes(lanes));
    y[blockIdx.x * blockDim.x + t] = slot[t - lane + (lane + 1) % lanes];
}

// Misuse, each of which hangs or is undefined on a GPU; the emulator must fail the launch.
extern "C" __global__ void shuffle_after_a_lane_exits(int* out)
{
    if (threadIdx.x == 5) return;   // lane 5 of warp 0 is in the mask but never arrives
    out[threadIdx.x] = __shfl_sync(0xffffffffu, (int)threadIdx.x, 0);
}

extern "C" __global__ void mismatched_shuffles(int* out)
{
    int v = threadIdx.x;
    if (threadIdx.x % 32 < 16)
        v = __shfl_down_sync(0xffffffffu, v, 1);
    else
        v = __shfl_xor_sync(0xffffffffu, v, 1);
    out[threadIdx.x] = v;
}

extern "C" __global__ void full_mask_in_a_partial_warp(int* out)
{
    out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, (int)threadIdx.x, 1);   // launched with 40 threads
}

extern "C" __global__ void mask_without_the_caller(int* out)
{
    out[threadIdx.x] = __shfl_sync(1u, (int)threadIdx.x, 0);   // only lane 0 belongs
}

extern "C" __global__ void shuffle_against_barrier(int* out)
{
    int v = threadIdx.x;
    if (threadIdx.x % 32 < 16)
        __syncthreads();
    else
        v = __shfl_sync(0xffffffffu, v, 0);   // lanes 0-15 wait at the barrier instead
    out[threadIdx.x] = v;
}

extern "C" __global__ void shuffle_width_not_a_power_of_two(int* out)
{
    out[threadIdx.x] = __shfl_sync(0xffffffffu, (int)threadIdx.x, 0, 12);
}

// ------------------------------------------------------------------ tensor cores

// One 16 x 8 x 8 tile per warp: each lane loads its fragments of A (16 x 8), B (8 x 8) and C
// (16 x 8), all row-major in global memory, by the PTX ISA's formulas (kernels/mma.cuh), calls
// the mma, and stores its part of D by the accumulator formula. Warp w of the grid works on tile w.
// `wrong` breaks one formula on purpose, to show that a test of the result would catch it:
// 1 swaps a[1] and a[2], 2 swaps b[0] and b[1], 3 swaps c[1] and c[2].
// `by_shuffles` calls mma_m16n8k8_tf32_by_shuffles (the sm_70 / sm_75 path) instead.
extern "C" __global__ void mma_tf32_tiles(const float* A, const float* B, const float* C, float* D, int wrong, int by_shuffles)
{
    const int tile = (blockIdx.x * blockDim.x + threadIdx.x) / 32;
    A += tile * 128;
    B += tile * 64;
    C += tile * 128;
    D += tile * 128;
    const int lane = threadIdx.x % 32, g = lane >> 2, t = lane & 3;
    unsigned a[4] = {f32_to_tf32(A[g * 8 + t]), f32_to_tf32(A[(g + 8) * 8 + t]), f32_to_tf32(A[g * 8 + t + 4]), f32_to_tf32(A[(g + 8) * 8 + t + 4])};
    unsigned b[2] = {f32_to_tf32(B[t * 8 + g]), f32_to_tf32(B[(t + 4) * 8 + g])};
    float c[4] = {C[g * 8 + 2 * t], C[g * 8 + 2 * t + 1], C[(g + 8) * 8 + 2 * t], C[(g + 8) * 8 + 2 * t + 1]};
    if (wrong == 1) { unsigned s = a[1]; a[1] = a[2]; a[2] = s; }
    if (wrong == 2) { unsigned s = b[0]; b[0] = b[1]; b[1] = s; }
    if (wrong == 3) { float s = c[1]; c[1] = c[2]; c[2] = s; }
    float d[4];
    if (by_shuffles)
        mma_m16n8k8_tf32_by_shuffles(d, a, b, c);
    else
        mma_m16n8k8_tf32(d, a, b, c);
    D[g * 8 + 2 * t] = d[0];
    D[g * 8 + 2 * t + 1] = d[1];
    D[(g + 8) * 8 + 2 * t] = d[2];
    D[(g + 8) * 8 + 2 * t + 1] = d[3];
}

// The same for m16n8k16 bf16: A 16 x 16, B 16 x 8, C and D 16 x 8, row-major; `wrong` = 1 swaps
// a[1] and a[2], 2 swaps b[0] and b[1].
extern "C" __global__ void mma_bf16_tiles(const float* A, const float* B, const float* C, float* D, int wrong, int by_shuffles)
{
    const int tile = (blockIdx.x * blockDim.x + threadIdx.x) / 32;
    A += tile * 256;
    B += tile * 128;
    C += tile * 128;
    D += tile * 128;
    const int lane = threadIdx.x % 32, g = lane >> 2, t = lane & 3;
    unsigned a[4] = {f32x2_to_bf16x2(A[g * 16 + 2 * t], A[g * 16 + 2 * t + 1]), f32x2_to_bf16x2(A[(g + 8) * 16 + 2 * t], A[(g + 8) * 16 + 2 * t + 1]),
                     f32x2_to_bf16x2(A[g * 16 + 2 * t + 8], A[g * 16 + 2 * t + 9]), f32x2_to_bf16x2(A[(g + 8) * 16 + 2 * t + 8], A[(g + 8) * 16 + 2 * t + 9])};
    unsigned b[2] = {f32x2_to_bf16x2(B[(2 * t) * 8 + g], B[(2 * t + 1) * 8 + g]), f32x2_to_bf16x2(B[(2 * t + 8) * 8 + g], B[(2 * t + 9) * 8 + g])};
    float c[4] = {C[g * 8 + 2 * t], C[g * 8 + 2 * t + 1], C[(g + 8) * 8 + 2 * t], C[(g + 8) * 8 + 2 * t + 1]};
    if (wrong == 1) { unsigned s = a[1]; a[1] = a[2]; a[2] = s; }
    if (wrong == 2) { unsigned s = b[0]; b[0] = b[1]; b[1] = s; }
    float d[4];
    if (by_shuffles)
        mma_m16n8k16_bf16_by_shuffles(d, a, b, c);
    else
        mma_m16n8k16_bf16(d, a, b, c);
    D[g * 8 + 2 * t] = d[0];
    D[g * 8 + 2 * t + 1] = d[1];
    D[(g + 8) * 8 + 2 * t] = d[2];
    D[(g + 8) * 8 + 2 * t + 1] = d[3];
}

// Rounding: tf32[i] = f32_to_tf32(x[i]); bf16[i] = f32x2_to_bf16x2(x[i], -x[i]) (x[i] in the low half).
extern "C" __global__ void round_to_tf32_and_bf16(const float* x, unsigned* tf32, unsigned* bf16, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    tf32[i] = f32_to_tf32(x[i]);
    bf16[i] = f32x2_to_bf16x2(x[i], -x[i]);
}

// An mma in a block whose last warp is partial: mma.sync needs whole warps.
extern "C" __global__ void mma_in_a_partial_warp(float* out)
{
    unsigned a[4] = {0, 0, 0, 0}, b[2] = {0, 0};
    float c[4] = {0, 0, 0, 0}, d[4];
    mma_m16n8k8_tf32(d, a, b, c);
    out[threadIdx.x] = d[0];
}

// ------------------------------------------------------------------ asynchronous copies

// Every thread copies 4, 8 and 16 bytes of x into shared memory (one group), waits for it unless
// `wait` is 0, passes a barrier, and writes what its neighbour copied. x and y hold 7 floats per
// thread: n for the 4-byte copies, then 2n for the 8-byte ones, then 4n for the 16-byte ones
// (n = blockDim.x, a multiple of 4 up to 256).
extern "C" __global__ void async_copy_neighbour(const float* x, float* y, int wait)
{
    __shared__ __align__(16) float s4[256];
    __shared__ __align__(16) float s8[512];
    __shared__ __align__(16) float s16[1024];
    const int t = threadIdx.x, n = blockDim.x, base = blockIdx.x * 7 * n;
    cp_async_4(&s4[t], &x[base + t]);
    cp_async_8(&s8[2 * t], &x[base + n + 2 * t]);
    cp_async_16(&s16[4 * t], &x[base + 3 * n + 4 * t]);
    cp_async_commit();
    if (wait) cp_async_wait<0>();
    __syncthreads();
    const int u = (t + 1) % n;
    y[base + t] = s4[u];
    for (int k = 0; k < 2; k++) y[base + n + 2 * t + k] = s8[2 * u + k];
    for (int k = 0; k < 4; k++) y[base + 3 * n + 4 * t + k] = s16[4 * u + k];
}

// Groups: two committed groups and one copy not committed. wait<1> completes the older group
// only; wait<0> completes the second; the uncommitted copy belongs to no group and stays pending.
// y (5 n floats) gets first, second and third after wait<1>, then second and third after wait<0>.
// (On a GPU the pending ones may have landed already: the emulator shows the worst case.)
extern "C" __global__ void async_copy_groups(const float* x, float* y)
{
    __shared__ float first[256], second[256], third[256];
    const int t = threadIdx.x, n = blockDim.x;
    cp_async_4(&first[t], &x[t]);
    cp_async_commit();
    cp_async_4(&second[t], &x[n + t]);
    cp_async_commit();
    cp_async_4(&third[t], &x[2 * n + t]);
    cp_async_wait<1>();
    y[t] = first[t];
    y[n + t] = second[t];
    y[2 * n + t] = third[t];
    cp_async_wait<0>();
    y[3 * n + t] = second[t];
    y[4 * n + t] = third[t];
}

// ------------------------------------------------------------------ schedule orders

// A race on purpose (unless `barrier`): each thread writes its slot, then reads its neighbour's
// with no barrier between, so what it reads depends on which thread ran first. Dynamic shared
// memory, which the emulator fills with 0xff bytes (-1) before each block.
extern "C" __global__ void neighbour_without_barrier(int* out, int barrier)
{
#if defined(__CUDACC__)
    extern __shared__ int slot[];
#else
    SIMT_DYNAMIC_SHARED(int, slot);
#endif
    const unsigned t = threadIdx.x;
    slot[t] = (int)t + 1;
    if (barrier) __syncthreads();
    out[blockIdx.x * blockDim.x + t] = slot[(t + 1) % blockDim.x];
}
