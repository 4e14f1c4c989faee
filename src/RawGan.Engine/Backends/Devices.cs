using RawGan.Engine.Backends.Cpu;
using RawGan.Engine.Backends.Cuda;

namespace RawGan.Engine.Backends;

/// <summary>
/// Chooses a backend from what the user asked for:
/// <list type="bullet">
/// <item><c>cpu</c>: the C# backend.</item>
/// <item><c>cuda</c> or <c>cuda:N</c>: the NVIDIA GPU (device N), or a one-line error saying what is missing.</item>
/// <item><c>cuda-emulated</c>: the CUDA backend with its kernels run on the CPU (for tests and for reading kernels in a debugger).</item>
/// <item><c>auto</c>: CUDA if a device is present, otherwise the CPU with a one-line notice.</item>
/// </list>
/// </summary>
public static class Devices
{
    public static readonly string[] Choices = ["auto", "cpu", "cuda", "cuda-emulated"];

    /// <summary>The values of --precision: auto (the device's default), fp32, tf32.</summary>
    public static readonly string[] PrecisionChoices = ["auto", "fp32", "tf32"];

    /// <summary>"fp32" or "tf32" as a <see cref="Precision"/>; "auto" (or null) as null, the
    /// device's default (<see cref="CudaBackend.DefaultPrecision"/>).</summary>
    public static Precision? ParsePrecision(string? value) => value?.Trim().ToLowerInvariant() switch
    {
        null or "" or "auto" => null,
        "fp32" => Precision.Fp32,
        "tf32" => Precision.Tf32,
        _ => throw new ArgumentException($"unknown precision '{value}': choose one of {string.Join(", ", PrecisionChoices)}"),
    };

    /// <summary>Opens the backend named by <paramref name="spec"/>. Throws
    /// <see cref="CudaUnavailableException"/> (one line, for the user) when CUDA was asked for
    /// and cannot be had, and <see cref="ArgumentException"/> for an unknown name or a precision
    /// the device does not have.</summary>
    /// <param name="spec">auto, cpu, cuda, cuda:N or cuda-emulated.</param>
    /// <param name="notice">Receives one-line notices (the CPU fallback of auto).</param>
    /// <param name="precision">How a CUDA backend computes matrix products and convolutions; null
    /// takes the device's default (TF32 on compute capability 8.0 and newer, else fp32; fp32 on
    /// the emulator). The CPU always computes in fp32 (a notice says so when tf32 was asked for).</param>
    public static IBackend Open(string spec, Action<string>? notice = null, Precision? precision = null)
    {
        IBackend Cpu()
        {
            if (precision == Precision.Tf32) notice?.Invoke("the CPU computes in fp32: --precision tf32 applies to CUDA devices");
            return CpuBackend.Shared;
        }
        switch (spec.Trim().ToLowerInvariant())
        {
            case "cpu":
                return Cpu();
            case "cuda-emulated":
                return new CudaBackend(new EmulatedDriver(), precision: precision);
            case "auto":
                try
                {
                    return Cuda(new NativeDriver(0), precision);
                }
                catch (CudaUnavailableException e)
                {
                    notice?.Invoke($"using the CPU: {e.Message}");
                    return Cpu();
                }
            case var s when s == "cuda" || s.StartsWith("cuda:"):
                int ordinal = 0;
                if (s.StartsWith("cuda:") && !int.TryParse(s["cuda:".Length..], out ordinal))
                    throw new ArgumentException($"unknown device '{spec}': write cuda:0, cuda:1, ...");
                return Cuda(new NativeDriver(ordinal), precision);
            default:
                throw new ArgumentException($"unknown device '{spec}': choose one of {string.Join(", ", Choices)} (or cuda:N)");
        }
    }

    private static CudaBackend Cuda(NativeDriver driver, Precision? precision)
    {
        try
        {
            return new CudaBackend(driver, precision: precision);
        }
        catch
        {
            driver.Dispose();
            throw;
        }
    }

    /// <summary>What this machine offers, one line each, for `info`: never throws.</summary>
    public static IEnumerable<string> Describe()
    {
        yield return $"cpu: {CpuBackend.Shared.Description}";
        string cuda;
        try
        {
            using var driver = new NativeDriver(0);
            cuda = $"cuda: {driver.Device}\ncuda kernels: {driver.KernelTarget}";
        }
        catch (CudaUnavailableException e) { cuda = $"cuda: unavailable: {e.Message}"; }
        catch (CudaException e) { cuda = $"cuda: unavailable: {e.Message}"; }
        yield return cuda;
        string nvrtc;
        try
        {
            var (major, minor) = NvrtcCompiler.Version();
            nvrtc = $"nvrtc: {major}.{minor} ({CudaApi.Locate(CudaApi.Nvrtc)})";
        }
        catch (CudaUnavailableException e) { nvrtc = $"nvrtc: unavailable: {e.Message}"; }
        yield return nvrtc;
        string emulator;
        try { emulator = $"cuda-emulated: available ({EmulatedDriver.CompilerVersion()})"; }
        catch (CudaUnavailableException e) { emulator = $"cuda-emulated: unavailable: {e.Message}"; }
        yield return emulator;
    }
}
