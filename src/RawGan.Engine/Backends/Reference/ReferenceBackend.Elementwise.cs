namespace RawGan.Engine.Backends.Reference;

// Elementwise kernels: one output element from the input elements at the same index.
// y[i] = f(x[i]) for fill, scale, add_scalar, square, sqrt, rsqrt, leaky ReLU (forward and
// backward) and the two lerps. A kernel of one float operation is computed in float (the result
// is then exact to the last bit); one of two or more is computed in double and rounded once.
public sealed unsafe partial class ReferenceBackend
{
    public void Fill(DeviceBuffer y, long n, float value)
    {
        float* py = P(y);
        for (long i = 0; i < n; i++) py[i] = value;
    }

    public void Scale(DeviceBuffer x, DeviceBuffer y, long n, float a)
    {
        float* px = P(x), py = P(y);
        for (long i = 0; i < n; i++) py[i] = a * px[i];
    }

    public void AddScalar(DeviceBuffer x, DeviceBuffer y, long n, float b)
    {
        float* px = P(x), py = P(y);
        for (long i = 0; i < n; i++) py[i] = px[i] + b;
    }

    public void Square(DeviceBuffer x, DeviceBuffer y, long n)
    {
        float* px = P(x), py = P(y);
        for (long i = 0; i < n; i++) py[i] = px[i] * px[i];
    }

    public void Sqrt(DeviceBuffer x, DeviceBuffer y, long n)
    {
        float* px = P(x), py = P(y);
        for (long i = 0; i < n; i++) py[i] = MathF.Sqrt(px[i]);
    }

    public void Rsqrt(DeviceBuffer x, DeviceBuffer y, long n)
    {
        float* px = P(x), py = P(y);
        for (long i = 0; i < n; i++) py[i] = (float)(1.0 / Math.Sqrt(px[i]));
    }

    /// <summary>y = log(1 + e^x), as defined, in double (exp(-|x|) keeps it finite for any x).</summary>
    public void Softplus(DeviceBuffer x, DeviceBuffer y, long n)
    {
        float* px = P(x), py = P(y);
        for (long i = 0; i < n; i++)
        {
            double v = px[i];
            py[i] = (float)(v > 0 ? v + Math.Log(1 + Math.Exp(-v)) : Math.Log(1 + Math.Exp(v)));
        }
    }

    /// <summary>y = 1 / (1 + e^-x), in double.</summary>
    public void Sigmoid(DeviceBuffer x, DeviceBuffer y, long n)
    {
        float* px = P(x), py = P(y);
        for (long i = 0; i < n; i++) py[i] = (float)(1 / (1 + Math.Exp(-(double)px[i])));
    }

    /// <summary>y = x if x &gt; 0 else slope x (x = 0 takes the slope branch, giving 0).</summary>
    public void LeakyReluForward(DeviceBuffer x, DeviceBuffer y, long n, float slope)
    {
        float* px = P(x), py = P(y);
        for (long i = 0; i < n; i++) py[i] = px[i] > 0 ? px[i] : slope * px[i];
    }

    /// <summary>gx = gy if x &gt; 0 else slope gy.</summary>
    public void LeakyReluBackward(DeviceBuffer x, DeviceBuffer gy, DeviceBuffer gx, long n, float slope)
    {
        float* px = P(x), pg = P(gy), po = P(gx);
        for (long i = 0; i < n; i++) po[i] = px[i] > 0 ? pg[i] : slope * pg[i];
    }

    /// <summary>y = z if z &gt; 0 else slope z, z = x + b[channel] (one rounding for the sum, one for the product).</summary>
    public void BiasLeakyRelu(DeviceBuffer x, DeviceBuffer b, DeviceBuffer y, int n, int c, int plane, float slope)
    {
        float* px = P(x), pb = P(b), py = P(y);
        for (long s = 0; s < n; s++)
            for (int ch = 0; ch < c; ch++)
                for (long p = 0; p < plane; p++)
                {
                    long i = (s * c + ch) * plane + p;
                    float z = px[i] + pb[ch];
                    py[i] = z > 0 ? z : slope * z;
                }
    }

    /// <summary>gx = gy if y &gt; 0 else slope gy; gb[channel] = the sum of its gx, in double.</summary>
    public void BiasLeakyReluBackward(DeviceBuffer y, DeviceBuffer gy, DeviceBuffer gx, DeviceBuffer gb, int n, int c, int plane, float slope)
    {
        float* py = P(y), pg = P(gy), po = P(gx), pb = P(gb);
        for (int ch = 0; ch < c; ch++)
        {
            double sum = 0;
            for (long s = 0; s < n; s++)
                for (long p = 0; p < plane; p++)
                {
                    long i = (s * c + ch) * plane + p;
                    float g = py[i] > 0 ? pg[i] : slope * pg[i];
                    po[i] = g;
                    sum += g;
                }
            pb[ch] = (float)sum;
        }
    }

    /// <summary>y = a + t (b - a).</summary>
    public void LerpScalar(DeviceBuffer a, DeviceBuffer b, DeviceBuffer y, long n, float t)
    {
        float* pa = P(a), pb = P(b), py = P(y);
        for (long i = 0; i < n; i++) py[i] = (float)(pa[i] + (double)t * ((double)pb[i] - pa[i]));
    }

    /// <summary>y[s, i] = a[s, i] + t[s] (b[s, i] - a[s, i]).</summary>
    public void LerpPerSample(DeviceBuffer a, DeviceBuffer b, DeviceBuffer t, DeviceBuffer y, int samples, int inner)
    {
        float* pa = P(a), pb = P(b), pt = P(t), py = P(y);
        for (long s = 0; s < samples; s++)
            for (long i = 0; i < inner; i++)
            {
                long j = s * inner + i;
                py[j] = (float)(pa[j] + (double)pt[s] * ((double)pb[j] - pa[j]));
            }
    }
}
