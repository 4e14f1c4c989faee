using System.CommandLine;
using RawGan.Engine;
using RawGan.Engine.Autograd;
using RawGan.Engine.Backends;
using RawGan.ProGan.Checkpoints;
using RawGan.ProGan.Data;
using RawGan.ProGan.Imaging;
using RawGan.ProGan.Metrics;
using RawGan.ProGan.Model;
using RawGan.ProGan.Training;

namespace RawGan.Trainer;

/// <summary>Loading the EMA generator of a checkpoint (what every command after training uses).</summary>
internal static class Checkpoint
{
    public static readonly Option<string> Path = new("--checkpoint", "-c") { Description = "a run folder (its newest checkpoint) or a checkpoint folder", Required = true };

    /// <summary>
    /// The EMA generator of a checkpoint folder, or of a run folder's newest checkpoint. The
    /// checkpoint is pinned (state.json and G_ema.safetensors are opened before either is read), and
    /// if a run that is still training prunes it before that, the newest one is taken again.
    /// </summary>
    public static (Generator g, CheckpointState state, string folder) LoadGenerator(string path, IBackend backend)
    {
        if (!File.Exists(System.IO.Path.Combine(path, "state.json")) && !Directory.Exists(path))
            throw new UserError($"'{path}' is not a run folder or a checkpoint folder");
        var (state, weights, folder) = File.Exists(System.IO.Path.Combine(path, "state.json"))
            ? Pinned(System.IO.Path.GetFullPath(path))
            : new CheckpointStore(path).LoadNewest(Pinned);
        var model = state.Options.Model;
        long needed = model.GeneratorWeightBytes, available = SystemMemory.AvailableBytes;
        if (needed > available)
            throw new UserError($"{System.IO.Path.Combine(folder, "state.json")}: the generator it describes ({model.ParameterCount("G"):N0} parameters) needs about {SystemMemory.Format(needed)}; {SystemMemory.Format(available)} is available");
        var g = new Generator(backend, model, new Rng(0));
        try
        {
            CheckpointStore.LoadInto(g, weights, System.IO.Path.Combine(folder, "G_ema.safetensors"));
        }
        catch
        {
            g.Dispose();
            throw;
        }
        return (g, state, folder);
    }

    private static (CheckpointState, SafeTensorsContent, string) Pinned(string folder)
    {
        var (state, weights) = CheckpointStore.ReadPinned(folder, "G_ema.safetensors");
        return (state, weights, folder);
    }

    /// <summary>How many normal draws a coordinate gets before it is drawn from the truncated
    /// distribution directly: bounded work whatever psi is.</summary>
    private const int NormalTries = 16;

    /// <summary>Latents N(0, I); with a truncation psi, coordinates beyond +-psi are redrawn (the
    /// truncation trick: fewer outliers, less variety). ProGAN pixel-normalizes z, so only the
    /// direction of z matters and scaling it would do nothing. A coordinate is redrawn at most
    /// <see cref="NormalTries"/> times; after that (only likely for psi well below 1) it is drawn
    /// from the normal distribution truncated to [-psi, psi] by rejection from the uniform one,
    /// which accepts at least exp(-psi^2 / 2) of its draws: the result has the same distribution,
    /// and even psi = 1e-9 takes no longer than psi = 1.</summary>
    public static float[] Latents(int count, int size, Rng rng, double? psi)
    {
        var z = new float[count * size];
        rng.FillNormal(z);
        if (psi is double p)
        {
            if (!(p > 0) || double.IsInfinity(p)) throw new UserError($"--truncation must be a positive number, got {p}");
            var one = new float[1];
            for (int i = 0; i < z.Length; i++)
            {
                int tries = 0;
                while (Math.Abs(z[i]) > p && tries < NormalTries) { rng.FillNormal(one); z[i] = one[0]; tries++; }
                if (Math.Abs(z[i]) <= p) continue;
                double bound = Math.Min(p, 8);   // beyond 8 the normal density is below 1e-14: nothing is cut off
                for (int attempt = 0; ; attempt++)
                {
                    double x = (2 * rng.NextDouble() - 1) * bound;
                    if (attempt >= 1000 || rng.NextDouble() <= Math.Exp(-x * x / 2)) { z[i] = (float)x; break; }
                }
            }
        }
        return z;
    }
}

