using RawGan.Engine.Backends.Cpu;
namespace RawGan.ProGan.Metrics;

/// <summary>
/// Multi-scale structural similarity (Wang, Simoncelli and Bovik, 2003). ProGAN reports it among
/// generated images as a measure of variety (paper, section 5 and table 1, after Odena et al.):
/// pairs of independent samples should be about as (dis)similar as pairs of real images; a
/// collapsed generator scores close to 1. Parameters and procedure follow the implementation the
/// official code uses:
/// <list type="bullet">
/// <item>pixels in 0..255 (data range 255), k1 = 0.01, k2 = 0.03, c1 = (k1·255)², c2 = (k2·255)²;</item>
/// <item>an 11x11 Gaussian window with σ = 1.5, applied over the "valid" positions only; at scales
/// smaller than 11 pixels the window shrinks to the image size and σ in proportion;</item>
/// <item>5 scales, each the 2x2 average of the one before, with weights
/// [0.0448, 0.2856, 0.3001, 0.2363, 0.1333];</item>
/// <item>at each scale the contrast-structure term cs = mean of (2σ₁₂ + c2)/(σ₁² + σ₂² + c2), and at
/// the coarsest also the full SSIM; all channels and positions averaged; negative values clipped
/// to 0; MS-SSIM = Π cs_s^w_s (first four scales) x ssim_5^w_5.</item>
/// </list>
/// Five scales need images of at least 16x16.
/// </summary>
public static class MsSsim
{
    public static readonly double[] Weights = [0.0448, 0.2856, 0.3001, 0.2363, 0.1333];
    public const int WindowSize = 11;
    public const double WindowSigma = 1.5;
    public const double K1 = 0.01, K2 = 0.03, DataRange = 255;
    /// <summary>The smallest images the five scales can measure (each scale halves the last).</summary>
    public const int MinimumResolution = 16;

    /// <summary>
    /// MS-SSIM of two CHW float images in [-1, 1] of the same shape (rounded to bytes first, as saved
    /// samples are). 1 means identical.
    /// </summary>
    public static double Compute(ReadOnlySpan<float> imageA, ReadOnlySpan<float> imageB, int channels, int resolution)
    {
        int size = channels * resolution * resolution;
        if (imageA.Length != size || imageB.Length != size)
            throw new ArgumentException($"both images must be {channels}x{resolution}x{resolution} ({size} floats); got {imageA.Length} and {imageB.Length}");
        if (resolution < MinimumResolution)
            throw new ArgumentOutOfRangeException(nameof(resolution), $"MS-SSIM's {Weights.Length} scales need images of at least {MinimumResolution}x{MinimumResolution}, not {resolution}x{resolution}");
        var a = new double[size];
        var b = new double[size];
        for (int i = 0; i < size; i++)
        {
            a[i] = Imaging.ImageOps.ToByte(imageA[i]);
            b[i] = Imaging.ImageOps.ToByte(imageB[i]);
        }
        return ComputeOnByteScale(a, b, channels, resolution, resolution);
    }

    /// <summary>MS-SSIM of two CHW images already on the 0..255 scale (any size of at least 16x16).</summary>
    internal static double ComputeOnByteScale(double[] a, double[] b, int channels, int height, int width)
    {
        double product = 1;
        for (int scale = 0; scale < Weights.Length; scale++)
        {
            var (ssim, cs) = SsimAndContrastStructure(a, b, channels, height, width);
            product *= scale < Weights.Length - 1
                ? Math.Pow(Math.Max(cs, 0), Weights[scale])
                : Math.Pow(Math.Max(ssim, 0), Weights[scale]);
            if (scale < Weights.Length - 1)
            {
                a = HalveByAveraging(a, channels, height, width);
                b = HalveByAveraging(b, channels, height, width);
                height /= 2;
                width /= 2;
            }
        }
        return product;
    }

    /// <summary>
    /// Mean MS-SSIM over the pairs (0, 1), (2, 3), ... of <paramref name="count"/> CHW images in
    /// [-1, 1]: with independently generated images these are random pairs, as in the official
    /// evaluation. Lower means more varied.
    /// </summary>
    public static double MeanOverPairs(ReadOnlySpan<float> images, int count, int channels, int resolution)
    {
        int size = channels * resolution * resolution;
        if (count < 2 || images.Length != count * size)
            throw new ArgumentException($"need at least 2 images of {size} floats each ({count} given, {images.Length} floats)");
        var copy = images.ToArray();
        int pairs = count / 2;
        var scores = new double[pairs];
        Parallel.For(0, pairs, CpuParallel.Options, i =>
            scores[i] = Compute(copy.AsSpan(2 * i * size, size), copy.AsSpan((2 * i + 1) * size, size), channels, resolution));
        return scores.Average();
    }

