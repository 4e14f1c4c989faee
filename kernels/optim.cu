// optim.cu: the per-parameter updates of training (ProGAN section A.1).
//
//   adam_update      m = b1 m + (1 - b1) g
//                    v = b2 v + (1 - b2) g^2
//                    p = p - lr_t m / (sqrt(v) + eps),   lr_t = lr sqrt(1 - b2^t) / (1 - b1^t)
//                    TensorFlow's form, which the official ProGAN uses (lr 0.001, b1 0, b2 0.99,
//                    eps 1e-8): the bias corrections fold into the step size and eps is added
//                    to sqrt(v) unscaled. t counts from 1 and is read from the device (adam_step
//                    advanced it); nothing changes when *skip != 0 (a skipped step).
//                    With a counter (not null), it also adds to *nonfinite the number of NaN or
//                    infinite values among the new p, m and v: the check of the state after a
//                    step, without another pass over it (count_nonfinite per tensor would be
//                    three more kernels per parameter).
//   adam_step        t = t + 1, unless *skip != 0
//                    The step count lives on the device, so a training step captured once as a
//                    CUDA graph counts on when it is replayed; skip is a non-finite count
//                    (count_nonfinite below) of the step's loss and gradients, or null.
//   ema_update       ema = p + beta (ema - p), unless *skip != 0
//                    The generator average Gs of section A.1 (beta = 0.999), after every step;
//                    with a counter, *nonfinite += the number of non-finite values of the new ema.
//   count_nonfinite  *count += the number of NaN or infinite values in x.
//                    A training step whose gradients are not all finite is skipped.
//
// Threads (adam_update, ema_update): a grid-stride loop over the n parameters, one per thread
// per step; coalesced, bandwidth-bound. lr_t is the same for every element: each thread
// computes it once, in double, and rounds it to float once. Launch: BlockSize threads, blocks to
// fill the device. A skipped update returns before touching memory: the decision is made on the
// device, so a step never waits for the host to read its non-finite count (adam_step: one thread).
// Their counts, when asked for, are summed as count_nonfinite's are (below); the early return of
// a skipped update is the same for every thread of the launch, so no thread misses the barriers.
//
// Threads (count_nonfinite): a grid-stride loop in which each thread counts its elements, a
// shared-memory tree per block (block_sum in common.cuh), and one atomicAdd per block into the
// 64-bit counter, which the host zeroes before the launch. Counts are integers, so the order of
// the atomic additions cannot change the result. A value is non-finite when its exponent bits
// are all ones (NaN or infinity): a bit test, immune to compiler assumptions about NaN.
#include "common.cuh"

// True when a skip count is given and not zero: the update must leave everything as it is.
__device__ inline bool skipped(const unsigned long long* skip) { return skip != nullptr && *skip != 0; }

extern "C" __global__ void adam_step(int* step, const unsigned long long* skip)
{
    if (blockIdx.x == 0 && threadIdx.x == 0 && !skipped(skip)) *step += 1;
}

// 1 if x is NaN or infinite (its exponent bits all ones), else 0.
__device__ __forceinline__ unsigned long long nonfinite(float x) { return (__float_as_uint(x) & 0x7f800000u) == 0x7f800000u ? 1ull : 0ull; }

// Adds one value per thread to *count (if count is not null): a block sum, one atomicAdd a block.
__device__ __forceinline__ void add_count(unsigned long long* count, unsigned long long local)
{
    __shared__ unsigned long long scratch[MAX_BLOCK];
    if (count == nullptr) return;   // the same for every thread: no barrier is skipped by some
    const unsigned long long total = block_sum(local, scratch);
    if (threadIdx.x == 0 && total != 0) atomicAdd(count, total);
}

extern "C" __global__ void adam_update(float* p, const float* g, float* m, float* v, long long n,
                                       float lr, float beta1, float beta2, float eps, const int* step,
                                       const unsigned long long* skip, unsigned long long* nonfiniteCount)
{
    if (skipped(skip)) return;
    const int t = *step;
    // pow(double, double): CUDA's math library has no pow(double, int) overload, and a call to
    // one would compile to PTX yet fail to assemble (an unresolved extern function).
    const float lrT = (float)(lr * sqrt(1.0 - pow((double)beta2, (double)t)) / (1.0 - pow((double)beta1, (double)t)));
    unsigned long long local = 0;
    for (long long i = grid_start(); i < n; i += grid_stride())
    {
        const float gi = g[i];
        const float mi = beta1 * m[i] + (1.0f - beta1) * gi;
        const float vi = beta2 * v[i] + (1.0f - beta2) * gi * gi;
        const float pi = p[i] - lrT * mi / (sqrtf(vi) + eps);
        m[i] = mi;
        v[i] = vi;
        p[i] = pi;
        local += nonfinite(pi) + nonfinite(mi) + nonfinite(vi);
    }
    add_count(nonfiniteCount, local);
}

extern "C" __global__ void ema_update(float* ema, const float* p, long long n, float beta, const unsigned long long* skip,
                                      unsigned long long* nonfiniteCount)
{
    if (skipped(skip)) return;
    unsigned long long local = 0;
    for (long long i = grid_start(); i < n; i += grid_stride())
    {
        const float pi = p[i];
        const float e = pi + beta * (ema[i] - pi);
        ema[i] = e;
        local += nonfinite(e);
    }
    add_count(nonfiniteCount, local);
}

extern "C" __global__ void count_nonfinite(const float* x, long long n, unsigned long long* count)
{
    __shared__ unsigned long long scratch[MAX_BLOCK];
    unsigned long long local = 0;
    for (long long i = grid_start(); i < n; i += grid_stride()) local += nonfinite(x[i]);
    const unsigned long long total = block_sum(local, scratch);
    if (threadIdx.x == 0 && total != 0) atomicAdd(count, total);
}
