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
// in stages of 8 through a three-stage cp.async pipeline. The operands below are conv.cu's with
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

// n / d and n % d for 0 <= n < 2^31 and a divisor d >= 1 fixed for the launch, by a multiply-high
// and a shift (Granlund and Montgomery, "Division by invariant integers using multiplication",
// 1994; CUTLASS's FastDivmod): with l = ceil(log2 d) and m = ceil(2^(31 + l) / d), which fits in
// 32 bits, n / d = (n m) >> (31 + l) for every such n. The constructor's 64-bit division runs
// once per thread; d = 1 is its own case (m would need 33 bits).
struct fast_divmod
{
    int d;
    unsigned mul, shift;

    __device__ __forceinline__ explicit fast_divmod(int divisor) : d(divisor), mul(0), shift(0)
    {
        if (d == 1) return;
        unsigned l = 0;
        while ((1u << l) < (unsigned)d) l++;
        mul = (unsigned)(((1ull << (31 + l)) + (unsigned)d - 1) / (unsigned)d);
        shift = l - 1;   // (31 + l) - 32: the multiply-high already dropped 32 bits
    }

    __device__ __forceinline__ int div(int n) const
    {
        if (d == 1) return n;
        return (int)((unsigned)(((unsigned long long)(unsigned)n * mul) >> 32) >> shift);
    }
};

// One pixel of an image stack: the sample's first channel and the pixel's row and column.
struct conv_pixel_tf32
{
    const float* sample;
    int y, x;
};

// The k x k window around each pixel of t [n, channels, h, w], as conv.cu's conv_window_operand:
//   sign +1: t[s, c, i + a - p, j + b - p]   (x, for the forward pass and the weight gradient)
//   sign -1: t[s, c, i - a + p, j - b + p]   (gy, for the input gradient: the flipped kernel)
// fixed() takes the flat pixel index (s, i, j), address() the flat window index (c, a, b). The
// pixels run along C's columns (KF false: forward, input gradient) or along K (KF true: the
// weight gradient).
template <bool KF>
struct conv_window_tf32
{
    static constexpr bool k_fastest = KF;
    typedef conv_pixel_tf32 fixed_t;
    const float* t;
    int h, w, k, sign;
    long long sampleStride;                  // channels * h * w
    fast_divmod byPlane, byWidth, byWindow, byK;

    __device__ __forceinline__ conv_window_tf32(const float* tensor, int channels, int height, int width, int kernel, int s)
        : t(tensor), h(height), w(width), k(kernel), sign(s), sampleStride((long long)channels * height * width),
          byPlane(height * width), byWidth(width), byWindow(kernel * kernel), byK(kernel) {}

    __device__ __forceinline__ conv_pixel_tf32 fixed(int pixel) const
    {
        const int s = byPlane.div(pixel), p = pixel - s * byPlane.d;
        const int y = byWidth.div(p);
        conv_pixel_tf32 px = {t + s * sampleStride, y, p - y * w};
        return px;
    }

    __device__ __forceinline__ const float* address(const conv_pixel_tf32& px, int window) const
    {
        const int c = byWindow.div(window), ab = window - c * byWindow.d;
        const int a = byK.div(ab), b = ab - a * k, pad = k / 2;
        const int iy = px.y + sign * (a - pad), ix = px.x + sign * (b - pad);
        if (iy < 0 || iy >= h || ix < 0 || ix >= w) return nullptr;
        return px.sample + (long long)c * byPlane.d + iy * w + ix;
    }
};

// The epilogue of a layer, as conv.cu's conv_epilogue: the bias of output channel o and leaky
// ReLU (b null: neither).
__device__ __forceinline__ float conv_epilogue_tf32(float v, const float* __restrict__ b, int o, float slope)
{
    if (b == nullptr) return v;
    const float z = v + b[o];
    return z > 0.0f ? z : slope * z;
}

extern "C" __global__ void __launch_bounds__(MMA_MAX_THREADS, MMA_MIN_BLOCKS) conv2d_forward_tf32(
    const float* __restrict__ x, const float* __restrict__ w, float* __restrict__ y,
    int n, int cin, int h, int wd, int cout, int k, float scale, const float* __restrict__ b, float slope)
{
    const int K = cin * k * k, columns = n * h * wd, plane = h * wd;
    // A[o, q] = w[q + o K]: w is already the [Cout, Cin k k] matrix.
    const matrix_operand<true> A = {w, K};
    const conv_window_tf32<false> B(x, cin, h, wd, k, +1);
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
                    if (o < cout) y[((long long)s * cout + o) * plane + pix] = conv_epilogue_tf32(scale * acc[mi][ni][2 * half + e], b, o, slope);
                }
        }
}

// w [Cout, Cin, k, k] read as A[c, (o, a, b)] = w[o, c, a, b] (conv.cu's
// conv_weight_by_input_channel): the fixed part is the window position (o, a, b), the address
// steps through c, k * k floats apart.
struct conv_weight_by_input_channel_tf32
{
    static constexpr bool k_fastest = true;
    typedef const float* fixed_t;
    const float* w;
    int cin;
    fast_divmod byWindow;   // k * k

    __device__ __forceinline__ conv_weight_by_input_channel_tf32(const float* weights, int channels, int kernel)
        : w(weights), cin(channels), byWindow(kernel * kernel) {}

    __device__ __forceinline__ const float* fixed(int q) const
    {
        const int o = byWindow.div(q);
        return w + (long long)o * cin * byWindow.d + (q - o * byWindow.d);
    }
    __device__ __forceinline__ const float* address(const float* f, int c) const { return f + (long long)c * byWindow.d; }
};

extern "C" __global__ void __launch_bounds__(MMA_MAX_THREADS, MMA_MIN_BLOCKS) conv2d_backward_input_tf32(
    const float* __restrict__ gy, const float* __restrict__ w, float* __restrict__ gx,
    int n, int cin, int h, int wd, int cout, int k, float scale)
{
    const int K = cout * k * k, columns = n * h * wd, plane = h * wd;
    const conv_weight_by_input_channel_tf32 A(w, cin, k);
    const conv_window_tf32<false> B(gy, cout, h, wd, k, -1);
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

// gy [N, Cout, H, W] read as A[o, (s, i, j)] (conv.cu's conv_output_by_pixel): the fixed part
// is the pixel, the address steps through o, one plane apart.
struct conv_output_by_pixel_tf32
{
    static constexpr bool k_fastest = true;
    typedef const float* fixed_t;
    const float* gy;
    int cout;
    fast_divmod byPlane;

    __device__ __forceinline__ conv_output_by_pixel_tf32(const float* g, int channels, int plane) : gy(g), cout(channels), byPlane(plane) {}

    __device__ __forceinline__ const float* fixed(int r) const
    {
        const int s = byPlane.div(r);
        return gy + (long long)s * cout * byPlane.d + (r - s * byPlane.d);
    }
    __device__ __forceinline__ const float* address(const float* f, int o) const { return f + (long long)o * byPlane.d; }
};

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
    const conv_output_by_pixel_tf32 A(gy, cout, h * wd);
    const conv_window_tf32<true> B(x, cin, h, wd, k, +1);
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
