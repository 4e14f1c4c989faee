namespace RawGan.Benchmarks.Reference;

/// <summary>
/// The naive references: each kernel written straight from its formula, one thread, plain loops,
/// no SIMD, no tiling. They define "correct" for the benchmarks (every optimized variant is
/// compared against them before it is timed) and give the baseline of each speed-up.
/// Layouts are RawGan's (row-major, NCHW, w [Cout, Cin, k, k]); see IBackend for each formula.
/// </summary>
public static class NaiveKernels
{
    // ------------------------------------------------------------------ GEMM

    /// <summary>
    /// C[m, n] = A[m, k] op(B), op(B) = B [k, n] or B^T (B stored [n, k]). The triple loop in
    /// i-p-j order (each A[i, p] times a row of B added to a row of C) when B is not transposed,
    /// so that the inner loop walks memory; i-j-p (a dot product per element) when it is.
    /// </summary>
    public static void Gemm(int m, int n, int k, float[] a, float[] b, bool transB, float[] c)
    {
        if (!transB)
        {
            Array.Clear(c, 0, m * n);
            for (int i = 0; i < m; i++)
                for (int p = 0; p < k; p++)
                {
                    float aip = a[i * k + p];
                    int bRow = p * n, cRow = i * n;
                    for (int j = 0; j < n; j++) c[cRow + j] += aip * b[bRow + j];
                }
            return;
        }
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
            {
                float sum = 0;
                for (int p = 0; p < k; p++) sum += a[i * k + p] * b[j * k + p];
                c[i * n + j] = sum;
            }
    }

    // ------------------------------------------------------------------ convolution, direct loops

    /// <summary>y[s, o, i, j] = scale sum over (c, a, b) of w[o, c, a, b] x[s, c, i + a - p, j + b - p], p = k / 2.</summary>
    public static void ConvForward(float[] x, float[] w, float[] y, int n, int cin, int h, int wd, int cout, int k, float scale)
    {
        int pad = k / 2, plane = h * wd;
        Array.Clear(y, 0, n * cout * plane);
        for (int s = 0; s < n; s++)
            for (int o = 0; o < cout; o++)
            {
                int yBase = (s * cout + o) * plane;
                for (int c = 0; c < cin; c++)
                {
                    int xBase = (s * cin + c) * plane;
                    for (int a = 0; a < k; a++)
                        for (int b = 0; b < k; b++)
                        {
                            float wv = scale * w[((o * cin + c) * k + a) * k + b];
                            // Output rows and columns whose tap (a, b) lands inside the image.
                            int i0 = Math.Max(0, pad - a), i1 = Math.Min(h, h + pad - a);
                            int j0 = Math.Max(0, pad - b), j1 = Math.Min(wd, wd + pad - b);
                            for (int i = i0; i < i1; i++)
                                for (int j = j0; j < j1; j++)
                                    y[yBase + i * wd + j] += wv * x[xBase + (i + a - pad) * wd + (j + b - pad)];
                        }
                }
            }
    }

    /// <summary>gx[s, c, i + a - p, j + b - p] += scale w[o, c, a, b] gy[s, o, i, j]: the forward's scatter.</summary>
    public static void ConvBackwardInput(float[] gy, float[] w, float[] gx, int n, int cin, int h, int wd, int cout, int k, float scale)
    {
        int pad = k / 2, plane = h * wd;
        Array.Clear(gx, 0, n * cin * plane);
        for (int s = 0; s < n; s++)
            for (int o = 0; o < cout; o++)
            {
                int gyBase = (s * cout + o) * plane;
                for (int c = 0; c < cin; c++)
                {
                    int gxBase = (s * cin + c) * plane;
                    for (int a = 0; a < k; a++)
                        for (int b = 0; b < k; b++)
                        {
                            float wv = scale * w[((o * cin + c) * k + a) * k + b];
                            int i0 = Math.Max(0, pad - a), i1 = Math.Min(h, h + pad - a);
                            int j0 = Math.Max(0, pad - b), j1 = Math.Min(wd, wd + pad - b);
                            for (int i = i0; i < i1; i++)
                                for (int j = j0; j < j1; j++)
                                    gx[gxBase + (i + a - pad) * wd + (j + b - pad)] += wv * gy[gyBase + i * wd + j];
                        }
                }
            }
    }

