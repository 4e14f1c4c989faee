namespace RawGan.Engine.Backends.Reference;

// Resampling and channel copies, on [planes, h, w] arrays (a plane = one channel of one sample):
//   upsample2x_nearest: y[p, i, j] = gain x[p, i / 2, j / 2], y is [planes, 2h, 2w];
//   avgpool2x:          y[p, i, j] = gain (x[p, 2i, 2j] + x[p, 2i, 2j+1] + x[p, 2i+1, 2j] + x[p, 2i+1, 2j+1]) / 4;
//   copy_channels:      dst[s, dstStart + c, :] = src[s, srcStart + c, :] for c < count (the rest of dst is kept).
public sealed unsafe partial class ReferenceBackend
{
    public void Upsample2x(DeviceBuffer x, DeviceBuffer y, int planes, int h, int w, float gain)
    {
        float* px = P(x), py = P(y);
        for (long p = 0; p < planes; p++)
            for (long i = 0; i < 2 * h; i++)
                for (long j = 0; j < 2 * w; j++)
                    py[(p * 2 * h + i) * 2 * w + j] = gain * px[(p * h + i / 2) * w + j / 2];
    }

    public void AvgPool2x(DeviceBuffer x, DeviceBuffer y, int planes, int h, int w, float gain)
    {
        if (h % 2 != 0 || w % 2 != 0) throw new ArgumentException($"avgpool2x: height and width must be even, got {h}x{w}");
        float* px = P(x), py = P(y);
        int ho = h / 2, wo = w / 2;
        for (long p = 0; p < planes; p++)
            for (long i = 0; i < ho; i++)
                for (long j = 0; j < wo; j++)
                {
                    double sum = 0;
                    for (long a = 0; a < 2; a++)
                        for (long b = 0; b < 2; b++)
                            sum += px[(p * h + 2 * i + a) * w + 2 * j + b];
                    py[(p * ho + i) * wo + j] = (float)(gain * sum / 4);
                }
    }

    public void CopyChannels(DeviceBuffer src, int srcChannels, int srcStart, DeviceBuffer dst, int dstChannels, int dstStart, int count, int samples, int plane)
    {
        float* ps = P(src), pd = P(dst);
        for (long s = 0; s < samples; s++)
            for (long c = 0; c < count; c++)
                for (long q = 0; q < plane; q++)
                    pd[(s * dstChannels + dstStart + c) * plane + q] = ps[(s * srcChannels + srcStart + c) * plane + q];
    }
}
