using RawGan.Engine;
using RawGan.Engine.Backends;
using RawGan.Engine.Backends.Cpu;

namespace RawGan.Benchmarks.Infrastructure;

/// <summary>
/// Host arrays for the naive loops and the same data in CpuBackend buffers for the engine's
/// kernels. Every benchmark class owns one and disposes it in [GlobalCleanup].
/// </summary>
public sealed unsafe class CpuBuffers : IDisposable
{
    private readonly List<DeviceBuffer> _owned = new();

    public CpuBackend Backend { get; } = CpuBackend.Shared;

    /// <summary>Applies RAWGAN_BENCH_THREADS (Program's --threads) to the engine's kernels.</summary>
    public static void ApplyThreads()
    {
        if (int.TryParse(Environment.GetEnvironmentVariable(ProGanSizes.ThreadsVariable), out int t) && t > 0)
            CpuParallel.Threads = t;
    }

    /// <summary>N(0, 1) values from a fixed seed: every variant of a benchmark sees the same data.</summary>
    public static float[] Normal(long length, ulong seed)
    {
        var a = new float[length];
        new Rng(seed).FillNormal(a);
        return a;
    }

    public static float[] Uniform(long length, ulong seed)
    {
        var a = new float[length];
        new Rng(seed).FillUniform(a);
        return a;
    }

    public DeviceBuffer Upload(float[] host)
    {
        var b = Backend.Allocate(host.Length);
        Backend.Upload(host, b);
        _owned.Add(b);
        return b;
    }

    public DeviceBuffer Allocate(long length)
    {
        var b = Backend.Allocate(length);
        Backend.Fill(b, length, float.NaN);     // a kernel that skips an output is caught by Verify
        _owned.Add(b);
        return b;
    }

    public float[] Download(DeviceBuffer b, long length)
    {
        var a = new float[length];
        Backend.Download(b, a);
        return a;
    }

    public static float* Pointer(DeviceBuffer b) => (float*)b.Address;

    public void Dispose()
    {
        foreach (var b in _owned) Backend.Free(b);
        _owned.Clear();
    }
}
