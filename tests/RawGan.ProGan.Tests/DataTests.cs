using System.IO.Compression;
using RawGan.ProGan.Data;
using RawGan.ProGan.Imaging;
using RawGan.ProGan.IO;

namespace RawGan.ProGan.Tests;

public class IdxTests
{
    /// <summary>An IDX file written by hand: 00 00 08 rank, big-endian dimensions, then the bytes.</summary>
    private static byte[] IdxBytes(int[] shape, byte[] data, byte type = 0x08)
    {
        var file = new List<byte> { 0, 0, type, (byte)shape.Length };
        foreach (int d in shape)
            file.AddRange([(byte)(d >> 24), (byte)(d >> 16), (byte)(d >> 8), (byte)d]);
        file.AddRange(data);
        return file.ToArray();
    }

    private static byte[] Gzip(byte[] data)
    {
        var output = new MemoryStream();
        using (var gzip = new GZipStream(output, CompressionLevel.Fastest))
            gzip.Write(data);
        return output.ToArray();
    }

    private static IdxArray Read(byte[] file) => Idx.Read(new MemoryStream(file), "data.idx");

    [Fact]
    public void RawAndGzippedFilesGiveTheSameArray()
    {
        var data = Enumerable.Range(0, 2 * 3 * 4).Select(i => (byte)(i * 7)).ToArray();
        var file = IdxBytes([2, 3, 4], data);
        foreach (var bytes in new[] { file, Gzip(file) })
        {
            var array = Read(bytes);
            Assert.Equal([2, 3, 4], array.Shape);
            Assert.Equal(data, array.Data);
        }
    }

    [Fact]
    public void ImagesAndLabelsFromFiles()
    {
        using var directory = new TempDirectory();
        var pixels = Enumerable.Range(0, 3 * 2 * 2).Select(i => (byte)i).ToArray();
        File.WriteAllBytes(directory.File("images.gz"), Gzip(IdxBytes([3, 2, 2], pixels)));
        File.WriteAllBytes(directory.File("labels"), IdxBytes([3], [7, 8, 9]));
        var images = Idx.ReadImages(directory.File("images.gz"));
        Assert.Equal((3, 2, 2), (images.Count, images.Height, images.Width));
        Assert.Equal([8, 9, 10, 11], images[2].ToArray());
        Assert.Equal([7, 8, 9], Idx.ReadLabels(directory.File("labels")));
        Assert.Throws<InvalidFileException>(() => Idx.ReadImages(directory.File("labels")));
    }

    [Fact]
    public void MalformedHeadersAreNamed()
    {
        Assert.Contains("not an IDX file", Assert.Throws<InvalidFileException>(() => Read([1, 2, 3, 4, 5])).Message);
        Assert.Contains("element type 0x0D", Assert.Throws<InvalidFileException>(() => Read(IdxBytes([1], [0, 0, 0, 0], 0x0D))).Message);
        Assert.Contains("rank 0", Assert.Throws<InvalidFileException>(() => Read([0, 0, 8, 0])).Message);
        Assert.Contains("too short", Assert.Throws<InvalidFileException>(() => Read([0, 0, 8])).Message);
        Assert.Contains("header ends", Assert.Throws<InvalidFileException>(() => Read([0, 0, 8, 2, 0, 0, 0, 1])).Message);
        // Declared data larger than the file: refused before allocating, raw or gzipped.
        var huge = IdxBytes([60000, 28, 28], new byte[10]);
        Assert.Contains("the file holds 10", Assert.Throws<InvalidFileException>(() => Read(huge)).Message);
        Assert.Contains("gzipped bytes can hold", Assert.Throws<InvalidFileException>(() => Read(Gzip(huge))).Message);
        Assert.Contains("more than", Assert.Throws<InvalidFileException>(() => Read(IdxBytes([int.MaxValue, int.MaxValue], []))).Message);
        // Too much data, and truncated gzip.
        Assert.Contains("more data", Assert.Throws<InvalidFileException>(() => Read(Gzip(IdxBytes([2], [1, 2, 3])))).Message);
        var gz = Gzip(IdxBytes([100], Enumerable.Range(0, 100).Select(i => (byte)i).ToArray()));
        Assert.Throws<InvalidFileException>(() => Read(gz[..(gz.Length - 12)]));
        var corrupt = (byte[])gz.Clone();
        corrupt[12] ^= 0xFF;
        Assert.Throws<InvalidFileException>(() => Read(corrupt));
    }

