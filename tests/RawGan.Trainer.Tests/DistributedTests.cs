using System.Diagnostics;
using RawGan.ProGan.Checkpoints;
using RawGan.ProGan.Training;
using RawGan.Tests;

namespace RawGan.Trainer.Tests;

/// <summary>
/// Data-parallel RawGan under Open MPI on this machine: the collectives between real ranks
/// started by mpirun, and training across ranks.
/// </summary>
[Collection("rawgan")]
public sealed class DistributedTests(RawganFixture cli)
{
    [MpiFact]
    public void TwoRanksAllReduceBroadcastAndMeet()
    {
        var r = cli.RunRanks(2, "check", "--collective", "--device", "cpu");
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Contains("check passed: mpi, 2 rank(s)", r.Stdout);
    }

    [Fact]
    public void OneProcessIsRankZeroOfOne()
    {
        var r = cli.Run("check", "--collective", "--device", "cpu");
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Contains("check passed: single process, 1 rank(s)", r.Stdout);
    }

    /// <summary>The tiny model of the other CLI tests, at batch 16 (two ranks of 8), on one thread per rank.</summary>
    private static string[] Train(string folder, params string[] extra) => Train(folder, 16, extra);

    private static string[] Train(string folder, int batch, params string[] extra) =>
    [
        "train", .. RawganFixture.TinyModel, "--kimg-per-phase", "0.2", "--batch", batch.ToString(), "--swd-images", "0", "--shapes-count", "64",
        "--tick-kimg", "0.032", "--seed", "3", "--device", "cpu", "--threads", "1", "--out", folder, .. extra,
    ];

    private static string Latest(string run) => new CheckpointStore(run).Latest ?? throw new InvalidOperationException($"no checkpoint in {run}");

    private static float[] Values(string checkpoint, string file) =>
        SafeTensors.Load(Path.Combine(checkpoint, file)).Tensors.OrderBy(t => t.Key, StringComparer.Ordinal).SelectMany(t => t.Value.Data).ToArray();

    private static System.Text.Json.JsonElement[] Metrics(string run) =>
        File.ReadAllLines(Path.Combine(run, "metrics.jsonl")).Select(l => System.Text.Json.JsonDocument.Parse(l).RootElement).ToArray();

    /// <summary>
    /// Two ranks of 8 train what one rank of 16 trains: every rank draws the whole minibatch's
    /// random numbers and keeps whole minibatch-stddev groups of it, each rank's loss is the mean
    /// over its share, and the ranks' gradients are averaged. So the losses agree to float
    /// rounding (the sums run in another order) and so do the critic's weights. The generator's
    /// Adam with beta1 = 0 steps by about lr sign(g): where a gradient is nearly 0 its sign can
    /// flip with the rounding, so a few generator weights may differ by up to 2 lr per step.
    /// </summary>
    [MpiFact]
    public void TwoRanksOfEightTrainWhatOneRankOfSixteenTrains()
    {
        var one = cli.Run(Train(cli.NewFolder("one-rank"), "--max-steps", "12"));
        var two = cli.RunRanks(2, Train(cli.NewFolder("two-ranks"), "--max-steps", "12"));
        Assert.True(one.ExitCode == 0, one.ToString());
        Assert.True(two.ExitCode == 0, two.ToString());
        Assert.Contains("2 ranks (mpi), each training on 1/2 of every minibatch", two.Stdout);
        string runOne = RawganFixture.RunFolderOf(one.Stdout), runTwo = RawganFixture.RunFolderOf(two.Stdout);
        var (m1, m2) = (Metrics(runOne), Metrics(runTwo));
        Assert.Equal(m1.Length, m2.Length);
        Assert.True(m1.Length >= 4, $"only {m1.Length} ticks");
        for (int i = 0; i < m1.Length; i++)
            foreach (var key in new[] { "loss_d", "loss_g", "score_real", "score_fake", "gradient_penalty" })
            {
                double a = m1[i].GetProperty(key).GetDouble(), b = m2[i].GetProperty(key).GetDouble();
                Assert.True(Math.Abs(a - b) <= 1e-4 * Math.Max(1, Math.Abs(a)), $"tick {i + 1} {key}: one rank {a}, two ranks {b}");
            }
        string c1 = Latest(runOne), c2 = Latest(runTwo);
        Assert.Equal(Path.GetFileName(c1), Path.GetFileName(c2));
        var (d1, d2) = (Values(c1, "D.safetensors"), Values(c2, "D.safetensors"));
        Assert.True(d1.Zip(d2).All(p => Math.Abs(p.First - p.Second) <= 1e-5 * Math.Max(1, Math.Abs(p.First))), "the critic's weights differ");
        var (g1, g2) = (Values(c1, "G.safetensors"), Values(c2, "G.safetensors"));
        int off = g1.Zip(g2).Count(p => Math.Abs(p.First - p.Second) > 1e-4);
        Assert.True(off <= g1.Length / 50, $"{off} of {g1.Length} generator weights differ by more than 1e-4");
        Assert.True(g1.Zip(g2).All(p => Math.Abs(p.First - p.Second) <= 2 * 0.001f * 12), "a generator weight differs by more than 2 lr per step");
        Assert.Single(Directory.GetDirectories(Path.GetDirectoryName(runTwo)!));   // one run folder: rank 0's
    }

