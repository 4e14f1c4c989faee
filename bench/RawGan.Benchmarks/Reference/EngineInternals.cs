using System.Runtime.CompilerServices;
using RawGan.Engine.Backends;
using RawGan.Engine.Backends.Cpu;

namespace RawGan.Benchmarks.Reference;

/// <summary>
/// The engine's simple CPU paths, which CpuBackend only takes on a machine without AVX-512:
/// GemmPortable (tiled, Vector&lt;float&gt;) and the im2col / col2im of its convolution fallback.
/// They are internal to RawGan.Engine; [UnsafeAccessor] calls them as they are, without copying
/// their code here and without widening the engine's visibility. If one is renamed, the
/// benchmark's [GlobalSetup] fails with MissingMethodException naming it.
/// </summary>
public static unsafe class EngineInternals
{
    [UnsafeAccessor(UnsafeAccessorKind.Method, Name = "GemmPortable")]
    public static extern void GemmPortable(CpuBackend backend, bool transA, bool transB, int m, int n, int k, float alpha,
        DeviceBuffer a, DeviceBuffer b, float beta, DeviceBuffer c);

    /// <summary>col[(c k + a) k + b, pixel] = x[c, pixel shifted by (a - k/2, b - k/2)], 0 outside (one sample).</summary>
    [UnsafeAccessor(UnsafeAccessorKind.StaticMethod, Name = "Im2Col")]
    public static extern void Im2Col(CpuBackend? backend, float* x, float* col, int cin, int h, int w, int k);

    /// <summary>The adjoint of Im2Col: gx[c, pixel] = sum of the col entries that read it (one sample).</summary>
    [UnsafeAccessor(UnsafeAccessorKind.StaticMethod, Name = "Col2Im")]
    public static extern void Col2Im(CpuBackend? backend, float* col, float* gx, int cin, int h, int w, int k);
}

/// <summary>A row-major GEMM as IBackend.Gemm takes it.</summary>
public delegate void GemmFunction(bool transA, bool transB, int m, int n, int k, float alpha, DeviceBuffer a, DeviceBuffer b, float beta, DeviceBuffer c);

/// <summary>
/// Convolution the way CpuBackend's fallback does it (CpuBackend.Conv.cs, the branch taken
/// without AVX-512), one sample at a time: im2col into a [Cin k k, H W] matrix, then one GEMM.
/// The GEMM is a parameter, so the same path runs with the engine's portable GEMM (exactly the
/// fallback) or with the AVX-512 SGEMM (to separate the cost of materializing im2col from the
/// speed of the GEMM).
/// </summary>
public static unsafe class Im2ColConvolution
{
    public static GemmFunction Portable { get; } = (ta, tb, m, n, k, alpha, a, b, beta, c) =>
        EngineInternals.GemmPortable(CpuBackend.Shared, ta, tb, m, n, k, alpha, a, b, beta, c);

    public static GemmFunction Sgemm { get; } = CpuBackend.Shared.Gemm;

    private static DeviceBuffer Offset(DeviceBuffer b, long floats) => new(b.Address + (nint)(floats * sizeof(float)), b.Length - floats);

    private static float* P(DeviceBuffer b) => (float*)b.Address;

    /// <summary>y[s] = scale W [Cout, Cin k k] . im2col(x[s]).  <paramref name="col"/> holds Cin k k H W floats.</summary>
    public static void Forward(GemmFunction gemm, DeviceBuffer x, DeviceBuffer w, DeviceBuffer y, DeviceBuffer col,
        int n, int cin, int h, int wd, int cout, int k, float scale)
    {
        int plane = h * wd, ckk = cin * k * k;
        for (int s = 0; s < n; s++)
        {
            EngineInternals.Im2Col(null, P(Offset(x, (long)s * cin * plane)), P(col), cin, h, wd, k);
            gemm(false, false, cout, plane, ckk, scale, w, col, 0f, Offset(y, (long)s * cout * plane));
        }
    }

    /// <summary>gcol = scale W^T . gy[s]; gx[s] = col2im(gcol).</summary>
    public static void BackwardInput(GemmFunction gemm, DeviceBuffer gy, DeviceBuffer w, DeviceBuffer gx, DeviceBuffer col,
        int n, int cin, int h, int wd, int cout, int k, float scale)
    {
        int plane = h * wd, ckk = cin * k * k;
        for (int s = 0; s < n; s++)
        {
            gemm(true, false, ckk, plane, cout, scale, w, Offset(gy, (long)s * cout * plane), 0f, col);
            EngineInternals.Col2Im(null, P(col), P(Offset(gx, (long)s * cin * plane)), cin, h, wd, k);
        }
    }

    /// <summary>gW = sum over s of scale gy[s] . im2col(x[s])^T (the first sample writes, the rest accumulate).</summary>
    public static void BackwardWeight(GemmFunction gemm, DeviceBuffer x, DeviceBuffer gy, DeviceBuffer gw, DeviceBuffer col,
        int n, int cin, int h, int wd, int cout, int k, float scale)
    {
        int plane = h * wd, ckk = cin * k * k;
        for (int s = 0; s < n; s++)
        {
            EngineInternals.Im2Col(null, P(Offset(x, (long)s * cin * plane)), P(col), cin, h, wd, k);
            gemm(false, true, cout, ckk, plane, scale, Offset(gy, (long)s * cout * plane), col, s == 0 ? 0f : 1f, gw);
        }
    }
}
