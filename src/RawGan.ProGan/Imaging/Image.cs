namespace RawGan.ProGan.Imaging;

/// <summary>
/// An 8-bit image in memory: <see cref="Height"/> rows of <see cref="Width"/> pixels, each pixel
/// <see cref="Channels"/> bytes, interleaved (HWC), top row first. The channel count says the mode:
/// 1 grey, 2 grey + alpha, 3 RGB, 4 RGBA. Alpha is straight (not premultiplied), 255 = opaque.
/// Every decoder in RawGan produces this, whatever the file stored (16-bit samples are reduced to
/// 8 bits, palettes are expanded), and the network-facing code converts it to float CHW with
/// <see cref="ImageOps.ToFloatChw(Image)"/>.
/// </summary>
public sealed class Image
{
    public Image(int width, int height, int channels, byte[] pixels)
    {
        if (width <= 0 || height <= 0)
            throw new ArgumentOutOfRangeException(nameof(width), $"an image is at least 1x1, got {width}x{height}");
        if (channels is < 1 or > 4)
            throw new ArgumentOutOfRangeException(nameof(channels), $"channels must be 1 (grey), 2 (grey+alpha), 3 (RGB) or 4 (RGBA), got {channels}");
        ArgumentNullException.ThrowIfNull(pixels);
        if (pixels.LongLength != (long)width * height * channels)
            throw new ArgumentException($"a {width}x{height}x{channels} image needs {(long)width * height * channels} bytes, got {pixels.LongLength}", nameof(pixels));
        Width = width;
        Height = height;
        Channels = channels;
        Pixels = pixels;
    }

    /// <summary>A black (and, with alpha, transparent) image.</summary>
    public Image(int width, int height, int channels)
        : this(width, height, channels, new byte[checked(width * height * channels)])
    {
    }

    public int Width { get; }
    public int Height { get; }
    /// <summary>1 grey, 2 grey + alpha, 3 RGB, 4 RGBA.</summary>
    public int Channels { get; }
    /// <summary>Row-major, channels interleaved: the sample (x, y, c) is at <c>(y * Width + x) * Channels + c</c>.</summary>
    public byte[] Pixels { get; }

    public bool HasAlpha => Channels is 2 or 4;
    public bool IsGrey => Channels is 1 or 2;

    public byte this[int x, int y, int channel]
    {
        get => Pixels[(y * Width + x) * Channels + channel];
        set => Pixels[(y * Width + x) * Channels + channel] = value;
    }

    public override string ToString() =>
        $"{Width}x{Height} {Channels switch { 1 => "grey", 2 => "grey+alpha", 3 => "RGB", _ => "RGBA" }}";
}
