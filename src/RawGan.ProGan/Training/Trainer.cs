using System.Diagnostics;
using System.Text.Json;
using RawGan.Engine;
using RawGan.Engine.Autograd;
using RawGan.Engine.Backends;
using RawGan.Engine.Distributed;
using RawGan.Engine.Optim;
using RawGan.ProGan.Checkpoints;
using RawGan.ProGan.Data;
using RawGan.ProGan.IO;
using RawGan.ProGan.Model;

namespace RawGan.ProGan.Training;

/// <summary>What the trainer tells the outside world once per tick.</summary>
public sealed record TickReport(
    long Tick, Phase Phase, int PhaseCount, float Alpha, long TotalImages, long TotalScheduleImages, int Batch,
    double ImagesPerSecond, double SecondsPerKimg, TimeSpan Elapsed, TimeSpan Remaining,
    double CriticLoss, double GeneratorLoss, double RealScore, double FakeScore, double Penalty, long SkippedSteps, bool Logistic = false);

/// <summary>Receives progress (a live display or plain log lines) and notices.</summary>
public interface ITrainingObserver
{
    void Tick(TickReport report);
    void Notice(string message);
}

/// <summary>Why a run stopped.</summary>
public enum StopReason { Finished, Interrupted, NonFinite }

/// <summary>
/// Progressive growing with WGAN-GP, step by step (ProGAN sections 3 and 4, appendix A.1).
/// One step: a critic update on a minibatch of reals (blended during fade-ins), then a generator
/// update, then the EMA of the generator. All randomness comes from one seeded generator whose
/// state is checkpointed, so on the CPU a resumed run reproduces an uninterrupted one bit for bit.
/// </summary>
public sealed class Trainer : IDisposable
{
    private readonly IBackend _backend;
    private readonly ITrainingImages _data;
    private readonly ITrainingObserver _observer;
    private readonly CheckpointStore _store;
    private readonly Generator _g, _gEma;
    private readonly Discriminator _d;
    private readonly Adam _adamG, _adamD;
    private readonly GanModels _models;
    private Rng _rng;
    private float[] _batchHost = [], _randomHost = [], _shareHost = [];
    // On the heap: a batch is the user's number, and the stack holds a few megabytes at most.
    private int[] _indexHost = [], _shareIndices = [];
    private bool[] _mirrorHost = [], _shareMirror = [];

    /// <summary>The whole minibatch's random numbers, drawn as Tensor.RandomNormal / RandomUniform
    /// would draw them (the same generator calls, in the same order).</summary>
    private float[] RandomHost(int length, bool normal)
    {
        if (_randomHost.Length < length) _randomHost = new float[length];
        var values = _randomHost.AsSpan(0, length);
        if (normal) _rng.FillNormal(values);
        else _rng.FillUniform(values);
        return _randomHost;
    }

    /// <summary>Uploads this rank's rows (of <paramref name="width"/> values each) of a whole-minibatch array into <paramref name="destination"/>.</summary>
    private void Share(float[] whole, int share, int width, Tensor destination)
    {
        int ranks = _collective.Size, batch = share * ranks;
        if (ranks == 1)
        {
            destination.CopyFrom(whole.AsSpan(0, share * width));
            return;
        }
        if (_shareHost.Length < share * width) _shareHost = new float[share * width];
        for (int i = 0; i < share; i++)
        {
            int s = GlobalSample(i, _collective.Rank, ranks, batch, Options.Model.MinibatchGroupSize);
            whole.AsSpan(s * width, width).CopyTo(_shareHost.AsSpan(i * width));
        }
        destination.CopyFrom(_shareHost.AsSpan(0, share * width));
    }

    /// <summary>Whether steps are captured once as a CUDA graph and replayed where the backend can
    /// (the results are the same either way; false runs every kernel from the host, `--graphs off`).</summary>
    public bool UseGraphs { get; init; } = true;

    /// <summary>How the steps ran so far (eager, captured, replayed), for `bench` and the tests.</summary>
    public StepRunner Steps => _steps ??= new StepRunner(_models, UseGraphs);
    private StepRunner? _steps;
    private bool _graphFailureSaid;
    private readonly Tensor _sampleLatents;
    private readonly string? _resumedFrom;

