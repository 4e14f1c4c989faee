using RawGan.Engine;
using RawGan.Engine.Backends.Cpu;
using RawGan.Engine.Optim;
using RawGan.ProGan.Checkpoints;
using RawGan.ProGan.IO;
using RawGan.ProGan.Model;
using RawGan.ProGan.Training;

namespace RawGan.ProGan.Tests;

/// <summary>
/// The checkpoint folder rules the kill and disk tests rely on, checked directly: a complete
/// checkpoint is never replaced in place, revisions sort after their original (numerically), a
/// failed write leaves nothing behind but the previous checkpoints, and non-finite weights are
/// refused before anything is written.
/// </summary>
public sealed class CheckpointStoreTests : IDisposable
{
    private readonly string _run = Directory.CreateDirectory(Path.Combine(Path.GetTempPath(), "rawgan-store-" + Guid.NewGuid().ToString("N")[..12])).FullName;
    private readonly Generator _g, _gEma;
    private readonly Discriminator _d;
    private readonly Adam _adamG, _adamD;
    private readonly TrainOptions _options = new() { Model = ProGanConfig.Tiny(8) with { LatentSize = 8, FmapBase = 16, FmapMax = 8 }, SwdImages = 0 };

    public CheckpointStoreTests()
    {
        var rng = new Rng(1);
        _g = new Generator(CpuBackend.Shared, _options.Model, rng);
        _d = new Discriminator(CpuBackend.Shared, _options.Model, rng);
        _gEma = new Generator(CpuBackend.Shared, _options.Model, rng);
        _adamG = new Adam(_g.Parameters());
        _adamD = new Adam(_d.Parameters());
    }

    public void Dispose()
    {
        _g.Dispose(); _d.Dispose(); _gEma.Dispose(); _adamG.Dispose(); _adamD.Dispose();
        try { Directory.Delete(_run, recursive: true); } catch (IOException) { }
    }

    private string Save(long images, int steps, int keep = 100) =>
        new CheckpointStore(_run).Save(_g, _d, _gEma, _adamG, _adamD,
            new CheckpointState(CheckpointStore.FormatName, _options, new TrainerState { TotalImages = images, Steps = steps }, DateTimeOffset.UtcNow), keep);

    [Fact]
    public void ASecondCheckpointAtTheSameCountIsANewRevisionThatSortsLast()
    {
        var store = new CheckpointStore(_run);
        string first = Save(1200, steps: 1);
        var firstBytes = File.ReadAllBytes(Path.Combine(first, "state.json"));
        var revisions = Enumerable.Range(2, 10).Select(i => Save(1200, steps: i)).ToList();
        Assert.EndsWith("kimg-000001-200", first);
        Assert.EndsWith("kimg-000001-200-r2", revisions[0]);
        Assert.EndsWith("kimg-000001-200-r11", revisions[^1]);
        // The original was never touched, and the newest revision is the latest (r11 after r9: numeric order).
        Assert.Equal(firstBytes, File.ReadAllBytes(Path.Combine(first, "state.json")));
        Assert.Equal(revisions[^1], store.Latest);
        Assert.Equal(11, CheckpointStore.ReadState(store.Latest!).State.Steps);
        // A later count sorts after every revision; a stray folder of another name is no checkpoint.
        Directory.CreateDirectory(Path.Combine(store.Directory, "kimg-999999-999.partial-1"));
        Directory.CreateDirectory(Path.Combine(store.Directory, "kimg-notes"));
        File.WriteAllText(Path.Combine(store.Directory, "kimg-notes", "state.json"), "{}");
        string later = Save(1208, steps: 12, keep: 3);
        Assert.Equal(later, store.Latest);
        Assert.Equal(new[] { revisions[^2], revisions[^1], later }, store.List());
        Assert.Empty(Directory.GetDirectories(store.Directory, "*.partial*"));
        Assert.False(Directory.Exists(first));
    }

    [Fact]
    public void AWriteThatFailsKeepsThePreviousCheckpointAndLeavesNoPartialFolder()
    {
        var store = new CheckpointStore(_run);
        string previous = Save(800, steps: 1, keep: 1);
        File.WriteAllText(Path.Combine(store.Directory, "kimg-000001-000"), "a file in the way");
        var e = Assert.Throws<IOException>(() => Save(1000, steps: 2, keep: 1));
        Assert.Contains("could not write the checkpoint", e.Message);
        Assert.Contains(previous, e.Message);
        Assert.Equal(previous, store.Latest);
        Assert.Empty(Directory.GetDirectories(store.Directory, "*.partial*"));
        Assert.Equal(800, CheckpointStore.ReadState(previous).State.TotalImages);
    }

    [Fact]
    public void NonFiniteWeightsAreRefusedBeforeAnythingIsWritten()
    {
        var store = new CheckpointStore(_run);
        string previous = Save(800, steps: 1);
        var p = _d.Parameters()[2];
        var values = p.ToArray();
        values[^1] = float.NegativeInfinity;
        p.CopyFrom(values);
        var e = Assert.Throws<ArgumentException>(() => Save(1000, steps: 2));
        Assert.Contains("NaN or infinite", e.Message);
        Assert.Equal(new[] { previous }, store.List());
        Assert.Single(Directory.GetFileSystemEntries(store.Directory));
    }

    [Fact]
    public void AReaderWhoseCheckpointIsPrunedUnderItTakesTheNewestAgain()
    {
        var store = new CheckpointStore(_run);
        Save(100, steps: 1);
        string middle = Save(200, steps: 2);
        string newest = Save(300, steps: 3);
        var seen = new List<string>();
        var (state, weights) = store.LoadNewest(checkpoint =>
        {
            seen.Add(checkpoint);
            // The first time, as a training run would: a newer checkpoint lands and this one is
            // pruned (renamed away, then deleted) after it was listed but before it was opened.
            if (seen.Count == 1)
            {
                Directory.Move(checkpoint, checkpoint + ".partial-deleting");
                Directory.Delete(checkpoint + ".partial-deleting", recursive: true);
            }
            return CheckpointStore.ReadPinned(checkpoint, "G_ema.safetensors");
        });
        Assert.Equal([newest, middle], seen);
        Assert.Equal(200, state.State.TotalImages);
        Assert.NotEmpty(weights.Tensors);

        // Once pinned (both files open), deleting the folder no longer matters.
        string statePath = Path.Combine(middle, "state.json");
        using (var handle = File.OpenHandle(statePath, FileMode.Open, FileAccess.Read, FileShare.Read | FileShare.Delete))
        {
            if (!OperatingSystem.IsWindows()) Directory.Delete(middle, recursive: true);
            Assert.Equal(200, CheckpointStore.ReadState(handle, statePath).State.TotalImages);
        }
        Assert.Throws<InvalidFileException>(() => new CheckpointStore(Path.Combine(_run, "nothing")).LoadNewest(CheckpointStore.ReadState));
    }
}
