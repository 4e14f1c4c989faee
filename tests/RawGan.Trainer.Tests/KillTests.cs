using RawGan.ProGan.Checkpoints;
using RawGan.ProGan.Training;
using Xunit.Abstractions;

namespace RawGan.Trainer.Tests;

/// <summary>
/// kill -9 at random moments of a real training process, many times: at start-up, while loading a
/// checkpoint, mid-step and mid-checkpoint (checkpoints every two steps, only one kept, so the
/// window in which a newer checkpoint replaces the only older one is hit often). After every kill
/// the newest complete checkpoint must load (in process and with `generate`), leftover *.partial
/// folders must be ignored, and the next `train --resume` must carry on from it.
/// </summary>
[Collection("rawgan")]
public class KillTests(RawganFixture cli, ITestOutputHelper output)
{
    /// <summary>How long the kill loop runs (RAWGAN_KILL_SECONDS, default 75).</summary>
    private static TimeSpan Budget => TimeSpan.FromSeconds(
        int.TryParse(Environment.GetEnvironmentVariable("RAWGAN_KILL_SECONDS"), out var s) ? s : 75);

    [Fact]
    public void TheNewestCompleteCheckpointSurvivesKill9AtRandomMoments()
    {
        string runs = cli.NewFolder("kill");
        // A long schedule (never finishes here), a tick every 2 steps, a checkpoint every tick, keep 1.
        string[] fresh =
        [
            "train", .. RawganFixture.TinyModel, "--kimg-per-phase", "100", "--batch", "8", "--swd-images", "0", "--shapes-count", "64",
            "--tick-kimg", "0.016", "--checkpoint-ticks", "1", "--keep", "1", "--seed", "11", "--device", "cpu", "--threads", "1", "--out", runs,
        ];
        var random = new Random(20240611);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        string? runFolder = null;
        long lastImages = -1;
        int trials = 0, duringStartup = 0, afterCheckpoint = 0, partialLeftovers = 0, tempFilesLeft = 0, generates = 0, progressed = 0;
        while (clock.Elapsed < Budget || trials < 5)
        {
            string[] args = runFolder == null ? fresh : ["train", "--resume", runFolder, "--device", "cpu", "--threads", "1"];
            using (var train = cli.Start(args))
            {
                if (random.Next(5) == 0)
                {
                    // Anywhere in the first moments: start-up, data, the checkpoint load, the first steps.
                    Thread.Sleep(random.Next(50, 1500));   // the fault's random moment, not a synchronization
                    duringStartup++;
                }
                else
                {
                    // After one to three checkpoints of this process, then a random fraction of the
                    // time between two checkpoints: mid-step, mid-write, mid-rename or mid-prune.
                    int skip = random.Next(3);
                    string? line = train.WaitForLine(l => l.StartsWith("checkpoint: "), RawganFixture.Timeout, skip);
                    Assert.True(line != null, $"trial {trials}: no checkpoint line\n{train.Describe()}");
                    Thread.Sleep(random.Next(0, 150));
                    afterCheckpoint++;
                }
                Assert.False(train.HasExited, $"trial {trials}: the run ended by itself\n{train.Describe()}");
                train.Signal(RawganProcess.SIGKILL);
                train.WaitForExit(RawganFixture.Timeout);
                if (runFolder == null)
                {
                    var folderLine = train.StdoutLines.FirstOrDefault(l => l.StartsWith("run folder: "));
                    if (folderLine == null) continue;   // killed before the run folder existed: start afresh
                    runFolder = folderLine["run folder: ".Length..];
                }
            }
            trials++;

            var store = new CheckpointStore(runFolder);
            var leftovers = Directory.Exists(store.Directory) ? Directory.GetDirectories(store.Directory, "*.partial*") : [];
            if (leftovers.Length > 0) partialLeftovers++;
            if (leftovers.Any(l => Directory.GetFiles(l, "*.tmp").Length > 0)) tempFilesLeft++;
            string? latest = store.Latest;
            if (latest == null)
            {
                // Only acceptable if this process never got as far as its first checkpoint.
                Assert.True(lastImages < 0, $"trial {trials}: no complete checkpoint left in {store.Directory}: " +
                                            string.Join(", ", Directory.GetFileSystemEntries(store.Directory).Select(Path.GetFileName)));
                continue;
            }
            Assert.DoesNotContain(".partial", latest);
            long images = RawganFixture.LoadCompletely(latest).State.TotalImages;
            Assert.True(images >= lastImages, $"trial {trials}: the newest checkpoint went back from {lastImages} to {images} images");
            if (images > lastImages) progressed++;
            lastImages = images;

            // What a user would do next: look at the result, with the CLI, every few kills.
            if (trials % 4 == 1)
            {
                var gen = cli.Run("generate", "--checkpoint", runFolder, "--count", "2", "--device", "cpu", "--out", Path.Combine(runs, "grid.png"));
                Assert.True(gen.ExitCode == 0, $"trial {trials}: {gen}");
                generates++;
            }
        }

        // Finally a resume that is left alone: it must continue from the newest checkpoint.
        Assert.NotNull(runFolder);
        var last = cli.Run("train", "--resume", runFolder, "--device", "cpu", "--threads", "1", "--max-steps", "4");
        Assert.True(last.ExitCode == 0, last.ToString());
        Assert.Contains($"{lastImages:N0} images seen", last.Stdout);
        var final = RawganFixture.LoadCompletely(new CheckpointStore(runFolder).Latest!);
        Assert.Equal(lastImages + 4 * 8, final.State.TotalImages);
        var lastGen = cli.Run("generate", "--checkpoint", runFolder, "--count", "2", "--device", "cpu", "--out", Path.Combine(runs, "grid.png"));
        Assert.True(lastGen.ExitCode == 0, lastGen.ToString());
        Assert.Empty(Directory.GetDirectories(new CheckpointStore(runFolder).Directory, "*.partial*"));

        output.WriteLine($"kill -9 trials: {trials} ({duringStartup} at a random moment after start, {afterCheckpoint} at a random moment after a checkpoint); " +
                         $"{partialLeftovers} left a *.partial folder (killed mid-checkpoint), {tempFilesLeft} of them mid-file; " +
                         $"newest checkpoint advanced in {progressed}; {generates + 1} generate runs; final checkpoint at {final.State.TotalImages} images");
        Assert.True(trials >= 5);
    }
}
