namespace RawGan.ProGan.Metrics;

/// <summary>
/// The Laplacian pyramid the sliced Wasserstein distance looks at (ProGAN paper, section 5; Burt
/// and Adelson 1983). Level 0 holds the finest details, each next level the details one octave
/// coarser, and the last level is the remaining low-pass image:
/// <code>
///   low[0] = image;  low[i] = down(low[i-1]);  level[i] = low[i] - up(low[i+1]);  level[last] = low[last]
/// </code>
/// down blurs with the 5x5 binomial kernel <c>[1 4 6 4 1]ᵀ[1 4 6 4 1] / 256</c> and keeps every
/// second pixel (starting with the first); up puts each pixel at the even positions of a twice as
/// large image of zeros and blurs with 4 times that kernel. Borders are mirrored without repeating
/// the edge pixel (…c b | a b c… ), as in OpenCV's pyrDown/pyrUp and the official implementation.
/// The kernel is separable, so each blur is a horizontal then a vertical pass of
/// <c>[1 4 6 4 1] / 16</c> (or / 8 for up).
/// </summary>
public static class LaplacianPyramid
{
    private static readonly float[] DownTaps = [1 / 16f, 4 / 16f, 6 / 16f, 4 / 16f, 1 / 16f];
    private static readonly float[] UpTaps = [1 / 8f, 4 / 8f, 6 / 8f, 4 / 8f, 1 / 8f];

    /// <summary>
    /// Builds <paramref name="levels"/> levels from one CHW image (channels x size x size).
    /// Level i is channels x (size / 2^i)².
    /// </summary>
    public static float[][] Build(ReadOnlySpan<float> image, int channels, int size, int levels)
    {
        if (levels < 1 || size >> (levels - 1) < 2)
            throw new ArgumentOutOfRangeException(nameof(levels), $"{levels} levels do not fit a {size}x{size} image");
        var pyramid = new float[levels][];
        pyramid[0] = image.ToArray();
        for (int i = 1; i < levels; i++)
        {
            int finer = size >> (i - 1);
            pyramid[i] = Down(pyramid[i - 1], channels, finer);
            var up = Up(pyramid[i], channels, finer / 2);
            var detail = pyramid[i - 1];
            for (int k = 0; k < detail.Length; k++)
                detail[k] -= up[k];
        }
        return pyramid;
    }

    /// <summary>Mirrors an index that fell off either end of [0, n) back inside, without repeating the edge.</summary>
    internal static int Mirror(int i, int n) => i < 0 ? -i : i >= n ? 2 * n - 2 - i : i;

    /// <summary>Blur, then keep even rows and columns: channels x size² → channels x (size/2)².</summary>
    internal static float[] Down(float[] image, int channels, int size)
    {
        int half = size / 2;
        var rows = new float[size * half]; // one channel, horizontally blurred at even columns
        var result = new float[channels * half * half];
        for (int c = 0; c < channels; c++)
        {
            var plane = image.AsSpan(c * size * size, size * size);
            for (int y = 0; y < size; y++)
                for (int x = 0; x < half; x++)
                {
                    float sum = 0;
                    for (int k = 0; k < 5; k++)
                        sum += DownTaps[k] * plane[y * size + Mirror(2 * x + k - 2, size)];
                    rows[y * half + x] = sum;
                }
            var output = result.AsSpan(c * half * half, half * half);
            for (int y = 0; y < half; y++)
                for (int x = 0; x < half; x++)
                {
                    float sum = 0;
                    for (int k = 0; k < 5; k++)
                        sum += DownTaps[k] * rows[Mirror(2 * y + k - 2, size) * half + x];
                    output[y * half + x] = sum;
                }
        }
        return result;
    }

    /// <summary>Zero-insert to twice the size, then blur with 4x the kernel: channels x size² → channels x (2 size)².</summary>
    internal static float[] Up(float[] image, int channels, int size)
    {
        int twice = size * 2;
        var spread = new float[twice * twice];
        var rows = new float[twice * twice];
        var result = new float[channels * twice * twice];
        for (int c = 0; c < channels; c++)
        {
            Array.Clear(spread);
            for (int y = 0; y < size; y++)
                for (int x = 0; x < size; x++)
                    spread[(2 * y) * twice + 2 * x] = image[(c * size + y) * size + x];
            for (int y = 0; y < twice; y++)
                for (int x = 0; x < twice; x++)
                {
                    float sum = 0;
                    for (int k = 0; k < 5; k++)
                        sum += UpTaps[k] * spread[y * twice + Mirror(x + k - 2, twice)];
                    rows[y * twice + x] = sum;
                }
            var output = result.AsSpan(c * twice * twice, twice * twice);
            for (int y = 0; y < twice; y++)
                for (int x = 0; x < twice; x++)
                {
                    float sum = 0;
                    for (int k = 0; k < 5; k++)
                        sum += UpTaps[k] * rows[Mirror(y + k - 2, twice) * twice + x];
                    output[y * twice + x] = sum;
                }
        }
        return result;
    }
}
