using System.Runtime.InteropServices;
using System.Text;

namespace RawGan.Engine.Backends.Cuda;

/// <summary>
/// The real CUDA driver: one device, its primary context (the one cuBLAS and the runtime API
/// share), one stream of RawGan's own (non-blocking; every launch and copy goes to it, in order,
/// so that a step can be captured as a CUDA graph), and one module per .cu file compiled by NVRTC.
/// Construction fails with a one-line <see cref="CudaUnavailableException"/> when there is no
/// driver library, no device, or no NVRTC, or when NVRTC is newer than the driver.
/// </summary>
public sealed unsafe class NativeDriver : ICudaDriver
{
    private readonly int _device;
    private nint _context;
    private nint _stream;
    private bool _capturing;
    private readonly List<nint> _modules = new();
    // Tests launch from many threads at once: lookups are lock-free, loading takes the lock.
    private readonly System.Collections.Concurrent.ConcurrentDictionary<string, nint> _functions = new();
    private readonly System.Collections.Concurrent.ConcurrentDictionary<nint, int> _maxThreads = new();
    private readonly Lock _lock = new();
    private bool _disposed;

    [ThreadStatic] private static nint _currentContext;

    /// <summary>Set RAWGAN_CUDA_SYNC=1 to wait after every launch, so that a faulting kernel is
    /// reported at its own launch instead of at a later copy.</summary>
    private static readonly bool SyncEveryLaunch = Environment.GetEnvironmentVariable("RAWGAN_CUDA_SYNC") == "1";

    public NativeDriver(int ordinal = 0)
    {
        int driverVersion = ProbeDriverVersion();
        int init = CudaApi.cuInit(0);
        if (init == CudaApi.CUDA_ERROR_NO_DEVICE || init == CudaApi.CUDA_ERROR_STUB_LIBRARY)
            throw new CudaUnavailableException(NoDeviceMessage(init, driverVersion));
        CudaApi.Check(init, "cuInit");
        CudaApi.Check(CudaApi.cuDeviceGetCount(out int count), "cuDeviceGetCount");
        if (count == 0) throw new CudaUnavailableException(NoDeviceMessage(CudaApi.CUDA_ERROR_NO_DEVICE, driverVersion));
        if (ordinal < 0 || ordinal >= count)
            throw new CudaUnavailableException($"there is no CUDA device {ordinal}: this machine has {count} (cuda:0 to cuda:{count - 1})");

        var (nvMajor, nvMinor) = NvrtcCompiler.Version();
        CudaApi.Check(CudaApi.cuDeviceGet(out _device, ordinal), "cuDeviceGet");
        int ccMajor = Attribute(CudaApi.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR), ccMinor = Attribute(CudaApi.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR);
        Target = NvrtcCompiler.ChooseArchitecture(ccMajor, ccMinor, NvrtcCompiler.SupportedArchitectures());
        // Machine code from a newer NVRTC of the same major version loads on an older driver
        // (CUDA's minor-version compatibility); PTX does not: the driver's assembler must be at
        // least as new as the PTX (else CUDA_ERROR_UNSUPPORTED_PTX_VERSION at load).
        bool machineCode = NvrtcCompiler.IsMachineCodeArchitecture(Target);
        if (nvMajor > driverVersion / 1000 || (!machineCode && nvMajor * 1000 + nvMinor * 10 > driverVersion))
            throw new CudaUnavailableException(
                $"NVRTC {nvMajor}.{nvMinor} is newer than the CUDA driver ({FormatVersion(driverVersion)}): its {(machineCode ? "machine code" : "PTX")} would not load; update the NVIDIA driver or use an older NVRTC");

        byte* name = stackalloc byte[256];
        CudaApi.Check(CudaApi.cuDeviceGetName(name, 256, _device), "cuDeviceGetName");
        CudaApi.Check(CudaApi.cuDeviceTotalMem(out nuint total, _device), "cuDeviceTotalMem_v2");
        Device = new DeviceInfo(
            Marshal.PtrToStringUTF8((nint)name) ?? "CUDA device", ccMajor, ccMinor,
            (long)total, Attribute(CudaApi.CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT), Attribute(CudaApi.CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK),
            Attribute(CudaApi.CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK), Attribute(CudaApi.CU_DEVICE_ATTRIBUTE_WARP_SIZE),
            FormatVersion(driverVersion), $"NVRTC {nvMajor}.{nvMinor}");
        CudaApi.Check(CudaApi.cuDevicePrimaryCtxRetain(out _context, _device), "cuDevicePrimaryCtxRetain");
        MakeCurrent();
        CudaApi.Check(CudaApi.cuStreamCreate(out _stream, CudaApi.CU_STREAM_NON_BLOCKING), "cuStreamCreate");
    }

