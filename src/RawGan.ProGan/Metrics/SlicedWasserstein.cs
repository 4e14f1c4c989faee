using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using RawGan.Engine.Backends.Cpu;
using RawGan.ProGan.Data;

namespace RawGan.ProGan.Metrics;

/// <summary>Sliced Wasserstein distances x 10^3, one per pyramid level (finest first), and their mean.</summary>
public sealed record SwdResult(IReadOnlyList<int> Resolutions, IReadOnlyList<double> PerLevel, double Mean)
{
    /// <summary>For example "SWD x1e3: 32px 12.345, 16px 6.789, mean 9.567".</summary>
    public override string ToString() =>
        "SWD x1e3: " + string.Join(", ", Resolutions.Select((r, i) => $"{r}px {PerLevel[i]:F3}")) + $", mean {Mean:F3}";
}

/// <summary>
/// The local-patch statistics of a set of images that the sliced Wasserstein distance compares
/// (ProGAN paper, section 5). Images are added in any number of batches; for each image it keeps
/// the Laplacian pyramid and the positions of 128 random 7x7 neighbourhoods per level. A
/// neighbourhood's values (7 x 7 x channels) form its descriptor.
///
/// Images are taken as 8-bit values, as the official implementation sees them: float images in
/// [-1, 1] are first rounded to bytes exactly as a generated sample is saved
/// (<see cref="Imaging.ImageOps.ToByte"/>). Memory: about 4/3 x channels x resolution² floats per
/// image, so 10,000 RGB images at 64x64 take about 650 MB.
/// </summary>
public sealed class SwdDescriptorSet
{
    private readonly SplitMix64 _random;
    private readonly List<float[]>[] _levels;  // [level][image] -> pyramid level of that image
    private readonly List<int>[] _origins;     // [level][patch] -> y * r + x of the patch's top-left pixel
    private readonly object _statisticsLock = new();
    private (float[] Mean, float[] InverseStd)[]? _statistics;

    /// <param name="channels">1 (grey) or 3 (RGB), or any other count of channels.</param>
    /// <param name="resolution">Image size, a power of two from 4 up.</param>
    /// <param name="seed">Chooses the random neighbourhoods.</param>
    public SwdDescriptorSet(int channels, int resolution, int seed = 0)
    {
        if (channels < 1)
            throw new ArgumentOutOfRangeException(nameof(channels), $"images have at least one channel, got {channels}");
        if (resolution < 4 || (resolution & (resolution - 1)) != 0)
            throw new ArgumentOutOfRangeException(nameof(resolution), $"SWD works on power-of-two sizes from 4 up, not {resolution}");
        Channels = channels;
        Resolution = resolution;
        LevelResolutions = SlicedWasserstein.LevelResolutions(resolution);
        NeighbourhoodSize = Math.Min(SlicedWasserstein.NeighbourhoodSize, resolution - 1);
        _random = new SplitMix64(SplitMix64.Mix((ulong)(uint)seed, 0x5344));
        _levels = LevelResolutions.Select(_ => new List<float[]>()).ToArray();
        _origins = LevelResolutions.Select(_ => new List<int>()).ToArray();
    }

    public int Channels { get; }
    public int Resolution { get; }
    /// <summary>The pyramid levels' sizes, finest first (see <see cref="SlicedWasserstein.LevelResolutions"/>).</summary>
    public IReadOnlyList<int> LevelResolutions { get; }
    /// <summary>7, or 3 for 4x4 images, which have no room for 7x7 neighbourhoods.</summary>
    public int NeighbourhoodSize { get; }
    public int ImageCount => _levels[0].Count;
    /// <summary>Values per descriptor: neighbourhood² x channels.</summary>
    public int DescriptorLength => NeighbourhoodSize * NeighbourhoodSize * Channels;
    internal int PatchCount => ImageCount * SlicedWasserstein.NeighbourhoodsPerImage;

    /// <summary>Adds <paramref name="count"/> CHW float images in [-1, 1], one after another.</summary>
    public void Add(ReadOnlySpan<float> images, int count)
    {
        int imageSize = Channels * Resolution * Resolution;
        if (images.Length != count * imageSize)
            throw new ArgumentException($"{count} images of {Channels}x{Resolution}x{Resolution} are {count * imageSize} floats, got {images.Length}");
        var asBytes = new float[images.Length];
        for (int i = 0; i < images.Length; i++)
            asBytes[i] = Imaging.ImageOps.ToByte(images[i]);
        AddByteValued(asBytes, count);
    }

