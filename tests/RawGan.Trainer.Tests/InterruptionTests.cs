using RawGan.ProGan.Checkpoints;
using RawGan.ProGan.Training;
using Xunit.Abstractions;

namespace RawGan.Trainer.Tests;

/// <summary>
/// Stopping and resuming through the real command line: Ctrl+C (SIGINT), SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and --max-steps
/// stop after the current step with a checkpoint, and `train --resume` finishes with weights that
/// are bit for bit those of an uninterrupted run (CPU, one thread).
/// </summary>
[Collection("rawgan")]
public class InterruptionTests(RawganFixture cli, ITestOutputHelper output)
{
    private static readonly TimeSpan Wait = RawganFixture.Timeout;

    [Theory]
    [InlineData(RawganProcess.SIGINT, 7)]    // in the 8x8 fade-in (ticks every 40 images; 200 per phase)
    [InlineData(RawganProcess.SIGTERM, 2)]   // in the 4x4 stable phase
    [InlineData(RawganProcess.SIGHUP, 4)]    // a closed terminal or ssh session
    [InlineData(RawganProcess.SIGQUIT, 9)]   // Ctrl+\, in the 8x8 fade-in
    [InlineData(RawganProcess.SIGUSR1, 6)]   // whose default would end the run at once; in the 8x8 fade-in
    public void ASignalStopsAfterTheStepWithACheckpointAndResumeFinishesBitExact(int signal, int afterTick)
    {
        string reference = new CheckpointStore(cli.ReferenceRun).Latest!;
        string runs = cli.NewFolder($"signal-{signal}");
        string runFolder;
        long stoppedAt;
        // A pause after each tick line: the whole tiny run takes under a second, and the signal
        // must land while it still runs (the pause changes no result).
        using (var train = cli.StartWith(new Dictionary<string, string> { ["RAWGAN_TICK_PAUSE_MS"] = "300" }, RawganFixture.TinyTrain(runs)))
        {
            Assert.True(train.WaitForLine(l => l.StartsWith($"tick {afterTick}:"), Wait) != null, train.Describe());
            if (train.Ignores(signal))
            {
                output.WriteLine($"signal {signal} is ignored by processes started from here (inherited), so it cannot be tested: run the tests in the foreground");
                return;
            }
            train.Signal(signal);
            int code = train.WaitForExit(Wait);
            Assert.True(code == 130, $"exit {code}: {train.Describe()}");
            runFolder = RawganFixture.RunFolderOf(train.Stdout);
            string name = signal switch
            {
                RawganProcess.SIGINT => "SIGINT",
                RawganProcess.SIGHUP => "SIGHUP",
                RawganProcess.SIGQUIT => "SIGQUIT",
                RawganProcess.SIGUSR1 => "SIGUSR1",
                _ => "SIGTERM",
            };
            var lines = train.StdoutLines;
            int notice = Array.FindIndex(lines, l => l.StartsWith($"{name}: stopping after this step"));
            Assert.True(notice >= 0, train.Describe());
            // After the notice: the checkpoint, then how to continue, and nothing else of note.
            var checkpointLine = lines.Skip(notice).FirstOrDefault(l => l.StartsWith("checkpoint: "));
            Assert.True(checkpointLine != null, train.Describe());
            Assert.Contains($"train --resume {runFolder}", lines[^1]);
            string checkpoint = checkpointLine["checkpoint: ".Length..];
            Assert.Equal(checkpoint, new CheckpointStore(runFolder).Latest);
            stoppedAt = RawganFixture.LoadCompletely(checkpoint).State.TotalImages;
            Assert.InRange(stoppedAt, afterTick * 40, 599);
        }

        var resumed = cli.Run("train", "--resume", runFolder, "--device", "cpu", "--threads", "1");
        Assert.True(resumed.ExitCode == 0, resumed.ToString());
        Assert.Contains($"{stoppedAt:N0} images seen", resumed.Stdout);
        Assert.Contains("done in", resumed.Stdout);
        RawganFixture.AssertSameWeights(reference, new CheckpointStore(runFolder).Latest!);
    }

    [Fact]
    public void MaxStepsThenResumeGivesByteIdenticalWeights()
    {
        string reference = new CheckpointStore(cli.ReferenceRun).Latest!;
        string runs = cli.NewFolder("max-steps");
        // 33 steps of 8 images: the 8x8 fade-in runs from step 25 to 50, so this stops mid-fade-in.
        var first = cli.Run(RawganFixture.TinyTrain(runs, "--max-steps", "33"));
        Assert.True(first.ExitCode == 0, first.ToString());
        string runFolder = RawganFixture.RunFolderOf(first.Stdout);
        var stopped = RawganFixture.LoadCompletely(new CheckpointStore(runFolder).Latest!);
        Assert.Equal(33 * 8, stopped.State.TotalImages);
        Assert.Equal(1, stopped.State.PhaseIndex);
        Assert.NotEqual(0, stopped.State.ImagesInPhase);

        // Resume twice more in short hops, the second across the end of the fade-in.
        foreach (var hop in new[] { "5", "15" })
        {
            var r = cli.Run("train", "--resume", runFolder, "--device", "cpu", "--threads", "1", "--max-steps", hop);
            Assert.True(r.ExitCode == 0, r.ToString());
        }
        Assert.Equal(53 * 8, CheckpointStore.ReadState(new CheckpointStore(runFolder).Latest!).State.TotalImages);
        var last = cli.Run("train", "--resume", runFolder, "--device", "cpu", "--threads", "1");
        Assert.True(last.ExitCode == 0, last.ToString());
        string final = new CheckpointStore(runFolder).Latest!;
        Assert.Equal(600, CheckpointStore.ReadState(final).State.TotalImages);
        RawganFixture.AssertSameWeights(reference, final);
        // And the result is usable: generate reads the newest checkpoint.
        var gen = cli.Run("generate", "--checkpoint", runFolder, "--count", "4", "--device", "cpu", "--out", Path.Combine(runs, "grid.png"));
        Assert.True(gen.ExitCode == 0, gen.ToString());
        Assert.True(new FileInfo(Path.Combine(runs, "grid.png")).Length > 0);
        // A grid named without its extension still becomes a PNG a viewer opens.
        var bare = cli.Run("generate", "--checkpoint", runFolder, "--count", "4", "--device", "cpu", "--out", Path.Combine(runs, "bare"));
        Assert.True(bare.ExitCode == 0, bare.ToString());
        Assert.Contains(Path.Combine(runs, "bare.png"), bare.Stdout);
        Assert.Equal(0x89, File.ReadAllBytes(Path.Combine(runs, "bare.png"))[0]);
        Assert.False(File.Exists(Path.Combine(runs, "bare")));
    }
}
