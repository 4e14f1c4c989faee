using RawGan.Engine;
using RawGan.Engine.Backends.Cpu;
using RawGan.ProGan.Imaging;
using RawGan.ProGan.IO;

namespace RawGan.ProGan.Data;

/// <summary>A file an image folder could not use, and why.</summary>
public sealed record SkippedFile(string RelativePath, string Reason);

/// <summary>
/// What happened while reading an image folder: how many files looked like images, how many were
/// used, and the first few that were skipped (with reasons) so the user can find them.
/// </summary>
public sealed class ImageFolderReport
{
    /// <summary>How many skipped files are listed by name.</summary>
    public const int SkippedShown = 5;

    private readonly List<SkippedFile> _firstSkipped = new();

    public int Candidates { get; internal set; }
    public int Loaded { get; internal set; }
    public int Skipped { get; private set; }
    /// <summary>Image paths that lead to a file already counted (hard or symbolic links): each real file is used once.</summary>
    public int Duplicates { get; internal set; }
    /// <summary>Folders reached a second time through a symbolic link (a loop, or two links to one folder): walked once.</summary>
    public int FoldersSeenTwice { get; internal set; }
    public IReadOnlyList<SkippedFile> FirstSkipped => _firstSkipped;
    /// <summary>False when the images were taken from an existing cache without reading the folder.</summary>
    public bool FolderRead { get; internal set; } = true;

    internal void Skip(string relativePath, string reason)
    {
        Skipped++;
        if (_firstSkipped.Count < SkippedShown)
            _firstSkipped.Add(new SkippedFile(relativePath, reason));
    }

    /// <summary>One or more lines for the user, e.g. "1000 images used, 2 skipped: ...".</summary>
    public override string ToString()
    {
        if (!FolderRead)
            return "images taken from the prepared cache (the folder has not changed)";
        var text = $"{Loaded} of {Candidates} image files used";
        if (Duplicates > 0)
            text += $" ({Duplicates} more paths are links to files already counted)";
        if (FoldersSeenTwice > 0)
            text += $" ({FoldersSeenTwice} links to folders already walked, loops among them, were not followed again)";
        if (Skipped == 0)
            return text;
        text += $", {Skipped} skipped:";
        foreach (var skipped in _firstSkipped)
            text += $"\n  {skipped.RelativePath}: {skipped.Reason}";
        if (Skipped > _firstSkipped.Count)
            text += $"\n  ... and {Skipped - _firstSkipped.Count} more";
        return text;
    }
}

/// <summary>
/// A folder of the user's own pictures, searched recursively for PNG, JPEG, WebP, BMP and GIF files
/// of any size and mode (read by <see cref="ImageFile"/>: the first frame of a GIF, each picture
/// turned upright by its EXIF orientation). Each picture is decoded, alpha is composited on black,
/// the largest centred square is cropped and area-resized to the training resolution.
///
/// Grey or colour: the data set is grey (one channel) only when every readable file stores grey
/// samples (PNG colour types 0 and 4, single-component JPEG); otherwise it is RGB and grey pictures
/// are repeated into all three channels. The rule looks at file headers, so it is decided before any
/// picture is decoded.
///
/// Files that cannot be used (corrupt, truncated, not really an image, another format) are skipped
/// and counted in an <see cref="ImageFolderReport"/>; a folder with no usable picture at all is an
/// error that names the folder. Hidden files and folders are ignored.
///
/// Hostile folders: the walk looks at each entry's type before opening it (<see cref="FileStatus"/>),
/// so a named pipe, a socket or a device named like an image is skipped, never opened; symbolic
/// links are followed, each real folder is walked once (a link loop ends) and each real file is
/// counted once, however many paths lead to it; headers are read with a bounded read and their
/// sizes checked against RawGan's limits; and decoding runs under a <see cref="DecodeBudget"/>, so
/// pictures whose headers announce large sizes are decoded one after another, or skipped with the
/// memory they would need.
///
/// Names are taken as the system stores them: on Linux, bytes that need not be UTF-8 (a "café.png"
/// written in Latin-1 is <c>63 61 66 E9 2E 70 6E 67</c>). Each file is found, checked and opened by its bytes (<see cref="NativePath"/>),
/// so every picture is used whatever its name; messages show a name that is not valid UTF-8 with
/// those bytes escaped (<c>caf\xE9.png</c>), and the cache is identified by a text unique to each
/// name's bytes (<see cref="NativePath.KeyOf"/>).
/// </summary>
public sealed class ImageFolder
{
    /// <summary>One usable-looking file: its path, its path under the folder as shown and as a key, and what its header said.</summary>
    private readonly record struct Source(NativePath Path, string Relative, string Key, long Length, long Modified, long DecodeCost);

    /// <summary>One entry of the walk: its path, its path under the folder as shown and as a key, its status.</summary>
    private readonly record struct Entry(NativePath Path, string Relative, string Key, FileStatus Status);

    private readonly Source[] _files;

    private ImageFolder(string folder, Source[] files, int channels, ImageFolderReport headerReport)
    {
        Folder = folder;
        _files = files;
        Channels = channels;
        HeaderReport = headerReport;
    }

