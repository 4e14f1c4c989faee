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

    /// <summary>The real GPU backend, or an exception whose message starts with "skipped: no CUDA device".</summary>
    public static CudaBackend Open()
    {
        if (Unavailable() is string reason) throw new InvalidOperationException($"skipped: no CUDA device ({reason})");
        return new CudaBackend(new NativeDriver(0));
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
/// im2col on the GPU, for the "im2col + cuBLAS" convolution: a kernel of this project's own,
/// compiled by NVRTC next to kernels/*.cu (or by the emulator for Program's --check).
///   col[s, (c k + a) k + b, i w + j] = x[s, c, i + a - k/2, j + b - k/2]   (0 outside the image)
/// One thread per element of col, grid-stride: the whole batch in one launch, each sample's
/// [Cin k k, H W] matrix contiguous, so a strided-batched GEMM multiplies them all.
/// </summary>
public sealed unsafe class GpuIm2Col
{
    public const string Kernel = "bench_im2col";

    public static readonly KernelSource Source = new("bench_im2col.cu", """
        extern "C" __global__ void bench_im2col(const float* __restrict__ x, float* __restrict__ col,
                                                int n, int cin, int h, int w, int k)
        {
            const long long total = (long long)n * cin * k * k * h * w;
            const int pad = k / 2;
            for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += (long long)gridDim.x * blockDim.x)
            {
                const int j = (int)(e % w);
                long long t = e / w;
                const int i = (int)(t % h);
                t /= h;
                const int tap = (int)(t % (k * k));
                t /= k * k;
                const int c = (int)(t % cin);
                const int s = (int)(t / cin);
                const int y = i + tap / k - pad, xx = j + tap % k - pad;
                col[e] = (y >= 0 && y < h && xx >= 0 && xx < w) ? x[(((long long)s * cin + c) * h + y) * w + xx] : 0.0f;
            }
        }
        """);

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
