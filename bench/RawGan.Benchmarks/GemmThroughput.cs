using System.Diagnostics;
using System.Globalization;
using System.Runtime.Intrinsics;
using RawGan.Benchmarks.Infrastructure;
using RawGan.Benchmarks.Reference;
using RawGan.Engine.Backends.Cpu;

namespace RawGan.Benchmarks;

/// <summary>
/// --gemm: the engine's SGEMMs on square row-major matrices (512, 1024, 2048) and on the dense
/// layers' shapes of a training step (ProGanSizes.DenseLayerGemms), in GFLOP/s, and
/// this machine's fp32 FMA peak measured from C#, so that the SGEMM can be stated as a fraction of
/// the peak and set beside OpenBLAS (bench/sgemm_openblas.c prints the same line format).
/// Each size: one untimed call, then calls until a second has passed (at least 3); the best call
/// is reported (the least disturbed by other processes), and the median beside it.
/// </summary>
public static unsafe class GemmThroughput
{
    public static int Run()
    {
        int threads = CpuParallel.Threads;
        Console.WriteLine($"# {CpuBackend.Shared.Description}; .NET {Environment.Version}");
        double peak = FmaPeak(threads);
        Console.WriteLine(Invariant($"fma_peak threads={threads} gflops={peak:F1}"));
        foreach (int n in ProGanSizes.SquareGemmSizes)
        {
            foreach (var (name, portable) in new[] { ("rawgan-sgemm", false), ("rawgan-portable", true) })
            {
                var (best, median) = Measure(n, portable);
                double gBest = 2.0 * n * n * n / best / 1e9, gMedian = 2.0 * n * n * n / median / 1e9;
                Console.WriteLine(Invariant($"{name} n={n} threads={threads} gflops={gBest:F1} median_gflops={gMedian:F1} peak_fraction={gBest / peak:F2}"));
            }
        }
        foreach (var (m, n, k, transA, transB) in ProGanSizes.DenseLayerGemms())
        {
            var (best, median) = Measure(m, n, k, transA, transB, portable: false);
            double flops = 2.0 * m * n * k;
            Console.WriteLine(Invariant($"rawgan-sgemm shape={m}x{n}x{k} op={(transA ? 'T' : 'N')}{(transB ? 'T' : 'N')} threads={threads} gflops={flops / best / 1e9:F1} median_gflops={flops / median / 1e9:F1} us={best * 1e6:F0} peak_fraction={flops / best / 1e9 / peak:F2}"));
        }
        return 0;
    }

    private static (double best, double median) Measure(int n, bool portable) => Measure(n, n, n, false, false, portable);

    /// <summary>C[m, n] = op(A) op(B) with k products per entry, A stored [k, m] when transposed (as IBackend.Gemm takes it).</summary>
    private static (double best, double median) Measure(int m, int n, int k, bool transA, bool transB, bool portable)
    {
        using var buffers = new CpuBuffers();
        var a = CpuBuffers.Normal((long)m * k, 1);
        var b = CpuBuffers.Normal((long)k * n, 2);
        var da = buffers.Upload(a);
        var db = buffers.Upload(b);
        var dc = buffers.Allocate((long)m * n);
        void Call()
        {
            if (portable) EngineInternals.GemmPortable(buffers.Backend, transA, transB, m, n, k, 1f, da, db, 0f, dc);
            else buffers.Backend.Gemm(transA, transB, m, n, k, 1f, da, db, 0f, dc);
        }
        Call();
        SpotCheck(m, n, k, transA, transB, a, b, CpuBuffers.Pointer(dc));
        var times = new List<double>();
        var total = Stopwatch.StartNew();
        while (times.Count < 3 || total.Elapsed.TotalSeconds < 1)
        {
            var sw = Stopwatch.StartNew();
            Call();
            times.Add(sw.Elapsed.TotalSeconds);
        }
        times.Sort();
        return (times[0], times[times.Count / 2]);
    }

    /// <summary>A few entries of C against dot products in double: a wrong GEMM is not timed.</summary>
    private static void SpotCheck(int m, int n, int k, bool transA, bool transB, float[] a, float[] b, float* c)
    {
        var rng = new Random(5);
        for (int t = 0; t < 16; t++)
        {
            int i = rng.Next(m), j = rng.Next(n);
            double sum = 0, scale = 0;
            for (int p = 0; p < k; p++)
            {
                double product = (double)a[transA ? (long)p * m + i : (long)i * k + p] * b[transB ? (long)j * k + p : (long)p * n + j];
                sum += product;
                scale += Math.Abs(product);
            }
            if (Math.Abs(c[(long)i * n + j] - sum) > 1e-5 * scale)
                throw new MismatchException($"GEMM {m}x{n}x{k}: C[{i}, {j}] = {c[(long)i * n + j]}, expected {sum}");
        }
    }

