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
///
/// The first tick of a phase also carries what the phase's start costs once: the previous phase's
/// SWD, checkpoint and sample grid, and the new shapes' first steps (methods measured, code
/// compiled). Counted per image, that made the 4x4 stage, where an image costs least, look 1.7x
/// dearer than it ran, and every estimate after it with it. So a level's cost per image comes from
/// its other ticks once it has any, and the first ticks' excess over that is a cost per phase,
/// added once for each phase still to start.
/// </summary>
public sealed class RemainingTime
{
    /// <summary>The exponent used while one resolution has been measured.</summary>
    public const double PriorExponent = 0.66;

    private readonly ProGanConfig _model;
    private readonly SortedDictionary<int, (double Seconds, long Images)> _measured = new();   // ticks after a phase's first
    private readonly SortedDictionary<int, (double Seconds, long Images, int Ticks)> _firstTicks = new();

    public RemainingTime(ProGanConfig model) => _model = model;

    /// <summary>Adds <paramref name="images"/> shown in <paramref name="seconds"/> at <paramref name="level"/>;
    /// <paramref name="startsPhase"/>: the tick in which a phase began (see the class's remarks).</summary>
    public void Record(int level, long images, double seconds, bool startsPhase = false)
    {
        if (images <= 0 || !(seconds >= 0) || double.IsInfinity(seconds)) return;
        if (startsPhase)
        {
            var (fs, fn, ft) = _firstTicks.GetValueOrDefault(level);
            _firstTicks[level] = (fs + seconds, fn + images, ft + 1);
            return;
        }
        var (s, n) = _measured.GetValueOrDefault(level);
        _measured[level] = (s + seconds, n + images);
    }

    /// <summary>What starting a phase costs beyond its images, from the first ticks of levels whose
    /// other ticks are measured (0 while none are).</summary>
    public double SecondsPerPhase
    {
        get
        {
            double excess = 0;
            int ticks = 0;
            foreach (var (level, first) in _firstTicks)
            {
                if (!_measured.TryGetValue(level, out var steady)) continue;
                excess += Math.Max(0, first.Seconds - first.Images * (steady.Seconds / steady.Images));
                ticks += first.Ticks;
            }
            return ticks == 0 ? 0 : excess / ticks;
        }
    }

    /// <summary>Seconds per image at <paramref name="level"/>: measured, or extrapolated from the
    /// levels measured (0 before any measurement). Measured means from the ticks after a phase's
    /// first; only while no level has such ticks do the first ticks stand in.</summary>
    public double SecondsPerImage(int level) => SecondsPerImage(level, Rates());

    /// <summary>Seconds left: the rest of <paramref name="current"/> (<paramref name="imagesInPhase"/> shown) and every later phase,
    /// each later one with <see cref="SecondsPerPhase"/>.</summary>
    public double Seconds(Schedule schedule, Phase current, long imagesInPhase)
    {
        var rates = Rates();
        double seconds = 0, perPhase = SecondsPerPhase;
        foreach (var p in schedule.Phases.Skip(current.Index))
            seconds += Math.Max(0, p.Images - (p.Index == current.Index ? imagesInPhase : 0)) * SecondsPerImage(p.Level, rates) + (p.Index == current.Index ? 0 : perPhase);
        return seconds;
    }

    /// <summary>Seconds per image of each level measured, lowest level first.</summary>
    private SortedDictionary<int, double> Rates() => _measured.Count > 0
        ? new(_measured.ToDictionary(e => e.Key, e => e.Value.Seconds / e.Value.Images))
        : new(_firstTicks.ToDictionary(e => e.Key, e => e.Value.Seconds / e.Value.Images));

    private double SecondsPerImage(int level, SortedDictionary<int, double> rates)
    {
        if (rates.TryGetValue(level, out double measured)) return measured;
        if (rates.Count == 0) return 0;
        var levels = rates.Keys.ToList();
        int top = levels[^1];
        double topCost = rates[top];
        if (levels.Count >= 2)
        {
            int below = levels[^2];
            double perWork = (topCost - rates[below]) / (Work(top) - Work(below));
            if (perWork > 0 && double.IsFinite(perWork))
            {
                double fixedCost = Math.Max(0, topCost - perWork * Work(top));
                return fixedCost + perWork * Work(level);
            }
        }
        return topCost * Math.Pow(Work(level) / Work(top), PriorExponent);
    }

    /// <summary>The work of one image at <paramref name="level"/>: multiply-adds of every weight the
    /// networks use there, each times the pixels it is applied at.</summary>
    private double Work(int level) => Math.Max(1, _model.MultiplyAddsPerImage(level));
}
