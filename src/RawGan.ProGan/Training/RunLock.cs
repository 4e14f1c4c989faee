using RawGan.ProGan.IO;

namespace RawGan.ProGan.Training;

/// <summary>A second writer was refused: another process holds the run folder's lock.</summary>
public sealed class RunInUseException(string runDirectory, int? holder)
    : IOException($"the run folder {runDirectory} is being written by another rawgan process{(holder is int p ? $" (PID {p})" : "")}; " +
                  $"a run folder has one writer at a time: wait for it to end, or stop it first{(holder is int q ? $" (kill -TERM {q} stops it with a checkpoint)" : "")}")
{
    public string RunDirectory { get; } = runDirectory;
    /// <summary>The process id the lock file names, if it names one.</summary>
    public int? Holder { get; } = holder;
}

/// <summary>
/// One writer per run folder: `train` (fresh or resumed) holds an <see cref="ExclusiveLock"/> on
/// <c>train.lock</c> in the run folder for as long as it runs; the operating system releases it
/// when the process ends, kill -9 included, so it is never stale. Readers (`generate`, `evaluate`)
/// take no lock: they pin the checkpoint they load instead (<see cref="CheckpointStore.ReadPinned"/>).
/// </summary>
public static class RunLock
{
    public const string FileName = "train.lock";

    /// <summary>Takes the lock of an existing run folder, or throws <see cref="RunInUseException"/> naming the holder.</summary>
    public static ExclusiveLock Acquire(string runDirectory) =>
        ExclusiveLock.TryAcquire(Path.Combine(runDirectory, FileName), out int? holder) ?? throw new RunInUseException(runDirectory, holder);

    /// <summary>
    /// Makes a new run folder <paramref name="name"/> in <paramref name="parent"/> (or
    /// <c>name-2</c>, <c>name-3</c>, ... when taken) and returns it locked. Processes that start
    /// together with the same name get different folders: a folder counts as this process's only
    /// once it holds the folder's lock and finds nothing else in it.
    /// </summary>
    public static (string Directory, ExclusiveLock Lock) CreateUnique(string parent, string name)
    {
        for (int i = 1; i < 100_000; i++)
        {
            string directory = Path.GetFullPath(Path.Combine(parent, i == 1 ? name : $"{name}-{i}"));
            if (System.IO.Directory.Exists(directory) || File.Exists(directory)) continue;
            System.IO.Directory.CreateDirectory(directory);
            var taken = ExclusiveLock.TryAcquire(Path.Combine(directory, FileName), out _);
            if (taken == null) continue;   // another process made it at the same moment and holds it
            if (System.IO.Directory.EnumerateFileSystemEntries(directory).Any(e => Path.GetFileName(e) != FileName))
            {
                taken.Dispose();           // made, used and released by another process meanwhile
                continue;
            }
            return (directory, taken);
        }
        throw new IOException($"cannot find a free name for the run folder {Path.Combine(parent, name)}");
    }

    /// <summary>
    /// <see cref="CreateUnique(string, string)"/> for a folder named by bytes, which need not be
    /// valid UTF-8 (a run resumed from an older checkpoint branches beside its run folder, under
    /// that folder's name): each candidate is made by mkdir(2), which fails when the name is taken,
    /// so a folder this makes is this process's alone. Returns the folder as a path .NET can use
    /// (<see cref="NativePath.Usable"/>).
    /// </summary>
    public static (string Directory, ExclusiveLock Lock) CreateUnique(NativePath parent, ReadOnlySpan<byte> name)
    {
        if (parent.IsUtf8 && System.Text.Unicode.Utf8.IsValid(name))
            return CreateUnique(parent.Shown, System.Text.Encoding.UTF8.GetString(name));
        parent.CreateFolders();
        for (int i = 1; i < 100_000; i++)
        {
            var candidate = parent.Join(i == 1 ? name : [.. name, .. System.Text.Encoding.ASCII.GetBytes($"-{i}")]);
            if (!candidate.TryCreateFolder()) continue;
            string directory = candidate.Usable()!;
            var taken = ExclusiveLock.TryAcquire(Path.Combine(directory, FileName), out _);
            if (taken != null) return (directory, taken);
        }
        throw new IOException($"cannot find a free name for the run folder {parent.Join(name).Shown}");
    }
}
