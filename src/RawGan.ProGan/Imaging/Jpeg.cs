using System.Runtime.InteropServices;
using RawGan.ProGan.IO;

namespace RawGan.ProGan.Imaging;

/// <summary>
/// JPEG decoding through the system's TurboJPEG library (libjpeg-turbo's simple API), bound here
/// with function pointers looked up at run time. Writing a JPEG decoder by hand (Huffman, IDCT,
/// chroma upsampling, progressive scans) would be a project of its own; TurboJPEG is on every Linux
/// distribution, and when it is missing only JPEG files are affected: PNG works without it.
///
/// Colour JPEGs decode to RGB, greyscale JPEGs to grey. CMYK JPEGs are refused with a message.
/// </summary>
public static unsafe class Jpeg
{
    /// <summary>What the user is told when the library is not installed.</summary>
    public const string MissingLibraryMessage =
        "JPEG needs libturbojpeg (Debian/Ubuntu: apt-get install libturbojpeg0; Fedora: dnf install turbojpeg; " +
        "macOS: brew install jpeg-turbo; Windows: put turbojpeg.dll beside the program); PNG works without it";

    // turbojpeg.h constants (libjpeg-turbo 2.x, stable since 1.2).
    private const int PixelFormatRgb = 0;    // TJPF_RGB
    private const int PixelFormatGrey = 6;   // TJPF_GRAY
    private const int ColourSpaceGrey = 2;   // TJCS_GRAY
    private const int ColourSpaceCmyk = 3;   // TJCS_CMYK
    private const int ColourSpaceYcck = 4;   // TJCS_YCCK
    private const int FlagAccurateDct = 4096; // TJFLAG_ACCURATEDCT: the exact integer IDCT, not the fast approximation
    private const int ErrorWarning = 0;       // TJERR_WARNING, from tjGetErrorCode

    /// <summary>The bound entry points of libturbojpeg, or the reason they could not be bound.</summary>
    private sealed class Library
    {
        public delegate* unmanaged<nint> InitDecompress;
        public delegate* unmanaged<nint, byte*, CULong, int*, int*, int*, int*, int> DecompressHeader3;
        public delegate* unmanaged<nint, byte*, CULong, byte*, int, int, int, int, int, int> Decompress2;
        public delegate* unmanaged<nint, byte*> GetErrorStr2;
        public delegate* unmanaged<nint, int> GetErrorCode;
        public delegate* unmanaged<nint, int> Destroy;
    }

    private static readonly Lazy<(Library? Library, string? Problem)> Loaded = new(LoadLibrary);

    /// <summary>True when libturbojpeg was found and bound.</summary>
    public static bool IsAvailable => Loaded.Value.Library is not null;

    /// <summary>True when <paramref name="fileStart"/> begins with a JPEG start-of-image marker.</summary>
    public static bool HasSignature(ReadOnlySpan<byte> fileStart) =>
        fileStart.Length >= 3 && fileStart[0] == 0xFF && fileStart[1] == 0xD8 && fileStart[2] == 0xFF;

    private static (Library?, string?) LoadLibrary()
    {
        string[] names = OperatingSystem.IsWindows() ? ["turbojpeg.dll", "turbojpeg"]
            : OperatingSystem.IsMacOS() ? ["libturbojpeg.0.dylib", "libturbojpeg.dylib", "/opt/homebrew/opt/jpeg-turbo/lib/libturbojpeg.dylib", "/usr/local/opt/jpeg-turbo/lib/libturbojpeg.dylib"]
            : ["libturbojpeg.so.0", "libturbojpeg.so"];
        foreach (string name in names)
        {
            if (!NativeLibrary.TryLoad(name, out nint handle))
                continue;
            try
            {
                return (new Library
                {
                    InitDecompress = (delegate* unmanaged<nint>)NativeLibrary.GetExport(handle, "tjInitDecompress"),
                    DecompressHeader3 = (delegate* unmanaged<nint, byte*, CULong, int*, int*, int*, int*, int>)NativeLibrary.GetExport(handle, "tjDecompressHeader3"),
                    Decompress2 = (delegate* unmanaged<nint, byte*, CULong, byte*, int, int, int, int, int, int>)NativeLibrary.GetExport(handle, "tjDecompress2"),
                    GetErrorStr2 = (delegate* unmanaged<nint, byte*>)NativeLibrary.GetExport(handle, "tjGetErrorStr2"),
                    GetErrorCode = (delegate* unmanaged<nint, int>)NativeLibrary.GetExport(handle, "tjGetErrorCode"),
                    Destroy = (delegate* unmanaged<nint, int>)NativeLibrary.GetExport(handle, "tjDestroy"),
                }, null);
            }
            catch (EntryPointNotFoundException ex)
            {
                return (null, $"{name} is too old (libjpeg-turbo 1.5 or newer is needed: {ex.Message}); {MissingLibraryMessage}");
            }
        }
        return (null, MissingLibraryMessage);
    }

