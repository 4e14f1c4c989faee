using RawGan.Engine;
using RawGan.Engine.Autograd;
using RawGan.Engine.Backends;
using RawGan.ProGan.Nn;

namespace RawGan.ProGan.Model;

/// <summary>
/// ProGAN's generator (paper section 2 and appendix A, table 2):
/// z ~ N(0, I) -> pixel norm -> dense to nf(1) x 4 x 4 (bias, lrelu, pixel norm) -> conv3x3 (lrelu,
/// pixel norm); each later block: nearest 2x upsample -> conv3x3 -> lrelu -> pixel norm -> conv3x3
/// -> lrelu -> pixel norm. toRGB is a linear 1x1 conv. No tanh. Every resolution keeps its toRGB,
/// so the network can be run at any level of the progressive schedule.
/// </summary>
public sealed class Generator : Module
{
    private readonly EqualizedDense _latentDense;
    private readonly EqualizedConv2d _conv4;
    private readonly Dictionary<int, (EqualizedConv2d conv0, EqualizedConv2d conv1)> _blocks = new();
    private readonly Dictionary<int, EqualizedConv2d> _toRgb = new();

    public Generator(IBackend backend, ProGanConfig config, Rng rng)
    {
        Config = config.Validate();
        Backend = backend;
        int nf1 = config.Nf(1);
        // G's first layer: gain sqrt(2)/4 with fan-in = latent size (official code), bias per channel after the reshape.
        _latentDense = AddModule("latent_dense", new EqualizedDense(backend, rng, config.LatentSize, nf1 * 16, EqualizedLr.Sqrt2 / 4, biasFeatures: nf1));
        _conv4 = AddModule("conv4", new EqualizedConv2d(backend, rng, nf1, nf1, 3, EqualizedLr.Sqrt2));
        _toRgb[2] = AddModule("to_rgb.4", new EqualizedConv2d(backend, rng, nf1, config.Channels, 1, 1f));
        for (int r = 3; r <= config.MaxLevel; r++)
        {
            int cin = config.Nf(r - 2), cout = config.Nf(r - 1);
            var conv0 = AddModule($"blocks.{1 << r}.conv0", new EqualizedConv2d(backend, rng, cin, cout, 3, EqualizedLr.Sqrt2));
            var conv1 = AddModule($"blocks.{1 << r}.conv1", new EqualizedConv2d(backend, rng, cout, cout, 3, EqualizedLr.Sqrt2));
            _blocks[r] = (conv0, conv1);
            _toRgb[r] = AddModule($"to_rgb.{1 << r}", new EqualizedConv2d(backend, rng, cout, config.Channels, 1, 1f));
        }
    }

    public ProGanConfig Config { get; }
    public IBackend Backend { get; }

    private const float Slope = 0.2f;

    /// <summary>Pixel norm of leaky_relu(conv(x) + b), the activation of every 3x3 convolution (section 4.2).</summary>
    private static Tensor Act(EqualizedConv2d conv, Tensor x) => conv.ForwardLeakyPixelNorm(x, Slope);

    /// <summary>
    /// Images [N, C, 2^level, 2^level] from latents [N, latent]. During a fade-in (alpha &lt; 1)
    /// the output is lerp(upsample2x(toRGB_old(x_old)), toRGB_new(block_new(x_old)), alpha)
    /// (section 3, figure 2).
    /// </summary>
    public Tensor Forward(Tensor z, int level, float alpha = 1f) => Forward(z, level, Fade.At(alpha));

    /// <summary>The same, with the fade given as <see cref="Fade"/> (alpha on the device in a training step).</summary>
    public Tensor Forward(Tensor z, int level, Fade fade)
    {
        if (level < 2 || level > Config.MaxLevel)
            throw new ArgumentException($"Generator: level {level} ({1 << Math.Clamp(level, 0, 30)}px) is outside 4..{Config.Resolution}px");
        if (z.Shape.Rank != 2 || z.Shape[1] != Config.LatentSize)
            throw new ArgumentException($"Generator: latents must be [N, {Config.LatentSize}], got {z.Describe()}");
        int n = z.Shape[0], nf1 = Config.Nf(1);
        var x = _latentDense.ForwardNoBias(Ops.PixelNorm(z));
        x = Ops.Reshape(x, new Shape(n, nf1, 4, 4));
        x = Ops.PixelNorm(Ops.BiasLeakyRelu(x, _latentDense.Bias, Slope));
        x = Act(_conv4, x);
        Tensor? previous = null;
        for (int r = 3; r <= level; r++)
        {
            previous = x;
            var (conv0, conv1) = _blocks[r];
            x = Act(conv0, Ops.Upsample2x(x));
            x = Act(conv1, x);
        }
        var image = _toRgb[level].Forward(x);
        if (level > 2 && fade.Blends)
            image = fade.Blend(Ops.Upsample2x(_toRgb[level - 1].Forward(previous!)), image);
        return image;
    }
}
