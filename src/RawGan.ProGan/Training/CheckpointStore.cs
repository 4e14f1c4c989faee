using System.Text.Json;
using System.Text.Json.Serialization;
using System.Text.RegularExpressions;
using RawGan.Engine;
using RawGan.Engine.Optim;
using RawGan.ProGan.Checkpoints;
using RawGan.ProGan.IO;
using RawGan.ProGan.Model;
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
        for (int attempt = 1; ; attempt++)
        {
            if (!System.IO.Directory.Exists(Directory)) return [];
            var named = System.IO.Directory.GetDirectories(Directory, "kimg-*")
                .Select(p => (path: p, key: SortKey(Path.GetFileName(p)))).Where(c => c.key != null).ToList();
            var complete = named.Where(c => File.Exists(Path.Combine(c.path, "state.json"))).ToList();
            // A run that is training renames folders while this lists them: a checkpoint that vanished
            // between the listing and the look inside may have been pruned just after a newer one was
            // renamed into place, which the listing missed. Then the listing is taken again.
            if (attempt < 5 && named.Count > complete.Count && named.Except(complete).Any(c => !System.IO.Directory.Exists(c.path))) continue;
            return complete.OrderBy(c => c.key!.Value.images).ThenBy(c => c.key!.Value.revision).Select(c => c.path).ToList();
        }
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

    /// <summary>A state.json larger than this is not one RawGan wrote (they are about 2 KB).</summary>
    private const long MaxStateBytes = 1 << 20;

    /// <summary>
    /// Reads and checks a checkpoint's state.json: every field of <see cref="CheckpointState"/>,
    /// <see cref="TrainOptions"/>, <see cref="ProGanConfig"/> and <see cref="TrainerState"/> must be
    /// present and not null (only nullable ones may be left out), the options must be valid and the
    /// counters not negative. Anything else is an <see cref="InvalidFileException"/> naming the file
    /// and the field.
    /// </summary>
    public static CheckpointState ReadState(string checkpoint)
    {
        string path = Path.Combine(checkpoint, "state.json");
        try
        {
            using var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read);
            return ReadState(handle, path);
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            throw new InvalidFileException(path, "the checkpoint has no state.json");
        }
    }

    /// <summary><see cref="ReadState(string)"/> from a state.json already open at <paramref name="path"/>.</summary>
    public static CheckpointState ReadState(Microsoft.Win32.SafeHandles.SafeFileHandle handle, string path)
    {
        long length = RandomAccess.GetLength(handle);
        if (length > MaxStateBytes)
            throw new InvalidFileException(path, $"{length:N0} bytes is far too large for a checkpoint state");
        var bytes = new byte[length];
        for (int done = 0; done < bytes.Length;)
        {
            int read = RandomAccess.Read(handle, bytes.AsSpan(done), done);
            if (read == 0) throw new InvalidFileException(path, "the file ended while it was read (it changed meanwhile?)");
            done += read;
        }
        CheckpointState? state;
        try
        {
            using var document = JsonDocument.Parse(bytes);
            RequireFields(document.RootElement, typeof(CheckpointState), "", path);
            state = document.RootElement.Deserialize<CheckpointState>(Json);
        }
        catch (JsonException e)
        {
            throw new InvalidFileException(path, $"not a valid checkpoint state: {e.Message}");
        }
        if (state is null)
            throw new InvalidFileException(path, "empty checkpoint state");
        if (state.Format != FormatName)
            throw new InvalidFileException(path, $"format '{state.Format}' is not {FormatName}");
        try
        {
            state.Options.Validate();
        }
        catch (ArgumentException e)
        {
            throw new InvalidFileException(path, $"field 'Options': {e.Message}");
        }
        var s = state.State;
        foreach (var (name, value) in new (string, double)[]
                 {
                     ("PhaseIndex", s.PhaseIndex), ("ImagesInPhase", s.ImagesInPhase), ("TotalImages", s.TotalImages), ("Steps", s.Steps),
                     ("GeneratorAdamStep", s.GeneratorAdamStep), ("DiscriminatorAdamStep", s.DiscriminatorAdamStep), ("SkippedSteps", s.SkippedSteps),
                     ("Rollbacks", s.Rollbacks), ("Seconds", s.Seconds), ("NextTickImages", s.NextTickImages), ("Ticks", s.Ticks),
                 })
        {
            if (!(value >= 0) || double.IsInfinity(value))
                throw new InvalidFileException(path, $"field 'State.{name}' is {value}, not a count");
        }
        if (!(s.LearningRateFactor > 0 && float.IsFinite(s.LearningRateFactor)))
            throw new InvalidFileException(path, $"field 'State.LearningRateFactor' is {s.LearningRateFactor}, not a positive number");
        return state;
    }

    /// <summary>Every field <paramref name="type"/> deserializes must be in <paramref name="element"/>
    /// (unless it is newer than the format: <see cref="AbsentInOlderCheckpointsAttribute"/>),
    /// and not null unless its type is nullable; records of RawGan's own are checked field by field.</summary>
    private static void RequireFields(JsonElement element, Type type, string prefix, string path)
    {
        string where = prefix.Length == 0 ? "the state" : $"field '{prefix.TrimEnd('.')}'";
        if (element.ValueKind != JsonValueKind.Object)
            throw new InvalidFileException(path, $"{where} is a JSON {element.ValueKind.ToString().ToLowerInvariant()}, not an object");
        var nullability = new System.Reflection.NullabilityInfoContext();
        foreach (var property in type.GetProperties(System.Reflection.BindingFlags.Public | System.Reflection.BindingFlags.Instance))
        {
            if (!property.CanWrite || property.IsDefined(typeof(JsonIgnoreAttribute), inherit: true)) continue;
            bool nullable = Nullable.GetUnderlyingType(property.PropertyType) != null
                            || nullability.Create(property).WriteState == System.Reflection.NullabilityState.Nullable;
            string name = prefix + property.Name;
            if (!element.TryGetProperty(property.Name, out var value))
            {
                if (nullable || property.IsDefined(typeof(AbsentInOlderCheckpointsAttribute), inherit: true)) continue;
                throw new InvalidFileException(path, $"field '{name}' is missing");
            }
            if (value.ValueKind == JsonValueKind.Null)
            {
                if (nullable) continue;
                throw new InvalidFileException(path, $"field '{name}' is null");
            }
            if (property.PropertyType == typeof(TrainOptions) || property.PropertyType == typeof(TrainerState) || property.PropertyType == typeof(ProGanConfig))
                RequireFields(value, property.PropertyType, name + ".", path);
        }
    }

    /// <summary>
    /// The state and one weight file of <paramref name="checkpoint"/>, pinned: both files are
    /// opened before either is read, and an open file stays readable when a training run prunes its
    /// folder meanwhile (on Unix). A checkpoint that vanished before that throws
    /// <see cref="FileNotFoundException"/> or <see cref="DirectoryNotFoundException"/>.
    /// </summary>
    public static (CheckpointState State, SafeTensorsContent Weights) ReadPinned(string checkpoint, string weightFile)
    {
        string statePath = Path.Combine(checkpoint, "state.json"), weightPath = Path.Combine(checkpoint, weightFile);
        using var state = File.OpenHandle(statePath, FileMode.Open, FileAccess.Read, FileShare.Read | FileShare.Delete);
        using var weights = File.OpenHandle(weightPath, FileMode.Open, FileAccess.Read, FileShare.Read | FileShare.Delete);
        return (ReadState(state, statePath), SafeTensors.Load(weights, weightPath));
    }

    /// <summary>
    /// Runs <paramref name="load"/> on the newest complete checkpoint; if that checkpoint vanishes
    /// before <paramref name="load"/> has pinned it (a run still training pruned it), on the newest
    /// again, a few times. Throws <see cref="InvalidFileException"/> naming the run folder when it
    /// holds no complete checkpoint.
    /// </summary>
    public T LoadNewest<T>(Func<string, T> load)
    {
        for (int attempt = 1; ; attempt++)
        {
            string latest = Latest ?? throw new InvalidFileException(Path.GetDirectoryName(Directory)!, "holds no complete checkpoint (checkpoints/kimg-*/state.json)");
            try
            {
                return load(latest);
            }
            catch (Exception e) when (e is IOException or InvalidFileException && attempt < 10 && !System.IO.Directory.Exists(latest))
            {
                // Pruned under us: the next newest is newer still.
            }
        }
    }

    /// <summary>Loads weights from a safetensors file into a module, checking every name and shape.</summary>
    public static void LoadInto(Module module, string path, string prefix = "") => LoadInto(module, SafeTensors.Load(path), path, prefix);

    /// <summary>Loads weights already read from <paramref name="path"/> into a module, checking every name and shape.</summary>
    public static void LoadInto(Module module, SafeTensorsContent content, string path, string prefix = "")
    {
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
