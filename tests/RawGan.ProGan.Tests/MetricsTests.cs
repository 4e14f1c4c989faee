using RawGan.ProGan.Data;
using RawGan.ProGan.Metrics;

namespace RawGan.ProGan.Tests;

public class LaplacianPyramidTests
{
    private static readonly double[] Binomial = [1, 4, 6, 4, 1];

    /// <summary>Direct 5x5 convolution with scipy's "mirror" border (d c b | a b c d | c b a), one channel.</summary>
    private static double[,] Convolve(double[,] image, double scale)
    {
        int h = image.GetLength(0), w = image.GetLength(1);
        int Mirror(int i, int n) => i < 0 ? -i : i >= n ? 2 * n - 2 - i : i;
        var result = new double[h, w];
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
            {
                double sum = 0;
                for (int ky = 0; ky < 5; ky++)
                    for (int kx = 0; kx < 5; kx++)
                        sum += Binomial[ky] * Binomial[kx] / 256.0 * scale * image[Mirror(y + ky - 2, h), Mirror(x + kx - 2, w)];
                result[y, x] = sum;
            }
        return result;
    }

    private static double[,] ReferenceDown(double[,] image)
    {
        var blurred = Convolve(image, 1);
        int h = image.GetLength(0) / 2, w = image.GetLength(1) / 2;
        var result = new double[h, w];
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
                result[y, x] = blurred[2 * y, 2 * x];
        return result;
    }

    private static double[,] ReferenceUp(double[,] image)
    {
        int h = image.GetLength(0), w = image.GetLength(1);
        var spread = new double[2 * h, 2 * w];
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
                spread[2 * y, 2 * x] = image[y, x];
        return Convolve(spread, 4);
    }

    [Fact]
    public void LevelsMatchADirectTwoDimensionalConvolution()
    {
        const int size = 32, channels = 2;
        var random = new Random(3);
        var image = Enumerable.Range(0, channels * size * size).Select(_ => (float)random.Next(256)).ToArray();
        var pyramid = LaplacianPyramid.Build(image, channels, size, 3);
        Assert.Equal([channels * 32 * 32, channels * 16 * 16, channels * 8 * 8], pyramid.Select(l => l.Length));
        for (int c = 0; c < channels; c++)
        {
            var low0 = new double[size, size];
            for (int y = 0; y < size; y++)
                for (int x = 0; x < size; x++)
                    low0[y, x] = image[(c * size + y) * size + x];
            var low1 = ReferenceDown(low0);
            var low2 = ReferenceDown(low1);
            var detail0 = ReferenceUp(low1);
            var detail1 = ReferenceUp(low2);
            for (int y = 0; y < size; y++)
                for (int x = 0; x < size; x++)
                    Assert.Equal(low0[y, x] - detail0[y, x], pyramid[0][(c * size + y) * size + x], 3);
            for (int y = 0; y < 16; y++)
                for (int x = 0; x < 16; x++)
                    Assert.Equal(low1[y, x] - detail1[y, x], pyramid[1][(c * 16 + y) * 16 + x], 3);
            for (int y = 0; y < 8; y++)
                for (int x = 0; x < 8; x++)
                    Assert.Equal(low2[y, x], pyramid[2][(c * 8 + y) * 8 + x], 3);
        }
    }

    [Fact]
    public void ThePyramidReconstructsTheImage()
    {
        var random = new Random(4);
        var image = Enumerable.Range(0, 3 * 64 * 64).Select(_ => (float)random.NextDouble() * 255).ToArray();
        var pyramid = LaplacianPyramid.Build(image, 3, 64, 3);
        var reconstructed = pyramid[2];
        for (int level = 1; level >= 0; level--)
        {
            var up = LaplacianPyramid.Up(reconstructed, 3, 64 >> (level + 1));
            for (int i = 0; i < up.Length; i++)
                up[i] += pyramid[level][i];
            reconstructed = up;
        }
        for (int i = 0; i < image.Length; i++)
            Assert.True(Math.Abs(image[i] - reconstructed[i]) < 1e-3, $"{i}: {image[i]} vs {reconstructed[i]}");
    }
}

public class SlicedWassersteinTests
{
    private const int Resolution = 32;
    private static readonly int ImageSize = 3 * Resolution * Resolution;

