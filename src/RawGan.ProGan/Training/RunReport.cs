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
/// the loss curves and SWD as inline SVG, the grids embedded, the configuration and the timings.
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
        Row(html, "schedule", $"{trainer.Schedule.Phases.Count} phases of {options.ImagesPerPhase:N0} images; batch {options.DefaultBatch}{(options.BatchByResolution.Count > 0 ? " (" + string.Join(", ", options.BatchByResolution.OrderBy(p => p.Key).Select(p => $"{p.Key}px: {p.Value}")) + ")" : "")}; lr {options.LearningRate}");
        Row(html, "progress", $"{s.TotalImages:N0} images ({s.TotalImages / 1000.0:F1} kimg), phase {Math.Min(s.PhaseIndex + 1, trainer.Schedule.Phases.Count)} of {trainer.Schedule.Phases.Count}, {s.Steps:N0} steps, {s.SkippedSteps} skipped (non-finite), {s.Rollbacks} rollbacks");
        Row(html, "time", $"{TimeSpan.FromSeconds(s.Seconds):hh\\:mm\\:ss}");
        if (s.InitialSwd is double init) Row(html, "SWD, untrained generator", $"{init:F1} (x1e3, mean over levels)");
        if (finalSwd != null)
            Row(html, "SWD, trained EMA generator", $"{finalSwd.Mean:F1} (per level: {string.Join(", ", finalSwd.Levels.Select(l => $"{l.Resolution}px {l.Value:F1}"))})");
        html.Append("</table>");

        html.Append("<h2>Losses</h2><p>Critic (D) and generator (G) loss per tick. A negative critic loss is normal: it estimates minus the Wasserstein distance.</p>");
        html.Append(Chart(metrics, [("loss_d", "#c0392b"), ("loss_g", "#2471a3")]));
        html.Append("<h2>Critic scores and gradient penalty</h2>");
        html.Append(Chart(metrics, [("score_real", "#1e8449"), ("score_fake", "#a04000"), ("gradient_penalty", "#7d3c98")]));
        html.Append("<h2>Speed</h2>");
        html.Append(Chart(metrics, [("images_per_s", "#117864")]));

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

    /// <summary>A line chart of some metrics against kimg, as inline SVG.</summary>
    private static string Chart(List<Dictionary<string, double>> rows, (string key, string color)[] series)
    {
        const int w = 900, h = 220, pad = 40;
        var points = series.Select(s => rows.Where(r => r.ContainsKey("kimg") && r.ContainsKey(s.key))
            .Select(r => (x: r["kimg"], y: r[s.key])).ToList()).ToList();
        var all = points.SelectMany(p => p).ToList();
        if (all.Count == 0) return "<p>(no data yet)</p>";
        double x0 = all.Min(p => p.x), x1 = Math.Max(all.Max(p => p.x), x0 + 1e-9);
        double y0 = all.Min(p => p.y), y1 = Math.Max(all.Max(p => p.y), y0 + 1e-9);
        string X(double x) => (pad + (x - x0) / (x1 - x0) * (w - 2 * pad)).ToString("F1", CultureInfo.InvariantCulture);
        string Y(double y) => (h - pad + (y0 - y) / (y1 - y0) * (h - 2 * pad)).ToString("F1", CultureInfo.InvariantCulture);
        var svg = new StringBuilder($"<svg width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" xmlns=\"http://www.w3.org/2000/svg\" font-size=\"11\">");
        svg.Append($"<line x1=\"{pad}\" y1=\"{h - pad}\" x2=\"{w - pad}\" y2=\"{h - pad}\" stroke=\"#999\"/><line x1=\"{pad}\" y1=\"{pad}\" x2=\"{pad}\" y2=\"{h - pad}\" stroke=\"#999\"/>");
        if (y0 < 0 && y1 > 0) svg.Append($"<line x1=\"{pad}\" y1=\"{Y(0)}\" x2=\"{w - pad}\" y2=\"{Y(0)}\" stroke=\"#ccc\" stroke-dasharray=\"4\"/>");
        svg.Append($"<text x=\"{pad}\" y=\"{h - 10}\">{x0:F1} kimg</text><text x=\"{w - pad - 60}\" y=\"{h - 10}\">{x1:F1} kimg</text>");
        svg.Append($"<text x=\"2\" y=\"{pad}\">{y1:G3}</text><text x=\"2\" y=\"{h - pad}\">{y0:G3}</text>");
        for (int i = 0; i < series.Length; i++)
        {
            if (points[i].Count == 0) continue;
            svg.Append($"<polyline fill=\"none\" stroke=\"{series[i].color}\" stroke-width=\"1.5\" points=\"{string.Join(' ', points[i].Select(p => X(p.x) + "," + Y(p.y)))}\"/>");
            svg.Append($"<text x=\"{w - pad - 150}\" y=\"{pad + 14 * i}\" fill=\"{series[i].color}\">{Esc(series[i].key)}</text>");
        }
        return svg.Append("</svg>").ToString();
    }
}
