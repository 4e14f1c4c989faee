using System.CommandLine;
using System.Globalization;
using System.Runtime.InteropServices;
using RawGan.Engine;
using RawGan.Engine.Backends;
using RawGan.Engine.Backends.Cpu;
using RawGan.Engine.Backends.Cuda;
using RawGan.Engine.Distributed;
using RawGan.Engine.Optim;
using RawGan.ProGan.Checkpoints;
using RawGan.ProGan.Data;
using RawGan.ProGan.IO;
using RawGan.ProGan.Model;
using RawGan.ProGan.Training;

namespace RawGan.Trainer;

/// <summary>`train`: progressive growing from 4x4 to the chosen resolution, with checkpoints, sample grids and a report.</summary>
public static partial class TrainCommand
{
    private static readonly Option<string> Data = new("--data") { Description = "shapes (built in), fashion-mnist, fashion-mnist:DIR, mnist:DIR, or a folder of PNG, JPEG, WebP, BMP or GIF images", DefaultValueFactory = _ => "shapes" };
    private static readonly Option<int> Resolution = new("--resolution", "-r") { Description = "final resolution: a power of two from 4 to 1024", DefaultValueFactory = _ => 32 };
    private static readonly Option<string> Preset = new("--preset") { Description = "network size: tiny, small (latent 128, fmap-base 2048, fmap-max 128) or paper (latent 512, 8192, 512)", DefaultValueFactory = _ => "small" };
    private static readonly Option<int?> LatentSize = new("--latent-size") { Description = "latent size (overrides the preset)" };
    private static readonly Option<int?> FmapBase = new("--fmap-base") { Description = "fmap_base: channels at a resolution are min(fmap-base / 2^stage, fmap-max)" };
    private static readonly Option<int?> FmapMax = new("--fmap-max") { Description = "the most channels any layer has" };
    internal static readonly Option<string> Device = new("--device") { Description = "auto, cpu, cuda, cuda:N or cuda-emulated", DefaultValueFactory = _ => "auto" };
    internal static readonly Option<string> Precision = new("--precision")
    {
        Description = "matrix products and convolutions on a CUDA device: fp32, tf32 (tensor cores, compute capability 8.0 and newer), or auto: tf32 where the GPU has it, as PyTorch's default for convolutions is; fp32 on older GPUs and the emulator",
        DefaultValueFactory = _ => "auto",
    };
    internal static readonly Option<string> Graphs = new("--graphs")
    {
        Description = "on a CUDA device, capture each phase's training step once as a CUDA graph and replay it (one launch per step instead of about a thousand; the same results): on or off",
        DefaultValueFactory = _ => "on",
    };

    /// <summary>--graphs: on or off.</summary>
    internal static bool UseGraphs(ParseResult parse) => parse.GetValue(Graphs) switch
    {
        "on" => true,
        "off" => false,
        var other => throw new UserError($"--graphs must be on or off, not '{other}'"),
    };
    private static readonly Option<string> KimgPerPhase = new("--kimg-per-phase") { Description = "thousands of real images per fade-in and per stable phase (official: 600): one number, or per resolution like 4:20,8:20,6 (a resolution's fade-in and stable phase alike; a number alone is the default)", DefaultValueFactory = _ => "30" };
    private static readonly Option<string> Batch = new("--batch") { Description = "minibatch: one number, or per resolution like 4:64,8:32,16:16,32:16 (unlisted resolutions use the last number given alone, default 16)", DefaultValueFactory = _ => "16" };
    private static readonly Option<string> LearningRate = new("--lr") { Description = "Adam learning rate: one number (decimals with a point), or per resolution like 4:0.001,8:0.002 (a number alone in the list is the default: 0.001,128:0.0015)", DefaultValueFactory = _ => "0.001" };
    internal static readonly Option<ulong> Seed = new("--seed") { Description = "random seed (initialization, data order, noise)", DefaultValueFactory = _ => 1UL };
    private static readonly Option<string> Out = new("--out", "-o") { Description = "folder in which a new run folder is made", DefaultValueFactory = _ => "runs" };
    private static readonly Option<string?> Resume = new("--resume") { Description = "continue a run: its folder, or one of its checkpoint folders" };
    private static readonly Option<bool> Mirror = new("--mirror") { Description = "mirror augment: flip reals left-right with probability 0.5" };
    internal static readonly Option<string> Loss = new("--loss") { Description = "wgan-gp (the paper's WGAN-GP with its drift term) or logistic (non-saturating logistic loss with an R1 penalty on the reals)", DefaultValueFactory = _ => "wgan-gp" };
    private static readonly Option<float> DLrRatio = new("--d-lr-ratio") { Description = "the critic's learning rate as a multiple of --lr (1: the paper's equal rates; 2: a critic twice as fast, the two time-scale update rule's direction)", DefaultValueFactory = _ => 1f };
    private static readonly Option<double> FadeShare = new("--fade-share") { Description = "the fade-in's share of each resolution's 2 x kimg-per-phase images (0.5: the paper's equal fade-in and stable periods; 0.25: a quarter fades in, three quarters train stable)", DefaultValueFactory = _ => 0.5 };
    internal static readonly Option<float> R1Gamma = new("--r1-gamma") { Description = "the R1 penalty's weight gamma with --loss logistic (gamma / 2 times the squared gradient norm on the reals)", DefaultValueFactory = _ => 1f };
    internal static readonly Option<int?> Threads = new("--threads") { Description = "CPU threads for kernels, metrics and data preparation (default: all cores)" };
    private static readonly Option<double> TickKimg = new("--tick-kimg") { Description = "thousands of images between progress lines, metrics and sample grids", DefaultValueFactory = _ => 2 };
    private static readonly Option<int> CheckpointTicks = new("--checkpoint-ticks") { Description = "ticks between checkpoints (also at every phase end and on Ctrl+C)", DefaultValueFactory = _ => 5 };
    private static readonly Option<int> Keep = new("--keep") { Description = "checkpoints kept (older ones are deleted)", DefaultValueFactory = _ => 3 };
    private static readonly Option<string> OnNan = new("--on-nan") { Description = "after repeated non-finite steps: rollback (to the last checkpoint, learning rate halved) or stop", DefaultValueFactory = _ => "rollback" };
    private static readonly Option<int> SwdImages = new("--swd-images") { Description = "images per side for the final sliced Wasserstein distance (0 to skip)", DefaultValueFactory = _ => 2048 };
    private static readonly Option<int> ShapesCount = new("--shapes-count") { Description = "how many built-in shape images to render", DefaultValueFactory = _ => TrainingData.DefaultShapesCount };
    private static readonly Option<double> EmaKimg = new("--ema-kimg") { Description = "half-life of the generator's moving average in thousands of images (default: kimg-per-phase / 60; at 600 kimg per phase that is 10k images, about the official 0.999 per step at batch 14)", DefaultValueFactory = _ => 0 };
    private static readonly Option<string?> DataChanged = new("--data-changed") { Description = "ok: resume although the data folder changed since the checkpoint (files added, removed or modified)" };
    private static readonly Option<long?> MaxSteps = new("--max-steps") { Description = "stop (with a checkpoint) after this many steps of this invocation" };