    [MpiFact]
    public void AResumedTwoRankRunIsBitExactAgainstAnUninterruptedOne()
    {
        var straight = cli.RunRanks(2, Train(cli.NewFolder("two-straight")));
        Assert.True(straight.ExitCode == 0, straight.ToString());
        var first = cli.RunRanks(2, Train(cli.NewFolder("two-interrupted"), "--max-steps", "17"));
        Assert.True(first.ExitCode == 0, first.ToString());
        string run = RawganFixture.RunFolderOf(first.Stdout);
        var resumed = cli.RunRanks(2, "train", "--resume", run, "--device", "cpu", "--threads", "1");
        Assert.True(resumed.ExitCode == 0, resumed.ToString());
        RawganFixture.AssertSameWeights(Latest(RawganFixture.RunFolderOf(straight.Stdout)), Latest(run));
    }

    [MpiFact]
    public void ABatchThatCannotBeSplitInWholeGroupsIsRefusedBeforeTraining()
    {
        var r = cli.RunRanks(2, Train(cli.NewFolder("two-odd"), 12));
        Assert.NotEqual(0, r.ExitCode);
        Assert.Contains("rawgan: --batch 12 at 4x4 cannot be split among 2 ranks in whole minibatch-stddev groups of 4: use a multiple of 8", r.Stderr);
        Assert.DoesNotContain("   at ", r.Stdout + r.Stderr);
    }

    [MpiFact]
    public void ARankKilledMidRunStopsTheOthersAndLeavesALoadableCheckpoint()
    {
        string folder = cli.NewFolder("two-killed");
        string[] args = [.. Train(folder, "--checkpoint-ticks", "1")];
        args[Array.IndexOf(args, "--kimg-per-phase") + 1] = "50";
        using var p = new RawganProcess(cli.Dll, cli.CacheDirectory, args, ranks: 2);
        Assert.NotNull(p.WaitForLine(l => l.StartsWith("checkpoint: "), RawganFixture.Timeout));
        var ranks = Children(p.Id).Where(id => Process.GetProcessById(id).ProcessName.StartsWith("dotnet", StringComparison.Ordinal)).ToArray();
        Assert.True(ranks.Length == 2, $"expected 2 ranks under mpirun, found {ranks.Length}");
        Process.GetProcessById(ranks[^1]).Kill();
        var clock = Stopwatch.StartNew();
        int code = p.WaitForExit(TimeSpan.FromSeconds(60));
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(30), $"the job took {clock.Elapsed.TotalSeconds:F0} s to stop after a rank died");
        Assert.NotEqual(0, code);
        RawganFixture.LoadCompletely(Latest(Directory.GetDirectories(folder).Single()));
    }

    private static int[] Children(int parent) =>
        Directory.GetDirectories("/proc").Select(Path.GetFileName).Where(n => int.TryParse(n, out _))
            .Select(int.Parse!).Where(pid => ParentOf(pid) == parent).ToArray();

    private static int ParentOf(int pid)
    {
        try
        {
            var stat = File.ReadAllText($"/proc/{pid}/stat");
            return int.Parse(stat[(stat.LastIndexOf(')') + 2)..].Split(' ')[1]);
        }
        catch (IOException) { return -1; }
    }
}