/// <summary>`generate`: images from a checkpoint's EMA generator.</summary>
public static class GenerateCommand
{
    private static readonly Option<int> Count = new("--count", "-n") { Description = "how many images", DefaultValueFactory = _ => 32 };
    /// <summary>Generated images are held in memory before they are written: keep that bounded.</summary>
    private const int MaxCount = 100_000;
    private static readonly Option<ulong> Seed = new("--seed") { Description = "seed of the latents", DefaultValueFactory = _ => 0UL };
    private static readonly Option<string?> Out = new("--out", "-o") { Description = "output: a .png for a grid, a folder for --single (default: the run folder's generated/)" };
    private static readonly Option<bool> Single = new("--single") { Description = "one PNG per image instead of a grid" };
    private static readonly Option<double?> Truncation = new("--truncation") { Description = "truncation psi: redraw latent coordinates beyond +-psi (e.g. 1.5)" };
    private static readonly Option<string?> Latents = new("--latents") { Description = "read latents from a .npy of shape [N, latent] instead of drawing them" };
    private static readonly Option<string?> Raw = new("--raw") { Description = "also write the raw output, float32 [N, C, H, W] as the generator made it (about [-1, 1], not clamped), to this .npy" };

    public static Command Create()
    {
        var c = new Command("generate", "Generate images with a checkpoint's EMA generator: a grid PNG, single PNGs, and optionally the raw output as .npy.");
        foreach (var o in new Option[] { Checkpoint.Path, Count, Seed, Out, Single, Truncation, Latents, Raw, TrainCommand.Device, TrainCommand.Threads }) c.Add(o);
        c.SetAction(parse => Program.Guard(() => Run(parse)));
        return c;
    }

    /// <summary>The latents and the images are held in memory together before they are written:
    /// refused, saying how much, when they cannot be.</summary>
    private static void CheckFits(int count, ProGanConfig cfg)
    {
        long values = (long)count * cfg.Channels * cfg.Resolution * cfg.Resolution, latents = (long)count * cfg.LatentSize;
        long bytes = (values + latents) * sizeof(float), available = SystemMemory.AvailableBytes;
        string what = $"{count:N0} images of {cfg.Channels}x{cfg.Resolution}x{cfg.Resolution} are held in memory before they are written";
        if (values > Array.MaxLength || latents > Array.MaxLength)
            throw new UserError($"{what}: {Math.Max(values, latents):N0} values, more than one array holds ({Array.MaxLength:N0}); ask for fewer with --count");
        if (bytes > available)
            throw new UserError($"{what}: about {SystemMemory.Format(bytes)}, {SystemMemory.Format(available)} available; ask for fewer with --count");
    }

