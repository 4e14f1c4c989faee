using System.Buffers.Binary;
using Microsoft.Win32.SafeHandles;
using RawGan.ProGan.IO;
using SkiaSharp;

namespace RawGan.ProGan.Imaging;

/// <summary>What an image file's header says, read with a bounded read and without decoding.</summary>
/// <param name="Format">"PNG", "JPEG", "WebP", "BMP" or "GIF".</param>
/// <param name="Width">Pixels per row, as the picture is shown (after its EXIF orientation).</param>
/// <param name="Height">Rows, as the picture is shown.</param>
/// <param name="IsGrey">The file stores grey samples (PNG colour types 0 and 4, single-component JPEG).</param>
/// <param name="Orientation">The EXIF orientation, 1 to 8 (1: stored as shown; JPEG and WebP carry one). A header
/// read sees it in the bytes it read: a WebP may keep its EXIF after the picture, beyond them; decoding reads it there.</param>
/// <param name="FileLength">Bytes of the file.</param>
public sealed record ImageHeader(string Format, int Width, int Height, bool IsGrey, int Orientation, long FileLength)
{
    /// <summary>
    /// Bytes per pixel one decode and the preparation of its picture take at most, estimated: the
    /// decoder's own working memory (up to 8: a progressive JPEG's coefficients take 2 bytes per
    /// sample of up to 4 components, an interlaced PNG is held whole before its rows come out), the
    /// decoded RGBA picture (4), the picture in its own channels and orientation (at most 4) and up
    /// to three derived pictures of at most 4 (alpha composited, grey to RGB, the crop) before it is
    /// shrunk to the training resolution.
    /// </summary>
    public const int BytesPerPixelAtMost = 8 + 4 + 4 + 3 * 4;

    /// <summary>Memory one decode and the preparation of its picture take at most, estimated: the
    /// file, read whole, and <see cref="BytesPerPixelAtMost"/> per pixel.</summary>
    public long DecodeCost => FileLength + BytesPerPixelAtMost * (long)Width * Height;
}

/// <summary>
/// Reads the image files RawGan trains on, with Skia's codecs (through SkiaSharp): PNG (every bit
/// depth and colour type, palettes, Adam7 interlacing), JPEG (baseline, progressive, grey, CMYK),
/// WebP (lossy and lossless), BMP and GIF (its first frame). The format is chosen by the file's first
/// bytes rather than its name (a ".png" that is really a JPEG still loads). The EXIF orientation of
/// JPEG and WebP files is applied, so a picture comes out as it is shown.
///
/// Every decoder returns an 8-bit <see cref="Image"/> in the channels the file stores: grey (PNG
/// colour types 0 and 4, single-component JPEG) is 1 channel, or 2 with alpha; anything else is RGB,
/// or RGBA when the file has transparency (an alpha channel, PNG's tRNS, a transparent GIF colour).
/// Alpha is straight (not premultiplied); 16-bit samples keep their high byte (Skia's reduction:
/// <c>v &gt;&gt; 8</c>, at most one level below <c>round(v / 257)</c>), palettes are expanded, CMYK
/// is converted to RGB. Colour profiles are not applied: samples are taken as they are stored.
///
/// Files come from users, so the protections are RawGan's, not left to the library: only regular
/// files are opened (the type is checked first, so a named pipe or a device called "x.png" never
/// blocks or streams forever, and again on the open file); on Linux files are opened by the bytes
/// of their names (<see cref="NativePath"/>), which need not be UTF-8; files over
/// <see cref="MaxFileBytes"/> are refused before reading; headers are read with a bounded read
/// (<see cref="MaxHeaderBytes"/> at most); the size a header announces is checked against <see cref="MaxPixels"/> and <see cref="MaxSide"/> (and, for PNG,
/// against what the file's bytes can hold) before any picture is allocated; a file that ends early
/// or whose data are corrupt is refused, never half decoded. Every problem is an
/// <see cref="InvalidFileException"/> naming the file, in one line.
/// </summary>
public static unsafe class ImageFile
{
    /// <summary>File name extensions an image folder scan picks up (compared case-insensitively).</summary>
    public static readonly IReadOnlyList<string> Extensions = [".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif"];

