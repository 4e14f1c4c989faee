using BenchmarkDotNet.Attributes;
using RawGan.Benchmarks.Infrastructure;
using RawGan.Benchmarks.Reference;
using RawGan.Engine.Backends;
using RawGan.Engine.Backends.Cpu;

namespace RawGan.Benchmarks.Cpu;

/// <summary>
/// The data of one convolution case, and the ways to compute each of its three products: naive
/// direct loops (one thread); im2col + the engine's portable GEMM, a sample at a time (the path
/// CpuBackend takes without AVX-512); the same im2col with the AVX-512 SGEMM (what materializing
/// im2col costs once the GEMM is fast); and CpuBackend's AVX-512 algorithms: the implicit GEMM of
/// ConvGemm.cs (im2col read while packing, the whole batch as one GEMM), Winograd F(2x2, 3x3) and
/// F(4x4, 3x3) (Winograd.cs), and Auto, the default, which picks per product and size. Without
/// AVX-512 the last four all run the im2col path.
/// </summary>
public abstract class ConvBenchmarkBase
{
    [ParamsSource(nameof(Cases))]
    public ConvCase Case { get; set; } = null!;

    public static IEnumerable<ConvCase> Cases => ProGanSizes.Convolutions();

    protected CpuBuffers Buffers = null!;
    protected float[] X = null!, W = null!, Gy = null!, Output = null!;
    protected DeviceBuffer DX, DW, DGy, DOutput, DCol;

    /// <summary>Fills the inputs and allocates an output of <paramref name="outputLength"/> floats.</summary>
    protected void Prepare(long outputLength)
    {
        CpuBuffers.ApplyThreads();
        if (!System.Runtime.Intrinsics.Vector512.IsHardwareAccelerated || !System.Runtime.Intrinsics.X86.Avx512F.IsSupported)
            Console.WriteLine("// note: no AVX-512 here, so CpuBackend's convolution is itself the im2col path and 'Sgemm' is GemmPortable");
        Buffers = new CpuBuffers();
        X = CpuBuffers.Normal(Case.InputLength, 11);
        W = CpuBuffers.Normal(Case.WeightLength, 12);
        Gy = CpuBuffers.Normal(Case.OutputLength, 13);
        Output = new float[outputLength];
        DX = Buffers.Upload(X);
        DW = Buffers.Upload(W);
        DGy = Buffers.Upload(Gy);
        DOutput = Buffers.Allocate(outputLength);
        DCol = Buffers.Allocate((long)Case.Cin * Case.K * Case.K * Case.H * Case.W);
    }

    /// <summary>Runs each optimized variant once and compares it with the naive result in <see cref="Output"/>.</summary>
    protected void VerifyVariants(string op, (string name, Action run)[] variants)
    {
        var expected = (float[])Output.Clone();
        foreach (var (name, run) in variants)
        {
            Buffers.Backend.Fill(DOutput, Output.Length, float.NaN);
            run();
            Verify.Close($"{op} {name} {Case}", expected, Buffers.Download(DOutput, Output.Length));
        }
    }

    /// <summary>The product through CpuBackend (whichever algorithm it is set to).</summary>
    protected abstract void Engine();

    // The engine's own variants, each one CpuBackend algorithm (inherited by every product's class).

    [Benchmark(Description = "CpuBackend implicit GEMM")]
    public void ImplicitGemm() => With(CpuBackend.ConvolutionAlgorithm.ImplicitGemm, Engine);

    [Benchmark(Description = "CpuBackend Winograd F(2x2)")]
    public void Winograd2() => With(CpuBackend.ConvolutionAlgorithm.Winograd, Engine);

    [Benchmark(Description = "CpuBackend Winograd F(4x4)")]
    public void Winograd4() => With(CpuBackend.ConvolutionAlgorithm.Winograd4, Engine);

    [Benchmark(Description = "CpuBackend Auto (default)")]
    public void Auto() => With(CpuBackend.ConvolutionAlgorithm.Auto, Engine);

    protected (string name, Action run)[] EngineVariants() =>
        [("implicit GEMM", ImplicitGemm), ("Winograd F(2x2)", Winograd2), ("Winograd F(4x4)", Winograd4), ("Auto", Auto)];

    /// <summary>Runs <paramref name="call"/> with CpuBackend set to <paramref name="algorithm"/> (Im2Col without AVX-512).</summary>
    protected void With(CpuBackend.ConvolutionAlgorithm algorithm, Action call)
    {
        var be = Buffers.Backend;
        var previous = be.Convolution;
        be.Convolution = Sgemm ? algorithm : CpuBackend.ConvolutionAlgorithm.Im2Col;
        try { call(); }
        finally { be.Convolution = previous; }
    }

    private static bool Sgemm => System.Runtime.Intrinsics.Vector512.IsHardwareAccelerated && System.Runtime.Intrinsics.X86.Avx512F.IsSupported;

    [GlobalCleanup]
    public void Cleanup() => Buffers.Dispose();
}

