using System.Text.Json;
using RawGan.Engine.Backends.Cpu;
using RawGan.ProGan.Checkpoints;
using RawGan.ProGan.Data;
using RawGan.ProGan.Model;
using RawGan.ProGan.Training;
using ProGanTrainer = RawGan.ProGan.Training.Trainer;

namespace RawGan.Trainer.Tests;

/// <summary>Built-in shapes in memory whose batches turn to NaN for the calls <see cref="Poisoned"/> picks.</summary>
internal sealed class PoisonedShapes : ITrainingImages
{
    private readonly Dictionary<int, float[][]> _levels = new();

    public PoisonedShapes(int count, int resolution, Func<long, bool> poisoned)
    {
        var shapes = new ShapesDataset(seed: 4, count: count);
        for (int r = 4; r <= resolution; r *= 2)
        {
            int res = r;
            _levels[r] = Enumerable.Range(0, count).Select(i => shapes.Render(i, res)).ToArray();
        }
        Count = count;
        Resolution = resolution;
        Poisoned = poisoned;
    }

    public Func<long, bool> Poisoned { get; set; }
    /// <summary>FillBatch calls so far (one per training step).</summary>
    public long Calls { get; private set; }
    public string Name => "poisoned shapes";
    public int Count { get; }
    public int Channels => 3;
    public int Resolution { get; }

    public void FillBatch(ReadOnlySpan<int> indices, int resolution, ReadOnlySpan<bool> mirror, Span<float> destination)
    {
        int per = 3 * resolution * resolution;
        for (int i = 0; i < indices.Length; i++) _levels[resolution][indices[i]].CopyTo(destination.Slice(i * per, per));
        // One bad pixel in one image is enough to make the critic's loss NaN.
        if (Poisoned(Calls)) destination[per / 2 + 1] = float.NaN;
        Calls++;
    }
}

internal sealed class RecordingObserver : ITrainingObserver
{
    public List<TickReport> Ticks { get; } = new();
    public List<string> Notices { get; } = new();
    public void Tick(TickReport report) => Ticks.Add(report);
    public void Notice(string message) => Notices.Add(message);
}