    /// <summary>The formats, as users know them, for messages.</summary>
    public const string FormatNames = "PNG, JPEG, WebP, BMP or GIF";

    /// <summary>The largest image file RawGan reads: 1 GiB (a picture at <see cref="MaxPixels"/>
    /// with 16-bit RGBA samples, stored uncompressed, just fits).</summary>
    public const long MaxFileBytes = 1L << 30;

    /// <summary>
    /// The largest picture RawGan decodes: 2^27 pixels (about 134 megapixels, e.g. 11585 x 11585).
    /// A header asking for more is far more likely corrupt than real, and a GAN trains on a few
    /// hundred pixels a side anyway.
    /// </summary>
    public const long MaxPixels = 1L << 27;

    /// <summary>
    /// The longest side RawGan decodes: 65535 pixels, JPEG's own limit. A PNG may claim up to
    /// 2^31-1 a side; a crafted very wide one within <see cref="MaxPixels"/> is a row of gigabytes
    /// that a centre crop would shrink to a few pixels anyway.
    /// </summary>
    public const int MaxSide = 65535;

    /// <summary>
    /// The most of a file read to find its header. The first read takes <see cref="FirstHeaderRead"/>
    /// bytes; a header that goes on longer (a JPEG's metadata segments before its frame header: EXIF
    /// with a thumbnail, ICC profiles, XMP) is read again with four times as many, up to this.
    /// </summary>
    public const int MaxHeaderBytes = 16 << 20;

    /// <summary>The first read of a header: enough for most files' headers (a JPEG's EXIF with its
    /// thumbnail, or a PNG's colour profile, may take a second or third read). A folder scan reads
    /// every file's header, so this is what it reads of most files.</summary>
    public const int FirstHeaderRead = 4 << 10;

    /// <summary>
    /// Deflate cannot expand data by more than about 1032:1 (a 258-byte match costs at least two
    /// bits), so a PNG file smaller than 1/1032 of the rows its header announces is truncated or lies.
    /// </summary>
    private const long MaxDeflateExpansion = 1032;

    private static readonly Lazy<string?> NativeProblem = new(() =>
    {
        try
        {
            _ = SKCodec.MinBufferedBytesNeeded;
            return null;
        }
        catch (Exception e) when (e is DllNotFoundException or TypeInitializationException or EntryPointNotFoundException or BadImageFormatException)
        {
            return "image files are read with SkiaSharp, whose native library (libSkiaSharp) could not be loaded: " +
                   $"{(e.InnerException ?? e).Message.ReplaceLineEndings(" ")}; it ships beside the program, so reinstall or republish it";
        }
    });

    /// <summary>
    /// Decodes the image at <paramref name="path"/>. Throws <see cref="InvalidFileException"/> for a
    /// file that is not one of the formats, is corrupt or truncated, is too large, or is not a
    /// regular file; <see cref="InvalidOperationException"/> when SkiaSharp's native library is missing.
    /// </summary>
    public static Image Load(string path) => Load(NativePath.Of(path));

    /// <summary>
    /// Decodes the image at <paramref name="path"/> (on Linux, opened by its bytes; messages name it
    /// as <see cref="NativePath.Shown"/>). Throws as <see cref="Load(string)"/> does.
    /// </summary>
    public static Image Load(NativePath path)
    {
        using var handle = OpenRegular(path, out var status);
        return Decode(ReadAll(handle, status.Length), path.Shown);
    }