    public string Folder { get; }
    /// <summary>1 when every picture is grey, else 3.</summary>
    public int Channels { get; }
    /// <summary>
    /// The usable-looking files, full paths as shown (a name that is not valid UTF-8 with its bytes
    /// escaped, see <see cref="NativePath.Show"/>), in ordinal order of their keys under the folder.
    /// </summary>
    public IReadOnlyList<string> Files => _files.Select(f => f.Path.Shown).ToArray();
    public int Count => _files.Length;
    /// <summary>Files already rejected by their header while scanning.</summary>
    internal ImageFolderReport HeaderReport { get; }

    /// <summary>
    /// Scans <paramref name="folder"/> and reads every candidate's header. Throws
    /// <see cref="DirectoryNotFoundException"/> for a missing folder and
    /// <see cref="InvalidFileException"/> (naming the folder) when no file in it is a readable image.
    /// </summary>
    public static ImageFolder Open(string folder)
    {
        if (!Directory.Exists(folder))
            throw new DirectoryNotFoundException($"the image folder '{folder}' does not exist");
        var report = new ImageFolderReport();
        var entries = Walk(folder, report);
        report.Candidates = entries.Count;

        var infos = new (bool Usable, bool Grey, long Length, long Modified, long Cost)[entries.Count];
        var problems = new string?[entries.Count];
        Parallel.For(0, entries.Count, CpuParallel.Options, i =>
        {
            var (path, _, _, status) = entries[i];
            if (status.Kind != FileKind.Regular)
            {
                problems[i] = $"{FileStatus.Describe(status.Kind)}, not a regular file (not opened)";
                return;
            }
            try
            {
                var header = ImageFile.ReadHeader(path);
                infos[i] = (true, header.IsGrey, status.Length, status.ModifiedTicks, header.DecodeCost);
            }
            catch (Exception ex) when (ex is InvalidFileException or IOException or UnauthorizedAccessException or InvalidOperationException)
            {
                problems[i] = Reason(ex);
            }
        });
        // Reported in file order, so the same folder always lists the same first few.
        for (int i = 0; i < entries.Count; i++)
            if (problems[i] is not null)
                report.Skip(entries[i].Relative, problems[i]!);

        var usable = entries.Select((entry, i) => (entry, info: infos[i])).Where(p => p.info.Usable).ToArray();
        if (usable.Length == 0)
        {
            string why = entries.Count == 0
                ? $"no {string.Join(", ", ImageFile.Extensions)} files in it or its subfolders"
                : $"none of its {entries.Count} image files can be read: " + report;
            throw new InvalidFileException(folder, $"no usable image ({why})");
        }
        int channels = usable.All(p => p.info.Grey) ? 1 : 3;
        return new ImageFolder(folder, usable.Select(p => new Source(p.entry.Path, p.entry.Relative, p.entry.Key, p.info.Length, p.info.Modified, p.info.Cost)).ToArray(),
            channels, report);
    }

    /// <summary>
    /// Every entry under <paramref name="root"/> named like an image (hidden names skipped), with
    /// its status, in ordinal order of the keys of their paths under the root. Entries are typed
    /// without being opened; symbolic links are followed; a folder already walked (a link loop, a
    /// second link to it) is not walked again, and a file already found under another path is left
    /// out: both are counted in <paramref name="report"/>. The walk keeps its own stack, so nesting
    /// depth cannot exhaust it.
    /// </summary>
    private static List<Entry> Walk(string root, ImageFolderReport report)
    {
        var found = new List<Entry>();
        var folders = new HashSet<(ulong, ulong)>();
        var rootPath = NativePath.Of(root);
        var rootStatus = FileStatus.Of(rootPath);
        if (rootStatus.Kind == FileKind.Directory) folders.Add(rootStatus.Identity);
        var pending = new Stack<Entry>();
        pending.Push(new Entry(rootPath, "", "", rootStatus));
        while (pending.Count > 0)
        {
            var folder = pending.Pop();
            (NativePath Path, string Name, string Key)[] names;
            try
            {
                names = folder.Path.List().OrderBy(n => n.Key, StringComparer.Ordinal).ToArray();
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                continue;   // a folder that vanished or cannot be listed: as inaccessible ones are
            }
            var subfolders = new List<Entry>();
            foreach (var (path, name, key) in names)
            {
                if (name.StartsWith('.')) continue;
                var status = FileStatus.Of(path);
                var entry = new Entry(path, Under(folder.Relative, name), Under(folder.Key, key), status);
                if (status.Kind == FileKind.Directory)
                {
                    if (folders.Add(status.Identity)) subfolders.Add(entry);
                    else report.FoldersSeenTwice++;
                    continue;
                }
                if (ImageFile.Extensions.Contains(System.IO.Path.GetExtension(name).ToLowerInvariant()))
                    found.Add(entry);
            }
            // Walked in order: the first path to reach a folder is the one that lists its files.
            for (int i = subfolders.Count - 1; i >= 0; i--) pending.Push(subfolders[i]);
        }
        found.Sort((a, b) => StringComparer.Ordinal.Compare(a.Key, b.Key));
        var files = new HashSet<(ulong, ulong)>();
        var unique = new List<Entry>(found.Count);
        foreach (var entry in found)
        {
            if (entry.Status.Kind == FileKind.Regular && !files.Add(entry.Status.Identity))
            {
                report.Duplicates++;
                continue;
            }
            unique.Add(entry);
        }
        return unique;
    }

