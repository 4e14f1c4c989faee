using System.Buffers.Binary;
using System.IO.MemoryMappedFiles;
using System.Security.Cryptography;
using System.Text;
using RawGan.ProGan.IO;

namespace RawGan.ProGan.Data;

/// <summary>
/// A prepared data set: every image at every resolution ProGAN trains at (4, 8, ..., R), as 8-bit
/// CHW, in one file. Training reads batches from it at the current resolution and never decodes or
/// resizes an image during a step. The official implementation prepares its data the same way
/// (one TFRecords file per resolution, dataset_tool.py).
///
/// Each lower resolution is the 2x2 box average of the one above, computed in floating point from
/// the full-resolution image and rounded only when stored, as the official tool does; it is
/// therefore also what average pooling the real images in the network would give.
///
/// File layout (little-endian):
/// <code>
///   0  "RGDSCACH"           magic (8 bytes)
///   8  uint32 version        (1)
///  12  uint32 channels       (1 grey or 3 RGB)
///  16  uint32 max resolution (R, a power of two, 4..1024)
///  20  uint32 0              (reserved)
///  24  int64 image count
///  32  32 bytes              SHA-256 of the source description (file names, sizes, dates, options)
///  64  images, one after another; each is its levels 4x4, 8x8, ..., RxR, each channels x r x r bytes
/// </code>
/// The file is written atomically and memory-mapped for reading, so the operating system pages in
/// what training touches and the data set may be larger than memory.
/// </summary>
public sealed unsafe class DatasetCache : IDisposable
{
    public const int FormatVersion = 1;
    public const int HeaderSize = 64;

    /// <summary>A temporary file in the cache folder this old is a leftover even if a process of its
    /// writer's id is running (the id was reused): a preparation takes hours at most.</summary>
    public static readonly TimeSpan StaleTemporaryAge = TimeSpan.FromDays(2);
    private static ReadOnlySpan<byte> Magic => "RGDSCACH"u8;

    private readonly MemoryMappedFile _file;
    private readonly MemoryMappedViewAccessor _view;
    private readonly byte* _base;
    private readonly long[] _levelOffsets; // offset of each level inside one image's record, by log2(resolution)
    private bool _disposed;

    private DatasetCache(string path, MemoryMappedFile file, MemoryMappedViewAccessor view, byte* basePointer,
        long count, int channels, int maxResolution, byte[] sourceHash)
    {
        Path = path;
        _file = file;
        _view = view;
        _base = basePointer;
        Count = (int)count;
        Channels = channels;
        MaxResolution = maxResolution;
        SourceHash = sourceHash;
        _levelOffsets = LevelOffsets(channels, maxResolution, out long stride);
        ImageStride = stride;
    }

    public string Path { get; }
    public int Count { get; }
    public int Channels { get; }
    public int MaxResolution { get; }
    /// <summary>Bytes per image, all levels together.</summary>
    public long ImageStride { get; }
    /// <summary>The SHA-256 the cache was built with; compare it with the source's to tell whether the cache is stale.</summary>
    public byte[] SourceHash { get; }

