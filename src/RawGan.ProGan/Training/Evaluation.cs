using RawGan.Engine;
using RawGan.Engine.Autograd;
using RawGan.ProGan.Data;
using RawGan.ProGan.Metrics;
using RawGan.ProGan.Model;

namespace RawGan.ProGan.Training;

/// <summary>Metrics of a generator against the data (ProGAN section 5).</summary>
public static class Evaluation
{
    public sealed record Level(int Resolution, double Value);

    /// <summary>SWD x1e3 per pyramid level and their mean.</summary>
    public sealed record SwdResult(IReadOnlyList<Level> Levels, double Mean);

    /// <summary>Images from <paramref name="g"/> at its final resolution (or at <paramref name="level"/>), as host CHW floats in [-1, 1].</summary>
    public static float[] Generate(Generator g, int count, Rng rng, int batch = 64, int level = 0)
    {
        var cfg = g.Config;
        if (level == 0) level = cfg.MaxLevel;
        int per = cfg.Channels << (2 * level);
        var result = new float[(long)count * per];
        using var _ = Tape.NoGrad();
        for (int start = 0; start < count; start += batch)
        {
            int n = Math.Min(batch, count - start);
            using var scope = new Scope();
            var z = Tensor.RandomNormal(g.Backend, new Shape(n, cfg.LatentSize), rng);
            g.Forward(z, level).ToArray().CopyTo(result, (long)start * per);
        }
        return result;
    }

    /// <summary>Random distinct real images at <paramref name="resolution"/>.</summary>
    public static float[] Reals(ITrainingImages data, int count, int resolution, Rng rng)
    {
        count = Math.Min(count, data.Count);
        var order = Enumerable.Range(0, data.Count).ToArray();
        for (int i = 0; i < count; i++)
        {
            int j = i + rng.NextInt(data.Count - i);
            (order[i], order[j]) = (order[j], order[i]);
        }
        var result = new float[(long)count * data.Channels * resolution * resolution];
        var mirror = new bool[count];
        data.FillBatch(order.AsSpan(0, count), resolution, mirror, result);
        return result;
    }

    /// <summary>SWD between <paramref name="count"/> generated and <paramref name="count"/> real
    /// images, at the final resolution or, during training, at the resolution of <paramref name="level"/>.</summary>
    public static SwdResult Swd(Generator g, ITrainingImages data, int count, ulong seed, int level = 0)
    {
        if (level == 0) level = g.Config.MaxLevel;
        var rng = new Rng(seed ^ 0x53_5744UL);
        count = Math.Min(count, data.Count);
        var reals = Reals(data, count, 1 << level, rng);
        var fakes = Generate(g, count, rng, level: level);
        return Convert(SlicedWasserstein.Compute(reals, fakes, count, g.Config.Channels, 1 << level, (int)(seed & 0x7fffffff)));
    }

    /// <summary>The noise floor: SWD between two disjoint halves of the real data.</summary>
    public static SwdResult NoiseFloor(ITrainingImages data, int count, int resolution, ulong seed)
    {
        var rng = new Rng(seed ^ 0x464C_4F4FUL);
        count = Math.Min(count, data.Count / 2);
        var both = Reals(data, 2 * count, resolution, rng);
        int per = data.Channels * resolution * resolution;
        return Convert(SlicedWasserstein.Compute(both.AsSpan(0, count * per), both.AsSpan(count * per), count, data.Channels, resolution, (int)(seed & 0x7fffffff)));
    }

    public static SwdResult Convert(Metrics.SwdResult r) =>
        new(r.Resolutions.Select((res, i) => new Level(res, r.PerLevel[i])).ToList(), r.Mean);
}