    private static string Under(string folder, string name) => folder.Length == 0 ? name : System.IO.Path.Join(folder, name);

    /// <summary>
    /// Identifies the folder's content and the preparation: any added, removed, renamed, resized or
    /// re-saved file, or another resolution, changes it (so a stale cache is rebuilt). Version 2
    /// reads with Skia: EXIF orientation applied, 16-bit samples reduced to their high byte. Files
    /// are named by their keys (<see cref="NativePath.KeyOf"/>: two names that differ in any byte,
    /// valid UTF-8 or not, differ), which for a valid name without a backslash is the name itself.
    /// </summary>
    public byte[] SourceHash(int resolution) => DatasetCache.HashSources(
        new[] { $"RawGan image folder v2; resolution {resolution}; channels {Channels}; EXIF orientation, centre crop, area resize, alpha on black" }
            .Concat(_files.Select(f => $"{f.Key}|{f.Length}|{f.Modified}")));

    /// <summary>
    /// Picture <paramref name="index"/> prepared for training: 8-bit CHW, <see cref="Channels"/> x
    /// <paramref name="resolution"/>². Throws for an unreadable file.
    /// </summary>
    public byte[] LoadImage(int index, int resolution)
    {
        var image = ImageOps.CompositeOnBlack(ImageFile.Load(_files[index].Path));
        image = Channels == 1 ? ImageOps.ToGrey(image) : ImageOps.ToRgb(image);
        image = ImageOps.ResizeArea(ImageOps.CenterCropSquare(image), resolution);
        int plane = resolution * resolution;
        var chw = new byte[Channels * plane];
        for (int p = 0; p < plane; p++)
            for (int c = 0; c < Channels; c++)
                chw[c * plane + p] = image.Pixels[p * Channels + c];
        return chw;
    }

    /// <summary>
    /// Every usable picture in order, decoded a batch at a time on all cores, together holding at
    /// most <paramref name="budget"/> (by default a share of the memory available now). Unreadable
    /// files, and files whose decoding would need more than the whole budget, are skipped and
    /// recorded in <paramref name="report"/>; if none is usable, throws
    /// <see cref="InvalidFileException"/> naming the folder.
    /// </summary>
    public IEnumerable<byte[]> LoadAll(int resolution, ImageFolderReport report, DecodeBudget? budget = null)
    {
        budget ??= DecodeBudget.FromAvailableMemory();
        int batch = Math.Max(8, Environment.ProcessorCount * 8);
        for (int start = 0; start < _files.Length; start += batch)
        {
            int count = Math.Min(batch, _files.Length - start);
            var results = new byte[]?[count];
            var problems = new string?[count];
            Parallel.For(0, count, CpuParallel.Options, i =>
            {
                var file = _files[start + i];
                if (!budget.TryAcquire(file.DecodeCost, out var lease))
                {
                    problems[i] = $"decoding it would need about {SystemMemory.Format(file.DecodeCost)}, more than the {SystemMemory.Format(budget.Bytes)} " +
                                  "decoding may use at once; scale the image down";
                    return;
                }
                try
                {
                    using (lease) results[i] = LoadImage(start + i, resolution);
                }
                catch (Exception ex) when (ex is InvalidFileException or IOException or UnauthorizedAccessException or InvalidOperationException)
                {
                    problems[i] = Reason(ex);
                }
            });
            for (int i = 0; i < count; i++)
            {
                if (results[i] is null)
                {
                    report.Skip(_files[start + i].Relative, problems[i]!);
                    continue;
                }
                report.Loaded++;
                yield return results[i]!;
            }
        }
        if (report.Loaded == 0)
            throw new InvalidFileException(Folder, $"no usable image: {report}");
    }

    /// <summary>
    /// The whole preparation: scans <paramref name="folder"/>, then opens the cache at
    /// <paramref name="cachePath"/> if it matches the folder, or builds it. The report lists skipped
    /// files (those rejected by their header and, when the cache is built, while decoding).
    /// </summary>
    public static (DatasetCache Cache, ImageFolderReport Report) PrepareCache(string folder, int resolution, string cachePath, DecodeBudget? budget = null)
    {
        var imageFolder = Open(folder);
        var report = imageFolder.HeaderReport;
        var cache = DatasetCache.OpenOrBuild(cachePath, imageFolder.Channels, resolution, imageFolder.SourceHash(resolution),
            () => imageFolder.LoadAll(resolution, report, budget), out bool rebuilt);
        if (!rebuilt)
        {
            report.FolderRead = false;
            report.Loaded = cache.Count;
        }
        return (cache, report);
    }

    private static string Reason(Exception ex) => ex is InvalidFileException invalid ? invalid.Problem : ex.Message;
}
