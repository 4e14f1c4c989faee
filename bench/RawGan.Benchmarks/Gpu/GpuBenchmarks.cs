using BenchmarkDotNet.Attributes;
using RawGan.Benchmarks.Infrastructure;
using RawGan.Benchmarks.Reference;
using RawGan.Engine.Backends;
using RawGan.Engine.Backends.Cuda;

namespace RawGan.Benchmarks.Gpu;

// GPU comparisons. They need a CUDA device; Program leaves them out (and says "skipped: no CUDA
// device") when there is none, and their [GlobalSetup] refuses to run without one. Every launch
// is asynchronous, so each benchmark ends by waiting for the device. Outputs are checked against
// the naive CPU loops first, as on the CPU.

/// <summary>RawGan's fp32 sgemm kernels (kernels/gemm.cu, version 1: 64 x 64 tiles, 4 x 4 outputs
/// per thread; gemm_wide.cu, version 3: 128 x 128 tiles, 8 x 8 per thread, loads overlapped)
/// against cuBLAS sgemm.</summary>
public class GpuGemmBenchmarks
{
    [ParamsSource(nameof(Cases))]
    public GemmCase Case { get; set; } = null!;

    public static IEnumerable<GemmCase> Cases => ProGanSizes.Smoke
        ? ProGanSizes.Gemms().Where(c => !c.TransB)
        : ProGanSizes.SquareGemmSizes.Select(s => new GemmCase("square", s, s, s)).Append(ProGanSizes.Gemms().First(c => c.Label == "conv as GEMM"));

    private CudaBackend _gpu = null!;
    private Cublas _cublas = null!;
    private DeviceBuffer _a, _b, _c;

    [GlobalSetup]
    public void Setup()
    {
        _gpu = GpuDevice.Open();
        _cublas = new Cublas(_gpu);
        var (m, n, k) = (Case.M, Case.N, Case.K);
        var a = CpuBuffers.Normal((long)m * k, 1);
        var b = CpuBuffers.Normal((long)k * n, 2);
        var expected = new float[(long)m * n];
        NaiveKernels.Gemm(m, n, k, a, b, false, expected);
        _a = GpuDevice.Upload(_gpu, a);
        _b = GpuDevice.Upload(_gpu, b);
        _c = _gpu.Allocate(expected.Length);
        RawGanSgemm();
        Verify.Close($"sgemm (GPU) {Case}", expected, GpuDevice.Download(_gpu, _c, expected.Length));
        _gpu.Fill(_c, expected.Length, float.NaN);
        RawGanSgemmWide();
        Verify.Close($"sgemm_wide (GPU) {Case}", expected, GpuDevice.Download(_gpu, _c, expected.Length));
        _gpu.Fill(_c, expected.Length, float.NaN);
        CublasSgemm();
        Verify.Close($"cublasSgemm {Case}", expected, GpuDevice.Download(_gpu, _c, expected.Length));
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _cublas?.Dispose();
        _gpu?.Dispose();
    }

    [Benchmark(Baseline = true, Description = "cuBLAS sgemm")]
    public void CublasSgemm()
    {
        _cublas.Sgemm(Case.M, Case.N, Case.K, 1f, (ulong)_a.Address, (ulong)_b.Address, 0f, (ulong)_c.Address);
        _gpu.Synchronize();
    }

    [Benchmark(Description = "RawGan sgemm kernel (version 1)")]
    public void RawGanSgemm()
    {
        _gpu.Fp32Tiling = ProductTiling.Version1;
        _gpu.Gemm(false, false, Case.M, Case.N, Case.K, 1f, _a, _b, 0f, _c);
        _gpu.Synchronize();
    }

    [Benchmark(Description = "RawGan sgemm_wide kernel (version 3)")]
    public void RawGanSgemmWide()
    {
        _gpu.Fp32Tiling = ProductTiling.Version3;
        _gpu.Gemm(false, false, Case.M, Case.N, Case.K, 1f, _a, _b, 0f, _c);
        _gpu.Synchronize();
    }
}

/// <summary>RawGan's fp32 implicit-GEMM convolutions (kernels/conv.cu, version 1; conv_wide.cu,
/// version 3) against im2col + cuBLAS (one im2col launch for the batch, one strided-batched sgemm).</summary>
public class GpuConvBenchmarks
{
    [ParamsSource(nameof(Cases))]
    public ConvCase Case { get; set; } = null!;

