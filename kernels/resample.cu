// resample.cu: the two resolution changes of progressive growing (ProGAN section 3, A.1).
//
//   upsample2x_nearest  y[p, 2i + a, 2j + b] = gain x[p, i, j]         a, b in {0, 1}
//                       (G's blocks begin with it; the fade-in upsamples the old toRGB output)
//   avgpool2x           y[p, i, j] = gain (x[p, 2i, 2j] + x[p, 2i, 2j + 1]
//                                          + x[p, 2i + 1, 2j] + x[p, 2i + 1, 2j + 1]) / 4
//                       (D's blocks end with it; the fade-in downsamples the image)
//
// x and y are stacks of `planes` = N * C images; h and w are x's height and width (even for
// avgpool2x). Each is the other's adjoint up to the gain: the transpose of upsample2x with gain
// g sums each 2x2 block times g, which is avgpool2x with gain 4g; so each is the other's
// gradient.
//
// Threads: a grid-stride loop over the *output* elements, one per thread per step, so every
// output is written exactly once by one thread (no atomics), stores are coalesced, and the
// reads of neighbouring threads fall on the same or adjacent input rows. Launch: BlockSize
// threads, blocks to fill the device.
#include "common.cuh"

extern "C" __global__ void upsample2x_nearest(const float* x, float* y, int planes, int h, int w, float gain)
{
    const int w2 = 2 * w, h2 = 2 * h;
    const long long n = (long long)planes * h2 * w2;
    for (long long o = grid_start(); o < n; o += grid_stride())
    {
        const int ox = (int)(o % w2);
        const long long t = o / w2;
        const int oy = (int)(t % h2);
        const long long plane = t / h2;
        y[o] = gain * x[(plane * h + oy / 2) * w + ox / 2];
    }
}

extern "C" __global__ void avgpool2x(const float* x, float* y, int planes, int h, int w, float gain)
{
    const int ho = h / 2, wo = w / 2;
    const float g = 0.25f * gain;
    const long long n = (long long)planes * ho * wo;
    for (long long o = grid_start(); o < n; o += grid_stride())
    {
        const int ox = (int)(o % wo);
        const long long t = o / wo;
        const int oy = (int)(t % ho);
        const long long plane = t / ho;
        const float* src = x + (plane * h + 2 * oy) * w + 2 * ox;
        y[o] = g * (src[0] + src[1] + src[w] + src[w + 1]);
    }
}
