using RawGan.ProGan.Model;

namespace RawGan.Benchmarks.Infrastructure;

/// <summary>A benchmark parameter that knows how many floating-point operations one call does
/// (a multiply-add counts as two), so that <see cref="GflopsColumn"/> can turn time into GFLOP/s.</summary>
public interface IFlopCounted
{
    double Flops { get; }
}

/// <summary>C[m, n] = op(A)[m, k] op(B)[k, n], row-major; op(B) is B^T when <see cref="TransB"/>.</summary>
public sealed record GemmCase(string Label, int M, int N, int K, bool TransB = false) : IFlopCounted
{
    public double Flops => 2.0 * M * N * K;
    public override string ToString() => $"{Label} {M}x{N}x{K}{(TransB ? " B^T" : "")}";
}

/// <summary>A 3x3 (or k x k) stride-1 'same' convolution of a batch: x [N, Cin, H, W] -> y [N, Cout, H, W].
/// Forward, input gradient and weight gradient each cost 2 N Cout Cin k^2 H W.</summary>
public sealed record ConvCase(string Label, int N, int Cin, int Cout, int H, int W, int K = 3) : IFlopCounted
{
    public double Flops => 2.0 * N * Cout * Cin * K * K * H * W;
    public long InputLength => (long)N * Cin * H * W;
    public long OutputLength => (long)N * Cout * H * W;
    public long WeightLength => (long)Cout * Cin * K * K;
    /// <summary>Equalized learning rate, gain sqrt(2) (ProGAN 4.1): the scale every RawGan conv applies.</summary>
    public float Scale => MathF.Sqrt(2f) / MathF.Sqrt(Cin * K * K);
    public override string ToString() => $"{Label} {H}x{W} {Cin}->{Cout} N={N}";
}

/// <summary>A feature map [N, C, H, W] that a kernel reads.</summary>
public sealed record MapCase(string Label, int N, int C, int H, int W)
{
    public int Plane => H * W;
    public long Length => (long)N * C * H * W;
    public override string ToString() => $"{Label} [{N},{C},{H},{W}]";
}

/// <summary>
/// The sizes of one real ProGAN training step as RawGan's `bench` command runs it: the "small"
/// preset (latent 128, fmap_base 2048, fmap_max 128), batch 16, fully grown at 32x32 and at 64x64.
/// With RAWGAN_BENCH_SIZES=smoke (Program's --smoke) every list shrinks to a few tiny, oddly
/// shaped cases: enough to check each benchmark end to end in seconds.
/// </summary>
public static class ProGanSizes
{
    public const int Batch = 16;
    public const string SizesVariable = "RAWGAN_BENCH_SIZES", ThreadsVariable = "RAWGAN_BENCH_THREADS";

    public static bool Smoke => Environment.GetEnvironmentVariable(SizesVariable) == "smoke";

    private static ProGanConfig Config(int resolution) => ProGanConfig.Small(resolution);

    /// <summary>The 3x3 convolutions of the top block of G and D, where a step spends its time,
    /// the 4x4 head of D (minibatch stddev adds one channel: an odd Cin), the 16x16 and 8x8 levels, and the
    /// 1x1 convolutions into and out of RGB.</summary>
    public static IEnumerable<ConvCase> Convolutions()
    {
        if (Smoke)
        {
            yield return new ConvCase("smoke", 2, 5, 7, 6, 5);
            yield return new ConvCase("smoke", 3, 9, 4, 4, 4);
            yield break;
        }
        var c32 = Config(32);
        int l = c32.MaxLevel;
        yield return new ConvCase("G/D 32", Batch, c32.Nf(l - 2), c32.Nf(l - 1), 32, 32);
        var c64 = Config(64);
        l = c64.MaxLevel;
        yield return new ConvCase("G.conv0 64", Batch, c64.Nf(l - 2), c64.Nf(l - 1), 64, 64);
        yield return new ConvCase("G.conv1 64", Batch, c64.Nf(l - 1), c64.Nf(l - 1), 64, 64);
        yield return new ConvCase("D.conv1 64", Batch, c64.Nf(l - 1), c64.Nf(l - 2), 64, 64);
        yield return new ConvCase("D head", Batch, c64.Nf(1) + 1, c64.Nf(1), 4, 4);
        // Middle levels, and the 1x1 fromRGB / toRGB of the 32x32 step (3 channels on one side).
        yield return new ConvCase("G/D 16", Batch, c32.Nf(3), c32.Nf(3), 16, 16);
        yield return new ConvCase("G/D 8", Batch, c32.Nf(2), c32.Nf(2), 8, 8);
        yield return new ConvCase("fromRGB 32", Batch, 3, c32.Nf(c32.MaxLevel - 1), 32, 32, K: 1);
        yield return new ConvCase("toRGB 32", Batch, c32.Nf(c32.MaxLevel - 1), 3, 32, 32, K: 1);
    }

