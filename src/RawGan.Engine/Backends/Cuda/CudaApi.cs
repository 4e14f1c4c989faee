using System.Reflection;
using System.Runtime.InteropServices;

namespace RawGan.Engine.Backends.Cuda;

/// <summary>
/// RawGan's own bindings to the CUDA driver API, NVRTC and cuBLAS: a few dozen declarations,
/// each with the exact exported symbol (the _v2 ones matter: the plain names of cuMemAlloc and
/// friends still exist and silently take 32-bit sizes). Handles are nint, CUdeviceptr is ulong,
/// size_t is nuint, every result is an int checked by <see cref="Check"/>.
/// </summary>
internal static unsafe partial class CudaApi
{
    public const string Driver = "rawgan-cuda", Nvrtc = "rawgan-nvrtc", Cublas = "rawgan-cublas";

    /// <summary>File names tried for each library, most specific first.</summary>
    public static readonly IReadOnlyDictionary<string, string[]> Candidates = new Dictionary<string, string[]>
    {
        [Driver] = OperatingSystem.IsWindows() ? ["nvcuda.dll"] : ["libcuda.so.1", "libcuda.so"],
        [Nvrtc] = OperatingSystem.IsWindows()
            ? ["nvrtc64_130_0.dll", "nvrtc64_120_0.dll", "nvrtc64_112_0.dll", "nvrtc64_111_0.dll"]
            : ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so.11.2", "libnvrtc.so.11.1", "libnvrtc.so"],
        [Cublas] = OperatingSystem.IsWindows()
            ? ["cublas64_13.dll", "cublas64_12.dll", "cublas64_11.dll"]
            : ["libcublas.so.13", "libcublas.so.12", "libcublas.so.11", "libcublas.so"],
    };

    static CudaApi() => NativeLibrary.SetDllImportResolver(typeof(CudaApi).Assembly, Resolve);

    /// <summary>Makes sure the resolver is installed before the first call.</summary>
    public static void EnsureResolver() { }

    private static nint Resolve(string name, Assembly assembly, DllImportSearchPath? path)
    {
        if (!Candidates.TryGetValue(name, out var files)) return 0;
        foreach (var file in files)
            if (NativeLibrary.TryLoad(file, assembly, path, out var handle)) return handle;
        return 0;   // the runtime then throws DllNotFoundException, which callers turn into a clear message
    }

    /// <summary>Which file a library resolves to, or null if none can be loaded.</summary>
    public static string? Locate(string library)
    {
        foreach (var file in Candidates[library])
        {
            if (NativeLibrary.TryLoad(file, out var handle))
            {
                NativeLibrary.Free(handle);
                return file;
            }
        }
        return null;
    }

    // ------------------------------------------------------------------ driver API (cuda.h)

    [LibraryImport(Driver)] public static partial int cuInit(uint flags);
    [LibraryImport(Driver)] public static partial int cuDriverGetVersion(out int version);
    [LibraryImport(Driver)] public static partial int cuDeviceGetCount(out int count);
    [LibraryImport(Driver)] public static partial int cuDeviceGet(out int device, int ordinal);
    [LibraryImport(Driver)] public static partial int cuDeviceGetName(byte* name, int length, int device);
    [LibraryImport(Driver)] public static partial int cuDeviceGetAttribute(out int value, int attribute, int device);
    [LibraryImport(Driver, EntryPoint = "cuDeviceTotalMem_v2")] public static partial int cuDeviceTotalMem(out nuint bytes, int device);
    [LibraryImport(Driver)] public static partial int cuDevicePrimaryCtxRetain(out nint context, int device);
    [LibraryImport(Driver, EntryPoint = "cuDevicePrimaryCtxRelease_v2")] public static partial int cuDevicePrimaryCtxRelease(int device);
    [LibraryImport(Driver)] public static partial int cuCtxSetCurrent(nint context);
    [LibraryImport(Driver)] public static partial int cuCtxSynchronize();
    [LibraryImport(Driver, EntryPoint = "cuMemGetInfo_v2")] public static partial int cuMemGetInfo(out nuint free, out nuint total);
    [LibraryImport(Driver, EntryPoint = "cuMemAlloc_v2")] public static partial int cuMemAlloc(out ulong address, nuint bytes);
    [LibraryImport(Driver, EntryPoint = "cuMemFree_v2")] public static partial int cuMemFree(ulong address);
    [LibraryImport(Driver)] public static partial int cuModuleLoadDataEx(out nint module, void* image, uint numOptions, int* options, void** values);
    [LibraryImport(Driver)] public static partial int cuModuleUnload(nint module);
    [LibraryImport(Driver, StringMarshalling = StringMarshalling.Utf8)] public static partial int cuModuleGetFunction(out nint function, nint module, string name);
    [LibraryImport(Driver)]
    public static partial int cuLaunchKernel(nint function, uint gridX, uint gridY, uint gridZ, uint blockX, uint blockY, uint blockZ,
        uint sharedBytes, nint stream, void** parameters, void** extra);
    [LibraryImport(Driver)] public static partial int cuFuncGetAttribute(out int value, int attribute, nint function);