    /// <summary>
    /// Decodes an image file held in memory. <paramref name="fileName"/> names the file in error
    /// messages. Throws as <see cref="Load(string)"/> does.
    /// </summary>
    public static Image Decode(ReadOnlySpan<byte> file, string fileName)
    {
        RequireNative();
        if (file.IsEmpty)
            throw new InvalidFileException(fileName, "the file is empty");
        fixed (byte* bytes = file)
        {
            using var data = SKData.Create((nint)bytes, file.Length);
            using var codec = Open(data, file, fileName, wholeFile: true, out _)!;
            var header = Describe(codec, file, file.Length, fileName);
            if (header.Format == "JPEG" && !EndsItsScans(file))
                throw new InvalidFileException(fileName, "the JPEG data end before its end-of-image marker (truncated?)");
            return DecodePixels(codec, header, fileName);
        }
    }

    /// <summary>
    /// Reads only the header of the file at <paramref name="path"/>, with a bounded read (see
    /// <see cref="ReadHeader(Stream, string)"/>). Throws as <see cref="Load(string)"/> does.
    /// </summary>
    public static ImageHeader ReadHeader(string path) => ReadHeader(NativePath.Of(path));

    /// <summary>
    /// Reads only the header of the file at <paramref name="path"/> (on Linux, opened by its
    /// bytes; messages name it as <see cref="NativePath.Shown"/>), as <see cref="ReadHeader(string)"/>.
    /// </summary>
    public static ImageHeader ReadHeader(NativePath path)
    {
        using var handle = OpenRegular(path, out _);
        using var stream = new FileStream(handle, FileAccess.Read, 0);
        return ReadHeader(stream, path.Shown);
    }

    /// <summary>
    /// Reads the header from <paramref name="stream"/>'s current position: its first
    /// <see cref="FirstHeaderRead"/> bytes, and more (four times as many each time, up to
    /// <see cref="MaxHeaderBytes"/>) only while they do not hold the whole header. Checks the
    /// announced size against the limits. <paramref name="fileName"/> names the file in messages.
    /// </summary>
    public static ImageHeader ReadHeader(Stream stream, string fileName)
    {
        RequireNative();
        long length = stream.CanSeek ? stream.Length - stream.Position : long.MaxValue;
        var buffer = new byte[Math.Min(length, FirstHeaderRead)];
        int filled = 0;
        while (true)
        {
            filled += stream.ReadAtLeast(buffer.AsSpan(filled), buffer.Length - filled, throwOnEndOfStream: false);
            bool whole = filled < buffer.Length || filled == length;
            if (filled == 0)
                throw new InvalidFileException(fileName, "the file is empty");
            var start = buffer.AsSpan(0, filled);
            fixed (byte* bytes = start)
            {
                using var data = SKData.Create((nint)bytes, filled);
                using var codec = Open(data, start, fileName, whole, out _);
                if (codec is not null)
                    return Describe(codec, start, whole ? filled : length, fileName);
            }
            if (buffer.Length >= MaxHeaderBytes)
                throw new InvalidFileException(fileName,
                    $"no picture size in its first {MaxHeaderBytes >> 20} MiB (corrupt, or metadata before the picture larger than RawGan reads)");
            Array.Resize(ref buffer, (int)Math.Min(Math.Min(length, MaxHeaderBytes), buffer.Length * 4L));
        }
    }

    /// <summary>
    /// A codec for <paramref name="data"/> (which is <paramref name="bytes"/>), or, when the bytes
    /// may be only the start of the file (<paramref name="wholeFile"/> false) and do not hold the
    /// whole header, null with Skia's result. Anything else that fails is an
    /// <see cref="InvalidFileException"/>.
    /// </summary>
    private static SKCodec? Open(SKData data, ReadOnlySpan<byte> bytes, string fileName, bool wholeFile, out SKCodecResult result)
    {
        if (!HasSignature(bytes))
            throw NotAnImage(bytes, fileName);
        CheckPngSize(bytes, fileName);
        var codec = SKCodec.Create(new SKMemoryStream(data), out result);
        if (codec is not null || !wholeFile)
            return codec;
        throw new InvalidFileException(fileName, result == SKCodecResult.IncompleteInput
            ? $"the file ends at byte {bytes.Length}, inside the image's header (truncated?)"
            : $"the image's header is not readable ({Explain(result)})");
    }

