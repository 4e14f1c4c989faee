using RawGan.Engine;
using RawGan.ProGan.IO;

namespace RawGan.ProGan.Data;

/// <summary>A prepared data set (<see cref="DatasetCache"/>) as training images.</summary>
public sealed class CachedImages(string name, DatasetCache cache) : ITrainingImages, IDisposable
{
    public string Name { get; } = name;
    public DatasetCache Cache { get; } = cache;
    public int Count => Cache.Count;
    public int Channels => Cache.Channels;
    public int Resolution => Cache.MaxResolution;

    /// <summary>The images' identity: their count and the hash of their sources (for a folder, every
    /// file's name, size and modification time), so that a resumed run can tell changed data.</summary>
    public string Fingerprint => $"{Count}:{Convert.ToHexString(Cache.SourceHash)[..24]}";

    public void FillBatch(ReadOnlySpan<int> indices, int resolution, ReadOnlySpan<bool> mirror, Span<float> destination) =>
        Cache.GetBatch(indices, resolution, mirror, destination);

    public void Dispose() => Cache.Dispose();
}

/// <summary>
/// Opens what `--data` names, prepared once into a multi-resolution cache under the user's cache
/// folder (~/.cache/rawgan/data), so that training never decodes an image during a step:
/// <list type="bullet">
/// <item><c>shapes</c> (default): the built-in procedural data set, no files needed.</item>
/// <item><c>fashion-mnist</c>: Debian's dataset-fashion-mnist, or <c>fashion-mnist:DIR</c> / <c>mnist:DIR</c> for IDX files elsewhere.</item>
/// <item>anything else: a folder of PNG, JPEG, WebP, BMP or GIF images of any size and mode.</item>
/// </list>
/// </summary>
public static class TrainingData
{
    public const int DefaultShapesCount = 20_000;

    public static string CacheFolder => CacheDirectory.For("data");

    /// <summary>Throws <see cref="ArgumentException"/> when <paramref name="spec"/> cannot give
    /// images at <paramref name="resolution"/> (the built-in shapes end at 256x256), before anything is opened.</summary>
    public static void CheckResolution(string spec, int resolution)
    {
        if (spec == "shapes" && resolution > ShapesDataset.MaxResolution)
            throw new ArgumentException($"--data shapes renders at most {ShapesDataset.MaxResolution}x{ShapesDataset.MaxResolution}, not {resolution}x{resolution}: " +
                                        $"lower --resolution, or train on your own images with --data FOLDER");
    }

    public static CachedImages Open(string spec, int resolution, Action<string> notice, int shapesCount = DefaultShapesCount)
    {
        CheckResolution(spec, resolution);
        if (spec == "shapes")
        {
            var shapes = new ShapesDataset(seed: 0, count: shapesCount);
            var hash = DatasetCache.HashSources(["shapes", ShapesDataset.Version.ToString(), shapesCount.ToString(), resolution.ToString()]);
            string path = Path.Combine(CacheFolder, $"shapes-{shapesCount}-{resolution}.rgcache");
            var cache = DatasetCache.OpenOrBuild(path, ShapesDataset.Channels, resolution, hash,
                () => Announce(notice, $"rendering {shapesCount:N0} shapes at {resolution}x{resolution} into {path} (once)",
                    shapes.RenderAllBytes(resolution)), out _);
            return new CachedImages("shapes", cache);
        }
        if (spec == "fashion-mnist" || spec.StartsWith("fashion-mnist:") || spec.StartsWith("mnist:"))
        {
            string? dir = spec.Contains(':') ? spec[(spec.IndexOf(':') + 1)..] : null;
            if (dir != null && NativePath.TryParsePersisted(dir, out var native))
                dir = native.Usable() ?? throw new ArgumentException($"--data: the folder {native.Shown} does not exist");
            var files = FashionMnist.Locate(dir) ?? throw new ArgumentException(FashionMnist.InstallHint);
            var info = new FileInfo(files.TrainImages);
            // The file by its real path (bytes that are not UTF-8 included), never by the /proc/self/fd name it is reached through.
            var hash = DatasetCache.HashSources(["idx", "v1", NativePath.Of(info.FullName).Persisted, info.Length.ToString(), info.LastWriteTimeUtc.Ticks.ToString(), resolution.ToString()]);
            string path = Path.Combine(CacheFolder, $"{(spec.StartsWith("mnist") ? "mnist" : "fashion-mnist")}-{resolution}-{Convert.ToHexString(hash)[..12]}.rgcache");
            var cache = DatasetCache.OpenOrBuild(path, 1, resolution, hash, () =>
            {
                var images = Idx.ReadImages(files.TrainImages);
                return Announce(notice, $"preparing {images.Count:N0} images of {files.TrainImages} at {resolution}x{resolution} (once)",
                    Enumerable.Range(0, images.Count).Select(i => IdxToSquare(images, i, resolution)));
            }, out _);
            return new CachedImages(spec.StartsWith("mnist") ? "mnist" : "fashion-mnist", cache);
        }
        // A folder whose path is not valid UTF-8 comes as its bytes (NativePath.Persisted) and is
        // reached through /proc/self/fd; its cache is named after its real path's bytes.
        string folder = spec;
        NativePath full;
        if (NativePath.TryParsePersisted(spec, out var bytes))
        {
            full = bytes.Full();
            folder = full.Usable() ?? "";
        }
        else full = NativePath.Of(Path.GetFullPath(spec));
        if (folder.Length == 0 || !Directory.Exists(folder))
            throw new ArgumentException($"--data: '{(folder.Length == 0 ? full.Shown : spec)}' is neither a folder nor one of: shapes, fashion-mnist, fashion-mnist:DIR, mnist:DIR");
        string folderPath = Path.Combine(CacheFolder, $"folder-{Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(full.Bytes))[..12]}-{resolution}.rgcache");
        var (folderCache, report) = ImageFolder.PrepareCache(folder, resolution, folderPath);
        if (report.Skipped > 0 || report.Duplicates > 0 || report.FoldersSeenTwice > 0) notice(report.ToString());
        return new CachedImages(full.IsUtf8 ? Path.GetFullPath(spec) : full.Shown, folderCache);
    }

    private static IEnumerable<byte[]> Announce(Action<string> notice, string message, IEnumerable<byte[]> images)
    {
        notice(message);
        return images;
    }

    /// <summary>A 28x28 IDX image area-resized to the training resolution (8-bit, 1 x r x r).</summary>
    private static byte[] IdxToSquare(IdxImages images, int index, int resolution)
    {
        var image = new Imaging.Image(images.Width, images.Height, 1, images[index].ToArray());
        return Imaging.ImageOps.ResizeArea(image, resolution).Pixels;
    }
}
