namespace RawGan.Engine.Backends.Reference;

// ProGAN's two normalizations, on x [n, c, plane] (plane = H W pixels).
//
// Pixel norm (ProGAN 4.2), per sample s and pixel q, over the c channels:
//   r = 1 / sqrt(mean_ch x[s, ch, q]^2 + eps),  y = r x,
//   gx = r gy - r^3 x mean_ch(gy x)             (= r (gy - y mean_ch(gy y))).
// The generator's layer z = pixel_norm(leaky_relu(a)) backward from z and r alone:
//   ga = m (r gz - r z mean_ch(gz z)),  m = 1 where z > 0, else the slope;  gb[ch] = sum over s, q of ga.
//
// Minibatch standard deviation (ProGAN 3): the batch is cut into n / G groups of G samples,
// strided: sample s belongs to group m = s % (n / G), whose members are s = g (n / G) + m for
// g < G. For each group and each of the F = c plane features e:
//   mean_e = (1/G) sum_g x[g, e],  std_e = sqrt((1/G) sum_g (x[g, e] - mean_e)^2 + eps)   (eps inside the root)
//   stat   = (1/F) sum_e std_e
// y [n, c + 1, plane] is x with one more channel filled with its group's stat. Backward:
//   gx[g, e] = gy[g, e] + gstat (x[g, e] - mean_e) / (G F std_e),
// gstat = the sum of gy over the extra channel of every member of the group.
public sealed unsafe partial class ReferenceBackend
{
    public void PixelNormForward(DeviceBuffer x, DeviceBuffer y, int n, int c, int plane, float eps, DeviceBuffer inv = default)
    {
        float* px = P(x), py = P(y), pr = inv.IsNull ? null : P(inv);
        for (long s = 0; s < n; s++)
            for (long q = 0; q < plane; q++)
            {
                double sumSquares = 0;
                for (long ch = 0; ch < c; ch++)
                {
                    double v = px[(s * c + ch) * plane + q];
                    sumSquares += v * v;
                }
                double r = 1 / Math.Sqrt(sumSquares / c + eps);
                if (pr != null) pr[s * plane + q] = (float)r;
                for (long ch = 0; ch < c; ch++)
                {
                    long i = (s * c + ch) * plane + q;
                    py[i] = (float)(r * px[i]);
                }
            }
    }

    public void PixelNormBackward(DeviceBuffer x, DeviceBuffer gy, DeviceBuffer gx, int n, int c, int plane, float eps)
    {
        float* px = P(x), pg = P(gy), po = P(gx);
        for (long s = 0; s < n; s++)
            for (long q = 0; q < plane; q++)
            {
                double sumSquares = 0, dot = 0;
                for (long ch = 0; ch < c; ch++)
                {
                    long i = (s * c + ch) * plane + q;
                    sumSquares += (double)px[i] * px[i];
                    dot += (double)pg[i] * px[i];
                }
                double r = 1 / Math.Sqrt(sumSquares / c + eps);
                for (long ch = 0; ch < c; ch++)
                {
                    long i = (s * c + ch) * plane + q;
                    po[i] = (float)(r * pg[i] - r * r * r * px[i] * (dot / c));
                }
            }
    }

    public void PixelNormLeakyReluBackward(DeviceBuffer z, DeviceBuffer inv, DeviceBuffer gz, DeviceBuffer ga, DeviceBuffer gb, int n, int c, int plane, float slope)
    {
        float* pz = P(z), pr = P(inv), pg = P(gz), po = P(ga);
        var sums = new double[c];
        for (long s = 0; s < n; s++)
            for (long q = 0; q < plane; q++)
            {
                double dot = 0;
                for (long ch = 0; ch < c; ch++)
                {
                    long i = (s * c + ch) * plane + q;
                    dot += (double)pg[i] * pz[i];
                }
                double r = pr[s * plane + q], mean = dot / c;
                for (long ch = 0; ch < c; ch++)
                {
                    long i = (s * c + ch) * plane + q;
                    double g = r * (pg[i] - pz[i] * mean);
                    po[i] = (float)(pz[i] > 0 ? g : slope * g);
                    sums[ch] += po[i];
                }
            }
        float* pb = P(gb);
        for (int ch = 0; ch < c; ch++) pb[ch] = (float)sums[ch];
    }

    private static void CheckGroups(int n, int groupSize, string op)
    {
        if (groupSize <= 0 || n % groupSize != 0)
            throw new ArgumentException($"{op}: batch {n} is not divisible by group size {groupSize}");
    }

    /// <summary>mean_e and std_e of feature e over the G members of group m (see the file's comment).</summary>
    private static (double mean, double std) GroupMoments(float* x, int groups, int groupSize, long feat, long m, long e, float eps)
    {
        double mean = 0;
        for (long g = 0; g < groupSize; g++) mean += x[(g * groups + m) * feat + e];
        mean /= groupSize;
        double variance = 0;
        for (long g = 0; g < groupSize; g++)
        {
            double d = x[(g * groups + m) * feat + e] - mean;
            variance += d * d;
        }
        variance /= groupSize;
        return (mean, Math.Sqrt(variance + eps));
    }

    public void MinibatchStdDevForward(DeviceBuffer x, DeviceBuffer y, int n, int c, int plane, int groupSize, float eps)
    {
        CheckGroups(n, groupSize, "minibatch_stddev_forward");
        float* px = P(x), py = P(y);
        int groups = n / groupSize;
        long feat = (long)c * plane;
        for (long m = 0; m < groups; m++)
        {
            double stdSum = 0;
            for (long e = 0; e < feat; e++) stdSum += GroupMoments(px, groups, groupSize, feat, m, e, eps).std;
            float stat = (float)(stdSum / feat);
            for (long g = 0; g < groupSize; g++)
            {
                long s = g * groups + m;
                for (long e = 0; e < feat; e++) py[s * (feat + plane) + e] = px[s * feat + e];
                for (long q = 0; q < plane; q++) py[s * (feat + plane) + feat + q] = stat;
            }
        }
    }

    public void MinibatchStdDevBackward(DeviceBuffer x, DeviceBuffer gy, DeviceBuffer gx, int n, int c, int plane, int groupSize, float eps)
    {
        CheckGroups(n, groupSize, "minibatch_stddev_backward");
        float* px = P(x), pg = P(gy), po = P(gx);
        int groups = n / groupSize;
        long feat = (long)c * plane;
        for (long m = 0; m < groups; m++)
        {
            double gstat = 0;
            for (long g = 0; g < groupSize; g++)
                for (long q = 0; q < plane; q++) gstat += pg[(g * groups + m) * (feat + plane) + feat + q];
            for (long e = 0; e < feat; e++)
            {
                var (mean, std) = GroupMoments(px, groups, groupSize, feat, m, e, eps);
                for (long g = 0; g < groupSize; g++)
                {
                    long s = g * groups + m;
                    po[s * feat + e] = (float)(pg[s * (feat + plane) + e] + gstat * (px[s * feat + e] - mean) / (groupSize * feat * std));
                }
            }
        }
    }
}
