using RawGan.ProGan.Data;
using RawGan.ProGan.Imaging;
using RawGan.ProGan.IO;

namespace RawGan.ProGan.Tests;

/// <summary>
/// Every format <see cref="ImageFile"/> reads, on files written by another encoder (Pillow, through
/// libjpeg and libwebp: Fixtures/make_fixtures.py) from formulas this class computes again, so each
/// expected pixel comes from the formula, not from a decoder: <see cref="Colour"/>,
/// <see cref="Grey"/>, <see cref="CmykAsRgb"/> and <see cref="Bands"/>. Lossless files must match
/// exactly, lossy ones within a mean error of a few levels (a wrong turn, channel order or colour
/// conversion is off by tens).
/// </summary>
public class ImageFormatTests
{
    private const int W = 32, H = 24;

    internal static string Fixture(string name) => Path.Combine(AppContext.BaseDirectory, "Fixtures", name);

    private static Image Read(string name) => ImageFile.Load(Fixture(name));

    private static byte[] Colour(int x, int y) => [(byte)(8 * x), (byte)(10 * y), (byte)(40 + 2 * x + 3 * y)];

    private static byte[] Grey(int x, int y) => [(byte)(20 + 5 * x + 3 * y)];

    /// <summary>The CMYK fixture as RGB: K = 0 above row 20 (R = 255 - C), C = M = Y = 0 below (R = G = B = 255 - K).</summary>
    private static byte[] CmykAsRgb(int x, int y) => y < 20
        ? [(byte)(255 - 8 * x), (byte)(255 - 10 * y), 195]
        : [(byte)(255 - 8 * x), (byte)(255 - 8 * x), (byte)(255 - 8 * x)];

