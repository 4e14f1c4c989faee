namespace RawGan.ProGan.Training;

/// <summary>One period of progressive growing: stable at a resolution, or fading it in.</summary>
public sealed record Phase(int Index, int Level, bool FadeIn, long Images)
{
    public int Resolution => 1 << Level;
    public string Describe() => $"{(FadeIn ? "fade-in" : "stable")} {Resolution}x{Resolution}";
}

/// <summary>
/// ProGAN's schedule (section 3), counted in real images shown to the critic: stable at 4x4, then
/// for each next resolution a fade-in (alpha rising linearly from 0 to 1) and a stable period.
/// The official code shows 600k images per period (the paper 800k); the images per period scale
/// that for small data or a CPU, keeping the shape of the schedule. They may differ per
/// resolution: a resolution's fade-in and its stable period show the same number, and the low
/// resolutions, where a step is cheap, can be given more.
/// </summary>
public sealed class Schedule
{
    /// <summary>The same number of images in every period.</summary>
    public Schedule(int maxLevel, long imagesPerPhase) : this(maxLevel, _ => imagesPerPhase) { }

    /// <summary><paramref name="imagesForResolution"/> gives the images of each period at a resolution (4, 8, ...).</summary>
    public Schedule(int maxLevel, Func<int, long> imagesForResolution)
    {
        var phases = new List<Phase>();
        for (int level = 2; level <= maxLevel; level++)
        {
            long images = imagesForResolution(1 << level);
            if (images < 1) throw new ArgumentException($"images per phase at {1 << level}x{1 << level} must be positive, got {images}");
            if (level > 2) phases.Add(new Phase(phases.Count, level, true, images));
            phases.Add(new Phase(phases.Count, level, false, images));
        }
        Phases = phases;
    }

    public IReadOnlyList<Phase> Phases { get; }

    /// <summary>"7 phases of 6,000 images", or per resolution "7 phases: 4x4 20,000, 8x8 20,000, 16x16 6,000, 32x32 6,000 images each".</summary>
    public string Describe()
    {
        var byResolution = Phases.GroupBy(p => p.Resolution).Select(g => (Resolution: g.Key, g.First().Images)).ToList();
        return byResolution.Select(r => r.Images).Distinct().Count() == 1
            ? $"{Phases.Count} phases of {byResolution[0].Images:N0} images"
            : $"{Phases.Count} phases: {string.Join(", ", byResolution.Select(r => $"{r.Resolution}x{r.Resolution} {r.Images:N0}"))} images each";
    }
    public long TotalImages => Phases.Sum(p => p.Images);

    /// <summary>alpha of the fade-in after <paramref name="imagesInPhase"/> images (1 in a stable phase).</summary>
    public static float Alpha(Phase phase, long imagesInPhase) =>
        phase.FadeIn ? (float)Math.Clamp((double)imagesInPhase / phase.Images, 0, 1) : 1f;
}
