using RawGan.ProGan.IO;

namespace RawGan.ProGan.Imaging;

/// <summary>
/// Opens an image file of either format RawGan reads, choosing by the file's first bytes rather
/// than its name (a ".png" that is really a JPEG still loads).
/// </summary>
public static class ImageFile
{
    /// <summary>File name extensions an image folder scan picks up (compared case-insensitively).</summary>
    public static readonly IReadOnlyList<string> Extensions = [".png", ".jpg", ".jpeg"];

    /// <summary>
    /// Decodes the PNG or JPEG at <paramref name="path"/>. Throws <see cref="InvalidFileException"/>
    /// for anything else or a corrupt file, <see cref="InvalidOperationException"/> for a JPEG when
    /// libturbojpeg is missing.
    /// </summary>
    public static Image Load(string path)
    {
        byte[] bytes = File.ReadAllBytes(path);
        if (Png.HasSignature(bytes))
            return Png.Decode(bytes, path);
        if (Jpeg.HasSignature(bytes))
            return Jpeg.Decode(bytes, path);
        throw new InvalidFileException(path, $"neither PNG nor JPEG (it starts with the bytes {Describe(bytes)})");
    }

    /// <summary>
    /// Reads only the header: size and whether the file stores grey samples (PNG colour types 0
    /// and 4, single-component JPEG).
    /// </summary>
    public static (int Width, int Height, bool IsGrey) ReadInfo(string path)
    {
        byte[] start = ReadStart(path, 64);
        if (Png.HasSignature(start))
        {
            var info = Png.ReadInfo(start, path);
            return (info.Width, info.Height, info.IsGrey);
        }
        if (Jpeg.HasSignature(start))
            return Jpeg.ReadInfo(File.ReadAllBytes(path), path); // the frame header may sit after large EXIF blocks
        throw new InvalidFileException(path, $"neither PNG nor JPEG (it starts with the bytes {Describe(start)})");
    }

    private static byte[] ReadStart(string path, int count)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1);
        var buffer = new byte[count];
        int filled = stream.ReadAtLeast(buffer, count, throwOnEndOfStream: false);
        return buffer[..filled];
    }

    private static string Describe(ReadOnlySpan<byte> bytes) =>
        bytes.IsEmpty ? "(none: the file is empty)" : Convert.ToHexString(bytes[..Math.Min(8, bytes.Length)]);
}
