using System.CommandLine;
using System.Diagnostics;
using RawGan.Engine;
using RawGan.Engine.Backends;
using RawGan.Engine.Backends.Cpu;
using RawGan.Engine.Backends.Cuda;
using RawGan.ProGan.Model;
using RawGan.ProGan.Training;

namespace RawGan.Trainer;

/// <summary>
/// `bench`: the time of one training iteration (a critic step with gradient penalty, a generator
/// step and the EMA update) at full resolution (alpha 1), after warm-up, on random data, run the
/// way the trainer runs it (<see cref="StepRunner"/>: on a CUDA device the second iteration is
/// captured as a graph and the rest are replays, unless --graphs off). Its last line is exactly
/// <c>ms_per_iter=&lt;median&gt; images_per_s=&lt;value&gt;</c>.
/// </summary>
public static class BenchCommand
{
    private static readonly Option<string> Preset = new("--preset") { Description = "tiny, small or paper", DefaultValueFactory = _ => "small" };
    private static readonly Option<int> Resolution = new("--resolution", "-r") { Description = "resolution of the iteration", DefaultValueFactory = _ => 32 };
    private static readonly Option<int> Batch = new("--batch") { Description = "minibatch size", DefaultValueFactory = _ => 16 };
    private static readonly Option<int?> LatentSize = new("--latent-size") { Description = "override the preset's latent size" };
    private static readonly Option<int?> FmapBase = new("--fmap-base") { Description = "override the preset's fmap-base" };
    private static readonly Option<int?> FmapMax = new("--fmap-max") { Description = "override the preset's fmap-max" };
    private static readonly Option<int> Channels = new("--channels") { Description = "image channels", DefaultValueFactory = _ => 3 };
    private static readonly Option<int> Warmup = new("--warmup") { Description = "iterations not timed", DefaultValueFactory = _ => 2 };
    private static readonly Option<int> Iterations = new("--iterations") { Description = "timed iterations (the median is reported)", DefaultValueFactory = _ => 5 };
    private static readonly Option<bool> Profile = new("--profile") { Description = "also time every kernel (waits after each; slower overall) and print where an iteration's time goes" };

    public static Command Create()
    {
        var c = new Command("bench", "Time one ProGAN training iteration (D step with gradient penalty, G step, EMA). Last line: ms_per_iter=<median> images_per_s=<value>.");
        foreach (var o in new Option[] { Preset, Resolution, Batch, LatentSize, FmapBase, FmapMax, Channels, Warmup, Iterations, Profile, TrainCommand.Threads, TrainCommand.Device, TrainCommand.Precision, TrainCommand.Graphs, TrainCommand.Loss, TrainCommand.R1Gamma }) c.Add(o);
        c.SetAction(parse => Program.Guard(() => Run(parse)));
        return c;
    }