    private static float[] Shapes(int first, int count)
    {
        var data = new ShapesDataset(seed: 0, count: 10_000);
        var batch = new float[count * ImageSize];
        Parallel.For(0, count, i => data.Render(first + i, Resolution).CopyTo(batch, i * ImageSize));
        return batch;
    }

    private static float[] Noise(int count, int seed)
    {
        var random = new Random(seed);
        return Enumerable.Range(0, count * ImageSize).Select(_ => (float)(random.NextDouble() * 2 - 1)).ToArray();
    }

    /// <summary>The images with uniform noise of ±0.15 added: fine detail changes, coarse structure does not.</summary>
    private static float[] WithFineNoise(float[] images)
    {
        var random = new Random(9);
        return images.Select(v => Math.Clamp(v + (float)(random.NextDouble() - 0.5) * 0.3f, -1f, 1f)).ToArray();
    }

    private static SwdDescriptorSet Describe(float[] images, int count, int seed)
    {
        var set = new SwdDescriptorSet(3, Resolution, seed);
        set.Add(images, count);
        return set;
    }

    [Fact]
    public void DistancesAreOrderedFromSelfToNoise()
    {
        const int count = 64;
        var reals = Describe(Shapes(0, count), count, seed: 1);
        var otherReals = Describe(Shapes(5000, count), count, seed: 2);
        var noisyReals = Describe(WithFineNoise(Shapes(5000, count)), count, seed: 2);
        var noise = Describe(Noise(count, 3), count, seed: 3);

        var self = SlicedWasserstein.Distance(reals, reals);
        var floor = SlicedWasserstein.Distance(reals, otherReals);
        var fineNoise = SlicedWasserstein.Distance(reals, noisyReals);
        var far = SlicedWasserstein.Distance(reals, noise);
        string all = $"floor {floor}; fine noise {fineNoise}; noise {far}";

        Assert.Equal([32, 16], self.Resolutions);
        Assert.All(self.PerLevel, d => Assert.Equal(0.0, d));
        for (int level = 0; level < 2; level++)
        {
            Assert.True(floor.PerLevel[level] > 0, all);
            Assert.True(far.PerLevel[level] > 3 * floor.PerLevel[level], all);
        }
        // Noise of ±0.15 lives in the finest octave: the 32px level sits well between the noise floor
        // and pure noise, while the 16px level (the low-pass) hardly moves from the floor.
        Assert.True(fineNoise.PerLevel[0] > 3 * floor.PerLevel[0] && fineNoise.PerLevel[0] < far.PerLevel[0], all);
        Assert.True(Math.Abs(fineNoise.PerLevel[1] - floor.PerLevel[1]) < 0.2 * floor.PerLevel[1], all);
        Assert.Equal(far.PerLevel.Average(), far.Mean, 12);
    }

    [Fact]
    public void MatchesAStraightforwardReferenceComputation()
    {
        // Same descriptors (gathered by the set), then everything else done the obvious way: normalize
        // with per-channel mean and std, project onto the same 512 directions, Array.Sort, average.
        const int count = 4;
        var a = Describe(Shapes(0, count), count, seed: 4);
        var b = Describe(Noise(count, 5), count, seed: 6);
        var result = SlicedWasserstein.Distance(a, b, seed: 9);
        for (int level = 0; level < 2; level++)
        {
            var descriptorsA = Normalized(a, level);
            var descriptorsB = Normalized(b, level);
            int length = a.DescriptorLength, patches = descriptorsA.Length / length;
            var directions = SlicedWasserstein.RandomDirections(length, 9, level);
            double total = 0;
            for (int d = 0; d < SlicedWasserstein.Directions; d++)
            {
                var projA = new double[patches];
                var projB = new double[patches];
                for (int p = 0; p < patches; p++)
                    for (int k = 0; k < length; k++)
                    {
                        projA[p] += descriptorsA[p * length + k] * directions[d * length + k];
                        projB[p] += descriptorsB[p * length + k] * directions[d * length + k];
                    }
                Array.Sort(projA);
                Array.Sort(projB);
                for (int p = 0; p < patches; p++)
                    total += Math.Abs(projA[p] - projB[p]);
            }
            double reference = 1e3 * total / (SlicedWasserstein.Directions * (double)patches);
            Assert.Equal(reference, result.PerLevel[level], reference * 1e-4);
        }
    }