    /// <remarks>With a <paramref name="collective"/> of several ranks (a data-parallel run), each
    /// rank trains on its share of every minibatch, and only rank 0 writes checkpoints.</remarks>
    public Trainer(TrainOptions options, IBackend backend, ITrainingImages data, string runDirectory, ITrainingObserver observer, string? resumeFrom = null,
        ICollective? collective = null)
    {
        Options = options.Validate();
        _collective = collective ?? SingleProcess.Instance;
        CheckShares(Options, _collective.Size);
        if (data.Channels != options.Model.Channels)
            throw new ArgumentException($"the data '{data.Name}' has {data.Channels} channel(s) but the model expects {options.Model.Channels}");
        if (data.Resolution < options.Model.Resolution)
            throw new ArgumentException($"the data '{data.Name}' is {data.Resolution}x{data.Resolution}, smaller than the model's {options.Model.Resolution}x{options.Model.Resolution}");
        _backend = backend;
        _data = data;
        _observer = observer;
        RunDirectory = runDirectory;
        _store = new CheckpointStore(runDirectory);
        Schedule = new Schedule(options.Model.MaxLevel, options.ImagesFor, options.FadeShare);
        _remaining = new RemainingTime(options.Model);

        // Initialization draws from the run's generator in a fixed order: G, D, then training.
        _rng = new Rng(options.Seed);
        _models = GanModels.Create(backend, options.Model, _rng, options.LearningRate, _collective);
        _models.Objective = options.Objective;
        (_g, _d, _gEma, _adamG, _adamD) = (_models.G, _models.D, _models.GEma, _models.AdamG, _models.AdamD);
        State = new TrainerState { NextTickImages = options.TickImages };

        // Fixed latents for the sample grids, from their own generator so they never change.
        var latentRng = new Rng(options.Seed ^ 0x5A17_1E5EEDUL);
        _sampleLatents = Tensor.RandomNormal(backend, new Shape(SampleCount, options.Model.LatentSize), latentRng).Escape();


        _resumedFrom = resumeFrom;
        if (resumeFrom != null) Resume(resumeFrom);
        else State.Rng = _rng.GetState();
    }

    public const int SampleCount = 32;

    private readonly ICollective _collective;
    private readonly float[] _flag = new float[1];

    /// <summary>True on every rank if it is true on any (one rank's Ctrl+C stops all of them at
    /// the same step); the value itself with one rank.</summary>
    private bool AnyRank(bool value)
    {
        if (_collective.Size == 1) return value;
        _flag[0] = value ? 1 : 0;
        _collective.AllReduceSum(_flag);
        return _flag[0] > 0;
    }

    /// <summary>
    /// With several ranks every minibatch is split among them, and for the split to train exactly
    /// what one process would, each rank must hold whole minibatch-stddev groups: its share must be
    /// a multiple of the group size. Refused up front, with the batches that would work.
    /// </summary>
    private static void CheckShares(TrainOptions options, int ranks)
    {
        if (ranks == 1) return;
        int group = options.Model.MinibatchGroupSize;
        for (int r = 4; r <= options.Model.Resolution; r *= 2)
        {
            int batch = options.BatchFor(r);
            if (batch % (ranks * group) != 0)
                throw new ArgumentException($"--batch {batch} at {r}x{r} cannot be split among {ranks} ranks in whole minibatch-stddev groups of {group}: " +
                                            $"use a multiple of {ranks * group} (e.g. {Math.Max(1, batch / (ranks * group)) * ranks * group})");
        }
    }

    /// <summary>
    /// Which sample of the whole minibatch is sample <paramref name="local"/> of this rank's share.
    /// Minibatch stddev groups samples s with s mod (n / G) alike (strided groups); a rank takes
    /// whole groups, (n / G) / ranks of them, and lays them out strided in turn, so that its local
    /// groups are exactly those groups. With one rank this is the identity.
    /// </summary>
    internal static int GlobalSample(int local, int rank, int ranks, int batch, int group)
    {
        int groups = batch / group, mine = groups / ranks;
        return local / mine * groups + rank * mine + local % mine;
    }