    private static Library RequireLibrary() =>
        Loaded.Value.Library ?? throw new InvalidOperationException(Loaded.Value.Problem);

    /// <summary>The most header bytes <see cref="ReadHeaderSegments"/> keeps: tables and frame header
    /// are a few kilobytes; metadata segments are skipped without being read.</summary>
    public const int MaxHeaderBytes = 1 << 20;

    /// <summary>The most segments before the start of the scan (each at most 64 KiB long).</summary>
    private const int MaxHeaderSegments = 4096;

    /// <summary>
    /// Reads a JPEG's segments from the start-of-image marker up to and including the start-of-scan
    /// header, which is all that <see cref="ReadInfo"/> needs, without reading the file to its end:
    /// metadata segments (APP1..APP13, APP15, comments: EXIF, ICC profiles, thumbnails) are skipped
    /// by seeking, APP0 (JFIF) and APP14 (Adobe, which says how the colours are stored) are kept.
    /// At most <see cref="MaxHeaderBytes"/> are kept and <see cref="MaxHeaderSegments"/> segments
    /// walked; a file whose header goes on longer, or that breaks the marker structure, is an
    /// <see cref="InvalidFileException"/>. The stream must be seekable.
    /// </summary>
    public static byte[] ReadHeaderSegments(Stream stream, string fileName)
    {
        var kept = new MemoryStream();
        Span<byte> two = stackalloc byte[2];
        void ReadExactly(Span<byte> buffer)
        {
            if (stream.ReadAtLeast(buffer, buffer.Length, throwOnEndOfStream: false) < buffer.Length)
                throw new InvalidFileException(fileName, $"the file ends at byte {stream.Length} inside the JPEG header (truncated?)");
        }
        ReadExactly(two);
        if (two[0] != 0xFF || two[1] != 0xD8)
            throw new InvalidFileException(fileName, "not a JPEG file (it does not start with the marker FF D8)");
        kept.Write(two);
        for (int segment = 0; segment < MaxHeaderSegments; segment++)
        {
            long at = stream.Position;
            int first = stream.ReadByte();
            if (first != 0xFF)
                throw new InvalidFileException(fileName, first < 0
                    ? $"the file ends at byte {at} inside the JPEG header (truncated?)"
                    : $"byte {at}: expected a JPEG marker (FF), found {first:X2}");
            int marker;
            do marker = stream.ReadByte(); while (marker == 0xFF);   // fill bytes
            if (marker < 0)
                throw new InvalidFileException(fileName, $"the file ends at byte {stream.Position} inside the JPEG header (truncated?)");
            if (marker == 0xD9)
                throw new InvalidFileException(fileName, $"byte {at}: the image ends (EOI) before any scan");
            if (marker is 0x01 or (>= 0xD0 and <= 0xD7))
            {
                kept.Write([0xFF, (byte)marker]);
                continue;   // markers without a length
            }
            ReadExactly(two);
            int length = (two[0] << 8) | two[1];
            if (length < 2)
                throw new InvalidFileException(fileName, $"byte {at}: JPEG segment FF{marker:X2} has the impossible length {length}");
            bool metadata = marker is (>= 0xE1 and <= 0xED) or 0xEF or 0xFE;
            if (metadata)
            {
                if (stream.Position + length - 2 > stream.Length)
                    throw new InvalidFileException(fileName, $"byte {at}: JPEG segment FF{marker:X2} of {length} bytes runs past the end of the file (truncated?)");
                stream.Seek(length - 2, SeekOrigin.Current);
                continue;
            }
            if (kept.Length + 4 + length > MaxHeaderBytes)
                throw new InvalidFileException(fileName, $"the JPEG header is longer than {MaxHeaderBytes >> 10} KiB before its first scan (corrupt?)");
            kept.Write([0xFF, (byte)marker, two[0], two[1]]);
            var body = new byte[length - 2];
            ReadExactly(body);
            kept.Write(body);
            if (marker == 0xDA)
                return kept.ToArray();   // start of scan: the header is complete
        }
        throw new InvalidFileException(fileName, $"more than {MaxHeaderSegments} JPEG segments before the first scan (corrupt?)");
    }