    // Streams, asynchronous copies and graphs: every launch and copy goes to one stream of RawGan's
    // own (capture needs a stream other than the legacy default one).
    [LibraryImport(Driver)] public static partial int cuStreamCreate(out nint stream, uint flags);
    [LibraryImport(Driver, EntryPoint = "cuStreamDestroy_v2")] public static partial int cuStreamDestroy(nint stream);
    [LibraryImport(Driver)] public static partial int cuStreamSynchronize(nint stream);
    [LibraryImport(Driver, EntryPoint = "cuMemcpyHtoDAsync_v2")] public static partial int cuMemcpyHtoDAsync(ulong destination, void* source, nuint bytes, nint stream);
    [LibraryImport(Driver, EntryPoint = "cuMemcpyDtoHAsync_v2")] public static partial int cuMemcpyDtoHAsync(void* destination, ulong source, nuint bytes, nint stream);
    [LibraryImport(Driver, EntryPoint = "cuMemcpyDtoDAsync_v2")] public static partial int cuMemcpyDtoDAsync(ulong destination, ulong source, nuint bytes, nint stream);
    [LibraryImport(Driver)] public static partial int cuMemHostAlloc(out void* host, nuint bytes, uint flags);
    [LibraryImport(Driver)] public static partial int cuMemFreeHost(void* host);
    [LibraryImport(Driver)] public static partial int cuEventCreate(out nint e, uint flags);
    [LibraryImport(Driver)] public static partial int cuEventRecord(nint e, nint stream);
    [LibraryImport(Driver)] public static partial int cuEventSynchronize(nint e);
    [LibraryImport(Driver, EntryPoint = "cuEventDestroy_v2")] public static partial int cuEventDestroy(nint e);
    [LibraryImport(Driver, EntryPoint = "cuStreamBeginCapture_v2")] public static partial int cuStreamBeginCapture(nint stream, int mode);
    [LibraryImport(Driver)] public static partial int cuStreamEndCapture(nint stream, out nint graph);
    [LibraryImport(Driver)] public static partial int cuGraphInstantiateWithFlags(out nint graphExec, nint graph, ulong flags);
    [LibraryImport(Driver)] public static partial int cuGraphGetNodes(nint graph, nint* nodes, ref nuint count);
    [LibraryImport(Driver)] public static partial int cuGraphLaunch(nint graphExec, nint stream);
    [LibraryImport(Driver)] public static partial int cuGraphExecDestroy(nint graphExec);
    [LibraryImport(Driver)] public static partial int cuGraphDestroy(nint graph);

    public const uint CU_STREAM_NON_BLOCKING = 1;
    /// <summary>cuEventCreate: no timing (the cheapest event; RawGan only waits on them).</summary>
    public const uint CU_EVENT_DISABLE_TIMING = 2;
    /// <summary>Stream capture modes: a thread that captures may make no call that is unsafe during
    /// capture (allocation, synchronous copies, synchronization) on any thread in GLOBAL mode.</summary>
    public const int CU_STREAM_CAPTURE_MODE_GLOBAL = 0;

