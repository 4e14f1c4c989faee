using System.Diagnostics;
using System.Text;
using RawGan.ProGan.Imaging;
using RawGan.ProGan.IO;
using RawGan.ProGan.Training;

namespace RawGan.Trainer.Tests;

/// <summary>
/// Paths typed on the command line whose bytes are not valid UTF-8 (failure class 6): a Latin-1
/// <c>caf\xE9</c> given as <c>--data</c> or <c>--out</c> used to be reported as missing, because
/// .NET hands <c>Main</c> U+FFFD in place of such bytes. The folders are made here by their bytes
/// through RawGan's own helpers (<see cref="NativePath"/>), and the real command is started with the
/// bytes as its arguments (through /bin/sh's printf: .NET's process API takes strings).
/// </summary>
[Collection("rawgan")]
public sealed class ByteArgumentTests(RawganFixture cli) : IDisposable
{
    private readonly List<string> _roots = new();

    /// <summary>A fresh folder (its own name in UTF-8) as bytes, removed with everything in it at the end
    /// (by rm -rf: .NET's recursive delete cannot name what is inside).</summary>
    private byte[] Root(string name)
    {
        string root = cli.NewFolder(name);
        _roots.Add(root);
        return Encoding.UTF8.GetBytes(root);
    }

    public void Dispose()
    {
        foreach (var root in _roots)
        {
            using var rm = Process.Start("rm", ["-rf", root]);
            rm.WaitForExit();
        }
    }

    private static byte[] Under(byte[] folder, params object[] names) =>
        names.Aggregate(folder, (path, name) => [.. path, (byte)'/', .. name as byte[] ?? Encoding.UTF8.GetBytes((string)name)]);

    /// <summary>A name of ASCII <paramref name="start"/>, then <paramref name="bytes"/> (0xE9: Latin-1 "é", not UTF-8), then <paramref name="end"/>.</summary>
    private static byte[] Name(string start, byte bytes, string end = "") => [.. Encoding.ASCII.GetBytes(start), bytes, .. Encoding.ASCII.GetBytes(end)];

    private static byte[][] Args(params object[] args) => args.Select(a => a as byte[] ?? Encoding.UTF8.GetBytes((string)a)).ToArray();

    private RawganResult Run(params object[] args) => RunIn(null, args);

    private RawganResult RunIn(byte[]? workingFolder, params object[] args)
    {
        using var p = new RawganProcess(cli.Dll, cli.CacheDirectory, Args(args), workingFolder: workingFolder);
        int code = p.WaitForExit(RawganFixture.Timeout);
        return new RawganResult(p.Arguments, code, p.Stdout, p.Stderr, p.Seconds);
    }

    /// <summary>A folder made by its bytes, with <paramref name="count"/> 12x10 PNGs written into it through the path .NET can use.</summary>
    private static void ImageFolder(byte[] path, int count)
    {
        var folder = NativePath.FromBytes(path);
        Assert.True(folder.TryCreateFolder());
        string usable = folder.Usable()!;
        for (int i = 0; i < count; i++)
        {
            var image = new Image(12, 10, 3);
            new Random(i).NextBytes(image.Pixels);
            Png.Save(Path.Combine(usable, $"image-{i:D2}.png"), image);
        }
    }

    private static readonly string[] Tiny =
        ["train", .. RawganFixture.TinyModel, "--kimg-per-phase", "0.2", "--batch", "8", "--swd-images", "0", "--tick-kimg", "0.04", "--seed", "3", "--device", "cpu", "--threads", "1"];

    [Fact]
    public void AFolderWhoseNameIsNotUtf8TrainsAsDataAndAsOutAndResumesFromThere()
    {
        if (!OperatingSystem.IsLinux()) return;
        byte[] root = Root("byte-arguments");
        byte[] data = Under(root, Name("caf", 0xE9));                // Latin-1 "café"
        byte[] outFolder = Under(root, Name("out", 0xE8), "runs");  // made by the run
        ImageFolder(data, 16);
        string shownRoot = Encoding.UTF8.GetString(root);

        var first = Run([.. Tiny, "--data", data, "--out", outFolder, "--max-steps", "6"]);
        Assert.True(first.ExitCode == 0, first.ToString());
        Assert.Contains($"data: {shownRoot}/caf\\xE9, 16 images", first.Stdout);
        string shownRun = RawganFixture.RunFolderOf(first.Stdout);
        Assert.StartsWith($"{shownRoot}/out\\xE8/runs/", shownRun);
        Assert.DoesNotContain("/proc/self/fd", first.Stdout + first.Stderr);

        // On disk: the run folder under the byte-named --out, with a complete checkpoint that
        // records the data folder by its bytes.
        byte[] run = Under(outFolder, Path.GetFileName(shownRun));
        string usableRun = NativePath.FromBytes(run).Usable()!;
        Assert.Equal(FileKind.Directory, FileStatus.Of(NativePath.FromBytes(run)).Kind);
        string checkpoint = new CheckpointStore(usableRun).Latest ?? throw new InvalidOperationException("no checkpoint in " + shownRun);
        var state = RawganFixture.LoadCompletely(checkpoint);
        Assert.Equal(NativePath.PersistedPrefix + NativePath.KeyOf(data), state.Options.Data);

        // Resumed by the run folder's bytes: the data are found again by theirs.
        var resumed = Run("train", "--resume", run, "--device", "cpu", "--threads", "1", "--max-steps", "2");
        Assert.True(resumed.ExitCode == 0, resumed.ToString());
        Assert.Contains($"resuming {shownRun}/checkpoints/", resumed.Stdout);
        Assert.Contains($"train --resume {shownRun}", resumed.Stdout);

        // generate and evaluate on it; a grid into a byte-named folder.
        byte[] grid = Under(root, Name("g", 0xE7), "grid.png");
        var generated = Run("generate", "--checkpoint", run, "--count", "4", "--out", grid, "--device", "cpu", "--threads", "1");
        Assert.True(generated.ExitCode == 0, generated.ToString());
        Assert.Equal(FileKind.Regular, FileStatus.Of(NativePath.FromBytes(grid)).Kind);
        var evaluated = Run("evaluate", "--checkpoint", run, "--images", "16", "--ms-ssim-pairs", "0", "--device", "cpu");
        Assert.True(evaluated.ExitCode == 0, evaluated.ToString());
        Assert.Contains($"real images of {shownRoot}/caf\\xE9", evaluated.Stdout);
    }

