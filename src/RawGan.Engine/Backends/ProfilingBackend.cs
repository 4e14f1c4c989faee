using System.Diagnostics;

namespace RawGan.Engine.Backends;

/// <summary>
/// Wraps a backend and times every kernel call (waiting for the device after each, so GPU times
/// are real): where a training step spends its time, per kernel. For `bench --profile`; not for
/// training, since the waits serialize the device.
/// </summary>
public sealed class ProfilingBackend(IBackend inner) : IBackend
{
    private readonly Dictionary<string, (long calls, long ticks)> _stats = new();

    public IBackend Inner { get; } = inner;
    public string Name => Inner.Name;
    public string Description => Inner.Description;
    public MemoryStats Memory => Inner.Memory;

    /// <summary>Calls and time per kernel, most time first. With <paramref name="byShape"/>, convolutions
    /// and matrix products are listed per shape ("Conv2dForward 3x3 32x32 128->128 N16") instead of per kernel.</summary>
    public IReadOnlyList<(string Kernel, long Calls, double Milliseconds)> Report(bool byShape = false) =>
        _stats.GroupBy(p => byShape ? p.Key : p.Key.Split(' ')[0])
            .Select(g => (g.Key, g.Sum(p => p.Value.calls), g.Sum(p => p.Value.ticks) * 1000.0 / Stopwatch.Frequency))
            .OrderByDescending(p => p.Item3).ToList();

    public void Reset() => _stats.Clear();

    private void Record(string kernel, long start)
    {
        Inner.Synchronize();
        long elapsed = Stopwatch.GetTimestamp() - start;
        var (calls, ticks) = _stats.GetValueOrDefault(kernel);
        _stats[kernel] = (calls + 1, ticks + elapsed);
    }

    public void Dispose() => Inner.Dispose();

    /// <summary>Matrix products per shape too: "Gemm 16x2048x128 NT" is C[16 x 2048] = A op(B) with k = 128, B transposed.</summary>
    private static string GemmName(bool transA, bool transB, int m, int n, int k) => $"Gemm {m}x{n}x{k} {(transA ? 'T' : 'N')}{(transB ? 'T' : 'N')}";

    /// <summary>Convolutions are reported per shape: their cost depends on it far more than other kernels'.</summary>
    private static string ConvName(string kernel, int n, int cin, int h, int w, int cout, int k) => $"{kernel} {k}x{k} {h}x{w} {cin}->{cout} N{n}";