    private static void CheckSize(long width, long height, string fileName)
    {
        if (width * height > MaxPixels)
            throw new InvalidFileException(fileName,
                $"{width}x{height} is {width * height / 1_000_000} megapixels, more than RawGan's limit of {MaxPixels / 1_000_000}; scale the image down first");
        if (width > MaxSide || height > MaxSide)
            throw new InvalidFileException(fileName,
                $"{width}x{height} has a side longer than RawGan's limit of {MaxSide} pixels; scale the image down first");
    }

    /// <summary>
    /// A PNG states its size in the first 24 bytes (signature, then IHDR's length, type, width and
    /// height, big-endian); it is checked before Skia reads the file, which refuses sides beyond
    /// libpng's own limit with a less telling answer.
    /// </summary>
    private static void CheckPngSize(ReadOnlySpan<byte> start, string fileName)
    {
        if (start.Length < 24 || start[0] != 137 || !start[12..16].SequenceEqual("IHDR"u8))
            return;
        CheckSize(BinaryPrimitives.ReadUInt32BigEndian(start[16..]), BinaryPrimitives.ReadUInt32BigEndian(start[20..]), fileName);
    }

    /// <summary>
    /// True when the JPEG data end with the end-of-image marker (FF D9) after the last scan's header
    /// (FF DA), trailing bytes allowed. Neither pair can occur inside a scan's entropy-coded data
    /// (an FF there is followed by 00 or a restart marker), so a file cut inside or between its scans
    /// has no FF D9 after its last FF DA. Skia reads such a file without complaint when it is
    /// progressive: the scans that are there give a blurred picture.
    /// </summary>
    private static bool EndsItsScans(ReadOnlySpan<byte> file) =>
        file.LastIndexOf((ReadOnlySpan<byte>)[0xFF, 0xD9]) > file.LastIndexOf((ReadOnlySpan<byte>)[0xFF, 0xDA]);

    /// <summary>
    /// True when <paramref name="start"/> begins as one of the five formats does: PNG's 8-byte
    /// signature, JPEG's start-of-image marker and the first marker's FF, "GIF8", "BM", or a RIFF
    /// container of WEBP. Checked before Skia sees the bytes: Skia reads more formats (ICO, WBMP,
    /// which has no signature and takes some random data for a picture), and RawGan only these.
    /// </summary>
    private static bool HasSignature(ReadOnlySpan<byte> start) =>
        start.StartsWith((ReadOnlySpan<byte>)[137, 80, 78, 71, 13, 10, 26, 10])
        || start.StartsWith((ReadOnlySpan<byte>)[0xFF, 0xD8, 0xFF])
        || start.StartsWith("GIF8"u8)
        || start.StartsWith("BM"u8)
        || (start.Length >= 12 && start.StartsWith("RIFF"u8) && start[8..12].SequenceEqual("WEBP"u8));

    private static InvalidFileException NotAnImage(ReadOnlySpan<byte> start, string fileName) =>
        new(fileName, $"not {FormatNames} (it starts with the bytes {Convert.ToHexString(start[..Math.Min(8, start.Length)])})");

