namespace RawGan.Trainer.Tests;

/// <summary>
/// A resume that would silently give another result is refused or named: data that changed since
/// the checkpoint, another CPU thread count; and an --out inside --data, which would feed a run's
/// sample grids to the next one.
/// </summary>
[Collection("rawgan")]
public class ResumeChecksTests(RawganFixture cli)
{
    /// <summary>A folder of 24 PNGs at 8x8, written by `generate --single` from the reference run.</summary>
    private string ImageFolder(string name)
    {
        string folder = cli.NewFolder(name);
        var made = cli.Run("generate", "--checkpoint", cli.ReferenceRun, "--single", "--count", "24", "--out", folder, "--device", "cpu", "--threads", "1");
        Assert.True(made.ExitCode == 0, made.ToString());
        Assert.Equal(24, Directory.GetFiles(folder, "*.png").Length);
        return folder;
    }

    private static string[] TrainOn(string data, string outFolder, params string[] extra) =>
    [
        "train", .. RawganFixture.TinyModel, "--data", data, "--kimg-per-phase", "0.2", "--batch", "8", "--swd-images", "0",
        "--tick-kimg", "0.04", "--seed", "3", "--device", "cpu", "--out", outFolder, .. extra,
    ];

    [Fact]
    public void ResumingOnDataThatChangedIsRefusedUnlessAsked()
    {
        string data = ImageFolder("changing-data");
        var first = cli.Run(TrainOn(data, cli.NewFolder("changing-runs"), "--threads", "1", "--max-steps", "3"));
        Assert.True(first.ExitCode == 0, first.ToString());
        string run = RawganFixture.RunFolderOf(first.Stdout);

        // Same files: resumes.
        var same = cli.Run("train", "--resume", run, "--device", "cpu", "--threads", "1", "--max-steps", "1");
        Assert.True(same.ExitCode == 0, same.ToString());

        // One image fewer: refused, with the counts and the way out; nothing is trained.
        string removed = Directory.GetFiles(data, "*.png").Order().First();
        File.Move(removed, removed + ".away");
        var changed = cli.Run("train", "--resume", run, "--device", "cpu", "--threads", "1", "--max-steps", "1");
        Assert.True(changed.ExitCode == 1, changed.ToString());
        Assert.Contains("the data changed since", changed.Stderr);
        Assert.Contains("24 images then, 23 now", changed.Stderr);
        Assert.Contains("--data-changed ok", changed.Stderr);
        Assert.DoesNotContain("   at ", changed.Stderr);   // no stack trace

        // One image modified (same count): refused too.
        File.Move(removed + ".away", removed);
        File.SetLastWriteTimeUtc(removed, DateTime.UtcNow.AddMinutes(-5));
        var touched = cli.Run("train", "--resume", run, "--device", "cpu", "--threads", "1", "--max-steps", "1");
        Assert.True(touched.ExitCode == 1, touched.ToString());
        Assert.Contains("files were added, removed, renamed or modified", touched.Stderr);

        // Asked for: trains on the data as they are now.
        var ok = cli.Run("train", "--resume", run, "--device", "cpu", "--threads", "1", "--max-steps", "1", "--data-changed", "ok");
        Assert.True(ok.ExitCode == 0, ok.ToString());
        Assert.Contains("--data-changed ok", ok.Stdout);
        var again = cli.Run("train", "--resume", run, "--device", "cpu", "--threads", "1", "--max-steps", "1");
        Assert.True(again.ExitCode == 0, $"the accepted data are the run's data from then on:\n{again}");
    }

    [Fact]
    public void AnOutFolderInsideTheDataFolderIsRefused()
    {
        string data = ImageFolder("data-with-runs");
        string inside = Path.Combine(data, "runs");
        var run = cli.Run(TrainOn(data, inside, "--threads", "1", "--max-steps", "1"));
        Assert.True(run.ExitCode == 1, run.ToString());
        Assert.Contains("is inside --data", run.Stderr);
        Assert.False(Directory.Exists(inside), "nothing may be written into the data folder");
    }

    [Fact]
    public void ResumingWithAnotherThreadCountSaysTheResultWillDifferInRounding()
    {
        var first = cli.Run([.. RawganFixture.TinyTrain(cli.NewFolder("threads-1"), "--max-steps", "2")]);
        Assert.True(first.ExitCode == 0, first.ToString());
        string run = RawganFixture.RunFolderOf(first.Stdout);
        Assert.Contains("memory: about ", first.Stdout);   // the plan in the run's header
        var two = cli.Run("train", "--resume", run, "--device", "cpu", "--threads", "2", "--max-steps", "1");
        Assert.True(two.ExitCode == 0, two.ToString());
        Assert.Contains("note: the checkpoint was trained with 1 CPU thread(s), this run uses 2", two.Stdout);
        Assert.Contains("--threads 1 continues it bit for bit", two.Stdout);
        var twoAgain = cli.Run("train", "--resume", run, "--device", "cpu", "--threads", "2", "--max-steps", "1");
        Assert.True(twoAgain.ExitCode == 0, twoAgain.ToString());
        Assert.DoesNotContain("note: the checkpoint was trained with", twoAgain.Stdout);
    }

    [Fact]
    public void AFasterCriticAndAShorterFadeInShowInTheLogAndSurviveAResume()
    {
        var first = cli.Run(RawganFixture.TinyTrain(cli.NewFolder("ttur-runs"), "--d-lr-ratio", "2", "--fade-share", "0.25", "--max-steps", "30"));
        Assert.True(first.ExitCode == 0, first.ToString());
        // 200 images per period: the 8x8 fade-in takes a quarter of its 400, 100 images, the stable period 300.
        Assert.Contains("schedule: 3 phases: 4x4 200, 8x8 100 + 300 images (fade-in + stable)", first.Stdout);
        Assert.Contains("phase 2/3: fade-in 8x8, 100 images, batch 8, lr G 0.001 D 0.002", first.Stdout);
        string run = RawganFixture.RunFolderOf(first.Stdout);

        // Resumed as saved: the same rates and schedule, to the end.
        var resumed = cli.Run("train", "--resume", run, "--device", "cpu", "--threads", "1");
        Assert.True(resumed.ExitCode == 0, resumed.ToString());
        Assert.Contains("phase 3/3: stable 8x8, 300 images, batch 8, lr G 0.001 D 0.002", resumed.Stdout);

        // Asked for other values: refused, naming both.
        var other = cli.Run("train", "--resume", run, "--d-lr-ratio", "1", "--fade-share", "0.5", "--device", "cpu", "--threads", "1");
        Assert.True(other.ExitCode == 1, other.ToString());
        Assert.Contains("critic learning rate ratio: checkpoint has 2, this run asks for 1", other.Stderr);
        Assert.Contains("fade-in share: checkpoint has 0.25, this run asks for 0.5", other.Stderr);
    }
}
