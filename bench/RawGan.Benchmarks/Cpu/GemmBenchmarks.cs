using BenchmarkDotNet.Attributes;
using RawGan.Benchmarks.Infrastructure;
using RawGan.Benchmarks.Reference;
using RawGan.Engine.Backends;

namespace RawGan.Benchmarks.Cpu;

/// <summary>
/// SGEMM, C = op(A) op(B): the naive triple loop (one thread) against the engine's portable GEMM
/// (tiles spread over the cores, Vector&lt;float&gt; inner loops; what CpuBackend runs without
/// AVX-512) and the AVX-512 SGEMM behind CpuBackend.Gemm (packed panels, 6x64 register-blocked
/// micro-kernel).
/// </summary>
public class GemmBenchmarks
{
    [ParamsSource(nameof(Cases))]
    public GemmCase Case { get; set; } = null!;

    public static IEnumerable<GemmCase> Cases => ProGanSizes.Gemms();

    private CpuBuffers _buffers = null!;
    private float[] _a = null!, _b = null!, _c = null!;
    private DeviceBuffer _da, _db, _dc;

    [GlobalSetup]
    public void Setup()
    {
        CpuBuffers.ApplyThreads();
        _buffers = new CpuBuffers();
        var (m, n, k) = (Case.M, Case.N, Case.K);
        _a = CpuBuffers.Normal((long)m * k, 1);
        _b = CpuBuffers.Normal((long)k * n, 2);
        _c = new float[(long)m * n];
        _da = _buffers.Upload(_a);
        _db = _buffers.Upload(_b);
        _dc = _buffers.Allocate((long)m * n);

        Naive();
        var expected = (float[])_c.Clone();
        Portable();
        Verify.Close($"GemmPortable {Case}", expected, _buffers.Download(_dc, _c.Length));
        _buffers.Backend.Fill(_dc, _c.Length, float.NaN);
        Sgemm();
        Verify.Close($"CpuBackend.Gemm {Case}", expected, _buffers.Download(_dc, _c.Length));
    }

    [GlobalCleanup]
    public void Cleanup() => _buffers.Dispose();

    [Benchmark(Baseline = true, Description = "naive triple loop (1 thread)")]
    public void Naive() => NaiveKernels.Gemm(Case.M, Case.N, Case.K, _a, _b, Case.TransB, _c);

    [Benchmark(Description = "CpuBackend.GemmPortable")]
    public void Portable() => EngineInternals.GemmPortable(_buffers.Backend, false, Case.TransB, Case.M, Case.N, Case.K, 1f, _da, _db, 0f, _dc);

    [Benchmark(Description = "CpuBackend.Gemm (AVX-512 Sgemm)")]
    public void Sgemm() => _buffers.Backend.Gemm(false, Case.TransB, Case.M, Case.N, Case.K, 1f, _da, _db, 0f, _dc);
}
