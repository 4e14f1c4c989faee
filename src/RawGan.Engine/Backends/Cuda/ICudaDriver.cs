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

    /// <summary>Waits for everything launched or copied so far.</summary>
    void Synchronize();

    // Stream capture (CUDA graphs): between BeginCapture and EndCapture, launches and
    // device-to-device copies are recorded, not run; the graph then replays them all with one
    // call. While capturing, allocation, copies to or from host memory and synchronization are
    // errors (CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED), on the emulator as on a GPU, so a step that
    // still waits for the host somewhere cannot be captured by mistake.

    // A driver that cannot capture (a test double) keeps the defaults.

    /// <summary>Whether this driver can capture graphs at all.</summary>
    bool SupportsCapture => false;
    /// <summary>Whether a capture is in progress.</summary>
    bool Capturing => false;
    /// <summary>cuStreamBeginCapture: from now on, launches and copies are recorded.</summary>
    void BeginCapture() => throw new NotSupportedException($"the {Name} driver '{Device.Name}' cannot capture graphs");
    /// <summary>cuStreamEndCapture + cuGraphInstantiate: the executable graph of what was recorded,
    /// and how many operations (nodes) it holds.</summary>
    nint EndCapture(out int nodes) => throw new NotSupportedException($"the {Name} driver '{Device.Name}' cannot capture graphs");
    /// <summary>Ends a capture that failed, discarding what it recorded (never throws).</summary>
    void AbortCapture() { }
    /// <summary>cuGraphLaunch: runs every recorded operation, in order, with the recorded arguments.</summary>
    void LaunchGraph(nint graph) => throw new NotSupportedException($"the {Name} driver '{Device.Name}' cannot capture graphs");
    /// <summary>cuGraphExecDestroy.</summary>
    void DestroyGraph(nint graph) => throw new NotSupportedException($"the {Name} driver '{Device.Name}' cannot capture graphs");

    // Reads that do not wait (CudaBackend.CreateAsyncRead): page-locked host memory, a copy into
    // it queued in stream order, and an event that says when it has landed. The defaults suit a
    // driver whose every call completes before it returns (the emulator): ordinary memory, a copy
    // at once, events that are always reached.

    /// <summary>cuMemHostAlloc: page-locked host memory the device can copy into asynchronously.</summary>
    void* AllocateHost(long bytes) => System.Runtime.InteropServices.NativeMemory.AlignedAlloc((nuint)Math.Max(bytes, 1), 64);
    /// <summary>cuMemFreeHost.</summary>
    void FreeHost(void* host) => System.Runtime.InteropServices.NativeMemory.AlignedFree(host);
    /// <summary>cuMemcpyDtoHAsync into memory from <see cref="AllocateHost"/>, in stream order,
    /// without waiting: the bytes are there once an event recorded after it has been reached.</summary>
    void CopyDeviceToHostAsync(void* destination, ulong source, long bytes) => CopyDeviceToHost(destination, source, bytes);
    /// <summary>cuMemcpyHtoDAsync from memory inside a block from <see cref="AllocateHost"/>, in stream
    /// order, without waiting: the host may write those bytes again only once an event recorded
    /// after the copy has been reached (CudaBackend's upload ring).</summary>
    void CopyHostToDeviceAsync(ulong destination, void* source, long bytes) => CopyHostToDevice(destination, source, bytes);
    /// <summary>cuEventCreate (without timing).</summary>
    nint CreateEvent() => 0;
    /// <summary>cuEventRecord on the stream: reached when everything queued before it is done.</summary>
    void RecordEvent(nint e) { }
    /// <summary>cuEventSynchronize: waits until the event is reached.</summary>
    void WaitEvent(nint e) { }
    /// <summary>cuEventDestroy.</summary>
    void DestroyEvent(nint e) { }
}

/// <summary>What may not happen while a step is being captured, with one message for both drivers.</summary>
internal static class CaptureRules
{
    public static void Refuse(bool capturing, string call, string what)
    {
        if (capturing)
            throw new CudaException(call, 900, "CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED",
                $"{what} while a step is being captured as a CUDA graph: a captured step may only launch kernels and copy between device buffers");
    }
}
