using System.Runtime.InteropServices;
using RawGan.ProGan.Imaging;
using RawGan.ProGan.IO;

namespace RawGan.ProGan.Tests;

/// <summary>Needs libturbojpeg: without it, skipped with the package to install, except in CI
/// (CI=true, where ./test.sh installs it), where a missing library fails the test instead.</summary>
public sealed class RequiresTurboJpegFactAttribute : FactAttribute
{
    public RequiresTurboJpegFactAttribute()
    {
        bool ci = string.Equals(Environment.GetEnvironmentVariable("CI"), "true", StringComparison.OrdinalIgnoreCase);
        if (!Jpeg.IsAvailable && !ci)
            Skip = "libturbojpeg is not installed (Debian: apt-get install libturbojpeg0, or run ./test.sh)";
    }
}

public unsafe class JpegTests
{
    /// <summary>
    /// Makes JPEG files with the library's own compressor (tjCompress2), bound here for the test only.
    /// The decoder under test must give back the picture up to JPEG's loss.
    /// </summary>
    internal static byte[] Compress(byte[] pixels, int width, int height, bool grey, int quality)
    {
        nint library = NativeLibrary.Load(OperatingSystem.IsWindows() ? "turbojpeg.dll" : "libturbojpeg.so.0");
        var init = (delegate* unmanaged<nint>)NativeLibrary.GetExport(library, "tjInitCompress");
        var compress = (delegate* unmanaged<nint, byte*, int, int, int, int, byte**, CULong*, int, int, int, int>)NativeLibrary.GetExport(library, "tjCompress2");
        var free = (delegate* unmanaged<byte*, void>)NativeLibrary.GetExport(library, "tjFree");
        var destroy = (delegate* unmanaged<nint, int>)NativeLibrary.GetExport(library, "tjDestroy");
        nint handle = init();
        byte* jpeg = null;
        CULong size = default;
        int channels = grey ? 1 : 3;
        fixed (byte* source = pixels)
        {
            // Pixel formats: TJPF_RGB 0, TJPF_GRAY 6; subsampling: TJSAMP_444 0, TJSAMP_GRAY 3.
            int result = compress(handle, source, width, width * channels, height, grey ? 6 : 0, &jpeg, &size, grey ? 3 : 0, quality, 0);
            Assert.Equal(0, result);
        }
        var bytes = new ReadOnlySpan<byte>(jpeg, (int)size.Value).ToArray();
        free(jpeg);
        destroy(handle);
        return bytes;
    }

    private static byte[] SmoothPixels(int width, int height, int channels)
    {
        var pixels = new byte[width * height * channels];
        for (int y = 0; y < height; y++)
            for (int x = 0; x < width; x++)
                for (int c = 0; c < channels; c++)
                    pixels[(y * width + x) * channels + c] = (byte)(60 + x * 3 + y * 2 + c * 20);
        return pixels;
    }

    [RequiresTurboJpegFact]
    public void ColourJpegDecodesToRgbCloseToTheOriginal()
    {
        var pixels = SmoothPixels(40, 24, 3);
        var image = Jpeg.Decode(Compress(pixels, 40, 24, grey: false, quality: 95), "test.jpg");
        Assert.Equal((40, 24, 3), (image.Width, image.Height, image.Channels));
        double error = pixels.Zip(image.Pixels, (a, b) => Math.Abs(a - b)).Average();
        Assert.True(error < 2, $"mean absolute error {error:F2}");
    }

    [RequiresTurboJpegFact]
    public void GreyJpegDecodesToGreyAndItsHeaderSaysSo()
    {
        var pixels = SmoothPixels(16, 16, 1);
        var file = Compress(pixels, 16, 16, grey: true, quality: 95);
        Assert.Equal((16, 16, true), Jpeg.ReadInfo(file, "grey.jpg"));
        var image = Jpeg.Decode(file, "grey.jpg");
        Assert.Equal(1, image.Channels);
        Assert.True(pixels.Zip(image.Pixels, (a, b) => Math.Abs(a - b)).Max() <= 4);
    }

    [RequiresTurboJpegFact]
    public void CorruptAndTruncatedJpegsAreInvalidFiles()
    {
        var file = Compress(SmoothPixels(64, 64, 3), 64, 64, grey: false, quality: 90);
        var truncated = Assert.Throws<InvalidFileException>(() => Jpeg.Decode(file[..(file.Length / 2)], "half.jpg"));
        Assert.StartsWith("half.jpg: ", truncated.Message);
        Assert.Throws<InvalidFileException>(() => Jpeg.Decode([0xFF, 0xD8, 0xFF, 0xE0, 1, 2, 3], "garbage.jpg"));
        Assert.Throws<InvalidFileException>(() => Jpeg.Decode([1, 2, 3], "not.jpg"));

        // A small fuzz: whatever happens to the bytes, the outcome is an image or an InvalidFileException.
        var random = new Random(3);
        for (int trial = 0; trial < 300; trial++)
        {
            var mutant = (byte[])file.Clone();
            for (int k = 0; k < 1 + trial % 4; k++)
                mutant[random.Next(mutant.Length)] = (byte)random.Next(256);
            try { Jpeg.Decode(mutant, "fuzz.jpg"); }
            catch (InvalidFileException) { }
        }
    }

    [RequiresTurboJpegFact]
    public void ImageFileChoosesTheDecoderByContent()
    {
        using var directory = new TempDirectory();
        string path = directory.File("really-a-jpeg.png");
        File.WriteAllBytes(path, Compress(SmoothPixels(8, 8, 3), 8, 8, grey: false, quality: 90));
        Assert.Equal(3, ImageFile.Load(path).Channels);
        Assert.Equal((8, 8, false), ImageFile.ReadInfo(path));
    }
}
