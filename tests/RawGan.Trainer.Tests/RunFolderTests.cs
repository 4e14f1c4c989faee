using RawGan.ProGan.Training;

namespace RawGan.Trainer.Tests;

/// <summary>
/// One writer per run folder (failure class 3), with real processes: runs started together with
/// the same --out get folders of their own; a second writer of one run folder is refused naming the
/// holder's PID, and kill -9 of the holder leaves no stale lock; `generate` and `evaluate` on a run
/// that is training (and pruning) read a complete checkpoint every time; resuming from an older
/// checkpoint continues in a branch and deletes nothing; `evaluate` below 16x16 reports the SWD
/// and says why it leaves out MS-SSIM.
/// </summary>
[Collection("rawgan")]
public class RunFolderTests(RawganFixture cli)
{
    private static readonly string[] Cpu = ["--device", "cpu", "--threads", "1"];

    /// <summary>A schedule that does not end during a test: a tick every 2 steps, a checkpoint every tick.</summary>
    private static string[] LongTrain(string runs, params string[] extra) =>
    [
        "train", .. RawganFixture.TinyModel, "--kimg-per-phase", "100", "--batch", "8", "--swd-images", "0", "--shapes-count", "64",
        "--tick-kimg", "0.016", "--checkpoint-ticks", "1", "--seed", "5", .. Cpu, "--out", runs, .. extra,
    ];

    [Fact]
    public void RunsStartedTogetherWithTheSameOutGetFoldersOfTheirOwn()
    {
        string runs = cli.NewFolder("together");
        var processes = Enumerable.Range(0, 3).Select(_ => cli.Start(RawganFixture.TinyTrain(runs, "--max-steps", "4"))).ToList();
        try
        {
            var folders = new List<string>();
            foreach (var p in processes)
            {
                Assert.True(p.WaitForExit(RawganFixture.Timeout) == 0, p.Describe());
                folders.Add(RawganFixture.RunFolderOf(p.Stdout));
            }
            Assert.Equal(3, folders.Distinct().Count());
            foreach (var folder in folders)
            {
                var only = Assert.Single(new CheckpointStore(folder).List());
                Assert.Equal(32, RawganFixture.LoadCompletely(only).State.TotalImages);
            }
        }
        finally
        {
            foreach (var p in processes) p.Dispose();
        }
    }

    [Fact]
    public void ASecondWriterIsRefusedNamingTheHolderAndKill9LeavesNoStaleLock()
    {
        var first = cli.Run(LongTrain(cli.NewFolder("second-writer"), "--max-steps", "2"));
        Assert.True(first.ExitCode == 0, first.ToString());
        string run = RawganFixture.RunFolderOf(first.Stdout);
        string[] resume = ["train", "--resume", run, .. Cpu];

        using (var holder = cli.Start(resume))
        {
            Assert.True(holder.WaitForLine(l => l.StartsWith("resuming "), RawganFixture.Timeout) != null, holder.Describe());
            var second = cli.Run(resume);
            Assert.True(second.ExitCode != 0, second.ToString());
            var lines = second.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
            Assert.True(lines.Length == 1, second.ToString());
            Assert.StartsWith($"rawgan: the run folder {run} is being written by another rawgan process (PID {holder.Id})", lines[0]);
            Assert.DoesNotContain("checkpoint: ", second.Stdout);
            Assert.False(holder.HasExited, holder.Describe());

            holder.Signal(RawganProcess.SIGKILL);
            holder.WaitForExit(RawganFixture.Timeout);
        }
        // The lock died with its holder: the next writer goes ahead at once.
        var third = cli.Run([.. resume, "--max-steps", "2"]);
        Assert.True(third.ExitCode == 0, third.ToString());
        Assert.Contains("resuming ", third.Stdout);
    }

