// conv.cu: 2-D convolution with stride 1 and zero "same" padding (k / 2, k odd), and its two
// gradients. x is [N, Cin, H, W], w is [Cout, Cin, k, k], y is [N, Cout, H, W]; p = k / 2.
//
//   conv2d_forward         y[s, o, i, j]  = scale sum_{c, a, b} w[o, c, a, b] x[s, c, i + a - p, j + b - p]
//   conv2d_backward_input  gx[s, c, i, j] = scale sum_{o, a, b} w[o, c, a, b] gy[s, o, i - a + p, j - b + p]
//   conv2d_backward_weight gw[o, c, a, b] = scale sum_{s, i, j} gy[s, o, i, j] x[s, c, i + a - p, j + b - p]
//
// (x outside the image reads as 0.) With a bias b [Cout] (b not null), conv2d_forward also ends a
// layer: its output store adds the bias and applies leaky ReLU, as bias_leaky_relu (bias.cu)
// would in one more pass over y,
//
//   z = y[s, o, i, j] + b[o],  y[s, o, i, j] = z if z > 0 else slope z      (slope 1: the bias alone)
//
// so the activations are written once, already activated, instead of written, read and written
// again. (The backward needs nothing more: bias_leaky_relu_backward reads its mask from this y.)
// `scale` is ProGAN's equalized learning rate (section 4.1):
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
// the start of ProGAN's training) still give the device enough tiles. The "x, shifted" and "gy,
// shifted" operands are one object, conv_window_operand: its fixed() part turns a flat pixel
// index (s, i, j) into a sample pointer and a row and column, once per thread and K step; its
// load() part turns a window index (c, a, b) into a channel and an offset and returns 0 for a
// pixel outside the image: the zero padding costs a comparison, not memory.
//
// Threads and launch: as sgemm (see gemm_tile.cuh): a 2-D block from the host's BlockSize, each
// thread 4 x 4 outputs of a (4 blockDim.y) x (4 blockDim.x) tile, grid (ceil(columns / (4
// blockDim.x)), ceil(rows / (4 blockDim.y))), gemm_tile_shared_bytes of dynamic shared memory.
// The weight gradient may also split its long reduction over gridDim.z (see there).
#include "common.cuh"
#include "gemm_tile.cuh"

// One pixel of an image stack: the sample's first channel and the pixel's row and column.
struct conv_pixel
{
    const float* sample;
    int y, x;
};

// The k x k window around each pixel of t [n, channels, h, w], as a matrix indexed by a pixel
// (s, i, j) on one side and a window position (c, a, b) on the other:
//   sign +1: t[s, c, i + a - p, j + b - p]   (the input seen by the forward pass and the weight gradient)
//   sign -1: t[s, c, i - a + p, j - b + p]   (the output gradient seen by the input gradient: the flipped kernel)
// fixed() takes the flat pixel index, load() the flat window index.
struct conv_window_operand
{
    const float* t;
    int channels, h, w, k, sign;
    bool k_fastest;   // true when the pixels run along K (the weight gradient), false when along the columns

    __device__ __forceinline__ conv_pixel fixed(int pixel) const
    {
        const int plane = h * w;
        const int s = pixel / plane, p = pixel % plane;
        conv_pixel px = {t + (long long)s * channels * plane, p / w, p % w};
        return px;
    }

    __device__ __forceinline__ float load(const conv_pixel& px, int window) const
    {
        const int kk = k * k, pad = k / 2;
        const int c = window / kk, a = window % kk / k, b = window % k;
        const int iy = px.y + sign * (a - pad), ix = px.x + sign * (b - pad);
        if (iy < 0 || iy >= h || ix < 0 || ix >= w) return 0.0f;
        return px.sample[(long long)c * h * w + iy * w + ix];
    }
};

// The epilogue of a layer: the bias of output channel o and leaky ReLU (b null: neither).
__device__ __forceinline__ float conv_epilogue(float v, const float* __restrict__ b, int o, float slope)
{
    if (b == nullptr) return v;
    const float z = v + b[o];
    return z > 0.0f ? z : slope * z;
}

