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
        foreach (var (network, name, elements) in Weights())
        {
            if (elements > int.MaxValue)
                throw new ArgumentException($"{network}'s tensor {name} would hold {Count(elements)} values, more than a tensor holds ({int.MaxValue:N0}); " +
                                            "lower --fmap-base, --fmap-max or --latent-size");
        }
        return this;
    }

    /// <summary>
    /// Every weight tensor of the generator and the critic (the network, the name, the element
    /// count), from the sizes alone in saturating 64-bit arithmetic, so that a configuration can be
    /// checked, and its memory estimated, before anything is allocated. The names and sizes are
    /// those <see cref="Generator"/> and <see cref="Discriminator"/> make.
    /// </summary>
    public IEnumerable<(string Network, string Name, long Elements)> Weights()
    {
        long c = Channels, nf0 = Nf(0), nf1 = Nf(1);
        yield return ("G", "latent_dense.weight", Mul(nf1, 16, LatentSize));
        yield return ("G", "latent_dense.bias", nf1);
        yield return ("G", "conv4.weight", Mul(nf1, nf1, 9));
        yield return ("G", "conv4.bias", nf1);
        yield return ("G", "to_rgb.4.weight", Mul(c, nf1));
        yield return ("G", "to_rgb.4.bias", c);
        for (int r = 3; r <= MaxLevel; r++)
        {
            long cin = Nf(r - 2), cout = Nf(r - 1);
            yield return ("G", $"blocks.{1 << r}.conv0.weight", Mul(cout, cin, 9));
            yield return ("G", $"blocks.{1 << r}.conv0.bias", cout);
            yield return ("G", $"blocks.{1 << r}.conv1.weight", Mul(cout, cout, 9));
            yield return ("G", $"blocks.{1 << r}.conv1.bias", cout);
            yield return ("G", $"to_rgb.{1 << r}.weight", Mul(c, cout));
            yield return ("G", $"to_rgb.{1 << r}.bias", c);
        }
        for (int r = 3; r <= MaxLevel; r++)
        {
            long here = Nf(r - 1), below = Nf(r - 2);
            yield return ("D", $"from_rgb.{1 << r}.weight", Mul(here, c));
            yield return ("D", $"from_rgb.{1 << r}.bias", here);
            yield return ("D", $"blocks.{1 << r}.conv0.weight", Mul(here, here, 9));
            yield return ("D", $"blocks.{1 << r}.conv0.bias", here);
            yield return ("D", $"blocks.{1 << r}.conv1.weight", Mul(below, here, 9));
            yield return ("D", $"blocks.{1 << r}.conv1.bias", below);
        }
        yield return ("D", "from_rgb.4.weight", Mul(nf1, c));
        yield return ("D", "from_rgb.4.bias", nf1);
        yield return ("D", "head.conv.weight", Mul(nf1, nf1 + 1, 9));
        yield return ("D", "head.conv.bias", nf1);
        yield return ("D", "head.dense.weight", Mul(nf0, nf1, 16));
        yield return ("D", "head.dense.bias", nf0);
        yield return ("D", "head.out.weight", nf0);
        yield return ("D", "head.out.bias", 1);
    }

    /// <summary>
    /// Multiply-adds of G and D together for one image at <paramref name="level"/> (stable,
    /// forward only): every weight of the blocks up to that resolution times the pixels it is
    /// applied at, the RGB layers of that resolution, the dense layers once. A measure of a step's
    /// work, e.g. to extrapolate its cost to a resolution not trained on yet.
    /// </summary>
    public long MultiplyAddsPerImage(int level)
    {
        long sum = 0;
        foreach (var (_, name, elements) in Weights())
        {
            if (name.EndsWith(".bias", StringComparison.Ordinal)) continue;
            long pixels;
            if (name.StartsWith("blocks.", StringComparison.Ordinal) || name.StartsWith("to_rgb.", StringComparison.Ordinal) || name.StartsWith("from_rgb.", StringComparison.Ordinal))
            {
                int side = int.Parse(name.Split('.')[1], System.Globalization.CultureInfo.InvariantCulture);
                if (side > 1 << level || !name.StartsWith("blocks.", StringComparison.Ordinal) && side != 1 << level) continue;
                pixels = (long)side * side;
            }
            else pixels = name is "conv4.weight" or "head.conv.weight" ? 16 : 1;
            long product = Mul(elements, pixels);
            sum = sum > long.MaxValue - product ? long.MaxValue : sum + product;
        }
        return sum;
    }

    /// <summary>Parameters of the generator (<paramref name="network"/> "G") or the critic ("D"), saturating.</summary>
    public long ParameterCount(string network) =>
        Weights().Where(w => w.Network == network).Aggregate(0L, (sum, w) => sum > long.MaxValue - w.Elements ? long.MaxValue : sum + w.Elements);

    /// <summary>
    /// Bytes that training holds for the weights alone, estimated: float32 G, its moving average,
    /// Adam's two moments and a gradient for each of G's parameters; D, its moments and gradients;
    /// and one host copy of everything while a checkpoint is written.
    /// </summary>
    [JsonIgnore]
    public long TrainingWeightBytes
    {
        get
        {
            long g = Mul(ParameterCount("G"), 6 * sizeof(float)), d = Mul(ParameterCount("D"), 5 * sizeof(float));
            return g > long.MaxValue - d ? long.MaxValue : g + d;
        }
    }

    /// <summary>Bytes a command that only runs the generator holds for its weights: one copy on the device, one on the host.</summary>
    [JsonIgnore] public long GeneratorWeightBytes => Mul(ParameterCount("G"), 2 * sizeof(float));

    internal static long Mul(params ReadOnlySpan<long> factors)
    {
        long product = 1;
        foreach (long f in factors)
        {
            if (f != 0 && product > long.MaxValue / f) return long.MaxValue;
            product *= f;
        }
        return product;
    }

    private static string Count(long n) => n == long.MaxValue ? "more than 9e18" : n.ToString("N0");

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
