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
/// resolution (the low resolutions, where a step is cheap, can be given more). Each resolution
/// above 4x4 shows two periods' worth; the paper splits them evenly between its fade-in and its
/// stable period, and a fade share below one half gives the stable period more.
/// </summary>
public sealed class Schedule
{
    /// <summary>The same number of images in every period.</summary>
    public Schedule(int maxLevel, long imagesPerPhase) : this(maxLevel, _ => imagesPerPhase) { }

    /// <summary><paramref name="imagesForResolution"/> gives the images of each period at a resolution (4, 8, ...);
    /// above 4x4, the fade-in takes <paramref name="fadeShare"/> of the resolution's two periods (rounded), the stable period the rest.</summary>
    public Schedule(int maxLevel, Func<int, long> imagesForResolution, double fadeShare = 0.5)
    {
        if (!(fadeShare > 0 && fadeShare < 1)) throw new ArgumentException($"the fade-in's share must be between 0 and 1 (exclusive), got {fadeShare}");
        var phases = new List<Phase>();
        for (int level = 2; level <= maxLevel; level++)
        {
            long images = imagesForResolution(1 << level);
            if (images < 1) throw new ArgumentException($"images per phase at {1 << level}x{1 << level} must be positive, got {images}");
            if (level == 2)
            {
                phases.Add(new Phase(phases.Count, level, false, images));
                continue;
            }
            long fade = Math.Clamp((long)Math.Round(2 * images * fadeShare), 1, 2 * images - 1);
            phases.Add(new Phase(phases.Count, level, true, fade));
            phases.Add(new Phase(phases.Count, level, false, 2 * images - fade));
        }
        Phases = phases;
    }

    public IReadOnlyList<Phase> Phases { get; }

    /// <summary>"7 phases of 6,000 images", or per resolution "7 phases: 4x4 20,000, 8x8 20,000, 16x16 6,000, 32x32 6,000 images each",
    /// or, with an uneven fade share, "7 phases: 4x4 15,000, 8x8 7,500 + 22,500, ... images (fade-in + stable)".</summary>
    public string Describe()
    {
        var byResolution = Phases.GroupBy(p => p.Resolution).Select(g => (Resolution: g.Key, Images: g.Select(p => p.Images).ToArray())).ToList();
        if (byResolution.Any(r => r.Images.Distinct().Count() > 1))
            return $"{Phases.Count} phases: {string.Join(", ", byResolution.Select(r => $"{r.Resolution}x{r.Resolution} {string.Join(" + ", r.Images.Select(n => n.ToString("N0")))}"))} images (fade-in + stable)";
        return byResolution.Select(r => r.Images[0]).Distinct().Count() == 1
            ? $"{Phases.Count} phases of {byResolution[0].Images[0]:N0} images"
            : $"{Phases.Count} phases: {string.Join(", ", byResolution.Select(r => $"{r.Resolution}x{r.Resolution} {r.Images[0]:N0}"))} images each";
    }
    public long TotalImages => Phases.Sum(p => p.Images);

    /// <summary>alpha of the fade-in after <paramref name="imagesInPhase"/> images (1 in a stable phase).</summary>
    public static float Alpha(Phase phase, long imagesInPhase) =>
        phase.FadeIn ? (float)Math.Clamp((double)imagesInPhase / phase.Images, 0, 1) : 1f;
}
