using System.Runtime.InteropServices;
using System.Text;
using RawGan.ProGan.Data;
using RawGan.ProGan.Imaging;
using RawGan.ProGan.IO;
using File = System.IO.File;

namespace RawGan.ProGan.Tests;

/// <summary>
/// File names that are not valid UTF-8 (failure class 6): on Linux a name is bytes, and a Latin-1
/// <c>caf\xE9.png</c> used to be reported as missing. Such files are made here by the C library
/// (rename(2) and mkdir(2) with byte paths), so no outside tool is needed.
/// </summary>
public partial class ByteNameTests
{
    [Fact]
    public void ANameIsShownAsItIsWhenValidAndWithItsOtherBytesEscapedWhenNot()
    {
        Assert.Equal("café.png", NativePath.Show("café.png"u8));
        Assert.Equal(@"a\b.png", NativePath.Show(@"a\b.png"u8));                  // valid: as it is
        Assert.Equal(@"caf\xE9.png", NativePath.Show([.. "caf"u8, 0xE9, .. ".png"u8]));
        Assert.Equal(@"\xFF\xFE.png", NativePath.Show([0xFF, 0xFE, .. ".png"u8]));
        Assert.Equal(@"a\\\xE9", NativePath.Show([(byte)'a', (byte)'\\', 0xE9]));  // not valid: the backslash doubled
        Assert.Equal(@"\xE2\x82", NativePath.Show([0xE2, 0x82]));                   // a sequence cut short
        Assert.Equal(@"\xC0\xAF", NativePath.Show([0xC0, 0xAF]));                   // an overlong '/'
        Assert.Equal(@"\xED\xA0\x80", NativePath.Show([0xED, 0xA0, 0x80]));         // a surrogate
        Assert.Equal("café.png", NativePath.KeyOf("café.png"u8));
        Assert.Equal(@"a\\b.png", NativePath.KeyOf(@"a\b.png"u8));

        // The key is a different text for every sequence of bytes, over an alphabet made to collide.
        byte[] alphabet = [(byte)'a', (byte)'\\', (byte)'x', (byte)'E', (byte)'9', 0xE9, 0xC3, 0xA9, 0xFF];
        var random = new Random(7);
        var names = new Dictionary<string, byte[]>();
        for (int i = 0; i < 5000; i++)
        {
            var name = new byte[random.Next(1, 7)];
            for (int j = 0; j < name.Length; j++) name[j] = alphabet[random.Next(alphabet.Length)];
            string key = NativePath.KeyOf(name);
            Assert.DoesNotContain('\uFFFD', key);
            if (names.TryGetValue(key, out var other))
                Assert.True(other.AsSpan().SequenceEqual(name), $"{Convert.ToHexString(other)} and {Convert.ToHexString(name)} have the key {key}");
            names[key] = name;
        }
    }

    private static Image Picture(int width, int height, int seed)
    {
        var image = new Image(width, height, 3);
        new Random(seed).NextBytes(image.Pixels);
        return image;
    }

    /// <summary>What the folder's preparation makes of an RGB picture, computed here: centre crop, area resize, CHW.</summary>
    private static byte[] Prepared(Image image, int resolution)
    {
        var square = ImageOps.ResizeArea(ImageOps.CenterCropSquare(image), resolution);
        int plane = resolution * resolution;
        var chw = new byte[3 * plane];
        for (int p = 0; p < plane; p++)
            for (int c = 0; c < 3; c++)
                chw[c * plane + p] = square.Pixels[p * 3 + c];
        return chw;
    }

