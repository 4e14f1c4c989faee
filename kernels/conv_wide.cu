// conv_wide.cu: version 3 of conv.cu: the same three products of a 2-D convolution with stride 1
// and zero "same" padding (k odd, p = k / 2), x [N, Cin, H, W], w [Cout, Cin, k, k],
// y [N, Cout, H, W], with the same fp32 sums (each output's products added in the order of K):
//
//   conv2d_forward_wide         y[s, o, i, j]  = scale sum_{c, a, b} w[o, c, a, b] x[s, c, i + a - p, j + b - p]
//   conv2d_backward_input_wide  gx[s, c, i, j] = scale sum_{o, a, b} w[o, c, a, b] gy[s, o, i - a + p, j - b + p]
//   conv2d_backward_weight_wide gw[o, c, a, b] = scale sum_{s, i, j} gy[s, o, i, j] x[s, c, i + a - p, j + b - p]
//
// `scale` is the equalized learning rate, applied to the finished sum as in conv.cu, and the
// forward pass ends its layer in the output store as conv.cu's does: with a bias b (not null),
// z = y + b[o] and y = z if z > 0 else slope z.
//
// Each is conv.cu's implicit GEMM with the same operands, as conv_tf32.cu has them (operands.cuh:
// addresses, divisions by multiply-highs), computed by wide_tile.cuh: blocks of 256 threads,
// 128 x 128 tiles of C, 8 x 8 outputs per thread, the next stage's loads in flight during the
// arithmetic:
//
//   kernel                       C rows      C columns    K            A[row, k]    B[k, col]
//   conv2d_forward_wide          o < Cout    (s, i, j)    (c, a, b)    w            x, shifted
//   conv2d_backward_input_wide   c < Cin     (s, i, j)    (o, a, b)    w, flipped   gy, shifted
//   conv2d_backward_weight_wide  o < Cout    (c, a, b)    (s, i, j)    gy           x, shifted
//
// Launch: block 256, grid (ceil(columns / 128), ceil(rows / 128), splits), wide_tile_shared_bytes()
// of dynamic shared memory. The weight gradient may split its reduction over gridDim.z as
// conv.cu's does.
#include "common.cuh"
#include "wide_tile.cuh"
#include "operands.cuh"

// Stores this thread's outputs of a product whose rows are channels and whose columns are the
// pixels (s, i, j) of the batch into t [N, channels, H, W]: t[s, row, i, j] = scale acc, then,
// with a bias b (not null), the layer's epilogue (operands.cuh, layer_epilogue).
__device__ __forceinline__ void wide_store_image(float* __restrict__ t, int channels, int columns, int plane, float scale,
                                                 const float acc[WIDE_T][WIDE_T], const float* __restrict__ b, float slope)
{
    const fast_divmod byPlane(plane);
#pragma unroll
    for (int g = 0; g < WIDE_T; g += 4)
    {
        // A group of four consecutive columns (pixels) inside one sample's map: one 128-bit
        // store per row where aligned (wide_store4), else each pixel on its own.
        const int col = wide_col(g);
        if (col >= columns) continue;
        const int s = byPlane.div(col), pix = col - s * plane;
        if (pix + 3 < plane)
        {
#pragma unroll
            for (int i = 0; i < WIDE_T; i++)
            {
                const int row = wide_row(i);
                if (row >= channels) continue;
                wide_store4(t + ((long long)s * channels + row) * plane + pix, columns - col,
                            layer_epilogue(scale * acc[i][g], b, row, slope), layer_epilogue(scale * acc[i][g + 1], b, row, slope),
                            layer_epilogue(scale * acc[i][g + 2], b, row, slope), layer_epilogue(scale * acc[i][g + 3], b, row, slope));
            }
            continue;
        }
#pragma unroll
        for (int j = g; j < g + 4; j++)
        {
            const int cj = wide_col(j);
            if (cj >= columns) continue;
            const int sj = byPlane.div(cj), pj = cj - sj * plane;
#pragma unroll
            for (int i = 0; i < WIDE_T; i++)
            {
                const int row = wide_row(i);
                if (row < channels) t[((long long)sj * channels + row) * plane + pj] = layer_epilogue(scale * acc[i][j], b, row, slope);
            }
        }
    }
}

extern "C" __global__ void __launch_bounds__(WIDE_THREADS, WIDE_MIN_BLOCKS) conv2d_forward_wide(
    const float* __restrict__ x, const float* __restrict__ w, float* __restrict__ y,
    int n, int cin, int h, int wd, int cout, int k, float scale, const float* __restrict__ b, float slope)
{
    const int K = cin * k * k, columns = n * h * wd;
    // A[o, q] = w[q + o K]: w is already the [Cout, Cin k k] matrix.
    const matrix_operand<true> A = {w, K};
    const window_gather<false> B(x, cin, h, wd, k, +1);
    float acc[WIDE_T][WIDE_T];
    wide_tile_range(cout, columns, 0, K, A, B, acc);
    wide_store_image(y, cout, columns, h * wd, scale, acc, b, slope);
}