    private static int Run(ParseResult parse)
    {
        TrainCommand.UseThreads(parse);
        using var backend = new OwnedBackend(Devices.Open(parse.GetValue(TrainCommand.Device)!, Console.WriteLine));
        var (g, state, folder) = Checkpoint.LoadGenerator(CommandLinePaths.Existing("--checkpoint", parse.GetValue(Checkpoint.Path)!), backend.Backend);
        using var _g = g;
        var cfg = g.Config;
        float[] z;
        int count;
        if (parse.GetValue(Latents) is string typedLatents)
        {
            string latentFile = CommandLinePaths.Existing("--latents", typedLatents);
            var npy = Npy.Load(latentFile);
            if (npy.Shape.Length != 2 || npy.Shape[1] != cfg.LatentSize)
                throw new UserError($"{latentFile}: latents must have shape [N, {cfg.LatentSize}], got [{string.Join(", ", npy.Shape)}]");
            z = npy.Data;
            count = npy.Shape[0];
        }
        else
        {
            count = parse.GetValue(Count);
            if (count < 1 || count > MaxCount) throw new UserError($"--count must be from 1 to {MaxCount:N0}, got {count}");
            CheckFits(count, cfg);
            z = Checkpoint.Latents(count, cfg.LatentSize, new Rng(parse.GetValue(Seed)), parse.GetValue(Truncation));
        }
        CheckFits(count, cfg);
        var images = new float[(long)count * cfg.Channels * cfg.Resolution * cfg.Resolution];
        int per = cfg.Channels * cfg.Resolution * cfg.Resolution;
        using (Tape.NoGrad())
        {
            for (int start = 0; start < count; start += 64)
            {
                int n = Math.Min(64, count - start);
                using var scope = new Scope();
                var zt = Tensor.FromArray(backend.Backend, z.AsSpan(start * cfg.LatentSize, n * cfg.LatentSize), new Shape(n, cfg.LatentSize));
                g.Forward(zt, cfg.MaxLevel).ToArray().CopyTo(images, (long)start * per);
            }
        }
        string runDir = TrainCommand.RunOf(folder);
        string defaultDir = System.IO.Path.Combine(runDir, "generated");
        if (parse.GetValue(Single))
        {
            string dir = parse.GetValue(Out) is string typed ? CommandLinePaths.Folder("--out", typed) : defaultDir;
            Directory.CreateDirectory(dir);
            for (int i = 0; i < count; i++)
                Png.Save(System.IO.Path.Combine(dir, $"image-{i:D5}.png"), ImageOps.FromFloatChw(images.AsSpan(i * per, per), cfg.Channels, cfg.Resolution, cfg.Resolution));
            Console.WriteLine($"wrote {count} images to {dir}");
        }
        else
        {
            string file = parse.GetValue(Out) is string typed ? CommandLinePaths.NewFile("--out", typed) : System.IO.Path.Combine(defaultDir, $"grid-seed{parse.GetValue(Seed)}.png");
            // A grid is a PNG: a name without the extension gets it, rather than a file no viewer opens.
            if (!file.EndsWith(".png", StringComparison.OrdinalIgnoreCase)) file += ".png";
            Directory.CreateDirectory(System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(file))!);
            Png.Save(file, ImageOps.Grid(images, count, cfg.Channels, cfg.Resolution));
            Console.WriteLine($"wrote a grid of {count} images to {file}");
        }
        if (parse.GetValue(Raw) is string typedRaw)
        {
            string raw = CommandLinePaths.NewFile("--raw", typedRaw);
            Npy.Save(raw, images, [count, cfg.Channels, cfg.Resolution, cfg.Resolution]);
            Console.WriteLine($"wrote the raw output [{count}, {cfg.Channels}, {cfg.Resolution}, {cfg.Resolution}] to {raw}");
        }
        return 0;
    }
}

/// <summary>`interpolate`: a walk through latent space between seeds, as PNG frames and an animated GIF.</summary>
public static class InterpolateCommand
{
    private static readonly Option<string> Seeds = new("--seeds") { Description = "comma-separated seeds to walk through (the walk returns to the first)", DefaultValueFactory = _ => "1,2,3,4" };
    private static readonly Option<int> Steps = new("--steps") { Description = "frames between two seeds", DefaultValueFactory = _ => 24 };
    private static readonly Option<int> Scale = new("--scale") { Description = "nearest-neighbour upscaling of the frames", DefaultValueFactory = _ => 4 };
    private static readonly Option<string?> Out = new("--out", "-o") { Description = "output folder (default: the run folder's interpolation/)" };

    public static Command Create()
    {
        var c = new Command("interpolate", "Walk through latent space between seeds (spherical interpolation): PNG frames and walk.gif.");
        foreach (var o in new Option[] { Checkpoint.Path, Seeds, Steps, Scale, Out, TrainCommand.Device }) c.Add(o);
        c.SetAction(parse => Program.Guard(() => Run(parse)));
        return c;
    }

