// pixelnorm.cu: pixelwise feature vector normalization (ProGAN section 4.2).
//
//   pixelnorm_forward   y[s, c, p] = x[s, c, p] r[s, p],   r = 1 / sqrt(mean_c x[s, c, p]^2 + eps)
//                       (and inv[s, p] = r when inv is not null; y may be x)
//   pixelnorm_backward  gx = r (gy - y mean_c(gy y)) = r gy - r^3 x mean_c(gy x)
//   pixelnorm_leaky_relu_backward
//                       the generator's layer, z = pixelnorm(leaky_relu(a)), backward from its
//                       output z and the kept r alone: gy = r (gz - z mean_c(gz z)) (the line
//                       above, written with y = z), then ga = gy if z > 0 else slope gy (z has
//                       the sign of leaky_relu(a), which has the sign of a)
//
// Applied after every convolution of the generator (and to the latent), with eps = 1e-8: each
// pixel's feature vector is scaled to unit average square, which keeps the magnitudes in G from
// escalating (section 4.2). x is [n, c, plane], plane = H * W.
//
// The backward formula: y_c = x_c r with r = (sum_d x_d^2 / C + eps)^(-1/2), so
// dr / dx_c = -r^3 x_c / C and dy_c / dx_e = r [c = e] - r^3 x_c x_e / C. Contracting with gy:
// gx_e = r gy_e - r^3 x_e (sum_c gy_c x_c) / C.
//
// Threads: one thread per (sample, pixel), in a grid-stride loop over n * plane. The thread
// loops over the c channels of its pixel, which are plane floats apart, so at each channel step
// the threads of a warp read adjacent pixels (coalesced). No thread cooperates with another: no
// shared memory, no barriers. At ProGAN's 4x4 stage there are only n * 16 pixels, so few
// threads with long loops; at any larger stage the grid is full. Sums are in double (C may be
// 512). Launch: BlockSize threads, blocks to fill the device.
#include "common.cuh"

extern "C" __global__ void pixelnorm_forward(const float* x, float* y, int n, int c, int plane, float eps, float* inv)
{
    const long long pixels = (long long)n * plane;
    for (long long q = grid_start(); q < pixels; q += grid_stride())
    {
        const long long s = q / plane, p = q % plane;
        const float* xs = x + s * c * plane + p;
        float* ys = y + s * c * plane + p;
        double ss = 0.0;
        for (int ch = 0; ch < c; ch++)
        {
            const double v = xs[(long long)ch * plane];
            ss += v * v;
        }
        const float r = (float)(1.0 / sqrt(ss / c + (double)eps));
        if (inv) inv[q] = r;
        for (int ch = 0; ch < c; ch++) ys[(long long)ch * plane] = xs[(long long)ch * plane] * r;
    }
}

extern "C" __global__ void pixelnorm_backward(const float* x, const float* gy, float* gx,
                                              int n, int c, int plane, float eps)
{
    const long long pixels = (long long)n * plane;
    for (long long q = grid_start(); q < pixels; q += grid_stride())
    {
        const long long s = q / plane, p = q % plane;
        const long long o = s * c * plane + p;
        double ss = 0.0, dot = 0.0;
        for (int ch = 0; ch < c; ch++)
        {
            const double xv = x[o + (long long)ch * plane];
            ss += xv * xv;
            dot += gy[o + (long long)ch * plane] * xv;
        }
        const double r = 1.0 / sqrt(ss / c + (double)eps);
        const double k = r * r * r * dot / c;
        for (int ch = 0; ch < c; ch++)
        {
            const long long i = o + (long long)ch * plane;
            gx[i] = (float)(r * gy[i] - k * x[i]);
        }
    }
}

// The layer's input gradient before its bias: what pixelnorm_backward then bias_leaky_relu_backward
// give, in one pass that needs neither the layer's pre-norm values nor their squares (the r kept by
// the forward pass stands in for them). The bias gradient is then the sum of ga over samples and
// pixels (sum_to). ga may be gz. __launch_bounds__(MAX_BLOCK), as minibatch_stddev_backward's: on
// sm_75 ptxas gives it 66 registers unasked, which a block of 1024 threads could not have.
extern "C" __global__ void __launch_bounds__(MAX_BLOCK) pixelnorm_leaky_relu_backward(const float* z, const float* inv, const float* gz, float* ga,
                                                         int n, int c, int plane, float slope)
{
    const long long pixels = (long long)n * plane;
    for (long long q = grid_start(); q < pixels; q += grid_stride())
    {
        const long long s = q / plane, p = q % plane;
        const long long o = s * c * plane + p;
        double dot = 0.0;
        for (int ch = 0; ch < c; ch++) dot += (double)gz[o + (long long)ch * plane] * z[o + (long long)ch * plane];
        const float r = inv[q], m = (float)(dot / c);
        for (int ch = 0; ch < c; ch++)
        {
            const long long i = o + (long long)ch * plane;
            const float zi = z[i], g = r * (gz[i] - zi * m);
            ga[i] = zi > 0.0f ? g : slope * g;
        }
    }
}