// The generator's layer whole (conv.cu's conv2d_forward_pixelnorm): the layer's values, then each
// pixel's pixel norm over the block's 128 rows, launched when they hold every output channel
// (Cout <= 128, one block along y). A thread's eight rows of a column are 64 (i >> 2) + 4 ty + (i & 3)
// with ty = threadIdx.x / 16: it adds their squares, the 16 threads sharing its columns add theirs
// through shared memory (red[ty * 128 + c], 8 KiB of the 16.5 the pipeline had, free once
// wide_tile_range has ended on its barrier), and every thread scales its own outputs by its
// columns' factors before the same 128-bit stores as conv2d_forward_wide.
extern "C" __global__ void __launch_bounds__(WIDE_THREADS, WIDE_MIN_BLOCKS) conv2d_forward_pixelnorm_wide(
    const float* __restrict__ x, const float* __restrict__ w, float* __restrict__ z, float* __restrict__ inv,
    int n, int cin, int h, int wd, int cout, int k, float scale, const float* __restrict__ b, float slope, float eps)
{
    const int K = cin * k * k, columns = n * h * wd;
    const matrix_operand<true> A = {w, K};
    const window_gather<false> B(x, cin, h, wd, k, +1);
    float acc[WIDE_T][WIDE_T];
    wide_tile_range(cout, columns, 0, K, A, B, acc);

    DYNAMIC_SHARED(float, red);
    const int ty = (int)(threadIdx.x / 16);
#pragma unroll
    for (int j = 0; j < WIDE_T; j++)
    {
        float ss = 0.0f;
#pragma unroll
        for (int i = 0; i < WIDE_T; i++)
        {
            const int row = wide_row(i);
            acc[i][j] = row < cout ? layer_epilogue(scale * acc[i][j], b, row, slope) : 0.0f;
            ss += acc[i][j] * acc[i][j];
        }
        red[ty * WIDE_TILE + wide_col(j) - (int)blockIdx.x * WIDE_TILE] = ss;
    }
    __syncthreads();
#pragma unroll
    for (int j = 0; j < WIDE_T; j++)
    {
        const int c = wide_col(j) - (int)blockIdx.x * WIDE_TILE;
        float sum = 0.0f;
        for (int t = 0; t < WIDE_TILE / WIDE_T; t++) sum += red[t * WIDE_TILE + c];
        const float r = 1.0f / sqrtf(sum / (float)cout + eps);
        if (ty == 0 && wide_col(j) < columns) inv[wide_col(j)] = r;
#pragma unroll
        for (int i = 0; i < WIDE_T; i++) acc[i][j] *= r;
    }
    wide_store_image(z, cout, columns, h * wd, 1.0f, acc, nullptr, 1.0f);
}

extern "C" __global__ void __launch_bounds__(WIDE_THREADS, WIDE_MIN_BLOCKS) conv2d_backward_input_wide(
    const float* __restrict__ gy, const float* __restrict__ w, float* __restrict__ gx,
    int n, int cin, int h, int wd, int cout, int k, float scale)
{
    const int K = cout * k * k, columns = n * h * wd;
    const weights_by_input_channel A(w, cin, k);
    const window_gather<false> B(gy, cout, h, wd, k, -1);
    float acc[WIDE_T][WIDE_T];
    wide_tile_range(cin, columns, 0, K, A, B, acc);
    wide_store_image(gx, cin, columns, h * wd, scale, acc, nullptr, 1.0f);
}

// Split K, as conv.cu's conv2d_backward_weight: block z sums its own contiguous slice of the
// pixels (whole stages of WIDE_BK) and writes its partial gradient to gw + z Cout Cin k k; the
// host adds the gridDim.z slices with sum_to, in a fixed order. With gridDim.z = 1 this kernel
// writes the gradient itself.
extern "C" __global__ void __launch_bounds__(WIDE_THREADS, WIDE_MIN_BLOCKS) conv2d_backward_weight_wide(
    const float* __restrict__ x, const float* __restrict__ gy, float* __restrict__ gw,
    int n, int cin, int h, int wd, int cout, int k, float scale)
{
    const int columns = cin * k * k, K = n * h * wd;
    const int slice = ((K + (int)gridDim.z - 1) / (int)gridDim.z + WIDE_BK - 1) / WIDE_BK * WIDE_BK;
    const int kBegin = (int)blockIdx.z * slice;
    const int kEnd = kBegin + slice < K ? kBegin + slice : K;
    const output_by_pixel A(gy, cout, h * wd);
    const window_gather<true> B(x, cin, h, wd, k, +1);
    float acc[WIDE_T][WIDE_T];
    wide_tile_range(cout, columns, kBegin, kEnd, A, B, acc);

    float* out = gw + (long long)blockIdx.z * cout * columns;
#pragma unroll
    for (int i = 0; i < WIDE_T; i++)
    {
        const int o = wide_row(i);
        if (o >= cout) continue;
#pragma unroll
        for (int g = 0; g < WIDE_T; g += 4)
        {
            const int q = wide_col(g);
            if (q < columns)
                wide_store4(out + (long long)o * columns + q, columns - q,
                            scale * acc[i][g], scale * acc[i][g + 1], scale * acc[i][g + 2], scale * acc[i][g + 3]);
        }
    }
}
