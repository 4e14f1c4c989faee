using RawGan.Engine.Optim;
using RawGan.ProGan.Model;

namespace RawGan.ProGan.Training;

/// <summary>What to do when a step's losses or gradients are not finite, several times in a row.</summary>
public enum NonFinitePolicy
{
    /// <summary>Reload the last checkpoint, halve the learning rate, and go on.</summary>
    Rollback,
    /// <summary>Write nothing and stop with a clear message.</summary>
    Stop,
}

/// <summary>
/// Marks an option newer than the checkpoint format: checkpoints written before it existed lack
/// the field, and read as its default, which is what those runs trained with (the paper's equal
/// learning rates and fade-in periods, WGAN-GP). A field present but null is still refused.
/// </summary>
[AttributeUsage(AttributeTargets.Property)]
public sealed class AbsentInOlderCheckpointsAttribute : Attribute;

/// <summary>Everything that decides a training run. Saved in every checkpoint; a resumed run must match it.</summary>
public sealed record TrainOptions
{
    public required ProGanConfig Model { get; init; }
    /// <summary>"shapes", "fashion-mnist", "mnist", or a folder of images.</summary>
    public string Data { get; init; } = "shapes";
    /// <summary>How many images the built-in shapes data set renders (when <see cref="Data"/> is "shapes").</summary>
    public int ShapesCount { get; init; } = global::RawGan.ProGan.Data.TrainingData.DefaultShapesCount;
    /// <summary>Real images shown per fade-in and per stable phase (official: 600k).</summary>
    public long ImagesPerPhase { get; init; } = 600_000;
    /// <summary>Images per period at the resolutions listed (their fade-in and stable period
    /// alike); the others use <see cref="ImagesPerPhase"/>. Null in checkpoints from before it existed.</summary>
    public Dictionary<int, long>? ImagesPerPhaseByResolution { get; init; }
    /// <summary>Minibatch per resolution; resolutions not listed use <see cref="DefaultBatch"/>.</summary>
    public Dictionary<int, int> BatchByResolution { get; init; } = new();
    public int DefaultBatch { get; init; } = 16;
    /// <summary>Adam learning rate per resolution (official: 0.001, higher above 128px in larger configs).</summary>
    public Dictionary<int, float> LearningRateByResolution { get; init; } = new();
    public float LearningRate { get; init; } = 0.001f;
    /// <summary>The critic's learning rate as a multiple of the generator's (1: the paper's equal
    /// rates; above 1 a faster critic, as in the two time-scale update rule of Heusel et al. 2017).</summary>
    [AbsentInOlderCheckpoints]
    public float DiscriminatorLearningRateRatio { get; init; } = 1f;
    /// <summary>The fade-in's share of the images at each resolution above 4x4, which has two periods'
    /// worth (2 x <see cref="ImagesFor"/>): 0.5, the paper's, splits them evenly.</summary>
    [AbsentInOlderCheckpoints]
    public double FadeShare { get; init; } = 0.5;
    /// <summary>
    /// Half-life of the generator's moving average, in real images. The official code uses
    /// beta = 0.999 per step, which at batch 16 is a half-life of about 11k images over a run of
    /// 12M; 0 (the default) scales that with the schedule: ImagesPerPhase / 60, i.e. 10k images for
    /// the official 600k per phase, so that a short run's average follows its generator the same way.
    /// </summary>
    public double EmaHalfLifeImages { get; init; }

    /// <summary>The EMA's half-life in images after applying the default.</summary>
    [System.Text.Json.Serialization.JsonIgnore] public double EffectiveEmaHalfLife => EmaHalfLifeImages > 0 ? EmaHalfLifeImages : ImagesPerPhase / 60.0;

    /// <summary>beta of Gs = G + beta (Gs - G) for a step of <paramref name="batch"/> images.</summary>
    public float EmaBeta(int batch) => (float)Math.Pow(0.5, batch / Math.Max(EffectiveEmaHalfLife, 1e-9));
    public bool Mirror { get; init; }
    /// <summary>The loss the steps minimize (WGAN-GP, the paper's, unless asked).</summary>
    [AbsentInOlderCheckpoints]
    public GanLoss Loss { get; init; } = GanLoss.WganGp;
    /// <summary>With <see cref="GanLoss.Logistic"/>: the R1 penalty's gamma (gamma / 2 ||grad D(real)||^2).</summary>
    [AbsentInOlderCheckpoints]
    public float R1Gamma { get; init; } = 1f;

