using RawGan.Engine.Backends.Cuda;
using RawGan.ProGan.Model;
using RawGan.ProGan.Training;
using ProGanTrainer = RawGan.ProGan.Training.Trainer;

namespace RawGan.Trainer.Tests;

/// <summary>
/// The training step as one CUDA graph, on the emulated driver (which records and replays
/// launches the way a GPU's graphs do, and refuses what a capture cannot hold): a run whose steps
/// are replayed ends with exactly the weights of a run whose every kernel is launched from the
/// host, non-finite steps skipped on the device included.
/// </summary>
public sealed class StepGraphTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "rawgan-graphs-" + Guid.NewGuid().ToString("N")[..12]);

    public StepGraphTests() => Directory.CreateDirectory(_dir);

    public void Dispose()
    {
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
    }

    /// <summary>8 steps of 8 images per phase: 4x4, 8x8 fade-in (alpha moves every step), 8x8 stable.</summary>
    private static TrainOptions Options() => new()
    {
        Model = ProGanConfig.Tiny(8) with { LatentSize = 16, FmapBase = 32, FmapMax = 16 },
        ImagesPerPhase = 64,
        DefaultBatch = 8,
        Seed = 6,
        TickImages = 32,
        CheckpointTicks = 2,
        SwdImages = 0,
    };

    private (float[][] weights, TrainerState state, StepRunner steps) Train(bool graphs, string name, Action<CudaBackend, ProGanTrainer>? afterRun = null,
        Func<long, bool>? poisoned = null, TrainOptions? options = null)
    {
        using var backend = new CudaBackend(new EmulatedDriver());
        // By default a NaN in the reals of step 4 (a replay of the first phase) and step 14 (a replay in the fade-in).
        var data = new PoisonedShapes(32, 8, poisoned ?? (call => call is 3 or 13));
        Directory.CreateDirectory(Path.Combine(_dir, name));
        using var trainer = new ProGanTrainer(options ?? Options(), backend, data, Path.Combine(_dir, name), new RecordingObserver()) { UseGraphs = graphs };
        Assert.Equal(StopReason.Finished, trainer.Run());
        var weights = trainer.Generator.Parameters().Concat(trainer.Discriminator.Parameters()).Concat(trainer.GeneratorEma.Parameters())
            .Select(p => p.ToArray()).ToArray();
        afterRun?.Invoke(backend, trainer);
        return (weights, trainer.State, trainer.Steps);
    }

    [Fact]
    public void ReplayedStepsTrainBitForBitLikeStepsLaunchedFromTheHost()
    {
        var (eager, eagerState, eagerSteps) = Train(graphs: false, "eager");
        var (replayed, replayedState, replayedSteps) = Train(graphs: true, "graphs", (backend, trainer) =>
        {
            // Further steps of the last phase's configuration, as replays: no kernel launched from
            // the host, one graph launch and one copy back (the statistics) per step.
            long launches = backend.Launches, graphLaunches = backend.GraphLaunches, readbacks = backend.Readbacks;
            trainer.Steps.Inputs(8, 3, 8, 16);
            for (int i = 0; i < 3; i++) Assert.True(trainer.Steps.Run(3, fadeIn: false, Options().EmaBeta(8)).Finite);
            Assert.True(trainer.Steps.LastRanAsGraph);
            Assert.Equal(launches, backend.Launches);
            Assert.Equal(graphLaunches + 3, backend.GraphLaunches);
            Assert.Equal(readbacks + 3, backend.Readbacks);
        });

        Assert.False(eagerSteps.UsesGraphs);
        Assert.Equal(24, eagerSteps.EagerSteps);
        // Per phase: the first step eager (it fills the allocator's cache), the second captured and
        // replayed, every later one replayed.
        Assert.True(replayedSteps.UsesGraphs);
        Assert.Equal(3, replayedSteps.EagerSteps);
        Assert.Equal(3, replayedSteps.Captures);
        Assert.Equal(21 + 3, replayedSteps.Replays);

        // Where no tick or phase end follows a step, the next one was launched before its
        // statistics were read: two per four-step tick (TickImages 32, batch 8), in all three phases.
        Assert.Equal(0, eagerSteps.LaunchedAhead);
        Assert.Equal(3 * 2 * 3, replayedSteps.LaunchedAhead);
        Assert.Equal(2, eagerState.SkippedSteps);
        Assert.Equal(2, replayedState.SkippedSteps);
        // Adam's step counts were advanced on the device, skipped steps left out.
        Assert.Equal(eagerState.GeneratorAdamStep, replayedState.GeneratorAdamStep);
        Assert.Equal(eagerState.DiscriminatorAdamStep, replayedState.DiscriminatorAdamStep);
        Assert.Equal(8, replayedState.GeneratorAdamStep);   // the last phase had no NaN
        Assert.Equal(eager.Length, replayed.Length);
        for (int i = 0; i < eager.Length; i++)
            Assert.True(eager[i].AsSpan().SequenceEqual(replayed[i]), $"tensor {i} differs between replayed and eager steps");
    }

    /// <summary>
    /// Two non-finite steps in a row (MaxNonFiniteInARow 2) roll the run back to its last
    /// checkpoint. With graphs, the step after the second bad one was already launched when its
    /// statistics came in: it is waited for and dropped, and the run goes on from the checkpoint
    /// exactly as the eager run does (same weights, bit for bit, same counts).
    /// </summary>
    [Fact]
    public void ARollbackDropsTheStepLaunchedAheadAndTrainsOnLikeTheEagerRun()
    {
        var options = Options() with { MaxNonFiniteInARow = 2 };
        // The 10th and 11th batches drawn (steps 2 and 3 of the fade-in) hold a NaN, once: after
        // the rollback nothing is poisoned (the graph run draws one batch more, the dropped step's).
        static Func<long, bool> TwoBad()
        {
            int left = 2;
            return call => call >= 9 && left-- > 0;
        }
        var (eager, eagerState, _) = Train(graphs: false, "eager-rollback", poisoned: TwoBad(), options: options);
        var (replayed, replayedState, replayedSteps) = Train(graphs: true, "graphs-rollback", poisoned: TwoBad(), options: options);
        Assert.Equal(1, eagerState.Rollbacks);
        Assert.Equal(1, replayedState.Rollbacks);
        Assert.Equal(eagerState.Steps, replayedState.Steps);
        Assert.Equal(eagerState.SkippedSteps, replayedState.SkippedSteps);
        Assert.Equal(eagerState.GeneratorAdamStep, replayedState.GeneratorAdamStep);
        Assert.True(replayedSteps.LaunchedAhead > 0);
        Assert.Equal(0, replayedSteps.InFlight);
        for (int i = 0; i < eager.Length; i++)
            Assert.True(eager[i].AsSpan().SequenceEqual(replayed[i]), $"tensor {i} differs between the graph run and the eager run after the rollback");
    }

    [Fact]
    public void WithTheLogisticLossReplayedStepsTrainBitForBitLikeEagerOnes()
    {
        // The other objective's kernels (softplus, sigmoid in its backward, R1's double backward) in a captured step.
        var options = Options() with { Loss = GanLoss.Logistic, R1Gamma = 1f };
        var (eager, _, _) = Train(graphs: false, "logistic-eager", poisoned: _ => false, options: options);
        var (replayed, _, steps) = Train(graphs: true, "logistic-graphs", poisoned: _ => false, options: options);
        Assert.True(steps.Replays > 0, "no step was replayed");
        Assert.Equal(eager.Length, replayed.Length);
        for (int i = 0; i < eager.Length; i++)
            Assert.True(eager[i].AsSpan().SequenceEqual(replayed[i]), $"tensor {i} differs between replayed and eager logistic steps");
    }

    [Fact]
    public void AStepThatCannotBeCapturedRunsEagerlyAndSaysWhy()
    {
        using var backend = new CudaBackend(new EmulatedDriver());
        var config = ProGanConfig.Tiny(8) with { LatentSize = 16, FmapBase = 32, FmapMax = 16 };
        using var models = GanModels.Create(backend, config, new RawGan.Engine.Rng(3));
        using var steps = new StepRunner(models);
        var inputs = steps.Inputs(8, 3, 8, 16);
        var rng = new RawGan.Engine.Rng(4);
        foreach (var t in new[] { inputs.Reals, inputs.Latents, inputs.Latents2, inputs.Mix })
        {
            var host = new float[t.Length];
            rng.FillUniform(host);
            t.CopyFrom(host);
        }
        Assert.True(steps.Run(3, fadeIn: false, 0.9f).Finite);
        // The cache emptied: capturing the next step would need new device memory, which a
        // capture cannot allocate. The step runs anyway, eagerly, and so do the later ones.
        backend.ReleaseCachedMemory();
        Assert.True(steps.Run(3, fadeIn: false, 0.9f).Finite);
        Assert.True(steps.Run(3, fadeIn: false, 0.9f).Finite);
        Assert.False(steps.UsesGraphs);
        Assert.Contains("cuMemAlloc_v2", steps.GraphFailure);
        Assert.Equal(0, steps.Captures);
        Assert.Equal(3, steps.EagerSteps);
        Assert.False(backend.Driver.Capturing);
    }
}