    public static Command Create()
    {
        var command = new Command("train", "Train a ProGAN: stable 4x4, then a fade-in and a stable phase per resolution, with checkpoints, sample grids and report.html in the run folder.");
        foreach (var o in new Option[] { Data, Resolution, Preset, LatentSize, FmapBase, FmapMax, Device, Precision, Graphs, KimgPerPhase, FadeShare, Batch, LearningRate, DLrRatio, Seed, Out, Resume, Mirror, Loss, R1Gamma, Threads, TickKimg, CheckpointTicks, Keep, OnNan, SwdImages, ShapesCount, EmaKimg, DataChanged, MaxSteps })
            command.Add(o);
        command.SetAction(parse => Program.Guard(() => Run(parse)));
        return command;
    }

    /// <summary>No arguments: a tiny ProGAN on built-in shapes up to 32x32, sized to finish in minutes on two cores.</summary>
    public static int RunDefault()
    {
        Console.WriteLine("RawGan: training a tiny ProGAN on built-in shapes up to 32x32 (try `--help` for everything else).");
        var root = new RootCommand { Create() };
        // Chosen by measurement (docs/default-run.md): more images at the cheap low resolutions, a
        // higher learning rate and more steps at 16x16 and 32x32 (batch 8) for a short run, a critic
        // twice as fast as the generator, a quarter of each resolution's images fading in and three
        // quarters stable, an EMA that averages.
        return root.Parse(["train", "--preset", "tiny", "--kimg-per-phase", "4:15,8:15,16:8,10", "--lr", "0.003", "--d-lr-ratio", "2", "--fade-share", "0.25", "--ema-kimg", "1", "--batch", "16:8,32:8,16",
                           "--tick-kimg", "2", "--swd-images", "1024", "--shapes-count", "10000"]).Invoke();
    }

    /// <summary>Opens --device at --precision.</summary>
    internal static IBackend OpenDevice(ParseResult parse) =>
        Devices.Open(parse.GetValue(Device)!, Console.WriteLine, Devices.ParsePrecision(parse.GetValue(Precision)));

    /// <summary>Applies --threads (all cores when absent).</summary>
    internal static void UseThreads(ParseResult parse)
    {
        if (parse.GetValue(Threads) is not int threads) return;
        if (threads < 1) throw new UserError($"--threads must be at least 1, got {threads}");
        CpuParallel.Threads = threads;
    }