    [System.Text.Json.Serialization.JsonIgnore] public GanObjective Objective => new(Loss, R1Gamma);
    public ulong Seed { get; init; } = 1;
    /// <summary>Progress, metrics and a sample grid every this many real images.</summary>
    public long TickImages { get; init; } = 4_000;
    /// <summary>A checkpoint every this many ticks (and at every phase end and on stop).</summary>
    public int CheckpointTicks { get; init; } = 5;
    public int KeepCheckpoints { get; init; } = 3;
    /// <summary>Non-finite steps in a row that trigger <see cref="OnNonFinite"/>.</summary>
    public int MaxNonFiniteInARow { get; init; } = 10;
    /// <summary>Rollbacks (each halving the learning rate) before the run gives up and stops.</summary>
    public int MaxRollbacks { get; init; } = 5;
    public NonFinitePolicy OnNonFinite { get; init; } = NonFinitePolicy.Rollback;
    /// <summary>Images per side for the sliced Wasserstein distance at the end of training (0: skip).</summary>
    public int SwdImages { get; init; } = 2048;

    public long ImagesFor(int resolution) =>
        ImagesPerPhaseByResolution != null && ImagesPerPhaseByResolution.TryGetValue(resolution, out var n) ? n : ImagesPerPhase;
    public int BatchFor(int resolution) => BatchByResolution.TryGetValue(resolution, out var b) ? b : DefaultBatch;
    public float LearningRateFor(int resolution) => LearningRateByResolution.TryGetValue(resolution, out var lr) ? lr : LearningRate;
    /// <summary>The generator's and the critic's learning rates at <paramref name="resolution"/>, times <paramref name="factor"/> (the rollbacks' halvings).</summary>
    public (float Generator, float Discriminator) LearningRatesFor(int resolution, float factor = 1f)
    {
        float g = LearningRateFor(resolution) * factor;
        return (g, g * DiscriminatorLearningRateRatio);
    }

    /// <summary>Throws <see cref="ArgumentException"/> naming the first impossible value.</summary>
    public TrainOptions Validate()
    {
        Model.Validate();
        if (ImagesPerPhase < 1) throw new ArgumentException($"images per phase must be positive, got {ImagesPerPhase}");
        foreach (var (r, n) in ImagesPerPhaseByResolution ?? [])
            if (n < 1) throw new ArgumentException($"images per phase at {r}x{r} must be positive, got {n}");
        for (int r = 4; r <= Model.Resolution; r *= 2)
        {
            int b = BatchFor(r);
            int g = Math.Min(Model.MinibatchGroupSize, b);
            if (b < 1 || b % g != 0)
                throw new ArgumentException($"batch {b} at {r}x{r} must be a positive multiple of the minibatch stddev group size {g}");
            long largest = LargestTensor(r);
            if (largest > int.MaxValue)
                throw new ArgumentException($"batch {b} at {r}x{r} makes tensors of {largest:N0} values, more than a tensor holds ({int.MaxValue:N0}); lower --batch");
        }
        if (!(LearningRate > 0 && float.IsFinite(LearningRate)) || LearningRateByResolution.Values.Any(v => !(v > 0 && float.IsFinite(v))))
            throw new ArgumentException("learning rates must be positive finite numbers");
        if (!(DiscriminatorLearningRateRatio > 0 && float.IsFinite(DiscriminatorLearningRateRatio)))
            throw new ArgumentException($"the critic's learning rate ratio must be a positive finite number, got {DiscriminatorLearningRateRatio}");
        if (!(FadeShare > 0 && FadeShare < 1)) throw new ArgumentException($"the fade-in's share of a resolution's images must be between 0 and 1 (exclusive), got {FadeShare}");
        if (ShapesCount < 1) throw new ArgumentException($"the shapes data set needs at least one image, got {ShapesCount}");
        if (!(R1Gamma >= 0 && float.IsFinite(R1Gamma))) throw new ArgumentException($"the R1 gamma must be a finite number of at least 0, got {R1Gamma}");
        if (EmaHalfLifeImages < 0) throw new ArgumentException($"the EMA half-life must not be negative, got {EmaHalfLifeImages}");
        if (TickImages < 1) throw new ArgumentException($"tick must be at least one image, got {TickImages}");
        if (CheckpointTicks < 1 || KeepCheckpoints < 1) throw new ArgumentException("checkpoint interval and count must be at least 1");
        return this;
    }

    /// <summary>Values in the largest tensor a step at <paramref name="resolution"/> makes (latents,
    /// the dense layer's output, a convolution's output with the minibatch stddev channel, the images).</summary>
    public long LargestTensor(int resolution)
    {
        long batch = BatchFor(resolution), largest = 0;
        var m = Model;
        largest = Math.Max(largest, ProGanConfig.Mul(batch, m.LatentSize));
        largest = Math.Max(largest, ProGanConfig.Mul(batch, m.Nf(1), 16));
        for (int level = 2; (1 << level) <= resolution; level++)
        {
            long pixels = 1L << (2 * level);
            largest = Math.Max(largest, ProGanConfig.Mul(batch, m.Nf(level - 1) + 1L, pixels));
            largest = Math.Max(largest, ProGanConfig.Mul(batch, m.Channels, pixels));
        }
        return largest;
    }