    /// <summary>The header <paramref name="codec"/> read, checked against RawGan's limits.</summary>
    private static ImageHeader Describe(SKCodec codec, ReadOnlySpan<byte> start, long fileLength, string fileName)
    {
        string format = codec.EncodedFormat switch
        {
            SKEncodedImageFormat.Png => "PNG",
            SKEncodedImageFormat.Jpeg => "JPEG",
            SKEncodedImageFormat.Webp => "WebP",
            SKEncodedImageFormat.Bmp => "BMP",
            SKEncodedImageFormat.Gif => "GIF",
            var other => throw new InvalidFileException(fileName, $"an image in the {other.ToString().ToUpperInvariant()} format; RawGan reads {FormatNames}"),
        };
        var info = codec.Info;
        long width = info.Width, height = info.Height;
        if (width <= 0 || height <= 0)
            throw new InvalidFileException(fileName, $"{format} header gives the size {width}x{height}");
        CheckSize(width, height, fileName);
        if (format == "PNG")
        {
            // Each row is a filter byte and at least one bit per pixel, however the rows are filtered or interlaced.
            long leastRows = height * (1 + (width + 7) / 8);
            if (leastRows > fileLength * MaxDeflateExpansion + 64)
                throw new InvalidFileException(fileName,
                    $"a file of {fileLength} bytes cannot hold a {width}x{height} PNG (at least {leastRows} bytes of rows, which deflate " +
                    $"packs at most {MaxDeflateExpansion}:1); the file is truncated or its header is wrong");
        }
        // Skia reports single-component JPEGs and PNGs of colour type 0 as grey; a PNG of colour
        // type 4 (grey + alpha) it reports as RGBA, so the colour type is read from IHDR (byte 25).
        bool grey = info.ColorType == SKColorType.Gray8 || (format == "PNG" && start.Length > 25 && start[25] is 0 or 4);
        int orientation = (int)codec.EncodedOrigin is >= 1 and <= 8 and var o ? o : 1;
        bool turned = orientation >= 5;
        return new ImageHeader(format, (int)(turned ? height : width), (int)(turned ? width : height), grey, orientation, fileLength);
    }

    /// <summary>Decodes the first frame into 8-bit grey or straight RGBA, then arranges it in the file's channels and orientation.</summary>
    private static Image DecodePixels(SKCodec codec, ImageHeader header, string fileName)
    {
        var stored = codec.Info;
        bool alpha = stored.AlphaType != SKAlphaType.Opaque;
        bool greyOnly = header.IsGrey && !alpha;
        // No colour space: Skia converts the encoding (palette, 16 bits, CMYK, YCbCr) but not the colours.
        var target = new SKImageInfo(stored.Width, stored.Height,
            greyOnly ? SKColorType.Gray8 : SKColorType.Rgba8888,
            alpha ? SKAlphaType.Unpremul : SKAlphaType.Opaque, null);
        int sourceChannels = greyOnly ? 1 : 4;
        var pixels = new byte[(long)stored.Width * stored.Height * sourceChannels];
        var options = new SKCodecOptions(0, -1) { ZeroInitialized = SKZeroInitialized.Yes };
        SKCodecResult result;
        fixed (byte* destination = pixels)
            result = codec.GetPixels(target, (nint)destination, stored.Width * sourceChannels, options);
        if (result != SKCodecResult.Success)
            throw new InvalidFileException(fileName, result == SKCodecResult.IncompleteInput
                ? $"the {header.Format} data end before the picture does (truncated?)"
                : $"the {header.Format} data are not decodable ({Explain(result)})");
        int channels = greyOnly ? 1 : header.IsGrey ? 2 : alpha ? 4 : 3;
        return Arrange(pixels, sourceChannels, stored.Width, stored.Height, channels, header.Orientation);
    }

    private static string Explain(SKCodecResult result) => result switch
    {
        SKCodecResult.IncompleteInput => "the data end early",
        SKCodecResult.ErrorInInput => "the decoder met an error in the data: corrupt",
        SKCodecResult.InvalidInput => "the data are corrupt",
        SKCodecResult.Unimplemented => "it uses a feature the decoder does not implement",
        _ => $"the decoder answers {result}",
    };

