using RawGan.Engine.Backends.Cpu;
namespace RawGan.ProGan.Imaging;

/// <summary>
/// The image operations between a user's file and the network: crop, resize, mode conversion,
/// and the conversion to and from the float CHW layout the network sees.
///
/// Data range (ProGAN, official code): a byte u becomes <c>u / 127.5 - 1</c>, so 0 → -1 and
/// 255 → +1; the generator's output goes back by <c>round((x + 1) * 127.5)</c>, clamped to 0..255.
/// </summary>
public static class ImageOps
{
    /// <summary>The largest centred square: crops the longer side equally from both ends
    /// (an odd excess leaves the extra pixel on the right or bottom).</summary>
    public static Image CenterCropSquare(Image image)
    {
        int side = Math.Min(image.Width, image.Height);
        return Crop(image, (image.Width - side) / 2, (image.Height - side) / 2, side, side);
    }

    /// <summary>The <paramref name="width"/> x <paramref name="height"/> rectangle whose top-left pixel is (x, y).</summary>
    public static Image Crop(Image image, int x, int y, int width, int height)
    {
        if (x < 0 || y < 0 || width <= 0 || height <= 0 || x + width > image.Width || y + height > image.Height)
            throw new ArgumentOutOfRangeException(nameof(x), $"crop {width}x{height} at ({x}, {y}) does not fit in {image.Width}x{image.Height}");
        int c = image.Channels;
        var result = new Image(width, height, c);
        for (int row = 0; row < height; row++)
            image.Pixels.AsSpan(((y + row) * image.Width + x) * c, width * c).CopyTo(result.Pixels.AsSpan(row * width * c));
        return result;
    }

    /// <summary>Area-resizes to a <paramref name="size"/> x <paramref name="size"/> square.</summary>
    public static Image ResizeArea(Image image, int size) => ResizeArea(image, size, size);

    /// <summary>
    /// Resizes by exact area averaging: each output pixel is the mean of the input over the
    /// rectangle it covers, with partly covered input pixels weighted by the covered fraction. This is
    /// the right filter for shrinking (no aliasing, no ringing) and it is exact for any ratio, not only
    /// integer ones. It is separable, so it runs as a horizontal pass then a vertical pass. Enlarging
    /// with it gives blocky pixels blended at their borders.
    /// </summary>
    public static Image ResizeArea(Image image, int width, int height)
    {
        if (width <= 0 || height <= 0)
            throw new ArgumentOutOfRangeException(nameof(width), $"cannot resize to {width}x{height}");
        if (width == image.Width && height == image.Height)
            return new Image(width, height, image.Channels, (byte[])image.Pixels.Clone());

        int c = image.Channels;
        var horizontal = AreaWeights(image.Width, width);
        var vertical = AreaWeights(image.Height, height);

        // Horizontal pass: [source rows][width][c], kept in float.
        var rows = new float[image.Height * width * c];
        Parallel.For(0, image.Height, CpuParallel.Options, y =>
        {
            var source = image.Pixels.AsSpan(y * image.Width * c, image.Width * c);
            var destination = rows.AsSpan(y * width * c, width * c);
            for (int x = 0; x < width; x++)
            {
                var (first, weights) = horizontal[x];
                for (int ch = 0; ch < c; ch++)
                {
                    float sum = 0;
                    for (int k = 0; k < weights.Length; k++)
                        sum += weights[k] * source[(first + k) * c + ch];
                    destination[x * c + ch] = sum;
                }
            }
        });

        // Vertical pass, rounding to bytes at the very end only.
        var result = new Image(width, height, c);
        Parallel.For(0, height, CpuParallel.Options, y =>
        {
            var (first, weights) = vertical[y];
            var destination = result.Pixels.AsSpan(y * width * c, width * c);
            for (int i = 0; i < width * c; i++)
            {
                float sum = 0;
                for (int k = 0; k < weights.Length; k++)
                    sum += weights[k] * rows[(first + k) * width * c + i];
                destination[i] = (byte)Math.Clamp(MathF.Round(sum), 0, 255);
            }
        });
        return result;
    }

