using System.Collections.Concurrent;
using RawGan.Engine.Backends;
using RawGan.Engine.Backends.Cpu;
using RawGan.Engine.Backends.Cuda;

namespace RawGan.Engine.Tests;

/// <summary>
/// The backends every engine test runs on. Each test takes the backend's name as a theory
/// argument, so a failure says which backend failed.
/// </summary>
public static class TestBackends
{
    public static TheoryData<string> All
    {
        get
        {
            var data = new TheoryData<string>();
            foreach (var name in Names) data.Add(name);
            return data;
        }
    }

    public static IEnumerable<string> Names
    {
        get
        {
            yield return "cpu";
            yield return "cuda-emulated";
        }
    }

    public static IBackend Get(string name) => name switch
    {
        "cpu" => CpuBackend.Shared,
        "cuda-emulated" => Emulated(),
        _ => throw new ArgumentException($"unknown test backend '{name}'"),
    };

    private static readonly ConcurrentDictionary<int, Lazy<CudaBackend>> EmulatedBackends = new();

    /// <summary>The CUDA backend over the emulated driver, one per block size, shared by the tests
    /// (the emulator library is built once and cached on disk).</summary>
    public static CudaBackend Emulated(int blockSize = 256) =>
        EmulatedBackends.GetOrAdd(blockSize, b => new Lazy<CudaBackend>(() => new CudaBackend(new EmulatedDriver(), b))).Value;
}
