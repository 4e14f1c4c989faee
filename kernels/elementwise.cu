// elementwise.cu: kernels where output i depends only on input i (and a few scalars).
//
//   fill                y[i] = value
//   scale               y[i] = a x[i]
//   add_scalar          y[i] = x[i] + b
//   square              y[i] = x[i]^2
//   sqrt_forward        y[i] = sqrt(x[i])
//   rsqrt_forward       y[i] = 1 / sqrt(x[i])
//   softplus_forward    y[i] = log(1 + e^x[i])                   (the logistic GAN loss)
//   sigmoid_forward     y[i] = 1 / (1 + e^-x[i])                 (softplus's derivative)
//   leaky_relu_forward  y[i] = x[i] if x[i] > 0 else slope x[i]   (slope 0.2 in ProGAN, section A.1)
//   leaky_relu_backward gx[i] = gy[i] if x[i] > 0 else slope gy[i]
//   lerp_scalar         y[i] = a[i] + t (b[i] - a[i])             (the fade-in of section 3, one t)
//   lerp_per_sample     y[s, j] = a[s, j] + t[s] (b[s, j] - a[s, j])
//                       (WGAN-GP's x_hat = real + t (fake - real), one t per sample)
//
// Threads: a one-dimensional grid-stride loop. Thread g of the grid handles elements g,
// g + G, g + 2G, ... where G = gridDim.x * blockDim.x is the number of threads in the grid.
// Neighbouring threads touch neighbouring elements, so every warp reads and writes whole
// contiguous segments (coalesced), and any grid covers any n: the host launches BlockSize
// threads per block and enough blocks to fill the device (about 32 per multiprocessor), never
// more than n needs. These kernels are limited by memory bandwidth, not arithmetic; one read and
// one write per element is the whole cost, so there is nothing to tile or share.
//
// n is a 64-bit count (long long): a tensor may hold more than 2^31 elements. An output may be
// the same buffer as an input (gradients are accumulated in place), so no pointer here is
// declared __restrict__: each element is read before it is written, by the same thread.
//
// Each kernel is one or two float operations per element, so two correct implementations agree
// to the last bit except where a compiler fuses a multiply and an add into one rounding (fma),
// which NVRTC does by default.
#include "common.cuh"

extern "C" __global__ void fill(float* y, long long n, float value)
{
    for (long long i = grid_start(); i < n; i += grid_stride()) y[i] = value;
}

extern "C" __global__ void scale(const float* x, float* y, long long n, float a)
{
    for (long long i = grid_start(); i < n; i += grid_stride()) y[i] = a * x[i];
}

extern "C" __global__ void add_scalar(const float* x, float* y, long long n, float b)
{
    for (long long i = grid_start(); i < n; i += grid_stride()) y[i] = x[i] + b;
}

extern "C" __global__ void square(const float* x, float* y, long long n)
{
    for (long long i = grid_start(); i < n; i += grid_stride())
    {
        float v = x[i];
        y[i] = v * v;
    }
}

extern "C" __global__ void sqrt_forward(const float* x, float* y, long long n)
{
    for (long long i = grid_start(); i < n; i += grid_stride()) y[i] = sqrtf(x[i]);
}

// 1 / sqrtf(x), both correctly rounded, rather than the hardware rsqrtf approximation (2 ulp):
// the result then matches the CPU backend exactly, and this kernel is bandwidth-bound anyway.
extern "C" __global__ void rsqrt_forward(const float* x, float* y, long long n)
{
    for (long long i = grid_start(); i < n; i += grid_stride()) y[i] = 1.0f / sqrtf(x[i]);
}

// log(1 + e^x) as max(x, 0) + log1p(e^-|x|): e^x would overflow for x > 88, and 1 + e^x loses
// every digit of e^x below 1e-8; the split form is exact to a few ulp everywhere.
extern "C" __global__ void softplus_forward(const float* x, float* y, long long n)
{
    for (long long i = grid_start(); i < n; i += grid_stride())
    {
        float v = x[i];
        y[i] = fmaxf(v, 0.0f) + log1pf(expf(-fabsf(v)));
    }
}

// 1 / (1 + e^-x) for x >= 0, e^x / (1 + e^x) below: e^-x stays at most 1, nothing overflows.
extern "C" __global__ void sigmoid_forward(const float* x, float* y, long long n)
{
    for (long long i = grid_start(); i < n; i += grid_stride())
    {
        float v = x[i], e = expf(-fabsf(v));
        y[i] = v >= 0.0f ? 1.0f / (1.0f + e) : e / (1.0f + e);
    }
}

extern "C" __global__ void leaky_relu_forward(const float* x, float* y, long long n, float slope)
{
    for (long long i = grid_start(); i < n; i += grid_stride())
    {
        float v = x[i];
        y[i] = v > 0.0f ? v : slope * v;
    }
}

// The gradient is a masked multiply by 1 or slope, decided by the forward input x (not the
// output: with a negative slope the two would disagree). The mask is constant in x, so this
// kernel is linear in gy and its own derivative: a second derivative is the same kernel.
extern "C" __global__ void leaky_relu_backward(const float* x, const float* gy, float* gx, long long n, float slope)
{
    for (long long i = grid_start(); i < n; i += grid_stride()) gx[i] = x[i] > 0.0f ? gy[i] : slope * gy[i];
}

extern "C" __global__ void lerp_scalar(const float* a, const float* b, float* y, long long n, float t)
{
    for (long long i = grid_start(); i < n; i += grid_stride())
    {
        float av = a[i];
        y[i] = av + t * (b[i] - av);
    }
}

// One t per sample: element i belongs to sample i / inner. The division is per element, but
// this kernel runs once per discriminator step on a batch of images; it is not worth a 2-D grid.
extern "C" __global__ void lerp_per_sample(const float* a, const float* b, const float* t, float* y, int samples, int inner)
{
    long long n = (long long)samples * inner;
    for (long long i = grid_start(); i < n; i += grid_stride())
    {
        float av = a[i];
        y[i] = av + t[i / inner] * (b[i] - av);
    }
}