    public TrainOptions Options { get; }
    public Schedule Schedule { get; }
    public TrainerState State { get; private set; }
    public string RunDirectory { get; }
    public Generator Generator => _g;
    public Generator GeneratorEma => _gEma;
    public Discriminator Discriminator => _d;
    /// <summary>The optimizers (for tests that corrupt a moment as an overflow would).</summary>
    internal (Adam Generator, Adam Discriminator) Optimizers => (_adamG, _adamD);

    /// <summary>The newest complete checkpoint of the run, if any.</summary>
    public string? LatestCheckpoint => _store.Latest;

    /// <summary>Called with a tensor of sample images (from the EMA generator) after every tick and phase.</summary>
    public Action<string, Tensor, Phase, float>? OnSamples { get; set; }

    // ------------------------------------------------------------------ the loop

    /// <summary>Trains until the schedule ends or <paramref name="stop"/> is cancelled (then
    /// finishes the current step and writes a checkpoint). A step whose loss or gradients are not
    /// finite is skipped; after <see cref="TrainOptions.MaxNonFiniteInARow"/> in a row the
    /// <see cref="TrainOptions.OnNonFinite"/> policy acts. An update that left a weight or an Adam
    /// moment non-finite (a learning rate that overflows them while the losses stay finite) cannot be
    /// skipped after the fact, and a checkpoint refused for that reason cannot be written later:
    /// both make the policy act at once (roll back to the last checkpoint, or stop).</summary>
    public StopReason Run(CancellationToken stop = default, long? maxSteps = null)
    {
        var clock = Stopwatch.StartNew();
        double secondsAtStart = State.Seconds;
        var tick = new TickAccumulator();
        int nonFiniteInARow = 0;
        long stepsThisRun = 0;
        while (State.PhaseIndex < Schedule.Phases.Count)
        {
            var phase = Schedule.Phases[State.PhaseIndex];
            if (State.ImagesInPhase == 0) StartPhase(phase);
            // A step launched ahead is finished and counted before the run may stop: its update
            // has been made on the device.
            if (_ahead == null && AnyRank(stop.IsCancellationRequested || (maxSteps is long m && stepsThisRun >= m)))
            {
                State.Seconds = secondsAtStart + clock.Elapsed.TotalSeconds;
                if (Checkpoint() == null)
                {
                    _observer.Notice($"stopping without a new checkpoint: the weights are not finite; the last checkpoint is {RollbackTarget ?? "none"}");
                    return StopReason.NonFinite;
                }
                return StopReason.Interrupted;
            }

            int batch = Options.BatchFor(phase.Resolution);
            float alpha = Schedule.Alpha(phase, State.ImagesInPhase);
            // This step: already launched by the previous iteration, or launched now.
            ulong[] rngAfterStep = _ahead ?? LaunchStep(phase, batch, alpha);
            _ahead = null;
            // Look ahead: when nothing but another step of this phase follows this one (no tick,
            // no phase end, no stop), queue the next step before reading this one's statistics,
            // so that the device runs it while the host does the bookkeeping below.
            if (LaunchAhead && !stop.IsCancellationRequested && !(maxSteps is long limit && stepsThisRun + 1 >= limit)
                && State.ImagesInPhase + batch < phase.Images && State.TotalImages + batch < State.NextTickImages)
                _ahead = LaunchStep(phase, batch, Schedule.Alpha(phase, State.ImagesInPhase + batch));
            var stats = Steps.Finish();
            stepsThisRun++;
            State.Steps++;
            State.ImagesInPhase += batch;
            State.TotalImages += batch;
            State.Rng = rngAfterStep;

            // A skipped critic step changed nothing; any update that ran must have left finite values
            // (counted on the device after the updates, read with the step's statistics).
            bool stateFinite = !stats.CriticFinite || stats.StateFinite;
            if (stats.Finite && stateFinite) { nonFiniteInARow = 0; tick.Add(stats); }
            else
            {
                State.SkippedSteps++;
                nonFiniteInARow++;
                if (!stateFinite)
                {
                    _observer.Notice($"step {State.Steps}: the update left non-finite weights or Adam moments (is the learning rate too high?); " +
                                     $"an update cannot be skipped after the fact (bad steps so far: {State.SkippedSteps})");
                    if (ApplyNonFinitePolicy("the weights or Adam moments are not finite") is StopReason reason) return reason;
                    nonFiniteInARow = 0;
                    continue;
                }
                _observer.Notice($"step {State.Steps}: non-finite loss or gradient; the step was skipped ({State.SkippedSteps} so far)");
                if (nonFiniteInARow >= Options.MaxNonFiniteInARow)
                {
                    if (ApplyNonFinitePolicy($"{nonFiniteInARow} steps in a row had non-finite values") is StopReason reason) return reason;
                    nonFiniteInARow = 0;
                    continue;
                }
            }

            bool phaseDone = State.ImagesInPhase >= phase.Images;
            if (State.TotalImages >= State.NextTickImages || (phaseDone && State.TotalImages > _imagesAtLastTick))
            {
                State.Seconds = secondsAtStart + clock.Elapsed.TotalSeconds;
                State.Ticks++;
                while (State.NextTickImages <= State.TotalImages) State.NextTickImages += Options.TickImages;
                ReportTick(tick, phase, batch, Schedule.Alpha(phase, State.ImagesInPhase), clock.Elapsed.TotalSeconds, secondsAtStart);
                tick = new TickAccumulator();
                EmitSamples($"tick-{State.Ticks:D5}", phase);
                if (State.Ticks % Options.CheckpointTicks == 0 && !phaseDone && Checkpoint() == null)
                {
                    if (ApplyNonFinitePolicy("a checkpoint was refused: the weights are not finite") is StopReason reason) return reason;
                    nonFiniteInARow = 0;
                    continue;
                }
            }
            if (phaseDone)
            {
                EmitSamples($"phase-{phase.Index:D2}-{(phase.FadeIn ? "fade" : "stable")}-{phase.Resolution}", phase);
                MeasurePhaseEnd(phase);
                State.PhaseIndex++;
                State.ImagesInPhase = 0;
                if (Checkpoint() == null)
                {
                    if (ApplyNonFinitePolicy("a checkpoint was refused: the weights are not finite") is StopReason reason) return reason;
                    nonFiniteInARow = 0;
                }
            }
        }
        State.Seconds = secondsAtStart + clock.Elapsed.TotalSeconds;
        return StopReason.Finished;
    }