    public DeviceBuffer Allocate(long length) { long t0 = Stopwatch.GetTimestamp(); var r = Inner.Allocate(length); Record("Allocate", t0); return r; }
    public void Free(DeviceBuffer buffer) { long t0 = Stopwatch.GetTimestamp(); Inner.Free(buffer); Record("Free", t0); }
    public void Upload(ReadOnlySpan<float> source, DeviceBuffer destination) { long t0 = Stopwatch.GetTimestamp(); Inner.Upload(source, destination); Record("Upload", t0); }
    public void Download(DeviceBuffer source, Span<float> destination) { long t0 = Stopwatch.GetTimestamp(); Inner.Download(source, destination); Record("Download", t0); }
    public void Copy(DeviceBuffer source, DeviceBuffer destination, long length) { long t0 = Stopwatch.GetTimestamp(); Inner.Copy(source, destination, length); Record("Copy", t0); }
    public void Synchronize() { long t0 = Stopwatch.GetTimestamp(); Inner.Synchronize(); Record("Synchronize", t0); }
    public void ReleaseCachedMemory() { long t0 = Stopwatch.GetTimestamp(); Inner.ReleaseCachedMemory(); Record("ReleaseCachedMemory", t0); }
    public void Fill(DeviceBuffer y, long n, float value) { long t0 = Stopwatch.GetTimestamp(); Inner.Fill(y, n, value); Record("Fill", t0); }
    public void Scale(DeviceBuffer x, DeviceBuffer y, long n, float a) { long t0 = Stopwatch.GetTimestamp(); Inner.Scale(x, y, n, a); Record("Scale", t0); }
    public void AddScalar(DeviceBuffer x, DeviceBuffer y, long n, float b) { long t0 = Stopwatch.GetTimestamp(); Inner.AddScalar(x, y, n, b); Record("AddScalar", t0); }
    public void Square(DeviceBuffer x, DeviceBuffer y, long n) { long t0 = Stopwatch.GetTimestamp(); Inner.Square(x, y, n); Record("Square", t0); }
    public void Sqrt(DeviceBuffer x, DeviceBuffer y, long n) { long t0 = Stopwatch.GetTimestamp(); Inner.Sqrt(x, y, n); Record("Sqrt", t0); }
    public void Rsqrt(DeviceBuffer x, DeviceBuffer y, long n) { long t0 = Stopwatch.GetTimestamp(); Inner.Rsqrt(x, y, n); Record("Rsqrt", t0); }
    public void Softplus(DeviceBuffer x, DeviceBuffer y, long n) { long t0 = Stopwatch.GetTimestamp(); Inner.Softplus(x, y, n); Record("Softplus", t0); }
    public void Sigmoid(DeviceBuffer x, DeviceBuffer y, long n) { long t0 = Stopwatch.GetTimestamp(); Inner.Sigmoid(x, y, n); Record("Sigmoid", t0); }
    public void LeakyReluForward(DeviceBuffer x, DeviceBuffer y, long n, float slope) { long t0 = Stopwatch.GetTimestamp(); Inner.LeakyReluForward(x, y, n, slope); Record("LeakyReluForward", t0); }
    public void LeakyReluBackward(DeviceBuffer x, DeviceBuffer gy, DeviceBuffer gx, long n, float slope) { long t0 = Stopwatch.GetTimestamp(); Inner.LeakyReluBackward(x, gy, gx, n, slope); Record("LeakyReluBackward", t0); }
    public void LerpScalar(DeviceBuffer a, DeviceBuffer b, DeviceBuffer y, long n, float t) { long t0 = Stopwatch.GetTimestamp(); Inner.LerpScalar(a, b, y, n, t); Record("LerpScalar", t0); }
    public void LerpPerSample(DeviceBuffer a, DeviceBuffer b, DeviceBuffer t, DeviceBuffer y, int samples, int inner) { long t0 = Stopwatch.GetTimestamp(); Inner.LerpPerSample(a, b, t, y, samples, inner); Record("LerpPerSample", t0); }
    public void Add(DeviceBuffer a, Dims4 aDims, DeviceBuffer b, Dims4 bDims, DeviceBuffer y, Dims4 yDims) { long t0 = Stopwatch.GetTimestamp(); Inner.Add(a, aDims, b, bDims, y, yDims); Record("Add", t0); }
    public void Sub(DeviceBuffer a, Dims4 aDims, DeviceBuffer b, Dims4 bDims, DeviceBuffer y, Dims4 yDims) { long t0 = Stopwatch.GetTimestamp(); Inner.Sub(a, aDims, b, bDims, y, yDims); Record("Sub", t0); }
    public void Mul(DeviceBuffer a, Dims4 aDims, DeviceBuffer b, Dims4 bDims, DeviceBuffer y, Dims4 yDims) { long t0 = Stopwatch.GetTimestamp(); Inner.Mul(a, aDims, b, bDims, y, yDims); Record("Mul", t0); }
    public void Div(DeviceBuffer a, Dims4 aDims, DeviceBuffer b, Dims4 bDims, DeviceBuffer y, Dims4 yDims) { long t0 = Stopwatch.GetTimestamp(); Inner.Div(a, aDims, b, bDims, y, yDims); Record("Div", t0); }
    public void BroadcastTo(DeviceBuffer x, Dims4 xDims, DeviceBuffer y, Dims4 yDims) { long t0 = Stopwatch.GetTimestamp(); Inner.BroadcastTo(x, xDims, y, yDims); Record("BroadcastTo", t0); }
    public void SumTo(DeviceBuffer x, Dims4 xDims, DeviceBuffer y, Dims4 yDims) { long t0 = Stopwatch.GetTimestamp(); Inner.SumTo(x, xDims, y, yDims); Record("SumTo", t0); }
    public void BiasLeakyRelu(DeviceBuffer x, DeviceBuffer b, DeviceBuffer y, int n, int c, int plane, float slope) { long t0 = Stopwatch.GetTimestamp(); Inner.BiasLeakyRelu(x, b, y, n, c, plane, slope); Record("BiasLeakyRelu", t0); }
    public void BiasLeakyReluBackward(DeviceBuffer y, DeviceBuffer gy, DeviceBuffer gx, DeviceBuffer gb, int n, int c, int plane, float slope) { long t0 = Stopwatch.GetTimestamp(); Inner.BiasLeakyReluBackward(y, gy, gx, gb, n, c, plane, slope); Record("BiasLeakyReluBackward", t0); }
    public void Gemm(bool transA, bool transB, int m, int n, int k, float alpha, DeviceBuffer a, DeviceBuffer b, float beta, DeviceBuffer c) { long t0 = Stopwatch.GetTimestamp(); Inner.Gemm(transA, transB, m, n, k, alpha, a, b, beta, c); Record(GemmName(transA, transB, m, n, k), t0); }
    public void Conv2dForwardPixelNorm(DeviceBuffer x, DeviceBuffer w, DeviceBuffer z, DeviceBuffer inv, int n, int cin, int h, int wd, int cout, int k, float scale, DeviceBuffer bias, float slope, float eps) { long t0 = Stopwatch.GetTimestamp(); Inner.Conv2dForwardPixelNorm(x, w, z, inv, n, cin, h, wd, cout, k, scale, bias, slope, eps); Record(ConvName("Conv2dForwardPixelNorm", n, cin, h, wd, cout, k), t0); }
    public void Conv2dForward(DeviceBuffer x, DeviceBuffer w, DeviceBuffer y, int n, int cin, int h, int wd, int cout, int k, float scale, DeviceBuffer bias = default, float slope = 1f) { long t0 = Stopwatch.GetTimestamp(); Inner.Conv2dForward(x, w, y, n, cin, h, wd, cout, k, scale, bias, slope); Record(ConvName("Conv2dForward", n, cin, h, wd, cout, k), t0); }
    public void Conv2dBackwardInput(DeviceBuffer gy, DeviceBuffer w, DeviceBuffer gx, int n, int cin, int h, int wd, int cout, int k, float scale) { long t0 = Stopwatch.GetTimestamp(); Inner.Conv2dBackwardInput(gy, w, gx, n, cin, h, wd, cout, k, scale); Record(ConvName("Conv2dBackwardInput", n, cin, h, wd, cout, k), t0); }
    public void Conv2dBackwardWeight(DeviceBuffer x, DeviceBuffer gy, DeviceBuffer gw, int n, int cin, int h, int wd, int cout, int k, float scale) { long t0 = Stopwatch.GetTimestamp(); Inner.Conv2dBackwardWeight(x, gy, gw, n, cin, h, wd, cout, k, scale); Record(ConvName("Conv2dBackwardWeight", n, cin, h, wd, cout, k), t0); }
    public void Upsample2x(DeviceBuffer x, DeviceBuffer y, int planes, int h, int w, float gain) { long t0 = Stopwatch.GetTimestamp(); Inner.Upsample2x(x, y, planes, h, w, gain); Record("Upsample2x", t0); }
    public void AvgPool2x(DeviceBuffer x, DeviceBuffer y, int planes, int h, int w, float gain) { long t0 = Stopwatch.GetTimestamp(); Inner.AvgPool2x(x, y, planes, h, w, gain); Record("AvgPool2x", t0); }
    public void CopyChannels(DeviceBuffer src, int srcChannels, int srcStart, DeviceBuffer dst, int dstChannels, int dstStart, int count, int samples, int plane) { long t0 = Stopwatch.GetTimestamp(); Inner.CopyChannels(src, srcChannels, srcStart, dst, dstChannels, dstStart, count, samples, plane); Record("CopyChannels", t0); }
    public void PixelNormForward(DeviceBuffer x, DeviceBuffer y, int n, int c, int plane, float eps, DeviceBuffer inv = default) { long t0 = Stopwatch.GetTimestamp(); Inner.PixelNormForward(x, y, n, c, plane, eps, inv); Record("PixelNormForward", t0); }
    public void PixelNormLeakyReluBackward(DeviceBuffer z, DeviceBuffer inv, DeviceBuffer gz, DeviceBuffer ga, DeviceBuffer gb, int n, int c, int plane, float slope) { long t0 = Stopwatch.GetTimestamp(); Inner.PixelNormLeakyReluBackward(z, inv, gz, ga, gb, n, c, plane, slope); Record("PixelNormLeakyReluBackward", t0); }
    public void PixelNormBackward(DeviceBuffer x, DeviceBuffer gy, DeviceBuffer gx, int n, int c, int plane, float eps) { long t0 = Stopwatch.GetTimestamp(); Inner.PixelNormBackward(x, gy, gx, n, c, plane, eps); Record("PixelNormBackward", t0); }
    public void MinibatchStdDevForward(DeviceBuffer x, DeviceBuffer y, int n, int c, int plane, int groupSize, float eps) { long t0 = Stopwatch.GetTimestamp(); Inner.MinibatchStdDevForward(x, y, n, c, plane, groupSize, eps); Record("MinibatchStdDevForward", t0); }
    public void MinibatchStdDevBackward(DeviceBuffer x, DeviceBuffer gy, DeviceBuffer gx, int n, int c, int plane, int groupSize, float eps) { long t0 = Stopwatch.GetTimestamp(); Inner.MinibatchStdDevBackward(x, gy, gx, n, c, plane, groupSize, eps); Record("MinibatchStdDevBackward", t0); }
    public void GradientPenaltyForward(DeviceBuffer g, DeviceBuffer norm, DeviceBuffer penalty, int samples, int inner, float target) { long t0 = Stopwatch.GetTimestamp(); Inner.GradientPenaltyForward(g, norm, penalty, samples, inner, target); Record("GradientPenaltyForward", t0); }
    public void GradientPenaltyBackward(DeviceBuffer g, DeviceBuffer norm, DeviceBuffer gpenalty, DeviceBuffer gg, int samples, int inner, float target) { long t0 = Stopwatch.GetTimestamp(); Inner.GradientPenaltyBackward(g, norm, gpenalty, gg, samples, inner, target); Record("GradientPenaltyBackward", t0); }
    public void AdamStep(DeviceBuffer step, DeviceBuffer skip) { long t0 = Stopwatch.GetTimestamp(); Inner.AdamStep(step, skip); Record("AdamStep", t0); }
    public void AdamUpdate(DeviceBuffer p, DeviceBuffer g, DeviceBuffer m, DeviceBuffer v, long n, float lr, float beta1, float beta2, float eps, DeviceBuffer step, DeviceBuffer skip, DeviceBuffer nonFiniteCount = default) { long t0 = Stopwatch.GetTimestamp(); Inner.AdamUpdate(p, g, m, v, n, lr, beta1, beta2, eps, step, skip, nonFiniteCount); Record("AdamUpdate", t0); }
    public void EmaUpdate(DeviceBuffer ema, DeviceBuffer p, long n, float beta, DeviceBuffer skip, DeviceBuffer nonFiniteCount = default) { long t0 = Stopwatch.GetTimestamp(); Inner.EmaUpdate(ema, p, n, beta, skip, nonFiniteCount); Record("EmaUpdate", t0); }
    public void CountNonFinite(DeviceBuffer x, long n, DeviceBuffer count) { long t0 = Stopwatch.GetTimestamp(); Inner.CountNonFinite(x, n, count); Record("CountNonFinite", t0); }
}
