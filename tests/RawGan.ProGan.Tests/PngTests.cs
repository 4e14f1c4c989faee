using System.IO.Compression;
using RawGan.ProGan.Imaging;
using RawGan.ProGan.IO;
using static RawGan.ProGan.Tests.HandMadePng;

namespace RawGan.ProGan.Tests;

/// <summary>
/// PNG through <see cref="ImageFile"/> (Skia's decoder) and <see cref="Png"/> (Skia's encoder). The
/// files read are made byte by byte by <see cref="HandMadePng"/>, so every expected pixel is known
/// without any PNG library; what the encoder writes is read back by <see cref="ReadByHand"/>, a
/// reader of the test's own on System.IO.Compression's zlib.
/// </summary>
public class PngTests
{
    private static Image Decode(byte[] file) => ImageFile.Decode(file, "test.png");

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
    public void Grey16BitKeepsTheHighByte()
    {
        ushort[] samples = [0, 0xFFFF, 0x1234, 0x8080, 0x807F, 128, 129, 385, 0xFF7F];
        var row = new byte[1 + samples.Length * 2];
        for (int i = 0; i < samples.Length; i++)
        {
            row[1 + 2 * i] = (byte)(samples[i] >> 8);
            row[2 + 2 * i] = (byte)samples[i];
        }
        var image = Decode(File(samples.Length, 1, 16, 0, row));
        Assert.Equal(1, image.Channels);
        Assert.Equal(samples.Select(s => (byte)(s >> 8)).ToArray(), image.Pixels);
        // At most one level below rounding.
        Assert.All(samples.Zip(image.Pixels), p => Assert.InRange(Math.Round(p.First / 257.0) - p.Second, 0, 1));
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
        // Two RGBA pixels at 16 bits: each sample is two big-endian bytes, reduced to its high byte.
        byte[] rgba = [0, 0x12, 0x34, 0xFF, 0xFF, 0x80, 0x80, 0x00, 0x00, 0x00, 0x00, 0x01, 0xFF, 0xFF, 0x7F, 0x7F, 0xFF];
        var image = Decode(File(2, 1, 16, 6, rgba));
        Assert.Equal(4, image.Channels);
        Assert.Equal([0x12, 0xFF, 0x80, 0x00, 0x00, 0x01, 0xFF, 0x7F], image.Pixels);

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

    [Fact]
    public void InterlacedAndPlainFilesOfOnePictureDecodeAlike()
    {
        foreach (var (width, height, channels, colourType) in new[] { (13, 11, 3, 2), (8, 8, 4, 6), (5, 9, 1, 0) })
        {
            var pixels = TestPixels(width, height, channels, width + height);
            var plain = Decode(File(width, height, 8, colourType, Filter(pixels, width * channels, channels, y => y % 5)));
            var interlaced = Decode(File(width, height, 8, colourType, Adam7Rows(pixels, width, height, channels, p => (p + 2) % 5), interlace: 1));
            Assert.Equal((width, height, channels), (interlaced.Width, interlaced.Height, interlaced.Channels));
            Assert.Equal(plain.Pixels, interlaced.Pixels);
            Assert.Equal(pixels, interlaced.Pixels);
        }
    }

    /// <summary>
    /// Reads a PNG of 8-bit samples, not interlaced, as the specification defines it and
    /// independently of Skia: chunks with their CRCs (<see cref="HandMadePng.Crc"/>), the IDAT data
    /// inflated by System.IO.Compression, the five row filters undone.
    /// </summary>
    private static (int Width, int Height, int ColourType, byte[] Pixels) ReadByHand(byte[] file)
    {
        Assert.Equal(Signature, file[..8]);
        int position = 8, width = 0, height = 0, colourType = -1;
        var idat = new MemoryStream();
        while (true)
        {
            int length = (int)ReadBigEndian(file, position);
            string type = System.Text.Encoding.ASCII.GetString(file, position + 4, 4);
            var data = file.AsSpan(position + 8, length);
            Assert.Equal(Crc(file.AsSpan(position + 4, 4 + length)), ReadBigEndian(file, position + 8 + length));
            if (type == "IHDR")
            {
                (width, height, colourType) = ((int)ReadBigEndian(file, position + 8), (int)ReadBigEndian(file, position + 12), data[9]);
                Assert.Equal((8, 0), (data[8], data[12]));   // 8 bits a sample, not interlaced
            }
            if (type == "IDAT") idat.Write(data);
            position += 12 + length;
            if (type == "IEND") break;
        }
        int channels = colourType switch { 0 => 1, 4 => 2, 2 => 3, 6 => 4, _ => throw new InvalidDataException($"colour type {colourType}") };
        idat.Position = 0;
        var rows = new MemoryStream();
        using (var zlib = new ZLibStream(idat, CompressionMode.Decompress)) zlib.CopyTo(rows);
        var raw = rows.ToArray();
        int stride = width * channels;
        Assert.Equal(height * (stride + 1), raw.Length);
        var pixels = new byte[height * stride];
        for (int y = 0; y < height; y++)
        {
            int filter = raw[y * (stride + 1)];
            for (int i = 0; i < stride; i++)
            {
                int a = i >= channels ? pixels[y * stride + i - channels] : 0;
                int b = y > 0 ? pixels[(y - 1) * stride + i] : 0;
                int c = y > 0 && i >= channels ? pixels[(y - 1) * stride + i - channels] : 0;
                int p = a + b - c, pa = Math.Abs(p - a), pb = Math.Abs(p - b), pc = Math.Abs(p - c);
                int predicted = filter switch
                {
                    0 => 0,
                    1 => a,
                    2 => b,
                    3 => (a + b) / 2,
                    4 => pa <= pb && pa <= pc ? a : pb <= pc ? b : c,
                    _ => throw new InvalidDataException($"filter {filter}"),
                };
                pixels[y * stride + i] = (byte)(raw[y * (stride + 1) + 1 + i] + predicted);
            }
        }
        return (width, height, colourType, pixels);
    }

    private static uint ReadBigEndian(byte[] buffer, int offset) =>
        (uint)(buffer[offset] << 24 | buffer[offset + 1] << 16 | buffer[offset + 2] << 8 | buffer[offset + 3]);

    [Theory]
    [InlineData(1, 0)]
    [InlineData(3, 2)]
    [InlineData(4, 6)]
    public void TheEncoderWritesWhatAnIndependentReaderReads(int channels, int colourType)
    {
        var pixels = TestPixels(37, 23, channels, channels);
        var file = Png.Encode(new Image(37, 23, channels, pixels));
        var (width, height, type, read) = ReadByHand(file);
        Assert.Equal((37, 23, colourType), (width, height, type));
        Assert.Equal(pixels, read);
        var decoded = Decode(file);
        Assert.Equal((37, 23, channels), (decoded.Width, decoded.Height, decoded.Channels));
        Assert.Equal(pixels, decoded.Pixels);
    }

    [Fact]
    public void GreyWithAlphaIsWrittenAsRgbaWithTheGreyRepeated()
    {
        var pixels = TestPixels(9, 7, 2, 5);
        var (_, _, type, read) = ReadByHand(Png.Encode(new Image(9, 7, 2, pixels)));
        Assert.Equal(6, type);
        for (int p = 0; p < 9 * 7; p++)
            Assert.Equal([pixels[2 * p], pixels[2 * p], pixels[2 * p], pixels[2 * p + 1]], read[(4 * p)..(4 * p + 4)]);
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
        Assert.Equal(gradient.Pixels, ReadByHand(Png.Encode(gradient)).Pixels);
    }

    [Fact]
    public void SaveAndLoadThroughAFile()
    {
        using var directory = new TempDirectory();
        var image = new Image(5, 4, 3, TestPixels(5, 4, 3, 9));
        string path = Path.Combine(directory.Path, "out.png");
        Png.Save(path, image);
        Assert.Equal(image.Pixels, ImageFile.Load(path).Pixels);
        Assert.Equal(new ImageHeader("PNG", 5, 4, false, 1, new FileInfo(path).Length), ImageFile.ReadHeader(path));
    }

    // ---- Malformed files: always InvalidFileException, naming the file, in one line ----

    private static byte[] ValidFile() => File(4, 3, 8, 2, Filter(TestPixels(4, 3, 3, 1), 12, 3, y => y % 5));

    private static InvalidFileException Rejects(byte[] file)
    {
        var error = Assert.Throws<InvalidFileException>(() => ImageFile.Decode(file, "photos/cat.png"));
        Assert.StartsWith("photos/cat.png: ", error.Message);
        Assert.DoesNotContain('\n', error.Message);
        return error;
    }

    [Fact]
    public void CorruptChunkDataFailsTheCrc()
    {
        var file = ValidFile();
        file[IndexOf(file, "IDAT") + 10] ^= 0x40;
        Assert.Contains("not decodable", Rejects(file).Message);
    }

    [Fact]
    public void TruncatedFilesAreRejectedAtEveryLength()
    {
        // Never half a picture: every cut before the last of the image data is refused; a later
        // one (losing the zlib checksum, the CRC or IEND, after the last row) may give the whole picture.
        var file = ValidFile();
        int idat = IndexOf(file, "IDAT");
        int lastRow = idat + 4 + (int)ReadBigEndian(file, idat - 4) - 4;
        for (int length = 0; length < file.Length; length++)
        {
            if (length < lastRow)
            {
                Rejects(file[..length]);
                continue;
            }
            try { Assert.Equal(TestPixels(4, 3, 3, 1), Decode(file[..length]).Pixels); }
            catch (InvalidFileException e) { Assert.StartsWith("test.png: ", e.Message); }
        }
    }

    [Fact]
    public void HugeDimensionsAreRefusedBeforeAllocating()
    {
        var file = new List<byte>(Signature);
        file.AddRange(Header(100_000, 100_000, 8, 6));
        file.AddRange(Chunk("IDAT", ZlibStored(new byte[10])));
        file.AddRange(Chunk("IEND", []));
        var bytes = file.ToArray();
        long before = GC.GetAllocatedBytesForCurrentThread();
        Assert.Contains("megapixels", Rejects(bytes).Message);
        Assert.True(GC.GetAllocatedBytesForCurrentThread() - before < 1 << 20);

        // Within the pixel limit, but far more than the file could hold.
        file = new List<byte>(Signature);
        file.AddRange(Header(10_000, 10_000, 8, 6));
        file.AddRange(Chunk("IDAT", ZlibStored(new byte[10])));
        file.AddRange(Chunk("IEND", []));
        bytes = file.ToArray();
        before = GC.GetAllocatedBytesForCurrentThread();
        Assert.Contains("cannot hold", Rejects(bytes).Message);
        Assert.True(GC.GetAllocatedBytesForCurrentThread() - before < 1 << 20);

        // And a side over the limit within the pixel count.
        Assert.Contains("side longer", Rejects(File(70_000, 1, 8, 0, new byte[70_001])).Message);
    }

    [Fact]
    public void MalformedFilesAreRefusedNamingTheFile()
    {
        var rows = Filter(TestPixels(3, 3, 1, 2), 3, 1, _ => 0);
        rows[4] = 5; // the second row's filter byte
        var lying = ValidFile();
        WriteBigEndian(lying, IndexOf(lying, "IDAT") - 4, 0x7FFF0000);
        var idatFirst = new List<byte>(Signature);
        idatFirst.AddRange(Chunk("IDAT", ZlibStored([0, 0])));
        var noIdat = new List<byte>(Signature);
        noIdat.AddRange(Header(2, 2, 8, 0));
        noIdat.AddRange(Chunk("IEND", []));
        var garbage = new List<byte>(Signature);
        garbage.AddRange(Header(8, 8, 8, 0));
        garbage.AddRange(Chunk("IDAT", [0x78, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0x12, 0x34, 0x56, 0x78]));
        garbage.AddRange(Chunk("IEND", []));
        var cases = new (string What, byte[] File)[]
        {
            ("not a PNG", [1, 2, 3, 4, 5, 6, 7, 8, 9]),
            ("bit depth 4 for colour type 2", File(1, 1, 4, 2, [0, 0])),
            ("colour type 5", File(1, 1, 8, 5, [0, 0])),
            ("size 0x1", File(0, 1, 8, 0, [0])),
            ("palette without PLTE", File(1, 1, 8, 3, [0, 0])),
            ("IDAT before IHDR", idatFirst.ToArray()),
            ("no IDAT", noIdat.ToArray()),
            ("filter type 5", File(3, 3, 8, 0, rows)),
            ("zlib garbage", garbage.ToArray()),
            ("two rows of three", File(3, 3, 8, 0, Filter(TestPixels(3, 2, 1, 2), 3, 1, _ => 0))),
        };
        foreach (var (what, file) in cases)
        {
            var error = Record.Exception(() => Rejects(file));
            Assert.True(error is null, $"{what}: {error?.Message}");
        }
        // A chunk that claims more bytes than the file has: refused, or (its rows are all there) read whole.
        try { Assert.Equal(TestPixels(4, 3, 3, 1), Decode(lying).Pixels); }
        catch (InvalidFileException e) { Assert.StartsWith("test.png: ", e.Message); }
        // An unknown ancillary chunk (lower-case first letter) is skipped; an unknown critical one
        // is refused or (as Skia does) skipped, never read as pixels.
        Assert.Equal([42], Decode(File(1, 1, 8, 0, [0, 42], extraChunks: [Chunk("tEXt", "Comment\0hello"u8)])).Pixels);
        try { Assert.Equal([42], Decode(File(1, 1, 8, 0, [0, 42], extraChunks: [Chunk("ABCD", [1])])).Pixels); }
        catch (InvalidFileException e) { Assert.StartsWith("test.png: ", e.Message); }
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
            File(6, 5, 16, 6, Filter(TestPixels(48, 5, 1, 8), 48, 8, y => y % 5)),
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
                ImageFile.Decode(file, "fuzz.png");
                decoded++;
            }
            catch (InvalidFileException e)
            {
                Assert.StartsWith("fuzz.png: ", e.Message);
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