    private static int Run(ParseResult parse)
    {
        var seeds = parse.GetValue(Seeds)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(s => ulong.TryParse(s, out var v) ? v : throw new UserError($"--seeds: '{s}' is not a whole number")).ToArray();
        if (seeds.Length < 2) throw new UserError("--seeds needs at least two seeds");
        int steps = parse.GetValue(Steps), scale = parse.GetValue(Scale);
        if (steps < 1 || scale < 1 || scale > 16) throw new UserError("--steps must be at least 1 and --scale from 1 to 16");
        using var backend = new OwnedBackend(Devices.Open(parse.GetValue(TrainCommand.Device)!, Console.WriteLine));
        var (g, _, folder) = Checkpoint.LoadGenerator(CommandLinePaths.Existing("--checkpoint", parse.GetValue(Checkpoint.Path)!), backend.Backend);
        using var _g = g;
        var cfg = g.Config;
        var keys = seeds.Select(s => Checkpoint.Latents(1, cfg.LatentSize, new Rng(s), null)).ToArray();
        var latents = new List<float[]>();
        for (int k = 0; k < keys.Length; k++)
            for (int s = 0; s < steps; s++)
                latents.Add(Slerp(keys[k], keys[(k + 1) % keys.Length], (float)s / steps));
        CheckFrameFits(cfg, scale);
        string dir = parse.GetValue(Out) is string typed ? CommandLinePaths.Folder("--out", typed) : System.IO.Path.Combine(TrainCommand.RunOf(folder), "interpolation");
        Directory.CreateDirectory(dir);
        int written = 0;
        // One frame at a time: generated, written as a PNG, then encoded into the GIF and dropped.
        IEnumerable<Image> Frames()
        {
            using var _ = Tape.NoGrad();
            for (int i = 0; i < latents.Count; i++)
            {
                Image frame;
                using (var scope = new Scope())
                {
                    var img = g.Forward(Tensor.FromArray(backend.Backend, latents[i], new Shape(1, cfg.LatentSize)), cfg.MaxLevel).ToArray();
                    frame = ImageOps.Grid(img, 1, cfg.Channels, cfg.Resolution, columns: 1, border: 0);
                }
                if (scale > 1) frame = Enlarge(frame, scale);
                Png.Save(System.IO.Path.Combine(dir, $"frame-{i:D4}.png"), frame);
                written++;
                yield return frame;
            }
        }
        string gif = System.IO.Path.Combine(dir, "walk.gif");
        Gif.Save(gif, Frames(), delayCentiseconds: 6);
        Console.WriteLine($"wrote {written} frames and {gif}");
        return 0;
    }

    /// <summary>A frame is held a few times over while it is enlarged, written and encoded (about
    /// 16 bytes a pixel): refused, saying how much, when that cannot fit (1024x1024 at --scale 16 is 4 GB).</summary>
    private static void CheckFrameFits(ProGanConfig cfg, int scale)
    {
        long side = (long)cfg.Resolution * scale, pixels = side * side, bytes = pixels * 16, available = SystemMemory.AvailableBytes;
        if (pixels * cfg.Channels > Array.MaxLength || bytes > available)
            throw new UserError($"--scale {scale}: a frame of {side:N0}x{side:N0} needs about {SystemMemory.Format(bytes)} while it is written, " +
                                $"{SystemMemory.Format(available)} available; lower --scale");
    }

    /// <summary>Spherical interpolation: the path stays at the typical radius of a Gaussian latent.</summary>
    public static float[] Slerp(float[] a, float[] b, float t)
    {
        double dot = 0, na = 0, nb = 0;
        for (int i = 0; i < a.Length; i++) { dot += a[i] * b[i]; na += a[i] * a[i]; nb += b[i] * b[i]; }
        double cos = Math.Clamp(dot / Math.Sqrt(na * nb), -1, 1), omega = Math.Acos(cos);
        var r = new float[a.Length];
        if (omega < 1e-6)
        {
            for (int i = 0; i < a.Length; i++) r[i] = a[i] + t * (b[i] - a[i]);
            return r;
        }
        double sa = Math.Sin((1 - t) * omega) / Math.Sin(omega), sb = Math.Sin(t * omega) / Math.Sin(omega);
        for (int i = 0; i < a.Length; i++) r[i] = (float)(sa * a[i] + sb * b[i]);
        return r;
    }

    private static Image Enlarge(Image image, int f)
    {
        var big = new Image(image.Width * f, image.Height * f, image.Channels);
        for (int y = 0; y < big.Height; y++)
            for (int x = 0; x < big.Width; x++)
                for (int c = 0; c < image.Channels; c++)
                    big.Pixels[(y * big.Width + x) * image.Channels + c] = image.Pixels[((y / f) * image.Width + x / f) * image.Channels + c];
        return big;
    }
}

