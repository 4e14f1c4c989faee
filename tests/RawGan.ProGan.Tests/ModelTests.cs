using RawGan.Engine;
using RawGan.Engine.Autograd;
using RawGan.Engine.Backends.Cpu;
using RawGan.ProGan.Model;

namespace RawGan.ProGan.Tests;

/// <summary>Layer shapes, parameter counts and the fade-in of ProGAN's generator and discriminator.</summary>
public class ModelTests
{
    private static readonly CpuBackend Cpu = CpuBackend.Shared;

    /// <summary>Parameters of the paper's networks counted from the architecture table (appendix A,
    /// table 2), independently of the classes under test: weights and biases of every layer, and a
    /// toRGB / fromRGB per resolution.</summary>
    private static (long g, long d) CountByHand(ProGanConfig c)
    {
        long Conv(long cin, long cout, long k) => cin * cout * k * k + cout;
        int nf1 = c.Nf(1), ch = c.Channels;
        long g = (long)c.LatentSize * nf1 * 16 + nf1     // dense to 4x4, bias per channel
               + Conv(nf1, nf1, 3) + Conv(nf1, ch, 1);   // conv 4x4, toRGB 4x4
        long d = Conv(ch, nf1, 1) + Conv(nf1 + 1, nf1, 3) // fromRGB 4x4, conv after mbstd
               + (long)nf1 * 16 * c.Nf(0) + c.Nf(0)       // dense
               + c.Nf(0) + 1;                             // output
        for (int r = 3; r <= c.MaxLevel; r++)
        {
            g += Conv(c.Nf(r - 2), c.Nf(r - 1), 3) + Conv(c.Nf(r - 1), c.Nf(r - 1), 3) + Conv(c.Nf(r - 1), ch, 1);
            d += Conv(ch, c.Nf(r - 1), 1) + Conv(c.Nf(r - 1), c.Nf(r - 1), 3) + Conv(c.Nf(r - 1), c.Nf(r - 2), 3);
        }
        return (g, d);
    }

    [Fact]
    public void ThePaperNetworkAt1024HasAbout23Point1MillionParametersInEachOfGAndD()
    {
        var config = ProGanConfig.Paper(1024);
        // Channels per resolution, as in the paper: 512 up to 32px, then halving down to 16 at 1024px.
        Assert.Equal([512, 512, 512, 512, 256, 128, 64, 32, 16], Enumerable.Range(2, 9).Select(r => config.Nf(r - 1)).ToArray());
        using var g = new Generator(Cpu, config, new Rng(1));
        using var d = new Discriminator(Cpu, config, new Rng(2));
        var (gByHand, dByHand) = CountByHand(config);
        Assert.Equal(gByHand, g.ParameterCount);
        Assert.Equal(dByHand, d.ParameterCount);
        Assert.InRange(g.ParameterCount, 23_000_000, 23_200_000);
        Assert.InRange(d.ParameterCount, 23_000_000, 23_200_000);
        // PyTorch layouts: conv [out, in, k, k], dense [out, in].
        var names = g.NamedParameters().ToDictionary(p => p.Name, p => p.Tensor.Shape);
        Assert.Equal(new Shape(512 * 16, 512), names["latent_dense.weight"]);
        Assert.Equal(new Shape(512), names["latent_dense.bias"]);
        Assert.Equal(new Shape(16, 32, 3, 3), names["blocks.1024.conv0.weight"]);
        Assert.Equal(new Shape(3, 16, 1, 1), names["to_rgb.1024.weight"]);
        var dn = d.NamedParameters().ToDictionary(p => p.Name, p => p.Tensor.Shape);
        Assert.Equal(new Shape(512, 513, 3, 3), dn["head.conv.weight"]);
        Assert.Equal(new Shape(1, 512), dn["head.out.weight"]);
    }

    [Theory]
    [InlineData(4)]
    [InlineData(16)]
    [InlineData(64)]
    public void OutputShapesAtEveryLevel(int resolution)
    {
        var config = ProGanConfig.Tiny(resolution);
        using var g = new Generator(Cpu, config, new Rng(1));
        using var d = new Discriminator(Cpu, config, new Rng(2));
        using var scope = new Scope();
        using var _ = Tape.NoGrad();
        var z = Tensor.RandomNormal(Cpu, new Shape(4, config.LatentSize), new Rng(3));
        for (int level = 2; level <= config.MaxLevel; level++)
        {
            var img = g.Forward(z, level);
            Assert.Equal(new Shape(4, 3, 1 << level, 1 << level), img.Shape);
            Assert.Equal(new Shape(4, 1), d.Forward(img, level).Shape);
        }
    }

