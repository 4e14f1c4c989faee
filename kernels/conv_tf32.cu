// conv_tf32.cu: version 2 of conv.cu on tensor cores: the same three products of a 2-D
// convolution with stride 1 and zero "same" padding (k odd, p = k / 2), x [N, Cin, H, W],
// w [Cout, Cin, k, k], y [N, Cout, H, W]:
//
//   conv2d_forward_tf32         y[s, o, i, j]  = scale sum_{c, a, b} w[o, c, a, b] x[s, c, i + a - p, j + b - p]
//   conv2d_backward_input_tf32  gx[s, c, i, j] = scale sum_{o, a, b} w[o, c, a, b] gy[s, o, i - a + p, j - b + p]
//   conv2d_backward_weight_tf32 gw[o, c, a, b] = scale sum_{s, i, j} gy[s, o, i, j] x[s, c, i + a - p, j + b - p]
//
// with the factors rounded to tf32 (10 mantissa bits) and the sums in fp32 (mma_tile.cuh says
// what error that brings). `scale` is the equalized learning rate, applied to the finished sum
// as in conv.cu, and conv2d_forward_tf32 takes conv.cu's epilogue too: with a bias b (not
// null), z = y + b[o] and y = z if z > 0 else slope z, in the output store.
//
// Each is the implicit GEMM of conv.cu, with the same operands (C rows, C columns, reduction K):
//
//   kernel                       C rows      C columns    K            A[row, k]    B[k, col]
//   conv2d_forward_tf32          o < Cout    (s, i, j)    (c, a, b)    w            x, shifted
//   conv2d_backward_input_tf32   c < Cin     (s, i, j)    (o, a, b)    w, flipped   gy, shifted
//   conv2d_backward_weight_tf32  o < Cout    (c, a, b)    (s, i, j)    gy           x, shifted
//
// computed by mma_tile.cuh: a block of (32, WM, WN) threads owns a (32 WM) x (32 WN) tile of C,
// each warp a 32 x 32 part as 2 x 4 mma.sync.m16n8k8 fragments, each thread 32 outputs; K runs
// in stages of 8 through a three-stage cp.async pipeline. The operands (operands.cuh) are conv.cu's with
// two changes: they return an element's address (null for the zero padding), since the element
// goes to shared memory by cp.async, and the divisions that turn a flat index into (sample, row,
// column) or (channel, a, b) are by constants of the launch, so each is done as a multiply-high
// and a shift (fast_divmod) instead of a division: integer division is some twenty instructions
// on a GPU, and the gathered operands do two per element (the window position) and two per pixel.
//
// Launch: as sgemm_tf32 (grid (ceil(columns / (32 WN)), ceil(rows / (32 WM)), splits),
// mma_tile_shared_bytes(WM, WN) bytes of dynamic shared memory). The weight gradient may split
// its reduction over gridDim.z as conv.cu's does. The host launches these only on sm_80 and newer.
#include "common.cuh"
#include "mma_tile.cuh"
#include "operands.cuh"

extern "C" __global__ void __launch_bounds__(MMA_MAX_THREADS, MMA_MIN_BLOCKS) conv2d_forward_tf32(
    const float* __restrict__ x, const float* __restrict__ w, float* __restrict__ y,
    int n, int cin, int h, int wd, int cout, int k, float scale, const float* __restrict__ b, float slope)
{
    const int K = cin * k * k, columns = n * h * wd, plane = h * wd;
    // A[o, q] = w[q + o K]: w is already the [Cout, Cin k k] matrix.
    const matrix_operand<true> A = {w, K};
    const window_gather<false> B(x, cin, h, wd, k, +1);
    float acc[MMA_MI][MMA_NI][4];
    mma_tile_range(cout, columns, 0, K, A, B, acc);

    for (int ni = 0; ni < MMA_NI; ni++)
        for (int e = 0; e < 2; e++)
        {
            const int col = mma_col(ni, e);
            if (col >= columns) continue;
            const int s = col / plane, pix = col % plane;
            for (int mi = 0; mi < MMA_MI; mi++)
                for (int half = 0; half < 2; half++)
                {
                    const int o = mma_row(mi, half);
                    if (o < cout) y[((long long)s * cout + o) * plane + pix] = layer_epilogue(scale * acc[mi][ni][2 * half + e], b, o, slope);
                }
        }
}