    private static int Run(ParseResult parse)
    {
        UseThreads(parse);
        long? maxSteps = parse.GetValue(MaxSteps);
        if (maxSteps < 0) throw new UserError($"--max-steps must not be negative, got {maxSteps}");
        // A path whose bytes are not valid UTF-8 goes on through /proc/self/fd (CommandLinePaths).
        string? resume = parse.GetValue(Resume) is string typed ? CommandLinePaths.Existing("--resume", typed) : null;
        string? checkpoint = null, runDirectory = null, branchOf = null;
        ExclusiveLock? runLock = null;
        // Data parallel under mpirun: every rank runs this command; rank 0 speaks, holds the run
        // folder's lock and writes; the others train their share in step with it.
        using var ranks = Launcher.Open();
        ICollective collective = ranks;
        bool lead = collective.Rank == 0;
        var console = lead ? Console.Out : TextWriter.Null;
        try
        {
            TrainOptions options;
            if (resume != null)
            {
                // A run folder given as such is locked before its newest checkpoint is chosen: a writer
                // still at work could otherwise add a newer one (and prune this one) in between.
                if (lead && Directory.Exists(Path.Combine(resume, "checkpoints")) && !File.Exists(Path.Combine(resume, "state.json")))
                    runLock = RunLock.Acquire(Path.TrimEndingDirectorySeparator(Path.GetFullPath(resume)));
                checkpoint = Path.TrimEndingDirectorySeparator(Path.GetFullPath(FindCheckpoint(resume)));
                string source = RunOf(checkpoint);
                // Resuming from an older checkpoint than the run's newest starts a branch, so that the
                // newer checkpoints (and the one resumed from) are never pruned by the resumed run.
                string? newest = new CheckpointStore(source).Latest;
                if (newest != null && Path.TrimEndingDirectorySeparator(Path.GetFullPath(newest)) != checkpoint) branchOf = source;
                else
                {
                    if (lead) runLock ??= RunLock.Acquire(source);
                    runDirectory = source;
                    Program.RunFolder = source;
                }
                var saved = CheckpointStore.ReadState(checkpoint).Options;
                options = Explicit(parse, saved);
                var diffs = options.Differences(saved);
                if (diffs.Count > 0)
                    throw new UserError($"cannot resume {checkpoint} with different settings:\n  " + string.Join("\n  ", diffs));
                options = saved with { TickImages = options.TickImages, CheckpointTicks = options.CheckpointTicks, KeepCheckpoints = options.KeepCheckpoints, OnNonFinite = options.OnNonFinite, SwdImages = options.SwdImages };
            }
            else
            {
                options = FromCommandLine(parse);
            }
            TrainingData.CheckResolution(options.Data, options.Model.Resolution);
            CheckMemory(options);
            if (collective.Size > 1) AgreeAcrossRanks(collective, options);

            using var backend = new OwnedBackend(Devices.Open(DeviceForRank(parse.GetValue(Device)!, collective), console.WriteLine,
                Devices.ParsePrecision(parse.GetValue(Precision))));
            // GPUs reduce their gradients among themselves through NCCL when it is installed.
            using var nccl = ranks is MpiCollective mpi && backend.Backend.Name == "cuda" && NcclCollective.Unavailable() == null ? new NcclCollective(mpi) : null;
            if (nccl != null) collective = nccl;
            console.WriteLine($"device: {backend.Backend.Description}{(collective.Size > 1 ? $"; {collective.Size} ranks ({collective.Name}), each training on 1/{collective.Size} of every minibatch" : "")}");
            using var data = TrainingData.Open(options.Data, options.Model.Resolution, console.WriteLine, options.ShapesCount);
            if (options.Model.Channels != data.Channels) options = options with { Model = options.Model with { Channels = data.Channels } };
            console.WriteLine($"data: {data.Name}, {data.Count:N0} images, {data.Channels} channel(s), prepared up to {data.Resolution}x{data.Resolution}");
            ShowPlan(options, backend.Backend, console);

            if (lead && branchOf != null)
            {
                (runDirectory, runLock) = Branch(branchOf, checkpoint!);
                Console.WriteLine($"{Path.GetFileName(checkpoint)} is older than the newest checkpoint of {branchOf}: continuing in a new run folder, {runDirectory}, " +
                                  "so that the run's later checkpoints are kept");
            }
            else if (lead && runDirectory == null)
            {
                RefuseOutInsideData(parse.GetValue(Out)!, CommandLinePaths.Native("--out", parse.GetValue(Out)!), options.Data);
                (runDirectory, runLock) = NewRunDirectory(parse.GetValue(Out)!, options);
            }
            // Rank 0 names the run folder; the others take its name.
            // As its bytes: a /proc/self/fd name (CommandLinePaths) means another folder in another process.
            if (collective.Size > 1)
            {
                string shared = BroadcastText(collective, runDirectory == null ? null : NativePath.Of(runDirectory).Persisted);
                if (!lead) runDirectory = NativePath.TryParsePersisted(shared, out var bytes) ? bytes.Usable() : shared;
            }
            if (runDirectory == null) throw new InvalidOperationException("no run folder was made");
            if (!lead) return Follow(collective, options, backend.Backend, data, runDirectory, checkpoint, maxSteps);
            Program.RunFolder = runDirectory;
            Program.InjectFault("train-started");
            Directory.CreateDirectory(Path.Combine(runDirectory, "samples"));
            var observer = ConsoleObserver.ForConsole();
            using var trainer = OpenTrainer(options, backend.Backend, data, runDirectory, observer, checkpoint, collective, UseGraphs(parse));
            var report = new RunReport(runDirectory, options, backend.Backend.Description, data.Name);
            trainer.OnSamples = (name, images, phase, alpha) => report.SaveGrid(name, images, phase, alpha);
            if (checkpoint == null || branchOf != null)
            {
                if (checkpoint == null)
                    File.WriteAllText(Path.Combine(runDirectory, "config.json"), System.Text.Json.JsonSerializer.Serialize(options, CheckpointStore.Json));
                Console.WriteLine($"run folder: {runDirectory}");
            }
            if (checkpoint == null)
            {
                Console.WriteLine($"schedule: {trainer.Schedule.Describe()}, " +
                                  $"G {trainer.Generator.ParameterCount:N0} and D {trainer.Discriminator.ParameterCount:N0} parameters");
                if (options.SwdImages > 0)
                {
                    trainer.State.InitialSwd = Evaluation.Swd(trainer.GeneratorEma, data, options.SwdImages, options.Seed).Mean;
                    Console.WriteLine($"SWD of the untrained generator: {trainer.State.InitialSwd:F1} (x1e3, mean over levels)");
                }
            }
            else Console.WriteLine($"resuming {checkpoint}: phase {trainer.State.PhaseIndex + 1}, {trainer.State.TotalImages:N0} images seen");
            CheckSameData(trainer.State, data, parse.GetValue(DataChanged), checkpoint);
            NoteThreadCount(trainer.State, backend.Backend, checkpoint != null);

            using var stop = new CancellationTokenSource();
            using var signals = StopSignals.Install(stop, observer);
            var reason = trainer.Run(stop.Token, maxSteps);
            switch (reason)
            {
                case StopReason.NonFinite:
                    report.Write(trainer, null);
                    Console.Out.Flush();
                    Console.Error.WriteLine($"rawgan: training stopped on non-finite values (losses, gradients, weights or Adam's moments; a lower --lr may help); " +
                                            $"the last complete checkpoint is {trainer.LatestCheckpoint ?? "none"}");
                    return 4;
                case StopReason.Interrupted:
                    report.Write(trainer, null);
                    Console.WriteLine($"stopped; continue with: dotnet run --project src/Trainer -c Release -- train --resume {runDirectory}");
                    return stop.IsCancellationRequested ? 130 : 0;
            }
            Evaluation.SwdResult? final = null;
            if (options.SwdImages > 0)
            {
                final = Evaluation.Swd(trainer.GeneratorEma, data, options.SwdImages, options.Seed + 1);
                Console.WriteLine($"SWD of the trained EMA generator: {final.Mean:F1} (untrained: {trainer.State.InitialSwd:F1}; per level {string.Join(", ", final.Levels.Select(l => $"{l.Resolution}px {l.Value:F1}"))})");
            }
            string path = report.Write(trainer, final);
            Console.WriteLine($"done in {ConsoleObserver.Format(TimeSpan.FromSeconds(trainer.State.Seconds))}. Results in {runDirectory}:");
            Console.WriteLine($"  {Path.Combine(runDirectory, "samples")} (grids), {path}, checkpoints/ (G_ema.safetensors is the generator to use)");
            Console.WriteLine($"  next: dotnet run --project src/Trainer -c Release -- generate --checkpoint {runDirectory}");
            return 0;
        }
        finally
        {
            runLock?.Dispose();
        }
    }