    /// <summary>Adds <paramref name="count"/> 8-bit CHW images, one after another (as a data set cache stores them).</summary>
    public void Add(ReadOnlySpan<byte> images, int count)
    {
        int imageSize = Channels * Resolution * Resolution;
        if (images.Length != count * imageSize)
            throw new ArgumentException($"{count} images of {Channels}x{Resolution}x{Resolution} are {count * imageSize} bytes, got {images.Length}");
        var values = new float[images.Length];
        for (int i = 0; i < images.Length; i++)
            values[i] = images[i];
        AddByteValued(values, count);
    }

    private void AddByteValued(float[] values, int count)
    {
        int imageSize = Channels * Resolution * Resolution;
        int levels = LevelResolutions.Count;
        // Neighbourhood positions are drawn in image order before the parallel part, so the set is the
        // same however the images are split into batches and however many cores there are.
        int perImage = SlicedWasserstein.NeighbourhoodsPerImage;
        var origins = new int[count, levels, perImage];
        for (int n = 0; n < count; n++)
            for (int level = 0; level < levels; level++)
            {
                int r = LevelResolutions[level], room = r - NeighbourhoodSize + 1;
                for (int p = 0; p < perImage; p++)
                {
                    int x = _random.NextInt(room), y = _random.NextInt(room);
                    origins[n, level, p] = y * r + x;
                }
            }

        var pyramids = new float[count][][];
        Parallel.For(0, count, CpuParallel.Options, n =>
            pyramids[n] = LaplacianPyramid.Build(values.AsSpan(n * imageSize, imageSize), Channels, Resolution, levels));

        lock (_statisticsLock)
        {
            for (int n = 0; n < count; n++)
                for (int level = 0; level < levels; level++)
                {
                    _levels[level].Add(pyramids[n][level]);
                    for (int p = 0; p < perImage; p++)
                        _origins[level].Add(origins[n, level, p]);
                }
            _statistics = null;
        }
    }

    /// <summary>
    /// Per level and channel, the mean and 1/std of all descriptor values of that channel (over every
    /// neighbourhood and every position in it), as the official code normalizes them.
    /// </summary>
    internal (float[] Mean, float[] InverseStd) Statistics(int level)
    {
        lock (_statisticsLock)
        {
            _statistics ??= new (float[], float[])[LevelResolutions.Count];
            if (_statistics[level].Mean is null)
                _statistics[level] = ComputeStatistics(level);
            return _statistics[level];
        }
    }

    private (float[] Mean, float[] InverseStd) ComputeStatistics(int level)
    {
        // A fixed number of chunks (not one per core) keeps the summation order, and so the result,
        // the same on every machine.
        const int Chunks = 16;
        var sums = new double[Chunks, Channels];
        var squares = new double[Chunks, Channels];
        int patches = PatchCount;
        Parallel.For(0, Chunks, CpuParallel.Options, chunk =>
        {
            int begin = (int)((long)patches * chunk / Chunks), end = (int)((long)patches * (chunk + 1) / Chunks);
            var descriptor = new float[DescriptorLength];
            int plane = NeighbourhoodSize * NeighbourhoodSize;
            for (int p = begin; p < end; p++)
            {
                Gather(level, p, descriptor);
                for (int c = 0; c < Channels; c++)
                {
                    double sum = 0, square = 0;
                    for (int k = c * plane; k < (c + 1) * plane; k++)
                    {
                        sum += descriptor[k];
                        square += (double)descriptor[k] * descriptor[k];
                    }
                    sums[chunk, c] += sum;
                    squares[chunk, c] += square;
                }
            }
        });
        var mean = new float[Channels];
        var inverseStd = new float[Channels];
        double n = (double)patches * NeighbourhoodSize * NeighbourhoodSize;
        for (int c = 0; c < Channels; c++)
        {
            double sum = 0, square = 0;
            for (int chunk = 0; chunk < Chunks; chunk++)
            {
                sum += sums[chunk, c];
                square += squares[chunk, c];
            }
            double m = sum / n;
            double variance = Math.Max(0, square / n - m * m);
            mean[c] = (float)m;
            // A channel with no variation at all (e.g. a detail level of flat images) has nothing to
            // normalize; dividing by its zero std would make NaNs, so it is left unscaled.
            inverseStd[c] = variance > 1e-12 ? (float)(1 / Math.Sqrt(variance)) : 1f;
        }
        return (mean, inverseStd);
    }