    private static double[] Normalized(SwdDescriptorSet set, int level)
    {
        int length = set.DescriptorLength, patches = set.ImageCount * SlicedWasserstein.NeighbourhoodsPerImage, plane = 49;
        var descriptors = new double[patches * length];
        var one = new float[length];
        for (int p = 0; p < patches; p++)
        {
            set.Gather(level, p, one);
            for (int k = 0; k < length; k++)
                descriptors[p * length + k] = one[k];
        }
        for (int c = 0; c < set.Channels; c++)
        {
            var values = Enumerable.Range(0, patches).SelectMany(p => Enumerable.Range(c * plane, plane).Select(k => descriptors[p * length + k])).ToArray();
            double mean = values.Average(), std = Math.Sqrt(values.Average(v => (v - mean) * (v - mean)));
            for (int p = 0; p < patches; p++)
                for (int k = c * plane; k < (c + 1) * plane; k++)
                    descriptors[p * length + k] = (descriptors[p * length + k] - mean) / std;
        }
        return descriptors;
    }

    [Fact]
    public void ResultsDependOnlyOnImagesAndSeedsNotOnBatching()
    {
        const int count = 16;
        var images = Shapes(100, count);
        var whole = Describe(images, count, seed: 1);
        var split = new SwdDescriptorSet(3, Resolution, seed: 1);
        split.Add(images.AsSpan(0, 5 * ImageSize), 5);
        split.Add(images.AsSpan(5 * ImageSize), count - 5);
        var other = Describe(Noise(count, 2), count, seed: 2);
        Assert.Equal(SlicedWasserstein.Distance(whole, other, 3).PerLevel, SlicedWasserstein.Distance(split, other, 3).PerLevel);
        Assert.Equal(SlicedWasserstein.Compute(images, Noise(count, 2), count, 3, Resolution, 5).PerLevel,
                     SlicedWasserstein.Compute(images, Noise(count, 2), count, 3, Resolution, 5).PerLevel);
    }

    [Fact]
    public void BytesAndFloatsGiveTheSameDescriptors()
    {
        var data = new ShapesDataset(seed: 3);
        var bytes = data.RenderBytes(0, 16);
        var fromBytes = new SwdDescriptorSet(3, 16, seed: 1);
        fromBytes.Add(bytes, 1);
        var fromFloats = new SwdDescriptorSet(3, 16, seed: 1);
        fromFloats.Add(data.Render(0, 16), 1);
        Assert.Equal(0.0, SlicedWasserstein.Distance(fromBytes, fromFloats).Mean);
    }

    [Theory]
    [InlineData(4)]
    [InlineData(8)]
    [InlineData(64)]
    public void OtherResolutionsWork(int resolution)
    {
        var data = new ShapesDataset(seed: 1);
        int size = 3 * resolution * resolution;
        var images = new float[4 * size];
        for (int i = 0; i < 4; i++)
            data.Render(i, resolution).CopyTo(images, i * size);
        var random = new Random(1);
        var noise = images.Select(_ => (float)(random.NextDouble() * 2 - 1)).ToArray();
        var result = SlicedWasserstein.Compute(images, noise, 4, 3, resolution);
        Assert.Equal(SlicedWasserstein.LevelResolutions(resolution), result.Resolutions);
        Assert.All(result.PerLevel, d => Assert.True(double.IsFinite(d) && d > 0));
    }

    [Fact]
    public void RadixSortAgreesWithArraySort()
    {
        var random = new Random(2);
        var values = Enumerable.Range(0, 10_000).Select(i => i % 97 == 0 ? 0f : (float)(random.NextDouble() - 0.5) * MathF.Pow(10, random.Next(-5, 5))).ToList();
        values.AddRange([-0f, float.PositiveInfinity, float.NegativeInfinity, float.MaxValue, -float.MaxValue, float.Epsilon, -float.Epsilon]);
        var keys = values.Select(BitConverter.SingleToUInt32Bits).ToArray();
        SlicedWasserstein.ToSortableKeys(keys);
        SlicedWasserstein.RadixSort(keys, new uint[keys.Length]);
        var sorted = keys.Select(SlicedWasserstein.FromSortableKey).ToArray();
        var expected = values.ToArray();
        Array.Sort(expected);
        // -0 and +0 compare equal, so only their order may differ.
        Assert.Equal(expected.Select(v => v == 0 ? 0f : v), sorted.Select(v => v == 0 ? 0f : v));
    }

