// channels.cu: moving channel ranges between tensors of [samples, channels, plane] layout.
//
//   copy_channels  dst[s, dstStart + c, :] = src[s, srcStart + c, :]   for c < count, s < samples
//
// One kernel serves concatenation along channels (each input copied into its range of the
// output: the minibatch-stddev channel is appended this way), slicing, and the gradients of
// both (a gradient slice copied back). `plane` is the number of elements per channel (H * W).
//
// Threads: a grid-stride loop over the count * plane elements of every sample, so consecutive
// threads copy consecutive floats of one channel run (coalesced reads and writes; a channel run
// of one sample is contiguous in both tensors). Launch: BlockSize threads, blocks to fill the
// device.
#include "common.cuh"

extern "C" __global__ void copy_channels(const float* src, int srcChannels, int srcStart,
                                         float* dst, int dstChannels, int dstStart,
                                         int count, int samples, int plane)
{
    const long long perSample = (long long)count * plane;
    const long long n = perSample * samples;
    for (long long i = grid_start(); i < n; i += grid_stride())
    {
        const long long s = i / perSample, r = i % perSample;   // r = c * plane + pixel
        dst[(s * dstChannels + dstStart) * plane + r] = src[(s * srcChannels + srcStart) * plane + r];
    }
}