    [Fact]
    public void ImagesWhoseNamesAreNotValidUtf8AreAllUsedAndNamedWithTheirBytesEscaped()
    {
        if (!OperatingSystem.IsLinux()) return;
        using var directory = new TempDirectory();
        using var made = new ByteNamedEntries(directory.Path);
        var pictures = new List<Image>();
        void Save(byte[] name, int seed)
        {
            var image = Picture(12, 10, seed);
            pictures.Add(image);
            Png.Save(directory.File("staging.png"), image);
            made.RenameTo(directory.File("staging.png"), name);
        }
        Png.Save(directory.File("plain.png"), Picture(12, 10, 1));
        pictures.Add(Picture(12, 10, 1));
        Save([.. "caf"u8, 0xE9, .. ".png"u8], 2);        // Latin-1 "café.png"
        Save([0xFF, 0xFE, .. ".png"u8], 3);
        Save([(byte)'a', 0xE9, .. ".png"u8], 4);         // these two differ only in a byte that is
        Save([(byte)'a', 0xE8, .. ".png"u8], 5);         // not UTF-8: both were "a\uFFFD.png" in .NET
        made.Folder([(byte)'d', 0xE9, (byte)'j', 0xE0]);     // a folder whose name is not UTF-8 either
        Save([(byte)'d', 0xE9, (byte)'j', 0xE0, .. "/inside.png"u8], 6);
        var corrupt = Png.Encode(Picture(40, 30, 7));
        corrupt[corrupt.Length / 2] ^= 0xFF;
        File.WriteAllBytes(directory.File("staging.png"), corrupt);
        made.RenameTo(directory.File("staging.png"), [.. @"bad\"u8, 0xE9, .. ".png"u8]);

        var folder = ImageFolder.Open(directory.Path);
        Assert.Equal(7, folder.Count);
        Assert.Equal(new[] { @"\xFF\xFE.png", @"a\xE8.png", @"a\xE9.png", @"bad\\\xE9.png", @"caf\xE9.png", @"d\xE9j\xE0/inside.png", "plain.png" }
            .Select(name => Path.Join(directory.Path, name)), folder.Files);

        var (cache, report) = ImageFolder.PrepareCache(directory.Path, 8, directory.File("cache.bin"));
        using (cache)
        {
            Assert.Equal((7, 6, 1), (report.Candidates, report.Loaded, report.Skipped));
            var skipped = Assert.Single(report.FirstSkipped);
            Assert.Equal(@"bad\\\xE9.png", skipped.RelativePath);
            Assert.Contains(@"bad\\\xE9.png: ", report.ToString());
            Assert.DoesNotContain('\uFFFD', report.ToString());
            Assert.DoesNotContain("missing", report.ToString());

            // Each picture is in the cache once, with the pixels that were written (computed here
            // from the pictures, not read back from the files).
            var stored = Enumerable.Range(0, cache.Count).Select(i => cache.GetImage(i, 8).ToArray()).ToList();
            foreach (var picture in pictures)
                Assert.Single(stored, s => s.AsSpan().SequenceEqual(Prepared(picture, 8)));
        }

        // The cache is identified by the names' bytes: unchanged, it is reused; renaming a\xE8.png
        // to a\xE7.png (the same U+FFFD string to .NET, the same size and time) rebuilds it.
        var (again, secondReport) = ImageFolder.PrepareCache(directory.Path, 8, directory.File("cache.bin"));
        using (again) Assert.False(secondReport.FolderRead);
        made.Rename([(byte)'a', 0xE8, .. ".png"u8], [(byte)'a', 0xE7, .. ".png"u8]);
        var (rebuilt, thirdReport) = ImageFolder.PrepareCache(directory.Path, 8, directory.File("cache.bin"));
        using (rebuilt)
        {
            Assert.True(thirdReport.FolderRead);
            Assert.Equal(6, rebuilt.Count);
        }
    }

    [Fact]
    public async Task AFileWhoseNameIsNotValidUtf8IsNotOpenedWhenItIsAPipe()
    {
        if (!OperatingSystem.IsLinux()) return;
        using var directory = new TempDirectory();
        using var made = new ByteNamedEntries(directory.Path);
        Png.Save(directory.File("good.png"), Picture(12, 10, 1));
        made.Pipe([(byte)'p', 0xE9, .. ".png"u8]);
        // A scan that blocked on the pipe would end in a TimeoutException here.
        var (cache, report) = await Task.Run(() => ImageFolder.PrepareCache(directory.Path, 8, directory.File("cache.bin"))).WaitAsync(TimeSpan.FromSeconds(60));
        using (cache)
        {
            Assert.Equal((2, 1, 1), (report.Candidates, report.Loaded, report.Skipped));
            var skipped = Assert.Single(report.FirstSkipped);
            Assert.Equal(@"p\xE9.png", skipped.RelativePath);
            Assert.Contains("named pipe", skipped.Reason);
        }
    }

    [Fact]
    public void APathThatIsNotUtf8IsReachedThroughProcSelfFdAndKeptAsItsBytes()
    {
        if (!OperatingSystem.IsLinux()) return;
        using var directory = new TempDirectory();
        byte[] root = Encoding.UTF8.GetBytes(directory.Path);
        try
        {
            // A folder named by bytes, and a path below it that does not exist yet.
            var cafe = NativePath.FromBytes([.. root, .. "/caf"u8, 0xE9]);
            Assert.True(cafe.TryCreateFolder());
            Assert.False(cafe.TryCreateFolder());   // taken
            var sub = cafe.Join("sub"u8);
            Assert.False(sub.IsUtf8);
            Assert.Equal($@"{directory.Path}/caf\xE9/sub", sub.Shown);
            string usable = sub.Usable()!;
            Assert.Matches("^/proc/self/fd/[0-9]+/sub$", usable);
            Assert.Equal(usable, sub.Usable());   // one descriptor per folder

            // .NET's own file APIs work through it; the name maps back to the real bytes.
            Directory.CreateDirectory(usable);
            File.WriteAllText(Path.Combine(usable, "a.txt"), "through /proc");
            Assert.Equal(FileKind.Regular, FileStatus.Of(sub.Join("a.txt"u8)).Kind);
            Assert.True(NativePath.Of(Path.Combine(usable, "a.txt")).Bytes.SequenceEqual([.. sub.Bytes, .. "/a.txt"u8]));
            Assert.Equal($@"wrote {directory.Path}/caf\xE9/sub/a.txt.", NativePath.ShowPaths($"wrote {usable}/a.txt."));
            Assert.Equal("/proc/self/fd/999999/x", NativePath.ShowPaths("/proc/self/fd/999999/x"));   // not one of RawGan's

            // Missing: null, unless asked to make it (with the folders above).
            var deep = NativePath.FromBytes([.. root, .. "/n"u8, 0xE8, .. "/m"u8, 0xE7]);
            Assert.Null(deep.Usable());
            Assert.True(Directory.Exists(deep.Usable(createFolders: true)));
            Assert.Equal(FileKind.Directory, FileStatus.Of(deep).Kind);

            // A full path by bytes, as Path.GetFullPath makes one from a string.
            byte[] full = [.. Encoding.UTF8.GetBytes(Environment.CurrentDirectory), .. "/x/"u8, 0xE9];
            Assert.True(NativePath.FromBytes([.. "x/./y/../"u8, 0xE9, (byte)'/']).Full().Bytes.SequenceEqual(full));
            Assert.True(NativePath.FromBytes([.. root, .. "/caf"u8, 0xE9, .. "/sub"u8]).Parent.Bytes.SequenceEqual(cafe.Bytes));
            Assert.True(sub.NameBytes.SequenceEqual("sub"u8));

            // Saved as text and read back byte for byte; a UTF-8 path is saved as itself.
            foreach (byte[] bytes in new byte[][] { sub.Bytes.ToArray(), [(byte)'/', (byte)'a', (byte)'\\', 0xE9, (byte)'\\', (byte)'x'], "/plain/café"u8.ToArray() })
            {
                var path = NativePath.FromBytes(bytes);
                if (path.IsUtf8)
                {
                    Assert.Equal(Encoding.UTF8.GetString(bytes), path.Persisted);
                    Assert.False(NativePath.TryParsePersisted(path.Persisted, out _));
                    continue;
                }
                Assert.StartsWith(NativePath.PersistedPrefix, path.Persisted);
                Assert.True(NativePath.TryParsePersisted(path.Persisted, out var back));
                Assert.True(back.Bytes.SequenceEqual(bytes), path.Persisted);
            }

            // A branch of a run folder whose name is not UTF-8: made by bytes, under a free name.
            var (first, firstLock) = Training.RunLock.CreateUnique(cafe, [.. "run"u8, 0xFF]);
            var (second, secondLock) = Training.RunLock.CreateUnique(cafe, [.. "run"u8, 0xFF]);
            using (firstLock)
            using (secondLock)
            {
                Assert.Equal($@"{directory.Path}/caf\xE9/run\xFF", NativePath.ShowPaths(first));
                Assert.Equal($@"{directory.Path}/caf\xE9/run\xFF-2", NativePath.ShowPaths(second));
                Assert.True(File.Exists(Path.Combine(second, Training.RunLock.FileName)));
            }
        }
        finally
        {
            // .NET's recursive delete cannot name what is in there.
            using var rm = System.Diagnostics.Process.Start("rm", ["-rf", directory.Path]);
            rm.WaitForExit();
        }
    }

    /// <summary>
    /// Entries made under a folder by byte paths, removed again on dispose (.NET's own recursive
    /// delete cannot name them).
    /// </summary>
    private sealed unsafe partial class ByteNamedEntries(string folder) : IDisposable
    {
        private readonly List<(byte[] Name, bool Folder)> _made = new();

        private byte[] PathOf(ReadOnlySpan<byte> name) => [.. Encoding.UTF8.GetBytes(folder), (byte)'/', .. name, 0];

        private static void Check(int result, string call)
        {
            if (result != 0) throw new IOException($"{call}: {Marshal.GetPInvokeErrorMessage(Marshal.GetLastPInvokeError())}");
        }

        public void RenameTo(string from, byte[] name)
        {
            fixed (byte* source = Encoding.UTF8.GetBytes(from + "\0"))
            fixed (byte* target = PathOf(name))
                Check(RenameBytes(source, target), "rename");
            _made.Add((name, false));
        }

        public void Rename(byte[] from, byte[] to)
        {
            fixed (byte* source = PathOf(from))
            fixed (byte* target = PathOf(to))
                Check(RenameBytes(source, target), "rename");
            _made.RemoveAll(e => e.Name.AsSpan().SequenceEqual(from));
            _made.Add((to, false));
        }

        public void Folder(byte[] name)
        {
            fixed (byte* path = PathOf(name)) Check(MakeDirectory(path, 0x1ED /* 0755 */), "mkdir");
            _made.Add((name, true));
        }

        public void Pipe(byte[] name)
        {
            fixed (byte* path = PathOf(name)) Check(MakeFifo(path, 0x1A4 /* 0644 */), "mkfifo");
            _made.Add((name, false));
        }

        public void Dispose()
        {
            for (int i = _made.Count - 1; i >= 0; i--)
                fixed (byte* path = PathOf(_made[i].Name))
                    _ = _made[i].Folder ? RemoveDirectory(path) : Unlink(path);
        }

        [LibraryImport("libc", EntryPoint = "rename", SetLastError = true)]
        private static partial int RenameBytes(byte* from, byte* to);

        [LibraryImport("libc", EntryPoint = "mkdir", SetLastError = true)]
        private static partial int MakeDirectory(byte* path, int mode);

        [LibraryImport("libc", EntryPoint = "mkfifo", SetLastError = true)]
        private static partial int MakeFifo(byte* path, int mode);

        [LibraryImport("libc", EntryPoint = "unlink", SetLastError = true)]
        private static partial int Unlink(byte* path);

        [LibraryImport("libc", EntryPoint = "rmdir", SetLastError = true)]
        private static partial int RemoveDirectory(byte* path);
    }
}
