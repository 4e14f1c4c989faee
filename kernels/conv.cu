// conv.cu: 2-D convolution with stride 1 and zero "same" padding (k / 2, k odd), and its two
// gradients. x is [N, Cin, H, W], w is [Cout, Cin, k, k], y is [N, Cout, H, W]; p = k / 2.
//
//   conv2d_forward         y[s, o, i, j]  = scale sum_{c, a, b} w[o, c, a, b] x[s, c, i + a - p, j + b - p]
//   conv2d_backward_input  gx[s, c, i, j] = scale sum_{o, a, b} w[o, c, a, b] gy[s, o, i - a + p, j - b + p]
//   conv2d_backward_weight gw[o, c, a, b] = scale sum_{s, i, j} gy[s, o, i, j] x[s, c, i + a - p, j + b - p]
//
// (x outside the image reads as 0.) `scale` is ProGAN's equalized learning rate (section 4.1):
// weights are stored as N(0, 1) samples and multiplied by gain / sqrt(Cin k k) at every use.
// Here it multiplies the finished sum, scale (w . x) = (scale w) . x, inside the kernel: no
// scaled copy of w is ever made. The input gradient is the convolution with the kernel flipped
// and the channel axes swapped (a transposed convolution); the weight gradient correlates the
// output gradient with the input, summed over the batch, and is written, not accumulated.
//
// Each of the three is a matrix product whose operands are gathered on the fly from the tensors
// (an "implicit GEMM"; the im2col matrix of the CPU backend is never built), computed by the
// shared-memory tiling of gemm_tile.cuh:
//
//   kernel                  C rows      C columns        reduction K       A[row, k]   B[k, col]
//   conv2d_forward          o < Cout    (s, i, j)        (c, a, b)         w           x, shifted
//   conv2d_backward_input   c < Cin     (s, i, j)        (o, a, b)         w, flipped  gy, shifted
//   conv2d_backward_weight  o < Cout    (c, a, b)        (s, i, j)         gy          x, shifted
//
// Putting the batch into the columns makes one launch cover all samples, so small images (4x4 at
// the start of ProGAN's training) still give the device enough tiles. Each loader turns its flat
// index into coordinates with a few divisions and returns 0 for a pixel outside the image: the
// zero padding costs a comparison, not memory.
//
// Threads and launch: as sgemm (see gemm_tile.cuh): a 2-D block from the host's BlockSize, each
// thread 4 x 4 outputs of a (4 blockDim.y) x (4 blockDim.x) tile, grid (ceil(columns / (4
// blockDim.x)), ceil(rows / (4 blockDim.y))), gemm_tile_shared_bytes of dynamic shared memory.
#include "common.cuh"
#include "gemm_tile.cuh"

// The sizes every loader needs.
struct conv_shape
{
    int n, cin, h, w, cout, k;
    __device__ __forceinline__ int pad() const { return k / 2; }
    __device__ __forceinline__ int plane() const { return h * w; }
};

// w[o, c, a, b] as A[o, (c, a, b)]: contiguous along the reduction.
struct conv_forward_load_w
{
    const float* w;
    int K;
    bool k_fastest;
    __device__ __forceinline__ float operator()(int o, int q) const { return w[(long long)o * K + q]; }
};

// x[s, c, i + a - p, j + b - p] as B[(c, a, b), (s, i, j)].
struct conv_forward_load_x
{
    const float* x;
    conv_shape sh;
    bool k_fastest;
    __device__ __forceinline__ float operator()(int q, int col) const
    {
        const int kk = sh.k * sh.k;
        const int c = q / kk, a = q % kk / sh.k, b = q % sh.k;
        const int plane = sh.plane();
        const int s = col / plane, pix = col % plane;
        const int iy = pix / sh.w + a - sh.pad(), ix = pix % sh.w + b - sh.pad();
        if (iy < 0 || iy >= sh.h || ix < 0 || ix >= sh.w) return 0.0f;
        return x[((long long)s * sh.cin + c) * plane + iy * sh.w + ix];
    }
};

extern "C" __global__ void conv2d_forward(const float* __restrict__ x, const float* __restrict__ w, float* __restrict__ y,
                                          int n, int cin, int h, int wd, int cout, int k, float scale)
{
    const conv_shape sh = {n, cin, h, wd, cout, k};
    const int K = cin * k * k, columns = n * h * wd;
    const conv_forward_load_w loadA = {w, K, true};
    const conv_forward_load_x loadB = {x, sh, false};
    float acc[GEMM_TM][GEMM_TN];
    gemm_tile(cout, columns, K, loadA, loadB, acc);

    const int plane = h * wd;
    for (int i = 0; i < GEMM_TM; i++)
    {
        const int o = gemm_tile_row(i);
        if (o >= cout) continue;
        for (int j = 0; j < GEMM_TN; j++)
        {
            const int col = gemm_tile_col(j);
            if (col >= columns) continue;
            const int s = col / plane, pix = col % plane;
            y[((long long)s * cout + o) * plane + pix] = scale * acc[i][j];
        }
    }
}