    public static IEnumerable<ConvCase> Cases => ProGanSizes.Convolutions();

    private CudaBackend _gpu = null!;
    private Cublas _cublas = null!;
    private GpuIm2Col _im2col = null!;
    private DeviceBuffer _x, _w, _y, _col;

    [GlobalSetup]
    public void Setup()
    {
        _gpu = GpuDevice.Open();
        _cublas = new Cublas(_gpu);
        _im2col = new GpuIm2Col(_gpu.Driver, load: true);
        var x = CpuBuffers.Normal(Case.InputLength, 11);
        var w = CpuBuffers.Normal(Case.WeightLength, 12);
        var expected = new float[Case.OutputLength];
        NaiveKernels.ConvForward(x, w, expected, Case.N, Case.Cin, Case.H, Case.W, Case.Cout, Case.K, Case.Scale);
        _x = GpuDevice.Upload(_gpu, x);
        _w = GpuDevice.Upload(_gpu, w);
        _y = _gpu.Allocate(Case.OutputLength);
        _col = _gpu.Allocate((long)Case.N * Case.Cin * Case.K * Case.K * Case.H * Case.W);
        RawGanConv();
        Verify.Close($"conv2d_forward (GPU) {Case}", expected, GpuDevice.Download(_gpu, _y, expected.Length));
        _gpu.Fill(_y, expected.Length, float.NaN);
        RawGanConvWide();
        Verify.Close($"conv2d_forward_wide (GPU) {Case}", expected, GpuDevice.Download(_gpu, _y, expected.Length));
        _gpu.Fill(_y, expected.Length, float.NaN);
        Im2ColCublas();
        Verify.Close($"im2col + cuBLAS {Case}", expected, GpuDevice.Download(_gpu, _y, expected.Length));
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _cublas?.Dispose();
        _gpu?.Dispose();
    }

    [Benchmark(Baseline = true, Description = "im2col + cuBLAS (strided batched)")]
    public void Im2ColCublas()
    {
        _im2col.Run(_x, _col, Case.N, Case.Cin, Case.H, Case.W, Case.K);
        int plane = Case.H * Case.W;
        _cublas.SgemmSharedA(Case.Cout, plane, Case.Cin * Case.K * Case.K, Case.Scale, (ulong)_w.Address, (ulong)_col.Address, (ulong)_y.Address, Case.N);
        _gpu.Synchronize();
    }

    [Benchmark(Description = "RawGan conv2d_forward (version 1)")]
    public void RawGanConv()
    {
        _gpu.Fp32Tiling = ProductTiling.Version1;
        _gpu.Conv2dForward(_x, _w, _y, Case.N, Case.Cin, Case.H, Case.W, Case.Cout, Case.K, Case.Scale);
        _gpu.Synchronize();
    }

    [Benchmark(Description = "RawGan conv2d_forward_wide (version 3)")]
    public void RawGanConvWide()
    {
        _gpu.Fp32Tiling = ProductTiling.Version3;
        _gpu.Conv2dForward(_x, _w, _y, Case.N, Case.Cin, Case.H, Case.W, Case.Cout, Case.K, Case.Scale);
        _gpu.Synchronize();
    }
}

/// <summary>Version 2 of RawGan's sgemm (kernels/gemm_tf32.cu: TF32 mma.sync, cp.async pipeline)
/// against cuBLAS sgemm with TF32 tensor-core math (CUBLAS_TF32_TENSOR_OP_MATH). Both round the
/// inputs to 10 mantissa bits, so both are checked against the naive fp32 loops with TF32's
/// tolerance (Verify.Tf32Tolerance).</summary>
public class GpuGemmTf32Benchmarks
{
    [ParamsSource(nameof(Cases))]
    public GemmCase Case { get; set; } = null!;

    public static IEnumerable<GemmCase> Cases => GpuGemmBenchmarks.Cases;

    private CudaBackend _gpu = null!;
    private Cublas _cublas = null!;
    private DeviceBuffer _a, _b, _c;

