using System.Text.Json;
using System.Text.Json.Serialization;
using System.Text.RegularExpressions;
using RawGan.Engine;
using RawGan.Engine.Optim;
using RawGan.ProGan.Checkpoints;
using RawGan.ProGan.IO;
using RawGan.ProGan.Nn;

namespace RawGan.ProGan.Training;

/// <summary>Everything a checkpoint holds besides the weights.</summary>
public sealed record CheckpointState(string Format, TrainOptions Options, TrainerState State, DateTimeOffset Written);

/// <summary>
/// A run's checkpoints: <c>checkpoints/kimg-NNNNNN-NNN/</c> folders (images seen, in thousands
/// and the rest) holding G.safetensors,
/// D.safetensors, G_ema.safetensors (what exported weights and samples use), optimizer.safetensors
/// (Adam's moments, named "&lt;G|D&gt;.&lt;param&gt;.m" and ".v") and state.json.
///
/// Writing is crash-safe: a checkpoint is written into a temporary folder, every file flushed to
/// disk, then the folder is renamed into place (one atomic step), and only then are the oldest
/// checkpoints beyond the last few renamed away and deleted. A crash at any moment leaves the
/// newest complete checkpoint loadable; folders with a ".partial" suffix are leftovers and are
/// ignored. Nothing non-finite is ever written.
/// </summary>
public sealed partial class CheckpointStore
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

    /// <summary>
    /// Writes a checkpoint named after the images seen; returns its folder. A complete checkpoint
    /// is never replaced in place (a crash between deleting it and renaming the new one would lose
    /// it): a second checkpoint at the same count (after a rollback, or a stop right after a phase
    /// end) gets the next revision, <c>kimg-NNNNNN-NNN-r2</c>, which sorts after it. If the disk
    /// refuses, the temporary folder is removed and an <see cref="IOException"/> names the
    /// checkpoint, the reason and the last complete checkpoint, which is kept.
    /// </summary>
    public string Save(Module g, Module d, Module gEma, Adam adamG, Adam adamD, CheckpointState state, int keep)
    {
        var files = new (string Name, List<NamedTensor> Tensors)[]
        {
            ("G.safetensors", Export(g).ToList()),
            ("D.safetensors", Export(d).ToList()),
            ("G_ema.safetensors", Export(gEma).ToList()),
            ("optimizer.safetensors", Moments(adamG, g, "G").Concat(Moments(adamD, d, "D")).ToList()),
        };
        foreach (var (file, tensors) in files)
            foreach (var t in tensors)
                if (!AllFinite(t.Data))
                    throw new ArgumentException($"refusing to write a checkpoint: tensor '{t.Name}' of {file} holds NaN or infinite values");

        string name = $"kimg-{state.State.TotalImages / 1000:D6}-{state.State.TotalImages % 1000:D3}";
        string final = Path.Combine(Directory, name);
        for (int revision = 2; System.IO.Directory.Exists(final); revision++) final = Path.Combine(Directory, $"{name}-r{revision}");
        string temp = final + Partial + "-" + Environment.ProcessId;
        try
        {
            System.IO.Directory.CreateDirectory(Directory);
            if (System.IO.Directory.Exists(temp)) System.IO.Directory.Delete(temp, recursive: true);
            System.IO.Directory.CreateDirectory(temp);
            var meta = new Dictionary<string, string> { ["format"] = FormatName, ["images"] = state.State.TotalImages.ToString() };
            foreach (var (file, tensors) in files) SafeTensors.Save(Path.Combine(temp, file), tensors, meta);
            AtomicFile.WriteAllText(Path.Combine(temp, "state.json"), JsonSerializer.Serialize(state, Json));
            System.IO.Directory.Move(temp, final);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            try { if (System.IO.Directory.Exists(temp)) System.IO.Directory.Delete(temp, recursive: true); }
            catch (Exception cleanup) when (cleanup is IOException or UnauthorizedAccessException) { /* a leftover .partial is ignored */ }
            throw new IOException($"could not write the checkpoint {final}: {e.GetBaseException().Message.TrimEnd('.')}. " +
                                  $"The last complete checkpoint, {Latest ?? "(none yet)"}, is kept.", e);
        }
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

    /// <summary>Complete checkpoints, oldest first: by images seen, then revision. Folders of other
    /// names (".partial" leftovers among them) are not checkpoints.</summary>
    public IReadOnlyList<string> List()
    {
        if (!System.IO.Directory.Exists(Directory)) return [];
        return System.IO.Directory.GetDirectories(Directory, "kimg-*")
            .Select(p => (path: p, key: SortKey(Path.GetFileName(p))))
            .Where(c => c.key != null && File.Exists(Path.Combine(c.path, "state.json")))
            .OrderBy(c => c.key!.Value.images).ThenBy(c => c.key!.Value.revision)
            .Select(c => c.path).ToList();
    }

    private static bool AllFinite(float[] values)
    {
        foreach (float v in values)
            if (!float.IsFinite(v)) return false;
        return true;
    }

    private static (long images, int revision)? SortKey(string name)
    {
        var m = CheckpointName().Match(name);
        if (!m.Success || !long.TryParse(m.Groups[1].Value, out long kimg) || !int.TryParse(m.Groups[2].Value, out int rest)) return null;
        int revision = m.Groups[3].Success && int.TryParse(m.Groups[3].Value, out int r) ? r : 1;
        return (kimg * 1000 + rest, revision);
    }

    [GeneratedRegex(@"^kimg-([0-9]{6,})-([0-9]{3})(?:-r([0-9]+))?$")]
    private static partial Regex CheckpointName();

    public string? Latest => List().LastOrDefault();

    private void Prune(int keep)
    {
        var all = List();
        for (int i = 0; i < all.Count - keep; i++)
        {
            // Renamed first (one atomic step), so that a crash midway through the deletion leaves
            // a ".partial" leftover rather than a checkpoint folder with files missing.
            string doomed = $"{all[i]}{Partial}-deleting-{Guid.NewGuid():N}";
            try
            {
                System.IO.Directory.Move(all[i], doomed);
                System.IO.Directory.Delete(doomed, recursive: true);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { /* still open elsewhere: try again next time */ }
        }
        foreach (var leftover in System.IO.Directory.GetDirectories(Directory, "*" + Partial + "*"))
        {
            if (leftover.EndsWith("-" + Environment.ProcessId)) continue;
            try { System.IO.Directory.Delete(leftover, recursive: true); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
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
                if (!AllFinite(stored.Data))
                    throw new InvalidFileException(path, $"optimizer moment '{key}' holds NaN or infinite values");
                target.CopyFrom(stored.Data);
            }
        }
    }
}