    /// <summary>Copies patch <paramref name="patch"/>'s raw values (channel, row, column order) into <paramref name="descriptor"/>.</summary>
    internal void Gather(int level, int patch, Span<float> descriptor)
    {
        int r = LevelResolutions[level], size = NeighbourhoodSize;
        var image = _levels[level][patch / SlicedWasserstein.NeighbourhoodsPerImage];
        int origin = _origins[level][patch];
        int k = 0;
        for (int c = 0; c < Channels; c++)
            for (int dy = 0; dy < size; dy++)
            {
                image.AsSpan(c * r * r + origin + dy * r, size).CopyTo(descriptor.Slice(k, size));
                k += size;
            }
    }
}

/// <summary>
/// Sliced Wasserstein distance between the local image statistics of two image sets, ProGAN's
/// measure of how well generated images match the training data at each scale (paper, section 5;
/// the official metrics/sliced_wasserstein.py is followed where the paper is brief):
/// <list type="number">
/// <item>Laplacian pyramid of each image, from full resolution down to 16x16; the 16x16 level is
/// the low-pass image (<see cref="LaplacianPyramid"/>).</item>
/// <item>128 random 7x7 neighbourhoods per image per level, each fully inside the level; its
/// 7 x 7 x channels values form a descriptor.</item>
/// <item>Each set's descriptors are normalized per colour channel with that set's own mean and
/// standard deviation (over all neighbourhoods and positions).</item>
/// <item>512 random unit directions (4 repeats of 128); both sets are projected onto each
/// direction, the projections sorted, and the mean absolute difference of the sorted lists is the
/// 1-D Wasserstein-1 distance along that direction. The distance is the average over directions.</item>
/// <item>Reported x 10^3 per level, and the mean over levels.</item>
/// </list>
/// Both sets must hold the same number of images (sorted lists are compared element by element).
/// The paper compares 16,384 images per side; the distance between two halves of the real data is
/// the noise floor any generator is judged against. Images smaller than 16x16 (where the official
/// code reports nothing) get a single level at their own size, with 3x3 neighbourhoods at 4x4.
/// Everything is deterministic given the seeds.
/// </summary>
public static class SlicedWasserstein
{
    public const int NeighbourhoodSize = 7;
    public const int NeighbourhoodsPerImage = 128;
    public const int DirectionRepeats = 4;
    public const int DirectionsPerRepeat = 128;
    public const int Directions = DirectionRepeats * DirectionsPerRepeat;
    public const int CoarsestResolution = 16;

    /// <summary>Pyramid level sizes for an image size: 64 → [64, 32, 16]; below 16 a single level [size].</summary>
    public static IReadOnlyList<int> LevelResolutions(int resolution)
    {
        var levels = new List<int>();
        for (int r = resolution; r >= CoarsestResolution; r /= 2)
            levels.Add(r);
        if (levels.Count == 0)
            levels.Add(resolution);
        return levels;
    }

    /// <summary>
    /// SWD between two image sets given as CHW floats in [-1, 1], <paramref name="count"/> images each.
    /// </summary>
    public static SwdResult Compute(ReadOnlySpan<float> imagesA, ReadOnlySpan<float> imagesB, int count, int channels, int resolution, int seed = 0)
    {
        var a = new SwdDescriptorSet(channels, resolution, seed);
        a.Add(imagesA, count);
        var b = new SwdDescriptorSet(channels, resolution, seed + 1);
        b.Add(imagesB, count);
        return Distance(a, b, seed);
    }

    /// <summary>
    /// SWD between two descriptor sets of the same image size, channels and count. Keep the set of
    /// real images and compare it with each new set of generated ones: its pyramids are built once.
    /// </summary>
    public static SwdResult Distance(SwdDescriptorSet a, SwdDescriptorSet b, int seed = 0)
    {
        if (a.Channels != b.Channels || a.Resolution != b.Resolution)
            throw new ArgumentException($"cannot compare {a.Channels}x{a.Resolution}² images with {b.Channels}x{b.Resolution}² images");
        if (a.ImageCount != b.ImageCount || a.ImageCount == 0)
            throw new ArgumentException($"SWD compares sets of equal, non-zero size; got {a.ImageCount} and {b.ImageCount} images");

        var perLevel = new double[a.LevelResolutions.Count];
        for (int level = 0; level < perLevel.Length; level++)
            perLevel[level] = 1e3 * LevelDistance(a, b, level, seed);
        return new SwdResult(a.LevelResolutions, perLevel, perLevel.Average());
    }

