using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;

namespace RawGan.Engine.Backends.Cuda;

/// <summary>A kernel that NVRTC (or g++ for the emulator) could not compile; the message holds the compiler's log.</summary>
public sealed class KernelCompileException(string message) : Exception(message);

/// <summary>
/// The result of compiling one .cu file: for <c>compute_XY</c>, PTX text (NUL-terminated, as
/// cuModuleLoadData wants it) that the driver assembles when it loads it; for <c>sm_XY</c>,
/// machine code (a CUBIN) that ptxas already assembled, with ptxas's report of each kernel's
/// registers, shared memory and spills in <see cref="Kernels"/>. Either loads with cuModuleLoadData.
/// </summary>
public sealed record CompiledKernel(string Name, string Architecture, byte[] Image, string Log, IReadOnlyList<KernelResources> Kernels)
{
    public bool IsMachineCode => NvrtcCompiler.IsMachineCodeArchitecture(Architecture);

    /// <summary>The lines of the log that are not ptxas's -v report: warnings and errors.</summary>
    public IEnumerable<string> Warnings => Log.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
        .Where(l => !l.StartsWith("ptxas info", StringComparison.Ordinal) && !l.StartsWith("ptxas         .", StringComparison.Ordinal) && !l.StartsWith("ptxas .", StringComparison.Ordinal));
}

/// <summary>
/// Compiles kernels/*.cu with NVRTC at run time (docs/DESIGN.md, decisions 4 and 8): to machine
/// code (CUBIN, <c>sm_XY</c>) for the device in use when this NVRTC knows its architecture, else to
/// PTX (<c>compute_XY</c>) for the newest architecture it knows, which the driver assembles at load.
/// Results are cached on disk keyed by a hash of the source, its headers, the architecture, the
/// options and the NVRTC version.
/// </summary>
public static unsafe class NvrtcCompiler
{
    /// <summary>Options for every kernel: C++17, line info for profilers, and exact IEEE math
    /// (no --use_fast_math: the CPU reference comparisons would loosen).</summary>
    public static readonly string[] Options = ["--std=c++17", "-lineinfo"];

    /// <summary>"major.minor" of the NVRTC library, or throws <see cref="CudaUnavailableException"/> if it cannot be loaded.</summary>
    public static (int major, int minor) Version()
    {
        CudaApi.EnsureResolver();
        try
        {
            CudaApi.CheckNvrtc(CudaApi.nvrtcVersion(out int major, out int minor), "nvrtcVersion");
            return (major, minor);
        }
        catch (DllNotFoundException e)
        {
            throw new CudaUnavailableException(
                $"NVRTC (the CUDA runtime compiler) is not installed: none of {string.Join(", ", CudaApi.Candidates[CudaApi.Nvrtc])} could be loaded " +
                "(Debian: apt-get install libnvrtc11.2 from non-free; or install the CUDA toolkit)", e);
        }
    }

    public static bool IsMachineCodeArchitecture(string architecture) => architecture.StartsWith("sm_", StringComparison.Ordinal);

    /// <summary>The sm numbers this NVRTC can compile for (nvrtcGetSupportedArchs), e.g. 35..90 for 11.8.</summary>
    public static IReadOnlyList<int> SupportedArchitectures()
    {
        Version();
        CudaApi.CheckNvrtc(CudaApi.nvrtcGetNumSupportedArchs(out int count), "nvrtcGetNumSupportedArchs");
        var archs = new int[count];
        fixed (int* p = archs) CudaApi.CheckNvrtc(CudaApi.nvrtcGetSupportedArchs(p), "nvrtcGetSupportedArchs");
        return archs;
    }

    /// <summary>
    /// What to compile for a device of compute capability <paramref name="major"/>.<paramref name="minor"/>:
    /// "sm_XY" (machine code, checked by ptxas now) when NVRTC supports it; otherwise "compute_NN"
    /// for the newest architecture NVRTC supports below the device, PTX that the driver assembles
    /// at load (a device newer than this NVRTC). Throws when the device is older than anything
    /// this NVRTC can target.
    /// </summary>
    public static string ChooseArchitecture(int major, int minor, IReadOnlyList<int> supported)
    {
        int device = major * 10 + minor;
        if (supported.Contains(device)) return $"sm_{device}";
        var older = supported.Where(a => a < device).ToArray();
        if (older.Length > 0) return $"compute_{older.Max()}";
        throw new CudaUnavailableException(
            $"this GPU (compute {major}.{minor}) is older than anything this NVRTC can compile for (sm_{supported.Min()} to sm_{supported.Max()}); install an older CUDA toolkit's NVRTC");
    }