    [Fact]
    public void GenerateAndEvaluateOnARunThatIsTrainingReadACompleteCheckpointEveryTime()
    {
        string runs = cli.NewFolder("readers");
        // Only one checkpoint kept: each new one deletes the one before, as often as every two steps.
        using var train = cli.Start(LongTrain(runs, "--keep", "1"));
        Assert.True(train.WaitForLine(l => l.StartsWith("checkpoint: "), RawganFixture.Timeout) != null, train.Describe());
        string run = RawganFixture.RunFolderOf(train.Stdout);
        string grid = Path.Combine(runs, "grid.png");
        for (int i = 0; i < 6; i++)
        {
            var r = cli.Run("generate", "--checkpoint", run, "--count", "2", "--device", "cpu", "--out", grid);
            Assert.True(r.ExitCode == 0, $"generate {i}: {r}\n{train.Describe()}");
        }
        var evaluate = cli.Run("evaluate", "--checkpoint", run, "--images", "16", "--ms-ssim-pairs", "0", "--device", "cpu");
        Assert.True(evaluate.ExitCode == 0, evaluate.ToString());
        Assert.False(train.HasExited, train.Describe());
        train.Signal(RawganProcess.SIGTERM);
        train.WaitForExit(RawganFixture.Timeout);
    }

    [Fact]
    public void EvaluateBelow16x16GivesTheSwdAndSaysWhyItLeavesOutMsSsim()
    {
        // The test model ends at 8x8, where MS-SSIM's five halvings do not fit: evaluate with its
        // default pairs must still report the SWD and say why MS-SSIM is missing, not fail.
        var trained = cli.Run(RawganFixture.TinyTrain(cli.NewFolder("evaluate-8")));
        Assert.True(trained.ExitCode == 0, trained.ToString());
        var evaluate = cli.Run("evaluate", "--checkpoint", RawganFixture.RunFolderOf(trained.Stdout), "--images", "16", "--device", "cpu");
        Assert.True(evaluate.ExitCode == 0, evaluate.ToString());
        Assert.Equal("", evaluate.Stderr);
        Assert.Matches(@"(?m)^SWD x1e3 +8px +mean\r?\ngenerated +\d+\.\d\d +\d+\.\d\d\r?$", evaluate.Stdout);
        Assert.Contains("MS-SSIM: not measured: its 5 scales need images of at least 16x16, and this generator makes 8x8", evaluate.Stdout);
        Assert.DoesNotContain("MS-SSIM among generated", evaluate.Stdout);
    }

    [Fact]
    public void ResumingFromAnOlderCheckpointContinuesInABranchAndDeletesNothing()
    {
        var first = cli.Run(LongTrain(cli.NewFolder("branch"), "--max-steps", "8"));
        Assert.True(first.ExitCode == 0, first.ToString());
        string run = RawganFixture.RunFolderOf(first.Stdout);
        var store = new CheckpointStore(run);
        var before = store.List();
        Assert.Equal(3, before.Count);   // --keep 3
        string oldest = before[0];
        long images = RawganFixture.LoadCompletely(oldest).State.TotalImages;

        var resumed = cli.Run(["train", "--resume", oldest, "--max-steps", "6", .. Cpu]);
        Assert.True(resumed.ExitCode == 0, resumed.ToString());
        Assert.Contains("continuing in a new run folder", resumed.Stdout);
        string branch = RawganFixture.RunFolderOf(resumed.Stdout);
        Assert.StartsWith(run + "-from-" + Path.GetFileName(oldest), branch);
        Assert.Contains($"train --resume {branch}", resumed.Stdout);

        // The original run is untouched, the checkpoint resumed from included.
        Assert.Equal(before, store.List());
        RawganFixture.LoadCompletely(oldest);
        var branched = new CheckpointStore(branch).List();
        Assert.NotEmpty(branched);
        Assert.Equal(images + 6 * 8, RawganFixture.LoadCompletely(branched[^1]).State.TotalImages);
        Assert.True(File.Exists(Path.Combine(branch, "config.json")));
    }
}
