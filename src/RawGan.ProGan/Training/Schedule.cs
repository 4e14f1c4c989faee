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
/// The official code shows 600k images per period (the paper 800k); <see cref="ImagesPerPhase"/>
/// scales that for small data or a CPU, keeping the shape of the schedule.
/// </summary>
public sealed class Schedule
{
    public Schedule(int maxLevel, long imagesPerPhase)
    {
        if (imagesPerPhase < 1) throw new ArgumentException($"images per phase must be positive, got {imagesPerPhase}");
        ImagesPerPhase = imagesPerPhase;
        var phases = new List<Phase> { new(0, 2, false, imagesPerPhase) };
        for (int level = 3; level <= maxLevel; level++)
        {
            phases.Add(new Phase(phases.Count, level, true, imagesPerPhase));
            phases.Add(new Phase(phases.Count, level, false, imagesPerPhase));
        }
        Phases = phases;
    }

    public long ImagesPerPhase { get; }
    public IReadOnlyList<Phase> Phases { get; }
    public long TotalImages => Phases.Sum(p => p.Images);

    /// <summary>alpha of the fade-in after <paramref name="imagesInPhase"/> images (1 in a stable phase).</summary>
    public static float Alpha(Phase phase, long imagesInPhase) =>
        phase.FadeIn ? (float)Math.Clamp((double)imagesInPhase / phase.Images, 0, 1) : 1f;
}