    /// <summary>Compiles one source for <paramref name="architecture"/>, without the cache:
    /// "compute_80" gives PTX, "sm_80" machine code plus ptxas's per-kernel report.</summary>
    public static CompiledKernel Compile(KernelSource source, IReadOnlyDictionary<string, string> headers, string architecture)
    {
        Version();
        var allocations = new List<nint>();
        byte* Utf8(string s)
        {
            var bytes = Encoding.UTF8.GetBytes(s + "\0");
            var p = (byte*)NativeMemory.Alloc((nuint)bytes.Length);
            bytes.CopyTo(new Span<byte>(p, bytes.Length));
            allocations.Add((nint)p);
            return p;
        }
        nint program = 0;
        try
        {
            var headerNames = headers.Keys.Order().ToArray();
            byte** texts = stackalloc byte*[Math.Max(1, headerNames.Length)];
            byte** names = stackalloc byte*[Math.Max(1, headerNames.Length)];
            for (int i = 0; i < headerNames.Length; i++)
            {
                texts[i] = Utf8(headers[headerNames[i]]);
                names[i] = Utf8(headerNames[i]);
            }
            CudaApi.CheckNvrtc(CudaApi.nvrtcCreateProgram(out program, Utf8(source.Text), Utf8(source.Name), headerNames.Length, texts, names),
                "nvrtcCreateProgram");
            bool machineCode = IsMachineCodeArchitecture(architecture);
            var options = Options.Append($"--gpu-architecture={architecture}").ToArray();
            if (machineCode) options = [.. options, "--ptxas-options=-v"];
            byte** opts = stackalloc byte*[options.Length];
            for (int i = 0; i < options.Length; i++) opts[i] = Utf8(options[i]);
            int result = CudaApi.nvrtcCompileProgram(program, options.Length, opts);
            string log = ReadLog(program);
            if (result == CudaApi.NVRTC_ERROR_COMPILATION)
                throw new KernelCompileException($"kernels/{source.Name} does not compile for {architecture}:\n{log}");
            CudaApi.CheckNvrtc(result, "nvrtcCompileProgram");
            if (machineCode)
            {
                CudaApi.CheckNvrtc(CudaApi.nvrtcGetCUBINSize(program, out nuint cubinSize), "nvrtcGetCUBINSize");
                var cubin = new byte[(int)cubinSize];
                fixed (byte* p = cubin) CudaApi.CheckNvrtc(CudaApi.nvrtcGetCUBIN(program, p), "nvrtcGetCUBIN");
                return new CompiledKernel(source.Name, architecture, cubin, log, LaunchLimits.ParsePtxasLog(log));
            }
            CudaApi.CheckNvrtc(CudaApi.nvrtcGetPTXSize(program, out nuint size), "nvrtcGetPTXSize");
            var ptx = new byte[(int)size];      // includes the terminating NUL
            fixed (byte* p = ptx) CudaApi.CheckNvrtc(CudaApi.nvrtcGetPTX(program, p), "nvrtcGetPTX");
            return new CompiledKernel(source.Name, architecture, ptx, log, []);
        }
        finally
        {
            if (program != 0) CudaApi.nvrtcDestroyProgram(ref program);
            foreach (var p in allocations) NativeMemory.Free((void*)p);
        }
    }

    private static string ReadLog(nint program)
    {
        if (CudaApi.nvrtcGetProgramLogSize(program, out nuint size) != 0 || size <= 1) return "";
        var buffer = new byte[(int)size];
        fixed (byte* p = buffer) CudaApi.nvrtcGetProgramLog(program, p);
        // NVRTC's log may end in more than one NUL (after ptxas's report): trim them all.
        return Encoding.UTF8.GetString(buffer, 0, buffer.Length - 1).Trim().Trim('\0').Trim();
    }

    /// <summary>Compile, or read the image (and ptxas's report, kept beside it) cached by an earlier run.</summary>
    /// <remarks>The cache lives under <paramref name="cacheRoot"/> when given (tests give their
    /// own), else under <see cref="CacheDirectory.Root"/>.</remarks>
    public static CompiledKernel CompileCached(KernelSource source, IReadOnlyDictionary<string, string> headers, string architecture, string? cacheRoot = null)
    {
        var (major, minor) = Version();
        var key = new StringBuilder()
            .Append(source.Text).Append('\0')
            .AppendJoin('\0', headers.OrderBy(h => h.Key, StringComparer.Ordinal).Select(h => h.Key + "\0" + h.Value)).Append('\0')
            .Append(architecture).Append('\0').AppendJoin(' ', Options).Append('\0').Append($"nvrtc {major}.{minor}");
        string hash = Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(key.ToString())))[..16].ToLowerInvariant();
        bool machineCode = IsMachineCodeArchitecture(architecture);
        string kind = machineCode ? "cubin" : "ptx";
        string folder = cacheRoot == null ? CacheDirectory.For(kind) : Directory.CreateDirectory(Path.Combine(cacheRoot, kind)).FullName;
        string path = Path.Combine(folder,
            $"{Path.GetFileNameWithoutExtension(source.Name)}-{architecture}-{hash}.{(machineCode ? "cubin" : "ptx")}");
        string logPath = path + ".log";
        if (File.Exists(path) && (!machineCode || File.Exists(logPath)))
        {
            try
            {
                var cached = File.ReadAllBytes(path);
                string log = machineCode ? File.ReadAllText(logPath) : "";
                bool complete = machineCode ? cached.Length > 4 && cached[0] == 0x7f && cached[1] == (byte)'E' : cached.Length > 0 && cached[^1] == 0;
                if (complete)
                    return new CompiledKernel(source.Name, architecture, cached, log, machineCode ? LaunchLimits.ParsePtxasLog(log) : []);
            }
            catch (IOException) { /* unreadable cache entry: compile again */ }
        }
        var compiled = Compile(source, headers, architecture);
        // The log first: an image without its log is never taken from the cache.
        if (machineCode) CacheDirectory.WriteAtomically(logPath, Encoding.UTF8.GetBytes(compiled.Log));
        CacheDirectory.WriteAtomically(path, compiled.Image);
        return compiled;
    }
}
