using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Configs;
using RawGan.Benchmarks.Infrastructure;
using RawGan.Benchmarks.Reference;
using RawGan.Engine;
using RawGan.Engine.Autograd;
using RawGan.Engine.Backends;

namespace RawGan.Benchmarks.Cpu;

// The ProGAN-specific kernels. Each is timed three ways where the engine has three:
//   naive            NaiveKernels, one thread, straight from the formula (the baseline);
//   primitive ops    the engine's unfused reference (Ops.*Reference): several generic kernels
//                    (square, mean, rsqrt, broadcast multiply, ...), each a pass over memory;
//                    its backward is the tape differentiating those ops;
//   fused            the one IBackend kernel that the training step runs.
// Forward and backward are separate categories, each with its own baseline.

/// <summary>Pixel norm (ProGAN 4.2), after every convolution of G.</summary>
[GroupBenchmarksBy(BenchmarkLogicalGroupRule.ByCategory)]
[CategoriesColumn]
public class PixelNormBenchmarks
{
    private const float Eps = Ops.NormEpsilon;

    [ParamsSource(nameof(Cases))]
    public MapCase Case { get; set; } = null!;

    public static IEnumerable<MapCase> Cases => ProGanSizes.PixelNormMaps();

    private CpuBuffers _buffers = null!;
    private float[] _x = null!, _gy = null!, _out = null!;
    private DeviceBuffer _dx, _dgy, _dout;
    private Tensor _tx = null!, _txGrad = null!, _tgy = null!;

    [GlobalSetup]
    public void Setup()
    {
        CpuBuffers.ApplyThreads();
        _buffers = new CpuBuffers();
        _x = CpuBuffers.Normal(Case.Length, 21);
        _gy = CpuBuffers.Normal(Case.Length, 22);
        _out = new float[Case.Length];
        _dx = _buffers.Upload(_x);
        _dgy = _buffers.Upload(_gy);
        _dout = _buffers.Allocate(Case.Length);
        var shape = new Shape(Case.N, Case.C, Case.H, Case.W);
        _tx = Tensor.FromArray(_buffers.Backend, _x, shape);
        _txGrad = Tensor.FromArray(_buffers.Backend, _x, shape);
        _txGrad.RequiresGrad = true;
        _tgy = Tensor.FromArray(_buffers.Backend, _gy, shape);

        ForwardNaive();
        var forward = (float[])_out.Clone();
        ForwardFused();
        Verify.Close($"pixelnorm_forward {Case}", forward, _buffers.Download(_dout, Case.Length));
        using (new Scope()) Verify.Close($"PixelNormReference {Case}", forward, Ops.PixelNormReference(_tx, Eps).ToArray());

        BackwardNaive();
        var backward = (float[])_out.Clone();
        BackwardFused();
        Verify.Close($"pixelnorm_backward {Case}", backward, _buffers.Download(_dout, Case.Length));
        using (new Scope()) Verify.Close($"PixelNormReference gradient {Case}", backward, TapeGradient().ToArray());
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _tx.Dispose();
        _txGrad.Dispose();
        _tgy.Dispose();
        _buffers.Dispose();
    }

    private Tensor TapeGradient() => Tape.Grad([Ops.PixelNormReference(_txGrad, Eps)], [_txGrad], [_tgy])[0];

    [Benchmark(Baseline = true, Description = "naive (1 thread)"), BenchmarkCategory("forward")]
    public void ForwardNaive() => NaiveKernels.PixelNormForward(_x, _out, Case.N, Case.C, Case.Plane, Eps);

    [Benchmark(Description = "primitive ops"), BenchmarkCategory("forward")]
    public void ForwardPrimitiveOps()
    {
        using var scope = new Scope();
        Ops.PixelNormReference(_tx, Eps);
    }

    [Benchmark(Description = "fused pixelnorm_forward"), BenchmarkCategory("forward")]
    public void ForwardFused() => _buffers.Backend.PixelNormForward(_dx, _dout, Case.N, Case.C, Case.Plane, Eps);

    [Benchmark(Baseline = true, Description = "naive (1 thread)"), BenchmarkCategory("backward")]
    public void BackwardNaive() => NaiveKernels.PixelNormBackward(_x, _gy, _out, Case.N, Case.C, Case.Plane, Eps);

