using System.Diagnostics;
using System.IO.Compression;
using RawGan.ProGan.Data;
using RawGan.ProGan.Imaging;
using RawGan.ProGan.IO;
using static RawGan.ProGan.Tests.HandMadePng;
using File = System.IO.File;

namespace RawGan.ProGan.Tests;

/// <summary>
/// Hostile image folders (failure class 1): no entry of a folder can hang the scan or make it
/// cost gigabytes. Entries that are not regular files (a named pipe, a device) are skipped without
/// being opened; symbolic links are followed once, loops end, each real file counts once; the
/// header scan reads a bounded amount of any file; decoding holds at most its memory budget.
/// </summary>
public class FolderScanTests
{
    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(60);

    private static void SavePicture(string path, int seed)
    {
        var image = new Image(12, 10, 3);
        new Random(seed).NextBytes(image.Pixels);
        Png.Save(path, image);
    }

    /// <summary>Runs <paramref name="action"/> on another thread and fails (rather than hangs) if it blocks.</summary>
    private static T WithinLimit<T>(Func<T> action)
    {
        var task = Task.Factory.StartNew(action, TaskCreationOptions.LongRunning);
        Assert.True(task.Wait(Limit), $"the folder scan did not end within {Limit.TotalSeconds:F0} s (blocked on an entry?)");
        return task.Result;
    }

    private static void Run(string file, params string[] args)
    {
        using var p = Process.Start(new ProcessStartInfo(file, args) { RedirectStandardError = true })!;
        p.WaitForExit();
        Assert.True(p.ExitCode == 0, $"{file} {string.Join(' ', args)}: {p.StandardError.ReadToEnd()}");
    }

    [Fact]
    public void EntriesThatAreNotRegularFilesAreSkippedWithoutBeingOpened()
    {
        if (!OperatingSystem.IsLinux()) return;
        using var directory = new TempDirectory();
        SavePicture(directory.File("good.png"), 1);
        Run("mkfifo", directory.File("pipe.png"));                         // open() would wait for a writer forever
        File.CreateSymbolicLink(directory.File("zero.jpg"), "/dev/zero");  // a read would never end
        File.CreateSymbolicLink(directory.File("null.png"), "/dev/null");
        File.CreateSymbolicLink(directory.File("dangling.png"), directory.File("nothing-here.png"));

        var (cache, report) = WithinLimit(() => ImageFolder.PrepareCache(directory.Path, 8, directory.File("cache.bin")));
        using (cache)
        {
            Assert.Equal(1, cache.Count);
            Assert.Equal((5, 1, 4), (report.Candidates, report.Loaded, report.Skipped));
            Assert.Contains(report.FirstSkipped, s => s.RelativePath == "pipe.png" && s.Reason.Contains("named pipe") && s.Reason.Contains("not opened"));
            Assert.Contains(report.FirstSkipped, s => s.RelativePath == "zero.jpg" && s.Reason.Contains("character device"));
            Assert.Contains(report.FirstSkipped, s => s.RelativePath == "null.png" && s.Reason.Contains("character device"));
            Assert.Contains(report.FirstSkipped, s => s.RelativePath == "dangling.png");
        }
        // Loading one directly is refused at once too.
        var pipe = WithinLimit(() => Assert.Throws<InvalidFileException>(() => ImageFile.Load(directory.File("pipe.png"))));
        Assert.Contains("named pipe", pipe.Message);
    }

    [Fact]
    public void SymbolicLinkLoopsEndAndEachRealFileIsCountedOnce()
    {
        if (!OperatingSystem.IsLinux()) return;
        using var directory = new TempDirectory();
        Directory.CreateDirectory(directory.File("sub/deeper"));
        SavePicture(directory.File("a.png"), 1);
        SavePicture(directory.File("sub/b.png"), 2);
        SavePicture(directory.File("sub/deeper/c.png"), 3);
        Directory.CreateSymbolicLink(directory.File("sub/deeper/up"), "../..");   // a loop back to the root
        Directory.CreateSymbolicLink(directory.File("sub/self"), ".");            // a loop onto itself
        Directory.CreateSymbolicLink(directory.File("again"), "sub");             // a second path to a folder
        File.CreateSymbolicLink(directory.File("copy-of-a.png"), "a.png");         // a second path to a file
        Run("ln", directory.File("sub/b.png"), directory.File("hard-b.png"));     // and a hard link

        var folder = WithinLimit(() => ImageFolder.Open(directory.Path));
        Assert.Equal(3, folder.Count);
        Assert.Equal([directory.File("a.png"), directory.File("again/b.png"), directory.File("again/deeper/c.png")], folder.Files);
        var (cache, report) = WithinLimit(() => ImageFolder.PrepareCache(directory.Path, 8, directory.File("cache.bin")));
        using (cache)
        {
            Assert.Equal(3, cache.Count);
            Assert.Equal((3, 3, 0), (report.Candidates, report.Loaded, report.Skipped));
            Assert.Equal(2, report.Duplicates);
            Assert.Equal(3, report.FoldersSeenTwice);
            Assert.Contains("2 more paths are links to files already counted", report.ToString());
        }
    }