    /// <summary>fp32 FLOP per second (2 per multiply-add) with 12 independent Vector512 (or Vector256)
    /// FMA chains per thread, enough to cover the FMA latency, on <paramref name="threads"/> threads at once.</summary>
    private static double FmaPeak(int threads)
    {
        const long iterations = 5_000_000;
        double Chains()
        {
            if (Vector512.IsHardwareAccelerated)
            {
                var x = Vector512.Create(1.0000001f);
                var y = Vector512.Create(0.9999999f);
                Vector512<float> a0 = x, a1 = x, a2 = x, a3 = x, a4 = x, a5 = x, a6 = x, a7 = x, a8 = x, a9 = x, a10 = x, a11 = x;
                for (long i = 0; i < iterations; i++)
                {
                    a0 = Vector512.FusedMultiplyAdd(a0, y, x); a1 = Vector512.FusedMultiplyAdd(a1, y, x);
                    a2 = Vector512.FusedMultiplyAdd(a2, y, x); a3 = Vector512.FusedMultiplyAdd(a3, y, x);
                    a4 = Vector512.FusedMultiplyAdd(a4, y, x); a5 = Vector512.FusedMultiplyAdd(a5, y, x);
                    a6 = Vector512.FusedMultiplyAdd(a6, y, x); a7 = Vector512.FusedMultiplyAdd(a7, y, x);
                    a8 = Vector512.FusedMultiplyAdd(a8, y, x); a9 = Vector512.FusedMultiplyAdd(a9, y, x);
                    a10 = Vector512.FusedMultiplyAdd(a10, y, x); a11 = Vector512.FusedMultiplyAdd(a11, y, x);
                }
                var s = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11;
                return Vector512.Sum(s);   // a result keeps the chains alive
            }
            else
            {
                var x = Vector256.Create(1.0000001f);
                var y = Vector256.Create(0.9999999f);
                Vector256<float> a0 = x, a1 = x, a2 = x, a3 = x, a4 = x, a5 = x, a6 = x, a7 = x, a8 = x, a9 = x, a10 = x, a11 = x;
                for (long i = 0; i < iterations; i++)
                {
                    a0 = Vector256.FusedMultiplyAdd(a0, y, x); a1 = Vector256.FusedMultiplyAdd(a1, y, x);
                    a2 = Vector256.FusedMultiplyAdd(a2, y, x); a3 = Vector256.FusedMultiplyAdd(a3, y, x);
                    a4 = Vector256.FusedMultiplyAdd(a4, y, x); a5 = Vector256.FusedMultiplyAdd(a5, y, x);
                    a6 = Vector256.FusedMultiplyAdd(a6, y, x); a7 = Vector256.FusedMultiplyAdd(a7, y, x);
                    a8 = Vector256.FusedMultiplyAdd(a8, y, x); a9 = Vector256.FusedMultiplyAdd(a9, y, x);
                    a10 = Vector256.FusedMultiplyAdd(a10, y, x); a11 = Vector256.FusedMultiplyAdd(a11, y, x);
                }
                var s = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11;
                return Vector256.Sum(s);
            }
        }
        int lanes = Vector512.IsHardwareAccelerated ? 16 : 8;
        Chains();   // compile the loop before timing it
        // The best of several trials: a trial that shared a core with another process says
        // nothing about the core.
        double best = 0;
        for (int trial = 0; trial < 7; trial++)
        {
            var sink = new double[threads];
            var sw = Stopwatch.StartNew();
            var workers = Enumerable.Range(0, threads).Select(t => new Thread(() => sink[t] = Chains())).ToList();
            workers.ForEach(w => w.Start());
            workers.ForEach(w => w.Join());
            double seconds = sw.Elapsed.TotalSeconds;
            if (double.IsNaN(sink.Sum())) Console.WriteLine("# (the FMA chains overflowed)");
            best = Math.Max(best, threads * 12.0 * lanes * 2 * iterations / seconds / 1e9);
        }
        return best;
    }

    private static string Invariant(FormattableString s) => s.ToString(CultureInfo.InvariantCulture);
}
