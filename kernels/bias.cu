// bias.cu: a layer's bias, with the leaky ReLU that follows it folded into the same pass.
//
//   bias_leaky_relu           y[s, c, p] = z if z > 0 else slope z,  z = x[s, c, p] + b[c]
//                             (slope 1: the bias alone; ProGAN's layers use 0.2, section A.1)
//   bias_leaky_relu_backward  gx[s, c, p] = gy if y > 0 else slope gy;  gb[c] = sum over s, p of gx
//
// Every convolution and dense layer of ProGAN adds a bias and most then apply leaky ReLU: two
// passes over the activations forward (add, activate) and two backward (the mask, then the sum
// for the bias gradient). These kernels make them one pass each way; a convolution layer does
// without the forward one too, since conv2d_forward (conv.cu) applies the same formula in its
// output store, and only the backward runs here (the dense layers use both). The backward reads the
// mask from the output y, not from z: for a slope > 0, y > 0 exactly when z > 0, so nothing
// else needs to be kept from the forward pass. x is [n, c, plane] (a dense layer's [n, c] has
// plane 1); y may be the same buffer as x, and gx the same as gy.
//
// Threads (forward): the grid-stride loop of elementwise.cu, one element per thread per step;
// the channel of element i is (i / plane) mod c, b is read from cache.
// Threads (backward): one block per channel (blocks loop over channels, so any grid is correct).
// The block's threads stride over the channel's n * plane values, writing gx and keeping a
// partial sum in double, which block_sum (common.cuh) adds up; thread 0 writes gb[c]. The loop
// bound is the same for every thread of a block, so all of them reach block_sum's barriers.
#include "common.cuh"

extern "C" __global__ void bias_leaky_relu(const float* x, const float* b, float* y, int n, int c, int plane, float slope)
{
    const long long total = (long long)n * c * plane;
    for (long long i = grid_start(); i < total; i += grid_stride())
    {
        float z = x[i] + b[(i / plane) % c];
        y[i] = z > 0.0f ? z : slope * z;
    }
}

extern "C" __global__ void bias_leaky_relu_backward(const float* y, const float* gy, float* gx, float* gb, int n, int c, int plane,
    float slope)
{
    __shared__ double scratch[MAX_BLOCK];
    const long long count = (long long)n * plane;
    for (int ch = blockIdx.x; ch < c; ch += gridDim.x)
    {
        double partial = 0.0;
        for (long long j = threadIdx.x; j < count; j += blockDim.x)
        {
            const long long i = ((j / plane) * c + ch) * plane + j % plane;
            const float g = y[i] > 0.0f ? gy[i] : slope * gy[i];
            gx[i] = g;
            partial += g;
        }
        double sum = block_sum(partial, scratch);
        if (threadIdx.x == 0) gb[ch] = (float)sum;
    }
}
