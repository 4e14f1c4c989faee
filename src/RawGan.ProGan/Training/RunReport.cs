using System.Globalization;
using System.Net;
using System.Text;
using System.Text.Json;
using RawGan.Engine;
using RawGan.ProGan.Imaging;
using RawGan.ProGan.IO;

namespace RawGan.ProGan.Training;

/// <summary>
/// The run folder's human side: sample grids (samples/*.png) and report.html, a single page with
/// the SWD at every phase end and the loss curves as inline SVG, the phase boundaries marked, the grids embedded, the configuration and the timings.
/// It needs no network and no other file.
/// </summary>
public sealed class RunReport(string runDirectory, TrainOptions options, string device, string data)
{
    private readonly List<(string name, string file, string caption)> _grids = new();

    public string SamplesDirectory => Path.Combine(runDirectory, "samples");

    /// <summary>Saves a grid of generated images [N, C, r, r], upscaled (nearest) to the final resolution so grids line up.</summary>
    public string SaveGrid(string name, Tensor images, Phase phase, float alpha)
    {
        int n = images.Shape[0], c = images.Shape[1], r = images.Shape[2], final = options.Model.Resolution;
        var host = images.ToArray();
        if (r != final) host = UpscaleNearest(host, n, c, r, final / r);
        var grid = ImageOps.Grid(host, n, c, final, columns: 8);
        Directory.CreateDirectory(SamplesDirectory);
        string file = Path.Combine(SamplesDirectory, name + ".png");
        Png.Save(file, grid);
        string caption = $"{name}: {phase.Describe()}{(phase.FadeIn ? $", alpha {alpha:F2}" : "")}";
        _grids.RemoveAll(g => g.name == name);
        _grids.Add((name, file, caption));
        return file;
    }

    private static float[] UpscaleNearest(float[] src, int n, int c, int r, int factor)
    {
        int R = r * factor;
        var dst = new float[(long)n * c * R * R];
        for (int p = 0; p < n * c; p++)
            for (int y = 0; y < R; y++)
                for (int x = 0; x < R; x++)
                    dst[(long)p * R * R + y * R + x] = src[(long)p * r * r + y / factor * r + x / factor];
        return dst;
    }

