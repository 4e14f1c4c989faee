namespace RawGan.Engine.Optim;

/// <summary>
/// An exponential moving average of parameters: average = current + beta (average - current),
/// one fused kernel per tensor (ProGAN keeps such an average of its generator, beta 0.999).
/// </summary>
public static class Ema
{
    /// <summary>One update of every tensor, unless <paramref name="skipIfNonFinite"/> has counted a
    /// non-finite value (decided on the device, like <see cref="Adam.Update"/>); with
    /// <paramref name="countNonFinite"/>, the kernels add to it how many new averages are not finite.</summary>
    public static void Update(IReadOnlyList<Tensor> average, IReadOnlyList<Tensor> current, float beta, NonFiniteCounter? skipIfNonFinite = null,
        NonFiniteCounter? countNonFinite = null)
    {
        if (average.Count != current.Count)
            throw new ArgumentException($"Ema: {average.Count} averages for {current.Count} tensors");
        for (int i = 0; i < current.Count; i++)
        {
            Tensor a = average[i], p = current[i];
            if (a.Shape != p.Shape) throw new ArgumentException($"Ema: tensor {i} is {a.Shape} in the average and {p.Shape} in the model");
            p.Backend.EmaUpdate(a.Buffer, p.Buffer, p.Length, beta, skipIfNonFinite?.Buffer ?? Backends.DeviceBuffer.Null,
                countNonFinite?.Buffer ?? Backends.DeviceBuffer.Null);
        }
    }
}