    private static int Run(ParseResult parse)
    {
        TrainCommand.UseThreads(parse);
        var cfg = ProGanConfig.FromPreset(parse.GetValue(Preset)!, parse.GetValue(Resolution), parse.GetValue(Channels));
        if (parse.GetValue(LatentSize) is int l) cfg = cfg with { LatentSize = l };
        if (parse.GetValue(FmapBase) is int fb) cfg = cfg with { FmapBase = fb };
        if (parse.GetValue(FmapMax) is int fm) cfg = cfg with { FmapMax = fm };
        cfg.Validate();
        int batch = parse.GetValue(Batch), warmup = parse.GetValue(Warmup), iterations = parse.GetValue(Iterations);
        if (batch < 1 || batch % Math.Min(cfg.MinibatchGroupSize, batch) != 0) throw new UserError($"--batch must be a positive multiple of {cfg.MinibatchGroupSize}");
        if (iterations < 1 || warmup < 0) throw new UserError("--iterations must be at least 1 and --warmup at least 0");
        using var owned = new OwnedBackend(TrainCommand.OpenDevice(parse));
        var profiler = parse.GetValue(Profile) ? new ProfilingBackend(owned.Backend) : null;
        IBackend backend = (IBackend?)profiler ?? owned.Backend;
        var rng = new Rng(1);
        using var models = GanModels.Create(backend, cfg, rng);
        float gamma = parse.GetValue(TrainCommand.R1Gamma);
        if (!(gamma >= 0 && float.IsFinite(gamma))) throw new UserError($"--r1-gamma must be a finite number of at least 0, got {gamma}");
        models.Objective = new GanObjective(TrainCommand.ParseLoss(parse.GetValue(TrainCommand.Loss)!), gamma);
        // Under --profile every kernel is timed from the host: nothing to capture.
        using var steps = new StepRunner(models, useGraphs: TrainCommand.UseGraphs(parse) && profiler == null);
        int level = cfg.MaxLevel;
        var realsHost = new float[batch * cfg.Channels * cfg.Resolution * cfg.Resolution];
        rng.FillUniform(realsHost);
        for (int i = 0; i < realsHost.Length; i++) realsHost[i] = realsHost[i] * 2 - 1;
        float[] latentsHost = new float[batch * cfg.LatentSize], mixHost = new float[batch];
        Console.WriteLine($"bench: {backend.Description}; threads {CpuParallel.Threads}; {cfg.Resolution}x{cfg.Resolution}, batch {batch}, latent {cfg.LatentSize}, fmap-base {cfg.FmapBase}, fmap-max {cfg.FmapMax}; G {models.G.ParameterCount:N0}, D {models.D.ParameterCount:N0} parameters");

        // What the host does for a step: random numbers and uploads of the step's inputs.
        void Prepare()
        {
            var inputs = steps.Inputs(batch, cfg.Channels, cfg.Resolution, cfg.LatentSize);
            inputs.Reals.CopyFrom(realsHost);
            rng.FillNormal(latentsHost);
            inputs.Latents.CopyFrom(latentsHost);
            rng.FillUniform(mixHost);
            inputs.Mix.CopyFrom(mixHost);
            rng.FillNormal(latentsHost);
            inputs.Latents2.CopyFrom(latentsHost);
        }

        static void CheckFinite(StepStats stats)
        {
            if (!stats.Finite) throw new UserError("the benchmark step produced non-finite values");
        }

        void Iteration()
        {
            Prepare();
            CheckFinite(steps.Run(level, fadeIn: false, 0.999f));
        }

        for (int i = 0; i < warmup; i++) Iteration();
        profiler?.Reset();
        long allocationsBefore = backend.Memory.SystemAllocations;
        var cuda = owned.Backend as CudaBackend;
        long launchesBefore = cuda?.Launches ?? 0, readbacksBefore = cuda?.Readbacks ?? 0;
        var uploadsBefore = cuda?.Uploads ?? default;
        // Managed allocations are counted around the iterations only (not the printing between them):
        // on this thread, and on all threads (the CPU backend's workers included).
        long managedThread = 0, managedAll = 0;
        var times = new List<double>();
        for (int i = 0; i < iterations; i++)
        {
            long threadBefore = GC.GetAllocatedBytesForCurrentThread(), allBefore = GC.GetTotalAllocatedBytes(precise: true);
            long start = Stopwatch.GetTimestamp();
            Iteration();
            double ms = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
            managedAll += GC.GetTotalAllocatedBytes(precise: true) - allBefore;
            managedThread += GC.GetAllocatedBytesForCurrentThread() - threadBefore;
            times.Add(ms);
            Console.WriteLine($"iteration {i + 1}: {ms:F1} ms");
        }
        Console.WriteLine($"steady state: {backend.Memory.SystemAllocations - allocationsBefore} new {backend.Name} allocations, "
            + $"{managedAll / (double)iterations:F0} bytes managed per iteration (all threads; {managedThread / (double)iterations:F0} bytes this thread), "
            + $"peak {backend.Memory.PeakBytesInUse / (1024.0 * 1024):F1} MiB in use");
        if (backend is CpuBackend cpu && cpu.Convolution == CpuBackend.ConvolutionAlgorithm.Auto)
        {
            var choices = CpuBackend.ConvolutionChoices;
            Console.WriteLine(!CpuBackend.ConvolutionTuning ? "3x3 convolutions: the fixed table (RAWGAN_CONV_TUNING=off)"
                : $"3x3 convolutions, measured on this CPU ({choices.Count} shapes; RAWGAN_CONV_TUNING=off for the fixed table):");
            foreach (var choice in choices.OrderBy(c => (c.H, c.Product, c.Cin, c.Cout)))
                Console.WriteLine($"  {choice}");
        }
        if (cuda != null)
        {
            Console.WriteLine($"per iteration: {(cuda.Launches - launchesBefore) / (double)iterations:F0} kernel launches from the host, " +
                              $"{(cuda.Readbacks - readbacksBefore) / (double)iterations:F0} copies back to the host (each waits for the device), " +
                              $"{(cuda.Uploads.Staged - uploadsBefore.Staged) / (double)iterations:F0} uploads through page-locked staging " +
                              $"({(cuda.Uploads.Waited - uploadsBefore.Waited) / (double)iterations:F1} waited for a staging region)");
            Console.WriteLine(steps.Graph is { } graph
                ? $"graph: yes, {graph} replayed per iteration ({steps.Replays} replays, {steps.Captures} capture, {steps.EagerSteps} eager iterations)"
                : $"graph: no ({(profiler != null ? "--profile times every kernel from the host" : !steps.UsesGraphs ? "--graphs off" : "not captured yet: use --warmup 2 or more")})");
        }
        if (profiler != null)
        {
            var rows = profiler.Report();
            double total = rows.Sum(r => r.Milliseconds);
            Console.WriteLine($"per kernel, per iteration (total {total / iterations:F1} ms of kernel time):");
            foreach (var (kernel, calls, ms) in rows)
                Console.WriteLine($"  {kernel,-26} {ms / iterations,9:F2} ms {100 * ms / total,6:F1}%  {calls / (double)iterations,7:F0} calls");
            Console.WriteLine("convolutions and matrix products by shape, per iteration:");
            foreach (var (kernel, calls, ms) in profiler.Report(byShape: true).Where(r => r.Kernel.StartsWith("Conv2d", StringComparison.Ordinal) || r.Kernel.StartsWith("Gemm", StringComparison.Ordinal)))
                Console.WriteLine($"  {kernel,-48} {ms / iterations,9:F2} ms {100 * ms / total,6:F1}%  {calls / (double)iterations,7:F0} calls");
        }
        if (steps.Graph != null && steps.LastRanAsGraph)
        {
            // As `train` runs them: the next step prepared and launched before this one is read.
            long start = Stopwatch.GetTimestamp();
            Prepare();
            steps.Launch(level, fadeIn: false, 0.999f);
            for (int i = 1; i < iterations; i++)
            {
                Prepare();
                steps.Launch(level, fadeIn: false, 0.999f);
                CheckFinite(steps.Finish());
            }
            CheckFinite(steps.Finish());
            double perStep = Stopwatch.GetElapsedTime(start).TotalMilliseconds / iterations;
            Console.WriteLine(FormattableString.Invariant(
                $"back to back, the host one step ahead (as train runs them): {perStep:F1} ms per step, {batch * 1000 / perStep:F2} images/s over {iterations} steps"));
        }
        times.Sort();
        double median = times.Count % 2 == 1 ? times[times.Count / 2] : (times[times.Count / 2 - 1] + times[times.Count / 2]) / 2;
        Console.WriteLine(FormattableString.Invariant($"ms_per_iter={median:F1} images_per_s={batch * 1000 / median:F2}"));
        return 0;
    }
}