    /// <summary>Writes report.html (atomically) and returns its path.</summary>
    public string Write(Trainer trainer, Evaluation.SwdResult? finalSwd)
    {
        var metrics = ReadMetrics(Path.Combine(runDirectory, "metrics.jsonl"));
        var html = new StringBuilder();
        html.Append("<!doctype html><html><head><meta charset=\"utf-8\"><title>RawGan run</title><style>")
            .Append("body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}h1{font-size:1.5em}h2{font-size:1.15em;margin-top:2em}")
            .Append("table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}svg{background:#fafafa;border:1px solid #ddd}")
            .Append("figure{display:inline-block;margin:0 1em 1em 0}figcaption{font-size:.85em;color:#555}img{image-rendering:pixelated;max-width:520px}")
            .Append("</style></head><body>");
        html.Append($"<h1>RawGan run: {Esc(Path.GetFileName(runDirectory))}</h1>");
        var s = trainer.State;
        html.Append("<table>");
        Row(html, "data", data);
        Row(html, "device", device);
        Row(html, "model", $"{options.Model.Resolution}x{options.Model.Resolution}, {options.Model.Channels} channel(s), latent {options.Model.LatentSize}, fmap-base {options.Model.FmapBase}, fmap-max {options.Model.FmapMax}; G {trainer.Generator.ParameterCount:N0} and D {trainer.Discriminator.ParameterCount:N0} parameters");
        Row(html, "schedule", $"{trainer.Schedule.Describe()}; batch {options.DefaultBatch}{(options.BatchByResolution.Count > 0 ? " (" + string.Join(", ", options.BatchByResolution.OrderBy(p => p.Key).Select(p => $"{p.Key}px: {p.Value}")) + ")" : "")}; lr {options.LearningRate}{(options.DiscriminatorLearningRateRatio != 1 ? $", critic {options.DiscriminatorLearningRateRatio}x" : "")}; loss {(options.Loss == GanLoss.Logistic ? $"logistic, R1 gamma {options.R1Gamma}" : "WGAN-GP")}");
        Row(html, "progress", $"{s.TotalImages:N0} images ({s.TotalImages / 1000.0:F1} kimg), phase {Math.Min(s.PhaseIndex + 1, trainer.Schedule.Phases.Count)} of {trainer.Schedule.Phases.Count}, {s.Steps:N0} steps, {s.SkippedSteps} skipped (non-finite), {s.Rollbacks} rollbacks");
        Row(html, "time", $"{TimeSpan.FromSeconds(s.Seconds):hh\\:mm\\:ss}");
        if (s.InitialSwd is double init) Row(html, "SWD, untrained generator", $"{init:F1} (x1e3, mean over levels)");
        if (finalSwd != null)
            Row(html, "SWD, trained EMA generator", $"{finalSwd.Mean:F1} (per level: {string.Join(", ", finalSwd.Levels.Select(l => $"{l.Resolution}px {l.Value:F1}"))})");
        html.Append("</table>");

        var phases = PhaseStarts(trainer.Schedule);
        html.Append("<p>Dashed lines: where each phase starts (its resolution, and \"fade\" for a fade-in).</p>");
        html.Append("<h2>Sliced Wasserstein distance</h2><p>SWD (x1e3, mean over the pyramid levels) of the EMA generator against the data at the end of every phase, ")
            .Append("at that phase's resolution: lower is closer. The points at different resolutions measure different things; the trend within one resolution, and the last point, are what to read.</p>");
        var swd = ReadMetrics(Path.Combine(runDirectory, "swd.jsonl"));
        html.Append(Chart(swd, [("swd", "#b9770e")], phases, dots: true));
        html.Append(options.Loss == GanLoss.Logistic
            ? "<h2>Losses</h2><p>Critic (D) and generator (G) loss per tick: the logistic loss (log 2 = 0.69 per term when the critic cannot tell reals from fakes) with the R1 penalty.</p>"
            : "<h2>Losses</h2><p>Critic (D) and generator (G) loss per tick. A negative critic loss is normal: it estimates minus the Wasserstein distance.</p>");
        html.Append(Chart(metrics, [("loss_d", "#c0392b"), ("loss_g", "#2471a3")], phases));
        html.Append("<h2>Critic scores and gradient penalty</h2>");
        html.Append(Chart(metrics, [("score_real", "#1e8449"), ("score_fake", "#a04000"), ("gradient_penalty", "#7d3c98")], phases));
        html.Append("<h2>Speed</h2>");
        html.Append(Chart(metrics, [("images_per_s", "#117864")], phases));

        html.Append("<h2>Samples (EMA generator, fixed latents)</h2>");
        var phaseGrids = _grids.Where(g => g.name.StartsWith("phase-")).ToList();
        var last = _grids.LastOrDefault();
        if (last.name != null && !phaseGrids.Contains(last)) phaseGrids.Add(last);
        foreach (var (_, file, caption) in phaseGrids)
        {
            if (!File.Exists(file)) continue;
            html.Append($"<figure><img alt=\"{Esc(caption)}\" src=\"data:image/png;base64,{Convert.ToBase64String(File.ReadAllBytes(file))}\"><figcaption>{Esc(caption)}</figcaption></figure>");
        }
        html.Append("<h2>Configuration</h2><pre>").Append(Esc(JsonSerializer.Serialize(options, CheckpointStore.Json))).Append("</pre>");
        html.Append("</body></html>");
        string path = Path.Combine(runDirectory, "report.html");
        AtomicFile.WriteAllText(path, html.ToString());
        return path;
    }

    private static void Row(StringBuilder html, string key, string value) => html.Append($"<tr><th>{Esc(key)}</th><td>{Esc(value)}</td></tr>");

    private static string Esc(string s) => WebUtility.HtmlEncode(s);

    private static List<Dictionary<string, double>> ReadMetrics(string path)
    {
        var rows = new List<Dictionary<string, double>>();
        if (!File.Exists(path)) return rows;
        foreach (var line in File.ReadLines(path))
        {
            try
            {
                using var doc = JsonDocument.Parse(line);
                var row = new Dictionary<string, double>();
                foreach (var p in doc.RootElement.EnumerateObject())
                    if (p.Value.ValueKind == JsonValueKind.Number) row[p.Name] = p.Value.GetDouble();
                rows.Add(row);
            }
            catch (JsonException) { /* a line cut short by a crash: skip it */ }
        }
        return rows;
    }