    [Benchmark(Description = "primitive ops + tape"), BenchmarkCategory("backward")]
    public void BackwardPrimitiveOps()
    {
        using var scope = new Scope();
        TapeGradient();
    }

    [Benchmark(Description = "fused pixelnorm_backward"), BenchmarkCategory("backward")]
    public void BackwardFused() => _buffers.Backend.PixelNormBackward(_dx, _dgy, _dout, Case.N, Case.C, Case.Plane, Eps);
}

/// <summary>Minibatch standard deviation (ProGAN 3), at the input of D's 4x4 head.</summary>
[GroupBenchmarksBy(BenchmarkLogicalGroupRule.ByCategory)]
[CategoriesColumn]
public class MinibatchStdDevBenchmarks
{
    private const float Eps = Ops.NormEpsilon;

    [ParamsSource(nameof(Cases))]
    public MapCase Case { get; set; } = null!;

    public static IEnumerable<MapCase> Cases => ProGanSizes.MinibatchStdDevMaps();

    private int Group => Ops.MinibatchGroupSize(Case.N, 4);
    private long OutputLength => (long)Case.N * (Case.C + 1) * Case.Plane;

    private CpuBuffers _buffers = null!;
    private float[] _x = null!, _gy = null!, _y = null!, _gx = null!;
    private DeviceBuffer _dx, _dgy, _dy, _dgx;
    private Tensor _tx = null!, _txGrad = null!, _tgy = null!;

    [GlobalSetup]
    public void Setup()
    {
        CpuBuffers.ApplyThreads();
        _buffers = new CpuBuffers();
        _x = CpuBuffers.Normal(Case.Length, 31);
        _gy = CpuBuffers.Normal(OutputLength, 32);
        _y = new float[OutputLength];
        _gx = new float[Case.Length];
        _dx = _buffers.Upload(_x);
        _dgy = _buffers.Upload(_gy);
        _dy = _buffers.Allocate(OutputLength);
        _dgx = _buffers.Allocate(Case.Length);
        var shape = new Shape(Case.N, Case.C, Case.H, Case.W);
        _tx = Tensor.FromArray(_buffers.Backend, _x, shape);
        _txGrad = Tensor.FromArray(_buffers.Backend, _x, shape);
        _txGrad.RequiresGrad = true;
        _tgy = Tensor.FromArray(_buffers.Backend, _gy, new Shape(Case.N, Case.C + 1, Case.H, Case.W));

        ForwardNaive();
        ForwardFused();
        Verify.Close($"minibatch_stddev_forward {Case}", _y, _buffers.Download(_dy, OutputLength));
        using (new Scope()) Verify.Close($"MinibatchStdDevReference {Case}", _y, Ops.MinibatchStdDevReference(_tx, Group, Eps).ToArray());

        BackwardNaive();
        BackwardFused();
        Verify.Close($"minibatch_stddev_backward {Case}", _gx, _buffers.Download(_dgx, Case.Length));
        using (new Scope()) Verify.Close($"MinibatchStdDevReference gradient {Case}", _gx, TapeGradient().ToArray());
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _tx.Dispose();
        _txGrad.Dispose();
        _tgy.Dispose();
        _buffers.Dispose();
    }

    private Tensor TapeGradient() => Tape.Grad([Ops.MinibatchStdDevReference(_txGrad, Group, Eps)], [_txGrad], [_tgy])[0];

    [Benchmark(Baseline = true, Description = "naive (1 thread)"), BenchmarkCategory("forward")]
    public void ForwardNaive() => NaiveKernels.MinibatchStdDevForward(_x, _y, Case.N, Case.C, Case.Plane, Group, Eps);

    [Benchmark(Description = "primitive ops"), BenchmarkCategory("forward")]
    public void ForwardPrimitiveOps()
    {
        using var scope = new Scope();
        Ops.MinibatchStdDevReference(_tx, Group, Eps);
    }

    [Benchmark(Description = "fused minibatch_stddev_forward"), BenchmarkCategory("forward")]
    public void ForwardFused() => _buffers.Backend.MinibatchStdDevForward(_dx, _dy, Case.N, Case.C, Case.Plane, Group, Eps);