    [Fact]
    public void EqualizedLearningRateGains()
    {
        var config = ProGanConfig.Tiny(8);
        using var g = new Generator(Cpu, config, new Rng(1));
        // Weights are N(0, 1) at initialization, biases 0.
        var w = g.NamedParameters().First(p => p.Name == "blocks.8.conv0.weight").Tensor.ToArray();
        Assert.Equal(0, w.Average(), 1);
        Assert.Equal(1, Math.Sqrt(w.Select(v => (double)v * v).Average()), 1);
        Assert.All(g.NamedParameters().Where(p => p.Name.EndsWith(".bias")), p => Assert.All(p.Tensor.ToArray(), v => Assert.Equal(0f, v)));
        Assert.Equal(MathF.Sqrt(2) / MathF.Sqrt(config.Nf(1) * 9), new Nn.EqualizedConv2d(Cpu, new Rng(1), config.Nf(1), 4, 3, MathF.Sqrt(2)).Scale, 6);
    }

    [Fact]
    public void FadeInAtAlphaZeroIsTheLowerResolutionNetworkAndAtOneTheNewOne()
    {
        var config = ProGanConfig.Tiny(16);
        using var g = new Generator(Cpu, config, new Rng(1));
        using var d = new Discriminator(Cpu, config, new Rng(2));
        // Non-zero biases so that every layer matters.
        foreach (var (_, t) in g.NamedParameters().Concat(d.NamedParameters()))
            t.CopyFrom(t.ToArray().Select((v, i) => v + 0.05f * (i % 7 - 3)).ToArray());
        using var scope = new Scope();
        using var _ = Tape.NoGrad();
        var z = Tensor.RandomNormal(Cpu, new Shape(4, config.LatentSize), new Rng(3));
        int level = 4;
        // G at alpha 0 is the 8x8 network upsampled; at alpha 1 the 16x16 network.
        Assert.Equal(Ops.Upsample2x(g.Forward(z, level - 1)).ToArray(), g.Forward(z, level, 0f).ToArray());
        AssertClose(g.Forward(z, level, 1f).ToArray(), g.Forward(z, level, 0.9999999f).ToArray(), 1e-4);
        var halfway = g.Forward(z, level, 0.5f).ToArray();
        var a = Ops.Upsample2x(g.Forward(z, level - 1)).ToArray();
        var b = g.Forward(z, level).ToArray();
        AssertClose(halfway, a.Zip(b, (x, y) => 0.5f * (x + y)).ToArray(), 1e-5);

        // D at alpha 0 is the 8x8 critic applied to the average-pooled image; at alpha 1 the 16x16 critic.
        var img = Tensor.RandomNormal(Cpu, new Shape(4, 3, 16, 16), new Rng(4));
        Assert.Equal(d.Forward(Ops.AvgPool2x(img), level - 1).ToArray(), d.Forward(img, level, 0f).ToArray());
        AssertClose(d.Forward(img, level).ToArray(), d.Forward(img, level, 0.9999999f).ToArray(), 1e-4);
    }

    private static void AssertClose(float[] expected, float[] actual, double tol)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
            Assert.True(Math.Abs(expected[i] - actual[i]) <= tol * Math.Max(1, Math.Abs(expected[i])), $"element {i}: {expected[i]} vs {actual[i]}");
    }

    [Fact]
    public void BadConfigurationsAreNamed()
    {
        Assert.Contains("power of two", Assert.Throws<ArgumentException>(() => ProGanConfig.Small(48).Validate()).Message);
        Assert.Contains("2048", Assert.Throws<ArgumentException>(() => ProGanConfig.Small(2048).Validate()).Message);
        Assert.Contains("unknown preset", Assert.Throws<ArgumentException>(() => ProGanConfig.FromPreset("huge", 32, 3)).Message);
        using var g = new Generator(Cpu, ProGanConfig.Tiny(8), new Rng(1));
        using var scope = new Scope();
        var ex = Assert.Throws<ArgumentException>(() => g.Forward(Tensor.Zeros(Cpu, new Shape(2, 5)), 3));
        Assert.Contains("[2, 5]", ex.Message);
    }
}
