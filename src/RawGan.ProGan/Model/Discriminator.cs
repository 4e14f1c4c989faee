using RawGan.Engine;
using RawGan.Engine.Autograd;
using RawGan.Engine.Backends;
using RawGan.ProGan.Nn;

namespace RawGan.ProGan.Model;

/// <summary>
/// ProGAN's discriminator (the critic of WGAN-GP; appendix A, table 2): fromRGB 1x1 conv + lrelu;
/// each block above 4x4: conv3x3 (nf(r-1)) -> lrelu -> conv3x3 (nf(r-2)) -> lrelu -> 2x2 average
/// pool; the 4x4 head: minibatch stddev (one more channel) -> conv3x3 -> lrelu -> dense (nf(1) x 16
/// -> nf(0)) -> lrelu -> dense (nf(0) -> 1, linear). No normalization.
/// </summary>
public sealed class Discriminator : Module
{
    private readonly Dictionary<int, EqualizedConv2d> _fromRgb = new();
    private readonly Dictionary<int, (EqualizedConv2d conv0, EqualizedConv2d conv1)> _blocks = new();
    private readonly EqualizedConv2d _headConv;
    private readonly EqualizedDense _headDense, _output;

    public Discriminator(IBackend backend, ProGanConfig config, Rng rng)
    {
        Config = config.Validate();
        Backend = backend;
        for (int r = config.MaxLevel; r >= 3; r--)
        {
            _fromRgb[r] = AddModule($"from_rgb.{1 << r}", new EqualizedConv2d(backend, rng, config.Channels, config.Nf(r - 1), 1, EqualizedLr.Sqrt2));
            var conv0 = AddModule($"blocks.{1 << r}.conv0", new EqualizedConv2d(backend, rng, config.Nf(r - 1), config.Nf(r - 1), 3, EqualizedLr.Sqrt2));
            var conv1 = AddModule($"blocks.{1 << r}.conv1", new EqualizedConv2d(backend, rng, config.Nf(r - 1), config.Nf(r - 2), 3, EqualizedLr.Sqrt2));
            _blocks[r] = (conv0, conv1);
        }
        int nf1 = config.Nf(1);
        _fromRgb[2] = AddModule("from_rgb.4", new EqualizedConv2d(backend, rng, config.Channels, nf1, 1, EqualizedLr.Sqrt2));
        _headConv = AddModule("head.conv", new EqualizedConv2d(backend, rng, nf1 + 1, nf1, 3, EqualizedLr.Sqrt2));
        _headDense = AddModule("head.dense", new EqualizedDense(backend, rng, nf1 * 16, config.Nf(0), EqualizedLr.Sqrt2));
        _output = AddModule("head.out", new EqualizedDense(backend, rng, config.Nf(0), 1, 1f));
    }

    public ProGanConfig Config { get; }
    public IBackend Backend { get; }

    private const float Slope = 0.2f;

    /// <summary>
    /// Critic scores [N, 1] for images [N, C, 2^level, 2^level]. During a fade-in the features
    /// entering the lower resolution are lerp(fromRGB_old(avgpool2x(img)), block_new(fromRGB_new(img)), alpha),
    /// blended after the new block's pool (section 3, figure 2).
    /// </summary>
    public Tensor Forward(Tensor images, int level, float alpha = 1f) => Forward(images, level, Fade.At(alpha));

    /// <summary>The same, with the fade given as <see cref="Fade"/> (alpha on the device in a training step).</summary>
    public Tensor Forward(Tensor images, int level, Fade fade)
    {
        if (level < 2 || level > Config.MaxLevel)
            throw new ArgumentException($"Discriminator: level {level} is outside 4..{Config.Resolution}px");
        int size = 1 << level;
        if (images.Shape.Rank != 4 || images.Shape[1] != Config.Channels || images.Shape[2] != size || images.Shape[3] != size)
            throw new ArgumentException($"Discriminator: images must be [N, {Config.Channels}, {size}, {size}] at level {level}, got {images.Describe()}");
        var x = _fromRgb[level].ForwardLeaky(images, Slope);
        for (int r = level; r >= 3; r--)
        {
            var (conv0, conv1) = _blocks[r];
            x = conv0.ForwardLeaky(x, Slope);
            x = Ops.AvgPool2x(conv1.ForwardLeaky(x, Slope));
            if (r == level && fade.Blends)
                x = fade.Blend(_fromRgb[level - 1].ForwardLeaky(Ops.AvgPool2x(images), Slope), x);
        }
        x = Ops.MinibatchStdDev(x, Config.MinibatchGroupSize);
        x = _headConv.ForwardLeaky(x, Slope);
        x = Ops.Reshape(x, new Shape(x.Shape[0], (int)(x.Length / x.Shape[0])));
        x = _headDense.ForwardLeaky(x, Slope);
        return _output.Forward(x);
    }
}