    [Benchmark(Baseline = true, Description = "naive (1 thread)"), BenchmarkCategory("backward")]
    public void BackwardNaive() => NaiveKernels.MinibatchStdDevBackward(_x, _gy, _gx, Case.N, Case.C, Case.Plane, Group, Eps);

    [Benchmark(Description = "primitive ops + tape"), BenchmarkCategory("backward")]
    public void BackwardPrimitiveOps()
    {
        using var scope = new Scope();
        TapeGradient();
    }

    [Benchmark(Description = "fused minibatch_stddev_backward"), BenchmarkCategory("backward")]
    public void BackwardFused() => _buffers.Backend.MinibatchStdDevBackward(_dx, _dgy, _dgx, Case.N, Case.C, Case.Plane, Group, Eps);
}

/// <summary>Nearest-neighbour 2x upsampling (G, before each block). Its backward is AvgPool2x with gain 4.</summary>
public class UpsampleBenchmarks
{
    [ParamsSource(nameof(Cases))]
    public MapCase Case { get; set; } = null!;

    public static IEnumerable<MapCase> Cases => ProGanSizes.UpsampleMaps();

    private CpuBuffers _buffers = null!;
    private float[] _x = null!, _y = null!;
    private DeviceBuffer _dx, _dy;
    private int Planes => Case.N * Case.C;

    [GlobalSetup]
    public void Setup()
    {
        CpuBuffers.ApplyThreads();
        _buffers = new CpuBuffers();
        _x = CpuBuffers.Normal(Case.Length, 41);
        _y = new float[4 * Case.Length];
        _dx = _buffers.Upload(_x);
        _dy = _buffers.Allocate(_y.Length);
        Naive();
        Engine();
        Verify.Close($"upsample2x_nearest {Case}", _y, _buffers.Download(_dy, _y.Length), 0);
    }

    [GlobalCleanup]
    public void Cleanup() => _buffers.Dispose();

    [Benchmark(Baseline = true, Description = "naive (1 thread)")]
    public void Naive() => NaiveKernels.Upsample2x(_x, _y, Planes, Case.H, Case.W, 1f);

    [Benchmark(Description = "CpuBackend.Upsample2x")]
    public void Engine() => _buffers.Backend.Upsample2x(_dx, _dy, Planes, Case.H, Case.W, 1f);
}

/// <summary>2x2 average pooling (D, after each block). Its backward is Upsample2x with gain 1/4.</summary>
public class AvgPoolBenchmarks
{
    [ParamsSource(nameof(Cases))]
    public MapCase Case { get; set; } = null!;

    public static IEnumerable<MapCase> Cases => ProGanSizes.PoolMaps();

    private CpuBuffers _buffers = null!;
    private float[] _x = null!, _y = null!;
    private DeviceBuffer _dx, _dy;
    private int Planes => Case.N * Case.C;

    [GlobalSetup]
    public void Setup()
    {
        CpuBuffers.ApplyThreads();
        _buffers = new CpuBuffers();
        _x = CpuBuffers.Normal(Case.Length, 51);
        _y = new float[Case.Length / 4];
        _dx = _buffers.Upload(_x);
        _dy = _buffers.Allocate(_y.Length);
        Naive();
        Engine();
        Verify.Close($"avgpool2x {Case}", _y, _buffers.Download(_dy, _y.Length), 1e-6);
    }

    [GlobalCleanup]
    public void Cleanup() => _buffers.Dispose();

    [Benchmark(Baseline = true, Description = "naive (1 thread)")]
    public void Naive() => NaiveKernels.AvgPool2x(_x, _y, Planes, Case.H, Case.W, 1f);

    [Benchmark(Description = "CpuBackend.AvgPool2x")]
    public void Engine() => _buffers.Backend.AvgPool2x(_dx, _dy, Planes, Case.H, Case.W, 1f);
}

/// <summary>The WGAN-GP reduction: per-sample gradient norm and (norm - 1)^2, and its backward.</summary>
[GroupBenchmarksBy(BenchmarkLogicalGroupRule.ByCategory)]
[CategoriesColumn]
public class GradientPenaltyBenchmarks
{
    private const float Target = 1f;

    [ParamsSource(nameof(Cases))]
    public MapCase Case { get; set; } = null!;

    public static IEnumerable<MapCase> Cases => ProGanSizes.PenaltyMaps();