    /// <summary>gw[o, c, a, b] = scale sum over (s, i, j) of gy[s, o, i, j] x[s, c, i + a - p, j + b - p].</summary>
    public static void ConvBackwardWeight(float[] x, float[] gy, float[] gw, int n, int cin, int h, int wd, int cout, int k, float scale)
    {
        int pad = k / 2, plane = h * wd;
        for (int o = 0; o < cout; o++)
            for (int c = 0; c < cin; c++)
                for (int a = 0; a < k; a++)
                    for (int b = 0; b < k; b++)
                    {
                        int i0 = Math.Max(0, pad - a), i1 = Math.Min(h, h + pad - a);
                        int j0 = Math.Max(0, pad - b), j1 = Math.Min(wd, wd + pad - b);
                        double sum = 0;
                        for (int s = 0; s < n; s++)
                        {
                            int gyBase = (s * cout + o) * plane, xBase = (s * cin + c) * plane;
                            for (int i = i0; i < i1; i++)
                                for (int j = j0; j < j1; j++)
                                    sum += gy[gyBase + i * wd + j] * x[xBase + (i + a - pad) * wd + (j + b - pad)];
                        }
                        gw[((o * cin + c) * k + a) * k + b] = (float)(scale * sum);
                    }
    }

    // ------------------------------------------------------------------ pixel norm (ProGAN 4.2)

    /// <summary>y = x / sqrt(mean over channels of x^2 + eps), at each pixel of each sample.</summary>
    public static void PixelNormForward(float[] x, float[] y, int n, int c, int plane, float eps)
    {
        for (int s = 0; s < n; s++)
            for (int p = 0; p < plane; p++)
            {
                double ss = 0;
                for (int ch = 0; ch < c; ch++)
                {
                    double v = x[(s * c + ch) * plane + p];
                    ss += v * v;
                }
                double r = 1 / Math.Sqrt(ss / c + eps);
                for (int ch = 0; ch < c; ch++) y[(s * c + ch) * plane + p] = (float)(x[(s * c + ch) * plane + p] * r);
            }
    }

    /// <summary>gx = r gy - r^3 x mean_c(gy x), r = 1 / sqrt(mean_c x^2 + eps) (the derivative of the forward).</summary>
    public static void PixelNormBackward(float[] x, float[] gy, float[] gx, int n, int c, int plane, float eps)
    {
        for (int s = 0; s < n; s++)
            for (int p = 0; p < plane; p++)
            {
                double ss = 0, dot = 0;
                for (int ch = 0; ch < c; ch++)
                {
                    int i = (s * c + ch) * plane + p;
                    ss += (double)x[i] * x[i];
                    dot += (double)gy[i] * x[i];
                }
                double r = 1 / Math.Sqrt(ss / c + eps);
                for (int ch = 0; ch < c; ch++)
                {
                    int i = (s * c + ch) * plane + p;
                    gx[i] = (float)(r * gy[i] - r * r * r * x[i] * dot / c);
                }
            }
    }

    // ------------------------------------------------------------------ minibatch stddev (ProGAN 3)

    /// <summary>
    /// G = group, M = N / G groups, sample s in group s mod M. Per group: the population std over
    /// its G members of each feature (+ eps inside the root), averaged over the C H W features,
    /// appended to each member as channel C. y is [N, C + 1, plane].
    /// </summary>
    public static void MinibatchStdDevForward(float[] x, float[] y, int n, int c, int plane, int group, float eps)
    {
        int groups = n / group, feat = c * plane;
        var stat = new double[groups];
        for (int m = 0; m < groups; m++)
        {
            for (int e = 0; e < feat; e++)
            {
                double mean = 0, var = 0;
                for (int g = 0; g < group; g++) mean += x[(g * groups + m) * feat + e];
                mean /= group;
                for (int g = 0; g < group; g++)
                {
                    double d = x[(g * groups + m) * feat + e] - mean;
                    var += d * d;
                }
                stat[m] += Math.Sqrt(var / group + eps);
            }
            stat[m] /= feat;
        }
        for (int s = 0; s < n; s++)
        {
            Array.Copy(x, s * feat, y, s * (feat + plane), feat);
            for (int p = 0; p < plane; p++) y[s * (feat + plane) + feat + p] = (float)stat[s % groups];
        }
    }