    /// <summary>Where a rollback goes: the run's newest checkpoint, else the one this run resumed from.</summary>
    private string? RollbackTarget => _store.Latest ?? _resumedFrom;

    /// <summary>The <see cref="TrainOptions.OnNonFinite"/> policy: a rollback (null: train on) or the reason to stop.</summary>
    private StopReason? ApplyNonFinitePolicy(string why)
    {
        // A step launched ahead ran on what is now given up: it is waited for and not counted.
        if (_ahead != null)
        {
            Steps.Discard();
            _ahead = null;
        }
        string? target = RollbackTarget;
        if (Options.OnNonFinite == NonFinitePolicy.Stop || target == null)
        {
            _observer.Notice($"stopping: {why}; the last checkpoint is {target ?? "none"}, nothing was written");
            return StopReason.NonFinite;
        }
        if (State.Rollbacks >= Options.MaxRollbacks)
        {
            _observer.Notice($"stopping: still non-finite after {State.Rollbacks} rollbacks (learning rate factor {State.LearningRateFactor:G3}); the last checkpoint is {target}, nothing was written");
            return StopReason.NonFinite;
        }
        RollBack(target);
        return null;
    }

    private void StartPhase(Phase phase)
    {
        // Official ProGAN: Adam's moments restart at every phase (fade-in and stable alike).
        _steps?.Invalidate();
        _adamG.Reset();
        _adamD.Reset();
        State.GeneratorAdamStep = 0;
        State.DiscriminatorAdamStep = 0;
        var (lrG, lrD) = SetLearningRates(phase.Resolution, State.LearningRateFactor);
        string lr = lrG == lrD ? $"lr {lrG:G3}" : $"lr G {lrG:G3} D {lrD:G3}";
        _observer.Notice($"phase {phase.Index + 1}/{Schedule.Phases.Count}: {phase.Describe()}, {phase.Images:N0} images, batch {Options.BatchFor(phase.Resolution)}, {lr}");
    }

