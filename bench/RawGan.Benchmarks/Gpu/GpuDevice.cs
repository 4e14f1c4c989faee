using RawGan.Engine.Backends;
using RawGan.Engine.Backends.Cuda;

namespace RawGan.Benchmarks.Gpu;

/// <summary>Whether a CUDA device is here, and a CudaBackend on it for the GPU comparisons.</summary>
public static class GpuDevice
{
    /// <summary>Null if a CUDA device can be used, otherwise why not (one line). Never throws.</summary>
    public static string? Unavailable()
    {
        try
        {
            using var driver = new NativeDriver(0);
            return null;
        }
        catch (CudaUnavailableException e) { return e.Message; }
        catch (CudaException e) { return e.Message; }
        catch (DllNotFoundException e) { return e.Message; }
    }

    /// <summary>Null if the CUDA device has TF32 tensor cores (compute capability 8.0 and newer),
    /// otherwise why not (one line). Never throws.</summary>
    public static string? Tf32Unavailable()
    {
        if (Unavailable() is string reason) return $"no CUDA device ({reason})";
        using var driver = new NativeDriver(0);
        return CudaBackend.SupportsTf32(driver.Device) ? null : $"{driver.Device.Name} is compute {driver.Device.ComputeMajor}.{driver.Device.ComputeMinor}; TF32 needs 8.0";
    }

    /// <summary>The real GPU backend at <paramref name="precision"/> (fp32 unless asked: the lab
    /// names each kernel version it times), or an exception whose message starts with "skipped:".</summary>
    public static CudaBackend Open(Precision precision = Precision.Fp32)
    {
        if (Unavailable() is string reason) throw new InvalidOperationException($"skipped: no CUDA device ({reason})");
        if (precision == Precision.Tf32 && Tf32Unavailable() is string noTf32) throw new InvalidOperationException($"skipped: {noTf32}");
        return new CudaBackend(new NativeDriver(0), precision: precision);
    }

    public static DeviceBuffer Upload(IBackend backend, float[] host)
    {
        var b = backend.Allocate(host.Length);
        backend.Upload(host, b);
        return b;
    }

    public static float[] Download(IBackend backend, DeviceBuffer b, long length)
    {
        var a = new float[length];
        backend.Download(b, a);
        return a;
    }
}

/// <summary>
/// im2col on the GPU (Gpu/bench_im2col.cu), for the "im2col + cuBLAS" convolution, compiled by
/// NVRTC next to kernels/*.cu (or by the emulator for Program's --check).
/// </summary>
public sealed unsafe class GpuIm2Col
{
    public const string Kernel = "bench_im2col";

    /// <summary>Gpu/bench_im2col.cu, embedded in this assembly.</summary>
    public static readonly KernelSource Source = Load();

    private static KernelSource Load()
    {
        using var stream = typeof(GpuIm2Col).Assembly.GetManifestResourceStream("bench_im2col.cu")
            ?? throw new InvalidOperationException("bench_im2col.cu is not embedded in the benchmark assembly");
        return new KernelSource("bench_im2col.cu", new StreamReader(stream).ReadToEnd());
    }

    private readonly ICudaDriver _driver;
    private readonly nint _function;

    /// <param name="driver">A driver whose module list can take one more source (NativeDriver), or
    /// an emulated driver built for <see cref="Source"/> alone.</param>
    public GpuIm2Col(ICudaDriver driver, bool load)
    {
        _driver = driver;
        if (load) driver.LoadModule([Source], KernelLibrary.Headers);
        _function = driver.GetFunction(Kernel);
    }

    public void Run(DeviceBuffer x, DeviceBuffer col, int n, int cin, int h, int w, int k)
    {
        ulong px = (ulong)x.Address, pc = (ulong)col.Address;
        int an = n, acin = cin, ah = h, aw = w, ak = k;
        void** args = stackalloc void*[] { &px, &pc, &an, &acin, &ah, &aw, &ak };
        long total = (long)n * cin * k * k * h * w;
        const int block = 256;
        uint grid = (uint)Math.Clamp((total + block - 1) / block, 1, Math.Max(1, _driver.Device.Multiprocessors) * 32L);
        _driver.Launch(_function, Kernel, new Dim3(grid), new Dim3(block), 0, args);
    }
}
