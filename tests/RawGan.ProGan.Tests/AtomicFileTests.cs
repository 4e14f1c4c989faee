using RawGan.ProGan.IO;

namespace RawGan.ProGan.Tests;

public class AtomicFileTests
{
    [Fact]
    public void WritesAndReplacesWithoutLeavingTemporaryFiles()
    {
        using var directory = new TempDirectory();
        string path = directory.File("state.json");
        AtomicFile.WriteAllText(path, "first");
        AtomicFile.WriteAllText(path, "second");
        Assert.Equal("second", File.ReadAllText(path));
        Assert.Single(Directory.GetFiles(directory.Path));
    }

    [Fact]
    public void AFailedWriteLeavesThePreviousFileIntact()
    {
        using var directory = new TempDirectory();
        string path = directory.File("weights.safetensors");
        AtomicFile.WriteAllBytes(path, [1, 2, 3]);
        Assert.Throws<InvalidOperationException>(() => AtomicFile.Write(path, stream =>
        {
            stream.Write(new byte[100_000]);
            throw new InvalidOperationException("crash in the middle of writing");
        }));
        Assert.Equal([1, 2, 3], File.ReadAllBytes(path));
        Assert.Single(Directory.GetFiles(directory.Path));
    }

    [Fact]
    public void AMissingFolderIsAnIOExceptionNamingThePath()
    {
        using var directory = new TempDirectory();
        string path = Path.Combine(directory.Path, "no-such-folder", "x.bin");
        var error = Assert.ThrowsAny<IOException>(() => AtomicFile.WriteAllBytes(path, [1]));
        Assert.Contains(path, error.Message);
    }

    [Fact]
    public void AnUnwritableTargetIsAnIOExceptionAndTheOldContentStays()
    {
        // The target path is a directory: the final rename fails, as it would on a read-only or full
        // disk, and the error names the path.
        using var directory = new TempDirectory();
        string path = directory.File("occupied");
        Directory.CreateDirectory(path);
        File.WriteAllText(Path.Combine(path, "inside.txt"), "keep");
        var error = Assert.ThrowsAny<IOException>(() => AtomicFile.WriteAllBytes(path, [1, 2]));
        Assert.Contains("occupied", error.Message);
        Assert.Equal("keep", File.ReadAllText(Path.Combine(path, "inside.txt")));
        Assert.Single(Directory.GetFileSystemEntries(directory.Path));
    }
}
