using System.Text.Json.Nodes;
using RawGan.Engine;
using RawGan.Engine.Backends.Cpu;
using RawGan.Engine.Optim;
using RawGan.ProGan.Checkpoints;
using RawGan.ProGan.IO;
using RawGan.ProGan.Model;
using RawGan.ProGan.Training;

namespace RawGan.ProGan.Tests;

/// <summary>
/// Sizes that cannot overflow into a crash (failure class 2): every size a file or an option
/// implies is checked, in 64-bit arithmetic, before anything is allocated, and a file that lacks
/// what it must hold is refused naming the file and the field.
/// </summary>
public class CheckedSizeTests
{
    [Fact]
    public void ASafetensorsTensorOver2GiBIsRefusedNamingFileAndTensor()
    {
        using var directory = new TempDirectory();
        string path = directory.File("big.safetensors");
        foreach (var (dtype, size) in new[] { ("F32", 4L), ("F64", 8L) })
        {
            long count = 600_000_000;   // 2.2 GiB as float32: within an array, beyond one span of bytes
            var header = System.Text.Encoding.UTF8.GetBytes($"{{\"small\":{{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}," +
                                                            $"\"huge\":{{\"dtype\":\"{dtype}\",\"shape\":[{count}],\"data_offsets\":[8,{8 + count * size}]}}}}");
            using (var stream = new FileStream(path, FileMode.Create))
            {
                stream.Write(BitConverter.GetBytes((ulong)header.Length));
                stream.Write(header);
                stream.SetLength(8 + header.Length + 8 + count * size);   // sparse: nothing is stored
            }
            long before = GC.GetAllocatedBytesForCurrentThread();
            var error = Assert.Throws<InvalidFileException>(() => SafeTensors.Load(path));
            Assert.True(GC.GetAllocatedBytesForCurrentThread() - before < 1 << 20, "refused after allocating");
            Assert.Equal(path, error.FilePath);
            Assert.Contains("tensor 'huge'", error.Problem);
            Assert.Contains("at most 2 GiB", error.Problem);
        }
    }

    [Fact]
    public void WideDtypesAreConvertedAChunkAtATime()
    {
        using var directory = new TempDirectory();
        string path = directory.File("f64.safetensors");
        int count = 300_000;   // 2.4 MB of F64: three chunks
        var header = System.Text.Encoding.UTF8.GetBytes($"{{\"x\":{{\"dtype\":\"F64\",\"shape\":[{count}],\"data_offsets\":[0,{count * 8}]}}}}");
        using (var stream = new FileStream(path, FileMode.Create))
        {
            stream.Write(BitConverter.GetBytes((ulong)header.Length));
            stream.Write(header);
            for (int i = 0; i < count; i++) stream.Write(BitConverter.GetBytes(i * 0.5));
        }
        var data = SafeTensors.Load(path).Tensors["x"].Data;
        Assert.Equal(count, data.Length);
        for (int i = 0; i < count; i += 9973) Assert.Equal(i * 0.5f, data[i]);
        Assert.Equal((count - 1) * 0.5f, data[^1]);
    }

    /// <summary>A real state.json, written by the checkpoint store.</summary>
    private static string WriteCheckpoint(string run)
    {
        // The options newer than the format away from their defaults, so that reading a default shows.
        var options = new TrainOptions
        {
            Model = ProGanConfig.Tiny(8) with { LatentSize = 8, FmapBase = 16, FmapMax = 8 },
            SwdImages = 0,
            DiscriminatorLearningRateRatio = 2,
            FadeShare = 0.25,
            Loss = GanLoss.Logistic,
            R1Gamma = 0.5f,
        };
        var rng = new Rng(1);
        using var g = new Generator(CpuBackend.Shared, options.Model, rng);
        using var d = new Discriminator(CpuBackend.Shared, options.Model, rng);
        using var adamG = new Adam(g.Parameters());
        using var adamD = new Adam(d.Parameters());
        var state = new TrainerState { TotalImages = 40, Steps = 5, Rng = rng.GetState(), InitialSwd = 3.5 };
        return new CheckpointStore(run).Save(g, d, g, adamG, adamD, new CheckpointState(CheckpointStore.FormatName, options, state, DateTimeOffset.UtcNow), 3);
    }

