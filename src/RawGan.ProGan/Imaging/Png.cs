using RawGan.ProGan.IO;
using SkiaSharp;

namespace RawGan.ProGan.Imaging;

/// <summary>
/// Writes PNG files (the grids, frames and single images RawGan makes) with Skia's PNG encoder.
/// Reading goes through <see cref="ImageFile"/>, which reads PNG among the other formats.
/// </summary>
public static unsafe class Png
{
    /// <summary>
    /// Encodes an 8-bit image as PNG: grey as colour type 0, RGB as 2, RGBA as 6 (straight alpha),
    /// not interlaced, no colour profile; grey + alpha, which Skia does not write, as RGBA with the
    /// grey repeated. libpng picks each row's filter among all five, and zlib compresses at level 6.
    /// </summary>
    public static byte[] Encode(Image image)
    {
        ArgumentNullException.ThrowIfNull(image);
        ImageFile.RequireNative();
        byte[] pixels = image.Channels is 1 or 4 ? image.Pixels : ToRgba(image);
        var info = new SKImageInfo(image.Width, image.Height,
            image.Channels == 1 ? SKColorType.Gray8 : SKColorType.Rgba8888,
            image.HasAlpha ? SKAlphaType.Unpremul : SKAlphaType.Opaque, null);
        fixed (byte* address = pixels)
        {
            using var pixmap = new SKPixmap(info, (nint)address, info.RowBytes);
            using var data = pixmap.Encode(new SKPngEncoderOptions(SKPngEncoderFilterFlags.AllFilters, 6))
                ?? throw new InvalidOperationException($"Skia's PNG encoder refused a {image} picture");
            return data.ToArray();
        }
    }

    /// <summary>Encodes <paramref name="image"/> and writes it atomically to <paramref name="path"/>.</summary>
    public static void Save(string path, Image image) => AtomicFile.WriteAllBytes(path, Encode(image));

    private static byte[] ToRgba(Image image)
    {
        var rgba = new byte[(long)image.Width * image.Height * 4];
        var source = image.Pixels;
        bool grey = image.IsGrey;
        for (int p = 0, s = 0; p < rgba.Length; p += 4, s += image.Channels)
        {
            rgba[p] = source[s];
            rgba[p + 1] = grey ? source[s] : source[s + 1];
            rgba[p + 2] = grey ? source[s] : source[s + 2];
            rgba[p + 3] = image.HasAlpha ? source[s + image.Channels - 1] : (byte)255;
        }
        return rgba;
    }
}
