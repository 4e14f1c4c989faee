using RawGan.Engine.Backends;
using RawGan.Engine.Backends.Cpu;

namespace RawGan.Engine.Tests;

/// <summary>
/// The CPU backend's Adam and EMA updates run sixteen parameters at a time with AVX-512 and the
/// rest one by one; both paths must give exactly the float arithmetic of the formula, written
/// out here in scalar C# in the kernel's order (m = b1 m + (1 - b1) g; v = b2 v + ((1 - b2) g) g;
/// p = p - (lr_t m) / (sqrt(v) + eps); ema = p + beta (ema - p)), bit for bit, on a length that is
/// not a multiple of 16 and spans several parallel chunks.
/// </summary>
public class CpuOptimizerTests
{
    [Fact]
    public void TheVectorUpdatesGiveTheScalarFormulaBitForBit()
    {
        var cpu = CpuBackend.Shared;
        const int n = 70_003;
        float[] p = ReferenceBackendHarness.Normal(n, 1), g = ReferenceBackendHarness.Normal(n, 2, 3f);
        float[] m = ReferenceBackendHarness.Normal(n, 3, 0.1f), v = ReferenceBackendHarness.Uniform(n, 4, 0, 0.2f), ema = ReferenceBackendHarness.Normal(n, 5);
        g[17] = float.NaN;
        const float lr = 0.003f, beta1 = 0.1f, beta2 = 0.99f, eps = 1e-8f, beta = 0.97f;
        const int step = 7;
        var r = ReferenceBackendHarness.Run(cpu, [p, g, m, v, [ReferenceBackendHarness.StepCount(step)], ema, ReferenceBackendHarness.SkipCount(0)], [], (b, q) =>
        {
            b.AdamUpdate(q[0], q[1], q[2], q[3], n, lr, beta1, beta2, eps, q[4], DeviceBuffer.Null, q[6]);
            b.EmaUpdate(q[5], q[0], n, beta, DeviceBuffer.Null, q[6]);
        });
        float lrT = (float)(lr * Math.Sqrt(1 - Math.Pow(beta2, step)) / (1 - Math.Pow(beta1, step)));
        long nonFinite = 0;
        for (int i = 0; i < n; i++)
        {
            float mi = beta1 * m[i] + (1 - beta1) * g[i];
            float vi = beta2 * v[i] + (1 - beta2) * g[i] * g[i];
            float pi = p[i] - lrT * mi / (MathF.Sqrt(vi) + eps);
            float ei = pi + beta * (ema[i] - pi);
            Assert.True(BitConverter.SingleToInt32Bits(pi) == BitConverter.SingleToInt32Bits(r[0][i]), $"p[{i}]: {pi:G9} against {r[0][i]:G9}");
            Assert.True(BitConverter.SingleToInt32Bits(mi) == BitConverter.SingleToInt32Bits(r[2][i]), $"m[{i}]");
            Assert.True(BitConverter.SingleToInt32Bits(vi) == BitConverter.SingleToInt32Bits(r[3][i]), $"v[{i}]");
            Assert.True(BitConverter.SingleToInt32Bits(ei) == BitConverter.SingleToInt32Bits(r[5][i]), $"ema[{i}]");
            nonFinite += (float.IsFinite(pi) ? 0 : 1) + (float.IsFinite(mi) ? 0 : 1) + (float.IsFinite(vi) ? 0 : 1) + (float.IsFinite(ei) ? 0 : 1);
        }
        Assert.Equal(4, nonFinite);   // the NaN gradient: p, m, v and the average
        Assert.Equal(nonFinite, System.Runtime.InteropServices.MemoryMarshal.Read<long>(System.Runtime.InteropServices.MemoryMarshal.AsBytes(r[6].AsSpan())));
    }
}
