namespace RawGan.Engine.Backends.Cuda;

/// <summary>Grid or block dimensions of a kernel launch (CUDA's dim3).</summary>
public readonly record struct Dim3(uint X, uint Y = 1, uint Z = 1)
{
    public ulong Count => (ulong)X * Y * Z;
    public override string ToString() => $"({X}, {Y}, {Z})";
}

/// <summary>What a CUDA device is (for `info`, logs, and choosing kernel launch shapes).</summary>
public sealed record DeviceInfo(
    string Name, int ComputeMajor, int ComputeMinor, long TotalMemoryBytes, int Multiprocessors,
    int MaxThreadsPerBlock, int MaxSharedMemoryPerBlock, int WarpSize, string DriverVersion, string CompilerVersion)
{
    public override string ToString() =>
        $"{Name} (compute {ComputeMajor}.{ComputeMinor}, {Multiprocessors} SMs, {TotalMemoryBytes / (1024 * 1024)} MiB; driver {DriverVersion}, {CompilerVersion})";
}

/// <summary>One .cu file: its name (for compiler messages) and its text.</summary>
public sealed record KernelSource(string Name, string Text);

/// <summary>
/// The part of the CUDA driver API that RawGan uses. <c>NativeDriver</c> calls the real
/// one; <c>EmulatedDriver</c> runs the same kernels on the CPU. Everything above this
/// interface (the caching allocator, argument marshalling, grid arithmetic) is shared, so tests
/// on the emulator exercise the real CudaBackend.
/// </summary>
public unsafe interface ICudaDriver : IDisposable
{
    /// <summary>"cuda" or "cuda-emulated".</summary>
    string Name { get; }
    DeviceInfo Device { get; }

    /// <summary>What the kernels run as, for `info`: machine code for which architecture, PTX, or the emulator.</summary>
    string KernelTarget { get; }

    /// <summary>Device memory (cuMemAlloc); returns 0 when the device is out of memory.</summary>
    ulong Allocate(long bytes);
    void Free(ulong address);
    void CopyHostToDevice(ulong destination, void* source, long bytes);
    void CopyDeviceToHost(void* destination, ulong source, long bytes);
    void CopyDeviceToDevice(ulong destination, ulong source, long bytes);
    (long free, long total) MemoryInfo();

    /// <summary>Compiles (or fetches from the cache) and loads the kernels; afterwards
    /// <see cref="GetFunction"/> finds each `extern "C" __global__` function by name.</summary>
    void LoadModule(IReadOnlyList<KernelSource> sources, IReadOnlyDictionary<string, string> headers);
    nint GetFunction(string kernel);

    /// <summary>The largest block <paramref name="function"/> can launch with: the device's limit,
    /// lowered by the kernel's registers and its declared <c>__launch_bounds__</c>.</summary>
    int MaxThreadsPerBlock(nint function);

    /// <summary>cuLaunchKernel: <paramref name="arguments"/> holds one pointer per kernel
    /// parameter, each to storage of exactly that parameter's C size.</summary>
    void Launch(nint function, string kernel, Dim3 grid, Dim3 block, uint sharedBytes, void** arguments);
    void Synchronize();
}
