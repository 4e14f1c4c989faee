// operands.cuh: the operands of versions 2 and 3 of the tiled matrix product (mma_tile.cuh,
// wide_tile.cuh): objects that say where element (row or column, k) of A or B is, for a plain
// matrix and for the three gathered operands of an implicit-GEMM convolution (conv_tf32.cu,
// conv_wide.cu). Version 1 (gemm_tile.cuh, conv.cu) keeps its own simpler ones, which load the
// value and divide with `/`.
//
// Every operand says whether consecutive k are adjacent in memory (k_fastest), and splits the
// work of finding an element in two, as gemm_tile.cuh explains:
//   fixed_t fixed(int i)                         the part that depends on one index
//   const float* address(fixed_t f, int j)       the element's address, or null where it is 0
//                                                (a convolution's zero padding)
// where (i, j) = (k, l) when k_fastest, else (l, k), l the row of A or the column of B. A loader
// that keeps one l for a whole product calls fixed() once; one that keeps one k per stage calls
// it once per stage. Addresses rather than values, because version 2 copies the element to
// shared memory with cp.async, never through a register.
//
// The convolution operands divide by sizes fixed for a launch (the plane, the width, k * k, k):
// each division is a multiply-high and a shift (fast_divmod), not the twenty-odd instructions of
// an integer division on a GPU, and a gathered element needs two of them.
#pragma once
#include "common.cuh"

// A row-major matrix read at p[i + j * stride], i the index adjacent in memory: (i, j) = (k, l)
// when KF (k fastest), else (l, k). The four sgemm cases are each one of these (gemm_tf32.cu,
// gemm_wide.cu), and so is the forward convolution's weight matrix.
template <bool KF>
struct matrix_operand
{
    static constexpr bool k_fastest = KF;
    typedef const float* fixed_t;
    const float* p;
    long long stride;
    __device__ __forceinline__ const float* fixed(int i) const { return p + i; }
    __device__ __forceinline__ const float* address(const float* f, int j) const { return f + j * stride; }
};

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
struct gather_pixel
{
    const float* sample;
    int y, x;
};

// The k x k window around each pixel of t [n, channels, h, w], as conv.cu's conv_window_operand
// (the same index arithmetic):
//   sign +1: t[s, c, i + a - p, j + b - p]   (x, for the forward pass and the weight gradient)
//   sign -1: t[s, c, i - a + p, j - b + p]   (gy, for the input gradient: the flipped kernel)
// fixed() takes the flat pixel index (s, i, j), address() the flat window index (c, a, b). The
// pixels run along C's columns (KF false: forward, input gradient) or along K (KF true: the
// weight gradient).
template <bool KF>
struct window_gather
{
    static constexpr bool k_fastest = KF;
    typedef gather_pixel fixed_t;
    const float* t;
    int h, w, k, sign;
    long long sampleStride;                  // channels * h * w
    fast_divmod byPlane, byWidth, byWindow, byK;

    __device__ __forceinline__ window_gather(const float* tensor, int channels, int height, int width, int kernel, int s)
        : t(tensor), h(height), w(width), k(kernel), sign(s), sampleStride((long long)channels * height * width),
          byPlane(height * width), byWidth(width), byWindow(kernel * kernel), byK(kernel) {}

    __device__ __forceinline__ gather_pixel fixed(int pixel) const
    {
        const int s = byPlane.div(pixel), p = pixel - s * byPlane.d;
        const int y = byWidth.div(p);
        gather_pixel px = {t + s * sampleStride, y, p - y * w};
        return px;
    }

    __device__ __forceinline__ const float* address(const gather_pixel& px, int window) const
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
__device__ __forceinline__ float layer_epilogue(float v, const float* __restrict__ b, int o, float slope)
{
    if (b == nullptr) return v;
    const float z = v + b[o];
    return z > 0.0f ? z : slope * z;
}

// w [Cout, Cin, k, k] read as A[c, (o, a, b)] = w[o, c, a, b] (conv.cu's
// conv_weight_by_input_channel): the fixed part is the window position (o, a, b), the address
// steps through c, k * k floats apart.
struct weights_by_input_channel
{
    static constexpr bool k_fastest = true;
    typedef const float* fixed_t;
    const float* w;
    int cin;
    fast_divmod byWindow;   // k * k

    __device__ __forceinline__ weights_by_input_channel(const float* weights, int channels, int kernel)
        : w(weights), cin(channels), byWindow(kernel * kernel) {}

    __device__ __forceinline__ const float* fixed(int q) const
    {
        const int o = byWindow.div(q);
        return w + (long long)o * cin * byWindow.d + (q - o * byWindow.d);
    }
    __device__ __forceinline__ const float* address(const float* f, int c) const { return f + (long long)c * byWindow.d; }
};

// gy [N, Cout, H, W] read as A[o, (s, i, j)] (conv.cu's conv_output_by_pixel): the fixed part
// is the pixel, the address steps through o, one plane apart.
struct output_by_pixel
{
    static constexpr bool k_fastest = true;
    typedef const float* fixed_t;
    const float* gy;
    int cout;
    fast_divmod byPlane;

    __device__ __forceinline__ output_by_pixel(const float* g, int channels, int plane) : gy(g), cout(channels), byPlane(plane) {}

    __device__ __forceinline__ const float* fixed(int r) const
    {
        const int s = byPlane.div(r);
        return gy + (long long)s * cout * byPlane.d + (r - s * byPlane.d);
    }
    __device__ __forceinline__ const float* address(const float* f, int o) const { return f + (long long)o * byPlane.d; }
};