    /// <summary>Mean SSIM and mean contrast-structure term over all channels and valid window positions.</summary>
    internal static (double Ssim, double ContrastStructure) SsimAndContrastStructure(double[] a, double[] b, int channels, int height, int width)
    {
        int window = Math.Min(WindowSize, Math.Min(height, width));
        double sigma = window * WindowSigma / WindowSize;
        var taps = GaussianTaps(window, sigma);
        double c1 = Math.Pow(K1 * DataRange, 2), c2 = Math.Pow(K2 * DataRange, 2);
        int outHeight = height - window + 1, outWidth = width - window + 1;
        int plane = height * width;

        double ssimSum = 0, csSum = 0;
        var product = new double[plane];
        var squareA = new double[plane];
        var squareB = new double[plane];
        for (int c = 0; c < channels; c++)
        {
            var x = a.AsSpan(c * plane, plane);
            var y = b.AsSpan(c * plane, plane);
            for (int i = 0; i < plane; i++)
            {
                product[i] = x[i] * y[i];
                squareA[i] = x[i] * x[i];
                squareB[i] = y[i] * y[i];
            }
            var meanA = FilterValid(x, height, width, taps);
            var meanB = FilterValid(y, height, width, taps);
            var meanAA = FilterValid(squareA, height, width, taps);
            var meanBB = FilterValid(squareB, height, width, taps);
            var meanAB = FilterValid(product, height, width, taps);
            for (int i = 0; i < outHeight * outWidth; i++)
            {
                double muA = meanA[i], muB = meanB[i];
                double varianceA = meanAA[i] - muA * muA;
                double varianceB = meanBB[i] - muB * muB;
                double covariance = meanAB[i] - muA * muB;
                double v1 = 2 * covariance + c2, v2 = varianceA + varianceB + c2;
                ssimSum += (2 * muA * muB + c1) * v1 / ((muA * muA + muB * muB + c1) * v2);
                csSum += v1 / v2;
            }
        }
        double n = (double)channels * outHeight * outWidth;
        return (ssimSum / n, csSum / n);
    }

    /// <summary>
    /// The 1-D factor of the normalized 2-D Gaussian window (the 2-D window is its outer product).
    /// Taps sit at integer offsets from the centre for odd sizes and at half-integer offsets for even
    /// sizes, like MATLAB's fspecial.
    /// </summary>
    internal static double[] GaussianTaps(int size, double sigma)
    {
        var taps = new double[size];
        double sum = 0;
        for (int i = 0; i < size; i++)
        {
            double offset = i - (size - 1) / 2.0;
            taps[i] = Math.Exp(-offset * offset / (2 * sigma * sigma));
            sum += taps[i];
        }
        for (int i = 0; i < size; i++)
            taps[i] /= sum;
        return taps;
    }

    /// <summary>Separable filtering at the "valid" positions (where the window lies wholly inside).</summary>
    private static double[] FilterValid(ReadOnlySpan<double> plane, int height, int width, double[] taps)
    {
        int window = taps.Length, outHeight = height - window + 1, outWidth = width - window + 1;
        var rows = new double[height * outWidth];
        for (int y = 0; y < height; y++)
            for (int x = 0; x < outWidth; x++)
            {
                double sum = 0;
                for (int k = 0; k < window; k++)
                    sum += taps[k] * plane[y * width + x + k];
                rows[y * outWidth + x] = sum;
            }
        var result = new double[outHeight * outWidth];
        for (int y = 0; y < outHeight; y++)
            for (int x = 0; x < outWidth; x++)
            {
                double sum = 0;
                for (int k = 0; k < window; k++)
                    sum += taps[k] * rows[(y + k) * outWidth + x];
                result[y * outWidth + x] = sum;
            }
        return result;
    }

    private static double[] HalveByAveraging(double[] image, int channels, int height, int width)
    {
        int h = height / 2, w = width / 2;
        var result = new double[channels * h * w];
        for (int c = 0; c < channels; c++)
            for (int y = 0; y < h; y++)
                for (int x = 0; x < w; x++)
                {
                    int i = (c * height + 2 * y) * width + 2 * x;
                    result[(c * h + y) * w + x] = (image[i] + image[i + 1] + image[i + width] + image[i + width + 1]) * 0.25;
                }
        return result;
    }
}
