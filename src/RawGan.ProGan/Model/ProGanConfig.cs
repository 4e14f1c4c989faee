using System.Text.Json.Serialization;

namespace RawGan.ProGan.Model;

/// <summary>
/// The sizes of a ProGAN. Channels of the block at resolution 2^r are nf(r - 1), with
/// nf(s) = min(FmapBase / 2^s, FmapMax) (ProGAN appendix A; official code).
/// </summary>
public sealed record ProGanConfig
{
    /// <summary>Final resolution: a power of two from 4 to 1024.</summary>
    public int Resolution { get; init; } = 32;
    public int Channels { get; init; } = 3;
    public int LatentSize { get; init; } = 128;
    public int FmapBase { get; init; } = 2048;
    public int FmapMax { get; init; } = 128;
    /// <summary>Minibatch standard deviation group size (official: 4).</summary>
    public int MinibatchGroupSize { get; init; } = 4;

    /// <summary>log2 of the final resolution.</summary>
    [JsonIgnore] public int MaxLevel => Log2(Resolution);

    public int Nf(int stage) => Math.Min(FmapBase >> Math.Min(stage, 30), FmapMax);

    public static int Log2(int resolution)
    {
        int r = 0;
        while ((1 << r) < resolution) r++;
        return r;
    }

    /// <summary>Throws <see cref="ArgumentException"/> naming the first impossible value.</summary>
    public ProGanConfig Validate()
    {
        if (Resolution < 4 || Resolution > 1024 || (Resolution & (Resolution - 1)) != 0)
            throw new ArgumentException($"resolution must be a power of two from 4 to 1024, got {Resolution}");
        if (Channels != 1 && Channels != 3) throw new ArgumentException($"images must have 1 or 3 channels, got {Channels}");
        if (LatentSize < 1) throw new ArgumentException($"latent size must be positive, got {LatentSize}");
        if (FmapBase < 1 || FmapMax < 1) throw new ArgumentException($"fmap-base and fmap-max must be positive, got {FmapBase} and {FmapMax}");
        if (Nf(MaxLevel - 1) < 1)
            throw new ArgumentException($"fmap-base {FmapBase} leaves no channels at {Resolution}x{Resolution}; raise it");
        if (MinibatchGroupSize < 1) throw new ArgumentException($"minibatch group size must be at least 1, got {MinibatchGroupSize}");
        return this;
    }

    /// <summary>The paper's network (fmap_base 8192, fmap_max 512, latent 512): 23.1M parameters in each of G and D at 1024.</summary>
    public static ProGanConfig Paper(int resolution, int channels = 3) =>
        new() { Resolution = resolution, Channels = channels, LatentSize = 512, FmapBase = 8192, FmapMax = 512 };

    /// <summary>A network sized for training on a CPU in minutes (latent 128, fmap_base 2048, fmap_max 128).</summary>
    public static ProGanConfig Small(int resolution, int channels = 3) =>
        new() { Resolution = resolution, Channels = channels, LatentSize = 128, FmapBase = 2048, FmapMax = 128 };

    /// <summary>Smaller still, for a first run that finishes in a few minutes on two cores.</summary>
    public static ProGanConfig Tiny(int resolution, int channels = 3) =>
        new() { Resolution = resolution, Channels = channels, LatentSize = 64, FmapBase = 512, FmapMax = 64 };

    public static readonly string[] Presets = ["paper", "small", "tiny"];

    public static ProGanConfig FromPreset(string preset, int resolution, int channels) => preset switch
    {
        "paper" => Paper(resolution, channels),
        "small" => Small(resolution, channels),
        "tiny" => Tiny(resolution, channels),
        _ => throw new ArgumentException($"unknown preset '{preset}': choose one of {string.Join(", ", Presets)}"),
    };
}