    private static double LevelDistance(SwdDescriptorSet a, SwdDescriptorSet b, int level, int seed)
    {
        int length = a.DescriptorLength, patches = a.PatchCount;
        var directions = RandomDirections(length, seed, level);

        // Projections are made a few directions at a time so that memory stays bounded (at most 16M
        // floats per set), whatever the number of images.
        int perPass = Math.Clamp((1 << 24) / patches / 16 * 16, 16, Directions);
        var projectionsA = new float[perPass * patches];
        var projectionsB = new float[perPass * patches];
        double total = 0;
        for (int first = 0; first < Directions; first += perPass)
        {
            int count = Math.Min(perPass, Directions - first);
            var block = directions.AsSpan(first * length, count * length);
            Project(a, level, block, count, projectionsA);
            Project(b, level, block, count, projectionsB);
            var distances = new double[count];
            Parallel.For(0, count, CpuParallel.Options,
                () => new uint[patches],
                (d, _, scratch) =>
                {
                    var keysA = MemoryMarshal.Cast<float, uint>(projectionsA.AsSpan(d * patches, patches));
                    var keysB = MemoryMarshal.Cast<float, uint>(projectionsB.AsSpan(d * patches, patches));
                    distances[d] = SortedDistance(keysA, keysB, scratch);
                    return scratch;
                },
                _ => { });
            foreach (double distance in distances)
                total += distance;
        }
        return total / ((double)Directions * patches);
    }

    /// <summary>
    /// 512 directions of <paramref name="length"/> components, Gaussian then scaled to unit length
    /// (which makes them uniform on the sphere), direction-major.
    /// </summary>
    internal static float[] RandomDirections(int length, int seed, int level)
    {
        var random = new SplitMix64(SplitMix64.Mix((ulong)(uint)seed, 0xD1 + (ulong)level));
        var directions = new float[Directions * length];
        var component = new double[length];
        for (int d = 0; d < Directions; d++)
        {
            double norm = 0;
            for (int k = 0; k < length; k++)
            {
                component[k] = random.NextGaussian();
                norm += component[k] * component[k];
            }
            norm = Math.Sqrt(norm);
            for (int k = 0; k < length; k++)
                directions[d * length + k] = (float)(component[k] / norm);
        }
        return directions;
    }