/// <summary>conv2d_forward: y = conv(x, scale w).</summary>
public class ConvForwardBenchmarks : ConvBenchmarkBase
{
    [GlobalSetup]
    public void Setup()
    {
        Prepare(Case.OutputLength);
        Naive();
        VerifyVariants("conv forward", [("im2col + portable GEMM", Im2ColPortable), ("im2col + AVX-512 SGEMM", Im2ColSgemm), .. EngineVariants()]);
    }

    [Benchmark(Baseline = true, Description = "naive direct loops (1 thread)")]
    public void Naive() => NaiveKernels.ConvForward(X, W, Output, Case.N, Case.Cin, Case.H, Case.W, Case.Cout, Case.K, Case.Scale);

    [Benchmark(Description = "im2col + GemmPortable (engine fallback)")]
    public void Im2ColPortable() =>
        Im2ColConvolution.Forward(Im2ColConvolution.Portable, DX, DW, DOutput, DCol, Case.N, Case.Cin, Case.H, Case.W, Case.Cout, Case.K, Case.Scale);

    [Benchmark(Description = "im2col + AVX-512 Sgemm")]
    public void Im2ColSgemm() =>
        Im2ColConvolution.Forward(Im2ColConvolution.Sgemm, DX, DW, DOutput, DCol, Case.N, Case.Cin, Case.H, Case.W, Case.Cout, Case.K, Case.Scale);

    protected override void Engine() => Buffers.Backend.Conv2dForward(DX, DW, DOutput, Case.N, Case.Cin, Case.H, Case.W, Case.Cout, Case.K, Case.Scale);
}

/// <summary>conv2d_backward_input: gx = conv_transpose(gy, scale w).</summary>
public class ConvBackwardInputBenchmarks : ConvBenchmarkBase
{
    [GlobalSetup]
    public void Setup()
    {
        Prepare(Case.InputLength);
        Naive();
        VerifyVariants("conv input gradient", [("im2col + portable GEMM", Im2ColPortable), ("im2col + AVX-512 SGEMM", Im2ColSgemm), .. EngineVariants()]);
    }

    [Benchmark(Baseline = true, Description = "naive direct loops (1 thread)")]
    public void Naive() => NaiveKernels.ConvBackwardInput(Gy, W, Output, Case.N, Case.Cin, Case.H, Case.W, Case.Cout, Case.K, Case.Scale);

    [Benchmark(Description = "GemmPortable + col2im (engine fallback)")]
    public void Im2ColPortable() =>
        Im2ColConvolution.BackwardInput(Im2ColConvolution.Portable, DGy, DW, DOutput, DCol, Case.N, Case.Cin, Case.H, Case.W, Case.Cout, Case.K, Case.Scale);

    [Benchmark(Description = "AVX-512 Sgemm + col2im")]
    public void Im2ColSgemm() =>
        Im2ColConvolution.BackwardInput(Im2ColConvolution.Sgemm, DGy, DW, DOutput, DCol, Case.N, Case.Cin, Case.H, Case.W, Case.Cout, Case.K, Case.Scale);

    protected override void Engine() => Buffers.Backend.Conv2dBackwardInput(DGy, DW, DOutput, Case.N, Case.Cin, Case.H, Case.W, Case.Cout, Case.K, Case.Scale);
}

/// <summary>conv2d_backward_weight: gw = scale sum over samples and pixels of gy (x) x-patch.</summary>
public class ConvBackwardWeightBenchmarks : ConvBenchmarkBase
{
    [GlobalSetup]
    public void Setup()
    {
        Prepare(Case.WeightLength);
        Naive();
        VerifyVariants("conv weight gradient", [("im2col + portable GEMM", Im2ColPortable), ("im2col + AVX-512 SGEMM", Im2ColSgemm), .. EngineVariants()]);
    }

    [Benchmark(Baseline = true, Description = "naive direct loops (1 thread)")]
    public void Naive() => NaiveKernels.ConvBackwardWeight(X, Gy, Output, Case.N, Case.Cin, Case.H, Case.W, Case.Cout, Case.K, Case.Scale);

    [Benchmark(Description = "im2col + GemmPortable (engine fallback)")]
    public void Im2ColPortable() =>
        Im2ColConvolution.BackwardWeight(Im2ColConvolution.Portable, DX, DGy, DOutput, DCol, Case.N, Case.Cin, Case.H, Case.W, Case.Cout, Case.K, Case.Scale);

    [Benchmark(Description = "im2col + AVX-512 Sgemm")]
    public void Im2ColSgemm() =>
        Im2ColConvolution.BackwardWeight(Im2ColConvolution.Sgemm, DX, DGy, DOutput, DCol, Case.N, Case.Cin, Case.H, Case.W, Case.Cout, Case.K, Case.Scale);

    protected override void Engine() => Buffers.Backend.Conv2dBackwardWeight(DX, DGy, DOutput, Case.N, Case.Cin, Case.H, Case.W, Case.Cout, Case.K, Case.Scale);
}