    /// <summary>
    /// For each of <paramref name="outputSize"/> output pixels along one axis: the first input pixel
    /// it overlaps and the weight of each overlapped input pixel. Output pixel o covers the input
    /// interval [o * in/out, (o + 1) * in/out). Measured in units of 1/out, that is
    /// [o * in, (o + 1) * in) and input pixel i is [i * out, (i + 1) * out), so every overlap is an
    /// exact integer and the weights (overlap / in) sum to exactly one.
    /// </summary>
    internal static (int First, float[] Weights)[] AreaWeights(int inputSize, int outputSize)
    {
        var result = new (int, float[])[outputSize];
        for (int o = 0; o < outputSize; o++)
        {
            long begin = (long)o * inputSize, end = (long)(o + 1) * inputSize;
            int first = (int)(begin / outputSize);
            int last = (int)((end - 1) / outputSize);
            var weights = new float[last - first + 1];
            for (int i = first; i <= last; i++)
            {
                long overlap = Math.Min(end, (long)(i + 1) * outputSize) - Math.Max(begin, (long)i * outputSize);
                weights[i - first] = (float)((double)overlap / inputSize);
            }
            result[o] = (first, weights);
        }
        return result;
    }

    /// <summary>Grey → RGB by copying the grey value to all three channels (alpha kept).</summary>
    public static Image ToRgb(Image image)
    {
        if (!image.IsGrey)
            return image;
        int outChannels = image.HasAlpha ? 4 : 3;
        var result = new Image(image.Width, image.Height, outChannels);
        int pixels = image.Width * image.Height;
        for (int p = 0; p < pixels; p++)
        {
            byte grey = image.Pixels[p * image.Channels];
            result.Pixels[p * outChannels] = grey;
            result.Pixels[p * outChannels + 1] = grey;
            result.Pixels[p * outChannels + 2] = grey;
            if (image.HasAlpha)
                result.Pixels[p * outChannels + 3] = image.Pixels[p * image.Channels + 1];
        }
        return result;
    }

    /// <summary>
    /// RGB → grey by the ITU-R BT.601 luma weights, <c>0.299 R + 0.587 G + 0.114 B</c>, rounded (the
    /// weights most image tools use for "convert to greyscale"); alpha kept.
    /// </summary>
    public static Image ToGrey(Image image)
    {
        if (image.IsGrey)
            return image;
        int outChannels = image.HasAlpha ? 2 : 1;
        var result = new Image(image.Width, image.Height, outChannels);
        int pixels = image.Width * image.Height;
        for (int p = 0; p < pixels; p++)
        {
            int i = p * image.Channels;
            result.Pixels[p * outChannels] = (byte)((299 * image.Pixels[i] + 587 * image.Pixels[i + 1] + 114 * image.Pixels[i + 2] + 500) / 1000);
            if (image.HasAlpha)
                result.Pixels[p * outChannels + 1] = image.Pixels[i + 3];
        }
        return result;
    }

    /// <summary>
    /// Removes alpha by compositing over black: each colour becomes <c>round(colour * alpha / 255)</c>,
    /// so transparent areas turn black and half-transparent edges blend into it. This is what
    /// <see cref="Data.ImageFolder"/> does: the colour stored under a transparent pixel is often
    /// arbitrary, and simply dropping alpha would show it.
    /// </summary>
    public static Image CompositeOnBlack(Image image)
    {
        if (!image.HasAlpha)
            return image;
        int colours = image.Channels - 1;
        var result = new Image(image.Width, image.Height, colours);
        int pixels = image.Width * image.Height;
        for (int p = 0; p < pixels; p++)
        {
            int alpha = image.Pixels[p * image.Channels + colours];
            for (int c = 0; c < colours; c++)
                result.Pixels[p * colours + c] = (byte)((image.Pixels[p * image.Channels + c] * alpha + 127) / 255);
        }
        return result;
    }

    /// <summary>Removes alpha by discarding it: the stored colours are kept as they are.</summary>
    public static Image DropAlpha(Image image)
    {
        if (!image.HasAlpha)
            return image;
        int colours = image.Channels - 1;
        var result = new Image(image.Width, image.Height, colours);
        int pixels = image.Width * image.Height;
        for (int p = 0; p < pixels; p++)
            image.Pixels.AsSpan(p * image.Channels, colours).CopyTo(result.Pixels.AsSpan(p * colours));
        return result;
    }