    [Fact]
    public void TheHeaderScanReadsABoundedAmountOfAHugeSparseFile()
    {
        using var directory = new TempDirectory();
        // A JPEG's header followed by 4 GiB of hole.
        byte[] start = File.ReadAllBytes(ImageFormatTests.Fixture("baseline.jpg"));
        string big = directory.File("big.jpg");
        using (var stream = new FileStream(big, FileMode.CreateNew))
        {
            stream.Write(start);
            stream.SetLength(4L << 30);
        }
        long before = GC.GetAllocatedBytesForCurrentThread();
        using (var stream = new FileStream(big, FileMode.Open, FileAccess.Read))
        {
            var header = ImageFile.ReadHeader(stream, big);
            Assert.Equal(("JPEG", 32, 24, 4L << 30), (header.Format, header.Width, header.Height, header.FileLength));
            Assert.True(stream.Position <= ImageFile.FirstHeaderRead, $"the scan read up to byte {stream.Position}");
        }
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.True(allocated < 2 << 20, $"reading the header of a 4 GiB file allocated {allocated:N0} bytes");

        // In a folder it is refused by its size, before anything is read.
        SavePicture(directory.File("good.png"), 1);
        var (cache, report) = WithinLimit(() => ImageFolder.PrepareCache(directory.Path, 8, directory.File("cache.bin")));
        using (cache)
        {
            Assert.Equal(1, report.Loaded);
            var skipped = Assert.Single(report.FirstSkipped);
            Assert.Equal("big.jpg", skipped.RelativePath);
            Assert.Contains("MB RawGan reads from one image file", skipped.Reason);
        }
    }

    /// <summary>A small file (kilobytes, compressed) announcing a large RGBA picture of zeros.</summary>
    private static byte[] LargePictureInASmallFile(int side)
    {
        var rows = new byte[side * (1 + 4 * side)];
        var zlib = new MemoryStream();
        using (var z = new ZLibStream(zlib, CompressionLevel.SmallestSize, leaveOpen: true)) z.Write(rows);
        var file = new List<byte>(Signature);
        file.AddRange(Header(side, side, 8, 6));
        file.AddRange(Chunk("IDAT", zlib.ToArray()));
        file.AddRange(Chunk("IEND", []));
        return file.ToArray();
    }

    [Fact]
    public void DecodingHoldsAtMostItsMemoryBudget()
    {
        using var directory = new TempDirectory();
        var crafted = LargePictureInASmallFile(2048);
        Assert.True(crafted.Length < 100_000, $"{crafted.Length} bytes");
        for (int i = 0; i < 6; i++) File.WriteAllBytes(directory.File($"large-{i}.png"), crafted);
        SavePicture(directory.File("small.png"), 1);
        long cost = ImageFile.ReadHeader(directory.File("large-0.png")).DecodeCost;
        Assert.InRange(cost, 100L << 20, 130L << 20);   // 28 bytes a pixel (ImageHeader.BytesPerPixelAtMost) and the file

        // Room for one large decode at a time: all are decoded, one after another.
        var budget = new DecodeBudget(cost + (cost / 2));
        var (cache, report) = ImageFolder.PrepareCache(directory.Path, 8, directory.File("cache.bin"), budget);
        using (cache)
        {
            Assert.Equal((7, 7, 0), (report.Candidates, report.Loaded, report.Skipped));
            Assert.InRange(budget.PeakInUse, cost, budget.Bytes);
        }

        // Less than one needs: the large ones are skipped, each with what it would need.
        var small = new DecodeBudget(cost / 2);
        var (again, secondReport) = ImageFolder.PrepareCache(directory.Path, 8, directory.File("cache2.bin"), small);
        using (again)
        {
            Assert.Equal((7, 1, 6), (secondReport.Candidates, secondReport.Loaded, secondReport.Skipped));
            Assert.All(secondReport.FirstSkipped, s => Assert.Contains("decoding it would need about", s.Reason));
            Assert.True(small.PeakInUse <= small.Bytes);
        }
        Assert.InRange(DecodeBudget.FromAvailableMemory().Bytes, 256L << 20, 16L << 30);
    }

    [Fact]
    public void AVeryWidePngIsSkippedByItsHeader()
    {
        using var directory = new TempDirectory();
        SavePicture(directory.File("good.png"), 1);
        // Every colour type and depth at a width whose row holds 2^31 bits or more (a 32-bit
        // product overflowed there), within the pixel limit: one line each, the run goes on.
        int n = 0;
        foreach (var (type, depth, bits) in new[] { (6, 16, 64), (6, 8, 32), (2, 16, 48), (4, 16, 32), (0, 16, 16), (0, 1, 1) })
        {
            long width = Math.Min((1L << 31) / bits + 1, int.MaxValue);
            long height = Math.Max(1, ImageFile.MaxPixels / width);
            var file = new List<byte>(Signature);
            file.AddRange(Header((int)width, (int)height, depth, type));
            file.AddRange(Chunk("IDAT", ZlibStored(new byte[64])));
            file.AddRange(Chunk("IEND", []));
            File.WriteAllBytes(directory.File($"wide-{n++}.png"), file.ToArray());
            long before = GC.GetAllocatedBytesForCurrentThread();
            var error = Assert.Throws<InvalidFileException>(() => ImageFile.Decode(file.ToArray(), "wide.png"));
            Assert.True(GC.GetAllocatedBytesForCurrentThread() - before < 1 << 20, "refused after allocating");
            Assert.True(error.Problem.Contains("megapixels") || error.Problem.Contains("side longer"), error.Message);
        }
        var (cache, report) = ImageFolder.PrepareCache(directory.Path, 8, directory.File("cache.bin"));
        using (cache)
        {
            Assert.Equal((7, 1, 6), (report.Candidates, report.Loaded, report.Skipped));
            Assert.All(report.FirstSkipped, s => Assert.DoesNotContain('\n', s.Reason));
        }
    }
}