    private (float G, float D) SetLearningRates(int resolution, float factor)
    {
        var (g, d) = Options.LearningRatesFor(resolution, factor);
        _adamG.LearningRate = g;
        _adamD.LearningRate = d;
        return (g, d);
    }

    /// <summary>Whether a step may be launched while the previous one is still in flight: where
    /// steps are CUDA graphs (one rank, an asynchronous device). Elsewhere every step runs and is
    /// read before the next is prepared, as it always did.</summary>
    private bool LaunchAhead => Steps.UsesGraphs;

    /// <summary>The step launched ahead by the last iteration, as the generator's state after its
    /// random draws (what a checkpoint after it keeps), or null.</summary>
    private ulong[]? _ahead;

    /// <summary>Prepares and queues one critic step and one generator step
    /// (<see cref="StepRunner.Launch"/>; <see cref="StepRunner.Finish"/> returns what it measured),
    /// and returns the random generator's state after the step's draws.</summary>
    private ulong[] LaunchStep(Phase phase, int batch, float alpha)
    {
        int res = phase.Resolution, level = phase.Level, c = Options.Model.Channels;

        // A minibatch of reals: random indices, random mirroring, at the phase's resolution. Every
        // rank draws the whole minibatch's random numbers from the run's one generator (so all
        // ranks stay in step and a resume is exact) and keeps its share.
        int ranks = _collective.Size, share = batch / ranks, group = Options.Model.MinibatchGroupSize;
        if (_indexHost.Length != batch) (_indexHost, _mirrorHost) = (new int[batch], new bool[batch]);
        if (_shareIndices.Length != share) (_shareIndices, _shareMirror) = (new int[share], new bool[share]);
        var (indices, mirror) = (_shareIndices, _shareMirror);
        for (int i = 0; i < batch; i++) _indexHost[i] = _rng.NextInt(_data.Count);
        for (int i = 0; i < batch; i++) _mirrorHost[i] = Options.Mirror && (_rng.NextUInt64() & 1) == 1;
        for (int i = 0; i < share; i++)
        {
            int s = GlobalSample(i, _collective.Rank, ranks, batch, group);
            (indices[i], mirror[i]) = (_indexHost[s], _mirrorHost[s]);
        }
        int length = share * c * res * res;
        if (_batchHost.Length != length) _batchHost = new float[length];
        _data.FillBatch(indices, res, mirror, _batchHost);
        int latent = Options.Model.LatentSize;
        var inputs = Steps.Inputs(share, c, res, latent);
        inputs.Reals.CopyFrom(_batchHost);
        Share(RandomHost(batch * latent, normal: true), share, latent, inputs.Latents);
        Share(RandomHost(batch, normal: false), share, 1, inputs.Mix);
        Share(RandomHost(batch * latent, normal: true), share, latent, inputs.Latents2);
        bool fadeIn = phase.FadeIn && alpha < 1f;
        if (fadeIn) inputs.SetAlpha(alpha);
        var rngAfter = _rng.GetState();
        Steps.Launch(level, fadeIn, Options.EmaBeta(batch));
        if (Steps.GraphFailure is { } why && !_graphFailureSaid)
        {
            _graphFailureSaid = true;
            _observer.Notice($"training on without CUDA graphs (every kernel launched from the host): the step could not be captured: {why}");
        }
        return rngAfter;
    }

    // ------------------------------------------------------------------ ticks, samples, checkpoints

    private sealed class TickAccumulator
    {
        public int Count;
        public double Critic, Generator, Real, Fake, Penalty;

        public void Add(StepStats s)
        {
            Count++;
            Critic += s.CriticLoss; Generator += s.GeneratorLoss; Real += s.RealScore; Fake += s.FakeScore; Penalty += s.Penalty;
        }

        public double Mean(double sum) => Count == 0 ? double.NaN : sum / Count;
    }

    private long _imagesAtLastTick;
    private readonly RemainingTime _remaining;
    private double _secondsAtLastTick;
    private int _phaseOfLastTick = -1;   // the first tick of a phase (or of this process) carries its start's one-time costs

