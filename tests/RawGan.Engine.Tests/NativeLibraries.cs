using RawGan.Engine.Backends.Cuda;

namespace RawGan.Tests;

/// <summary>
/// Which of the native libraries the GPU path binds are on this machine. Tests that need one are
/// marked with the attributes below: without the library they are skipped with a reason that
/// names the package to install, so that plain `dotnet test` on a bare machine passes, except
/// in CI (CI=true), where a missing library is a failure, never a skip: CI cannot go green by
/// skipping what it is meant to check. `./test.sh` installs all of them.
/// </summary>
public static class NativeLibraries
{
    public static bool InCi => string.Equals(Environment.GetEnvironmentVariable("CI"), "true", StringComparison.OrdinalIgnoreCase);

    public static readonly Lazy<string?> NvrtcMissing = new(() => Missing(() => NvrtcCompiler.Version(),
        "NVRTC is not installed (Debian: apt-get install libnvrtc11.2 from non-free, or run ./test.sh)"));

    public static readonly Lazy<string?> DriverMissing = new(() => Missing(() => NativeDriver.ProbeDriverVersion(),
        "the CUDA driver library is not installed (Debian: apt-get install libcuda1 from non-free, or run ./test.sh)"));

    public static readonly Lazy<string?> CublasMissing = new(() =>
        new[] { "libcublas.so.13", "libcublas.so.12", "libcublas.so.11", "cublas64_13.dll", "cublas64_12.dll", "cublas64_11.dll" }
            .Any(name => System.Runtime.InteropServices.NativeLibrary.TryLoad(name, out _))
            ? null : "cuBLAS is not installed (Debian: apt-get install libcublas11 from non-free, or run ./test.sh)");

    public static readonly Lazy<string?> MpiMissing = new(() =>
        System.Runtime.InteropServices.NativeLibrary.TryLoad("libmpi.so.40", out _) && OnPath("mpirun")
            ? null : "Open MPI is not installed (Debian: apt-get install openmpi-bin libopenmpi3, or run ./test.sh)");

    private static bool OnPath(string program) =>
        (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator).Any(d => File.Exists(Path.Combine(d, program)));

    private static string? Missing(Action probe, string reason)
    {
        try
        {
            probe();
            return null;
        }
        catch (CudaUnavailableException) { return reason; }
        catch (DllNotFoundException) { return reason; }
    }

    /// <summary>The reason to skip, or null to run (always null in CI).</summary>
    public static string? SkipReason(params Lazy<string?>[] needed) =>
        InCi ? null : needed.Select(n => n.Value).FirstOrDefault(r => r != null);
}

/// <summary>A fact that needs NVRTC.</summary>
public sealed class NvrtcFactAttribute : FactAttribute
{
    public NvrtcFactAttribute() => Skip = NativeLibraries.SkipReason(NativeLibraries.NvrtcMissing);
}

/// <summary>A theory that needs NVRTC.</summary>
public sealed class NvrtcTheoryAttribute : TheoryAttribute
{
    public NvrtcTheoryAttribute() => Skip = NativeLibraries.SkipReason(NativeLibraries.NvrtcMissing);
}

/// <summary>A fact that needs the CUDA driver library (not a GPU).</summary>
public sealed class DriverFactAttribute : FactAttribute
{
    public DriverFactAttribute() => Skip = NativeLibraries.SkipReason(NativeLibraries.DriverMissing);
}

/// <summary>A fact that needs both NVRTC and the CUDA driver library.</summary>
public sealed class NvrtcAndDriverFactAttribute : FactAttribute
{
    public NvrtcAndDriverFactAttribute() => Skip = NativeLibraries.SkipReason(NativeLibraries.NvrtcMissing, NativeLibraries.DriverMissing);
}

/// <summary>A fact that needs cuBLAS and the CUDA driver library.</summary>
public sealed class CublasFactAttribute : FactAttribute
{
    public CublasFactAttribute() => Skip = NativeLibraries.SkipReason(NativeLibraries.DriverMissing, NativeLibraries.CublasMissing);
}

/// <summary>A fact that runs ranks under Open MPI's mpirun.</summary>
public sealed class MpiFactAttribute : FactAttribute
{
    public MpiFactAttribute() => Skip = NativeLibraries.SkipReason(NativeLibraries.MpiMissing);
}

/// <summary>A fact about the AVX-512 kernels, which a CPU without AVX-512 cannot run (their AVX2 and
/// portable counterparts are checked on every machine: a backend can be set to fewer vectors than its CPU has).</summary>
public sealed class Avx512FactAttribute : FactAttribute
{
    public Avx512FactAttribute() => Skip = RawGan.Engine.Backends.Cpu.CpuBackend.HardwareVectors < RawGan.Engine.Backends.Cpu.CpuBackend.CpuVectors.Avx512
        ? "this CPU has no AVX-512, so its kernels cannot run here" : null;
}