    /// <summary>The run folder a checkpoint folder belongs to (runs/NAME/checkpoints/kimg-...).</summary>
    internal static string RunOf(string checkpoint)
    {
        // By bytes when the path was reached through /proc/self/fd (CommandLinePaths): its parents are not /proc's.
        var full = NativePath.Of(Path.GetFullPath(checkpoint));
        return full.IsUtf8 ? Path.GetDirectoryName(Path.GetDirectoryName(Path.GetFullPath(checkpoint)))! : full.Parent.Parent.Usable()!;
    }

    /// <summary>
    /// Refuses a configuration that cannot fit in memory before anything is allocated, saying what
    /// it would need: the weights, Adam's moments and gradients of both networks, and the activations
    /// of the most demanding phase (a lower bound: the real peak is higher).
    /// </summary>
    private static void CheckMemory(TrainOptions options) => CheckPlan(options, SystemMemory.AvailableBytes, "of memory");

    /// <summary>Refuses a plan (<see cref="TrainOptions.MemoryPlan"/>) that does not fit in
    /// <paramref name="available"/> bytes, saying what it needs and which option to lower.</summary>
    private static void CheckPlan(TrainOptions options, long available, string where)
    {
        var (bytes, weights, activations, resolution) = options.MemoryPlan();
        if (bytes <= available) return;
        string lower = weights >= activations ? "lower --fmap-base, --fmap-max or --latent-size" : $"lower --batch at {resolution}x{resolution}";
        throw new UserError($"this configuration needs about {SystemMemory.Format(bytes)} {where} " +
                            $"({SystemMemory.Format(weights)} for the weights, moments and gradients of G's {options.Model.ParameterCount("G"):N0} and D's {options.Model.ParameterCount("D"):N0} parameters, " +
                            $"{SystemMemory.Format(activations)} at the peak of a step of batch {options.BatchFor(resolution)} at {resolution}x{resolution}); " +
                            $"{SystemMemory.Format(available)} is available: {lower}");
    }

    /// <summary>The plan in the run's header; on a GPU, checked against the device's free memory.</summary>
    private static void ShowPlan(TrainOptions options, IBackend backend, TextWriter console)
    {
        var (bytes, _, _, resolution) = options.MemoryPlan();
        long available = backend is CudaBackend cuda ? cuda.DeviceMemory().Free : SystemMemory.AvailableBytes;
        string where = backend is CudaBackend ? "of device memory" : "of memory";
        if (backend is CudaBackend) CheckPlan(options, available, where);
        console.WriteLine($"memory: about {SystemMemory.Format(bytes)} {where} at the peak (a step at {resolution}x{resolution}, batch {options.BatchFor(resolution)}); {SystemMemory.Format(available)} available");
    }

