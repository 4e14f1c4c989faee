using System.Text.RegularExpressions;
using RawGan.ProGan.Training;

namespace RawGan.Trainer.Tests;

/// <summary>
/// Runs that once hung, crashed or claimed success they did not have, driven through the real
/// executable: an internal error is one line and a log (class 2), a learning rate that overflows
/// the weights never ends in "done" (class 4), a tiny truncation does not hang (class 4), and a
/// data preparation killed with kill -9 leaves no temporary file that later runs keep (class 5).
/// </summary>
[Collection("rawgan")]
public partial class HostileRunTests(RawganFixture cli)
{
    private static string OneStderrLine(RawganResult r)
    {
        var lines = r.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(lines.Length == 1 && lines[0].StartsWith("rawgan: "), $"stderr should be one 'rawgan:' line: {r}");
        return lines[0];
    }

    [Fact]
    public void AnInternalErrorIsOneLineWithALogInTheRunFolderAndItsOwnExitCode()
    {
        string runs = cli.NewFolder("internal-error");
        var r = cli.RunWith(new Dictionary<string, string> { ["RAWGAN_FAULT"] = "train-started" }, RawganFixture.TinyTrain(runs));
        Assert.True(r.ExitCode == Program.InternalErrorExit, r.ToString());
        string line = OneStderrLine(r);
        Assert.StartsWith("rawgan: internal error: injected fault at train-started", line);
        Assert.DoesNotContain("   at ", r.Stdout + r.Stderr);
        var log = LogPath().Match(line);
        Assert.True(log.Success, line);
        string run = Assert.Single(Directory.GetDirectories(runs));
        Assert.Equal(run, Path.GetDirectoryName(log.Groups[1].Value));
        string text = File.ReadAllText(log.Groups[1].Value);
        Assert.Contains("InvalidOperationException: injected fault", text);
        Assert.Contains("   at RawGan.Trainer.Program.InjectFault", text);
    }

    [GeneratedRegex(@"the details are in (\S+\.log);")]
    private static partial Regex LogPath();

    [Fact]
    public void ALearningRateThatOverflowsTheWeightsNeverEndsInDone()
    {
        // 1000: the first update overflows; with no checkpoint to go back to, the run stops.
        var stop = cli.Run(RawganFixture.TinyTrain(cli.NewFolder("lr-1000"), "--lr", "1000"));
        Assert.True(stop.ExitCode == 4, stop.ToString());
        Assert.Contains("non-finite", OneStderrLine(stop));
        Assert.Contains("the update left non-finite weights or Adam moments", stop.Stdout);
        Assert.DoesNotContain("done in", stop.Stdout);

        // 30: overflows in the 8x8 phases; rollbacks with the rate halved get the run through, and
        // every checkpoint it wrote is finite.
        var rolled = cli.Run(RawganFixture.TinyTrain(cli.NewFolder("lr-30"), "--lr", "30", "--keep", "100"));
        Assert.True(rolled.ExitCode == 0, rolled.ToString());
        Assert.Contains("rolled back to ", rolled.Stdout);
        Assert.Contains("done in", rolled.Stdout);
        var all = new CheckpointStore(RawganFixture.RunFolderOf(rolled.Stdout)).List();
        Assert.NotEmpty(all);
        foreach (var c in all) RawganFixture.LoadCompletely(c);
    }

    [Fact]
    public void ATinyTruncationEndsQuickly()
    {
        var run = cli.Run(RawganFixture.TinyTrain(cli.NewFolder("truncation"), "--max-steps", "2"));
        Assert.True(run.ExitCode == 0, run.ToString());
        string out1 = Path.Combine(cli.NewFolder("truncation-out"), "grid.png");
        var r = cli.Run(TimeSpan.FromSeconds(60), "generate", "--checkpoint", RawganFixture.RunFolderOf(run.Stdout), "--count", "256",
            "--truncation", "1e-9", "--device", "cpu", "--out", out1);
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.True(File.Exists(out1));
    }

    [Fact]
    public void AKill9DuringDataPreparationLeavesNoTemporaryThatTheNextRunKeeps()
    {
        // A cache folder of its own, and enough shapes that rendering them takes a while.
        string cache = cli.NewFolder("prep-cache");
        var environment = new Dictionary<string, string> { ["RAWGAN_CACHE_DIR"] = cache };
        string data = Path.Combine(cache, "data");
        string[] args = ["train", .. RawganFixture.TinyModel, "--kimg-per-phase", "0.2", "--batch", "8", "--swd-images", "0", "--shapes-count", "400000",
            "--device", "cpu", "--threads", "1", "--max-steps", "1", "--out", cli.NewFolder("prep-runs")];
        string? temporary = null;
        int killed;
        using (var train = cli.StartWith(environment, args))
        {
            killed = train.Id;
            var deadline = DateTime.UtcNow + RawganFixture.Timeout;
            while (temporary == null && !train.HasExited && DateTime.UtcNow < deadline)
            {
                Thread.Sleep(20);
                temporary = Directory.Exists(data) ? Directory.GetFiles(data, ".*.tmp").FirstOrDefault() : null;
            }
            Assert.True(temporary != null, $"no temporary file appeared in {data}\n{train.Describe()}");
            Thread.Sleep(300);   // a moment further into the write
            train.Signal(RawganProcess.SIGKILL);
            train.WaitForExit(RawganFixture.Timeout);
        }
        Assert.True(File.Exists(temporary), "kill -9 should have left the temporary file (the case this test is about)");
        Assert.Contains($".{killed}-", Path.GetFileName(temporary));   // named after its writer

        // The next run removes it (its writer is gone), builds the cache and trains.
        var next = cli.RunWith(environment, args);
        Assert.True(next.ExitCode == 0, next.ToString());
        Assert.False(File.Exists(temporary), $"{temporary} is still there");
        Assert.Empty(Directory.GetFiles(data, ".*.tmp"));
        Assert.Single(Directory.GetFiles(data, "*.rgcache"));
    }
}
