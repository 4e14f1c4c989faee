using System.Text.Json;
using System.Text.Json.Serialization;
using RawGan.Engine;
using RawGan.ProGan.IO;
using RawGan.ProGan.Nn;
using RawGan.ProGan.Training;

namespace RawGan.ProGan.Checkpoints;

/// <summary>Everything a checkpoint holds besides the weights.</summary>
public sealed record CheckpointState(string Format, TrainOptions Options, TrainerState State, DateTimeOffset Written);

/// <summary>
/// A run's checkpoints: <c>checkpoints/kimg-NNNNNN/</c> folders holding G.safetensors,
/// D.safetensors, G_ema.safetensors (what exported weights and samples use), optimizer.safetensors
/// (Adam's moments, named "&lt;G|D&gt;.&lt;param&gt;.m" and ".v") and state.json.
///
/// Writing is crash-safe: a checkpoint is written into a temporary folder, every file flushed to
/// disk, then the folder is renamed into place (one atomic step), and only then are the oldest
/// checkpoints beyond the last few deleted. A crash at any moment leaves the newest complete
/// checkpoint loadable; folders with a ".partial" suffix are leftovers and are ignored.
/// </summary>
public sealed class CheckpointStore
{
    public const string FormatName = "rawgan-progan-checkpoint-1";
    private const string Partial = ".partial";

    public static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    public CheckpointStore(string runDirectory)
    {
        Directory = Path.Combine(runDirectory, "checkpoints");
    }

    public string Directory { get; }

    public static IEnumerable<NamedTensor> Export(Module module, string prefix = "") =>
        module.NamedParameters().Select(p => new NamedTensor(prefix + p.Name, p.Tensor.Shape.ToArray(), p.Tensor.ToArray()));

    /// <summary>Writes a checkpoint named after the images seen; returns its folder.</summary>
    public string Save(Module g, Module d, Module gEma, Adam adamG, Adam adamD, CheckpointState state, int keep)
    {
        System.IO.Directory.CreateDirectory(Directory);
        string name = $"kimg-{state.State.TotalImages / 1000:D6}-{state.State.TotalImages % 1000:D3}";
        string final = Path.Combine(Directory, name);
        string temp = final + Partial + "-" + Environment.ProcessId;
        if (System.IO.Directory.Exists(temp)) System.IO.Directory.Delete(temp, recursive: true);
        System.IO.Directory.CreateDirectory(temp);
        var meta = new Dictionary<string, string> { ["format"] = FormatName, ["images"] = state.State.TotalImages.ToString() };
        SafeTensors.Save(Path.Combine(temp, "G.safetensors"), Export(g), meta);
        SafeTensors.Save(Path.Combine(temp, "D.safetensors"), Export(d), meta);
        SafeTensors.Save(Path.Combine(temp, "G_ema.safetensors"), Export(gEma), meta);
        SafeTensors.Save(Path.Combine(temp, "optimizer.safetensors"), Moments(adamG, g, "G").Concat(Moments(adamD, d, "D")), meta);
        AtomicFile.WriteAllText(Path.Combine(temp, "state.json"), JsonSerializer.Serialize(state, Json));
        if (System.IO.Directory.Exists(final)) System.IO.Directory.Delete(final, recursive: true);
        System.IO.Directory.Move(temp, final);
        Prune(keep);
        return final;
    }

    private static IEnumerable<NamedTensor> Moments(Adam adam, Module owner, string prefix)
    {
        var names = owner.NamedParameters().Select(p => p.Name).ToList();
        for (int i = 0; i < names.Count; i++)
        {
            var m = adam.FirstMoments[i];
            var v = adam.SecondMoments[i];
            yield return new NamedTensor($"{prefix}.{names[i]}.m", m.Shape.ToArray(), m.ToArray());
            yield return new NamedTensor($"{prefix}.{names[i]}.v", v.Shape.ToArray(), v.ToArray());
        }
    }

    /// <summary>Complete checkpoints, oldest first.</summary>
    public IReadOnlyList<string> List()
    {
        if (!System.IO.Directory.Exists(Directory)) return [];
        return System.IO.Directory.GetDirectories(Directory, "kimg-*")
            .Where(p => !Path.GetFileName(p).Contains(Partial) && File.Exists(Path.Combine(p, "state.json")))
            .Order(StringComparer.Ordinal).ToList();
    }

    public string? Latest => List().LastOrDefault();

    private void Prune(int keep)
    {
        var all = List();
        for (int i = 0; i < all.Count - keep; i++)
        {
            try { System.IO.Directory.Delete(all[i], recursive: true); }
            catch (IOException) { /* still open elsewhere: try again next time */ }
        }
        foreach (var leftover in System.IO.Directory.GetDirectories(Directory, "*" + Partial + "*"))
        {
            if (leftover.EndsWith("-" + Environment.ProcessId)) continue;
            try { System.IO.Directory.Delete(leftover, recursive: true); } catch (IOException) { }
        }
    }

    public static CheckpointState ReadState(string checkpoint)
    {
        string path = Path.Combine(checkpoint, "state.json");
        try
        {
            var state = JsonSerializer.Deserialize<CheckpointState>(File.ReadAllText(path), Json)
                ?? throw new InvalidFileException(path, "empty checkpoint state");
            if (state.Format != FormatName)
                throw new InvalidFileException(path, $"format '{state.Format}' is not {FormatName}");
            return state;
        }
        catch (JsonException e)
        {
            throw new InvalidFileException(path, $"not a valid checkpoint state: {e.Message}");
        }
        catch (FileNotFoundException)
        {
            throw new InvalidFileException(path, "the checkpoint has no state.json");
        }
    }

    /// <summary>Loads weights from a safetensors file into a module, checking every name and shape.</summary>
    public static void LoadInto(Module module, string path, string prefix = "")
    {
        var content = SafeTensors.Load(path);
        foreach (var (name, tensor) in module.NamedParameters())
        {
            if (!content.Tensors.TryGetValue(prefix + name, out var stored))
                throw new InvalidFileException(path, $"tensor '{prefix + name}' is missing (a checkpoint of another architecture?)");
            if (!stored.Shape.SequenceEqual(tensor.Shape.ToArray()))
                throw new InvalidFileException(path, $"tensor '{prefix + name}' has shape [{string.Join(", ", stored.Shape)}], the model expects {tensor.Shape}");
            if (stored.Data.Any(v => !float.IsFinite(v)))
                throw new InvalidFileException(path, $"tensor '{prefix + name}' holds NaN or infinite values");
            tensor.CopyFrom(stored.Data);
        }
    }

    public static void LoadMoments(Adam adam, Module owner, string path, string prefix)
    {
        var content = SafeTensors.Load(path);
        var names = owner.NamedParameters().Select(p => p.Name).ToList();
        for (int i = 0; i < names.Count; i++)
        {
            foreach (var (suffix, target) in new[] { ("m", adam.FirstMoments[i]), ("v", adam.SecondMoments[i]) })
            {
                string key = $"{prefix}.{names[i]}.{suffix}";
                if (!content.Tensors.TryGetValue(key, out var stored) || stored.Data.Length != target.Length)
                    throw new InvalidFileException(path, $"optimizer moment '{key}' is missing or has the wrong size");
                target.CopyFrom(stored.Data);
            }
        }
    }
}
