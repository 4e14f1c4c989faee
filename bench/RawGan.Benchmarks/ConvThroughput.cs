using System.Diagnostics;
using System.Globalization;
using RawGan.Benchmarks.Infrastructure;
using RawGan.Engine.Backends;
using RawGan.Engine.Backends.Cpu;

namespace RawGan.Benchmarks;

/// <summary>
/// --conv: every CPU convolution algorithm on the convolutions of a real step (Sizes.cs), forward,
/// input gradient and weight gradient, in GFLOP/s counted as a direct convolution does
/// (2 N Cout Cin 9 H W), so that an algorithm doing fewer multiplies (Winograd) shows as faster.
/// Each algorithm's result is first compared with im2col's (max |difference| / max |value|
/// below 1e-4); then one untimed call, and calls until half a second has passed (at least 3):
/// the best call is reported, with the median beside it. Then a layer's forward pass both ways,
/// for each algorithm: the convolution followed by bias_leaky_relu over its output (two passes),
/// and the convolution with the bias and leaky ReLU as its epilogue (one), called alternately so
/// that both see the same machine. With <c>--cold</c> every timed call starts with its operands out of
/// the caches (a 256 MiB buffer is written first, outside the timing), as in a training step,
/// where each convolution reads activations that the layers before it pushed out; a method whose
/// passes over memory cost more shows it here and not with warm operands.
/// </summary>
public static class ConvThroughput
{
    private static readonly CpuBackend.ConvolutionAlgorithm[] Algorithms =
    [
        CpuBackend.ConvolutionAlgorithm.Im2Col, CpuBackend.ConvolutionAlgorithm.ImplicitGemm,
        CpuBackend.ConvolutionAlgorithm.Winograd, CpuBackend.ConvolutionAlgorithm.Winograd4,
        CpuBackend.ConvolutionAlgorithm.WinogradChannels,
    ];

    /// <summary>Runs the cases whose name contains <paramref name="only"/> (all when null).</summary>
    public static int Run(string? only = null, bool cold = false)
    {
        Console.WriteLine($"# {CpuBackend.Shared.Description}; threads {CpuParallel.Threads}; .NET {Environment.Version}{(cold ? "; operands cold (caches evicted before each call)" : "")}");
        _evict = cold ? new byte[256 << 20] : null;
        using var be = new CpuBackend();
        foreach (var c in ProGanSizes.Convolutions())
        {
            if (only != null && !c.ToString().Contains(only, StringComparison.OrdinalIgnoreCase)) continue;
            var x = Upload(be, CpuBuffers.Normal(c.InputLength, 1));
            var w = Upload(be, CpuBuffers.Normal(c.WeightLength, 2));
            var gy = Upload(be, CpuBuffers.Normal(c.OutputLength, 3));
            var y = be.Allocate(c.OutputLength);
            var gx = be.Allocate(c.InputLength);
            var gw = be.Allocate(c.WeightLength);
            var products = new (string Name, DeviceBuffer Output, long Length, Action Call)[]
            {
                ("forward", y, c.OutputLength, () => be.Conv2dForward(x, w, y, c.N, c.Cin, c.H, c.W, c.Cout, c.K, c.Scale)),
                ("input-grad", gx, c.InputLength, () => be.Conv2dBackwardInput(gy, w, gx, c.N, c.Cin, c.H, c.W, c.Cout, c.K, c.Scale)),
                ("weight-grad", gw, c.WeightLength, () => be.Conv2dBackwardWeight(x, gy, gw, c.N, c.Cin, c.H, c.W, c.Cout, c.K, c.Scale)),
            };
            foreach (var (name, output, length, call) in products)
            {
                float[]? reference = null;
                foreach (var algorithm in Algorithms)
                {
                    if (!Runs(algorithm)) continue;
                    be.Convolution = algorithm;
                    call();
                    var result = new float[length];
                    be.Download(output, result);
                    if (reference == null) reference = result;
                    else Verify(reference, result, $"{c} {name} {algorithm}");
                    var (best, median) = Measure(call);
                    Console.WriteLine(Invariant($"conv case=\"{c}\" product={name} algorithm={algorithm} gflops={c.Flops / best / 1e9:F1} median_gflops={c.Flops / median / 1e9:F1} ms={best * 1e3:F2}"));
                }
            }
            var bias = Upload(be, CpuBuffers.Normal(c.Cout, 4));
            var fusedY = be.Allocate(c.OutputLength);
            foreach (var algorithm in Algorithms)
            {
                if (!Runs(algorithm)) continue;
                be.Convolution = algorithm;
                void TwoPasses()
                {
                    be.Conv2dForward(x, w, y, c.N, c.Cin, c.H, c.W, c.Cout, c.K, c.Scale);
                    be.BiasLeakyRelu(y, bias, y, c.N, c.Cout, c.H * c.W, 0.2f);
                }
                void Fused() => be.Conv2dForward(x, w, fusedY, c.N, c.Cin, c.H, c.W, c.Cout, c.K, c.Scale, bias, 0.2f);
                TwoPasses();
                Fused();
                var (expected, actual) = (new float[c.OutputLength], new float[c.OutputLength]);
                be.Download(y, expected);
                be.Download(fusedY, actual);
                Verify(expected, actual, $"{c} layer forward {algorithm}");
                var (two, fused) = MeasurePair(TwoPasses, Fused);
                Console.WriteLine(Invariant($"conv case=\"{c}\" product=layer-forward algorithm={algorithm} two_pass_ms={two.best * 1e3:F2} fused_ms={fused.best * 1e3:F2} two_pass_median_ms={two.median * 1e3:F2} fused_median_ms={fused.median * 1e3:F2} speedup={two.best / fused.best:F3} median_speedup={two.median / fused.median:F3}"));
            }
            foreach (var b in new[] { x, w, gy, y, gx, gw, bias, fusedY }) be.Free(b);
        }
        return 0;
    }