    private int Inner => (int)(Case.Length / Case.N);

    private CpuBuffers _buffers = null!;
    private float[] _g = null!, _norm = null!, _penalty = null!, _gpenalty = null!, _gg = null!;
    private DeviceBuffer _dg, _dnorm, _dpenalty, _dgpenalty, _dgg;
    private Tensor _tg = null!, _tgGrad = null!, _tgpenalty = null!;

    [GlobalSetup]
    public void Setup()
    {
        CpuBuffers.ApplyThreads();
        _buffers = new CpuBuffers();
        // Gradients of a critic are small: scale so that norms sit around the target, as in training.
        _g = CpuBuffers.Normal(Case.Length, 61).Select(v => v / MathF.Sqrt(Inner)).ToArray();
        _gpenalty = CpuBuffers.Uniform(Case.N, 62);
        _norm = new float[Case.N];
        _penalty = new float[Case.N];
        _gg = new float[Case.Length];
        _dg = _buffers.Upload(_g);
        _dgpenalty = _buffers.Upload(_gpenalty);
        _dnorm = _buffers.Allocate(Case.N);
        _dpenalty = _buffers.Allocate(Case.N);
        _dgg = _buffers.Allocate(Case.Length);
        var shape = new Shape(Case.N, Case.C, Case.H, Case.W);
        _tg = Tensor.FromArray(_buffers.Backend, _g, shape);
        _tgGrad = Tensor.FromArray(_buffers.Backend, _g, shape);
        _tgGrad.RequiresGrad = true;
        _tgpenalty = Tensor.FromArray(_buffers.Backend, _gpenalty, new Shape(Case.N));

        ForwardNaive();
        ForwardFused();
        Verify.Close($"gradient_penalty_forward norm {Case}", _norm, _buffers.Download(_dnorm, Case.N));
        Verify.Close($"gradient_penalty_forward penalty {Case}", _penalty, _buffers.Download(_dpenalty, Case.N));
        using (new Scope()) Verify.Close($"GradientPenaltyReference {Case}", _penalty, Ops.GradientPenaltyReference(_tg, Target).ToArray());

        BackwardNaive();
        BackwardFused();
        Verify.Close($"gradient_penalty_backward {Case}", _gg, _buffers.Download(_dgg, Case.Length));
        using (new Scope()) Verify.Close($"GradientPenaltyReference gradient {Case}", _gg, TapeGradient().ToArray());
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _tg.Dispose();
        _tgGrad.Dispose();
        _tgpenalty.Dispose();
        _buffers.Dispose();
    }

    private Tensor TapeGradient() => Tape.Grad([Ops.GradientPenaltyReference(_tgGrad, Target)], [_tgGrad], [_tgpenalty])[0];

    [Benchmark(Baseline = true, Description = "naive (1 thread)"), BenchmarkCategory("forward")]
    public void ForwardNaive() => NaiveKernels.GradientPenaltyForward(_g, _norm, _penalty, Case.N, Inner, Target);

    [Benchmark(Description = "primitive ops"), BenchmarkCategory("forward")]
    public void ForwardPrimitiveOps()
    {
        using var scope = new Scope();
        Ops.GradientPenaltyReference(_tg, Target);
    }

    [Benchmark(Description = "fused gradient_penalty_forward"), BenchmarkCategory("forward")]
    public void ForwardFused() => _buffers.Backend.GradientPenaltyForward(_dg, _dnorm, _dpenalty, Case.N, Inner, Target);

    [Benchmark(Baseline = true, Description = "naive (1 thread)"), BenchmarkCategory("backward")]
    public void BackwardNaive() => NaiveKernels.GradientPenaltyBackward(_g, _norm, _gpenalty, _gg, Case.N, Inner, Target);

    [Benchmark(Description = "primitive ops + tape"), BenchmarkCategory("backward")]
    public void BackwardPrimitiveOps()
    {
        using var scope = new Scope();
        TapeGradient();
    }

    [Benchmark(Description = "fused gradient_penalty_backward"), BenchmarkCategory("backward")]
    public void BackwardFused() => _buffers.Backend.GradientPenaltyBackward(_dg, _dnorm, _dgpenalty, _dgg, Case.N, Inner, Target);
}
