using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;

namespace RawGan.Engine.Backends.Cuda;

/// <summary>A kernel that NVRTC (or g++ for the emulator) could not compile; the message holds the compiler's log.</summary>
public sealed class KernelCompileException(string message) : Exception(message);

/// <summary>The result of compiling one .cu file: PTX text (NUL-terminated, as cuModuleLoadData wants it) and the compiler's log.</summary>
public sealed record CompiledKernel(string Name, string Architecture, byte[] Ptx, string Log);

/// <summary>
/// Compiles kernels/*.cu to PTX with NVRTC at run time (DESIGN.md, point 4), for the
/// architecture of the device in use, and caches the PTX on disk keyed by a hash of the source,
/// its headers, the architecture, the options and the NVRTC version.
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

    /// <summary>Compiles one source for <paramref name="architecture"/> (e.g. "compute_80"), without the cache.</summary>
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
            var options = Options.Append($"--gpu-architecture={architecture}").ToArray();
            byte** opts = stackalloc byte*[options.Length];
            for (int i = 0; i < options.Length; i++) opts[i] = Utf8(options[i]);
            int result = CudaApi.nvrtcCompileProgram(program, options.Length, opts);
            string log = ReadLog(program);
            if (result == CudaApi.NVRTC_ERROR_COMPILATION)
                throw new KernelCompileException($"kernels/{source.Name} does not compile for {architecture}:\n{log}");
            CudaApi.CheckNvrtc(result, "nvrtcCompileProgram");
            CudaApi.CheckNvrtc(CudaApi.nvrtcGetPTXSize(program, out nuint size), "nvrtcGetPTXSize");
            var ptx = new byte[(int)size];      // includes the terminating NUL
            fixed (byte* p = ptx) CudaApi.CheckNvrtc(CudaApi.nvrtcGetPTX(program, p), "nvrtcGetPTX");
            return new CompiledKernel(source.Name, architecture, ptx, log);
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
        return Encoding.UTF8.GetString(buffer, 0, buffer.Length - 1).Trim();
    }

    /// <summary>Compile, or read the PTX cached by an earlier run.</summary>
    public static CompiledKernel CompileCached(KernelSource source, IReadOnlyDictionary<string, string> headers, string architecture)
    {
        var (major, minor) = Version();
        var key = new StringBuilder()
            .Append(source.Text).Append('\0')
            .AppendJoin('\0', headers.OrderBy(h => h.Key, StringComparer.Ordinal).Select(h => h.Key + "\0" + h.Value)).Append('\0')
            .Append(architecture).Append('\0').AppendJoin(' ', Options).Append('\0').Append($"nvrtc {major}.{minor}");
        string hash = Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(key.ToString())))[..16].ToLowerInvariant();
        string path = Path.Combine(CacheDirectory.For("ptx"), $"{Path.GetFileNameWithoutExtension(source.Name)}-{architecture}-{hash}.ptx");
        if (File.Exists(path))
        {
            try
            {
                var cached = File.ReadAllBytes(path);
                if (cached.Length > 0 && cached[^1] == 0) return new CompiledKernel(source.Name, architecture, cached, "");
            }
            catch (IOException) { /* unreadable cache entry: compile again */ }
        }
        var compiled = Compile(source, headers, architecture);
        CacheDirectory.WriteAtomically(path, compiled.Ptx);
        return compiled;
    }
}

/// <summary>Where RawGan caches compiled kernels: $RAWGAN_CACHE_DIR, else $XDG_CACHE_HOME/rawgan, else ~/.cache/rawgan.</summary>
public static class CacheDirectory
{
    public static string Root
    {
        get
        {
            var env = Environment.GetEnvironmentVariable("RAWGAN_CACHE_DIR");
            if (!string.IsNullOrEmpty(env)) return env;
            var xdg = Environment.GetEnvironmentVariable("XDG_CACHE_HOME");
            if (!string.IsNullOrEmpty(xdg)) return Path.Combine(xdg, "rawgan");
            var home = Environment.GetFolderPath(Environment.SpecialFolder.UserProfile);
            return string.IsNullOrEmpty(home) ? Path.Combine(Path.GetTempPath(), "rawgan-cache") : Path.Combine(home, ".cache", "rawgan");
        }
    }

    public static string For(string kind)
    {
        var dir = Path.Combine(Root, kind);
        Directory.CreateDirectory(dir);
        return dir;
    }

    /// <summary>Writes through a temporary file and a rename, so that concurrent processes never
    /// see a half-written cache entry.</summary>
    public static void WriteAtomically(string path, byte[] bytes)
    {
        var temp = $"{path}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp";
        try
        {
            File.WriteAllBytes(temp, bytes);
            File.Move(temp, path, overwrite: true);
        }
        catch (IOException)
        {
            // A read-only or full cache only costs a recompile next time.
            try { File.Delete(temp); } catch (IOException) { }
        }
        catch (UnauthorizedAccessException)
        {
            try { File.Delete(temp); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        }
    }
}