    /// <summary>
    /// The 8-bit image as the network sees it: channels-first (CHW) floats in [-1, 1],
    /// <c>u / 127.5 - 1</c>. Alpha, if any, is an ordinary channel here; remove it first.
    /// </summary>
    public static float[] ToFloatChw(Image image)
    {
        var result = new float[image.Channels * image.Height * image.Width];
        ToFloatChw(image, result);
        return result;
    }

    /// <summary>Writes <see cref="ToFloatChw(Image)"/> into <paramref name="destination"/>.</summary>
    public static void ToFloatChw(Image image, Span<float> destination)
    {
        int plane = image.Width * image.Height, c = image.Channels;
        if (destination.Length != plane * c)
            throw new ArgumentException($"a {image} image needs {plane * c} floats, the destination holds {destination.Length}");
        for (int p = 0; p < plane; p++)
            for (int ch = 0; ch < c; ch++)
                destination[ch * plane + p] = image.Pixels[p * c + ch] / 127.5f - 1f;
    }

    /// <summary>The byte for a value in [-1, 1]: <c>round((x + 1) * 127.5)</c> clamped to 0..255;
    /// NaN (from a diverged network) becomes 0 so that it stays visible as black.</summary>
    public static byte ToByte(float value)
    {
        if (float.IsNaN(value))
            return 0;
        return (byte)Math.Clamp(MathF.Round((value + 1f) * 127.5f), 0f, 255f);
    }

    /// <summary>The 8-bit image for one CHW float image in [-1, 1] (see <see cref="ToByte"/>).</summary>
    public static Image FromFloatChw(ReadOnlySpan<float> chw, int channels, int height, int width)
    {
        int plane = width * height;
        if (chw.Length != channels * plane)
            throw new ArgumentException($"{channels}x{height}x{width} needs {channels * plane} floats, got {chw.Length}");
        var image = new Image(width, height, channels);
        for (int p = 0; p < plane; p++)
            for (int c = 0; c < channels; c++)
                image.Pixels[p * channels + c] = ToByte(chw[c * plane + p]);
        return image;
    }

    /// <summary>
    /// Tiles <paramref name="count"/> CHW float images in [-1, 1] (one after another in
    /// <paramref name="batch"/>, each <paramref name="channels"/> x <paramref name="resolution"/>²)
    /// into one RGB image: <paramref name="columns"/> per row (0: as square as possible), separated
    /// and surrounded by <paramref name="border"/> pixels of <paramref name="borderValue"/>. Grey
    /// images are shown grey. This is the sample grid written during training.
    /// </summary>
    public static Image Grid(ReadOnlySpan<float> batch, int count, int channels, int resolution,
        int columns = 0, int border = 2, byte borderValue = 0)
    {
        if (count <= 0)
            throw new ArgumentOutOfRangeException(nameof(count), "a grid needs at least one image");
        if (channels is not (1 or 3))
            throw new ArgumentOutOfRangeException(nameof(channels), $"grid images are grey (1) or RGB (3), got {channels}");
        int imageSize = channels * resolution * resolution;
        if (batch.Length < count * imageSize)
            throw new ArgumentException($"{count} images of {channels}x{resolution}x{resolution} need {count * imageSize} floats, got {batch.Length}");
        if (columns <= 0)
            columns = (int)Math.Ceiling(Math.Sqrt(count));
        int rows = (count + columns - 1) / columns;
        int width = columns * resolution + (columns + 1) * border;
        int height = rows * resolution + (rows + 1) * border;
        var grid = new Image(width, height, 3);
        grid.Pixels.AsSpan().Fill(borderValue);
        int plane = resolution * resolution;
        for (int n = 0; n < count; n++)
        {
            int left = border + (n % columns) * (resolution + border);
            int top = border + (n / columns) * (resolution + border);
            var source = batch.Slice(n * imageSize, imageSize);
            for (int y = 0; y < resolution; y++)
            {
                for (int x = 0; x < resolution; x++)
                {
                    int o = ((top + y) * width + left + x) * 3;
                    for (int c = 0; c < 3; c++)
                        grid.Pixels[o + c] = ToByte(source[(channels == 1 ? 0 : c) * plane + y * resolution + x]);
                }
            }
        }
        return grid;
    }
}
