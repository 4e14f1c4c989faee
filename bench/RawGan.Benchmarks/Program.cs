using System.Reflection;
using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Running;
using RawGan.Benchmarks;
using RawGan.Benchmarks.Gpu;
using RawGan.Benchmarks.Infrastructure;

// RawGan's kernel benchmarks.
//
//   dotnet run -c Release --project bench/RawGan.Benchmarks -- [options] [BenchmarkDotNet arguments]
//
// Options of this program (the rest goes to BenchmarkDotNet: --filter, --job, --list, ...):
//   --smoke        tiny sizes everywhere (checks every benchmark end to end in seconds)
//   --threads N    cores the engine's kernels may use (default: all)
//   --check        run only the correctness checks (every [GlobalSetup]), no timing; with no
//                  CUDA device the GPU path's own im2col kernel is checked on the emulator
//   --gemm         GFLOP/s of the engine's SGEMMs on square matrices 512..2048, on the step's
//                  dense-layer shapes (16 rows: the batch), and this
//                  machine's fp32 FMA peak (the numbers to set beside OpenBLAS)
//   --conv         GFLOP/s of every CPU convolution algorithm on the step's convolutions
//   --case TEXT    with --conv: only the cases whose name contains TEXT (e.g. "8x8", "head")
//   --cold         with --conv: evict the caches before each timed call (as in a training step)
//
// With no CUDA device the GPU classes are left out, and the program says so.

var own = new List<string>();
string? onlyCase = null;
var rest = new List<string>();
for (int i = 0; i < args.Length; i++)
{
    switch (args[i])
    {
        case "--smoke" or "--check" or "--gemm" or "--conv" or "--cold":
            own.Add(args[i]);
            break;
        case "--threads" when i + 1 < args.Length && int.TryParse(args[i + 1], out int t) && t > 0:
            Environment.SetEnvironmentVariable(ProGanSizes.ThreadsVariable, t.ToString());
            i++;
            break;
        case "--threads":
            Console.Error.WriteLine("--threads needs a positive number");
            return 2;
        case "--case" when i + 1 < args.Length:
            onlyCase = args[++i];
            break;
        default:
            rest.Add(args[i]);
            break;
    }
}
// Environment variables reach the processes BenchmarkDotNet starts for each benchmark.
if (own.Contains("--smoke")) Environment.SetEnvironmentVariable(ProGanSizes.SizesVariable, "smoke");
CpuBuffers.ApplyThreads();

if (own.Contains("--gemm")) return GemmThroughput.Run();
if (own.Contains("--conv")) return ConvThroughput.Run(onlyCase, own.Contains("--cold"));

Type[] cpuTypes = [typeof(RawGan.Benchmarks.Cpu.GemmBenchmarks), typeof(RawGan.Benchmarks.Cpu.ConvForwardBenchmarks),
    typeof(RawGan.Benchmarks.Cpu.ConvBackwardInputBenchmarks), typeof(RawGan.Benchmarks.Cpu.ConvBackwardWeightBenchmarks),
    typeof(RawGan.Benchmarks.Cpu.PixelNormBenchmarks), typeof(RawGan.Benchmarks.Cpu.MinibatchStdDevBenchmarks),
    typeof(RawGan.Benchmarks.Cpu.UpsampleBenchmarks), typeof(RawGan.Benchmarks.Cpu.AvgPoolBenchmarks),
    typeof(RawGan.Benchmarks.Cpu.GradientPenaltyBenchmarks)];
Type[] gpuTypes = [typeof(GpuGemmBenchmarks), typeof(GpuConvBenchmarks)];
Type[] tf32Types = [typeof(GpuGemmTf32Benchmarks), typeof(GpuConvTf32Benchmarks)];

string? noGpu = GpuDevice.Unavailable();
if (noGpu != null)
    foreach (var type in gpuTypes.Concat(tf32Types)) Console.WriteLine($"{type.Name}: skipped: no CUDA device ({noGpu})");
string? noTf32 = noGpu == null ? GpuDevice.Tf32Unavailable() : null;
if (noTf32 != null)
    foreach (var type in tf32Types) Console.WriteLine($"{type.Name}: skipped: {noTf32}");
var types = noGpu != null ? cpuTypes : noTf32 != null ? cpuTypes.Concat(gpuTypes).ToArray() : cpuTypes.Concat(gpuTypes).Concat(tf32Types).ToArray();

if (own.Contains("--check")) return CorrectnessCheck.Run(types, checkGpuOnEmulator: noGpu != null);

var config = DefaultConfig.Instance
    .AddColumn(new GflopsColumn())
    .WithSummaryStyle(BenchmarkDotNet.Reports.SummaryStyle.Default.WithMaxParameterColumnWidth(48))
    .WithOptions(ConfigOptions.DisableLogFile);
BenchmarkSwitcher.FromTypes(types).Run(rest.ToArray(), config);
return 0;

namespace RawGan.Benchmarks
{
    /// <summary>
    /// --check: every benchmark's [GlobalSetup] for every case, which compares each variant with the
    /// naive reference and throws on a mismatch, and nothing timed. Exit code 1 on the first mismatch.
    /// </summary>
    public static class CorrectnessCheck
    {
        public static int Run(IEnumerable<Type> types, bool checkGpuOnEmulator)
        {
            try
            {
                foreach (var type in types)
                {
                    var caseProperty = type.GetProperties().Single(p => p.GetCustomAttribute<ParamsSourceAttribute>() != null);
                    var source = caseProperty.GetCustomAttribute<ParamsSourceAttribute>()!.Name;
                    var cases = (System.Collections.IEnumerable)type.GetProperty(source, BindingFlags.Public | BindingFlags.Static | BindingFlags.FlattenHierarchy)!.GetValue(null)!;
                    var setup = type.GetMethods().Single(m => m.GetCustomAttribute<GlobalSetupAttribute>() != null);
                    var cleanup = type.GetMethods().SingleOrDefault(m => m.GetCustomAttribute<GlobalCleanupAttribute>() != null);
                    foreach (var c in cases)
                    {
                        var instance = Activator.CreateInstance(type)!;
                        caseProperty.SetValue(instance, c);
                        var started = System.Diagnostics.Stopwatch.StartNew();
                        try { setup.Invoke(instance, null); }
                        finally { cleanup?.Invoke(instance, null); }
                        Console.WriteLine($"ok  {type.Name} {c} ({started.Elapsed.TotalSeconds:F1} s)");
                    }
                }
                if (checkGpuOnEmulator)
                {
                    EmulatedGpuCheck.Run();
                    Console.WriteLine("ok  GPU im2col + GEMM convolution on the CUDA emulator (cuBLAS itself needs a device)");
                }
            }
            catch (TargetInvocationException e) when (e.InnerException != null)
            {
                Console.Error.WriteLine($"FAILED: {e.InnerException.GetType().Name}: {e.InnerException.Message}");
                return 1;
            }
            catch (Exception e)
            {
                Console.Error.WriteLine($"FAILED: {e.GetType().Name}: {e.Message}");
                return 1;
            }
            Console.WriteLine($"{Verify.Checked} comparisons with the naive references passed");
            return 0;
        }
    }
}
