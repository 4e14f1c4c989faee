namespace RawGan.ProGan.Training;

/// <summary>Where a run is: saved in every checkpoint's state.json, so a resumed run continues
/// exactly (mid-phase, mid-fade-in) where it stopped.</summary>
public sealed record TrainerState
{
    public int PhaseIndex { get; set; }
    public long ImagesInPhase { get; set; }
    public long TotalImages { get; set; }
    public long Steps { get; set; }
    public int GeneratorAdamStep { get; set; }
    public int DiscriminatorAdamStep { get; set; }
    /// <summary>A learning-rate factor, lowered after a rollback from non-finite steps.</summary>
    public float LearningRateFactor { get; set; } = 1f;
    public ulong[] Rng { get; set; } = [];
    public long SkippedSteps { get; set; }
    public int Rollbacks { get; set; }
    public double Seconds { get; set; }
    public long NextTickImages { get; set; }
    public long Ticks { get; set; }
    /// <summary>What the data were when the run started (<see cref="Data.CachedImages.Fingerprint"/>):
    /// a resumed run refuses data that changed since. Null in checkpoints from before it was kept.</summary>
    public string? DataFingerprint { get; set; }
    /// <summary>CPU threads of the last run that wrote this state: the CPU's results are bit for bit
    /// those of an uninterrupted run only at the same thread count (sums are split by thread).</summary>
    public int? Threads { get; set; }
    /// <summary>SWD (x1e3, mean over levels) of the untrained EMA generator, for the report.</summary>
    public double? InitialSwd { get; set; }
}