/// <summary>`info`: devices, kernels and versions.</summary>
public static class InfoCommand
{
    public static Command Create()
    {
        var c = new Command("info", "Devices, kernels and versions.");
        var kernels = new Option<bool>("--kernels") { Description = "also assemble every kernel to machine code for sm_70..sm_90 and print its registers, shared memory, spills and largest block" };
        c.Add(kernels);
        c.SetAction(parse => Program.Guard(() =>
        {
            if (parse.GetValue(kernels)) return KernelTable();
            Console.WriteLine($"RawGan {typeof(Program).Assembly.GetName().Version} on .NET {Environment.Version}, {System.Runtime.InteropServices.RuntimeInformation.OSDescription}");
            foreach (var line in Devices.Describe()) Console.WriteLine(line);
            Console.WriteLine($"kernel cache: {CacheDirectory.Root}");
            Console.WriteLine(CpuBackend.ConvolutionTuning
                ? $"CPU 3x3 convolution methods: measured per shape on first use, kept in {CpuBackend.ConvolutionChoicesFile}"
                : "CPU 3x3 convolution methods: the fixed table (RAWGAN_CONV_TUNING=off)");
            Console.WriteLine("kernels:");
            foreach (var source in KernelLibrary.Sources)
                Console.WriteLine($"  kernels/{source.Name}: {string.Join(", ", EmulatedDriver.KernelNames(source.Text))}");
            return 0;
        }));
        return c;
    }

    /// <summary>`info --kernels`: ptxas's report for every kernel and architecture, checked against
    /// the launches the backend can make; exit 1 if any does not fit.</summary>
    private static int KernelTable()
    {
        var (major, minor) = NvrtcCompiler.Version();
        var supported = NvrtcCompiler.SupportedArchitectures();
        Console.WriteLine($"NVRTC {major}.{minor}: machine code for sm_{string.Join(", sm_", supported)}");
        var checks = new List<KernelLaunchCheck>();
        foreach (int sm in MachineCodeReport.Architectures)
        {
            if (!supported.Contains(sm))
            {
                Console.WriteLine($"sm_{sm}: not supported by this NVRTC");
                continue;
            }
            foreach (var source in KernelLibrary.Sources) checks.AddRange(MachineCodeReport.Check(source, KernelLibrary.Headers, sm));
        }
        foreach (var line in MachineCodeReport.Format(checks)) Console.WriteLine(line);
        int bad = checks.Count(c => c.Problems.Count > 0);
        Console.WriteLine(bad == 0 ? $"{checks.Count} kernel builds: every launch fits" : $"{bad} of {checks.Count} kernel builds have problems");
        return bad == 0 ? 0 : 1;
    }
}
