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