// The generator's layer whole: the forward product, its bias and leaky ReLU, then pixel norm
// (pixelnorm.cu) over the output channels of each pixel, in the output store:
//
//   v[o] = layer_epilogue(scale conv(x, w)[o])     for o < Cout, at one pixel (s, i, j)
//   r    = 1 / sqrt(sum_o v[o]^2 / Cout + eps)     inv[s, i, j] = r, kept for the backward
//   z[s, o, i, j] = v[o] r
//
// A pixel's Cout values must all be in one block, so the host launches this only when the block's
// rows cover the output channels (Cout <= 32 blockDim.y, one block along y: the paper preset's
// 128- and 64-channel layers at 128x128 and 256x256, where the activations are largest, and every
// layer of the small presets). Elsewhere it runs conv2d_forward_tf32 and pixelnorm_forward in place.
// What the fusion saves is a pass that reads the layer's output twice and writes it again.
//
// The sum of squares of a column (a pixel) is spread over the block: within a warp over the eight
// lanes g = 0..7 that share t (each holding 4 of the warp's 32 rows: rows g, g + 8, g + 16, g + 24
// of fragments mi = 0, 1), added by shuffles over lane masks 4, 8 and 16; across the WM warps of a
// column of warps through shared memory, which the pipeline no longer needs once the last stage is
// multiplied (the barrier before the writes makes sure of that). Rows at or past Cout hold the
// epilogue of 0 (the bias), not an output, and count as 0.
extern "C" __global__ void __launch_bounds__(MMA_MAX_THREADS, MMA_MIN_BLOCKS) conv2d_forward_pixelnorm_tf32(
    const float* __restrict__ x, const float* __restrict__ w, float* __restrict__ z, float* __restrict__ inv,
    int n, int cin, int h, int wd, int cout, int k, float scale, const float* __restrict__ b, float slope, float eps)
{
    const int K = cin * k * k, columns = n * h * wd, plane = h * wd;
    const matrix_operand<true> A = {w, K};
    const window_gather<false> B(x, cin, h, wd, k, +1);
    float acc[MMA_MI][MMA_NI][4];
    mma_tile_range(cout, columns, 0, K, A, B, acc);

    // The layer's values and this thread's part of each of its 8 columns' sums of squares.
    float ss[MMA_NI][2];
    for (int ni = 0; ni < MMA_NI; ni++)
        for (int e = 0; e < 2; e++)
        {
            ss[ni][e] = 0.0f;
            for (int mi = 0; mi < MMA_MI; mi++)
                for (int half = 0; half < 2; half++)
                {
                    float& v = acc[mi][ni][2 * half + e];
                    v = mma_row(mi, half) < cout ? layer_epilogue(scale * v, b, mma_row(mi, half), slope) : 0.0f;
                    ss[ni][e] += v * v;
                }
            for (int mask = 4; mask < 32; mask *= 2) ss[ni][e] += __shfl_xor_sync(0xffffffffu, ss[ni][e], mask);
        }

    // Column sums of the WM warps: red[wm][c], c the column within the block's BN.
    DYNAMIC_SHARED(float, red);
    const int BN = 32 * (int)blockDim.z, g = (int)(threadIdx.x >> 2), t = (int)(threadIdx.x & 3u);
    __syncthreads();
    if (g == 0)
        for (int ni = 0; ni < MMA_NI; ni++)
            for (int e = 0; e < 2; e++) red[threadIdx.y * BN + 32 * threadIdx.z + 8 * ni + 2 * t + e] = ss[ni][e];
    __syncthreads();

    for (int ni = 0; ni < MMA_NI; ni++)
        for (int e = 0; e < 2; e++)
        {
            const int col = mma_col(ni, e);
            if (col >= columns) continue;
            float sum = 0.0f;
            for (int wm = 0; wm < (int)blockDim.y; wm++) sum += red[wm * BN + 32 * threadIdx.z + 8 * ni + 2 * t + e];
            const float r = 1.0f / sqrtf(sum / (float)cout + eps);
            if (threadIdx.y == 0 && g == 0) inv[col] = r;
            const int s = col / plane, pix = col % plane;
            for (int mi = 0; mi < MMA_MI; mi++)
                for (int half = 0; half < 2; half++)
                {
                    const int o = mma_row(mi, half);
                    if (o < cout) z[((long long)s * cout + o) * plane + pix] = acc[mi][ni][2 * half + e] * r;
                }
        }
}