    /// <summary>A new run folder for a run resumed from an older checkpoint of <paramref name="source"/>:
    /// named after it and the checkpoint, with its config and the metrics up to the checkpoint.</summary>
    private static (string, ExclusiveLock) Branch(string source, string checkpoint)
    {
        // By bytes: the run folder's name (and so the branch's) need not be valid UTF-8.
        var run = NativePath.Of(source);
        var (directory, taken) = RunLock.CreateUnique(run.Parent, [.. run.NameBytes, .. System.Text.Encoding.UTF8.GetBytes($"-from-{Path.GetFileName(checkpoint)}")]);
        try
        {
            string config = Path.Combine(source, "config.json");
            if (File.Exists(config)) File.Copy(config, Path.Combine(directory, "config.json"));
            string metrics = Path.Combine(source, "metrics.jsonl");
            long images = CheckpointStore.ReadState(checkpoint).State.TotalImages;
            if (File.Exists(metrics))
            {
                var kept = File.ReadLines(metrics).TakeWhile(line =>
                {
                    try { return System.Text.Json.JsonDocument.Parse(line).RootElement.GetProperty("kimg").GetDouble() * 1000 <= images + 0.5; }
                    catch (Exception e) when (e is System.Text.Json.JsonException or KeyNotFoundException or InvalidOperationException) { return false; }
                });
                File.WriteAllLines(Path.Combine(directory, "metrics.jsonl"), kept);
            }
        }
        catch
        {
            taken.Dispose();
            throw;
        }
        return (directory, taken);
    }

    /// <summary>The trainer, resumed from <paramref name="checkpoint"/> if given; a damaged checkpoint
    /// is one line that also names the newest older checkpoint, which may be intact.</summary>
    // ------------------------------------------------------------------ data parallel

    /// <summary>The device of this rank: with several ranks, `cuda` (and `auto` when a GPU is
    /// present) means the GPU of the rank's local index, one GPU per rank.</summary>
    private static string DeviceForRank(string device, ICollective collective)
    {
        if (collective.Size == 1 || device.Contains(':')) return device;
        if (device == "cuda") return $"cuda:{Launcher.LocalRank()}";
        return device;
    }

    /// <summary>Refuses ranks started with different options (the differences listed, on every rank).</summary>
    private static void AgreeAcrossRanks(ICollective collective, TrainOptions options)
    {
        string mine = System.Text.Json.JsonSerializer.Serialize(options, CheckpointStore.Json);
        string lead = BroadcastText(collective, collective.Rank == 0 ? mine : null);
        var diffs = options.Differences(System.Text.Json.JsonSerializer.Deserialize<TrainOptions>(lead, CheckpointStore.Json)!);
        var count = new float[] { diffs.Count };
        collective.AllReduceSum(count);
        if (count[0] > 0)
            throw new UserError(diffs.Count > 0
                ? $"rank {collective.Rank} was started with other options than rank 0:\n  " + string.Join("\n  ", diffs)
                : "another rank was started with other options than rank 0 (see its message)");
    }

    /// <summary>Rank 0's text on every rank.</summary>
    private static string BroadcastText(ICollective collective, string? text)
    {
        var bytes = System.Text.Encoding.UTF8.GetBytes(text ?? "");
        var length = new float[] { bytes.Length };
        collective.Broadcast(length);
        var buffer = new byte[(int)length[0]];
        if (collective.Rank == 0) bytes.CopyTo(buffer, 0);
        collective.Broadcast(buffer);
        return System.Text.Encoding.UTF8.GetString(buffer);
    }

    /// <summary>A rank other than 0: trains its share in step with rank 0, quietly; rank 0 writes
    /// the checkpoints, samples, metrics and report.</summary>
    private static int Follow(ICollective collective, TrainOptions options, IBackend backend, ITrainingImages data, string runDirectory, string? checkpoint, long? maxSteps)
    {
        using var trainer = new ProGan.Training.Trainer(options, backend, data, runDirectory, new SilentObserver(), checkpoint, collective);
        using var stop = new CancellationTokenSource();
        var reason = trainer.Run(stop.Token, maxSteps);
        return reason == StopReason.NonFinite ? 4 : 0;
    }

    private sealed class SilentObserver : ITrainingObserver
    {
        public void Tick(TickReport report) { }
        public void Notice(string message) { }
    }

    private static ProGan.Training.Trainer OpenTrainer(TrainOptions options, IBackend backend, ITrainingImages data, string runDirectory,
        ITrainingObserver observer, string? checkpoint, ICollective collective, bool graphs)
    {
        try
        {
            return new ProGan.Training.Trainer(options, backend, data, runDirectory, observer, checkpoint, collective) { UseGraphs = graphs };
        }
        catch (InvalidFileException e) when (checkpoint != null)
        {
            string? older = new CheckpointStore(runDirectory).List().LastOrDefault(c => Path.GetFullPath(c) != Path.GetFullPath(checkpoint));
            throw new UserError(older == null ? e.Message : $"{e.Message} (an older checkpoint may be intact: train --resume {older})");
        }
    }