    private void ReportTick(TickAccumulator tick, Phase phase, int batch, float alpha, double runSeconds, double secondsAtStart)
    {
        double seconds = runSeconds - _secondsAtLastTick;
        long images = State.TotalImages - _imagesAtLastTick;
        _secondsAtLastTick = runSeconds;
        _imagesAtLastTick = State.TotalImages;
        double ips = seconds > 0 ? images / seconds : 0;
        _remaining.Record(phase.Level, images, seconds, startsPhase: phase.Index != _phaseOfLastTick);
        _phaseOfLastTick = phase.Index;
        var remaining = TimeSpan.FromSeconds(_remaining.Seconds(Schedule, phase, State.ImagesInPhase));
        var report = new TickReport(State.Ticks, phase, Schedule.Phases.Count, alpha, State.TotalImages, Schedule.TotalImages, batch,
            ips, ips > 0 ? 1000 / ips : 0, TimeSpan.FromSeconds(secondsAtStart + runSeconds), remaining,
            tick.Mean(tick.Critic), tick.Mean(tick.Generator), tick.Mean(tick.Real), tick.Mean(tick.Fake), tick.Mean(tick.Penalty), State.SkippedSteps, Options.Loss == GanLoss.Logistic);
        _observer.Tick(report);
        AppendMetrics(report);
    }

    private void AppendMetrics(TickReport r)
    {
        AppendLine("metrics.jsonl", new
        {
            tick = r.Tick,
            kimg = r.TotalImages / 1000.0,
            phase = r.Phase.Index,
            resolution = r.Phase.Resolution,
            fade_in = r.Phase.FadeIn,
            alpha = r.Alpha,
            batch = r.Batch,
            loss_d = Finite(r.CriticLoss),
            loss_g = Finite(r.GeneratorLoss),
            score_real = Finite(r.RealScore),
            score_fake = Finite(r.FakeScore),
            gradient_penalty = Finite(r.Penalty),
            images_per_s = r.ImagesPerSecond,
            sec_per_kimg = r.SecondsPerKimg,
            elapsed_s = r.Elapsed.TotalSeconds,
            skipped_steps = r.SkippedSteps,
        });
    }

    /// <summary>One JSON line appended to a file of the run folder (rank 0 writes).</summary>
    private void AppendLine(string file, object value)
    {
        if (_collective.Rank == 0) File.AppendAllText(Path.Combine(RunDirectory, file), JsonSerializer.Serialize(value) + "\n");
    }

    /// <summary>
    /// The SWD of the EMA generator at the end of <paramref name="phase"/>, at that phase's
    /// resolution (alpha is 1 there), into swd.jsonl and the notices: a curve of the run's
    /// progress that the losses, which are not comparable across phases, cannot give. Its time is
    /// counted in the next tick's, like samples and checkpoints.
    /// </summary>
    private void MeasurePhaseEnd(Phase phase)
    {
        if (Options.SwdImages <= 0 || _collective.Rank != 0) return;
        var swd = Evaluation.Swd(_gEma, _data, Options.SwdImages, Options.Seed, phase.Level);
        _observer.Notice($"SWD at the end of {phase.Describe()}: {swd.Mean:F1} (x1e3; {string.Join(", ", swd.Levels.Select(l => $"{l.Resolution}px {l.Value:F1}"))})");
        AppendLine("swd.jsonl", new
        {
            kimg = State.TotalImages / 1000.0,
            phase = phase.Index,
            resolution = phase.Resolution,
            fade_in = phase.FadeIn,
            swd = swd.Mean,
            swd_levels = swd.Levels.ToDictionary(l => l.Resolution.ToString(System.Globalization.CultureInfo.InvariantCulture), l => l.Value),
        });
    }

    private static double? Finite(double v) => double.IsFinite(v) ? v : null;

    private void EmitSamples(string name, Phase phase)
    {
        if (OnSamples == null || _collective.Rank != 0) return;
        using var scope = new Scope();
        using var _ = Tape.NoGrad();
        var images = _gEma.Forward(_sampleLatents, phase.Level, Schedule.Alpha(phase, State.ImagesInPhase));
        OnSamples(name, images, phase, Schedule.Alpha(phase, State.ImagesInPhase));
    }