    /// <summary>
    /// .NET resolves a relative path against Environment.CurrentDirectory, whose bytes that are
    /// not UTF-8 it has replaced: `train` in such a folder wrote its run into a new folder of
    /// another name, <c>w\uFFFD/runs</c>. Relative paths (the default --out runs included) go by bytes there.
    /// </summary>
    [Fact]
    public void RelativePathsInAWorkingFolderWhosePathIsNotUtf8AreFoundThere()
    {
        if (!OperatingSystem.IsLinux()) return;
        byte[] root = Root("byte-working-folder");
        byte[] working = Under(root, Name("w", 0xE9));
        Assert.True(NativePath.FromBytes(working).TryCreateFolder());
        ImageFolder(Under(working, "images"), 8);
        string shownRoot = Encoding.UTF8.GetString(root);

        var trained = RunIn(working, [.. Tiny, "--data", "images", "--max-steps", "2"]);
        Assert.True(trained.ExitCode == 0, trained.ToString());
        Assert.Contains($"data: {shownRoot}/w\\xE9/images, 8 images", trained.Stdout);
        string shownRun = RawganFixture.RunFolderOf(trained.Stdout);
        Assert.StartsWith($"{shownRoot}/w\\xE9/runs/", shownRun);
        Assert.Equal(FileKind.Directory, FileStatus.Of(NativePath.FromBytes(Under(working, "runs", Path.GetFileName(shownRun)))).Kind);
        var generated = RunIn(working, "generate", "--checkpoint", $"runs/{Path.GetFileName(shownRun)}", "--count", "2", "--device", "cpu");
        Assert.True(generated.ExitCode == 0, generated.ToString());
        Assert.Contains($"to {shownRun}/generated/grid-seed0.png", generated.Stdout);
        // Nothing was made beside it under the name .NET has for it.
        Assert.Equal(["w\\xE9"], NativePath.FromBytes(root).List().Select(e => e.Key));
    }

    [Fact]
    public void APathThatIsNotUtf8IsNamedWithItsBytesEscapedWhenItIsMissingOrCannotBeWritten()
    {
        if (!OperatingSystem.IsLinux()) return;
        byte[] root = Root("byte-mistakes");
        string shownRoot = Encoding.UTF8.GetString(root);
        byte[] missing = Under(root, Name("no", 0xE9));

        var data = Run([.. Tiny, "--data", missing, "--out", Under(root, "runs")]);
        Assert.Equal(1, data.ExitCode);
        Assert.Contains($"rawgan: --data: '{shownRoot}/no\\xE9' is neither a folder", data.Stderr);
        var resume = Run("train", "--resume", missing);
        Assert.Equal(1, resume.ExitCode);
        Assert.Contains($"rawgan: --resume: {shownRoot}/no\\xE9: no such file or folder", resume.Stderr);
        var checkpoint = Run("generate", "--checkpoint", missing);
        Assert.Equal(1, checkpoint.ExitCode);
        Assert.Contains($"rawgan: --checkpoint: {shownRoot}/no\\xE9: no such file or folder", checkpoint.Stderr);

        // An --out inside a byte-named --data is refused, compared by bytes.
        byte[] images = Under(root, Name("d", 0xE9));
        ImageFolder(images, 4);
        var inside = Run([.. Tiny, "--data", images, "--out", Under(images, "runs")]);
        Assert.Equal(1, inside.ExitCode);
        Assert.Contains($"rawgan: --out {shownRoot}/d\\xE9/runs is inside --data {shownRoot}/d\\xE9", inside.Stderr);
        Assert.Equal(FileKind.Missing, FileStatus.Of(NativePath.FromBytes(Under(images, "runs"))).Kind);

        // A file whose own name is not UTF-8 cannot be written through .NET: refused, naming it.
        var grid = Run("generate", "--checkpoint", cli.ReferenceRun, "--count", "4", "--out", Under(root, Name("g", 0xE7, ".png")), "--device", "cpu");
        Assert.Equal(1, grid.ExitCode);
        Assert.Contains("rawgan: --out: the file name 'g\\xE7.png' is not valid UTF-8", grid.Stderr);
        foreach (var r in new[] { data, resume, checkpoint, inside, grid })
        {
            Assert.DoesNotContain("   at ", r.Stdout + r.Stderr);
            Assert.Single(r.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries), l => l.StartsWith("rawgan:"));
        }
    }
}