    [LibraryImport(Driver)] public static partial int cuGetErrorName(int result, out nint name);
    [LibraryImport(Driver)] public static partial int cuGetErrorString(int result, out nint text);

    public const int CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK = 1, CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK = 8,
        CU_DEVICE_ATTRIBUTE_WARP_SIZE = 10, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT = 16,
        CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76;

    public const int CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK = 0, CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES = 1, CU_FUNC_ATTRIBUTE_NUM_REGS = 4;

    public const int CU_JIT_INFO_LOG_BUFFER = 3, CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES = 4,
        CU_JIT_ERROR_LOG_BUFFER = 5, CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES = 6;

    public const int CUDA_SUCCESS = 0, CUDA_ERROR_OUT_OF_MEMORY = 2, CUDA_ERROR_STUB_LIBRARY = 34, CUDA_ERROR_NO_DEVICE = 100,
        CUDA_ERROR_UNSUPPORTED_PTX_VERSION = 222;

    /// <summary>Names for the codes RawGan's users may meet, for when cuGetErrorName itself is unavailable.</summary>
    private static readonly Dictionary<int, string> KnownErrors = new()
    {
        [1] = "CUDA_ERROR_INVALID_VALUE",
        [2] = "CUDA_ERROR_OUT_OF_MEMORY",
        [3] = "CUDA_ERROR_NOT_INITIALIZED",
        [34] = "CUDA_ERROR_STUB_LIBRARY",
        [100] = "CUDA_ERROR_NO_DEVICE",
        [200] = "CUDA_ERROR_INVALID_IMAGE",
        [201] = "CUDA_ERROR_INVALID_CONTEXT",
        [209] = "CUDA_ERROR_NO_BINARY_FOR_GPU",
        [218] = "CUDA_ERROR_INVALID_PTX",
        [221] = "CUDA_ERROR_JIT_COMPILER_NOT_FOUND",
        [222] = "CUDA_ERROR_UNSUPPORTED_PTX_VERSION",
        [400] = "CUDA_ERROR_INVALID_HANDLE",
        [500] = "CUDA_ERROR_NOT_FOUND",
        [700] = "CUDA_ERROR_ILLEGAL_ADDRESS",
        [701] = "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES",
        [719] = "CUDA_ERROR_LAUNCH_FAILED",
        [900] = "CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED",
        [901] = "CUDA_ERROR_STREAM_CAPTURE_INVALIDATED",
    };

    public static (string name, string text) Describe(int result)
    {
        string? name = null, text = null;
        try
        {
            if (cuGetErrorName(result, out var n) == 0 && n != 0) name = Marshal.PtrToStringUTF8(n);
            if (cuGetErrorString(result, out var t) == 0 && t != 0) text = Marshal.PtrToStringUTF8(t);
        }
        catch (DllNotFoundException) { }
        catch (EntryPointNotFoundException) { }
        name ??= KnownErrors.GetValueOrDefault(result, $"CUresult {result}");
        return (name, text ?? "no description available");
    }

    /// <summary>Throws a <see cref="CudaException"/> naming the call unless <paramref name="result"/> is CUDA_SUCCESS.</summary>
    public static void Check(int result, string call)
    {
        if (result == CUDA_SUCCESS) return;
        var (name, text) = Describe(result);
        throw new CudaException(call, result, name, text);
    }

    // ------------------------------------------------------------------ NVRTC (nvrtc.h)

