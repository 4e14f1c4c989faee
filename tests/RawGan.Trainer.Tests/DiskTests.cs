using System.Diagnostics;
using System.Text.RegularExpressions;
using RawGan.ProGan.Checkpoints;
using RawGan.ProGan.Training;
using Xunit.Abstractions;

namespace RawGan.Trainer.Tests;

/// <summary>
/// A checkpoint that cannot be written (a file in the way, a full disk) is one clear error, and
/// the previous checkpoint stays complete and loadable. (Tests run as root, which ignores
/// permissions, so the folder is blocked rather than made read-only.)
/// </summary>
[Collection("rawgan")]
public partial class DiskTests(RawganFixture cli, ITestOutputHelper output)
{
    private static void AssertOneLine(RawganResult r, params string[] fragments)
    {
        Assert.True(r.ExitCode != 0, r.ToString());
        var lines = r.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(lines.Length == 1 && lines[0].StartsWith("rawgan: "), r.ToString());
        foreach (var f in fragments) Assert.True(lines[0].Contains(f), $"'{f}' missing: {r}");
        Assert.DoesNotContain("   at ", r.Stdout + r.Stderr);
        Assert.False(ExceptionName().IsMatch(r.Stdout + r.Stderr), r.ToString());
    }

    [GeneratedRegex(@"\b[A-Z]\w*Exception\b")]
    private static partial Regex ExceptionName();

    [Fact]
    public void ABlockedCheckpointFolderIsOneClearErrorAndThePreviousCheckpointIsKept()
    {
        string runs = cli.NewFolder("blocked");
        var first = cli.Run(RawganFixture.TinyTrain(runs, "--max-steps", "5"));
        Assert.True(first.ExitCode == 0, first.ToString());
        string run = RawganFixture.RunFolderOf(first.Stdout);
        var store = new CheckpointStore(run);
        string previous = store.Latest!;
        Assert.EndsWith("kimg-000000-040", previous);

        // The next checkpoint is at the end of the 4x4 phase (200 images): put a file where it goes.
        string blocked = Path.Combine(store.Directory, "kimg-000000-200");
        File.WriteAllText(blocked, "in the way");
        var resumed = cli.Run("train", "--resume", run, "--device", "cpu", "--threads", "1");
        AssertOneLine(resumed, "kimg-000000-200", previous);
        Assert.Equal(previous, store.Latest);
        Assert.Equal(40, RawganFixture.LoadCompletely(previous).State.TotalImages);
        Assert.Empty(Directory.GetDirectories(store.Directory, "*.partial*"));
        var gen = cli.Run("generate", "--checkpoint", run, "--count", "2", "--device", "cpu", "--out", Path.Combine(runs, "g.png"));
        Assert.True(gen.ExitCode == 0, gen.ToString());

        // With the way cleared, the run resumes from the kept checkpoint and ends exactly as an uninterrupted one.
        File.Delete(blocked);
        var again = cli.Run("train", "--resume", run, "--device", "cpu", "--threads", "1");
        Assert.True(again.ExitCode == 0, again.ToString());
        RawganFixture.AssertSameWeights(new CheckpointStore(cli.ReferenceRun).Latest!, store.Latest!);
    }

    [Fact]
    public void AFullDiskIsOneClearErrorAndThePreviousCheckpointIsKept()
    {
        // A real full disk needs a small file system: a tmpfs, which only root may mount.
        string mount = cli.NewFolder("full-disk");
        if (!TryRun("mount", "-t", "tmpfs", "-o", "size=360k", "tmpfs", mount))
        {
            output.WriteLine("cannot mount a tmpfs here (not root?): the full-disk case was not run");
            return;
        }
        try
        {
            // A checkpoint of the tiny model is about 240 KB: the first fits, the second cannot.
            var r = cli.Run(RawganFixture.TinyTrain(mount));
            AssertOneLine(r, "No space left on device");
            string run = RawganFixture.RunFolderOf(r.Stdout);
            var store = new CheckpointStore(run);
            string? kept = store.Latest;
            Assert.NotNull(kept);
            Assert.Equal(200, RawganFixture.LoadCompletely(kept).State.TotalImages);
            Assert.Empty(Directory.GetDirectories(store.Directory, "*.partial*"));
            output.WriteLine(r.Stderr);
        }
        finally
        {
            TryRun("umount", mount);
        }
    }

    private static bool TryRun(string file, params string[] args)
    {
        try
        {
            using var p = Process.Start(new ProcessStartInfo(file, args) { RedirectStandardError = true, RedirectStandardOutput = true })!;
            p.WaitForExit();
            return p.ExitCode == 0;
        }
        catch (System.ComponentModel.Win32Exception) { return false; }
    }
}