    /// <summary>The driver's version (cuDriverGetVersion works without a device), or a clear
    /// <see cref="CudaUnavailableException"/> when the library is missing.</summary>
    public static int ProbeDriverVersion()
    {
        CudaApi.EnsureResolver();
        try
        {
            CudaApi.Check(CudaApi.cuDriverGetVersion(out int version), "cuDriverGetVersion");
            return version;
        }
        catch (DllNotFoundException e)
        {
            throw new CudaUnavailableException(
                $"no CUDA driver: {string.Join(" / ", CudaApi.Candidates[CudaApi.Driver])} could not be loaded (install the NVIDIA driver)", e);
        }
    }

    public static string FormatVersion(int v) => $"{v / 1000}.{v % 1000 / 10}";

    private static string NoDeviceMessage(int code, int driverVersion)
    {
        var (name, _) = CudaApi.Describe(code);
        return code == CudaApi.CUDA_ERROR_STUB_LIBRARY
            ? $"the CUDA driver library found is the toolkit's stub, not a real driver (cuInit: {name})"
            : $"no CUDA device: the CUDA driver {FormatVersion(driverVersion)} is installed but found no GPU (cuInit: {name})";
    }

    private int Attribute(int attribute)
    {
        CudaApi.Check(CudaApi.cuDeviceGetAttribute(out int value, attribute, _device), "cuDeviceGetAttribute");
        return value;
    }

    /// <summary>The current context is per OS thread: bind ours on whichever thread calls us.</summary>
    private void MakeCurrent()
    {
        if (_currentContext == _context) return;
        CudaApi.Check(CudaApi.cuCtxSetCurrent(_context), "cuCtxSetCurrent");
        _currentContext = _context;
    }

    public string Name => "cuda";
    public DeviceInfo Device { get; }

    /// <summary>What the kernels are compiled to: "sm_90" (machine code) or "compute_90" (PTX).</summary>
    public string Target { get; }

    public string KernelTarget => NvrtcCompiler.IsMachineCodeArchitecture(Target)
        ? $"{Target} machine code (CUBIN) from {Device.CompilerVersion}"
        : $"{Target} PTX from {Device.CompilerVersion}, assembled by the driver at load (this NVRTC does not know sm_{Device.ComputeMajor}{Device.ComputeMinor})";

    public ulong Allocate(long bytes)
    {
        CaptureRules.Refuse(_capturing, "cuMemAlloc_v2", "device memory was allocated");
        MakeCurrent();
        int r = CudaApi.cuMemAlloc(out ulong address, (nuint)Math.Max(bytes, 1));
        if (r == CudaApi.CUDA_ERROR_OUT_OF_MEMORY) return 0;
        CudaApi.Check(r, "cuMemAlloc_v2");
        return address;
    }

    public void Free(ulong address)
    {
        CaptureRules.Refuse(_capturing, "cuMemFree_v2", "device memory was freed (cuMemFree synchronizes)");
        MakeCurrent();
        CudaApi.Check(CudaApi.cuMemFree(address), "cuMemFree_v2");
    }

    /// <summary>In stream order. From pageable memory the driver stages the bytes before it
    /// returns, so the caller may reuse its buffer at once.</summary>
    public void CopyHostToDevice(ulong destination, void* source, long bytes)
    {
        CaptureRules.Refuse(_capturing, "cuMemcpyHtoDAsync_v2", "host memory was uploaded");
        MakeCurrent();
        CudaApi.Check(CudaApi.cuMemcpyHtoDAsync(destination, source, (nuint)bytes, _stream), "cuMemcpyHtoDAsync_v2");
    }

    /// <summary>Waits for the stream, then for the copy.</summary>
    public void CopyDeviceToHost(void* destination, ulong source, long bytes)
    {
        CaptureRules.Refuse(_capturing, "cuMemcpyDtoHAsync_v2", "device memory was read back to the host");
        MakeCurrent();
        CudaApi.Check(CudaApi.cuMemcpyDtoHAsync(destination, source, (nuint)bytes, _stream), "cuMemcpyDtoHAsync_v2");
        CudaApi.Check(CudaApi.cuStreamSynchronize(_stream), "cuStreamSynchronize");
    }

    public void* AllocateHost(long bytes)
    {
        CaptureRules.Refuse(_capturing, "cuMemHostAlloc", "host memory was page-locked");
        MakeCurrent();
        CudaApi.Check(CudaApi.cuMemHostAlloc(out void* host, (nuint)Math.Max(bytes, 1), 0), "cuMemHostAlloc");
        return host;
    }

