using RawGan.Engine.Backends;
using RawGan.Engine.Backends.Reference;

namespace RawGan.Benchmarks.Reference;

/// <summary>
/// The naive baselines of the benchmarks: <see cref="ReferenceBackend"/>'s plain loops (one
/// thread, no SIMD, no tiling, sums in double), run on the benchmarks' float arrays. They define
/// "correct" here too (every optimized variant is compared against them before it is timed) and
/// give the baseline of each speed-up. Layouts are RawGan's (row-major, NCHW, w [Cout, Cin, k, k]);
/// see IBackend for each formula.
/// </summary>
public static unsafe class NaiveKernels
{
    private static ReferenceBackend R => ReferenceBackend.Shared;

    /// <summary>An array seen as a buffer of the reference backend (which reads host memory). Only
    /// valid inside the <c>fixed</c> block that pins the array.</summary>
    private static DeviceBuffer B(float* p, float[] a) => new((nint)p, a.Length);

    /// <summary>C[m, n] = A[m, k] op(B), op(B) = B [k, n] or B^T (B stored [n, k]).</summary>
    public static void Gemm(int m, int n, int k, float[] a, float[] b, bool transB, float[] c)
    {
        fixed (float* pa = a, pb = b, pc = c) R.Gemm(false, transB, m, n, k, 1f, B(pa, a), B(pb, b), 0f, B(pc, c));
    }

    public static void ConvForward(float[] x, float[] w, float[] y, int n, int cin, int h, int wd, int cout, int k, float scale)
    {
        fixed (float* px = x, pw = w, py = y) R.Conv2dForward(B(px, x), B(pw, w), B(py, y), n, cin, h, wd, cout, k, scale);
    }

    public static void ConvBackwardInput(float[] gy, float[] w, float[] gx, int n, int cin, int h, int wd, int cout, int k, float scale)
    {
        fixed (float* pgy = gy, pw = w, pgx = gx) R.Conv2dBackwardInput(B(pgy, gy), B(pw, w), B(pgx, gx), n, cin, h, wd, cout, k, scale);
    }

    public static void ConvBackwardWeight(float[] x, float[] gy, float[] gw, int n, int cin, int h, int wd, int cout, int k, float scale)
    {
        fixed (float* px = x, pgy = gy, pgw = gw) R.Conv2dBackwardWeight(B(px, x), B(pgy, gy), B(pgw, gw), n, cin, h, wd, cout, k, scale);
    }

    public static void PixelNormForward(float[] x, float[] y, int n, int c, int plane, float eps)
    {
        fixed (float* px = x, py = y) R.PixelNormForward(B(px, x), B(py, y), n, c, plane, eps);
    }

    public static void PixelNormBackward(float[] x, float[] gy, float[] gx, int n, int c, int plane, float eps)
    {
        fixed (float* px = x, pgy = gy, pgx = gx) R.PixelNormBackward(B(px, x), B(pgy, gy), B(pgx, gx), n, c, plane, eps);
    }

    public static void MinibatchStdDevForward(float[] x, float[] y, int n, int c, int plane, int group, float eps)
    {
        fixed (float* px = x, py = y) R.MinibatchStdDevForward(B(px, x), B(py, y), n, c, plane, group, eps);
    }

    public static void MinibatchStdDevBackward(float[] x, float[] gy, float[] gx, int n, int c, int plane, int group, float eps)
    {
        fixed (float* px = x, pgy = gy, pgx = gx) R.MinibatchStdDevBackward(B(px, x), B(pgy, gy), B(pgx, gx), n, c, plane, group, eps);
    }

    public static void Upsample2x(float[] x, float[] y, int planes, int h, int w, float gain)
    {
        fixed (float* px = x, py = y) R.Upsample2x(B(px, x), B(py, y), planes, h, w, gain);
    }

    public static void AvgPool2x(float[] x, float[] y, int planes, int h, int w, float gain)
    {
        fixed (float* px = x, py = y) R.AvgPool2x(B(px, x), B(py, y), planes, h, w, gain);
    }

    public static void GradientPenaltyForward(float[] g, float[] norm, float[] penalty, int samples, int inner, float target)
    {
        fixed (float* pg = g, pn = norm, pp = penalty) R.GradientPenaltyForward(B(pg, g), B(pn, norm), B(pp, penalty), samples, inner, target);
    }

    public static void GradientPenaltyBackward(float[] g, float[] norm, float[] gpenalty, float[] gg, int samples, int inner, float target)
    {
        fixed (float* pg = g, pn = norm, pgp = gpenalty, pgg = gg)
            R.GradientPenaltyBackward(B(pg, g), B(pn, norm), B(pgp, gpenalty), B(pgg, gg), samples, inner, target);
    }
}
