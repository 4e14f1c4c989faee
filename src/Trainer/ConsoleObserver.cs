using RawGan.ProGan.Training;

namespace RawGan.Trainer;

/// <summary>
/// Shows training progress. On a terminal: a live block of a few lines, redrawn in place (notices
/// scroll above it). Otherwise (a log file, CI): one plain line per tick.
/// </summary>
public sealed class ConsoleObserver : ITrainingObserver
{
    private readonly TextWriter _out;
    private readonly bool _live;
    private int _liveLines;
    private bool _explainedNegativeLoss;

    public ConsoleObserver(TextWriter output, bool live)
    {
        _out = output;
        _live = live;
    }

    /// <summary>RAWGAN_TICK_PAUSE_MS: a pause after each tick line, for the tests that signal a run
    /// at a given tick (a tiny run can otherwise finish before the signal lands). Results do not change.</summary>
    private static readonly int TickPauseMs = int.TryParse(Environment.GetEnvironmentVariable("RAWGAN_TICK_PAUSE_MS"), out int ms) ? Math.Clamp(ms, 0, 10_000) : 0;

    public static ConsoleObserver ForConsole() =>
        new(Console.Out, !Console.IsOutputRedirected && Environment.GetEnvironmentVariable("TERM") is not (null or "dumb"));

    public void Notice(string message)
    {
        ClearLive();
        _out.WriteLine(message);
        _out.Flush();
    }

    public void Tick(TickReport r)
    {
        if (!_explainedNegativeLoss && r.CriticLoss < 0)
        {
            _explainedNegativeLoss = true;
            Notice("note: a negative critic loss is normal for WGAN-GP: it estimates minus the Wasserstein distance between real and generated images.");
        }
        string phase = $"phase {r.Phase.Index + 1}/{r.PhaseCount} {r.Phase.Describe()}";
        string alpha = r.Phase.FadeIn ? $" alpha {r.Alpha:F3}" : "";
        string kimg = $"{r.TotalImages / 1000.0:F1}/{r.TotalScheduleImages / 1000.0:F0} kimg";
        string speed = $"{r.ImagesPerSecond:F1} img/s, {r.SecondsPerKimg:F1} s/kimg";
        string losses = $"loss D {r.CriticLoss:F3} G {r.GeneratorLoss:F3} (real {r.RealScore:F3}, fake {r.FakeScore:F3}, {(r.Logistic ? "r1" : "gp")} {r.Penalty:F4})";
        string time = $"elapsed {Format(r.Elapsed)}, ETA {Format(r.Remaining)}";
        string skipped = r.SkippedSteps > 0 ? $", {r.SkippedSteps} skipped steps" : "";
        if (!_live)
        {
            _out.WriteLine($"tick {r.Tick}: {phase}{alpha} | {kimg} | {speed} | {losses} | {time}{skipped}");
            _out.Flush();
            if (TickPauseMs > 0) Thread.Sleep(TickPauseMs);
            return;
        }
        ClearLive();
        double fraction = (double)r.TotalImages / Math.Max(1, r.TotalScheduleImages);
        int width = 30, filled = (int)Math.Round(Math.Clamp(fraction, 0, 1) * width);
        var lines = new[]
        {
            $"[{new string('#', filled)}{new string('-', width - filled)}] {fraction * 100,5:F1}%  {kimg}",
            $"{phase}{alpha}, batch {r.Batch}",
            $"{speed} | {time}{skipped}",
            losses,
        };
        foreach (var line in lines) _out.WriteLine(line);
        _liveLines = lines.Length;
        _out.Flush();
    }

    private void ClearLive()
    {
        if (!_live || _liveLines == 0) return;
        // Cursor up over the live block, then clear to the end of the screen.
        _out.Write($"\u001b[{_liveLines}A\u001b[0J");
        _liveLines = 0;
    }

    public static string Format(TimeSpan t) =>
        t.TotalHours >= 1 ? $"{(int)t.TotalHours}h{t.Minutes:D2}m" : t.TotalMinutes >= 1 ? $"{t.Minutes}m{t.Seconds:D2}s" : $"{t.TotalSeconds:F0}s";
}