    public void FreeHost(void* host)
    {
        MakeCurrent();
        CudaApi.Check(CudaApi.cuMemFreeHost(host), "cuMemFreeHost");
    }

    /// <summary>In stream order, without waiting (the source is page-locked: see AllocateHost; the
    /// caller keeps it unchanged until an event recorded after the copy is reached).</summary>
    public void CopyHostToDeviceAsync(ulong destination, void* source, long bytes)
    {
        CaptureRules.Refuse(_capturing, "cuMemcpyHtoDAsync_v2", "host memory was uploaded");
        MakeCurrent();
        CudaApi.Check(CudaApi.cuMemcpyHtoDAsync(destination, source, (nuint)bytes, _stream), "cuMemcpyHtoDAsync_v2");
    }

    /// <summary>In stream order, without waiting (the destination is page-locked: see AllocateHost).</summary>
    public void CopyDeviceToHostAsync(void* destination, ulong source, long bytes)
    {
        CaptureRules.Refuse(_capturing, "cuMemcpyDtoHAsync_v2", "device memory was read back to the host");
        MakeCurrent();
        CudaApi.Check(CudaApi.cuMemcpyDtoHAsync(destination, source, (nuint)bytes, _stream), "cuMemcpyDtoHAsync_v2");
    }

    public nint CreateEvent()
    {
        MakeCurrent();
        CudaApi.Check(CudaApi.cuEventCreate(out nint e, CudaApi.CU_EVENT_DISABLE_TIMING), "cuEventCreate");
        return e;
    }

    public void RecordEvent(nint e)
    {
        MakeCurrent();
        CudaApi.Check(CudaApi.cuEventRecord(e, _stream), "cuEventRecord");
    }

    public void WaitEvent(nint e)
    {
        CaptureRules.Refuse(_capturing, "cuEventSynchronize", "the host waited for the device");
        MakeCurrent();
        CudaApi.Check(CudaApi.cuEventSynchronize(e), "cuEventSynchronize");
    }

    public void DestroyEvent(nint e)
    {
        MakeCurrent();
        CudaApi.Check(CudaApi.cuEventDestroy(e), "cuEventDestroy_v2");
    }

    public void CopyDeviceToDevice(ulong destination, ulong source, long bytes)
    {
        MakeCurrent();
        CudaApi.Check(CudaApi.cuMemcpyDtoDAsync(destination, source, (nuint)bytes, _stream), "cuMemcpyDtoDAsync_v2");
    }

    public (long free, long total) MemoryInfo()
    {
        MakeCurrent();
        CudaApi.Check(CudaApi.cuMemGetInfo(out nuint free, out nuint total), "cuMemGetInfo_v2");
        return ((long)free, (long)total);
    }

    public void LoadModule(IReadOnlyList<KernelSource> sources, IReadOnlyDictionary<string, string> headers)
    {
        lock (_lock)
        {
            MakeCurrent();
            foreach (var source in sources)
            {
                var compiled = NvrtcCompiler.CompileCached(source, headers, Target);
                _modules.Add(LoadImage(compiled));
            }
        }
    }

    private nint LoadImage(CompiledKernel compiled)
    {
        const int logSize = 8192;
        byte* errorLog = stackalloc byte[logSize];
        errorLog[0] = 0;
        int* options = stackalloc int[] { CudaApi.CU_JIT_ERROR_LOG_BUFFER, CudaApi.CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES };
        void** values = stackalloc void*[] { errorLog, (void*)logSize };
        int r;
        nint module;
        fixed (byte* image = compiled.Image) r = CudaApi.cuModuleLoadDataEx(out module, image, 2, options, values);
        if (r == CudaApi.CUDA_ERROR_UNSUPPORTED_PTX_VERSION)
            throw new CudaUnavailableException($"the CUDA driver ({Device.DriverVersion}) is older than the PTX from {Device.CompilerVersion}: update the NVIDIA driver");
        if (r != CudaApi.CUDA_SUCCESS)
        {
            var (name, text) = CudaApi.Describe(r);
            string log = Marshal.PtrToStringUTF8((nint)errorLog) ?? "";
            throw new CudaException("cuModuleLoadDataEx", r, name, $"{text}; loading kernels/{compiled.Name} for {compiled.Architecture}{(log.Length > 0 ? ":\n" + log : "")}");
        }
        return module;
    }

    public nint GetFunction(string kernel)
    {
        if (_functions.TryGetValue(kernel, out var f)) return f;
        lock (_lock)
        {
            MakeCurrent();
            foreach (var module in _modules)
                if (CudaApi.cuModuleGetFunction(out f, module, kernel) == CudaApi.CUDA_SUCCESS)
                    return _functions.GetOrAdd(kernel, f);
        }
        throw new CudaException("cuModuleGetFunction", 500, "CUDA_ERROR_NOT_FOUND", $"no kernel named '{kernel}' in kernels/*.cu");
    }

