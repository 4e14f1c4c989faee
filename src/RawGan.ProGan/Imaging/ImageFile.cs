using RawGan.ProGan.IO;

namespace RawGan.ProGan.Imaging;

/// <summary>What an image file's header says, read with a bounded read and without decoding.</summary>
/// <param name="Width">Pixels per row.</param>
/// <param name="Height">Rows.</param>
/// <param name="IsGrey">The file stores grey samples (PNG colour types 0 and 4, single-component JPEG).</param>
/// <param name="FileLength">Bytes of the file.</param>
/// <param name="RowBytes">Bytes of decompressed rows the decoder holds besides the picture (PNG's filtered rows; 0 for JPEG).</param>
public sealed record ImageHeader(int Width, int Height, bool IsGrey, long FileLength, long RowBytes)
{
    /// <summary>
    /// Memory one decode and the preparation of its picture take at most, estimated: the file (and,
    /// for PNG, a copy of its compressed data), the rows, the decoded picture (at most 4 bytes per
    /// pixel) and up to three derived pictures of the same size (alpha composited, grey to RGB, the
    /// crop) before it is shrunk to the training resolution.
    /// </summary>
    public long DecodeCost => 2 * FileLength + RowBytes + 4 * 4L * Width * Height;
}

/// <summary>
/// Opens an image file of either format RawGan reads, choosing by the file's first bytes rather
/// than its name (a ".png" that is really a JPEG still loads). Only regular files are opened (the
/// type is checked first, so a named pipe or a device called "x.png" never blocks or streams
/// forever), headers are read with a bounded read, and files larger than
/// <see cref="MaxFileBytes"/> are refused before reading.
/// </summary>
public static class ImageFile
{
    /// <summary>File name extensions an image folder scan picks up (compared case-insensitively).</summary>
    public static readonly IReadOnlyList<string> Extensions = [".png", ".jpg", ".jpeg"];

    /// <summary>The largest image file RawGan reads: 1 GiB (a picture at <see cref="Png.MaxPixels"/>
    /// with 16-bit RGBA samples, stored uncompressed, just fits).</summary>
    public const long MaxFileBytes = 1L << 30;

    /// <summary>
    /// Decodes the PNG or JPEG at <paramref name="path"/>. Throws <see cref="InvalidFileException"/>
    /// for anything else, a corrupt file, or an entry that is not a regular file;
    /// <see cref="InvalidOperationException"/> for a JPEG when libturbojpeg is missing.
    /// </summary>
    public static Image Load(string path)
    {
        RequireRegular(path);
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
        var header = ReadHeader(path);
        return (header.Width, header.Height, header.IsGrey);
    }

    /// <summary>
    /// Reads the header with a bounded read: PNG's first 33 bytes; JPEG's segments up to the start
    /// of the scan, skipping (not reading) metadata segments such as EXIF, at most
    /// <see cref="Jpeg.MaxHeaderBytes"/> kept. Throws as <see cref="Load"/> does.
    /// </summary>
    public static ImageHeader ReadHeader(string path)
    {
        var status = RequireRegular(path);
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 4096);
        var start = new byte[64];
        int filled = stream.ReadAtLeast(start, start.Length, throwOnEndOfStream: false);
        start = start[..filled];
        if (Png.HasSignature(start))
        {
            var info = Png.ReadInfo(start, path);
            return new ImageHeader(info.Width, info.Height, info.IsGrey, status.Length, Png.RowBytes(info));
        }
        if (Jpeg.HasSignature(start))
        {
            stream.Position = 0;
            var (width, height, grey) = Jpeg.ReadInfo(Jpeg.ReadHeaderSegments(stream, path), path);
            return new ImageHeader(width, height, grey, status.Length, 0);
        }
        throw new InvalidFileException(path, $"neither PNG nor JPEG (it starts with the bytes {Describe(start)})");
    }

    /// <summary>The file's status, if it is a regular file (symbolic links followed) of at most <see cref="MaxFileBytes"/>.</summary>
    private static FileStatus RequireRegular(string path)
    {
        var status = FileStatus.Of(path);
        if (status.Kind == FileKind.Missing)
            throw new FileNotFoundException($"{path}: no such file", path);
        if (status.Kind != FileKind.Regular)
            throw new InvalidFileException(path, $"{FileStatus.Describe(status.Kind)}, not a regular file (not opened)");
        if (status.Length > MaxFileBytes)
            throw new InvalidFileException(path, $"{status.Length >> 20:N0} MB is more than the {MaxFileBytes >> 20:N0} MB RawGan reads from one image file");
        return status;
    }

    private static string Describe(ReadOnlySpan<byte> bytes) =>
        bytes.IsEmpty ? "(none: the file is empty)" : Convert.ToHexString(bytes[..Math.Min(8, bytes.Length)]);
}
