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

    /// <summary>Opens the backend named by <paramref name="spec"/>. Throws
    /// <see cref="CudaUnavailableException"/> (one line, for the user) when CUDA was asked for
    /// and cannot be had, and <see cref="ArgumentException"/> for an unknown name.</summary>
    public static IBackend Open(string spec, Action<string>? notice = null)
    {
        switch (spec.Trim().ToLowerInvariant())
        {
            case "cpu":
                return CpuBackend.Shared;
            case "cuda-emulated":
                return new CudaBackend(new EmulatedDriver());
            case "auto":
                try
                {
                    return new CudaBackend(new NativeDriver(0));
                }
                catch (CudaUnavailableException e)
                {
                    notice?.Invoke($"using the CPU: {e.Message}");
                    return CpuBackend.Shared;
                }
            case var s when s == "cuda" || s.StartsWith("cuda:"):
                int ordinal = 0;
                if (s.StartsWith("cuda:") && !int.TryParse(s["cuda:".Length..], out ordinal))
                    throw new ArgumentException($"unknown device '{spec}': write cuda:0, cuda:1, ...");
                return new CudaBackend(new NativeDriver(ordinal));
            default:
                throw new ArgumentException($"unknown device '{spec}': choose one of {string.Join(", ", Choices)} (or cuda:N)");
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
