using RawGan.Engine;
using RawGan.Engine.Backends.Cpu;
using RawGan.ProGan.Checkpoints;
using RawGan.ProGan.Model;
using RawGan.ProGan.Training;

// Child processes share two cores; tests that time signals and kills must not compete with each other.
[assembly: CollectionBehavior(DisableTestParallelization = true)]

namespace RawGan.Trainer.Tests;

/// <summary>
/// Runs the built `rawgan` command line (rawgan.dll, copied next to this assembly by the project
/// reference) in child processes. One temporary folder per test run holds the runs and the data
/// cache (RAWGAN_CACHE_DIR), so the built-in shapes are rendered once for all tests.
/// </summary>
public sealed class RawganFixture : IDisposable
{
    public static readonly TimeSpan Timeout = TimeSpan.FromSeconds(180);

    private readonly Lazy<string> _reference;
    private int _folders;

    public RawganFixture()
    {
        Dll = Path.Combine(AppContext.BaseDirectory, "rawgan.dll");
        if (!File.Exists(Dll) || !File.Exists(Path.ChangeExtension(Dll, ".runtimeconfig.json")))
            throw new InvalidOperationException($"rawgan.dll and its runtimeconfig are not next to the tests in {AppContext.BaseDirectory}");
        Root = Path.Combine(Path.GetTempPath(), "rawgan-cli-tests-" + Guid.NewGuid().ToString("N")[..12]);
        CacheDirectory = Path.Combine(Root, "cache");
        Directory.CreateDirectory(CacheDirectory);
        _reference = new Lazy<string>(() =>
        {
            var result = Run(TinyTrain(NewFolder("reference")));
            Assert.True(result.ExitCode == 0, result.ToString());
            return RunFolderOf(result.Stdout);
        });
    }

    public string Dll { get; }
    public string Root { get; }
    public string CacheDirectory { get; }

    /// <summary>A new empty folder under the fixture's root.</summary>
    public string NewFolder(string name)
    {
        string path = Path.Combine(Root, $"{Interlocked.Increment(ref _folders):D3}-{name}");
        Directory.CreateDirectory(path);
        return path;
    }

    internal RawganProcess Start(params string[] args) => new(Dll, CacheDirectory, args);

    /// <summary>`mpirun -np <paramref name="ranks"/> rawgan ...`, waited for.</summary>
    internal RawganResult RunRanks(int ranks, params string[] args)
    {
        using var p = new RawganProcess(Dll, CacheDirectory, args, ranks: ranks);
        int code = p.WaitForExit(Timeout);
        return new RawganResult($"mpirun -np {ranks} {p.Arguments}", code, p.Stdout, p.Stderr, p.Seconds);
    }

    /// <summary>Starts rawgan with extra environment variables (and, when given, its own cache folder).</summary>
    internal RawganProcess StartWith(IReadOnlyDictionary<string, string> environment, params string[] args) =>
        new(Dll, environment.TryGetValue("RAWGAN_CACHE_DIR", out var cache) ? cache : CacheDirectory, args, environment);

    internal RawganResult RunWith(IReadOnlyDictionary<string, string> environment, params string[] args)
    {
        using var p = StartWith(environment, args);
        int code = p.WaitForExit(Timeout);
        return new RawganResult(p.Arguments, code, p.Stdout, p.Stderr, p.Seconds);
    }

    internal RawganResult Run(params string[] args) => Run(Timeout, args);

    internal RawganResult Run(TimeSpan timeout, params string[] args)
    {
        using var p = Start(args);
        int code = p.WaitForExit(timeout);
        return new RawganResult(p.Arguments, code, p.Stdout, p.Stderr, p.Seconds);
    }

    /// <summary>The network every CLI training test uses: a few thousand weights, 8x8, so a whole run
    /// (4x4 stable, 8x8 fade-in, 8x8 stable; 25 steps of 8 images each) takes seconds.</summary>
    public static readonly string[] TinyModel =
        ["--preset", "tiny", "--latent-size", "16", "--fmap-base", "32", "--fmap-max", "16", "--resolution", "8"];

    /// <summary>`train` of the tiny model on 64 built-in shapes, on one CPU thread, ticking every 5 steps.</summary>
    public static string[] TinyTrain(string outFolder, params string[] extra) =>
    [
        "train", .. TinyModel, "--kimg-per-phase", "0.2", "--batch", "8", "--swd-images", "0", "--shapes-count", "64",
        "--tick-kimg", "0.04", "--seed", "3", "--device", "cpu", "--threads", "1", "--out", outFolder, .. extra,
    ];

    /// <summary>The run folder a `train` printed ("run folder: ...").</summary>
    public static string RunFolderOf(string stdout) =>
        stdout.Split('\n').Select(l => l.Trim()).FirstOrDefault(l => l.StartsWith("run folder: "))?["run folder: ".Length..]
        ?? throw new InvalidOperationException("no 'run folder:' line in:\n" + stdout);

    /// <summary>The run folder of one uninterrupted tiny run (made once): what every interrupted and
    /// resumed run must reproduce bit for bit.</summary>
    public string ReferenceRun => _reference.Value;

    /// <summary>
    /// Loads everything `train --resume` and `generate` need from a checkpoint folder, in process and
    /// independently of the CLI: state.json, G, D and G_ema into fresh networks (LoadInto checks every
    /// name and shape and rejects NaN and infinities) and the optimizer moments (all finite).
    /// </summary>
    public static CheckpointState LoadCompletely(string checkpoint)
    {
        var state = CheckpointStore.ReadState(checkpoint);
        var backend = CpuBackend.Shared;
        using (var g = new Generator(backend, state.Options.Model, new Rng(0)))
        {
            CheckpointStore.LoadInto(g, Path.Combine(checkpoint, "G.safetensors"));
            CheckpointStore.LoadInto(g, Path.Combine(checkpoint, "G_ema.safetensors"));
        }
        using (var d = new Discriminator(backend, state.Options.Model, new Rng(0)))
            CheckpointStore.LoadInto(d, Path.Combine(checkpoint, "D.safetensors"));
        var moments = SafeTensors.Load(Path.Combine(checkpoint, "optimizer.safetensors"));
        foreach (var (name, t) in moments.Tensors)
            if (t.Data.Any(v => !float.IsFinite(v))) throw new InvalidDataException($"{checkpoint}: optimizer moment {name} is not finite");
        return state;
    }

    /// <summary>The bytes of a checkpoint's weight files, for bit-for-bit comparisons.</summary>
    public static void AssertSameWeights(string expectedCheckpoint, string actualCheckpoint)
    {
        foreach (var file in new[] { "G_ema.safetensors", "G.safetensors", "D.safetensors", "optimizer.safetensors" })
        {
            var expected = File.ReadAllBytes(Path.Combine(expectedCheckpoint, file));
            var actual = File.ReadAllBytes(Path.Combine(actualCheckpoint, file));
            Assert.True(expected.AsSpan().SequenceEqual(actual), $"{file} of {actualCheckpoint} differs from {expectedCheckpoint}");
        }
    }

    public void Dispose()
    {
        try { Directory.Delete(Root, recursive: true); }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
    }
}

[CollectionDefinition("rawgan")]
public sealed class RawganCollection : ICollectionFixture<RawganFixture>;