extern "C" __global__ void __launch_bounds__(MMA_MAX_THREADS, MMA_MIN_BLOCKS) conv2d_backward_input_tf32(
    const float* __restrict__ gy, const float* __restrict__ w, float* __restrict__ gx,
    int n, int cin, int h, int wd, int cout, int k, float scale)
{
    const int K = cout * k * k, columns = n * h * wd, plane = h * wd;
    const weights_by_input_channel A(w, cin, k);
    const window_gather<false> B(gy, cout, h, wd, k, -1);
    float acc[MMA_MI][MMA_NI][4];
    mma_tile_range(cin, columns, 0, K, A, B, acc);

    for (int ni = 0; ni < MMA_NI; ni++)
        for (int e = 0; e < 2; e++)
        {
            const int col = mma_col(ni, e);
            if (col >= columns) continue;
            const int s = col / plane, pix = col % plane;
            for (int mi = 0; mi < MMA_MI; mi++)
                for (int half = 0; half < 2; half++)
                {
                    const int c = mma_row(mi, half);
                    if (c < cin) gx[((long long)s * cin + c) * plane + pix] = scale * acc[mi][ni][2 * half + e];
                }
        }
}

// Split K, as conv.cu's conv2d_backward_weight: block z sums its own contiguous slice of the
// pixels (whole stages of MMA_BK) and writes its partial gradient to gw + z Cout Cin k k; the
// host adds the gridDim.z slices with sum_to, in a fixed order. With gridDim.z = 1 this kernel
// writes the gradient itself.
extern "C" __global__ void __launch_bounds__(MMA_MAX_THREADS, MMA_MIN_BLOCKS) conv2d_backward_weight_tf32(
    const float* __restrict__ x, const float* __restrict__ gy, float* __restrict__ gw,
    int n, int cin, int h, int wd, int cout, int k, float scale)
{
    const int columns = cin * k * k, K = n * h * wd;
    const int slice = ((K + (int)gridDim.z - 1) / (int)gridDim.z + MMA_BK - 1) / MMA_BK * MMA_BK;
    const int kBegin = (int)blockIdx.z * slice;
    const int kEnd = kBegin + slice < K ? kBegin + slice : K;
    const output_by_pixel A(gy, cout, h * wd);
    const window_gather<true> B(x, cin, h, wd, k, +1);
    float acc[MMA_MI][MMA_NI][4];
    mma_tile_range(cout, columns, kBegin, kEnd, A, B, acc);

    float* out = gw + (long long)blockIdx.z * cout * columns;
    for (int mi = 0; mi < MMA_MI; mi++)
        for (int half = 0; half < 2; half++)
        {
            const int o = mma_row(mi, half);
            if (o >= cout) continue;
            for (int ni = 0; ni < MMA_NI; ni++)
                for (int e = 0; e < 2; e++)
                {
                    const int q = mma_col(ni, e);
                    if (q < columns) out[(long long)o * columns + q] = scale * acc[mi][ni][2 * half + e];
                }
        }
}