extern "C" __global__ void __launch_bounds__(GEMM_MAX_THREADS, 1) conv2d_forward(
    const float* __restrict__ x, const float* __restrict__ w, float* __restrict__ y,
    int n, int cin, int h, int wd, int cout, int k, float scale, const float* __restrict__ b, float slope)
{
    const int K = cin * k * k, columns = n * h * wd, plane = h * wd;
    // A[o, q] = w[q + o K]: w is already the [Cout, Cin k k] matrix.
    const strided_operand A = {w, K, true};
    const conv_window_operand B = {x, cin, h, wd, k, +1, false};
    float acc[GEMM_TM][GEMM_TN];
    gemm_tile(cout, columns, K, A, B, acc);

    for (int i = 0; i < GEMM_TM; i++)
    {
        const int o = gemm_tile_row(i);
        if (o >= cout) continue;
        for (int j = 0; j < GEMM_TN; j++)
        {
            const int col = gemm_tile_col(j);
            if (col >= columns) continue;
            const int s = col / plane, pix = col % plane;
            y[((long long)s * cout + o) * plane + pix] = conv_epilogue(scale * acc[i][j], b, o, slope);
        }
    }
}

// The generator's layer whole: conv2d_forward with its epilogue, then pixel norm (pixelnorm.cu)
// over each pixel's Cout outputs, in the output store:
//
//   v[o] = conv_epilogue(scale conv(x, w)[o]),   r = 1 / sqrt(sum_o v[o]^2 / Cout + eps)
//   z[s, o, i, j] = v[o] r,   inv[s, i, j] = r   (kept for pixelnorm_leaky_relu_backward)
//
// instead of writing v, then reading it twice and writing it again in a pass of its own. It
// needs a pixel's Cout values in one block: the host launches it only when the block's rows
// cover them (Cout <= 4 blockDim.y, one block along y), conv2d_forward and pixelnorm_forward
// otherwise. Thread (tx, ty) holds rows ty + i blockDim.y of columns tx + j blockDim.x; the
// block adds its blockDim.y partial sums of squares per column in shared memory, which
// gemm_tile_range has finished with (it ends on a barrier): blockDim.y x 4 blockDim.x floats,
// within the launch's gemm_tile_shared_bytes for every block of up to 1024 threads.
extern "C" __global__ void __launch_bounds__(GEMM_MAX_THREADS, 1) conv2d_forward_pixelnorm(
    const float* __restrict__ x, const float* __restrict__ w, float* __restrict__ z, float* __restrict__ inv,
    int n, int cin, int h, int wd, int cout, int k, float scale, const float* __restrict__ b, float slope, float eps)
{
    const int K = cin * k * k, columns = n * h * wd, plane = h * wd;
    const strided_operand A = {w, K, true};
    const conv_window_operand B = {x, cin, h, wd, k, +1, false};
    float acc[GEMM_TM][GEMM_TN];
    gemm_tile(cout, columns, K, A, B, acc);

    DYNAMIC_SHARED(float, red);   // red[ty * BN + c]: row ty's part of column c's sum of squares
    const int BN = GEMM_TN * (int)blockDim.x;
    for (int j = 0; j < GEMM_TN; j++)
    {
        float ss = 0.0f;
        for (int i = 0; i < GEMM_TM; i++)
        {
            const int o = gemm_tile_row(i);
            acc[i][j] = o < cout ? conv_epilogue(scale * acc[i][j], b, o, slope) : 0.0f;
            ss += acc[i][j] * acc[i][j];
        }
        red[threadIdx.y * BN + threadIdx.x + j * blockDim.x] = ss;
    }
    __syncthreads();

    for (int j = 0; j < GEMM_TN; j++)
    {
        const int col = gemm_tile_col(j);
        if (col >= columns) continue;
        float sum = 0.0f;
        for (int ty = 0; ty < (int)blockDim.y; ty++) sum += red[ty * BN + threadIdx.x + j * blockDim.x];
        const float r = 1.0f / sqrtf(sum / (float)cout + eps);
        if (threadIdx.y == 0) inv[col] = r;
        const int s = col / plane, pix = col % plane;
        for (int i = 0; i < GEMM_TM; i++)
        {
            const int o = gemm_tile_row(i);
            if (o < cout) z[((long long)s * cout + o) * plane + pix] = acc[i][j] * r;
        }
    }
}