    [Fact]
    public void RandomMutationsNeverEscapeAsOtherExceptions()
    {
        var raw = IdxBytes([4, 5, 5], Enumerable.Range(0, 100).Select(i => (byte)i).ToArray());
        var originals = new[] { raw, Gzip(raw) };
        var random = new Random(5);
        for (int trial = 0; trial < 2000; trial++)
        {
            var file = (byte[])originals[trial % 2].Clone();
            switch (random.Next(3))
            {
                case 0: file[random.Next(file.Length)] ^= (byte)(1 << random.Next(8)); break;
                case 1: file[random.Next(Math.Min(file.Length, 16))] = (byte)random.Next(256); break; // the header
                default: file = file[..random.Next(file.Length)]; break;
            }
            try { Read(file); }
            catch (InvalidFileException) { }
        }
    }

    [Fact]
    public void FashionMnistIsFoundWhereDebianPutsIt()
    {
        var files = FashionMnist.Locate();
        if (files is null)
            return; // dataset-fashion-mnist is not installed here; nothing to check
        Assert.Equal(10_000, Idx.ReadLabels(files.TestLabels).Length);
        var images = Idx.ReadImages(files.TestImages);
        Assert.Equal((10_000, 28, 28), (images.Count, images.Height, images.Width));
        Assert.Null(FashionMnist.Locate("/nonexistent"));
    }
}

public class ShapesDatasetTests
{
    [Fact]
    public void PicturesAreAFunctionOfSeedAndIndex()
    {
        var a = new ShapesDataset(seed: 5);
        var b = new ShapesDataset(seed: 5);
        Assert.Equal(a.RenderBytes(17, 32), b.RenderBytes(17, 32));
        Assert.NotEqual(a.RenderBytes(17, 32), a.RenderBytes(18, 32));
        Assert.NotEqual(a.RenderBytes(17, 32), new ShapesDataset(seed: 6).RenderBytes(17, 32));
        var floats = a.Render(17, 16);
        Assert.All(floats, v => Assert.InRange(v, -1f, 1f));
        Assert.Equal(a.RenderBytes(17, 16).Select(u => u / 127.5f - 1f), floats);
    }

    [Fact]
    public void LowerResolutionsShowTheSamePicture()
    {
        // Area-shrinking the 32x32 rendering gives (nearly) the 8x8 rendering of the same index.
        var data = new ShapesDataset(seed: 1);
        for (int index = 0; index < 20; index++)
        {
            var large = data.RenderBytes(index, 32);
            var small = data.RenderBytes(index, 8);
            double error = 0;
            for (int c = 0; c < 3; c++)
                for (int y = 0; y < 8; y++)
                    for (int x = 0; x < 8; x++)
                    {
                        double mean = 0;
                        for (int dy = 0; dy < 4; dy++)
                            for (int dx = 0; dx < 4; dx++)
                                mean += large[(c * 32 + 4 * y + dy) * 32 + 4 * x + dx] / 16.0;
                        error += Math.Abs(mean - small[(c * 8 + y) * 8 + x]);
                    }
            Assert.True(error / 192 < 6, $"picture {index}: mean difference {error / 192:F2}");
        }
    }