    /// <summary>Where each phase after the first starts, in kimg, and its short name ("8 fade", "8").</summary>
    private static List<(double kimg, string label)> PhaseStarts(Schedule schedule)
    {
        var starts = new List<(double, string)>();
        long images = 0;
        foreach (var p in schedule.Phases)
        {
            if (p.Index > 0) starts.Add((images / 1000.0, $"{p.Resolution}{(p.FadeIn ? " fade" : "")}"));
            images += p.Images;
        }
        return starts;
    }

    /// <summary>
    /// A line chart of some metrics against kimg, as inline SVG: the legend in a band above the
    /// plot (never over a line), the phase boundaries as dashed verticals named at the bottom.
    /// </summary>
    private static string Chart(List<Dictionary<string, double>> rows, (string key, string color)[] series, List<(double kimg, string label)> phases,
                                bool dots = false)
    {
        const int w = 900, h = 240, left = 48, right = 16, top = 28, bottom = 44;
        var points = series.Select(s => rows.Where(r => r.ContainsKey("kimg") && r.ContainsKey(s.key))
            .Select(r => (x: r["kimg"], y: r[s.key])).ToList()).ToList();
        var all = points.SelectMany(p => p).ToList();
        if (all.Count == 0) return "<p>(no data yet)</p>";
        double x0 = Math.Min(all.Min(p => p.x), phases.Count > 0 ? 0 : double.MaxValue), x1 = Math.Max(all.Max(p => p.x), x0 + 1e-9);
        double y0 = all.Min(p => p.y), y1 = Math.Max(all.Max(p => p.y), y0 + 1e-9);
        string F(double v) => v.ToString("F1", CultureInfo.InvariantCulture);
        string X(double x) => F(left + (x - x0) / (x1 - x0) * (w - left - right));
        string Y(double y) => F(h - bottom + (y0 - y) / (y1 - y0) * (h - top - bottom));
        var svg = new StringBuilder($"<svg width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" xmlns=\"http://www.w3.org/2000/svg\" font-size=\"11\">");
        svg.Append($"<line x1=\"{left}\" y1=\"{h - bottom}\" x2=\"{w - right}\" y2=\"{h - bottom}\" stroke=\"#999\"/><line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{h - bottom}\" stroke=\"#999\"/>");
        if (y0 < 0 && y1 > 0) svg.Append($"<line x1=\"{left}\" y1=\"{Y(0)}\" x2=\"{w - right}\" y2=\"{Y(0)}\" stroke=\"#ccc\" stroke-dasharray=\"4\"/>");
        foreach (var (kimg, label) in phases.Where(p => p.kimg > x0 && p.kimg < x1))
        {
            svg.Append($"<line x1=\"{X(kimg)}\" y1=\"{top}\" x2=\"{X(kimg)}\" y2=\"{h - bottom}\" stroke=\"#bbb\" stroke-dasharray=\"3 3\"/>");
            svg.Append($"<text x=\"{X(kimg)}\" y=\"{h - bottom + 13}\" text-anchor=\"middle\" fill=\"#777\">{Esc(label)}</text>");
        }
        svg.Append($"<text x=\"{left}\" y=\"{h - 6}\">{x0:F1} kimg</text><text x=\"{w - right}\" y=\"{h - 6}\" text-anchor=\"end\">{x1:F1} kimg</text>");
        svg.Append($"<text x=\"{left - 4}\" y=\"{top + 4}\" text-anchor=\"end\">{y1:G3}</text><text x=\"{left - 4}\" y=\"{h - bottom}\" text-anchor=\"end\">{y0:G3}</text>");
        double legendX = left;
        for (int i = 0; i < series.Length; i++)
        {
            if (points[i].Count == 0) continue;
            string line = string.Join(' ', points[i].Select(p => X(p.x) + "," + Y(p.y)));
            svg.Append($"<polyline fill=\"none\" stroke=\"{series[i].color}\" stroke-width=\"1.5\" points=\"{line}\"/>");
            if (dots)
                foreach (var p in points[i]) svg.Append($"<circle cx=\"{X(p.x)}\" cy=\"{Y(p.y)}\" r=\"2.5\" fill=\"{series[i].color}\"/>");
            svg.Append($"<rect x=\"{F(legendX)}\" y=\"9\" width=\"14\" height=\"3\" fill=\"{series[i].color}\"/>");
            svg.Append($"<text x=\"{F(legendX + 18)}\" y=\"14\" fill=\"{series[i].color}\">{Esc(series[i].key)}</text>");
            legendX += 18 + 6.5 * series[i].key.Length + 24;
        }
        return svg.Append("</svg>").ToString();
    }
}
