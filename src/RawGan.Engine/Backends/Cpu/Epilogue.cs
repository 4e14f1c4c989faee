using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace RawGan.Engine.Backends.Cpu;

/// <summary>
/// A layer's bias and leaky ReLU, applied by a convolution where it writes its output (kernels/conv.cu's
/// conv_epilogue, bias_leaky_relu of bias.cu): z = v + bias[o], then z if z &gt; 0 else slope z, for
/// output channel o (a row of the GEMM's C, a channel of Winograd's output). With no bias
/// (<see cref="None"/>) the output is left as it is. Every algorithm applies it to values it
/// has just computed and still holds in registers or L1, so the activations are written once.
/// </summary>
internal readonly unsafe struct Epilogue(float* bias, float slope)
{
    public static Epilogue None => default;

    public bool Active => bias != null;

    /// <summary>The epilogue of output channel <paramref name="o"/> for one value.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public float Apply(float v, int o)
    {
        float z = v + bias[o];
        return z > 0 ? z : slope * z;
    }

    /// <summary>The bias of output channel <paramref name="o"/> in every lane.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public Vector512<float> Broadcast(int o) => Vector512.Create(bias[o]);

    /// <summary>The biases of the 16 output channels from <paramref name="o0"/>, one per lane (0 from
    /// channel <paramref name="channels"/> on).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public Vector512<float> Lanes(int o0, int channels) =>
        Avx512F.MaskLoad(bias + o0, Vector512.LessThan(Vector512<int>.Indices, Vector512.Create(channels - o0)).AsSingle(), Vector512<float>.Zero);

    /// <summary>The epilogue of 16 values with their biases <paramref name="b"/> (from <see cref="Broadcast"/> or <see cref="Lanes"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public Vector512<float> Apply(Vector512<float> v, Vector512<float> b)
    {
        var z = v + b;
        return Vector512.ConditionalSelect(Vector512.GreaterThan(z, Vector512<float>.Zero), z, z * Vector512.Create(slope));
    }

    /// <summary>The bias of output channel <paramref name="o"/> in each of 8 lanes (the AVX2 GEMM's store).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public Vector256<float> Broadcast8(int o) => Vector256.Create(bias[o]);

    /// <summary>The epilogue of 8 values with their bias <paramref name="b"/> (from <see cref="Broadcast8"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public Vector256<float> Apply(Vector256<float> v, Vector256<float> b)
    {
        var z = v + b;
        return Vector256.ConditionalSelect(Vector256.GreaterThan(z, Vector256<float>.Zero), z, z * Vector256.Create(slope));
    }
}