    /// <summary>gx = gy's first C channels + (sum of gy's extra channel over the group) d stat / d x,
    /// d stat / d x[g, e] = (x[g, e] - mean_e) / (G std_e C H W).</summary>
    public static void MinibatchStdDevBackward(float[] x, float[] gy, float[] gx, int n, int c, int plane, int group, float eps)
    {
        int groups = n / group, feat = c * plane;
        var gstat = new double[groups];
        for (int s = 0; s < n; s++)
            for (int p = 0; p < plane; p++) gstat[s % groups] += gy[s * (feat + plane) + feat + p];
        for (int m = 0; m < groups; m++)
            for (int e = 0; e < feat; e++)
            {
                double mean = 0, var = 0;
                for (int g = 0; g < group; g++) mean += x[(g * groups + m) * feat + e];
                mean /= group;
                for (int g = 0; g < group; g++)
                {
                    double d = x[(g * groups + m) * feat + e] - mean;
                    var += d * d;
                }
                double std = Math.Sqrt(var / group + eps);
                for (int g = 0; g < group; g++)
                {
                    int s = g * groups + m;
                    gx[s * feat + e] = (float)(gy[s * (feat + plane) + e] + gstat[m] * (x[s * feat + e] - mean) / (group * std * feat));
                }
            }
    }

    // ------------------------------------------------------------------ resampling

    /// <summary>Nearest-neighbour 2x: y[p, i, j] = gain x[p, i / 2, j / 2]; x is [planes, h, w].</summary>
    public static void Upsample2x(float[] x, float[] y, int planes, int h, int w, float gain)
    {
        for (int p = 0; p < planes; p++)
            for (int i = 0; i < 2 * h; i++)
                for (int j = 0; j < 2 * w; j++)
                    y[(p * 2 * h + i) * 2 * w + j] = gain * x[(p * h + i / 2) * w + j / 2];
    }

    /// <summary>2x2 average: y[p, i, j] = gain mean of x[p, 2i + a, 2j + b], a, b in {0, 1}.</summary>
    public static void AvgPool2x(float[] x, float[] y, int planes, int h, int w, float gain)
    {
        for (int p = 0; p < planes; p++)
            for (int i = 0; i < h / 2; i++)
                for (int j = 0; j < w / 2; j++)
                {
                    float sum = 0;
                    for (int a = 0; a < 2; a++)
                        for (int b = 0; b < 2; b++) sum += x[(p * h + 2 * i + a) * w + 2 * j + b];
                    y[(p * (h / 2) + i) * (w / 2) + j] = gain * sum / 4;
                }
    }

    // ------------------------------------------------------------------ WGAN-GP reduction

    /// <summary>norm[s] = ||g[s]||_2 over the sample's C H W values; penalty[s] = (norm[s] - target)^2.</summary>
    public static void GradientPenaltyForward(float[] g, float[] norm, float[] penalty, int samples, int inner, float target)
    {
        for (int s = 0; s < samples; s++)
        {
            double ss = 0;
            for (int i = 0; i < inner; i++) ss += (double)g[s * inner + i] * g[s * inner + i];
            double nrm = Math.Sqrt(ss);
            norm[s] = (float)nrm;
            penalty[s] = (float)((nrm - target) * (nrm - target));
        }
    }

    /// <summary>gg[s, i] = gpenalty[s] 2 (norm[s] - target) g[s, i] / norm[s].</summary>
    public static void GradientPenaltyBackward(float[] g, float[] norm, float[] gpenalty, float[] gg, int samples, int inner, float target)
    {
        for (int s = 0; s < samples; s++)
            for (int i = 0; i < inner; i++)
                gg[s * inner + i] = norm[s] > 0 ? gpenalty[s] * 2f * (norm[s] - target) * g[s * inner + i] / norm[s] : 0f;
    }
}