    [Fact]
    public void PicturesAreVariedAndShapesStandOut()
    {
        var data = new ShapesDataset(seed: 0);
        var kinds = new HashSet<ShapesDataset.ShapeKind>();
        var meanColours = new List<double>();
        for (int index = 0; index < 200; index++)
        {
            var pixels = data.RenderBytes(index, 32);
            meanColours.Add(pixels.Take(1024).Average(b => (double)b));
            var shapes = data.ShapesOf(index);
            foreach (var shape in shapes)
                kinds.Add(shape.Kind);
            // The top shape's centre (or, for a ring, a point on its band) differs clearly from the corner.
            var top = shapes[^1];
            double along = top.Kind == ShapesDataset.ShapeKind.Ring ? 0.8 * top.Size : 0;
            int px = (int)((top.CentreX + along * Math.Cos(top.Angle)) * 32), py = (int)((top.CentreY + along * Math.Sin(top.Angle)) * 32);
            px = Math.Clamp(px, 0, 31);
            py = Math.Clamp(py, 0, 31);
            double contrast = 0;
            for (int c = 0; c < 3; c++)
                contrast += Math.Abs(pixels[(c * 32 + py) * 32 + px] - pixels[c * 1024]);
            Assert.True(contrast > 40, $"picture {index}: shape and background differ by only {contrast}");
        }
        Assert.Equal(4, kinds.Count);
        double mean = meanColours.Average();
        double spread = Math.Sqrt(meanColours.Average(m => (m - mean) * (m - mean)));
        Assert.True(spread > 30, $"mean red varies by only {spread:F1}");
    }

    [Fact]
    public void RenderingInParallelGivesThePicturesInOrder()
    {
        var data = new ShapesDataset(seed: 4, count: 70);
        var all = data.RenderAllBytes(8).ToList();
        Assert.Equal(70, all.Count);
        for (int i = 0; i < 70; i++)
            Assert.Equal(data.RenderBytes(i, 8), all[i]);
        Assert.Equal(data.RenderBytes(65, 8), data.RenderAllBytes(8, first: 60, count: 10).ElementAt(5));
    }

    [Fact]
    public void RendersAtEveryPowerOfTwoFrom4To256()
    {
        var data = new ShapesDataset();
        for (int r = 4; r <= 256; r *= 2)
            Assert.Equal(3 * r * r, data.RenderBytes(3, r).Length);
        Assert.Throws<ArgumentOutOfRangeException>(() => data.RenderBytes(0, 24));
        Assert.Throws<ArgumentOutOfRangeException>(() => data.RenderBytes(data.Count, 8));
    }
}

public class ImageFolderAndCacheTests
{
    private static Image RandomImage(int width, int height, int channels, int seed)
    {
        var image = new Image(width, height, channels);
        new Random(seed).NextBytes(image.Pixels);
        return image;
    }

    [Fact]
    public void AFolderOfMixedImagesBecomesAnRgbCacheAndCorruptFilesAreCounted()
    {
        using var directory = new TempDirectory();
        Directory.CreateDirectory(directory.File("sub"));
        Png.Save(directory.File("a.png"), RandomImage(40, 30, 1, 1));        // grey, landscape
        Png.Save(directory.File("b.PNG"), RandomImage(17, 50, 3, 2));        // RGB, portrait, upper-case extension
        Png.Save(directory.File("sub/c.png"), RandomImage(8, 8, 4, 3));      // RGBA, smaller than the target
        var corrupt = Png.Encode(RandomImage(9, 9, 3, 4));
        corrupt[corrupt.Length / 2] ^= 0xFF;
        File.WriteAllBytes(directory.File("broken.png"), corrupt);
        File.WriteAllBytes(directory.File("empty.png"), []);
        File.WriteAllText(directory.File("notes.txt"), "not an image");

        var folder = ImageFolder.Open(directory.Path);
        Assert.Equal(3, folder.Channels);
        Assert.Equal(4, folder.Count); // the empty file is rejected by its header already

        string cachePath = directory.File("cache.bin");
        var (cache, report) = ImageFolder.PrepareCache(directory.Path, 16, cachePath);
        using (cache)
        {
            Assert.Equal(3, cache.Count);
            Assert.Equal((5, 3, 2), (report.Candidates, report.Loaded, report.Skipped));
            Assert.Contains(report.FirstSkipped, s => s.RelativePath == "broken.png" && s.Reason.Contains("not decodable"));
            Assert.Contains(report.FirstSkipped, s => s.RelativePath == "empty.png");
            Assert.Contains("2 skipped", report.ToString());

            // The grey image (first in order) is repeated into all three channels, centre-cropped to
            // 30x30 and area-resized to 16x16.
            var expected = ImageOps.ResizeArea(ImageOps.CenterCropSquare(ImageOps.ToRgb(RandomImage(40, 30, 1, 1))), 16);
            var stored = cache.GetImage(0, 16);
            for (int p = 0; p < 256; p++)
                for (int c = 0; c < 3; c++)
                    Assert.Equal(expected.Pixels[p * 3 + c], stored[c * 256 + p]);
        }

        // Unchanged folder: the cache is reused without decoding.
        var (again, secondReport) = ImageFolder.PrepareCache(directory.Path, 16, cachePath);
        using (again)
        {
            Assert.False(secondReport.FolderRead);
            Assert.Equal(3, again.Count);
        }
    }

