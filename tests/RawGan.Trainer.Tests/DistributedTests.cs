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
}