    /// <summary>A run folder under the data folder would feed its own sample grids to the next run.</summary>
    private static void RefuseOutInsideData(string typed, NativePath outRoot, string data)
    {
        // Compared by bytes: either path may hold bytes that are not valid UTF-8 (CommandLinePaths).
        NativePath folder;
        if (NativePath.TryParsePersisted(data, out var bytes)) folder = bytes.Full();
        else if (data is "shapes" or "fashion-mnist" || !Directory.Exists(data)) return;
        else folder = NativePath.Of(Path.GetFullPath(data)).Full();
        if (FileStatus.Of(folder).Kind != FileKind.Directory) return;
        static byte[] Slashed(NativePath p) => p.Bytes.EndsWith([(byte)Path.DirectorySeparatorChar]) ? p.Bytes.ToArray() : [.. p.Bytes, (byte)Path.DirectorySeparatorChar];
        if (Slashed(outRoot.Full()).AsSpan().StartsWith(Slashed(folder)))
            throw new UserError($"--out {(outRoot.IsUtf8 ? typed : outRoot.Shown)} is inside --data {folder.Shown}: the run's sample grids would become training images of the next run; choose an --out outside the data folder");
    }

    /// <summary>A new run records its data's fingerprint; a resumed one refuses data that changed,
    /// unless --data-changed ok.</summary>
    private static void CheckSameData(TrainerState state, CachedImages data, string? dataChanged, string? checkpoint)
    {
        if (dataChanged is not (null or "ok")) throw new UserError($"--data-changed takes one value, ok, not '{dataChanged}'");
        if (checkpoint != null && state.DataFingerprint is string before && before != data.Fingerprint)
        {
            if (dataChanged != "ok")
            {
                string counts = before.Split(':')[0] is var n && n != data.Count.ToString(CultureInfo.InvariantCulture) ? $"{n} images then, {data.Count:N0} now" : "files were added, removed, renamed or modified";
                throw new UserError($"the data changed since {checkpoint} was written ({counts}: {data.Name}); " +
                                    "to train on the data as they are now, resume with --data-changed ok");
            }
            Console.WriteLine($"the data changed since the checkpoint (--data-changed ok): training on them as they are now");
        }
        state.DataFingerprint = data.Fingerprint;
    }

    /// <summary>The CPU's sums are split by thread: a resumed run matches an uninterrupted one bit
    /// for bit only at the same thread count. Say so when it differs; record the count.</summary>
    private static void NoteThreadCount(TrainerState state, IBackend backend, bool resumed)
    {
        if (backend.Name != "cpu") return;
        if (resumed && state.Threads is int before && before != CpuParallel.Threads)
            Console.WriteLine($"note: the checkpoint was trained with {before} CPU thread(s), this run uses {CpuParallel.Threads}: the results will differ from an " +
                              $"uninterrupted run in float rounding (--threads {before} continues it bit for bit)");
        state.Threads = CpuParallel.Threads;
    }

    /// <summary>A run folder's newest checkpoint, or the checkpoint folder itself.</summary>
    public static string FindCheckpoint(string path)
    {
        if (File.Exists(Path.Combine(path, "state.json"))) return Path.GetFullPath(path);
        if (!Directory.Exists(path)) throw new UserError($"'{path}' is not a run folder or a checkpoint folder");
        return new CheckpointStore(path).Latest ?? throw new UserError($"'{path}' holds no complete checkpoint (checkpoints/kimg-*/state.json)");
    }

    private static (string, ExclusiveLock) NewRunDirectory(string outRoot, TrainOptions options)
    {
        string name = $"{DateTime.Now:yyyyMMdd-HHmmss}-{Sanitize(Path.GetFileName(options.Data.TrimEnd('/', '\\')))}-{options.Model.Resolution}";
        try
        {
            outRoot = CommandLinePaths.Folder("--out", outRoot);
            return RunLock.CreateUnique(outRoot, name);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new UserError($"--out: cannot make the run folder {Path.GetFullPath(Path.Combine(outRoot, name))}: {e.Message}");
        }
    }

    private static string Sanitize(string s) => new(s.Select(c => char.IsLetterOrDigit(c) || c is '-' or '_' ? c : '-').ToArray());

    private static TrainOptions FromCommandLine(ParseResult parse)
    {
        int resolution = parse.GetValue(Resolution);
        var model = ProGanConfig.FromPreset(parse.GetValue(Preset)!, resolution, 3);
        if (parse.GetValue(LatentSize) is int l) model = model with { LatentSize = l };
        if (parse.GetValue(FmapBase) is int fb) model = model with { FmapBase = fb };
        if (parse.GetValue(FmapMax) is int fm) model = model with { FmapMax = fm };
        var (batches, defaultBatch) = ParsePerResolution(parse.GetValue(Batch)!, "--batch", s => int.Parse(s, CultureInfo.InvariantCulture), 16);
        var (rates, defaultRate) = ParsePerResolution(parse.GetValue(LearningRate)!, "--lr", s => float.Parse(s, CultureInfo.InvariantCulture), 0.001f);
        string onNan = parse.GetValue(OnNan)!;
        var (imagesByResolution, images) = ParseImagesPerPhase(parse.GetValue(KimgPerPhase)!);
        int shapes = parse.GetValue(ShapesCount);
        if (shapes < 1) throw new UserError($"--shapes-count must be at least 1, got {shapes}");
        return new TrainOptions
        {
            Model = model,
            Data = DataSpec(CommandLinePaths.DataSpec("--data", parse.GetValue(Data)!)),
            ShapesCount = shapes,
            ImagesPerPhase = images,
            ImagesPerPhaseByResolution = imagesByResolution,
            BatchByResolution = batches,
            DefaultBatch = defaultBatch,
            LearningRateByResolution = rates,
            LearningRate = defaultRate,
            DiscriminatorLearningRateRatio = parse.GetValue(DLrRatio),
            FadeShare = parse.GetValue(FadeShare),
            Mirror = parse.GetValue(Mirror),
            Loss = ParseLoss(parse.GetValue(Loss)!),
            R1Gamma = parse.GetValue(R1Gamma),
            Seed = parse.GetValue(Seed),
            TickImages = Math.Max(1, (long)Math.Round(parse.GetValue(TickKimg) * 1000)),
            CheckpointTicks = parse.GetValue(CheckpointTicks),
            KeepCheckpoints = parse.GetValue(Keep),
            OnNonFinite = onNan switch
            {
                "rollback" => NonFinitePolicy.Rollback,
                "stop" => NonFinitePolicy.Stop,
                _ => throw new UserError($"--on-nan must be rollback or stop, got '{onNan}'"),
            },
            SwdImages = parse.GetValue(SwdImages),
            EmaHalfLifeImages = parse.GetValue(EmaKimg) * 1000,
        }.Validate();
    }

