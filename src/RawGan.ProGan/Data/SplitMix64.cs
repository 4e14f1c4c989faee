namespace RawGan.ProGan.Data;

/// <summary>
/// A small, fast, seedable random number generator (SplitMix64, Steele, Lea and Flood 2014) for
/// the host-side code here: the procedural data set, patch positions and projection directions of
/// the metrics. Its output is fixed by its seed on every machine and .NET version, which
/// System.Random does not promise, so data sets and metric values are reproducible.
/// </summary>
public sealed class SplitMix64(ulong seed)
{
    private ulong _state = seed;

    /// <summary>Combines numbers (a seed and an index, say) into one well-mixed seed.</summary>
    public static ulong Mix(ulong a, ulong b)
    {
        var generator = new SplitMix64(a ^ 0x6A09E667F3BCC909UL);
        generator._state ^= generator.NextUInt64() ^ b;
        return generator.NextUInt64();
    }

    public ulong NextUInt64()
    {
        ulong z = _state += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    /// <summary>Uniform in [0, 1) with 53 random bits.</summary>
    public double NextDouble() => (NextUInt64() >> 11) * (1.0 / (1UL << 53));

    /// <summary>Uniform in [low, high).</summary>
    public double NextDouble(double low, double high) => low + (high - low) * NextDouble();

    /// <summary>Uniform integer in [0, n), without modulo bias (Lemire's multiply-and-reject).</summary>
    public int NextInt(int n)
    {
        if (n <= 0)
            throw new ArgumentOutOfRangeException(nameof(n), $"NextInt needs n > 0, got {n}");
        uint threshold = (uint)((1UL << 32) - (ulong)n) % (uint)n; // 2^32 mod n
        while (true)
        {
            ulong product = (ulong)(uint)NextUInt64() * (ulong)n;
            if ((uint)product >= threshold)
                return (int)(product >> 32);
        }
    }

    /// <summary>Uniform integer in [low, high).</summary>
    public int NextInt(int low, int high) => low + NextInt(high - low);

    /// <summary>A standard normal sample (Box-Muller; one of the pair is discarded for simplicity).</summary>
    public double NextGaussian()
    {
        double u1 = 1.0 - NextDouble(); // in (0, 1], so the logarithm is finite
        double u2 = NextDouble();
        return Math.Sqrt(-2.0 * Math.Log(u1)) * Math.Cos(2.0 * Math.PI * u2);
    }
}