    [Fact]
    public void MismatchedSetsAreRefused()
    {
        var a = new SwdDescriptorSet(3, 16);
        a.Add(new float[2 * 3 * 256], 2);
        var b = new SwdDescriptorSet(3, 16);
        b.Add(new float[3 * 3 * 256], 3);
        Assert.Throws<ArgumentException>(() => SlicedWasserstein.Distance(a, b));
        Assert.Throws<ArgumentException>(() => SlicedWasserstein.Distance(a, new SwdDescriptorSet(1, 16)));
        Assert.Throws<ArgumentOutOfRangeException>(() => new SwdDescriptorSet(3, 24));
    }
}

public class MsSsimTests
{
    private static float[] RandomImage(int channels, int resolution, int seed)
    {
        var random = new Random(seed);
        return Enumerable.Range(0, channels * resolution * resolution).Select(_ => (float)(random.NextDouble() * 2 - 1)).ToArray();
    }

    [Fact]
    public void IdenticalImagesScoreOne()
    {
        var image = new ShapesDataset(seed: 1).Render(3, 32);
        Assert.Equal(1.0, MsSsim.Compute(image, image, 3, 32), 12);
    }

    [Fact]
    public void ConstantImagesFollowTheClosedForm()
    {
        // No variance anywhere: every contrast-structure term is c2/c2 = 1, and the coarsest SSIM is
        // the luminance term (2 μ1 μ2 + c1) / (μ1² + μ2² + c1); MS-SSIM is that to the power 0.1333.
        var a = Enumerable.Repeat(100 / 127.5f - 1, 3 * 16 * 16).ToArray();
        var b = Enumerable.Repeat(180 / 127.5f - 1, 3 * 16 * 16).ToArray();
        double c1 = Math.Pow(0.01 * 255, 2);
        double expected = Math.Pow((2 * 100.0 * 180 + c1) / (100.0 * 100 + 180.0 * 180 + c1), 0.1333);
        Assert.Equal(expected, MsSsim.Compute(a, b, 3, 16), 6);
    }

    [Fact]
    public void GaussianWindowIsMatlabsFspecial()
    {
        var taps = MsSsim.GaussianTaps(11, 1.5);
        Assert.Equal(1.0, taps.Sum(), 12);
        Assert.Equal(Math.Exp(1 / (2 * 1.5 * 1.5)), taps[5] / taps[4], 12);
        Assert.Equal(taps[0], taps[10], 15);
        var even = MsSsim.GaussianTaps(4, 4 * 1.5 / 11); // taps at -1.5, -0.5, 0.5, 1.5
        Assert.Equal(even[1], even[2], 15);
        Assert.Equal(Math.Exp((1.5 * 1.5 - 0.5 * 0.5) / (2 * Math.Pow(4 * 1.5 / 11, 2))), even[1] / even[0], 9);
    }

    [Fact]
    public void DissimilarImagesScoreLowerAndTheScoreIsSymmetric()
    {
        var image = new ShapesDataset(seed: 1).Render(3, 32);
        var random = new Random(1);
        var slightlyNoisy = image.Select(v => Math.Clamp(v + (float)(random.NextDouble() - 0.5) * 0.05f, -1f, 1f)).ToArray();
        var noise = RandomImage(3, 32, 2);
        double close = MsSsim.Compute(image, slightlyNoisy, 3, 32);
        double far = MsSsim.Compute(image, noise, 3, 32);
        Assert.InRange(close, 0.8, 1.0);
        Assert.True(far < 0.3, $"image vs noise: {far:F3}");
        Assert.Equal(far, MsSsim.Compute(noise, image, 3, 32), 12);
    }

    [Fact]
    public void MeanOverPairsComparesNeighbours()
    {
        var x = RandomImage(1, 16, 1);
        var y = RandomImage(1, 16, 2);
        Assert.Equal(1.0, MsSsim.MeanOverPairs([.. x, .. x, .. y, .. y], 4, 1, 16), 12);
        double diverse = MsSsim.MeanOverPairs([.. x, .. y, .. y, .. x], 4, 1, 16);
        Assert.True(diverse < 0.2, $"two noise images: {diverse:F3}");
        Assert.Throws<ArgumentOutOfRangeException>(() => MsSsim.Compute(new float[64], new float[64], 1, 8));
    }
}