    /// <summary>The options for a resumed run: the checkpoint's, with whatever the user typed explicitly on top.</summary>
    private static TrainOptions Explicit(ParseResult parse, TrainOptions saved)
    {
        bool Given(Option o) => parse.GetResult(o) is { Implicit: false };
        var o = saved;
        var model = saved.Model;
        if (Given(Resolution)) model = model with { Resolution = parse.GetValue(Resolution) };
        if (Given(Preset)) model = ProGanConfig.FromPreset(parse.GetValue(Preset)!, model.Resolution, model.Channels);
        if (parse.GetValue(LatentSize) is int l) model = model with { LatentSize = l };
        if (parse.GetValue(FmapBase) is int fb) model = model with { FmapBase = fb };
        if (parse.GetValue(FmapMax) is int fm) model = model with { FmapMax = fm };
        o = o with { Model = model };
        if (Given(Data)) o = o with { Data = DataSpec(CommandLinePaths.DataSpec("--data", parse.GetValue(Data)!)) };
        if (Given(ShapesCount)) o = o with { ShapesCount = parse.GetValue(ShapesCount) };
        if (Given(KimgPerPhase))
        {
            var (byResolution, images) = ParseImagesPerPhase(parse.GetValue(KimgPerPhase)!);
            o = o with { ImagesPerPhase = images, ImagesPerPhaseByResolution = byResolution };
        }
        if (Given(Batch))
        {
            var (b, d) = ParsePerResolution(parse.GetValue(Batch)!, "--batch", s => int.Parse(s, CultureInfo.InvariantCulture), 16);
            o = o with { BatchByResolution = b, DefaultBatch = d };
        }
        if (Given(LearningRate))
        {
            var (r, d) = ParsePerResolution(parse.GetValue(LearningRate)!, "--lr", s => float.Parse(s, CultureInfo.InvariantCulture), 0.001f);
            o = o with { LearningRateByResolution = r, LearningRate = d };
        }
        if (Given(DLrRatio)) o = o with { DiscriminatorLearningRateRatio = parse.GetValue(DLrRatio) };
        if (Given(FadeShare)) o = o with { FadeShare = parse.GetValue(FadeShare) };
        if (Given(Mirror)) o = o with { Mirror = parse.GetValue(Mirror) };
        if (Given(Loss)) o = o with { Loss = ParseLoss(parse.GetValue(Loss)!) };
        if (Given(R1Gamma)) o = o with { R1Gamma = parse.GetValue(R1Gamma) };
        if (Given(EmaKimg)) o = o with { EmaHalfLifeImages = parse.GetValue(EmaKimg) * 1000 };
        if (Given(Seed)) o = o with { Seed = parse.GetValue(Seed) };
        if (Given(TickKimg)) o = o with { TickImages = Math.Max(1, (long)Math.Round(parse.GetValue(TickKimg) * 1000)) };
        if (Given(CheckpointTicks)) o = o with { CheckpointTicks = parse.GetValue(CheckpointTicks) };
        if (Given(Keep)) o = o with { KeepCheckpoints = parse.GetValue(Keep) };
        if (Given(OnNan)) o = o with { OnNonFinite = parse.GetValue(OnNan) == "stop" ? NonFinitePolicy.Stop : NonFinitePolicy.Rollback };
        if (Given(SwdImages)) o = o with { SwdImages = parse.GetValue(SwdImages) };
        return o;
    }

    internal static GanLoss ParseLoss(string text) => text.Trim().ToLowerInvariant() switch
    {
        "wgan-gp" or "wgangp" => GanLoss.WganGp,
        "logistic" => GanLoss.Logistic,
        _ => throw new UserError($"--loss must be wgan-gp or logistic, got '{text}'"),
    };

    /// <summary>--kimg-per-phase in images: per resolution (null when none is listed) and the default.</summary>
    private static (Dictionary<int, long>? byResolution, long fallback) ParseImagesPerPhase(string text)
    {
        var (kimg, fallback) = ParsePerResolution(text, "--kimg-per-phase", s => double.Parse(s, CultureInfo.InvariantCulture), 30.0);
        long Images(double k, string where)
        {
            long n = double.IsFinite(k) && k < 1e12 ? (long)Math.Round(k * 1000) : -1;
            return n >= 1 ? n : throw new UserError($"--kimg-per-phase{where} must be at least 0.001 (one image), got {k.ToString(CultureInfo.InvariantCulture)}");
        }
        var byResolution = kimg.ToDictionary(p => p.Key, p => Images(p.Value, $" at {p.Key}x{p.Key}"));
        return (byResolution.Count > 0 ? byResolution : null, Images(fallback, ""));
    }

