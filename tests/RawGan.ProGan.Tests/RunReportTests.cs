using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;
using System.Xml.Linq;
using RawGan.Engine.Backends.Cpu;
using RawGan.ProGan.Model;
using RawGan.ProGan.Training;

namespace RawGan.ProGan.Tests;

/// <summary>A short run through 4x4 and 8x8 (three phases), made once for the tests that read its
/// swd.jsonl and report.html.</summary>
public sealed class ShortReportedRun : IDisposable
{
    private readonly TempDirectory _dir = new();

    public ShortReportedRun()
    {
        var options = new TrainOptions
        {
            Model = ProGanConfig.Tiny(8) with { LatentSize = 16, FmapBase = 32, FmapMax = 16 },
            ImagesPerPhase = 256,
            ImagesPerPhaseByResolution = new() { [4] = 384 },
            DefaultBatch = 16,
            Seed = 3,
            TickImages = 128,
            CheckpointTicks = 1000,
            SwdImages = 64,
        };
        Trainer = new Trainer(options, new CpuBackend(), Data, _dir.Path, new SilentObserver());
        var report = new RunReport(_dir.Path, options, "cpu", "shapes");
        Trainer.OnSamples = (name, images, phase, alpha) => report.SaveGrid(name, images, phase, alpha);
        Assert.Equal(StopReason.Finished, Trainer.Run());
        Html = File.ReadAllText(report.Write(Trainer, null));
    }

    public InMemoryShapes Data { get; } = new(128, 8);
    public Trainer Trainer { get; }
    public string Html { get; }
    public string Folder => _dir.Path;

    public void Dispose()
    {
        Trainer.Dispose();
        _dir.Dispose();
    }
}

public sealed class RunReportTests(ShortReportedRun run) : IClassFixture<ShortReportedRun>
{
    private readonly Trainer _trainer = run.Trainer;
    private readonly InMemoryShapes _data = run.Data;
    private readonly string _html = run.Html;

    [Fact]
    public void Every_phase_end_has_its_swd_at_that_phases_resolution()
    {
        var lines = File.ReadAllLines(Path.Combine(run.Folder, "swd.jsonl")).Select(l => JsonDocument.Parse(l).RootElement).ToList();
        Assert.Equal([4, 8, 8], lines.Select(l => l.GetProperty("resolution").GetInt32()));
        Assert.Equal([0.384, 0.640, 0.896], lines.Select(l => l.GetProperty("kimg").GetDouble()));
        Assert.All(lines, l => Assert.True(l.GetProperty("swd").GetDouble() > 0));
        // The last phase ends with the final generator: the same measurement made afresh agrees.
        var final = Evaluation.Swd(_trainer.GeneratorEma, _data, 64, 3, 3);
        Assert.Equal(final.Mean, lines[^1].GetProperty("swd").GetDouble(), 9);
        Assert.Equal(final.Levels.Single().Value, lines[^1].GetProperty("swd_levels").GetProperty("8").GetDouble(), 9);
    }

    [Fact]
    public void Every_chart_marks_the_phase_starts_and_keeps_its_legend_above_the_lines()
    {
        var charts = Regex.Matches(_html, "<svg.*?</svg>", RegexOptions.Singleline).Select(m => XElement.Parse(m.Value)).ToList();
        Assert.Equal(4, charts.Count);   // SWD, losses, scores and penalty, speed
        XNamespace ns = "http://www.w3.org/2000/svg";
        foreach (var chart in charts)
        {
            // Phases start at 0.384 kimg (8x8 fade-in) and 0.640 (8x8 stable); the x axis runs from 0 to 0.896.
            var dashed = chart.Elements(ns + "line").Where(l => (string?)l.Attribute("stroke-dasharray") == "3 3").ToList();
            Assert.Equal(2, dashed.Count);
            Assert.Equal(["8 fade", "8"], chart.Elements(ns + "text").Where(t => (string?)t.Attribute("text-anchor") == "middle").Select(t => t.Value));
            double Left(XElement l) => double.Parse((string)l.Attribute("x1")!, CultureInfo.InvariantCulture);
            Assert.Equal(48 + 0.384 / 0.896 * (900 - 48 - 16), Left(dashed[0]), 0);
            Assert.Equal(48 + 0.640 / 0.896 * (900 - 48 - 16), Left(dashed[1]), 0);

            double lowestLegend = chart.Elements(ns + "rect").Select(r => double.Parse((string)r.Attribute("y")!, CultureInfo.InvariantCulture) + 3).Max();
            var ys = chart.Elements(ns + "polyline").SelectMany(p => ((string)p.Attribute("points")!).Split(' '))
                .Select(xy => double.Parse(xy.Split(',')[1], CultureInfo.InvariantCulture)).ToList();
            Assert.NotEmpty(ys);
            Assert.True(ys.Min() > lowestLegend + 4, $"a line reaches y {ys.Min()}, into the legend band (down to {lowestLegend})");
        }
        // The SWD chart has a point per phase end.
        Assert.Equal(3, charts[0].Elements(ns + "circle").Count());
    }
}