    [Fact]
    public void AnAllGreyFolderStaysGrey()
    {
        using var directory = new TempDirectory();
        Png.Save(directory.File("1.png"), RandomImage(10, 10, 1, 1));
        // Grey + alpha (colour type 4), which RawGan's writer does not make: built byte by byte.
        File.WriteAllBytes(directory.File("2.png"), HandMadePng.File(12, 9, 8, 4, HandMadePng.Filter(RandomImage(12, 9, 2, 2).Pixels, 24, 2, _ => 0)));
        var folder = ImageFolder.Open(directory.Path);
        Assert.Equal(1, folder.Channels);
        Assert.Equal(8 * 8, folder.LoadImage(0, 8).Length);
    }

    [Fact]
    public void AFolderWithoutUsableImagesIsAnErrorNamingIt()
    {
        using var directory = new TempDirectory();
        var empty = Assert.Throws<InvalidFileException>(() => ImageFolder.Open(directory.Path));
        Assert.Equal(directory.Path, empty.FilePath);
        Assert.Contains("no .png", empty.Message);

        File.WriteAllBytes(directory.File("junk.png"), [1, 2, 3]);
        var junk = Assert.Throws<InvalidFileException>(() => ImageFolder.Open(directory.Path));
        Assert.Contains("junk.png", junk.Message);

        Assert.Throws<DirectoryNotFoundException>(() => ImageFolder.Open(directory.File("missing")));
    }

    [Fact]
    public void CacheStoresEveryLevelAsTheBoxAverageOfTheFloatLevelAbove()
    {
        using var directory = new TempDirectory();
        var images = Enumerable.Range(0, 3).Select(i => RandomImage(16, 16, 3, 10 + i)).Select(ToChw).ToList();
        string path = directory.File("cache.bin");
        var hash = DatasetCache.HashSources(["test"]);
        Assert.Equal(3, DatasetCache.Write(path, 3, 16, hash, images));
        using var cache = DatasetCache.Open(path);
        Assert.Equal((3, 3, 16), (cache.Count, cache.Channels, cache.MaxResolution));
        Assert.Equal(hash, cache.SourceHash);
        Assert.Equal(DatasetCache.HeaderSize + 3 * 3 * (16 * 16 + 8 * 8 + 4 * 4), new FileInfo(path).Length);
        for (int n = 0; n < 3; n++)
        {
            Assert.Equal(images[n], cache.GetImage(n, 16).ToArray());
            // 4x4 level: the mean of each 4x4 block of the original, rounded once (not the rounded 8x8 level averaged again).
            var level4 = cache.GetImage(n, 4);
            for (int c = 0; c < 3; c++)
                for (int y = 0; y < 4; y++)
                    for (int x = 0; x < 4; x++)
                    {
                        double mean = 0;
                        for (int dy = 0; dy < 4; dy++)
                            for (int dx = 0; dx < 4; dx++)
                                mean += images[n][(c * 16 + 4 * y + dy) * 16 + 4 * x + dx] / 16.0;
                        Assert.Equal(Math.Round(mean, MidpointRounding.ToEven), level4[(c * 4 + y) * 4 + x]);
                    }
        }
    }

