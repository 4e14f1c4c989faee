using RawGan.Engine;
using RawGan.Engine.Autograd;

namespace RawGan.ProGan.Model;

/// <summary>
/// How far a fade-in has come (section 3, figure 2): alpha, the weight of the new layers, either
/// as one number or as a tensor of one value per sample. The tensor form is what a training step
/// uses: the step's launches then read alpha from the device, so they are the same every step and
/// can be captured once as a CUDA graph while alpha moves on.
/// </summary>
public readonly record struct Fade
{
    private Fade(float alpha, Tensor? perSample) => (Alpha, PerSample) = (alpha, perSample);

    /// <summary>No fade: the new layers alone (alpha = 1).</summary>
    public static Fade None => new(1f, null);

    /// <summary>A fade at <paramref name="alpha"/> in [0, 1] (1: none).</summary>
    public static Fade At(float alpha) => new(alpha, null);

    /// <summary>A fade whose alpha the device holds, one value per sample ([N]).</summary>
    public static Fade OnDevice(Tensor alphaPerSample) => new(float.NaN, alphaPerSample);

    public float Alpha { get; }
    public Tensor? PerSample { get; }

    /// <summary>Whether the old layers take part (a fade in progress).</summary>
    public bool Blends => PerSample != null || Alpha < 1f;

    /// <summary>lerp(old, new, alpha) = old + alpha (new - old).</summary>
    public Tensor Blend(Tensor old, Tensor @new) => PerSample != null ? Ops.Lerp(old, @new, PerSample) : Ops.Lerp(old, @new, Alpha);
}