    /// <summary>
    /// Projects every normalized descriptor of <paramref name="set"/> at <paramref name="level"/> onto
    /// <paramref name="count"/> directions: output[d * patches + p] = ⟨descriptor p, direction d⟩.
    /// This is a (patches x length) by (length x count) matrix product; it runs on blocks of 64
    /// gathered descriptors, 4 descriptors x 16 directions at a time held in 8 SIMD registers.
    /// </summary>
    private static void Project(SwdDescriptorSet set, int level, ReadOnlySpan<float> directions, int count, float[] output)
    {
        const int BlockPatches = 64, TileDirections = 16;
        int length = set.DescriptorLength, patches = set.PatchCount;
        var (mean, inverseStd) = set.Statistics(level);
        int plane = set.NeighbourhoodSize * set.NeighbourhoodSize;

        // Directions transposed to [component][direction], padded to whole tiles with zeros.
        int paddedCount = (count + TileDirections - 1) / TileDirections * TileDirections;
        var transposed = new float[length * paddedCount];
        for (int d = 0; d < count; d++)
            for (int k = 0; k < length; k++)
                transposed[k * paddedCount + d] = directions[d * length + k];

        int blocks = patches / BlockPatches; // patches is a multiple of 128
        Parallel.For(0, blocks, CpuParallel.Options,
            () => new float[BlockPatches * length],
            (block, _, descriptors) =>
            {
                int firstPatch = block * BlockPatches;
                for (int p = 0; p < BlockPatches; p++)
                {
                    var descriptor = descriptors.AsSpan(p * length, length);
                    set.Gather(level, firstPatch + p, descriptor);
                    for (int c = 0; c < set.Channels; c++)
                        for (int k = c * plane; k < (c + 1) * plane; k++)
                            descriptor[k] = (descriptor[k] - mean[c]) * inverseStd[c];
                }
                for (int p = 0; p < BlockPatches; p += 4)
                    for (int d = 0; d < paddedCount; d += TileDirections)
                        ProjectTile(descriptors, p, length, transposed, paddedCount, d, count, output, firstPatch, patches);
                return descriptors;
            },
            _ => { });
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void ProjectTile(float[] descriptors, int p, int length, float[] transposed, int paddedCount, int d,
        int count, float[] output, int firstPatch, int patches)
    {
        var a00 = Vector256<float>.Zero; var a01 = Vector256<float>.Zero;
        var a10 = Vector256<float>.Zero; var a11 = Vector256<float>.Zero;
        var a20 = Vector256<float>.Zero; var a21 = Vector256<float>.Zero;
        var a30 = Vector256<float>.Zero; var a31 = Vector256<float>.Zero;
        ref float row0 = ref descriptors[p * length];
        ref float row1 = ref descriptors[(p + 1) * length];
        ref float row2 = ref descriptors[(p + 2) * length];
        ref float row3 = ref descriptors[(p + 3) * length];
        ref float directionBase = ref transposed[d];
        for (int k = 0; k < length; k++)
        {
            ref float w = ref Unsafe.Add(ref directionBase, k * paddedCount);
            var w0 = Vector256.LoadUnsafe(ref w);
            var w1 = Vector256.LoadUnsafe(ref w, 8);
            var x0 = Vector256.Create(Unsafe.Add(ref row0, k));
            var x1 = Vector256.Create(Unsafe.Add(ref row1, k));
            var x2 = Vector256.Create(Unsafe.Add(ref row2, k));
            var x3 = Vector256.Create(Unsafe.Add(ref row3, k));
            a00 = Vector256.MultiplyAddEstimate(x0, w0, a00); a01 = Vector256.MultiplyAddEstimate(x0, w1, a01);
            a10 = Vector256.MultiplyAddEstimate(x1, w0, a10); a11 = Vector256.MultiplyAddEstimate(x1, w1, a11);
            a20 = Vector256.MultiplyAddEstimate(x2, w0, a20); a21 = Vector256.MultiplyAddEstimate(x2, w1, a21);
            a30 = Vector256.MultiplyAddEstimate(x3, w0, a30); a31 = Vector256.MultiplyAddEstimate(x3, w1, a31);
        }
        int patch = firstPatch + p;
        Store(a00, a01, patch);
        Store(a10, a11, patch + 1);
        Store(a20, a21, patch + 2);
        Store(a30, a31, patch + 3);

        void Store(Vector256<float> low, Vector256<float> high, int target)
        {
            for (int j = 0; j < 16 && d + j < count; j++)
                output[(d + j) * patches + target] = j < 8 ? low.GetElement(j) : high.GetElement(j - 8);
        }
    }

    /// <summary>
    /// Sorts both projection lists (held as float bits) and returns the sum of absolute differences of
    /// their sorted values: the 1-D Wasserstein-1 distance times the list length.
    /// </summary>
    private static double SortedDistance(Span<uint> a, Span<uint> b, uint[] scratch)
    {
        ToSortableKeys(a);
        ToSortableKeys(b);
        RadixSort(a, scratch);
        RadixSort(b, scratch);
        double sum = 0;
        for (int i = 0; i < a.Length; i++)
            sum += Math.Abs((double)FromSortableKey(a[i]) - FromSortableKey(b[i]));
        return sum;
    }

    /// <summary>
    /// Maps float bit patterns to unsigned integers in the same order as the floats: negative floats
    /// have all bits flipped (so more negative sorts lower), positive ones only the sign bit.
    /// </summary>
    internal static void ToSortableKeys(Span<uint> bits)
    {
        for (int i = 0; i < bits.Length; i++)
        {
            uint v = bits[i];
            bits[i] = (v & 0x8000_0000u) != 0 ? ~v : v | 0x8000_0000u;
        }
    }

    internal static float FromSortableKey(uint key) =>
        BitConverter.UInt32BitsToSingle((key & 0x8000_0000u) != 0 ? key & 0x7FFF_FFFFu : ~key);

    /// <summary>
    /// Least-significant-digit radix sort of 32-bit keys, one byte per pass (four passes, so the
    /// result ends where it started). Linear time, several times faster than a comparison sort on
    /// the hundreds of thousands of projections per direction.
    /// </summary>
    internal static void RadixSort(Span<uint> keys, Span<uint> scratch)
    {
        Span<int> counts = stackalloc int[4 * 256];
        counts.Clear();
        foreach (uint key in keys)
        {
            counts[(int)(key & 0xFF)]++;
            counts[256 + (int)((key >> 8) & 0xFF)]++;
            counts[512 + (int)((key >> 16) & 0xFF)]++;
            counts[768 + (int)(key >> 24)]++;
        }
        var source = keys;
        var target = scratch[..keys.Length];
        for (int pass = 0; pass < 4; pass++)
        {
            var histogram = counts.Slice(pass * 256, 256);
            int shift = pass * 8;
            int offset = 0;
            for (int digit = 0; digit < 256; digit++)
            {
                int n = histogram[digit];
                histogram[digit] = offset;
                offset += n;
            }
            foreach (uint key in source)
                target[histogram[(int)((key >> shift) & 0xFF)]++] = key;
            var swap = source;
            source = target;
            target = swap;
        }
    }
}
