using RawGan.Engine;
using RawGan.Engine.Autograd;
using RawGan.Engine.Backends;

namespace RawGan.ProGan.Nn;

/// <summary>
/// Equalized learning rate (ProGAN section 4.1): weights are stored as N(0, 1) samples and
/// multiplied at every forward pass by c = gain / sqrt(fan_in). Adam's per-parameter step then
/// means the same thing for every layer, whatever its fan-in. Biases start at 0, unscaled.
/// </summary>
public static class EqualizedLr
{
    public static readonly float Sqrt2 = MathF.Sqrt(2f);

    public static float Scale(float gain, long fanIn) => gain / MathF.Sqrt(fanIn);
}

/// <summary>A stride-1, 'same' convolution with an equalized-LR weight [out, in, k, k] and a bias [out].</summary>
public sealed class EqualizedConv2d : Module
{
    public EqualizedConv2d(IBackend backend, Rng rng, int inChannels, int outChannels, int kernel, float gain)
    {
        Weight = AddParameter("weight", Tensor.RandomNormal(backend, new Shape(outChannels, inChannels, kernel, kernel), rng));
        Bias = AddParameter("bias", Tensor.Zeros(backend, new Shape(outChannels)));
        Scale = EqualizedLr.Scale(gain, (long)inChannels * kernel * kernel);
    }

    public Tensor Weight { get; }
    public Tensor Bias { get; }
    /// <summary>The runtime multiplier gain / sqrt(in k k), applied inside the convolution kernel.</summary>
    public float Scale { get; }

    /// <summary>conv(x) + b, the bias added by the convolution's output pass (slope 1 of <see cref="Ops.Conv2dBiasLeakyRelu"/>).</summary>
    public Tensor Forward(Tensor x) => Ops.Conv2dBiasLeakyRelu(x, Weight, Scale, Bias, 1f);

    /// <summary>leaky_relu(conv(x) + b): the bias and the activation folded into the convolution's output
    /// pass, and one pass backward for the mask and the bias gradient (<see cref="Ops.Conv2dBiasLeakyRelu"/>).</summary>
    public Tensor ForwardLeaky(Tensor x, float slope) => Ops.Conv2dBiasLeakyRelu(x, Weight, Scale, Bias, slope);

    /// <summary>pixel_norm(leaky_relu(conv(x) + b)), the generator's layer: one call forward (the norm in
    /// the convolution's output store where the GPU can) and one pass backward for the norm, the mask
    /// and the bias gradient's input (<see cref="Ops.Conv2dBiasLeakyReluPixelNorm"/>).</summary>
    public Tensor ForwardLeakyPixelNorm(Tensor x, float slope) => Ops.Conv2dBiasLeakyReluPixelNorm(x, Weight, Scale, Bias, slope);
}

/// <summary>A dense layer with an equalized-LR weight [out, in] (PyTorch's layout) and a bias [out].</summary>
public sealed class EqualizedDense : Module
{
    /// <summary>A dense layer; <paramref name="biasFeatures"/> sizes the bias when it is not added
    /// here but after a reshape (G's first layer adds one bias per channel of its 4x4 output).</summary>
    public EqualizedDense(IBackend backend, Rng rng, int inFeatures, int outFeatures, float gain, int? biasFeatures = null)
    {
        Weight = AddParameter("weight", Tensor.RandomNormal(backend, new Shape(outFeatures, inFeatures), rng));
        Bias = AddParameter("bias", Tensor.Zeros(backend, new Shape(biasFeatures ?? outFeatures)));
        Scale = EqualizedLr.Scale(gain, inFeatures);
    }

    public Tensor Weight { get; }
    public Tensor Bias { get; }
    public float Scale { get; }

    /// <summary>y = scale x W^T + b, without the bias (for G's first layer, whose bias is per channel after the reshape).</summary>
    public Tensor ForwardNoBias(Tensor x) => Ops.MatMul(x, Weight, transB: true, alpha: Scale);

    public Tensor Forward(Tensor x) => Ops.Add(ForwardNoBias(x), Bias);

    /// <summary>leaky_relu(x W^T + b) with the bias and the activation in one pass each way.</summary>
    public Tensor ForwardLeaky(Tensor x, float slope) => Ops.BiasLeakyRelu(ForwardNoBias(x), Bias, slope);
}
