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

    /// <summary>
    /// cpu and cuda-emulated always, and cuda when this machine has a GPU, so that the whole
    /// suite (kernel comparisons, gradient checks, training tests) runs on it unchanged.
    /// RAWGAN_TEST_DEVICES=cpu,cuda-emulated,cuda sets the list (a device named there that cannot
    /// be opened fails the tests that use it, rather than being left out).
    /// </summary>
    public static IReadOnlyList<string> Names => NamesInUse.Value;

    private static readonly Lazy<string[]> NamesInUse = new(ChooseNames);

    private static readonly Lazy<NativeDriver?> NativeCuda = new(() =>
    {
        try { return new NativeDriver(0); }
        catch (CudaUnavailableException) { return null; }
        catch (DllNotFoundException) { return null; }
    });

    private static string[] ChooseNames()
    {
        string? asked = Environment.GetEnvironmentVariable("RAWGAN_TEST_DEVICES");
        if (!string.IsNullOrWhiteSpace(asked))
            return asked.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        return NativeCuda.Value is null ? ["cpu", "cuda-emulated"] : ["cpu", "cuda-emulated", "cuda"];
    }

    public static IBackend Get(string name) => name switch
    {
        "cpu" => CpuBackend.Shared,
        "cuda-emulated" => Emulated(),
        "cuda" => Native(),
        _ => throw new ArgumentException($"unknown test backend '{name}'"),
    };

    private static readonly ConcurrentDictionary<int, Lazy<CudaBackend>> NativeBackends = new();

    /// <summary>The CUDA backend on this machine's GPU, one per block size, computing in fp32 (the
    /// suite's tolerances and gradient checks are fp32's; the TF32 kernels have their own tests);
    /// throws the driver's one-line reason when there is none.</summary>
    public static CudaBackend Native(int blockSize = 256) =>
        NativeBackends.GetOrAdd(blockSize, b => new Lazy<CudaBackend>(() => new CudaBackend(blockSize == 256 && NativeCuda.Value is { } d ? d : new NativeDriver(0), b, Precision.Fp32))).Value;

    private static readonly ConcurrentDictionary<int, Lazy<CudaBackend>> NativeTf32Backends = new();
    private static readonly ConcurrentDictionary<int, Lazy<CudaBackend>> EmulatedTf32Backends = new();

    /// <summary>The CUDA backends the TF32 kernel tests run at <paramref name="blockSize"/>: the
    /// emulator at <see cref="Precision.Tf32"/>, and the GPU when it is in <see cref="Names"/> and
    /// has TF32 tensor cores; their tensor-core blocks have at most <paramref name="blockSize"/>
    /// threads (32: one warp, ... 512 and up: 4 x 4 warps).</summary>
    public static IEnumerable<CudaBackend> Tf32(int blockSize)
    {
        static CudaBackend Make(ICudaDriver driver, int b) => new(driver, b, Precision.Tf32) { TensorCoreThreads = b };
        if (Names.Contains("cuda-emulated"))
            yield return EmulatedTf32Backends.GetOrAdd(blockSize, b => new Lazy<CudaBackend>(() => Make(new EmulatedDriver(), b))).Value;
        if (Names.Contains("cuda") && CudaBackend.SupportsTf32(Native().Driver.Device))
            yield return NativeTf32Backends.GetOrAdd(blockSize, b => new Lazy<CudaBackend>(() => Make(new NativeDriver(0), b))).Value;
    }

    private static readonly ConcurrentDictionary<SimtOrder, Lazy<CudaBackend>> EmulatedWideBackends = new();
    private static readonly Lazy<CudaBackend> NativeWideBackend = new(() => new CudaBackend(new NativeDriver(0), 256, Precision.Fp32) { Fp32Tiling = ProductTiling.Version3 });

    /// <summary>The CUDA backends the version-3 kernel tests run on, every product forced to
    /// version 3 (kernels/wide_tile.cuh) whatever its shape: the emulator with a block's threads
    /// run in <paramref name="order"/>, and the GPU when it is in <see cref="Names"/>.</summary>
    public static IEnumerable<CudaBackend> Wide(SimtOrder order = SimtOrder.Default)
    {
        if (Names.Contains("cuda-emulated"))
            yield return EmulatedWideBackends.GetOrAdd(order, o => new Lazy<CudaBackend>(() =>
                new CudaBackend(new EmulatedDriver { Order = o, OrderSeed = 7 }, 256, Precision.Fp32) { Fp32Tiling = ProductTiling.Version3 })).Value;
        if (Names.Contains("cuda") && order == SimtOrder.Default) yield return NativeWideBackend.Value;
    }

    /// <summary>The CUDA backends the kernel comparisons run at <paramref name="blockSize"/>: the
    /// emulator, and the GPU when it is in <see cref="Names"/>.</summary>
    public static IEnumerable<CudaBackend> Cuda(int blockSize)
    {
        if (Names.Contains("cuda-emulated")) yield return Emulated(blockSize);
        if (Names.Contains("cuda")) yield return Native(blockSize);
    }

    private static readonly ConcurrentDictionary<int, Lazy<CudaBackend>> EmulatedBackends = new();

    /// <summary>The CUDA backend over the emulated driver, one per block size, shared by the tests
    /// (the emulator library is built once and cached on disk); fp32, the emulator's default.</summary>
    public static CudaBackend Emulated(int blockSize = 256) =>
        EmulatedBackends.GetOrAdd(blockSize, b => new Lazy<CudaBackend>(() => new CudaBackend(new EmulatedDriver(), b))).Value;
}