    [Fact]
    public void BatchesAreInRangeAndMirrorFlipsLeftToRight()
    {
        using var directory = new TempDirectory();
        var image = RandomImage(8, 8, 3, 1);
        string path = directory.File("cache.bin");
        DatasetCache.Write(path, 3, 8, new byte[32], [ToChw(image), ToChw(RandomImage(8, 8, 3, 2))]);
        using var cache = DatasetCache.Open(path);
        var batch = cache.GetBatch([0, 1, 0], 8, [false, false, true]);
        Assert.Equal(3 * 3 * 64, batch.Length);
        var plain = batch.AsSpan(0, 192);
        var flipped = batch.AsSpan(2 * 192, 192);
        for (int c = 0; c < 3; c++)
            for (int y = 0; y < 8; y++)
                for (int x = 0; x < 8; x++)
                {
                    Assert.Equal(image[x, y, c] / 127.5f - 1f, plain[(c * 8 + y) * 8 + x]);
                    Assert.Equal(plain[(c * 8 + y) * 8 + x], flipped[(c * 8 + y) * 8 + 7 - x]);
                }
    }

    [Fact]
    public void DamagedCachesAreInvalidFilesAndStaleOnesAreRebuilt()
    {
        using var directory = new TempDirectory();
        string path = directory.File("cache.bin");
        var images = new[] { ToChw(RandomImage(4, 4, 3, 1)) };
        DatasetCache.Write(path, 3, 4, new byte[32], images);
        var bytes = File.ReadAllBytes(path);
        File.WriteAllBytes(path, bytes[..^1]);
        Assert.Contains("truncated", Assert.Throws<InvalidFileException>(() => DatasetCache.Open(path)).Message);
        var wrongMagic = (byte[])bytes.Clone();
        wrongMagic[0] = (byte)'X';
        File.WriteAllBytes(path, wrongMagic);
        Assert.Contains("magic", Assert.Throws<InvalidFileException>(() => DatasetCache.Open(path)).Message);

        // OpenOrBuild replaces a damaged cache, and one built from another source.
        using (var rebuilt = DatasetCache.OpenOrBuild(path, 3, 4, new byte[32], () => images, out bool wasRebuilt))
            Assert.True(wasRebuilt);
        using (var reused = DatasetCache.OpenOrBuild(path, 3, 4, new byte[32], () => throw new InvalidOperationException("must not rebuild"), out bool wasRebuilt))
            Assert.False(wasRebuilt);
        var otherHash = new byte[32];
        otherHash[0] = 1;
        using (var other = DatasetCache.OpenOrBuild(path, 3, 4, otherHash, () => images, out bool wasRebuilt))
        {
            Assert.True(wasRebuilt);
            Assert.Equal(otherHash, other.SourceHash);
        }
    }

    [Fact]
    public void ShapesGoThroughTheCacheUnchanged()
    {
        using var directory = new TempDirectory();
        var data = new ShapesDataset(seed: 2, count: 5);
        string path = directory.File("shapes.bin");
        DatasetCache.Write(path, 3, 32, new byte[32], Enumerable.Range(0, data.Count).Select(i => data.RenderBytes(i, 32)));
        using var cache = DatasetCache.Open(path);
        Assert.Equal(data.Render(4, 32), cache.GetBatch([4], 32));
    }

    private static byte[] ToChw(Image image)
    {
        int plane = image.Width * image.Height;
        var chw = new byte[image.Channels * plane];
        for (int p = 0; p < plane; p++)
            for (int c = 0; c < image.Channels; c++)
                chw[c * plane + p] = image.Pixels[p * image.Channels + c];
        return chw;
    }
}