// w[o, c, a, b] as A[c, (o, a, b)]: the channel axes swapped. Within one o the (a, b) run is
// contiguous, so k-fastest loading still reads runs of k * k adjacent floats.
struct conv_input_load_w
{
    const float* w;
    int cin, k;
    bool k_fastest;
    __device__ __forceinline__ float operator()(int c, int q) const
    {
        const int kk = k * k;
        const int o = q / kk, ab = q % kk;
        return w[((long long)o * cin + c) * kk + ab];
    }
};

// gy[s, o, i - a + p, j - b + p] as B[(o, a, b), (s, i, j)]: the kernel flipped.
struct conv_input_load_gy
{
    const float* gy;
    conv_shape sh;
    bool k_fastest;
    __device__ __forceinline__ float operator()(int q, int col) const
    {
        const int kk = sh.k * sh.k;
        const int o = q / kk, a = q % kk / sh.k, b = q % sh.k;
        const int plane = sh.plane();
        const int s = col / plane, pix = col % plane;
        const int oy = pix / sh.w - a + sh.pad(), ox = pix % sh.w - b + sh.pad();
        if (oy < 0 || oy >= sh.h || ox < 0 || ox >= sh.w) return 0.0f;
        return gy[((long long)s * sh.cout + o) * plane + oy * sh.w + ox];
    }
};

extern "C" __global__ void conv2d_backward_input(const float* __restrict__ gy, const float* __restrict__ w, float* __restrict__ gx,
                                                 int n, int cin, int h, int wd, int cout, int k, float scale)
{
    const conv_shape sh = {n, cin, h, wd, cout, k};
    const int K = cout * k * k, columns = n * h * wd;
    const conv_input_load_w loadA = {w, cin, k, true};
    const conv_input_load_gy loadB = {gy, sh, false};
    float acc[GEMM_TM][GEMM_TN];
    gemm_tile(cin, columns, K, loadA, loadB, acc);

    const int plane = h * wd;
    for (int i = 0; i < GEMM_TM; i++)
    {
        const int c = gemm_tile_row(i);
        if (c >= cin) continue;
        for (int j = 0; j < GEMM_TN; j++)
        {
            const int col = gemm_tile_col(j);
            if (col >= columns) continue;
            const int s = col / plane, pix = col % plane;
            gx[((long long)s * cin + c) * plane + pix] = scale * acc[i][j];
        }
    }
}

// gy[s, o, i, j] as A[o, (s, i, j)]: contiguous along the reduction within a sample.
struct conv_weight_load_gy
{
    const float* gy;
    int cout, plane;
    bool k_fastest;
    __device__ __forceinline__ float operator()(int o, int r) const
    {
        const int s = r / plane, pix = r % plane;
        return gy[((long long)s * cout + o) * plane + pix];
    }
};

// x[s, c, i + a - p, j + b - p] as B[(s, i, j), (c, a, b)]: contiguous along the reduction.
struct conv_weight_load_x
{
    const float* x;
    conv_shape sh;
    bool k_fastest;
    __device__ __forceinline__ float operator()(int r, int q) const
    {
        const int plane = sh.plane();
        const int s = r / plane, pix = r % plane;
        const int kk = sh.k * sh.k;
        const int c = q / kk, a = q % kk / sh.k, b = q % sh.k;
        const int iy = pix / sh.w + a - sh.pad(), ix = pix % sh.w + b - sh.pad();
        if (iy < 0 || iy >= sh.h || ix < 0 || ix >= sh.w) return 0.0f;
        return x[((long long)s * sh.cin + c) * plane + iy * sh.w + ix];
    }
};

extern "C" __global__ void conv2d_backward_weight(const float* __restrict__ x, const float* __restrict__ gy, float* __restrict__ gw,
                                                  int n, int cin, int h, int wd, int cout, int k, float scale)
{
    const conv_shape sh = {n, cin, h, wd, cout, k};
    const int columns = cin * k * k, K = n * h * wd;
    const conv_weight_load_gy loadA = {gy, cout, h * wd, true};
    const conv_weight_load_x loadB = {x, sh, true};
    float acc[GEMM_TM][GEMM_TN];
    gemm_tile(cout, columns, K, loadA, loadB, acc);

    for (int i = 0; i < GEMM_TM; i++)
    {
        const int o = gemm_tile_row(i);
        if (o >= cout) continue;
        for (int j = 0; j < GEMM_TN; j++)
        {
            const int q = gemm_tile_col(j);
            if (q >= columns) continue;
            gw[(long long)o * columns + q] = scale * acc[i][j];
        }
    }
}
