// mbstd.cu: minibatch standard deviation (ProGAN section 3), once, at the input of the
// discriminator's 4x4 head.
//
// The batch of n samples is split into n / G groups of G, strided as in the official code:
// sample s belongs to group m = s % (n / G), whose members are m, m + n/G, m + 2 n/G, ...
// For each group m and each feature e of the c * plane features:
//   mean_e = (1 / G) sum_g x[g, e]
//   std_e  = sqrt((1 / G) sum_g (x[g, e] - mean_e)^2 + eps)        (population variance)
//   stat_m = (1 / (c plane)) sum_e std_e
// and every member of the group gets one more channel, filled with stat_m:
//
//   minibatch_stddev_forward   y[s, :c] = x[s];  y[s, c, :] = stat_{s % (n/G)}        y is [n, c + 1, plane]
//   minibatch_stddev_backward  gx[s, e] = gy[s, e] + (gstat_m / (G c plane)) (x[s, e] - mean_e) / std_e
//                              with gstat_m = sum over the group's members of gy[s, c, :]
//
// (d std_e / d x[g, e] = (x[g, e] - mean_e) / (G std_e): the mean's own derivative drops out
// because the deviations sum to zero.) eps sits inside the square root, so a group of one
// sample (a last batch of 1, G = 1) gives std = sqrt(eps) and a finite gradient, not NaN.
//
// Threads: one block per group (a loop over groups by block, so any grid works; the host
// launches n / G blocks of BlockSize threads). The block's threads stride over the features:
// thread t handles e = t, t + blockDim.x, ..., reading the G members of each feature
// (coalesced: neighbouring threads, neighbouring features). A shared-memory tree (block_sum in
// common.cuh) adds the per-thread sums of std_e (forward) or of the extra channel's gradient
// (backward); after its barrier every thread knows the group's value and writes its features.
// Sums are in double.
#include "common.cuh"

// mean_e and std_e of feature e of group m.
__device__ __forceinline__ void mbstd_moments(const float* x, long long feat, int groups, int groupSize, int m, long long e, float eps,
                                              double& mean, double& std)
{
    mean = 0.0;
    for (int g = 0; g < groupSize; g++) mean += x[((long long)g * groups + m) * feat + e];
    mean /= groupSize;
    double var = 0.0;
    for (int g = 0; g < groupSize; g++)
    {
        const double d = x[((long long)g * groups + m) * feat + e] - mean;
        var += d * d;
    }
    std = sqrt(var / groupSize + (double)eps);
}

extern "C" __global__ void minibatch_stddev_forward(const float* x, float* y, int n, int c, int plane, int groupSize, float eps)
{
    __shared__ double scratch[MAX_BLOCK];
    const int groups = n / groupSize;
    const long long feat = (long long)c * plane;
    for (int m = blockIdx.x; m < groups; m += gridDim.x)
    {
        double partial = 0.0;
        for (long long e = threadIdx.x; e < feat; e += blockDim.x)
        {
            double mean, std;
            mbstd_moments(x, feat, groups, groupSize, m, e, eps, mean, std);
            partial += std;
        }
        const float stat = (float)(block_sum(partial, scratch) / (double)feat);

        for (int g = 0; g < groupSize; g++)
        {
            const long long s = (long long)g * groups + m;
            const float* xs = x + s * feat;
            float* ys = y + s * (feat + plane);
            for (long long e = threadIdx.x; e < feat; e += blockDim.x) ys[e] = xs[e];
            for (long long p = threadIdx.x; p < plane; p += blockDim.x) ys[feat + p] = stat;
        }
    }
}

// __launch_bounds__(MAX_BLOCK): left to itself ptxas gives this kernel 66 to 78 registers, and
// 1024 threads of that exceed the 65536 registers a block may hold, so a 1024-thread launch
// would fail on a GPU (the emulator has no register file to run out of). Declared, it fits in 64.
extern "C" __global__ void __launch_bounds__(MAX_BLOCK) minibatch_stddev_backward(
    const float* x, const float* gy, float* gx, int n, int c, int plane, int groupSize, float eps)
{
    __shared__ double scratch[MAX_BLOCK];
    const int groups = n / groupSize;
    const long long feat = (long long)c * plane;
    for (int m = blockIdx.x; m < groups; m += gridDim.x)
    {
        // The gradient reaching stat_m: every pixel of the extra channel of every member.
        double partial = 0.0;
        for (long long i = threadIdx.x; i < (long long)groupSize * plane; i += blockDim.x)
        {
            const long long s = (long long)(i / plane) * groups + m;
            partial += gy[s * (feat + plane) + feat + i % plane];
        }
        const double coef = block_sum(partial, scratch) / ((double)groupSize * (double)feat);

        for (long long e = threadIdx.x; e < feat; e += blockDim.x)
        {
            double mean, std;
            mbstd_moments(x, feat, groups, groupSize, m, e, eps, mean, std);
            for (int g = 0; g < groupSize; g++)
            {
                const long long s = (long long)g * groups + m;
                gx[s * feat + e] = (float)(gy[s * (feat + plane) + e] + coef * (x[s * feat + e] - mean) / std);
            }
        }
    }
}