    /// <summary>Whether this CPU runs the algorithm: the implicit GEMM and F(4x4) need AVX2 (with FMA; F(4x4)
    /// is then Winograd.Avx2.cs), the other Winograd versions AVX-512.</summary>
    private static bool Runs(CpuBackend.ConvolutionAlgorithm algorithm) => algorithm switch
    {
        CpuBackend.ConvolutionAlgorithm.Im2Col => true,
        CpuBackend.ConvolutionAlgorithm.ImplicitGemm or CpuBackend.ConvolutionAlgorithm.Winograd4 => CpuBackend.HardwareVectors >= CpuBackend.CpuVectors.Avx2,
        _ => CpuBackend.HardwareVectors == CpuBackend.CpuVectors.Avx512,
    };

    private static DeviceBuffer Upload(CpuBackend be, float[] host)
    {
        var b = be.Allocate(host.Length);
        be.Upload(host, b);
        return b;
    }

    private static void Verify(float[] expected, float[] actual, string what)
    {
        double maxDiff = 0, maxValue = 0;
        for (int i = 0; i < expected.Length; i++)
        {
            maxDiff = Math.Max(maxDiff, Math.Abs((double)expected[i] - actual[i]));
            maxValue = Math.Max(maxValue, Math.Abs((double)expected[i]));
        }
        if (!(maxDiff <= 1e-4 * maxValue))
            throw new MismatchException($"{what}: max |difference| {maxDiff:G3} against max |value| {maxValue:G3}");
    }

    private static (double best, double median) Measure(Action call)
    {
        call();
        var times = new List<double>();
        var total = Stopwatch.StartNew();
        while (times.Count < 3 || total.Elapsed.TotalSeconds < 0.5)
        {
            Evict();
            var sw = Stopwatch.StartNew();
            call();
            times.Add(sw.Elapsed.TotalSeconds);
        }
        times.Sort();
        return (times[0], times[times.Count / 2]);
    }

    /// <summary>Two calls timed alternately (a, b, a, b, ...) until a second has passed (at least 3 each): best and median of each.</summary>
    private static ((double best, double median) a, (double best, double median) b) MeasurePair(Action a, Action b)
    {
        a();
        b();
        var (ta, tb) = (new List<double>(), new List<double>());
        var total = Stopwatch.StartNew();
        while (ta.Count < 3 || total.Elapsed.TotalSeconds < 1)
        {
            Evict();
            var sw = Stopwatch.StartNew();
            a();
            ta.Add(sw.Elapsed.TotalSeconds);
            Evict();
            sw.Restart();
            b();
            tb.Add(sw.Elapsed.TotalSeconds);
        }
        ta.Sort();
        tb.Sort();
        return ((ta[0], ta[ta.Count / 2]), (tb[0], tb[tb.Count / 2]));
    }

    private static byte[]? _evict;

    /// <summary>With --cold: writes a buffer larger than any cache, so the next call's operands come from memory.</summary>
    private static void Evict()
    {
        if (_evict == null) return;
        _evict.AsSpan().Fill((byte)(_evict[0] + 1));
    }

    private static string Invariant(FormattableString s) => s.ToString(CultureInfo.InvariantCulture);
}
