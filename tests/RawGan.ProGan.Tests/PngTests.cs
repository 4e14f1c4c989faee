using RawGan.ProGan.Imaging;
using RawGan.ProGan.IO;
using static RawGan.ProGan.Tests.HandMadePng;

namespace RawGan.ProGan.Tests;

public class PngTests
{
    private static Image Decode(byte[] file) => Png.Decode(file, "test.png");

    [Fact]
    public void Grey8BitRowsDecodeExactly()
    {
        byte[] rows = [0, 10, 20, 30, 0, 255, 128, 1];
        var image = Decode(File(3, 2, 8, 0, rows));
        Assert.Equal((3, 2, 1), (image.Width, image.Height, image.Channels));
        Assert.Equal([10, 20, 30, 255, 128, 1], image.Pixels);
    }

    [Theory]
    [InlineData(1, new[] { 0, 1, 1, 0, 1, 0, 0, 1, 1, 1 })]
    [InlineData(2, new[] { 0, 1, 2, 3, 3, 2, 1, 0, 2, 1 })]
    [InlineData(4, new[] { 0, 15, 7, 8, 1, 14, 3, 12, 5, 10 })]
    public void LowBitDepthGreyIsUnpackedFromTheHighBitAndStretched(int depth, int[] samples)
    {
        // One row of 10 samples, packed most significant bit first, the last byte padded with zeros.
        int width = samples.Length, stride = (width * depth + 7) / 8;
        var row = new byte[1 + stride];
        for (int i = 0; i < width; i++)
            row[1 + i * depth / 8] |= (byte)(samples[i] << (8 - depth - i * depth % 8));
        var image = Decode(File(width, 1, depth, 0, row));
        int max = (1 << depth) - 1;
        Assert.Equal(samples.Select(s => (byte)(s * 255 / max)).ToArray(), image.Pixels);
    }

    [Fact]
    public void Grey16BitIsRoundedTo8Bits()
    {
        ushort[] samples = [0, 0xFFFF, 0x1234, 0x8080, 0x807F, 128, 129, 385];
        var row = new byte[1 + samples.Length * 2];
        for (int i = 0; i < samples.Length; i++)
        {
            row[1 + 2 * i] = (byte)(samples[i] >> 8);
            row[2 + 2 * i] = (byte)samples[i];
        }
        var image = Decode(File(samples.Length, 1, 16, 0, row));
        Assert.Equal(samples.Select(s => (byte)Math.Round(s / 257.0)).ToArray(), image.Pixels);
    }

    private static byte[] RandomBytes(int count, int seed)
    {
        var bytes = new byte[count];
        new Random(seed).NextBytes(bytes);
        return bytes;
    }