    /// <summary>
    /// A lower bound on the bytes one training step at <paramref name="resolution"/> holds in
    /// activations: each level's two convolution outputs in G and in D for every image of the batch,
    /// eight times over (each output is kept with its activation and pixel norm for the backward
    /// pass, D runs on reals, fakes and their mixture, and the penalty's double backward keeps the
    /// mixture's pass). It is what the peak cannot be below; <see cref="MemoryPlan"/> scales it to
    /// the measured peak.
    /// </summary>
    public long StepActivationBytes(int resolution)
    {
        long perImage = 0;
        for (int level = 2; (1 << level) <= resolution; level++)
            perImage = Add(perImage, ProGanConfig.Mul(Model.Nf(level - 1), 1L << (2 * level), 2 * 2));
        return ProGanConfig.Mul(BatchFor(resolution), perImage, sizeof(float), 8);
    }

    /// <summary>
    /// The peak of a step's activations, as a multiple of <see cref="StepActivationBytes"/>:
    /// measured with the CPU backend's allocator (bytes in use at the peak, less the weights), it
    /// was 2.3 to 2.8 times that bound for the tiny and small presets from 8x8 to 64x64 and batches
    /// of 8 to 64 while the generator's layers kept their pre-norm activations; since they keep only
    /// their output and one factor per pixel (<c>Ops.Conv2dBiasLeakyReluPixelNorm</c>), the measured
    /// peak is 0.66 to 0.87 of the plan at 2.5 (`MemoryPlanTests` holds the estimate to the measurement).
    /// </summary>
    public const double ActivationPeakFactor = 2.5;

    /// <summary>The memory training needs at its peak, estimated before anything is made: the
    /// weights, moments and gradients, and <see cref="ActivationPeakFactor"/> times the activation
    /// bound of the most demanding phase, which is returned with it. The same bytes live on a GPU
    /// when training runs there (the host then holds the weights' checkpoint copy).</summary>
    public (long Bytes, long WeightBytes, long ActivationBytes, int Resolution) MemoryPlan()
    {
        int worst = 4;
        for (int r = 4; r <= Model.Resolution; r *= 2)
            if (StepActivationBytes(r) >= StepActivationBytes(worst)) worst = r;
        long weights = Model.TrainingWeightBytes, bound = StepActivationBytes(worst);
        long activations = bound > long.MaxValue / 3 ? long.MaxValue : (long)(bound * ActivationPeakFactor);
        return (Add(weights, activations), weights, activations, worst);
    }

    private static long Add(long a, long b) => a > long.MaxValue - b ? long.MaxValue : a + b;

    /// <summary>The differences that make a checkpoint of <paramref name="other"/> unusable for this run, one per line.</summary>
    public IReadOnlyList<string> Differences(TrainOptions other)
    {
        var diffs = new List<string>();
        void Check<T>(string name, T mine, T theirs)
        {
            if (!EqualityComparer<T>.Default.Equals(mine, theirs)) diffs.Add($"{name}: checkpoint has {theirs}, this run asks for {mine}");
        }
        Check("resolution", Model.Resolution, other.Model.Resolution);
        Check("channels", Model.Channels, other.Model.Channels);
        Check("latent size", Model.LatentSize, other.Model.LatentSize);
        Check("fmap-base", Model.FmapBase, other.Model.FmapBase);
        Check("fmap-max", Model.FmapMax, other.Model.FmapMax);
        Check("minibatch group size", Model.MinibatchGroupSize, other.Model.MinibatchGroupSize);
        Check("data", Data, other.Data);
        if (Data == "shapes") Check("shapes count", ShapesCount, other.ShapesCount);
        Check("images per phase", ImagesPerPhase, other.ImagesPerPhase);
        Check("images per phase per resolution", Format(ImagesPerPhaseByResolution ?? []), Format(other.ImagesPerPhaseByResolution ?? []));
        Check("default batch", DefaultBatch, other.DefaultBatch);
        Check("batch per resolution", Format(BatchByResolution), Format(other.BatchByResolution));
        Check("learning rate", LearningRate, other.LearningRate);
        Check("learning rate per resolution", Format(LearningRateByResolution), Format(other.LearningRateByResolution));
        Check("critic learning rate ratio", DiscriminatorLearningRateRatio, other.DiscriminatorLearningRateRatio);
        Check("fade-in share", FadeShare, other.FadeShare);
        Check("mirror", Mirror, other.Mirror);
        Check("loss", Loss, other.Loss);
        if (Loss == GanLoss.Logistic) Check("R1 gamma", R1Gamma, other.R1Gamma);
        Check("EMA half-life", EmaHalfLifeImages, other.EmaHalfLifeImages);
        Check("seed", Seed, other.Seed);
        return diffs;
    }

    private static string Format<TV>(Dictionary<int, TV> d) => string.Join(",", d.OrderBy(p => p.Key).Select(p => $"{p.Key}:{p.Value}"));
}
