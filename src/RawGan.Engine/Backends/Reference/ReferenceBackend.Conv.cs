namespace RawGan.Engine.Backends.Reference;

// 2-D convolution, stride 1, zero 'same' padding p = k / 2, odd k; x [N, Cin, H, W],
// w [Cout, Cin, k, k], y [N, Cout, H, W]; scale (the equalized learning rate) multiplies w.
// Like every deep-learning "convolution" it is a cross-correlation (the kernel is not flipped):
//   forward:         y[s, o, i, j]  = scale sum_{c, a, b} w[o, c, a, b] x[s, c, i + a - p, j + b - p]
//   backward input:  gx[s, c, i, j] = scale sum_{o, a, b} w[o, c, a, b] gy[s, o, i - a + p, j - b + p]
//   backward weight: gw[o, c, a, b] = scale sum_{s, i, j} gy[s, o, i, j] x[s, c, i + a - p, j + b - p]
// where a pixel outside the image reads 0. The backward input is the same sum as the forward's
// (each gy pixel went to each x pixel through tap (a, b)), so it is a convolution with the
// kernel flipped and its channel axes swapped. A forward convolution with a bias b [Cout] ends
// with a layer's epilogue, defined as bias_leaky_relu of the finished output:
//   z = y[s, o, i, j] + b[o],  y[s, o, i, j] = z if z > 0 else slope z
public sealed unsafe partial class ReferenceBackend
{
    private static void CheckConv(int n, int cin, int h, int w, int cout, int k)
    {
        if (n <= 0 || cin <= 0 || h <= 0 || w <= 0 || cout <= 0 || k <= 0 || k % 2 == 0)
            throw new ArgumentException($"conv2d: invalid sizes n={n} cin={cin} h={h} w={w} cout={cout} k={k} (k must be odd)");
    }

    /// <summary>x[s, c, i, j] of an [N, C, H, W] array, 0 outside the image.</summary>
    private static double Pixel(float* x, int c, int h, int w, long s, long ch, long i, long j) =>
        i < 0 || i >= h || j < 0 || j >= w ? 0 : x[((s * c + ch) * h + i) * w + j];

    /// <summary>w[o, c, a, b] of a [Cout, Cin, k, k] kernel.</summary>
    private static double Tap(float* w, int cin, int k, long o, long c, long a, long b) => w[((o * cin + c) * k + a) * k + b];

    public void Conv2dForward(DeviceBuffer x, DeviceBuffer w, DeviceBuffer y, int n, int cin, int h, int wd, int cout, int k, float scale,
        DeviceBuffer bias = default, float slope = 1f)
    {
        CheckConv(n, cin, h, wd, cout, k);
        float* px = P(x), pw = P(w), py = P(y), pb = bias.IsNull ? null : P(bias);
        int p = k / 2;
        for (long s = 0; s < n; s++)
            for (long o = 0; o < cout; o++)
                for (long i = 0; i < h; i++)
                    for (long j = 0; j < wd; j++)
                    {
                        double sum = 0;
                        for (long c = 0; c < cin; c++)
                            for (long a = 0; a < k; a++)
                                for (long b = 0; b < k; b++)
                                    sum += Tap(pw, cin, k, o, c, a, b) * Pixel(px, cin, h, wd, s, c, i + a - p, j + b - p);
                        float v = (float)(scale * sum);
                        if (pb != null)
                        {
                            float z = v + pb[o];
                            v = z > 0 ? z : slope * z;
                        }
                        py[((s * cout + o) * h + i) * wd + j] = v;
                    }
    }

    /// <summary>The generator's layer by its definition: the layer, then pixel norm over its output.</summary>
    public void Conv2dForwardPixelNorm(DeviceBuffer x, DeviceBuffer w, DeviceBuffer z, DeviceBuffer inv, int n, int cin, int h, int wd, int cout, int k,
        float scale, DeviceBuffer bias, float slope, float eps)
    {
        PixelNormLayerChecks.RequireFactors(inv);
        Conv2dForward(x, w, z, n, cin, h, wd, cout, k, scale, bias, slope);
        PixelNormForward(z, z, n, cout, h * wd, eps, inv);
    }

    public void Conv2dBackwardInput(DeviceBuffer gy, DeviceBuffer w, DeviceBuffer gx, int n, int cin, int h, int wd, int cout, int k, float scale)
    {
        CheckConv(n, cin, h, wd, cout, k);
        float* pg = P(gy), pw = P(w), po = P(gx);
        int p = k / 2;
        for (long s = 0; s < n; s++)
            for (long c = 0; c < cin; c++)
                for (long i = 0; i < h; i++)
                    for (long j = 0; j < wd; j++)
                    {
                        double sum = 0;
                        for (long o = 0; o < cout; o++)
                            for (long a = 0; a < k; a++)
                                for (long b = 0; b < k; b++)
                                    sum += Tap(pw, cin, k, o, c, a, b) * Pixel(pg, cout, h, wd, s, o, i - a + p, j - b + p);
                        po[((s * cin + c) * h + i) * wd + j] = (float)(scale * sum);
                    }
    }

    public void Conv2dBackwardWeight(DeviceBuffer x, DeviceBuffer gy, DeviceBuffer gw, int n, int cin, int h, int wd, int cout, int k, float scale)
    {
        CheckConv(n, cin, h, wd, cout, k);
        float* px = P(x), pg = P(gy), po = P(gw);
        int p = k / 2;
        for (long o = 0; o < cout; o++)
            for (long c = 0; c < cin; c++)
                for (long a = 0; a < k; a++)
                    for (long b = 0; b < k; b++)
                    {
                        double sum = 0;
                        for (long s = 0; s < n; s++)
                            for (long i = 0; i < h; i++)
                                for (long j = 0; j < wd; j++)
                                    sum += Pixel(pg, cout, h, wd, s, o, i, j) * Pixel(px, cin, h, wd, s, c, i + a - p, j + b - p);
                        po[((o * cin + c) * k + a) * k + b] = (float)(scale * sum);
                    }
    }
}