/// <summary>`evaluate`: SWD per level against the data with the real-vs-real noise floor, and MS-SSIM diversity.</summary>
public static class EvaluateCommand
{
    private static readonly Option<string?> Data = new("--data") { Description = "data to compare with (default: the data the run trained on)" };
    private static readonly Option<int> Images = new("--images") { Description = "images per side (the paper uses 16384)", DefaultValueFactory = _ => 4096 };
    private static readonly Option<int> Pairs = new("--ms-ssim-pairs") { Description = "random pairs of generated images for MS-SSIM", DefaultValueFactory = _ => 1000 };

    public static Command Create()
    {
        var c = new Command("evaluate", "Sliced Wasserstein distance (ProGAN section 5) between the EMA generator and the data, per level and mean, with the real-vs-real noise floor; MS-SSIM among generated images.");
        foreach (var o in new Option[] { Checkpoint.Path, Data, Images, Pairs, TrainCommand.Seed, TrainCommand.Device, TrainCommand.Threads }) c.Add(o);
        c.SetAction(parse => Program.Guard(() => Run(parse)));
        return c;
    }

    private static int Run(ParseResult parse)
    {
        TrainCommand.UseThreads(parse);
        using var backend = new OwnedBackend(Devices.Open(parse.GetValue(TrainCommand.Device)!, Console.WriteLine));
        var (g, state, folder) = Checkpoint.LoadGenerator(CommandLinePaths.Existing("--checkpoint", parse.GetValue(Checkpoint.Path)!), backend.Backend);
        using var _g = g;
        var cfg = g.Config;
        string spec = parse.GetValue(Data) is string typed ? CommandLinePaths.DataSpec("--data", typed) : state.Options.Data;
        using var data = TrainingData.Open(spec, cfg.Resolution, Console.WriteLine, state.Options.ShapesCount);
        if (data.Channels != cfg.Channels) throw new UserError($"the data has {data.Channels} channel(s), the generator makes {cfg.Channels}");
        int images = parse.GetValue(Images);
        if (images < 16) throw new UserError($"--images must be at least 16, got {images}");
        ulong seed = parse.GetValue(TrainCommand.Seed);
        Console.WriteLine($"checkpoint {folder}: {state.State.TotalImages / 1000.0:F1} kimg; comparing {Math.Min(images, data.Count)} generated and real images of {data.Name}");
        var swd = Evaluation.Swd(g, data, images, seed);
        var floor = Evaluation.NoiseFloor(data, images, cfg.Resolution, seed);
        Console.WriteLine("SWD x1e3     " + string.Join("  ", swd.Levels.Select(l => $"{l.Resolution,5}px")) + "     mean");
        Console.WriteLine("generated    " + string.Join("  ", swd.Levels.Select(l => $"{l.Value,7:F2}")) + $"  {swd.Mean,7:F2}");
        Console.WriteLine("real vs real " + string.Join("  ", floor.Levels.Select(l => $"{l.Value,7:F2}")) + $"  {floor.Mean,7:F2}   (noise floor, {Math.Min(images, data.Count / 2)} per side)");
        int pairs = parse.GetValue(Pairs);
        if (pairs > 0 && cfg.Resolution < MsSsim.MinimumResolution)
            Console.WriteLine($"MS-SSIM: not measured: its {MsSsim.Weights.Length} scales need images of at least {MsSsim.MinimumResolution}x{MsSsim.MinimumResolution}, and this generator makes {cfg.Resolution}x{cfg.Resolution}");
        else if (pairs > 0)
        {
            int n = Math.Min(2 * pairs, 2048);
            var fakes = Evaluation.Generate(g, n, new Rng(seed + 7));
            var reals = Evaluation.Reals(data, n, cfg.Resolution, new Rng(seed + 8));
            Console.WriteLine($"MS-SSIM among generated images: {MsSsim.MeanOverPairs(fakes, n, cfg.Channels, cfg.Resolution):F4} (real images: {MsSsim.MeanOverPairs(reals, Math.Min(n, reals.Length / (cfg.Channels * cfg.Resolution * cfg.Resolution)), cfg.Channels, cfg.Resolution):F4}; lower means more diverse)");
        }
        return 0;
    }
}
