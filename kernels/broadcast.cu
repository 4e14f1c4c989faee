// broadcast.cu: NumPy broadcasting over four right-aligned dimensions, and its adjoint.
//
//   add_broadcast  y = a + b        a, b have y's dims or 1 on each axis; an axis of size 1
//   sub_broadcast  y = a - b        is repeated along y's axis (a bias [1, C, 1, 1] added to
//   mul_broadcast  y = a * b        [N, C, H, W] feature maps, a per-sample scale [N, 1, 1, 1],
//   div_broadcast  y = a / b        a scalar [1, 1, 1, 1]).
//   broadcast_to   y[i0, i1, i2, i3] = x[i0 or 0, i1 or 0, i2 or 0, i3 or 0]
//   sum_to         y = x summed over every axis where y has 1 and x does not: the adjoint of
//                  broadcast_to, so the gradient of a broadcast operand (a bias gradient sums
//                  over N, H and W).
//
// Indexing. An operand with dims d is read at offset i0 s0 + i1 s1 + i2 s2 + i3 s3, where s are
// its contiguous strides with 0 on every axis where d is 1: walking y's index space then walks
// the operand with the broadcast axes standing still. No data is ever copied to "expand" it.
//
// Threads (elementwise kernels): a grid-stride loop over y's elements, one element per thread
// per step, so stores are coalesced; the operand reads are coalesced along any axis the operand
// shares with y, and a broadcast operand is read from cache. Each thread turns its flat index
// back into four coordinates: three 64-bit divisions, which the GPU compiler runs as 32-bit
// divisions whenever both operands fit (it inserts that check itself), cheap next to the
// memory traffic.
// Launch: BlockSize threads, blocks to fill the device. Outputs may alias inputs (gradients are
// added in place), so no pointer is __restrict__.
//
// Threads (sum_to): the shape of the reduction decides.
//   - Few values per output (at most SUM_TO_SERIAL_MAX, e.g. summing a batch of 16 images into
//     one): one thread per output, looping over its values. Neighbouring threads own
//     neighbouring outputs, so the reads of each step are coalesced.
//   - Many values per output (a bias gradient sums N H W values into each of C outputs): one
//     block per output. The block's threads stride over the output's values (coalesced along
//     the innermost summed axis), each keeps a partial sum, and a shared-memory tree (block_sum
//     in common.cuh) adds the partials.
// Both paths loop (over outputs by thread, or by block), so any grid is correct; the host
// launches one thread per output in the first case and one block per output in the second.
// Sums are accumulated in double: a bias gradient at 128x128 adds
// 16 * 128 * 128 terms, and float would lose about three digits of them.
#include "common.cuh"

// The strides of an operand with dims d, walked in the index space of its output: contiguous
// strides, with 0 on axes of size 1.
struct broadcast_strides
{
    long long s0, s1, s2, s3;
};

__device__ __forceinline__ broadcast_strides strides_of(dims4 d)
{
    broadcast_strides s;
    s.s3 = d.d3 == 1 ? 0 : 1;
    s.s2 = d.d2 == 1 ? 0 : (long long)d.d3;
    s.s1 = d.d1 == 1 ? 0 : (long long)d.d3 * d.d2;
    s.s0 = d.d0 == 1 ? 0 : (long long)d.d3 * d.d2 * d.d1;
    return s;
}

// Offset in an operand of y's flat element i.
__device__ __forceinline__ long long broadcast_offset(long long i, dims4 yd, broadcast_strides s)
{
    long long i3 = i % yd.d3;
    long long t = i / yd.d3;
    long long i2 = t % yd.d2;
    t /= yd.d2;
    long long i1 = t % yd.d1;
    long long i0 = t / yd.d1;
    return i0 * s.s0 + i1 * s.s1 + i2 * s.s2 + i3 * s.s3;
}

__device__ __forceinline__ long long dims_length(dims4 d) { return (long long)d.d0 * d.d1 * d.d2 * d.d3; }

struct broadcast_add { static __device__ __forceinline__ float apply(float a, float b) { return a + b; } };
struct broadcast_sub { static __device__ __forceinline__ float apply(float a, float b) { return a - b; } };
struct broadcast_mul { static __device__ __forceinline__ float apply(float a, float b) { return a * b; } };
struct broadcast_div { static __device__ __forceinline__ float apply(float a, float b) { return a / b; } };