    /// <summary>The largest block this function can launch with on this device: what its
    /// registers and <c>__launch_bounds__</c> allow (cuFuncGetAttribute).</summary>
    public int MaxThreadsPerBlock(nint function) => _maxThreads.GetOrAdd(function, f =>
    {
        MakeCurrent();
        CudaApi.Check(CudaApi.cuFuncGetAttribute(out int threads, CudaApi.CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK, f), "cuFuncGetAttribute");
        return threads;
    });

    public void Launch(nint function, string kernel, Dim3 grid, Dim3 block, uint sharedBytes, void** arguments)
    {
        MakeCurrent();
        int r = CudaApi.cuLaunchKernel(function, grid.X, grid.Y, grid.Z, block.X, block.Y, block.Z, sharedBytes, _stream, arguments, null);
        if (r != CudaApi.CUDA_SUCCESS)
        {
            var (name, text) = CudaApi.Describe(r);
            throw new CudaException("cuLaunchKernel", r, name, $"{text}; kernel {kernel}, grid {grid}, block {block}, {sharedBytes} bytes of shared memory");
        }
        if (SyncEveryLaunch && !_capturing)
        {
            r = CudaApi.cuCtxSynchronize();
            if (r != CudaApi.CUDA_SUCCESS)
            {
                var (name, text) = CudaApi.Describe(r);
                throw new CudaException("cuCtxSynchronize", r, name, $"{text}; after kernel {kernel}");
            }
        }
    }

    public void Synchronize()
    {
        CaptureRules.Refuse(_capturing, "cuStreamSynchronize", "the host waited for the device");
        MakeCurrent();
        CudaApi.Check(CudaApi.cuStreamSynchronize(_stream), "cuStreamSynchronize");
    }

    // ------------------------------------------------------------------ CUDA graphs

    public bool SupportsCapture => true;
    public bool Capturing => _capturing;

    /// <summary>The stream every launch and copy goes to (a library such as cuBLAS must use it too,
    /// or its work is not ordered with RawGan's: the stream does not wait for the legacy one).</summary>
    public nint Stream => _stream;

    /// <summary>Global mode: any call on any thread that is unsafe during a capture fails.</summary>
    public void BeginCapture()
    {
        MakeCurrent();
        CudaApi.Check(CudaApi.cuStreamBeginCapture(_stream, CudaApi.CU_STREAM_CAPTURE_MODE_GLOBAL), "cuStreamBeginCapture_v2");
        _capturing = true;
    }

    public nint EndCapture(out int nodes)
    {
        MakeCurrent();
        _capturing = false;
        CudaApi.Check(CudaApi.cuStreamEndCapture(_stream, out nint graph), "cuStreamEndCapture");
        try
        {
            nuint count = 0;
            CudaApi.Check(CudaApi.cuGraphGetNodes(graph, null, ref count), "cuGraphGetNodes");
            nodes = (int)count;
            CudaApi.Check(CudaApi.cuGraphInstantiateWithFlags(out nint exec, graph, 0), "cuGraphInstantiateWithFlags");
            return exec;
        }
        finally
        {
            CudaApi.cuGraphDestroy(graph);   // the executable graph keeps what it needs
        }
    }

    public void AbortCapture()
    {
        if (!_capturing) return;
        _capturing = false;
        MakeCurrent();
        if (CudaApi.cuStreamEndCapture(_stream, out nint graph) == CudaApi.CUDA_SUCCESS && graph != 0) CudaApi.cuGraphDestroy(graph);
    }

    public void LaunchGraph(nint graph)
    {
        MakeCurrent();
        CudaApi.Check(CudaApi.cuGraphLaunch(graph, _stream), "cuGraphLaunch");
        if (SyncEveryLaunch) CudaApi.Check(CudaApi.cuStreamSynchronize(_stream), "cuStreamSynchronize (after cuGraphLaunch)");
    }

    public void DestroyGraph(nint graph)
    {
        MakeCurrent();
        CudaApi.Check(CudaApi.cuGraphExecDestroy(graph), "cuGraphExecDestroy");
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        MakeCurrent();
        if (_stream != 0) CudaApi.cuStreamSynchronize(_stream);
        if (_stream != 0) CudaApi.cuStreamDestroy(_stream);
        _stream = 0;
        foreach (var m in _modules) CudaApi.cuModuleUnload(m);
        _modules.Clear();
        CudaApi.cuDevicePrimaryCtxRelease(_device);
        _currentContext = 0;
    }
}