    /// <summary>Every field of every object in the state (dictionaries' entries are values, not fields), with its path.</summary>
    private static IEnumerable<(string Path, JsonObject Parent, string Name)> Fields(JsonObject node, string prefix = "")
    {
        foreach (var (name, value) in node.ToArray())
        {
            yield return (prefix + name, node, name);
            if (value is JsonObject child && !name.EndsWith("ByResolution"))
                foreach (var inner in Fields(child, prefix + name + "."))
                    yield return inner;
        }
    }

    /// <summary>The options newer than the checkpoint format, by their path in state.json.</summary>
    private static readonly Dictionary<string, System.Reflection.PropertyInfo> NewerThanTheFormat = typeof(TrainOptions).GetProperties()
        .Where(p => p.IsDefined(typeof(AbsentInOlderCheckpointsAttribute), false)).ToDictionary(p => "Options." + p.Name);

    private static readonly TrainOptions Defaults = new() { Model = ProGanConfig.Tiny(8) };

    [Fact]
    public void AStateWithAMissingOrNullFieldIsRefusedNamingTheFileAndTheField()
    {
        using var directory = new TempDirectory();
        string checkpoint = WriteCheckpoint(directory.Path);
        string path = Path.Combine(checkpoint, "state.json");
        string original = File.ReadAllText(path);
        var written = CheckpointStore.ReadState(checkpoint);
        Assert.Equal(40, written.State.TotalImages);
        foreach (var property in NewerThanTheFormat.Values) Assert.NotEqual(property.GetValue(Defaults), property.GetValue(written.Options));
        int cases = 0, absentRead = 0;
        foreach (var (field, _, _) in Fields(JsonNode.Parse(original)!.AsObject()))
        {
            foreach (bool remove in new[] { true, false })
            {
                var root = JsonNode.Parse(original)!.AsObject();
                var (_, parent, name) = Fields(root).Single(f => f.Path == field);
                if (remove) parent.Remove(name);
                else parent[name] = null;
                File.WriteAllText(path, root.ToJsonString());
                cases++;
                if (field == "State.InitialSwd")
                {
                    Assert.Null(CheckpointStore.ReadState(checkpoint).State.InitialSwd);   // the one optional field
                    continue;
                }
                if (remove && NewerThanTheFormat.TryGetValue(field, out var property))
                {
                    // A checkpoint from before the option existed reads as the option's default.
                    var read = CheckpointStore.ReadState(checkpoint).Options;
                    Assert.Equal(property.GetValue(Defaults), property.GetValue(read));
                    absentRead++;
                    continue;
                }
                var error = Record.Exception(() => CheckpointStore.ReadState(checkpoint)) as InvalidFileException;
                Assert.True(error != null, $"a state.json whose field {field} is {(remove ? "missing" : "null")} was read");
                Assert.Equal(path, error.FilePath);
                Assert.Contains($"field '{field}' is {(remove ? "missing" : "null")}", error.Problem);
            }
        }
        Assert.True(cases > 60, $"only {cases} cases");
        Assert.Equal(4, absentRead);   // --d-lr-ratio, --fade-share, --loss, --r1-gamma

        // Values of the wrong kind or range are named too.
        foreach (var (edit, expected) in new (Action<JsonObject>, string)[]
                 {
                     (r => r["Options"] = 5, "field 'Options' is a JSON number, not an object"),
                     (r => r["State"]!["PhaseIndex"] = -1, "field 'State.PhaseIndex' is -1"),
                     (r => r["State"]!["LearningRateFactor"] = 0, "field 'State.LearningRateFactor'"),
                     (r => r["Options"]!["Model"]!["Resolution"] = 48, "field 'Options': resolution must be a power of two"),
                     (r => { r["Options"]!["Model"]!["FmapBase"] = 1_000_000_000; r["Options"]!["Model"]!["FmapMax"] = 1_000_000_000; }, "lower --fmap-base"),
                 })
        {
            var root = JsonNode.Parse(original)!.AsObject();
            edit(root);
            File.WriteAllText(path, root.ToJsonString());
            var error = Assert.Throws<InvalidFileException>(() => CheckpointStore.ReadState(checkpoint));
            Assert.Contains(expected, error.Problem);
        }
    }