    [GlobalSetup]
    public void Setup()
    {
        _gpu = GpuDevice.Open(Precision.Tf32);
        _cublas = new Cublas(_gpu, tf32: true);
        var (m, n, k) = (Case.M, Case.N, Case.K);
        var a = CpuBuffers.Normal((long)m * k, 1);
        var b = CpuBuffers.Normal((long)k * n, 2);
        var expected = new float[(long)m * n];
        NaiveKernels.Gemm(m, n, k, a, b, false, expected);
        _a = GpuDevice.Upload(_gpu, a);
        _b = GpuDevice.Upload(_gpu, b);
        _c = _gpu.Allocate(expected.Length);
        RawGanSgemmTf32();
        Verify.Close($"sgemm_tf32 (GPU) {Case}", expected, GpuDevice.Download(_gpu, _c, expected.Length), Verify.Tf32Tolerance);
        _gpu.Fill(_c, expected.Length, float.NaN);
        CublasSgemmTf32();
        Verify.Close($"cublasSgemm, TF32 tensor ops {Case}", expected, GpuDevice.Download(_gpu, _c, expected.Length), Verify.Tf32Tolerance);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _cublas?.Dispose();
        _gpu?.Dispose();
    }

    [Benchmark(Baseline = true, Description = "cuBLAS sgemm, TF32 tensor ops")]
    public void CublasSgemmTf32()
    {
        _cublas.Sgemm(Case.M, Case.N, Case.K, 1f, (ulong)_a.Address, (ulong)_b.Address, 0f, (ulong)_c.Address);
        _gpu.Synchronize();
    }

    [Benchmark(Description = "RawGan sgemm_tf32 kernel")]
    public void RawGanSgemmTf32()
    {
        _gpu.Gemm(false, false, Case.M, Case.N, Case.K, 1f, _a, _b, 0f, _c);
        _gpu.Synchronize();
    }
}

/// <summary>Version 2 of RawGan's convolution (kernels/conv_tf32.cu) against im2col + cuBLAS with
/// TF32 tensor-core math, checked with TF32's tolerance.</summary>
public class GpuConvTf32Benchmarks
{
    [ParamsSource(nameof(Cases))]
    public ConvCase Case { get; set; } = null!;

    public static IEnumerable<ConvCase> Cases => ProGanSizes.Convolutions();

    private CudaBackend _gpu = null!;
    private Cublas _cublas = null!;
    private GpuIm2Col _im2col = null!;
    private DeviceBuffer _x, _w, _y, _col;

    [GlobalSetup]
    public void Setup()
    {
        _gpu = GpuDevice.Open(Precision.Tf32);
        _cublas = new Cublas(_gpu, tf32: true);
        _im2col = new GpuIm2Col(_gpu.Driver, load: true);
        var x = CpuBuffers.Normal(Case.InputLength, 11);
        var w = CpuBuffers.Normal(Case.WeightLength, 12);
        var expected = new float[Case.OutputLength];
        NaiveKernels.ConvForward(x, w, expected, Case.N, Case.Cin, Case.H, Case.W, Case.Cout, Case.K, Case.Scale);
        _x = GpuDevice.Upload(_gpu, x);
        _w = GpuDevice.Upload(_gpu, w);
        _y = _gpu.Allocate(Case.OutputLength);
        _col = _gpu.Allocate((long)Case.N * Case.Cin * Case.K * Case.K * Case.H * Case.W);
        RawGanConvTf32();
        Verify.Close($"conv2d_forward_tf32 (GPU) {Case}", expected, GpuDevice.Download(_gpu, _y, expected.Length), Verify.Tf32Tolerance);
        _gpu.Fill(_y, expected.Length, float.NaN);
        Im2ColCublasTf32();
        Verify.Close($"im2col + cuBLAS TF32 {Case}", expected, GpuDevice.Download(_gpu, _y, expected.Length), Verify.Tf32Tolerance);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _cublas?.Dispose();
        _gpu?.Dispose();
    }

    [Benchmark(Baseline = true, Description = "im2col + cuBLAS, TF32 tensor ops")]
    public void Im2ColCublasTf32()
    {
        _im2col.Run(_x, _col, Case.N, Case.Cin, Case.H, Case.W, Case.K);
        int plane = Case.H * Case.W;
        _cublas.SgemmSharedA(Case.Cout, plane, Case.Cin * Case.K * Case.K, Case.Scale, (ulong)_w.Address, (ulong)_col.Address, (ulong)_y.Address, Case.N);
        _gpu.Synchronize();
    }

    [Benchmark(Description = "RawGan conv2d_forward_tf32")]
    public void RawGanConvTf32()
    {
        _gpu.Conv2dForward(_x, _w, _y, Case.N, Case.Cin, Case.H, Case.W, Case.Cout, Case.K, Case.Scale);
        _gpu.Synchronize();
    }
}