    /// <summary>Reads and decodes the JPEG file at <paramref name="path"/>.</summary>
    public static Image Load(string path) => Decode(File.ReadAllBytes(path), path);

    /// <summary>
    /// Reads width, height and whether the image is greyscale from the JPEG header, without decoding.
    /// Throws <see cref="InvalidOperationException"/> when libturbojpeg is missing.
    /// </summary>
    public static (int Width, int Height, bool IsGrey) ReadInfo(ReadOnlySpan<byte> file, string fileName)
    {
        var library = RequireLibrary();
        nint handle = library.InitDecompress();
        if (handle == 0)
            throw new InvalidOperationException("libturbojpeg could not create a decompressor (out of memory?)");
        try
        {
            var (width, height, colourSpace) = ReadHeader(library, handle, file, fileName);
            return (width, height, colourSpace == ColourSpaceGrey);
        }
        finally
        {
            library.Destroy(handle);
        }
    }

    /// <summary>
    /// Decodes a JPEG held in memory to an 8-bit grey or RGB <see cref="Image"/>.
    /// <paramref name="fileName"/> names the file in error messages. Throws
    /// <see cref="InvalidFileException"/> for a corrupt file and <see cref="InvalidOperationException"/>
    /// when libturbojpeg is missing.
    /// </summary>
    public static Image Decode(ReadOnlySpan<byte> file, string fileName)
    {
        var library = RequireLibrary();
        if (!HasSignature(file))
            throw new InvalidFileException(fileName, "not a JPEG file (it does not start with the marker FF D8 FF)");
        nint handle = library.InitDecompress();
        if (handle == 0)
            throw new InvalidOperationException("libturbojpeg could not create a decompressor (out of memory?)");
        try
        {
            var (width, height, colourSpace) = ReadHeader(library, handle, file, fileName);
            if (colourSpace is ColourSpaceCmyk or ColourSpaceYcck)
                throw new InvalidFileException(fileName, "a CMYK JPEG (print colours); save it as an RGB JPEG or PNG to use it");
            if ((long)width * height > Png.MaxPixels)
                throw new InvalidFileException(fileName,
                    $"{width}x{height} is {(long)width * height / 1_000_000} megapixels, more than RawGan's limit of {Png.MaxPixels / 1_000_000}; scale the image down first");

            int channels = colourSpace == ColourSpaceGrey ? 1 : 3;
            var image = new Image(width, height, channels);
            int result;
            fixed (byte* source = file)
            fixed (byte* destination = image.Pixels)
            {
                result = library.Decompress2(handle, source, new CULong((nuint)file.Length), destination,
                    width, width * channels, height, channels == 1 ? PixelFormatGrey : PixelFormatRgb, FlagAccurateDct);
            }
            if (result != 0)
            {
                string message = ErrorText(library, handle);
                // libjpeg reports many harmless irregularities as warnings ("extraneous bytes before
                // marker") and decodes the image completely, so warnings are accepted, except the one
                // for a file that ends early: its missing rows come out grey and would poison training.
                bool warning = library.GetErrorCode(handle) == ErrorWarning;
                if (!warning || message.Contains("Premature end", StringComparison.OrdinalIgnoreCase))
                    throw new InvalidFileException(fileName, $"JPEG data is corrupt: {message}");
            }
            return image;
        }
        finally
        {
            library.Destroy(handle);
        }
    }

    private static (int Width, int Height, int ColourSpace) ReadHeader(Library library, nint handle, ReadOnlySpan<byte> file, string fileName)
    {
        int width, height, subsampling, colourSpace;
        int result;
        fixed (byte* source = file)
        {
            result = library.DecompressHeader3(handle, source, new CULong((nuint)file.Length), &width, &height, &subsampling, &colourSpace);
        }
        if (result != 0)
            throw new InvalidFileException(fileName, $"JPEG header is not readable: {ErrorText(library, handle)}");
        if (width <= 0 || height <= 0)
            throw new InvalidFileException(fileName, $"JPEG header gives the size {width}x{height}");
        return (width, height, colourSpace);
    }

    private static string ErrorText(Library library, nint handle)
    {
        byte* text = library.GetErrorStr2(handle);
        return text == null ? "unknown error" : Marshal.PtrToStringUTF8((nint)text) ?? "unknown error";
    }
}
