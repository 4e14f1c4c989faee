using System.Runtime.InteropServices;
using System.Text;

namespace RawGan.Engine.Backends.Cuda;

/// <summary>
/// The real CUDA driver: one device, its primary context (the one cuBLAS and the runtime API
/// share), the legacy default stream, and one module per .cu file compiled by NVRTC.
/// Construction fails with a one-line <see cref="CudaUnavailableException"/> when there is no
/// driver library, no device, or no NVRTC, or when NVRTC is newer than the driver.
/// </summary>
public sealed unsafe class NativeDriver : ICudaDriver
{
    private readonly int _device;
    private nint _context;
    private readonly List<nint> _modules = new();
    private readonly Dictionary<string, nint> _functions = new();
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
        // NVRTC emits PTX of its own version; a driver older than NVRTC cannot load it (CUDA_ERROR_UNSUPPORTED_PTX_VERSION).
        if (nvMajor * 1000 + nvMinor * 10 > driverVersion)
            throw new CudaUnavailableException(
                $"NVRTC {nvMajor}.{nvMinor} is newer than the CUDA driver ({FormatVersion(driverVersion)}): its PTX would not load; update the NVIDIA driver or use an older NVRTC");

        CudaApi.Check(CudaApi.cuDeviceGet(out _device, ordinal), "cuDeviceGet");
        byte* name = stackalloc byte[256];
        CudaApi.Check(CudaApi.cuDeviceGetName(name, 256, _device), "cuDeviceGetName");
        CudaApi.Check(CudaApi.cuDeviceTotalMem(out nuint total, _device), "cuDeviceTotalMem_v2");
        Device = new DeviceInfo(
            Marshal.PtrToStringUTF8((nint)name) ?? "CUDA device",
            Attribute(CudaApi.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR), Attribute(CudaApi.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR),
            (long)total, Attribute(CudaApi.CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT), Attribute(CudaApi.CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK),
            Attribute(CudaApi.CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK), Attribute(CudaApi.CU_DEVICE_ATTRIBUTE_WARP_SIZE),
            FormatVersion(driverVersion), $"NVRTC {nvMajor}.{nvMinor}");
        CudaApi.Check(CudaApi.cuDevicePrimaryCtxRetain(out _context, _device), "cuDevicePrimaryCtxRetain");
        MakeCurrent();
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

    public ulong Allocate(long bytes)
    {
        MakeCurrent();
        int r = CudaApi.cuMemAlloc(out ulong address, (nuint)Math.Max(bytes, 1));
        if (r == CudaApi.CUDA_ERROR_OUT_OF_MEMORY) return 0;
        CudaApi.Check(r, "cuMemAlloc_v2");
        return address;
    }

    public void Free(ulong address)
    {
        MakeCurrent();
        CudaApi.Check(CudaApi.cuMemFree(address), "cuMemFree_v2");
    }

    public void CopyHostToDevice(ulong destination, void* source, long bytes)
    {
        MakeCurrent();
        CudaApi.Check(CudaApi.cuMemcpyHtoD(destination, source, (nuint)bytes), "cuMemcpyHtoD_v2");
    }

    public void CopyDeviceToHost(void* destination, ulong source, long bytes)
    {
        MakeCurrent();
        CudaApi.Check(CudaApi.cuMemcpyDtoH(destination, source, (nuint)bytes), "cuMemcpyDtoH_v2");
    }

    public void CopyDeviceToDevice(ulong destination, ulong source, long bytes)
    {
        MakeCurrent();
        CudaApi.Check(CudaApi.cuMemcpyDtoD(destination, source, (nuint)bytes), "cuMemcpyDtoD_v2");
    }

    public (long free, long total) MemoryInfo()
    {
        MakeCurrent();
        CudaApi.Check(CudaApi.cuMemGetInfo(out nuint free, out nuint total), "cuMemGetInfo_v2");
        return ((long)free, (long)total);
    }

    public void LoadModule(IReadOnlyList<KernelSource> sources, IReadOnlyDictionary<string, string> headers)
    {
        MakeCurrent();
        foreach (var source in sources)
        {
            var compiled = NvrtcCompiler.CompileCached(source, headers, Device.Architecture);
            _modules.Add(LoadPtx(compiled));
        }
    }

    private nint LoadPtx(CompiledKernel compiled)
    {
        const int logSize = 8192;
        byte* errorLog = stackalloc byte[logSize];
        errorLog[0] = 0;
        int* options = stackalloc int[] { CudaApi.CU_JIT_ERROR_LOG_BUFFER, CudaApi.CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES };
        void** values = stackalloc void*[] { errorLog, (void*)logSize };
        int r;
        nint module;
        fixed (byte* ptx = compiled.Ptx) r = CudaApi.cuModuleLoadDataEx(out module, ptx, 2, options, values);
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
        MakeCurrent();
        foreach (var module in _modules)
        {
            if (CudaApi.cuModuleGetFunction(out f, module, kernel) == CudaApi.CUDA_SUCCESS)
            {
                _functions[kernel] = f;
                return f;
            }
        }
        throw new CudaException("cuModuleGetFunction", 500, "CUDA_ERROR_NOT_FOUND", $"no kernel named '{kernel}' in kernels/*.cu");
    }

    public void Launch(nint function, string kernel, Dim3 grid, Dim3 block, uint sharedBytes, void** arguments)
    {
        MakeCurrent();
        int r = CudaApi.cuLaunchKernel(function, grid.X, grid.Y, grid.Z, block.X, block.Y, block.Z, sharedBytes, 0, arguments, null);
        if (r != CudaApi.CUDA_SUCCESS)
        {
            var (name, text) = CudaApi.Describe(r);
            throw new CudaException("cuLaunchKernel", r, name, $"{text}; kernel {kernel}, grid {grid}, block {block}, {sharedBytes} bytes of shared memory");
        }
        if (SyncEveryLaunch)
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
        MakeCurrent();
        CudaApi.Check(CudaApi.cuCtxSynchronize(), "cuCtxSynchronize");
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        MakeCurrent();
        foreach (var m in _modules) CudaApi.cuModuleUnload(m);
        _modules.Clear();
        CudaApi.cuDevicePrimaryCtxRelease(_device);
        _currentContext = 0;
    }
}