    /// <summary>Writes a checkpoint of the current state (atomically) and returns its folder; null,
    /// and nothing written, if a weight or an optimizer moment is not finite (an update overflowed):
    /// the last good checkpoint stays the newest, for a rollback or a resume.</summary>
    public string? Checkpoint()
    {
        if (_collective.Size > 1)
        {
            // Rank 0 writes; the others wait for it (the all-reduce is the barrier) and learn whether
            // it did, so that every rank takes the same decision and a rollback finds the same checkpoint.
            string? written = _collective.Rank == 0 ? WriteCheckpoint() : null;
            _flag[0] = written != null ? 1 : 0;
            _collective.AllReduceSum(_flag);
            return _flag[0] > 0 ? written ?? _store.Latest : null;
        }
        return WriteCheckpoint();
    }

    private string? WriteCheckpoint()
    {
        // Adam's step counts live on the device (a captured step advances them): read them here.
        State.DiscriminatorAdamStep = _adamD.Step;
        State.GeneratorAdamStep = _adamG.Step;
        using var counter = new NonFiniteCounter(_backend);
        if (!WganGp.AllFinite(counter, _models.TrainedTensors))
        {
            _observer.Notice($"checkpoint not written: the weights hold non-finite values; the last checkpoint is {_store.Latest ?? "none"}");
            return null;
        }
        var folder = _store.Save(_g, _d, _gEma, _adamG, _adamD, new CheckpointState(CheckpointStore.FormatName, Options, State, DateTimeOffset.UtcNow), Options.KeepCheckpoints);
        _observer.Notice($"checkpoint: {folder}");
        return folder;
    }

    private void Resume(string checkpoint)
    {
        var saved = CheckpointStore.ReadState(checkpoint);
        var diffs = Options.Differences(saved.Options);
        if (diffs.Count > 0)
            throw new ArgumentException($"the checkpoint {checkpoint} was made with other settings:\n  " + string.Join("\n  ", diffs));
        string statePath = Path.Combine(checkpoint, "state.json");
        if (saved.State.PhaseIndex > Schedule.Phases.Count)
            throw new InvalidFileException(statePath, $"field 'State.PhaseIndex' is {saved.State.PhaseIndex}, but the schedule has {Schedule.Phases.Count} phases");
        Rng rng;
        try
        {
            rng = Rng.FromState(saved.State.Rng);
        }
        catch (ArgumentException e)
        {
            throw new InvalidFileException(statePath, $"field 'State.Rng': {e.Message}");
        }
        CheckpointStore.LoadInto(_g, Path.Combine(checkpoint, "G.safetensors"));
        CheckpointStore.LoadInto(_d, Path.Combine(checkpoint, "D.safetensors"));
        CheckpointStore.LoadInto(_gEma, Path.Combine(checkpoint, "G_ema.safetensors"));
        string optim = Path.Combine(checkpoint, "optimizer.safetensors");
        CheckpointStore.LoadMoments(_adamG, _g, optim, "G");
        CheckpointStore.LoadMoments(_adamD, _d, optim, "D");
        State = saved.State;
        _steps?.Invalidate();
        _adamG.Step = State.GeneratorAdamStep;
        _adamD.Step = State.DiscriminatorAdamStep;
        if (State.PhaseIndex < Schedule.Phases.Count)
        {
            SetLearningRates(Schedule.Phases[State.PhaseIndex].Resolution, State.LearningRateFactor);
        }
        _rng = rng;
        _imagesAtLastTick = State.TotalImages;
    }

    /// <summary>Back to the last checkpoint with half the learning rate (after repeated non-finite steps).</summary>
    private void RollBack(string latest)
    {
        float factor = State.LearningRateFactor * 0.5f;
        int rollbacks = State.Rollbacks + 1;
        long skipped = State.SkippedSteps;
        Resume(latest);
        State.LearningRateFactor = factor;
        State.Rollbacks = rollbacks;
        State.SkippedSteps = skipped;
        SetLearningRates(Schedule.Phases[Math.Min(State.PhaseIndex, Schedule.Phases.Count - 1)].Resolution, factor);
        _observer.Notice($"rolled back to {latest} with the learning rate halved (factor {factor:G3})");
    }

    public void Dispose()
    {
        _steps?.Dispose();
        _models.Dispose();
        _sampleLatents.Dispose();
    }
}