template <typename Op>
__device__ __forceinline__ void broadcast_binary(const float* a, dims4 ad, const float* b, dims4 bd, float* y, dims4 yd)
{
    const broadcast_strides sa = strides_of(ad), sb = strides_of(bd);
    const long long n = dims_length(yd);
    for (long long i = grid_start(); i < n; i += grid_stride())
        y[i] = Op::apply(a[broadcast_offset(i, yd, sa)], b[broadcast_offset(i, yd, sb)]);
}

extern "C" __global__ void add_broadcast(const float* a, dims4 ad, const float* b, dims4 bd, float* y, dims4 yd)
{
    broadcast_binary<broadcast_add>(a, ad, b, bd, y, yd);
}

extern "C" __global__ void sub_broadcast(const float* a, dims4 ad, const float* b, dims4 bd, float* y, dims4 yd)
{
    broadcast_binary<broadcast_sub>(a, ad, b, bd, y, yd);
}

extern "C" __global__ void mul_broadcast(const float* a, dims4 ad, const float* b, dims4 bd, float* y, dims4 yd)
{
    broadcast_binary<broadcast_mul>(a, ad, b, bd, y, yd);
}

extern "C" __global__ void div_broadcast(const float* a, dims4 ad, const float* b, dims4 bd, float* y, dims4 yd)
{
    broadcast_binary<broadcast_div>(a, ad, b, bd, y, yd);
}

extern "C" __global__ void broadcast_to(const float* x, dims4 xd, float* y, dims4 yd)
{
    const broadcast_strides sx = strides_of(xd);
    const long long n = dims_length(yd);
    for (long long i = grid_start(); i < n; i += grid_stride()) y[i] = x[broadcast_offset(i, yd, sx)];
}

// The host reads this threshold too (CudaBackend.SumTo) to size the grid.
#define SUM_TO_SERIAL_MAX 64

// The x offsets of sum_to: an output index o walks the axes y keeps, a reduction index r walks
// the axes y sums over; each adds up its coordinates times x's contiguous strides.
struct sum_to_plan
{
    int dim[4];            // x's dims
    long long stride[4];   // x's contiguous strides
    bool summed[4];        // y has 1 on this axis and x does not
};

__device__ __forceinline__ long long sum_to_offset(const sum_to_plan& p, long long index, bool summedAxes)
{
    long long offset = 0;
    for (int k = 3; k >= 0; k--)
    {
        if (p.summed[k] != summedAxes) continue;
        offset += (index % p.dim[k]) * p.stride[k];
        index /= p.dim[k];
    }
    return offset;
}

extern "C" __global__ void sum_to(const float* x, dims4 xd, float* y, dims4 yd)
{
    __shared__ double scratch[MAX_BLOCK];
    sum_to_plan p;
    p.dim[0] = xd.d0; p.dim[1] = xd.d1; p.dim[2] = xd.d2; p.dim[3] = xd.d3;
    const int ydim[4] = {yd.d0, yd.d1, yd.d2, yd.d3};
    long long stride = 1;
    for (int k = 3; k >= 0; k--)
    {
        p.stride[k] = stride;
        stride *= p.dim[k];
        p.summed[k] = ydim[k] == 1 && p.dim[k] != 1;
    }
    const long long outputs = dims_length(yd);
    const long long perOutput = outputs == 0 ? 0 : dims_length(xd) / outputs;

    if (perOutput <= SUM_TO_SERIAL_MAX)
    {
        for (long long o = grid_start(); o < outputs; o += grid_stride())
        {
            const long long base = sum_to_offset(p, o, false);
            double sum = 0.0;
            for (long long r = 0; r < perOutput; r++) sum += x[base + sum_to_offset(p, r, true)];
            y[o] = (float)sum;
        }
        return;
    }

    // One block per output. The loop bound is the same for every thread of the block, so every
    // thread reaches the barriers inside block_sum.
    for (long long o = blockIdx.x; o < outputs; o += gridDim.x)
    {
        const long long base = sum_to_offset(p, o, false);
        double partial = 0.0;
        for (long long r = threadIdx.x; r < perOutput; r += blockDim.x) partial += x[base + sum_to_offset(p, r, true)];
        double total = block_sum(partial, scratch);
        if (threadIdx.x == 0) y[o] = (float)total;
    }
}