    /// <summary>A smooth image with some noise, so that every filter has something to predict.</summary>
    private static byte[] TestPixels(int width, int height, int channels, int seed)
    {
        var random = new Random(seed);
        var pixels = new byte[width * height * channels];
        for (int y = 0; y < height; y++)
            for (int x = 0; x < width; x++)
                for (int c = 0; c < channels; c++)
                    pixels[(y * width + x) * channels + c] = (byte)(x * 13 + y * 7 + c * 50 + random.Next(20));
        return pixels;
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    public void EachFilterTypeDecodesExactly(int filter)
    {
        var pixels = TestPixels(7, 5, 3, filter);
        var image = Decode(File(7, 5, 8, 2, Filter(pixels, 7 * 3, 3, _ => filter)));
        Assert.Equal(3, image.Channels);
        Assert.Equal(pixels, image.Pixels);
    }

    [Fact]
    public void MixedFiltersAcrossRowsAndSplitIdatChunksDecodeExactly()
    {
        var pixels = TestPixels(9, 10, 4, 7);
        var file = File(9, 10, 8, 6, Filter(pixels, 9 * 4, 4, y => y % 5), idatParts: 3);
        Assert.Equal(pixels, Decode(file).Pixels);
    }

    [Fact]
    public void Rgba16BitAndGreyAlpha16Bit()
    {
        // Two RGBA pixels at 16 bits: each sample is two big-endian bytes.
        byte[] rgba = [0, 0x12, 0x34, 0xFF, 0xFF, 0x80, 0x80, 0x00, 0x00, 0x00, 0x00, 0x01, 0xFF, 0xFF, 0x7F, 0x7F, 0xFF];
        var image = Decode(File(2, 1, 16, 6, rgba));
        Assert.Equal(4, image.Channels);
        // 0x1234 / 257 = 18.1, 0x8080 / 257 = 128, 0x01FF / 257 = 1.99, 0xFF7F / 257 = 254.5, 0x7FFF / 257 = 127.5
        Assert.Equal([18, 255, 128, 0, 0, 2, 255, 127], image.Pixels);

        byte[] greyAlpha = [2, 0x40, 0x00, 0xFF, 0xFF];
        var ga = Decode(File(1, 1, 16, 4, greyAlpha));
        Assert.Equal(2, ga.Channels);
        // Filter 2 (Up) on the first row predicts from zeros, so bytes decode unchanged.
        Assert.Equal([64, 255], ga.Pixels);
    }

    [Fact]
    public void GreyAlpha8Bit()
    {
        byte[] rows = [0, 10, 200, 20, 0];
        var image = Decode(File(2, 1, 8, 4, rows));
        Assert.Equal([10, 200, 20, 0], image.Pixels);
    }

    [Fact]
    public void PaletteWithTransparencyExpandsToRgba()
    {
        // 2-bit indices 0, 1, 2, 3, 1 in one row; 4 palette entries; tRNS gives alpha for the first two.
        byte[] palette = [255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30];
        byte[] alpha = [0, 128];
        var row = new byte[1 + 2];
        int[] indices = [0, 1, 2, 3, 1];
        for (int i = 0; i < indices.Length; i++)
            row[1 + i * 2 / 8] |= (byte)(indices[i] << (6 - i * 2 % 8));
        var image = Decode(File(5, 1, 2, 3, row, extraChunks: [Chunk("PLTE", palette), Chunk("tRNS", alpha)]));
        Assert.Equal(4, image.Channels);
        Assert.Equal([255, 0, 0, 0, 0, 255, 0, 128, 0, 0, 255, 255, 10, 20, 30, 255, 0, 255, 0, 128], image.Pixels);
    }

    [Fact]
    public void PaletteWithoutTransparencyIsRgb()
    {
        byte[] palette = [1, 2, 3, 4, 5, 6];
        var image = Decode(File(3, 1, 8, 3, [0, 1, 0, 1], extraChunks: [Chunk("PLTE", palette)]));
        Assert.Equal(3, image.Channels);
        Assert.Equal([4, 5, 6, 1, 2, 3, 4, 5, 6], image.Pixels);
    }

    [Fact]
    public void GreyAndRgbTransparencyAddAlpha()
    {
        var grey = Decode(File(3, 1, 8, 0, [0, 7, 8, 7], extraChunks: [Chunk("tRNS", [0, 7])]));
        Assert.Equal(2, grey.Channels);
        Assert.Equal([7, 0, 8, 255, 7, 0], grey.Pixels);

        var rgb = Decode(File(2, 1, 8, 2, [0, 1, 2, 3, 1, 2, 4], extraChunks: [Chunk("tRNS", [0, 1, 0, 2, 0, 3])]));
        Assert.Equal(4, rgb.Channels);
        Assert.Equal([1, 2, 3, 0, 1, 2, 4, 255], rgb.Pixels);
    }

    /// <summary>Splits an image into the seven Adam7 passes, as the PNG specification defines them, in the test's own words.</summary>
    private static byte[] Adam7Rows(byte[] pixels, int width, int height, int channels, Func<int, int> filterOfPass)
    {
        int[,] passes = { { 0, 0, 8, 8 }, { 4, 0, 8, 8 }, { 0, 4, 4, 8 }, { 2, 0, 4, 4 }, { 0, 2, 2, 4 }, { 1, 0, 2, 2 }, { 0, 1, 1, 2 } };
        var output = new List<byte>();
        for (int p = 0; p < 7; p++)
        {
            var passPixels = new List<byte>();
            int passWidth = 0, passHeight = 0;
            for (int y = passes[p, 1]; y < height; y += passes[p, 3])
            {
                passHeight++;
                passWidth = 0;
                for (int x = passes[p, 0]; x < width; x += passes[p, 2])
                {
                    passWidth++;
                    for (int c = 0; c < channels; c++)
                        passPixels.Add(pixels[(y * width + x) * channels + c]);
                }
            }
            if (passWidth == 0 || passHeight == 0)
                continue;
            output.AddRange(Filter(passPixels.ToArray(), passWidth * channels, channels, _ => filterOfPass(p)));
        }
        return output.ToArray();
    }

    [Theory]
    [InlineData(9, 9)]
    [InlineData(3, 5)]  // passes 2, 3 and 5 are empty: no rows, no filter bytes
    [InlineData(1, 1)]
    [InlineData(17, 4)]
    public void Adam7InterlacedRgbDecodesExactly(int width, int height)
    {
        var pixels = TestPixels(width, height, 3, width * 31 + height);
        var file = File(width, height, 8, 2, Adam7Rows(pixels, width, height, 3, p => p % 5), interlace: 1);
        Assert.Equal(pixels, Decode(file).Pixels);
    }

    [Fact]
    public void Adam7InterlacedOneBitGrey()
    {
        // Build 1-bit passes by hand: pixel (x, y) is white where (x * y) % 3 == 1.
        int width = 11, height = 6;
        bool White(int x, int y) => x * y % 3 == 1;
        int[,] passes = { { 0, 0, 8, 8 }, { 4, 0, 8, 8 }, { 0, 4, 4, 8 }, { 2, 0, 4, 4 }, { 0, 2, 2, 4 }, { 1, 0, 2, 2 }, { 0, 1, 1, 2 } };
        var rows = new List<byte>();
        for (int p = 0; p < 7; p++)
        {
            int passWidth = passes[p, 0] < width ? (width - passes[p, 0] + passes[p, 2] - 1) / passes[p, 2] : 0;
            if (passWidth == 0 || passes[p, 1] >= height)
                continue;
            for (int y = passes[p, 1]; y < height; y += passes[p, 3])
            {
                var row = new byte[(passWidth + 7) / 8];
                int i = 0;
                for (int x = passes[p, 0]; x < width; x += passes[p, 2], i++)
                    if (White(x, y))
                        row[i / 8] |= (byte)(0x80 >> (i % 8));
                rows.Add(0);
                rows.AddRange(row);
            }
        }
        var image = Decode(File(width, height, 1, 0, rows.ToArray(), interlace: 1));
        for (int y = 0; y < height; y++)
            for (int x = 0; x < width; x++)
                Assert.Equal(White(x, y) ? 255 : 0, image[x, y, 0]);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    public void EncodeThenDecodeGivesTheSameImage(int channels)
    {
        var pixels = TestPixels(37, 23, channels, channels);
        var image = new Image(37, 23, channels, pixels);
        var decoded = Decode(Png.Encode(image));
        Assert.Equal((37, 23, channels), (decoded.Width, decoded.Height, decoded.Channels));
        Assert.Equal(pixels, decoded.Pixels);
    }

    [Fact]
    public void EncoderFiltersMakeSmoothImagesSmall()
    {
        // A smooth gradient compresses far better with prediction than the raw noise of the same size.
        var gradient = new Image(128, 128, 3);
        for (int y = 0; y < 128; y++)
            for (int x = 0; x < 128; x++)
                for (int c = 0; c < 3; c++)
                    gradient[x, y, c] = (byte)(x + y + 40 * c);
        var noise = new Image(128, 128, 3, RandomBytes(128 * 128 * 3, 1));
        int smooth = Png.Encode(gradient).Length, random = Png.Encode(noise).Length;
        Assert.True(smooth * 20 < random, $"gradient {smooth} bytes, noise {random} bytes");
        Assert.Equal(gradient.Pixels, Decode(Png.Encode(gradient)).Pixels);
    }

    [Fact]
    public void SaveAndLoadThroughAFile()
    {
        using var directory = new TempDirectory();
        var image = new Image(5, 4, 3, TestPixels(5, 4, 3, 9));
        string path = Path.Combine(directory.Path, "out.png");
        Png.Save(path, image);
        Assert.Equal(image.Pixels, Png.Load(path).Pixels);
        Assert.Equal(image.Pixels, ImageFile.Load(path).Pixels);
        Assert.Equal(new PngInfo(5, 4, 2, 8, false), Png.ReadInfo(System.IO.File.ReadAllBytes(path), path));
    }

    // ---- Malformed files: always InvalidFileException, naming the file and the problem ----

    private static byte[] ValidFile() => File(4, 3, 8, 2, Filter(TestPixels(4, 3, 3, 1), 12, 3, y => y % 5));

    private static InvalidFileException Rejects(byte[] file)
    {
        var error = Assert.Throws<InvalidFileException>(() => Png.Decode(file, "photos/cat.png"));
        Assert.StartsWith("photos/cat.png: ", error.Message);
        return error;
    }

    [Fact]
    public void CorruptChunkDataFailsTheCrc()
    {
        var file = ValidFile();
        int idat = IndexOf(file, "IDAT");
        file[idat + 10] ^= 0x40;
        var error = Rejects(file);
        Assert.Contains($"chunk IDAT at byte {idat - 4}: CRC mismatch", error.Message);
    }

    [Fact]
    public void TruncatedFilesAreRejectedAtEveryLength()
    {
        var file = ValidFile();
        for (int length = 0; length < file.Length; length++)
            Rejects(file[..length]);
    }

    [Fact]
    public void HugeDimensionsAreRefusedBeforeAllocating()
    {
        var file = new List<byte>(Signature);
        file.AddRange(Header(100_000, 100_000, 8, 6));
        file.AddRange(Chunk("IDAT", ZlibStored(new byte[10])));
        file.AddRange(Chunk("IEND", []));
        Assert.Contains("megapixels", Rejects(file.ToArray()).Message);

        // Within the pixel limit, but far more than the compressed data could hold.
        file = new List<byte>(Signature);
        file.AddRange(Header(10_000, 10_000, 8, 6));
        file.AddRange(Chunk("IDAT", ZlibStored(new byte[10])));
        file.AddRange(Chunk("IEND", []));
        Assert.Contains("cannot hold", Rejects(file.ToArray()).Message);
    }

    [Fact]
    public void MissingIdatIsNamed()
    {
        var file = new List<byte>(Signature);
        file.AddRange(Header(2, 2, 8, 0));
        file.AddRange(Chunk("IEND", []));
        Assert.Contains("no IDAT chunk", Rejects(file.ToArray()).Message);
    }

    [Fact]
    public void BadFilterTypeIsNamedWithItsRow()
    {
        var rows = Filter(TestPixels(3, 3, 1, 2), 3, 1, _ => 0);
        rows[4] = 5; // the second row's filter byte
        Assert.Contains("row 1 has filter type 5", Rejects(File(3, 3, 8, 0, rows)).Message);
    }

    [Fact]
    public void ZlibGarbageIsReported()
    {
        var file = new List<byte>(Signature);
        file.AddRange(Header(8, 8, 8, 0));
        file.AddRange(Chunk("IDAT", [0x78, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0x12, 0x34, 0x56, 0x78]));
        file.AddRange(Chunk("IEND", []));
        Assert.Contains("IDAT", Rejects(file.ToArray()).Message);
    }

    [Fact]
    public void ShortImageDataIsReported()
    {
        // A valid zlib stream that holds two rows where three are needed.
        var rows = Filter(TestPixels(3, 2, 1, 2), 3, 1, _ => 0);
        Assert.Contains("ends after 8 of 12 bytes", Rejects(File(3, 3, 8, 0, rows)).Message);
    }

    [Fact]
    public void HeaderProblemsAreNamed()
    {
        Assert.Contains("not a PNG", Rejects([1, 2, 3, 4, 5, 6, 7, 8, 9]).Message);
        Assert.Contains("bit depth 4 is not allowed for colour type 2", Rejects(File(1, 1, 4, 2, [0, 0])).Message);
        Assert.Contains("colour type 5", Rejects(File(1, 1, 8, 5, [0, 0])).Message);
        Assert.Contains("image size 0x1", Rejects(File(0, 1, 8, 0, [0])).Message);
        Assert.Contains("no PLTE chunk", Rejects(File(1, 1, 8, 3, [0, 0])).Message);

        var file = new List<byte>(Signature);
        file.AddRange(Chunk("IDAT", ZlibStored([0, 0])));
        Assert.Contains("first chunk is IDAT, not IHDR", Rejects(file.ToArray()).Message);
    }

    [Fact]
    public void MissingIendAndOversizedChunkLengthAreNamed()
    {
        var file = ValidFile();
        Assert.Contains("without an IEND chunk", Rejects(file[..^12]).Message);

        var lying = ValidFile();
        int idat = IndexOf(lying, "IDAT");
        WriteBigEndian(lying, idat - 4, 0x7FFF0000);
        Assert.Contains("declares 2147418112 bytes", Rejects(lying).Message);
    }

    [Fact]
    public void UnknownCriticalChunkIsRefusedAndAncillaryChunksAreSkipped()
    {
        var rows = new byte[] { 0, 42 };
        var withText = File(1, 1, 8, 0, rows, extraChunks: [Chunk("tEXt", "Comment\0hello"u8)]);
        Assert.Equal([42], Decode(withText).Pixels);
        var withCritical = File(1, 1, 8, 0, rows, extraChunks: [Chunk("ABCD", [1])]);
        Assert.Contains("unknown critical chunk", Rejects(withCritical).Message);
    }

    [Fact]
    public void RandomMutationsNeverEscapeAsOtherExceptions()
    {
        // A small fuzz: bit flips, byte overwrites and truncations of valid files (with and without
        // interlacing and palettes). Each mutant either decodes or is rejected with InvalidFileException.
        var originals = new[]
        {
            ValidFile(),
            File(9, 7, 8, 2, Adam7Rows(TestPixels(9, 7, 3, 5), 9, 7, 3, p => p % 5), interlace: 1),
            File(5, 1, 2, 3, [0, 0x1B, 0x40], extraChunks: [Chunk("PLTE", [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]), Chunk("tRNS", [5])]),
            Png.Encode(new Image(16, 16, 4, TestPixels(16, 16, 4, 3))),
        };
        var random = new Random(12345);
        int decoded = 0, rejected = 0;
        for (int trial = 0; trial < 3000; trial++)
        {
            var file = (byte[])originals[trial % originals.Length].Clone();
            switch (random.Next(4))
            {
                case 0:
                    file[random.Next(file.Length)] ^= (byte)(1 << random.Next(8));
                    break;
                case 1:
                    file[random.Next(file.Length)] = (byte)random.Next(256);
                    break;
                case 2:
                    file = file[..random.Next(file.Length)];
                    break;
                default:
                    // Mutate and then fix the CRCs so that the mutation reaches the decoder proper.
                    file[8 + random.Next(file.Length - 8)] ^= (byte)(1 << random.Next(8));
                    FixCrcs(file);
                    break;
            }
            try
            {
                Png.Decode(file, "fuzz.png");
                decoded++;
            }
            catch (InvalidFileException)
            {
                rejected++;
            }
        }
        Assert.True(rejected > 1000, $"{rejected} rejected, {decoded} decoded");
    }

    private static void FixCrcs(byte[] file)
    {
        int position = 8;
        while (position + 12 <= file.Length)
        {
            long length = (uint)(file[position] << 24 | file[position + 1] << 16 | file[position + 2] << 8 | file[position + 3]);
            if (position + 12 + length > file.Length)
                return;
            WriteBigEndian(file, position + 8 + (int)length, Crc(file.AsSpan(position + 4, 4 + (int)length)));
            position += 12 + (int)length;
        }
    }

    private static int IndexOf(byte[] file, string type)
    {
        var pattern = System.Text.Encoding.ASCII.GetBytes(type);
        return file.AsSpan().IndexOf(pattern);
    }
}