    /// <summary>SHA-256 of a description of the source (one string per file or option, in order).</summary>
    public static byte[] HashSources(IEnumerable<string> parts)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        foreach (string part in parts)
        {
            hash.AppendData(Encoding.UTF8.GetBytes(part));
            hash.AppendData("\n"u8);
        }
        return hash.GetHashAndReset();
    }

    private static long[] LevelOffsets(int channels, int maxResolution, out long stride)
    {
        var offsets = new long[BitLength(maxResolution) + 1];
        stride = 0;
        for (int r = 4; r <= maxResolution; r *= 2)
        {
            offsets[BitLength(r)] = stride;
            stride += (long)channels * r * r;
        }
        return offsets;
    }

    private static int BitLength(int powerOfTwo) => System.Numerics.BitOperations.Log2((uint)powerOfTwo);

    private static void CheckResolution(int resolution, string name)
    {
        if (resolution < 4 || resolution > 1024 || (resolution & (resolution - 1)) != 0)
            throw new ArgumentOutOfRangeException(name, $"resolutions are powers of two from 4 to 1024, not {resolution}");
    }

    /// <summary>
    /// Writes a cache atomically from <paramref name="imagesAtMaxResolution"/> (each 8-bit CHW,
    /// <paramref name="channels"/> x R x R), computing the lower levels. Returns the image count.
    /// The images are consumed one at a time, so a source larger than memory works.
    /// </summary>
    public static long Write(string path, int channels, int maxResolution, byte[] sourceHash, IEnumerable<byte[]> imagesAtMaxResolution)
    {
        if (channels is not (1 or 3))
            throw new ArgumentOutOfRangeException(nameof(channels), $"a cache holds grey (1) or RGB (3) images, not {channels} channels");
        CheckResolution(maxResolution, nameof(maxResolution));
        if (sourceHash.Length != 32)
            throw new ArgumentException("the source hash is a 32-byte SHA-256", nameof(sourceHash));
        long count = 0;
        AtomicFile.Write(path, stream =>
        {
            stream.Write(BuildHeader(channels, maxResolution, 0, sourceHash));
            var record = new byte[LevelOffsetsStride(channels, maxResolution)];
            foreach (var image in imagesAtMaxResolution)
            {
                BuildRecord(image, channels, maxResolution, record);
                stream.Write(record);
                count++;
            }
            if (count == 0)
                throw new ArgumentException("a data set cache needs at least one image", nameof(imagesAtMaxResolution));
            // The count is known only now: patch it into the header.
            stream.Position = 0;
            stream.Write(BuildHeader(channels, maxResolution, count, sourceHash));
        });
        return count;
    }

    private static long LevelOffsetsStride(int channels, int maxResolution)
    {
        LevelOffsets(channels, maxResolution, out long stride);
        return stride;
    }

    private static byte[] BuildHeader(int channels, int maxResolution, long count, byte[] sourceHash)
    {
        var header = new byte[HeaderSize];
        Magic.CopyTo(header);
        BinaryPrimitives.WriteUInt32LittleEndian(header.AsSpan(8), FormatVersion);
        BinaryPrimitives.WriteUInt32LittleEndian(header.AsSpan(12), (uint)channels);
        BinaryPrimitives.WriteUInt32LittleEndian(header.AsSpan(16), (uint)maxResolution);
        BinaryPrimitives.WriteInt64LittleEndian(header.AsSpan(24), count);
        sourceHash.CopyTo(header, 32);
        return header;
    }

    /// <summary>One image's record: all levels from 4x4 up, each the 2x2 average of the float level above.</summary>
    private static void BuildRecord(byte[] image, int channels, int maxResolution, byte[] record)
    {
        if (image.Length != channels * maxResolution * maxResolution)
            throw new ArgumentException($"each image must be {channels}x{maxResolution}x{maxResolution} bytes, one is {image.Length}");
        var offsets = LevelOffsets(channels, maxResolution, out _);
        image.CopyTo(record, offsets[BitLength(maxResolution)]);
        var level = new float[image.Length];
        for (int i = 0; i < image.Length; i++)
            level[i] = image[i];
        for (int r = maxResolution / 2; r >= 4; r /= 2)
        {
            var smaller = new float[channels * r * r];
            int above = 2 * r;
            for (int c = 0; c < channels; c++)
                for (int y = 0; y < r; y++)
                    for (int x = 0; x < r; x++)
                    {
                        int i = (c * above + 2 * y) * above + 2 * x;
                        smaller[(c * r + y) * r + x] = (level[i] + level[i + 1] + level[i + above] + level[i + above + 1]) * 0.25f;
                    }
            long offset = offsets[BitLength(r)];
            for (int i = 0; i < smaller.Length; i++)
                record[offset + i] = (byte)Math.Clamp(MathF.Round(smaller[i]), 0f, 255f);
            level = smaller;
        }
    }

    /// <summary>
    /// Opens and validates a cache file. Throws <see cref="InvalidFileException"/> when it is not a
    /// cache of this version, or its length does not match its header (e.g. a foreign or damaged file).
    /// </summary>
    public static DatasetCache Open(string path)
    {
        long length = new FileInfo(path).Length;
        if (length < HeaderSize)
            throw new InvalidFileException(path, $"{length} bytes is too short for a data set cache header ({HeaderSize} bytes)");
        var header = new byte[HeaderSize];
        using (var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read))
            stream.ReadExactly(header);
        if (!header.AsSpan(0, 8).SequenceEqual(Magic))
            throw new InvalidFileException(path, "not a RawGan data set cache (wrong magic bytes)");
        uint version = BinaryPrimitives.ReadUInt32LittleEndian(header.AsSpan(8));
        if (version != FormatVersion)
            throw new InvalidFileException(path, $"data set cache version {version}; this RawGan reads version {FormatVersion} (delete the cache to rebuild it)");
        uint channels = BinaryPrimitives.ReadUInt32LittleEndian(header.AsSpan(12));
        uint maxResolution = BinaryPrimitives.ReadUInt32LittleEndian(header.AsSpan(16));
        long count = BinaryPrimitives.ReadInt64LittleEndian(header.AsSpan(24));
        if (channels is not (1 or 3))
            throw new InvalidFileException(path, $"header: {channels} channels (a cache holds 1 or 3)");
        if (maxResolution < 4 || maxResolution > 1024 || (maxResolution & (maxResolution - 1)) != 0)
            throw new InvalidFileException(path, $"header: maximum resolution {maxResolution} is not a power of two in 4..1024");
        LevelOffsets((int)channels, (int)maxResolution, out long stride);
        if (count <= 0 || count > int.MaxValue || (length - HeaderSize) / stride != count || (length - HeaderSize) % stride != 0)
            throw new InvalidFileException(path, $"header promises {count} images of {stride} bytes but the file holds {length - HeaderSize} bytes of images (truncated or damaged)");

        var file = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
        try
        {
            var view = file.CreateViewAccessor(0, length, MemoryMappedFileAccess.Read);
            byte* pointer = null;
            view.SafeMemoryMappedViewHandle.AcquirePointer(ref pointer);
            pointer += view.PointerOffset;
            return new DatasetCache(path, file, view, pointer, count, (int)channels, (int)maxResolution, header.AsSpan(32, 32).ToArray());
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Opens the cache at <paramref name="path"/> if it exists and was built from the same source
    /// (same hash, channels and resolution); otherwise (re)builds it from <paramref name="images"/>
    /// first. <paramref name="rebuilt"/> says which happened.
    /// </summary>
    public static DatasetCache OpenOrBuild(string path, int channels, int maxResolution, byte[] sourceHash,
        Func<IEnumerable<byte[]>> images, out bool rebuilt)
    {
        // A preparation killed mid-write (kill -9) leaves a hidden temporary as large as the cache.
        string? folder = System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(path));
        if (folder != null) AtomicFile.RemoveStaleTemporaries(folder, StaleTemporaryAge);
        if (File.Exists(path))
        {
            try
            {
                var existing = Open(path);
                if (existing.Channels == channels && existing.MaxResolution == maxResolution && existing.SourceHash.AsSpan().SequenceEqual(sourceHash))
                {
                    rebuilt = false;
                    return existing;
                }
                existing.Dispose();
            }
            catch (InvalidFileException)
            {
                // A damaged or old cache is simply rebuilt.
            }
        }
        Write(path, channels, maxResolution, sourceHash, images());
        rebuilt = true;
        return Open(path);
    }

    /// <summary>Image <paramref name="index"/> at <paramref name="resolution"/>, 8-bit CHW.</summary>
    public ReadOnlySpan<byte> GetImage(int index, int resolution)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if ((uint)index >= (uint)Count)
            throw new ArgumentOutOfRangeException(nameof(index), $"image {index} of a cache of {Count}");
        CheckResolution(resolution, nameof(resolution));
        if (resolution > MaxResolution)
            throw new ArgumentOutOfRangeException(nameof(resolution), $"this cache goes up to {MaxResolution}x{MaxResolution}, not {resolution}");
        long offset = HeaderSize + index * ImageStride + _levelOffsets[BitLength(resolution)];
        return new ReadOnlySpan<byte>(_base + offset, Channels * resolution * resolution);
    }

    /// <summary>
    /// Fills <paramref name="destination"/> (indices.Length x Channels x resolution x resolution) with
    /// the images in the network's range [-1, 1] (<c>u / 127.5 - 1</c>), each flipped left-to-right
    /// where <paramref name="mirror"/> says so (ProGAN's mirror augmentation draws each flag with
    /// probability 0.5; empty means no flips).
    /// </summary>
    public void GetBatch(ReadOnlySpan<int> indices, int resolution, ReadOnlySpan<bool> mirror, Span<float> destination)
    {
        int imageSize = Channels * resolution * resolution;
        if (destination.Length != indices.Length * imageSize)
            throw new ArgumentException($"{indices.Length} images of {Channels}x{resolution}x{resolution} need {indices.Length * imageSize} floats, the destination holds {destination.Length}");
        if (!mirror.IsEmpty && mirror.Length != indices.Length)
            throw new ArgumentException($"{mirror.Length} mirror flags for {indices.Length} images");
        for (int n = 0; n < indices.Length; n++)
        {
            var source = GetImage(indices[n], resolution);
            var target = destination.Slice(n * imageSize, imageSize);
            bool flip = !mirror.IsEmpty && mirror[n];
            for (int row = 0; row < Channels * resolution; row++)
            {
                var sourceRow = source.Slice(row * resolution, resolution);
                var targetRow = target.Slice(row * resolution, resolution);
                for (int x = 0; x < resolution; x++)
                    targetRow[x] = sourceRow[flip ? resolution - 1 - x : x] / 127.5f - 1f;
            }
        }
    }

    /// <summary>Allocating form of <see cref="GetBatch(ReadOnlySpan{int}, int, ReadOnlySpan{bool}, Span{float})"/>.</summary>
    public float[] GetBatch(int[] indices, int resolution, bool[]? mirror = null)
    {
        var result = new float[indices.Length * Channels * resolution * resolution];
        GetBatch(indices, resolution, mirror ?? [], result);
        return result;
    }

    public void Dispose()
    {
        if (_disposed)
            return;
        _disposed = true;
        _view.SafeMemoryMappedViewHandle.ReleasePointer();
        _view.Dispose();
        _file.Dispose();
    }
}