    /// <summary>GEMMs: a dense layer of the step, one convolution written as a GEMM, and squares.</summary>
    public static IEnumerable<GemmCase> Gemms()
    {
        if (Smoke)
        {
            yield return new GemmCase("smoke", 13, 70, 9);
            yield return new GemmCase("smoke", 7, 33, 300, TransB: true);
            yield break;
        }
        var c = Config(64);
        // D's head dense layer: x [16, nf(1) 16] times W^T, W [nf(0), nf(1) 16] (PyTorch's layout).
        yield return new GemmCase("D dense", Batch, c.Nf(0), c.Nf(1) * 16, TransB: true);
        // The 32x32 top convolution as one GEMM over the batch: [Cout, Cin 9] x [Cin 9, N H W].
        var conv = Convolutions().First();
        yield return new GemmCase("conv as GEMM", conv.Cout, conv.N * conv.H * conv.W, conv.Cin * 9);
        yield return new GemmCase("square", 512, 512, 512);
        yield return new GemmCase("square", 1024, 1024, 1024);
    }

    /// <summary>Where pixel norm runs: after every conv of G's top block.</summary>
    public static IEnumerable<MapCase> PixelNormMaps()
    {
        if (Smoke)
        {
            yield return new MapCase("smoke", 3, 7, 5, 3);
            yield break;
        }
        foreach (int r in new[] { 32, 64 })
        {
            var c = Config(r);
            yield return new MapCase($"G {r}", Batch, c.Nf(c.MaxLevel - 1), r, r);
        }
    }

    /// <summary>Minibatch stddev runs once, on D's 4x4 features (the same at every resolution).</summary>
    public static IEnumerable<MapCase> MinibatchStdDevMaps()
    {
        if (Smoke)
        {
            yield return new MapCase("smoke", 8, 5, 3, 2);
            yield break;
        }
        yield return new MapCase("D head", Batch, Config(64).Nf(1), 4, 4);
    }

    /// <summary>Upsampling: G's input to its top block; the map is the low-resolution input.</summary>
    public static IEnumerable<MapCase> UpsampleMaps()
    {
        if (Smoke)
        {
            yield return new MapCase("smoke", 2, 3, 5, 7);
            yield break;
        }
        foreach (int r in new[] { 32, 64 })
        {
            var c = Config(r);
            yield return new MapCase($"G {r}", Batch, c.Nf(c.MaxLevel - 2), r / 2, r / 2);
        }
    }

    /// <summary>Average pooling: the end of D's top block; the map is the full-resolution input.</summary>
    public static IEnumerable<MapCase> PoolMaps()
    {
        if (Smoke)
        {
            yield return new MapCase("smoke", 2, 3, 6, 4);
            yield break;
        }
        foreach (int r in new[] { 32, 64 })
        {
            var c = Config(r);
            yield return new MapCase($"D {r}", Batch, c.Nf(c.MaxLevel - 2), r, r);
        }
    }

    /// <summary>The WGAN-GP gradient: d D(x_hat) / d x_hat, one RGB image per sample.</summary>
    public static IEnumerable<MapCase> PenaltyMaps()
    {
        if (Smoke)
        {
            yield return new MapCase("smoke", 3, 3, 5, 5);
            yield break;
        }
        foreach (int r in new[] { 32, 64 })
            yield return new MapCase($"grad x_hat {r}", Batch, 3, r, r);
    }

    /// <summary>The dense layers' products in a training step of the small preset at batch 16 (`bench
    /// --profile` lists them): G's latent layer and D's head, forward, input and weight gradients.</summary>
    public static IEnumerable<(int M, int N, int K, bool TransA, bool TransB)> DenseLayerGemms()
    {
        if (Smoke)
        {
            yield return (13, 70, 9, true, false);
            yield break;
        }
        int features = 128 * 16;
        yield return (Batch, features, 128, false, false);   // G: latent [16, 128] x W [128, 2048]
        yield return (Batch, features, 128, false, true);    // D's head, input gradient: gy [16, 128] x W^T
        yield return (Batch, 128, features, false, true);    // D's head: x [16, 2048] x W^T, W [128, 2048]
        yield return (128, features, Batch, true, false);    // G's weight gradient: z^T gy
        yield return (features, 128, Batch, true, false);    // D's head, weight gradient: x^T gy
    }

    /// <summary>Square GEMMs for the GFLOP/s comparison with OpenBLAS (Program's --gemm mode).</summary>
    public static readonly int[] SquareGemmSizes = [512, 1024, 2048];
}