    public static TheoryData<string, int, int> Configs => new()
    {
        { "tiny", 8, 3 }, { "small", 32, 3 }, { "small", 64, 1 }, { "paper", 16, 3 },
    };

    [Theory]
    [MemberData(nameof(Configs))]
    public void TheSizesComputedBeforeAllocatingAreThoseOfTheNetworks(string preset, int resolution, int channels)
    {
        var config = ProGanConfig.FromPreset(preset, resolution, channels);
        using var g = new Generator(CpuBackend.Shared, config, new Rng(1));
        using var d = new Discriminator(CpuBackend.Shared, config, new Rng(1));
        var expected = g.NamedParameters().Select(p => ("G", p.Name, p.Tensor.Length))
            .Concat(d.NamedParameters().Select(p => ("D", p.Name, p.Tensor.Length))).OrderBy(w => w.Item1).ThenBy(w => w.Name, StringComparer.Ordinal);
        var computed = config.Weights().OrderBy(w => w.Network).ThenBy(w => w.Name, StringComparer.Ordinal);
        Assert.Equal(expected, computed);
        Assert.Equal(g.ParameterCount, config.ParameterCount("G"));
        Assert.Equal(d.ParameterCount, config.ParameterCount("D"));
    }

    [Fact]
    public void HugeWidthsAndBatchesAreRefusedBeforeAllocating()
    {
        long before = GC.GetAllocatedBytesForCurrentThread();
        foreach (var (config, tensor) in new[]
                 {
                     (ProGanConfig.Tiny(8) with { LatentSize = 2_000_000_000 }, "latent_dense.weight"),
                     (ProGanConfig.Tiny(8) with { FmapBase = int.MaxValue, FmapMax = int.MaxValue }, "latent_dense.weight"),
                     (ProGanConfig.Tiny(1024) with { FmapBase = 1 << 30, FmapMax = 40_000 }, "conv4.weight"),
                 })
        {
            var error = Assert.Throws<ArgumentException>(() => config.Validate());
            Assert.Contains(tensor, error.Message);
            Assert.Contains("lower --fmap-base, --fmap-max or --latent-size", error.Message);
        }
        var options = new TrainOptions { Model = ProGanConfig.Tiny(32), DefaultBatch = 4_000_000 };
        Assert.Contains("lower --batch", Assert.Throws<ArgumentException>(() => options.Validate()).Message);
        Assert.True(GC.GetAllocatedBytesForCurrentThread() - before < 1 << 20);

        // What a configuration needs is known before anything is made.
        var paper = new TrainOptions { Model = ProGanConfig.Paper(1024), DefaultBatch = 16 };
        var (bytes, weights, activations, worst) = paper.MemoryPlan();
        Assert.Equal(1024, worst);
        Assert.InRange(weights, 23_000_000L * 4 * 11, 24_000_000L * 4 * 11);
        Assert.Equal(weights + activations, bytes);
    }

    [Fact]
    public void ALargeBatchTakesNoStack()
    {
        // The step's per-image arrays (indices, mirror flags) once lived on the stack: a batch of
        // 65,536 needed 320 KB of it and overflowed this 256 KB thread, killing the process.
        var options = new TrainOptions
        {
            Model = ProGanConfig.Tiny(4) with { LatentSize = 4, FmapBase = 4, FmapMax = 4 },
            ImagesPerPhase = 65_536,
            DefaultBatch = 65_536,
            TickImages = 1 << 30,
            SwdImages = 0,
        };
        using var directory = new TempDirectory();
        StopReason? reason = null;
        Exception? failure = null;
        var thread = new Thread(() =>
        {
            try
            {
                using var trainer = new Training.Trainer(options, CpuBackend.Shared, new InMemoryShapes(64, 4), directory.Path, new SilentObserver());
                reason = trainer.Run(maxSteps: 1);
            }
            catch (Exception e)
            {
                failure = e;
            }
        }, maxStackSize: 256 * 1024);
        thread.Start();
        thread.Join();
        Assert.Null(failure);
        Assert.Equal(StopReason.Finished, reason);   // one phase of one step
    }
}
