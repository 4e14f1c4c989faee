using RawGan.Benchmarks.Infrastructure;
using RawGan.Benchmarks.Reference;
using RawGan.Engine.Backends;
using RawGan.Engine.Backends.Cuda;

namespace RawGan.Benchmarks.Gpu;

/// <summary>
/// Without a GPU, the GPU comparisons' own code (the im2col kernel, its launch and argument
/// packing, the batched layout the cuBLAS call assumes) still runs: on RawGan's CUDA emulator,
/// with the engine's sgemm kernel standing in for cuBLAS (same row-major product, one sample at a
/// time instead of strided-batched). Checked against the naive loops, with CudaBackend's
/// conv2d_forward (version 1), conv2d_forward_wide (version 3) and conv2d_forward_tf32 (version 2,
/// TF32's tolerance) beside it: the three kernels the lab's GPU classes time.
/// </summary>
public static class EmulatedGpuCheck
{
    public static void Run()
    {
        using var gpu = new CudaBackend(new EmulatedDriver(), precision: Precision.Fp32);
        // Version 2 on the same (host) memory: emulated device buffers are host memory.
        using var tf32 = new CudaBackend(new EmulatedDriver(), precision: Precision.Tf32);
        // The emulator loads one library per driver: the im2col kernel gets a driver of its own.
        // Emulated device memory is host memory, so it reads the backend's buffers directly.
        using var im2colDriver = EmulatedDriver.ForSources([GpuIm2Col.Source], KernelLibrary.Headers);
        var im2col = new GpuIm2Col(im2colDriver, load: false);
        foreach (var c in new[] { new ConvCase("emulated", 2, 5, 7, 6, 5), new ConvCase("emulated", 3, 4, 3, 4, 8, 1), new ConvCase("emulated", 2, 3, 4, 5, 5, 5) })
        {
            var x = CpuBuffers.Normal(c.InputLength, 71);
            var w = CpuBuffers.Normal(c.WeightLength, 72);
            var expected = new float[c.OutputLength];
            NaiveKernels.ConvForward(x, w, expected, c.N, c.Cin, c.H, c.W, c.Cout, c.K, c.Scale);
            var dx = GpuDevice.Upload(gpu, x);
            var dw = GpuDevice.Upload(gpu, w);
            var dy = gpu.Allocate(c.OutputLength);
            int plane = c.H * c.W, ckk = c.Cin * c.K * c.K;
            var col = gpu.Allocate((long)c.N * ckk * plane);
            try
            {
                gpu.Fill(dy, c.OutputLength, float.NaN);
                im2col.Run(dx, col, c.N, c.Cin, c.H, c.W, c.K);
                for (int s = 0; s < c.N; s++)
                    gpu.Gemm(false, false, c.Cout, plane, ckk, c.Scale, dw, Offset(col, (long)s * ckk * plane), 0f, Offset(dy, (long)s * c.Cout * plane));
                Verify.Close($"im2col + GEMM on the emulator {c}", expected, GpuDevice.Download(gpu, dy, c.OutputLength));
                foreach (var tiling in new[] { ProductTiling.Version1, ProductTiling.Version3 })
                {
                    gpu.Fp32Tiling = tiling;
                    gpu.Fill(dy, c.OutputLength, float.NaN);
                    gpu.Conv2dForward(dx, dw, dy, c.N, c.Cin, c.H, c.W, c.Cout, c.K, c.Scale);
                    Verify.Close($"conv2d_forward ({tiling}) on the emulator {c}", expected, GpuDevice.Download(gpu, dy, c.OutputLength));
                }
                gpu.Fp32Tiling = ProductTiling.Version1;   // the im2col comparison's GEMM above
                gpu.Fill(dy, c.OutputLength, float.NaN);
                tf32.Conv2dForward(dx, dw, dy, c.N, c.Cin, c.H, c.W, c.Cout, c.K, c.Scale);
                Verify.Close($"conv2d_forward_tf32 on the emulator {c}", expected, GpuDevice.Download(gpu, dy, c.OutputLength), Verify.Tf32Tolerance);
            }
            finally
            {
                foreach (var b in new[] { dx, dw, dy, col }) gpu.Free(b);
            }
        }
    }

    private static DeviceBuffer Offset(DeviceBuffer b, long floats) => new(b.Address + (nint)(floats * sizeof(float)), b.Length - floats);
}