// w [Cout, Cin, k, k] read as A[c, (o, a, b)] = w[o, c, a, b]: the channel axes swapped. The
// fixed part is the window position (o, a, b), the rest steps through c, k * k floats apart.
struct conv_weight_by_input_channel
{
    const float* w;
    int cin, k;
    bool k_fastest;
    __device__ __forceinline__ const float* fixed(int q) const
    {
        const int kk = k * k;
        return w + (long long)(q / kk) * cin * kk + q % kk;
    }
    __device__ __forceinline__ float load(const float* f, int c) const { return f[(long long)c * k * k]; }
};

extern "C" __global__ void __launch_bounds__(GEMM_MAX_THREADS, 1) conv2d_backward_input(
    const float* __restrict__ gy, const float* __restrict__ w, float* __restrict__ gx,
    int n, int cin, int h, int wd, int cout, int k, float scale)
{
    const int K = cout * k * k, columns = n * h * wd, plane = h * wd;
    const conv_weight_by_input_channel A = {w, cin, k, true};
    const conv_window_operand B = {gy, cout, h, wd, k, -1, false};
    float acc[GEMM_TM][GEMM_TN];
    gemm_tile(cin, columns, K, A, B, acc);

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

// gy [N, Cout, H, W] read as A[o, (s, i, j)]: the fixed part is the pixel, the rest steps
// through o, one plane apart.
struct conv_output_by_pixel
{
    const float* gy;
    int cout, plane;
    bool k_fastest;
    __device__ __forceinline__ const float* fixed(int r) const { return gy + (long long)(r / plane) * cout * plane + r % plane; }
    __device__ __forceinline__ float load(const float* f, int o) const { return f[(long long)o * plane]; }
};

// Split K. The weight gradient's reduction runs over every pixel of the batch (16 * 128 * 128 =
// 262144 terms at 128x128), while its output, Cout x Cin k k, can be small (toRGB, fromRGB, the
// 64-channel layers at high resolution): a handful of tiles, each with a very long loop, would
// leave most of the device idle. So the host may launch gridDim.z > 1 blocks per tile: block z
// sums its own contiguous slice of the pixels and writes its partial sum to gw + z Cout Cin k k
// (gw then holds gridDim.z partial gradients), and the host adds the slices with sum_to, in a
// fixed order, so the result does not depend on scheduling. With gridDim.z = 1 this kernel
// writes the gradient itself.
extern "C" __global__ void __launch_bounds__(GEMM_MAX_THREADS, 1) conv2d_backward_weight(
    const float* __restrict__ x, const float* __restrict__ gy, float* __restrict__ gw,
    int n, int cin, int h, int wd, int cout, int k, float scale)
{
    const int columns = cin * k * k, K = n * h * wd;
    const int slice = ((K + gridDim.z - 1) / gridDim.z + GEMM_BK - 1) / GEMM_BK * GEMM_BK;   // whole K steps
    const int kBegin = blockIdx.z * slice;
    const int kEnd = kBegin + slice < K ? kBegin + slice : K;
    const conv_output_by_pixel A = {gy, cout, h * wd, true};
    const conv_window_operand B = {x, cin, h, wd, k, +1, true};
    float acc[GEMM_TM][GEMM_TN];
    gemm_tile_range(cout, columns, kBegin, kEnd, A, B, acc);

    float* out = gw + (long long)blockIdx.z * cout * columns;
    for (int i = 0; i < GEMM_TM; i++)
    {
        const int o = gemm_tile_row(i);
        if (o >= cout) continue;
        for (int j = 0; j < GEMM_TN; j++)
        {
            const int q = gemm_tile_col(j);
            if (q >= columns) continue;
            out[(long long)o * columns + q] = scale * acc[i][j];
        }
    }
}
