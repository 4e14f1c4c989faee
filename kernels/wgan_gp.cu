// wgan_gp.cu: the gradient penalty of WGAN-GP (Gulrajani et al. 2017), as ProGAN uses it
// (section A.1: lambda = 10, target 1).
//
//   gradient_penalty_forward   norm[s] = ||g[s]||_2,  penalty[s] = (norm[s] - target)^2
//   gradient_penalty_backward  gg[s, i] = gpenalty[s] 2 (norm[s] - target) g[s, i] / norm[s]
//
// g is the gradient of D's output with respect to the interpolated images x_hat, [samples,
// inner] with inner = C H W: the norm is per sample over all of its pixels and channels. At
// g = 0 the norm has no gradient; the subgradient 0 is used.
//
// Threads (forward): one block per sample (a loop over samples by block; the host launches one
// block per sample, BlockSize threads). The block's threads stride over the sample's inner
// values (coalesced), each summing squares in double; a shared-memory tree (block_sum in
// common.cuh) adds the partial sums and thread 0 writes the sample's two outputs.
//
// Threads (backward): elementwise, a grid-stride loop over samples * inner; each thread reads
// its sample's norm and incoming gradient (cached: every thread of a sample reads the same two).
// Launch: BlockSize threads, blocks to fill the device.
#include "common.cuh"

extern "C" __global__ void gradient_penalty_forward(const float* g, float* norm, float* penalty, int samples, int inner, float target)
{
    __shared__ double scratch[MAX_BLOCK];
    for (int s = blockIdx.x; s < samples; s += gridDim.x)
    {
        const float* gs = g + (long long)s * inner;
        double partial = 0.0;
        for (int i = threadIdx.x; i < inner; i += blockDim.x)
        {
            const double v = gs[i];
            partial += v * v;
        }
        const double nrm = sqrt(block_sum(partial, scratch));
        if (threadIdx.x == 0)
        {
            norm[s] = (float)nrm;
            penalty[s] = (float)((nrm - target) * (nrm - target));
        }
    }
}

extern "C" __global__ void gradient_penalty_backward(const float* g, const float* norm, const float* gpenalty, float* gg,
                                                     int samples, int inner, float target)
{
    const long long n = (long long)samples * inner;
    for (long long i = grid_start(); i < n; i += grid_stride())
    {
        const long long s = i / inner;
        const float nrm = norm[s];
        gg[i] = nrm > 0.0f ? gpenalty[s] * 2.0f * (nrm - target) * g[i] / nrm : 0.0f;
    }
}