    /// <summary>--data as saved in checkpoints: a folder by its full path, so that a run resumes from anywhere.</summary>
    private static string DataSpec(string data) =>
        data is "shapes" or "fashion-mnist" || data.StartsWith("fashion-mnist:") || data.StartsWith("mnist:") || !Directory.Exists(data)
            ? data : Path.GetFullPath(data);

    /// <summary>
    /// One syntax for a value per resolution: a value alone ("16", "0.001"), or entries
    /// RESOLUTION:VALUE separated by commas with at most one value alone, the default for the
    /// resolutions not listed ("4:64,8:32,16"). Decimals take a point: the comma separates entries,
    /// so "0,001" (two values alone) and "4:0,001" (a value alone with a leading zero, the decimals
    /// of the one before) are refused with a hint instead of being read as something else.
    /// </summary>
    public static (Dictionary<int, T> perResolution, T fallback) ParsePerResolution<T>(string text, string option, Func<string, T> parse, T fallback)
    {
        const string syntax = "write one value, or RESOLUTION:VALUE entries separated by commas (e.g. 4:0.001,8:0.002), with decimals written with a point";
        var map = new Dictionary<int, T>();
        bool bareSeen = false;
        foreach (var part in text.Split(',', StringSplitOptions.TrimEntries))
        {
            if (part.Length == 0) throw new UserError($"{option}: '{text}' has an empty entry; {syntax}");
            int colon = part.IndexOf(':');
            string value = colon < 0 ? part : part[(colon + 1)..];
            if (colon < 0 && bareSeen || value.Length > 1 && value[0] == '0' && char.IsAsciiDigit(value[1]))
            {
                string hint = DecimalComma().IsMatch(text) ? $" (did you mean {text.Replace(',', '.')}?)" : "";
                throw new UserError($"{option}: '{text}' is ambiguous{hint}: {syntax}");
            }
            try
            {
                if (colon < 0)
                {
                    fallback = parse(part);
                    bareSeen = true;
                    continue;
                }
                int res = int.Parse(part[..colon], CultureInfo.InvariantCulture);
                if (res < 4 || (res & (res - 1)) != 0) throw new FormatException();
                if (!map.TryAdd(res, parse(value))) throw new UserError($"{option}: '{text}' gives resolution {res} twice");
            }
            catch (FormatException) { throw new UserError($"{option}: cannot read '{part}' ({syntax}; a resolution is a power of two)"); }
            catch (OverflowException) { throw new UserError($"{option}: '{part}' is out of range"); }
        }
        return (map, fallback);
    }

    [System.Text.RegularExpressions.GeneratedRegex(@"^\d+,\d+$")]
    private static partial System.Text.RegularExpressions.Regex DecimalComma();
}

/// <summary>Disposes the backend a command opened (the process-wide CPU backend ignores Dispose).</summary>
internal sealed class OwnedBackend(IBackend backend) : IDisposable
{
    public IBackend Backend { get; } = backend;
    public void Dispose()
    {
        Backend.Dispose();   // the shared CPU backend ignores it
    }
}

/// <summary>Ctrl+C (SIGINT), SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 ask the trainer to stop after the current
/// step and write a checkpoint; a second signal ends the process at once (the last complete
/// checkpoint is safe).</summary>
internal sealed class StopSignals : IDisposable
{
    private static readonly PosixSignal Usr1 = (PosixSignal)(OperatingSystem.IsMacOS() ? 30 : 10), Usr2 = (PosixSignal)(OperatingSystem.IsMacOS() ? 31 : 12);
    private readonly List<IDisposable> _registrations = new();

    public static StopSignals Install(CancellationTokenSource stop, ITrainingObserver observer)
    {
        var s = new StopSignals();
        void Handler(PosixSignalContext context)
        {
            if (stop.IsCancellationRequested) return;   // the second signal: default handling ends the process
            context.Cancel = true;
            string name = context.Signal == Usr1 ? "SIGUSR1" : context.Signal == Usr2 ? "SIGUSR2" : context.Signal.ToString();
            observer.Notice($"{name}: stopping after this step and writing a checkpoint (press Ctrl+C again to quit at once)");
            stop.Cancel();
        }
        // A closed terminal or ssh session (SIGHUP) and SIGQUIT (Ctrl+\\) stop as SIGTERM does:
        // their default would end the run without a checkpoint.
        // SIGUSR1 and SIGUSR2 (10 and 12 on Linux, as PosixSignal takes raw numbers) too: their
        // default ends the process at once.
        foreach (var signal in new[] { PosixSignal.SIGINT, PosixSignal.SIGTERM, PosixSignal.SIGHUP, PosixSignal.SIGQUIT, Usr1, Usr2 })
            s._registrations.Add(PosixSignalRegistration.Create(signal, Handler));
        return s;
    }

    public void Dispose()
    {
        foreach (var r in _registrations) r.Dispose();
    }
}