    [LibraryImport(Nvrtc)] public static partial int nvrtcVersion(out int major, out int minor);
    [LibraryImport(Nvrtc)]
    public static partial int nvrtcCreateProgram(out nint program, byte* source, byte* name, int numHeaders, byte** headers, byte** includeNames);
    [LibraryImport(Nvrtc)] public static partial int nvrtcCompileProgram(nint program, int numOptions, byte** options);
    [LibraryImport(Nvrtc)] public static partial int nvrtcGetPTXSize(nint program, out nuint size);
    [LibraryImport(Nvrtc)] public static partial int nvrtcGetPTX(nint program, byte* ptx);
    [LibraryImport(Nvrtc)] public static partial int nvrtcGetProgramLogSize(nint program, out nuint size);
    [LibraryImport(Nvrtc)] public static partial int nvrtcGetProgramLog(nint program, byte* log);
    [LibraryImport(Nvrtc)] public static partial int nvrtcGetCUBINSize(nint program, out nuint size);
    [LibraryImport(Nvrtc)] public static partial int nvrtcGetCUBIN(nint program, byte* cubin);
    [LibraryImport(Nvrtc)] public static partial int nvrtcGetNumSupportedArchs(out int count);
    [LibraryImport(Nvrtc)] public static partial int nvrtcGetSupportedArchs(int* archs);
    [LibraryImport(Nvrtc)] public static partial int nvrtcDestroyProgram(ref nint program);
    [LibraryImport(Nvrtc)] public static partial nint nvrtcGetErrorString(int result);

    public const int NVRTC_SUCCESS = 0, NVRTC_ERROR_COMPILATION = 6;

    public static void CheckNvrtc(int result, string call)
    {
        if (result == NVRTC_SUCCESS) return;
        string text = Marshal.PtrToStringUTF8(nvrtcGetErrorString(result)) ?? $"nvrtcResult {result}";
        throw new CudaException(call, result, text, text);
    }

    // ------------------------------------------------------------------ cuBLAS (cublas_api.h), for comparisons in benchmarks

    [LibraryImport(Cublas, EntryPoint = "cublasCreate_v2")] public static partial int cublasCreate(out nint handle);
    [LibraryImport(Cublas, EntryPoint = "cublasDestroy_v2")] public static partial int cublasDestroy(nint handle);
    [LibraryImport(Cublas, EntryPoint = "cublasSgemm_v2")]
    public static partial int cublasSgemm(nint handle, int transa, int transb, int m, int n, int k, float* alpha,
        ulong a, int lda, ulong b, int ldb, float* beta, ulong c, int ldc);
    [LibraryImport(Cublas)]
    public static partial int cublasSgemmStridedBatched(nint handle, int transa, int transb, int m, int n, int k, float* alpha,
        ulong a, int lda, long strideA, ulong b, int ldb, long strideB, float* beta, ulong c, int ldc, long strideC, int batch);

    /// <summary>cublasMath_t: CUBLAS_DEFAULT_MATH (fp32 sgemm stays fp32) and CUBLAS_TF32_TENSOR_OP_MATH
    /// (sgemm rounds its inputs to TF32 on tensor cores, CUDA 11 and newer).</summary>
    public const int CUBLAS_DEFAULT_MATH = 0, CUBLAS_TF32_TENSOR_OP_MATH = 3;
    [LibraryImport(Cublas)] public static partial int cublasSetMathMode(nint handle, int mode);
    [LibraryImport(Cublas, EntryPoint = "cublasSetStream_v2")] public static partial int cublasSetStream(nint handle, nint stream);

    /// <summary>Every cuBLAS symbol RawGan binds, for the test that the library exports them.</summary>
    public static readonly string[] CublasSymbols = ["cublasCreate_v2", "cublasDestroy_v2", "cublasSgemm_v2", "cublasSgemmStridedBatched", "cublasSetMathMode", "cublasSetStream_v2"];

    public static void CheckCublas(int status, string call)
    {
        if (status == 0) return;
        string name = status switch
        {
            1 => "CUBLAS_STATUS_NOT_INITIALIZED",
            3 => "CUBLAS_STATUS_ALLOC_FAILED",
            7 => "CUBLAS_STATUS_INVALID_VALUE",
            8 => "CUBLAS_STATUS_ARCH_MISMATCH",
            11 => "CUBLAS_STATUS_MAPPING_ERROR",
            13 => "CUBLAS_STATUS_EXECUTION_FAILED",
            14 => "CUBLAS_STATUS_INTERNAL_ERROR",
            15 => "CUBLAS_STATUS_NOT_SUPPORTED",
            16 => "CUBLAS_STATUS_LICENSE_ERROR",
            _ => $"cublasStatus {status}",
        };
        throw new CudaException(call, status, name, "cuBLAS call failed");
    }
}