    /// <summary>
    /// The picture in <paramref name="channels"/> channels, turned upright. The source is
    /// <paramref name="width"/> x <paramref name="height"/> pixels of 1 (grey) or 4 (RGBA) bytes;
    /// with 2 channels the result is grey (red) and alpha. Shown pixel (X, Y) is the stored pixel
    /// at <c>start + X * stepX + Y * stepY</c>, each EXIF orientation one choice of the three: the
    /// orientation says where the stored first row and first column go (6: the first row becomes the
    /// right column, the first column the top row, that is a turn of 90 degrees clockwise).
    /// </summary>
    internal static Image Arrange(byte[] source, int sourceChannels, int width, int height, int channels, int orientation)
    {
        if (orientation == 1 && channels == sourceChannels)
            return new Image(width, height, channels, source);
        int last = (height - 1) * width, right = width - 1;
        var (start, stepX, stepY) = orientation switch
        {
            2 => (right, -1, width),            // mirrored left to right
            3 => (last + right, -1, -width),    // turned 180 degrees
            4 => (last, 1, -width),             // mirrored top to bottom
            5 => (0, width, 1),                 // mirrored along the main diagonal (transposed)
            6 => (last, -width, 1),             // to be turned 90 degrees clockwise
            7 => (last + right, -width, -1),    // mirrored along the other diagonal
            8 => (right, width, -1),            // to be turned 90 degrees anticlockwise
            _ => (0, 1, width),
        };
        bool turned = orientation >= 5;
        int shownWidth = turned ? height : width, shownHeight = turned ? width : height;
        var image = new Image(shownWidth, shownHeight, channels);
        var output = image.Pixels;
        int alphaOffset = sourceChannels - 1;
        int o = 0;
        for (int y = 0; y < shownHeight; y++)
        {
            int p = start + y * stepY;
            for (int x = 0; x < shownWidth; x++, p += stepX)
            {
                int s = p * sourceChannels;
                switch (channels)
                {
                    case 1:
                        output[o++] = source[s];
                        break;
                    case 2:
                        output[o++] = source[s];
                        output[o++] = source[s + alphaOffset];
                        break;
                    default:
                        output[o++] = source[s];
                        output[o++] = source[s + 1];
                        output[o++] = source[s + 2];
                        if (channels == 4) output[o++] = source[s + 3];
                        break;
                }
            }
        }
        return image;
    }

    /// <summary>
    /// Opens the file, if it is a regular file (symbolic links followed) of at most
    /// <see cref="MaxFileBytes"/>: checked by its path before opening it (a named pipe or a device
    /// is never opened), and again on the open file (in case another file took its place between).
    /// <paramref name="status"/> is the open file's.
    /// </summary>
    private static SafeFileHandle OpenRegular(NativePath path, out FileStatus status)
    {
        Require(FileStatus.Of(path), path.Shown, opened: false);
        var handle = path.OpenRead();
        try
        {
            status = FileStatus.Of(handle);
            Require(status, path.Shown, opened: true);
            return handle;
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    private static void Require(FileStatus status, string shown, bool opened)
    {
        if (status.Kind == FileKind.Missing)
            throw new FileNotFoundException($"{shown}: no such file", shown);
        if (status.Kind != FileKind.Regular)
            throw new InvalidFileException(shown, $"{FileStatus.Describe(status.Kind)}, not a regular file ({(opened ? "not read" : "not opened")})");
        if (status.Length > MaxFileBytes)
            throw new InvalidFileException(shown, $"{status.Length >> 20:N0} MB is more than the {MaxFileBytes >> 20:N0} MB RawGan reads from one image file");
    }

    /// <summary>The first <paramref name="length"/> bytes of the open file (fewer if it has since become shorter).</summary>
    private static byte[] ReadAll(SafeFileHandle handle, long length)
    {
        var bytes = new byte[length];
        int filled = 0;
        while (filled < bytes.Length)
        {
            int read = RandomAccess.Read(handle, bytes.AsSpan(filled), filled);
            if (read == 0) return bytes[..filled];
            filled += read;
        }
        return bytes;
    }

    /// <summary>Throws <see cref="InvalidOperationException"/>, saying what to do, when SkiaSharp's native library cannot be loaded.</summary>
    internal static void RequireNative()
    {
        if (NativeProblem.Value is { } problem)
            throw new InvalidOperationException(problem);
    }
}