/// <summary>
/// Non-finite values in process, with the real Trainer: a step whose loss or gradients are not
/// finite is skipped (no weight changes), counted and reported; several in a row roll back to the
/// last checkpoint with the learning rate halved, or stop with a clear message; and no checkpoint
/// ever holds a NaN or an infinity.
/// </summary>
public sealed class NonFiniteTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "rawgan-nonfinite-" + Guid.NewGuid().ToString("N")[..12]);

    public NonFiniteTests() => Directory.CreateDirectory(_dir);

    public void Dispose()
    {
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
    }

    /// <summary>12 steps of 8 images per phase (4x4, 8x8 fade-in, 8x8 stable), a tick and a
    /// checkpoint every 2 steps, every checkpoint kept, 3 non-finite steps in a row trigger the policy.</summary>
    private static TrainOptions Options(NonFinitePolicy policy) => new()
    {
        Model = ProGanConfig.Tiny(8) with { LatentSize = 16, FmapBase = 32, FmapMax = 16 },
        ImagesPerPhase = 96,
        DefaultBatch = 8,
        Seed = 6,
        TickImages = 16,
        CheckpointTicks = 1,
        KeepCheckpoints = 1000,
        MaxNonFiniteInARow = 3,
        OnNonFinite = policy,
        SwdImages = 0,
    };

    private static float[][] Weights(ProGanTrainer t) =>
        t.Generator.Parameters().Concat(t.Discriminator.Parameters()).Concat(t.GeneratorEma.Parameters()).Select(p => p.ToArray()).ToArray();

    /// <summary>Every checkpoint ever written loads completely (LoadInto rejects NaN and infinities).</summary>
    private static void AssertEveryCheckpointIsFinite(string run)
    {
        var all = new CheckpointStore(run).List();
        Assert.NotEmpty(all);
        foreach (var c in all) RawganFixture.LoadCompletely(c);
    }

    [Fact]
    public void ANonFiniteStepIsSkippedCountedAndReported()
    {
        var data = new PoisonedShapes(32, 8, call => call is 5 or 9);
        var observer = new RecordingObserver();
        using var trainer = new ProGanTrainer(Options(NonFinitePolicy.Rollback), CpuBackend.Shared, data, _dir, observer);
        Assert.Equal(StopReason.Interrupted, trainer.Run(maxSteps: 5));
        var before = Weights(trainer);

        // Step 6 sees a NaN: nothing it computed may reach G, D or the EMA.
        Assert.Equal(StopReason.Interrupted, trainer.Run(maxSteps: 1));
        var after = Weights(trainer);
        for (int i = 0; i < before.Length; i++)
            Assert.True(before[i].AsSpan().SequenceEqual(after[i]), $"tensor {i} changed in a skipped step");
        Assert.Equal(1, trainer.State.SkippedSteps);
        Assert.Contains(observer.Notices, n => n.StartsWith("step 6: non-finite") && n.Contains("skipped (1 so far)"));

        Assert.Equal(StopReason.Finished, trainer.Run());
        Assert.Equal(2, trainer.State.SkippedSteps);
        Assert.Equal(0, trainer.State.Rollbacks);
        Assert.Equal(36, trainer.State.Steps);
        Assert.Equal(2, observer.Ticks[^1].SkippedSteps);
        var lastMetrics = JsonDocument.Parse(File.ReadLines(Path.Combine(_dir, "metrics.jsonl")).Last()).RootElement;
        Assert.Equal(2, lastMetrics.GetProperty("skipped_steps").GetInt64());
        Assert.Equal(2, CheckpointStore.ReadState(new CheckpointStore(_dir).Latest!).State.SkippedSteps);
        AssertEveryCheckpointIsFinite(_dir);
    }

    [Fact]
    public void SeveralInARowRollBackToTheLastCheckpointWithHalfTheLearningRate()
    {
        // Steps 15, 16 and 17 (calls 14..16) see NaN, in the 8x8 fade-in. The tick after step 16 still
        // writes a checkpoint (128 images): its weights are those of step 14, as skipped steps change none.
        var data = new PoisonedShapes(32, 8, call => call is >= 14 and <= 16);
        var observer = new RecordingObserver();
        using var trainer = new ProGanTrainer(Options(NonFinitePolicy.Rollback), CpuBackend.Shared, data, _dir, observer);
        Assert.Equal(StopReason.Finished, trainer.Run());

        string rolledBack = Assert.Single(observer.Notices, n => n.StartsWith("rolled back to "));
        Assert.Contains("kimg-000000-128", rolledBack);
        Assert.Contains("factor 0.5", rolledBack);
        Assert.Equal(1, trainer.State.Rollbacks);
        Assert.Equal(0.5f, trainer.State.LearningRateFactor);
        Assert.Equal(3, trainer.State.SkippedSteps);
        // The rest of the run, and the next phase, use the halved rate.
        Assert.Contains(observer.Notices, n => n.StartsWith("phase 3/3") && n.Contains("lr 0.0005"));
        var final = CheckpointStore.ReadState(new CheckpointStore(_dir).Latest!);
        Assert.Equal(0.5f, final.State.LearningRateFactor);
        Assert.Equal(288, final.State.TotalImages);
        Assert.Equal(1, final.State.Rollbacks);
        AssertEveryCheckpointIsFinite(_dir);
    }

    [Fact]
    public void ANaNThatRollbacksCannotCureStopsAfterMaxRollbacks()
    {
        // From step 20 on every batch is poisoned: each rollback is followed by three more bad
        // steps, until the cap of two rollbacks is reached.
        var data = new PoisonedShapes(32, 8, call => call >= 20);
        var observer = new RecordingObserver();
        using var trainer = new ProGanTrainer(Options(NonFinitePolicy.Rollback) with { MaxRollbacks = 2 }, CpuBackend.Shared, data, _dir, observer);
        Assert.Equal(StopReason.NonFinite, trainer.Run());
        Assert.Equal(2, trainer.State.Rollbacks);
        Assert.Equal(0.25f, trainer.State.LearningRateFactor);
        Assert.StartsWith("stopping: still non-finite after 2 rollbacks", observer.Notices[^1]);
        AssertEveryCheckpointIsFinite(_dir);
    }

    [Fact]
    public void WithPolicyStopSeveralInARowStopWithAClearMessage()
    {
        var data = new PoisonedShapes(32, 8, call => call >= 20);
        var observer = new RecordingObserver();
        using var trainer = new ProGanTrainer(Options(NonFinitePolicy.Stop), CpuBackend.Shared, data, _dir, observer);
        Assert.Equal(StopReason.NonFinite, trainer.Run());
        Assert.Equal(23, trainer.State.Steps);
        Assert.Equal(3, trainer.State.SkippedSteps);
        string stop = observer.Notices[^1];
        Assert.StartsWith("stopping: 3 steps in a row had non-finite values", stop);
        Assert.Contains(new CheckpointStore(_dir).Latest!, stop);
        AssertEveryCheckpointIsFinite(_dir);
    }

    [Theory]
    [InlineData(NonFinitePolicy.Rollback)]
    [InlineData(NonFinitePolicy.Stop)]
    public void AnUpdateThatOverflowsAdamsMomentsWhileTheLossesStayFiniteActsAtOnce(NonFinitePolicy policy)
    {
        // As if a gradient of 1e20 had been squared: the second moment is infinite, which makes the
        // update zero, so the losses stay finite; only the check of the moments can see it.
        var data = new PoisonedShapes(32, 8, _ => false);
        var observer = new RecordingObserver();
        using var trainer = new ProGanTrainer(Options(policy), CpuBackend.Shared, data, _dir, observer);
        Assert.Equal(StopReason.Interrupted, trainer.Run(maxSteps: 5));
        string good = new CheckpointStore(_dir).Latest!;
        var v = trainer.Optimizers.Discriminator.SecondMoments[2];
        var values = v.ToArray();
        values[0] = float.PositiveInfinity;
        v.CopyFrom(values);

        var reason = trainer.Run(maxSteps: 1);
        Assert.Contains(observer.Notices, n => n.StartsWith("step 6: the update left non-finite weights or Adam moments"));
        Assert.Equal(1, trainer.State.SkippedSteps);
        if (policy == NonFinitePolicy.Stop)
        {
            Assert.Equal(StopReason.NonFinite, reason);
            Assert.StartsWith("stopping: the weights or Adam moments are not finite", observer.Notices[^1]);
            Assert.Equal(good, new CheckpointStore(_dir).Latest);
        }
        else
        {
            Assert.Equal(StopReason.Interrupted, reason);
            Assert.Equal(1, trainer.State.Rollbacks);
            Assert.Contains(observer.Notices, n => n.StartsWith($"rolled back to {good}"));
            Assert.Equal(StopReason.Finished, trainer.Run());
        }
        AssertEveryCheckpointIsFinite(_dir);
    }

    [Fact]
    public void WeightsThatTurnedNonFiniteAreNeverWrittenAndARollbackRepairsThem()
    {
        // As if an update had overflowed: one generator weight becomes NaN (and the EMA follows).
        var data = new PoisonedShapes(32, 8, _ => false);
        var observer = new RecordingObserver();
        string run = Directory.CreateDirectory(Path.Combine(_dir, "diverged")).FullName;
        using var trainer = new ProGanTrainer(Options(NonFinitePolicy.Rollback), CpuBackend.Shared, data, run, observer);
        Assert.Equal(StopReason.Interrupted, trainer.Run(maxSteps: 7));
        var store = new CheckpointStore(run);
        string good = store.Latest!;
        var goodWeights = Weights(trainer);
        var w = trainer.Generator.Parameters()[0];
        var values = w.ToArray();
        values[3] = float.NaN;
        w.CopyFrom(values);
        var ema = trainer.GeneratorEma.Parameters()[1];
        var emaValues = ema.ToArray();
        emaValues[0] = float.PositiveInfinity;
        ema.CopyFrom(emaValues);

        Assert.Null(trainer.Checkpoint());
        Assert.Equal(good, store.Latest);
        Assert.Contains(observer.Notices, n => n.Contains("not written") && n.Contains("non-finite"));

        // Training on: step 8 is skipped (non-finite loss), the tick after it cannot write its
        // checkpoint, and since no later step could repair the weights, the trainer rolls back to
        // `good` at once rather than after more steps.
        int notices = observer.Notices.Count;
        Assert.Equal(StopReason.Interrupted, trainer.Run(maxSteps: 1));
        Assert.Equal(1, trainer.State.Rollbacks);
        Assert.Equal(1, trainer.State.SkippedSteps);
        var after = observer.Notices.Skip(notices).ToArray();
        Assert.StartsWith("step 8: non-finite", after[0]);
        Assert.StartsWith("checkpoint not written", after[1]);
        Assert.StartsWith($"rolled back to {good}", after[2]);
        var restored = Weights(trainer);
        for (int i = 0; i < goodWeights.Length; i++)
            Assert.True(goodWeights[i].AsSpan().SequenceEqual(restored[i]), $"tensor {i} was not restored by the rollback");
        Assert.Equal(StopReason.Finished, trainer.Run());
        AssertEveryCheckpointIsFinite(run);
    }
}
