using RawGan.ProGan.Model;

namespace RawGan.ProGan.Training;

/// <summary>
/// The time a run has left, from what each resolution has cost so far. A resolution already
/// trained on costs what it was measured to cost (seconds per image, samples and checkpoints
/// included). One not reached yet is extrapolated from the work of a step, w (multiply-adds per
/// image): once two resolutions are measured, as a fixed cost per image plus a cost per
/// multiply-add, a + b w, fitted through the two largest; while one is, as a power of the work,
/// w^<see cref="PriorExponent"/>. The exponent is below 1 because small maps are dominated by the
/// per-operation overhead, not the arithmetic: on two CPU cores the tiny preset runs 1,500
/// images/s at 4x4 and 90 at 32x32, a 17x slowdown for 79x the work (k = 0.66). Assuming cost in
/// proportion to pixels (4x per doubling) once estimated a 4-minute run at 15.
/// </summary>
public sealed class RemainingTime
{
    /// <summary>The exponent used while one resolution has been measured.</summary>
    public const double PriorExponent = 0.66;

    private readonly ProGanConfig _model;
    private readonly SortedDictionary<int, (double Seconds, long Images)> _measured = new();

    public RemainingTime(ProGanConfig model) => _model = model;

    /// <summary>Adds <paramref name="images"/> shown in <paramref name="seconds"/> at <paramref name="level"/>.</summary>
    public void Record(int level, long images, double seconds)
    {
        if (images <= 0 || !(seconds >= 0) || double.IsInfinity(seconds)) return;
        var (s, n) = _measured.GetValueOrDefault(level);
        _measured[level] = (s + seconds, n + images);
    }

    /// <summary>Seconds per image at <paramref name="level"/>: measured, or extrapolated (0 before any measurement).</summary>
    public double SecondsPerImage(int level)
    {
        if (_measured.TryGetValue(level, out var m)) return m.Seconds / m.Images;
        if (_measured.Count == 0) return 0;
        var levels = _measured.Keys.ToList();
        int top = levels[^1];
        double topCost = SecondsPerImage(top);
        if (levels.Count >= 2)
        {
            int below = levels[^2];
            double perWork = (topCost - SecondsPerImage(below)) / (Work(top) - Work(below));
            if (perWork > 0 && double.IsFinite(perWork))
            {
                double fixedCost = Math.Max(0, topCost - perWork * Work(top));
                return fixedCost + perWork * Work(level);
            }
        }
        return topCost * Math.Pow(Work(level) / Work(top), PriorExponent);
    }

    /// <summary>Seconds left: the rest of <paramref name="current"/> (<paramref name="imagesInPhase"/> shown) and every later phase.</summary>
    public double Seconds(Schedule schedule, Phase current, long imagesInPhase)
    {
        double seconds = 0;
        foreach (var p in schedule.Phases.Skip(current.Index))
            seconds += Math.Max(0, p.Images - (p.Index == current.Index ? imagesInPhase : 0)) * SecondsPerImage(p.Level);
        return seconds;
    }

    /// <summary>The work of one image at <paramref name="level"/>: multiply-adds of every weight the
    /// networks use there, each times the pixels it is applied at.</summary>
    private double Work(int level) => Math.Max(1, _model.MultiplyAddsPerImage(level));
}
