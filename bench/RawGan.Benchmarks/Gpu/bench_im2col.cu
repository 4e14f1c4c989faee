// bench_im2col.cu: im2col on the GPU, for the kernel lab's "im2col + cuBLAS" convolution (not part
// of the engine: kernels/conv.cu never builds the im2col matrix).
//
//   col[s, (c k + a) k + b, i w + j] = x[s, c, i + a - k/2, j + b - k/2]   (0 outside the image)
//
// One thread per element of col, grid-stride: the whole batch in one launch, each sample's
// [Cin k k, H W] matrix contiguous, so a strided-batched GEMM multiplies them all.
extern "C" __global__ void bench_im2col(const float* __restrict__ x, float* __restrict__ col,
                                        int n, int cin, int h, int w, int k)
{
    const long long total = (long long)n * cin * k * k * h * w;
    const int pad = k / 2;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += (long long)gridDim.x * blockDim.x)
    {
        const int j = (int)(e % w);
        long long t = e / w;
        const int i = (int)(t % h);
        t /= h;
        const int tap = (int)(t % (k * k));
        t /= k * k;
        const int c = (int)(t % cin);
        const int s = (int)(t / cin);
        const int y = i + tap / k - pad, xx = j + tap % k - pad;
        col[e] = (y >= 0 && y < h && xx >= 0 && xx < w) ? x[(((long long)s * cin + c) * h + y) * w + xx] : 0.0f;
    }
}