    private static readonly byte[][] Palette =
    [
        [0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [0, 255, 255], [255, 0, 255],
        [128, 0, 0], [0, 128, 0], [0, 0, 128], [128, 128, 0], [0, 128, 128], [128, 0, 128], [192, 192, 192], [64, 64, 64],
    ];

    private static int Band(int x, int y) => x / 4 + 8 * (y / 12);

    private static byte[] Bands(int x, int y) => Palette[Band(x, y)];

    private static Image Picture(int channels, Func<int, int, byte[]> pixel, int width = W, int height = H)
    {
        var image = new Image(width, height, channels);
        for (int y = 0; y < height; y++)
            for (int x = 0; x < width; x++)
                pixel(x, y).CopyTo(image.Pixels, (y * width + x) * channels);
        return image;
    }

    private static double MeanError(Image expected, Image actual)
    {
        Assert.Equal((expected.Width, expected.Height, expected.Channels), (actual.Width, actual.Height, actual.Channels));
        return expected.Pixels.Zip(actual.Pixels, (a, b) => Math.Abs(a - b)).Average();
    }

    [Theory]
    [InlineData("baseline.jpg", 2.0)]
    [InlineData("baseline-420.jpg", 3.0)]      // chroma at half resolution, as cameras write it
    [InlineData("progressive.jpg", 2.0)]
    [InlineData("lossy.webp", 3.0)]
    public void LossyColourFilesAreCloseToTheirPicture(string name, double bound)
    {
        double error = MeanError(Picture(3, Colour), Read(name));
        Assert.True(error < bound, $"{name}: mean absolute error {error:F2}");
        var header = ImageFile.ReadHeader(Fixture(name));
        Assert.Equal((W, H, false, 1), (header.Width, header.Height, header.IsGrey, header.Orientation));
    }

    [Fact]
    public void ProgressiveJpegDecodesCloseToBaseline()
    {
        double error = MeanError(Read("baseline.jpg"), Read("progressive.jpg"));
        Assert.True(error < 1.5, $"progressive against baseline: mean absolute error {error:F2}");
    }

    [Theory]
    [InlineData("colour.png")]
    [InlineData("lossless.webp")]
    [InlineData("rgb24.bmp")]
    public void LosslessColourFilesAreExact(string name) => Assert.Equal(Picture(3, Colour).Pixels, Read(name).Pixels);

    [Fact]
    public void GreyJpegIsOneChannelAndItsHeaderSaysSo()
    {
        var header = ImageFile.ReadHeader(Fixture("grey.jpg"));
        Assert.Equal(("JPEG", W, H, true), (header.Format, header.Width, header.Height, header.IsGrey));
        double error = MeanError(Picture(1, Grey), Read("grey.jpg"));
        Assert.True(error < 2, $"mean absolute error {error:F2}");
    }

    [Fact]
    public void CmykJpegIsConvertedToRgb()
    {
        var image = Read("cmyk.jpg");
        double error = MeanError(Picture(3, CmykAsRgb), image);
        Assert.True(error < 3, $"mean absolute error {error:F2}");
        Assert.False(ImageFile.ReadHeader(Fixture("cmyk.jpg")).IsGrey);
    }

    [Fact]
    public void WebPAlphaIsStraightAndExact()
    {
        var expected = Picture(4, (x, y) => [.. Colour(x, y), (byte)(255 - 7 * x)]);
        Assert.Equal(expected.Pixels, Read("alpha.webp").Pixels);
    }

    [Fact]
    public void PaletteBmpExpandsToRgb() => Assert.Equal(Picture(3, Bands).Pixels, Read("palette8.bmp").Pixels);

    [Fact]
    public void AnAnimatedGifGivesItsFirstFrameWithItsTransparency()
    {
        // Two frames; the second shifts every band. Index 15 is the transparent colour, which
        // comes out as transparent black.
        var expected = Picture(4, (x, y) => Band(x, y) == 15 ? [0, 0, 0, 0] : [.. Bands(x, y), 255]);
        var image = Read("animated.gif");
        Assert.Equal(expected.Pixels, image.Pixels);
        Assert.Equal(new ImageHeader("GIF", W, H, false, 1, new FileInfo(Fixture("animated.gif")).Length), ImageFile.ReadHeader(Fixture("animated.gif")));
    }

    [Fact]
    public void AGifFromRawGansOwnWriterReadsBackAsItsFirstFrame()
    {
        var first = Picture(3, Bands);
        var second = Picture(3, (x, y) => Palette[(Band(x, y) + 3) % 16]);
        var image = ImageFile.Decode(Gif.Encode([first, second]), "walk.gif");
        Assert.Equal(first.Pixels, image.Pixels);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    [InlineData(5)]
    [InlineData(6)]
    [InlineData(7)]
    [InlineData(8)]
    public void EveryExifOrientationComesOutUpright(int orientation)
    {
        // The files store the picture turned or mirrored so that their tag turns it back to Colour:
        // shown 32 wide and 24 high whatever the stored sides (5 to 8 store it 24 x 32).
        var upright = Picture(3, Colour);
        var webp = ImageFile.ReadHeader(Fixture($"orientation-{orientation}.webp"));
        Assert.Equal(("WebP", W, H, orientation), (webp.Format, webp.Width, webp.Height, webp.Orientation));
        Assert.Equal(upright.Pixels, Read($"orientation-{orientation}.webp").Pixels);

        var jpeg = ImageFile.ReadHeader(Fixture($"orientation-{orientation}.jpg"));
        Assert.Equal(("JPEG", W, H, orientation), (jpeg.Format, jpeg.Width, jpeg.Height, jpeg.Orientation));
        double error = MeanError(upright, Read($"orientation-{orientation}.jpg"));
        Assert.True(error < 2, $"orientation {orientation}: mean absolute error {error:F2}");
    }

    [Fact]
    public void TheTurnsKeepEveryChannelCount()
    {
        // Grey + alpha, turned 90 degrees clockwise (6): the stored first row becomes the right column.
        byte[] stored = [1, 11, 2, 22, 3, 33, /* second row */ 4, 44, 5, 55, 6, 66];
        var rgba = stored.Chunk(2).SelectMany(p => new byte[] { p[0], 0, 0, p[1] }).ToArray();
        var turned = ImageFile.Arrange(rgba, 4, 3, 2, 2, 6);
        Assert.Equal((2, 3), (turned.Width, turned.Height));
        Assert.Equal([4, 44, 1, 11, 5, 55, 2, 22, 6, 66, 3, 33], turned.Pixels);
        Assert.Equal([3, 6, 2, 5, 1, 4], ImageFile.Arrange([1, 2, 3, 4, 5, 6], 1, 3, 2, 1, 8).Pixels);
    }

    [Fact]
    public void TheDecoderIsChosenByContentNotByName()
    {
        using var directory = new TempDirectory();
        foreach (var (name, format) in new[] { ("baseline.jpg", "JPEG"), ("lossless.webp", "WebP"), ("animated.gif", "GIF"), ("rgb24.bmp", "BMP") })
        {
            string path = directory.File($"really-{Path.GetFileNameWithoutExtension(name)}.png");
            File.Copy(Fixture(name), path);
            Assert.Equal(format, ImageFile.ReadHeader(path).Format);
            Assert.Equal(Read(name).Pixels, ImageFile.Load(path).Pixels);
        }
    }

    [Fact]
    public void FilesThatAreNoImageAreNamedInOneLine()
    {
        foreach (var (bytes, expected) in new (byte[], string)[]
        {
            ([], "the file is empty"),
            ("this is not a picture\n"u8.ToArray(), "not PNG, JPEG, WebP, BMP or GIF (it starts with the bytes 7468697320697320)"),
            (File.ReadAllBytes(Fixture("icon.ico")), "not PNG, JPEG, WebP, BMP or GIF (it starts with the bytes 00000100"),   // Skia reads icons, RawGan does not
            ([0, 0, 16, 16, 0, 0], "not PNG, JPEG, WebP, BMP or GIF"),   // what Skia takes for a WBMP picture of 16 x 16
        })
        {
            var error = Assert.Throws<InvalidFileException>(() => ImageFile.Decode(bytes, "x.png"));
            Assert.StartsWith("x.png: ", error.Message);
            Assert.Contains(expected, error.Message);
            Assert.DoesNotContain('\n', error.Message);
        }
    }

    public static TheoryData<string> EveryFixtureFormat => new()
    {
        "colour.png", "baseline.jpg", "progressive.jpg", "cmyk.jpg", "grey.jpg", "lossless.webp", "lossy.webp", "alpha.webp",
        "rgb24.bmp", "palette8.bmp", "animated.gif", "orientation-6.jpg",
    };

    [Theory]
    [MemberData(nameof(EveryFixtureFormat))]
    public void ACutFileIsRefusedOrGivesTheWholePicture(string name)
    {
        // Never half a picture: at every length, the file is refused naming it, or (a cut that loses
        // only trailing bytes such as a JPEG's end marker or a GIF's second frame) decodes to the
        // very pixels of the whole file.
        var file = File.ReadAllBytes(Fixture(name));
        var whole = ImageFile.Decode(file, name).Pixels;
        int refused = 0;
        for (int length = 0; length < file.Length; length++)
        {
            try
            {
                Assert.Equal(whole, ImageFile.Decode(file.AsSpan(0, length), name).Pixels);
            }
            catch (InvalidFileException e)
            {
                Assert.StartsWith($"{name}: ", e.Message);
                Assert.DoesNotContain('\n', e.Message);
                refused++;
            }
        }
        Assert.True(refused > file.Length / 2, $"{name}: {refused} of {file.Length} cuts refused");
    }

    [Theory]
    [MemberData(nameof(EveryFixtureFormat))]
    public void RandomMutationsNeverEscapeAsOtherExceptions(string name)
    {
        // A small fuzz of each format: bit flips, overwritten bytes, runs of garbage. Whatever
        // happens to the bytes, the outcome is a picture of the right size or an InvalidFileException.
        var file = File.ReadAllBytes(Fixture(name));
        var random = new Random(name.Length * 7919 + file.Length);
        int rejected = 0;
        for (int trial = 0; trial < 300; trial++)
        {
            var mutant = (byte[])file.Clone();
            for (int k = 0; k < 1 + trial % 4; k++)
            {
                int at = random.Next(mutant.Length);
                switch (random.Next(3))
                {
                    case 0: mutant[at] ^= (byte)(1 << random.Next(8)); break;
                    case 1: mutant[at] = (byte)random.Next(256); break;
                    default: random.NextBytes(mutant.AsSpan(at, Math.Min(16, mutant.Length - at))); break;
                }
            }
            try
            {
                var image = ImageFile.Decode(mutant, "fuzz");
                Assert.InRange((long)image.Width * image.Height, 1, ImageFile.MaxPixels);
            }
            catch (InvalidFileException e)
            {
                Assert.StartsWith("fuzz: ", e.Message);
                rejected++;
            }
        }
        Assert.True(rejected > 0, $"{name}: no mutant was refused");
    }

    /// <summary>A JPEG with <paramref name="segments"/> comment segments of 60 KiB before its frame header.</summary>
    private static byte[] JpegWithLongHeader(int segments)
    {
        var jpeg = File.ReadAllBytes(Fixture("baseline.jpg"));
        var file = new MemoryStream();
        file.Write(jpeg.AsSpan(0, 2));   // start of image
        var comment = new byte[60 << 10];
        for (int i = 0; i < segments; i++)
        {
            file.Write([0xFF, 0xFE, (byte)((comment.Length + 2) >> 8), (byte)(comment.Length + 2)]);
            file.Write(comment);
        }
        file.Write(jpeg.AsSpan(2));
        return file.ToArray();
    }

    [Fact]
    public void AHeaderBeyondTheFirstReadIsFoundAndOneBeyondTheLimitIsRefused()
    {
        // 6 MB of metadata: read in growing steps, the picture's size found.
        var longHeader = JpegWithLongHeader(100);
        var stream = new MemoryStream(longHeader);
        var header = ImageFile.ReadHeader(stream, "long.jpg");
        Assert.Equal(("JPEG", W, H), (header.Format, header.Width, header.Height));
        Assert.Equal(longHeader.Length, header.FileLength);
        Assert.Equal(Read("baseline.jpg").Pixels, ImageFile.Decode(longHeader, "long.jpg").Pixels);

        // 18 MB of it: refused after reading the limit, not the whole file.
        var tooLong = new MemoryStream(JpegWithLongHeader(300));
        var error = Assert.Throws<InvalidFileException>(() => ImageFile.ReadHeader(tooLong, "too-long.jpg"));
        Assert.Contains("no picture size in its first 16 MiB", error.Message);
        Assert.Equal(ImageFile.MaxHeaderBytes, tooLong.Position);
    }

    [Fact]
    public void AFolderOfEveryFormatIsReadAndItsBrokenFilesAreCounted()
    {
        using var directory = new TempDirectory();
        string[] good = ["colour.png", "baseline.jpg", "progressive.jpg", "cmyk.jpg", "grey.jpg", "lossy.webp", "alpha.webp", "rgb24.bmp", "animated.gif", "orientation-8.jpg"];
        foreach (string name in good)
            File.Copy(Fixture(name), directory.File(name));
        foreach (string name in new[] { "baseline.jpg", "lossy.webp", "rgb24.bmp", "animated.gif" })
        {
            var bytes = File.ReadAllBytes(Fixture(name));
            File.WriteAllBytes(directory.File("cut-" + name), bytes[..(bytes.Length / 3)]);
        }
        File.WriteAllText(directory.File("notes.gif"), "not a picture");

        var (cache, report) = ImageFolder.PrepareCache(directory.Path, 8, directory.File("cache.bin"));
        using (cache)
        {
            Assert.Equal((15, 10, 5), (report.Candidates, report.Loaded, report.Skipped));
            Assert.Equal(3, cache.Channels);
            Assert.All(report.FirstSkipped, s => Assert.True(s.RelativePath.StartsWith("cut-") || s.RelativePath == "notes.gif", s.RelativePath));
            Assert.All(report.FirstSkipped, s => Assert.DoesNotContain('\n', s.Reason));
        }
    }
}
