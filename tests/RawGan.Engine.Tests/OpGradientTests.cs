using RawGan.Engine.Autograd;

namespace RawGan.Engine.Tests;

/// <summary>
/// First- and second-order finite-difference checks for every differentiable op, on every
/// backend. Shapes include batch 1, channels 1 and 3, and odd spatial sizes where the op allows.
/// </summary>
public class OpGradientTests
{
    /// <summary>One op under test: how to build it from its inputs, and the inputs.</summary>
    public sealed record Case(string Name, Func<Tensor[], Tensor> F, Shape[] Shapes, Func<Shape, int, float[]>[] Inputs, bool SecondOrder = true);

    private static Func<Shape, int, float[]> N => GradCheck.Normal;
    private static Func<Shape, int, float[]> Kinked => (s, seed) => GradCheck.AwayFromZero(s, seed);
    private static Func<Shape, int, float[]> Pos => (s, seed) => GradCheck.Positive(s, seed);
    private static Func<Shape, int, float[]> SmallBias => (s, seed) => GradCheck.Normal(s, seed).Select(v => 0.02f * Math.Clamp(v, -2f, 2f)).ToArray();

    private static Shape S(params int[] d) => new(d);

    public static readonly Case[] Cases =
    [
        // broadcasting arithmetic: equal shapes, per-channel bias, per-sample scalar, scalar
        new("Add same", x => Ops.Add(x[0], x[1]), [S(2, 3, 3, 5), S(2, 3, 3, 5)], [N, N]),
        new("Add bias [C]", x => Ops.Add(x[0], Ops.Reshape(x[1], S(3, 1, 1))), [S(2, 3, 3, 5), S(3)], [N, N]),
        new("Sub per-sample", x => Ops.Sub(x[0], x[1]), [S(3, 1, 5, 3), S(3, 1, 1, 1)], [N, N]),
        new("Sub reversed", x => Ops.Sub(x[1], x[0]), [S(2, 3, 2, 2), S(1, 3, 1, 1)], [N, N]),
        new("Mul same", x => Ops.Mul(x[0], x[1]), [S(1, 3, 3, 3), S(1, 3, 3, 3)], [N, N]),
        new("Mul per-sample", x => Ops.Mul(x[0], x[1]), [S(4, 2, 3, 3), S(4, 1, 1, 1)], [N, N]),
        new("Mul scalar", x => Ops.Mul(x[0], x[1]), [S(2, 5), S()], [N, N]),
        new("Div", x => Ops.Div(x[0], x[1]), [S(2, 3, 3), S(1, 3, 1)], [N, Pos]),
        new("BroadcastTo", x => Ops.BroadcastTo(x[0], S(2, 3, 4, 5)), [S(1, 3, 1, 5)], [N]),
        new("SumTo", x => Ops.SumTo(x[0], S(3, 1, 1)), [S(2, 3, 4, 5)], [N]),
        new("Sum axes", x => Ops.Sum(x[0], [0, 2]), [S(3, 2, 5, 1)], [N]),
        new("Sum all", x => Ops.Sum(x[0]), [S(2, 3, 3)], [N]),
        new("Mean keepdims", x => Ops.Mean(x[0], [1], keepDims: true), [S(2, 3, 5, 5)], [N]),
        new("Mean all", x => Ops.Mean(x[0]), [S(1, 1, 7, 3)], [N]),

        // unary
        new("Scale (eq-LR)", x => Ops.Scale(x[0], 0.35f), [S(2, 3, 3, 3)], [N]),
        new("AddScalar", x => Ops.AddScalar(x[0], 1.5f), [S(3, 5)], [N]),
        new("Square", x => Ops.Square(x[0]), [S(2, 1, 3, 5)], [N]),
        new("Sqrt", x => Ops.Sqrt(x[0]), [S(2, 7)], [Pos]),
        new("Rsqrt", x => Ops.Rsqrt(x[0]), [S(3, 3)], [Pos]),
        new("Softplus", x => Ops.Softplus(x[0]), [S(2, 5)], [N]),
        new("Softplus of a critic's scores (the logistic loss)", x => Ops.Mean(Ops.Softplus(Ops.Scale(x[0], -3f))), [S(7)], [N]),
        new("Sigmoid", x => Ops.Sigmoid(x[0]), [S(3, 4)], [N]),
        new("LeakyRelu", x => Ops.LeakyRelu(x[0], 0.2f), [S(2, 3, 5, 3)], [Kinked]),
        new("LeakyReluMask (in g)", x => Ops.LeakyReluMask(x[1], x[0], 0.2f), [S(2, 3, 3), S(2, 3, 3)], [N, Kinked], SecondOrder: false),
        // the fused bias and activation: x + b stays 0.06 or more from the kink (|x| >= 0.1, |b| <= 0.04)
        new("BiasLeakyRelu NCHW", x => Ops.BiasLeakyRelu(x[0], x[1], 0.2f), [S(2, 3, 5, 3), S(3)], [Kinked, SmallBias]),
        new("BiasLeakyRelu dense [N, C]", x => Ops.BiasLeakyRelu(x[0], x[1], 0.2f), [S(3, 4), S(4)], [Kinked, SmallBias]),
        new("BiasLeakyRelu slope 1 (the bias alone)", x => Ops.BiasLeakyRelu(x[0], x[1], 1f), [S(1, 2, 3, 3), S(2)], [N, N]),
        new("BiasLeakyRelu after Conv2d (a layer)", x => Ops.BiasLeakyRelu(Ops.Conv2d(x[0], x[1], 0.4f), x[2], 0.2f), [S(2, 3, 4, 4), S(2, 3, 3, 3), S(2)], [N, N, N]),
        // the same layer with the bias and activation in the convolution's output pass: 3x3, 1x1 (fromRGB), slope 1 (toRGB)
        new("Conv2dBiasLeakyRelu 3x3 (a layer)", x => Ops.Conv2dBiasLeakyRelu(x[0], x[1], 0.4f, x[2], 0.2f), [S(2, 3, 4, 4), S(2, 3, 3, 3), S(2)], [N, N, N]),
        new("Conv2dBiasLeakyRelu 3x3 odd map, batch 1", x => Ops.Conv2dBiasLeakyRelu(x[0], x[1], 0.5f, x[2], 0.2f), [S(1, 2, 5, 3), S(3, 2, 3, 3), S(3)], [N, N, N]),
        new("Conv2dBiasLeakyRelu 1x1 (fromRGB)", x => Ops.Conv2dBiasLeakyRelu(x[0], x[1], 0.6f, x[2], 0.2f), [S(2, 3, 3, 4), S(5, 3, 1, 1), S(5)], [N, N, N]),
        new("Conv2dBiasLeakyRelu slope 1 (toRGB: the bias alone)", x => Ops.Conv2dBiasLeakyRelu(x[0], x[1], 0.8f, x[2], 1f), [S(2, 4, 3, 5), S(3, 4, 1, 1), S(3)], [N, N, N]),
        // the generator's layer with its pixel norm (one call forward, one pass backward)
        new("Conv2dBiasLeakyReluPixelNorm 3x3 (a generator layer)", x => Ops.Conv2dBiasLeakyReluPixelNorm(x[0], x[1], 0.4f, x[2], 0.2f), [S(2, 3, 4, 4), S(4, 3, 3, 3), S(4)], [N, N, N]),
        new("Conv2dBiasLeakyReluPixelNorm odd map, batch 1", x => Ops.Conv2dBiasLeakyReluPixelNorm(x[0], x[1], 0.5f, x[2], 0.2f), [S(1, 2, 5, 3), S(3, 2, 3, 3), S(3)], [N, N, N]),
        new("Conv2dBiasLeakyReluPixelNorm two output channels, 1x1", x => Ops.Conv2dBiasLeakyReluPixelNorm(x[0], x[1], 0.7f, x[2], 0.2f), [S(2, 3, 3, 3), S(2, 3, 1, 1), S(2)], [N, N, N]),

        // matrix product, every transpose, with the equalized-LR multiplier as alpha
        new("MatMul NN", x => Ops.MatMul(x[0], x[1], alpha: 0.7f), [S(3, 5), S(5, 4)], [N, N]),
        new("MatMul NT (dense)", x => Ops.MatMul(x[0], x[1], transB: true, alpha: 0.5f), [S(1, 6), S(3, 6)], [N, N]),
        new("MatMul TN", x => Ops.MatMul(x[0], x[1], transA: true), [S(4, 3), S(4, 2)], [N, N]),
        new("MatMul TT", x => Ops.MatMul(x[0], x[1], true, true, 1.3f), [S(5, 3), S(2, 5)], [N, N]),

        // convolution and its adjoints
        new("Conv2d 3x3", x => Ops.Conv2d(x[0], x[1], 0.4f), [S(2, 3, 5, 3), S(4, 3, 3, 3)], [N, N]),
        new("Conv2d 3x3 batch 1 channel 1", x => Ops.Conv2d(x[0], x[1], 1.1f), [S(1, 1, 4, 4), S(1, 1, 3, 3)], [N, N]),
        new("Conv2d 1x1 (toRGB)", x => Ops.Conv2d(x[0], x[1], 0.8f), [S(2, 4, 3, 5), S(3, 4, 1, 1)], [N, N]),
        new("ConvInputGrad", x => Ops.ConvInputGrad(x[0], x[1], S(2, 2, 3, 4), 0.6f), [S(2, 3, 3, 4), S(3, 2, 3, 3)], [N, N]),
        new("ConvWeightGrad", x => Ops.ConvWeightGrad(x[0], x[1], S(3, 2, 3, 3), 0.6f), [S(2, 2, 3, 4), S(2, 3, 3, 4)], [N, N]),

        // resampling
        new("Upsample2x", x => Ops.Upsample2x(x[0]), [S(2, 3, 3, 5)], [N]),
        new("AvgPool2x", x => Ops.AvgPool2x(x[0]), [S(1, 3, 4, 6)], [N]),

        // channels and shape
        new("Concat", x => Ops.Concat(x[0], x[1]), [S(2, 3, 3, 3), S(2, 1, 3, 3)], [N, N]),
        new("SliceChannels", x => Ops.SliceChannels(x[0], 1, 2), [S(2, 4, 3, 1)], [N]),
        new("PadChannels", x => Ops.PadChannels(x[0], 2, 5), [S(1, 2, 3, 3)], [N]),
        new("Reshape", x => Ops.Mul(Ops.Reshape(x[0], S(6, 5)), Ops.Reshape(x[0], S(6, 5))), [S(2, 3, 5)], [N]),

        // fade-in and WGAN-GP interpolation
        new("Lerp alpha", x => Ops.Lerp(x[0], x[1], 0.3f), [S(2, 3, 4, 4), S(2, 3, 4, 4)], [N, N]),
        new("Lerp per sample", x => Ops.Lerp(x[0], x[1], Tensor.FromArray(x[0].Backend, [0.2f, 0.9f, 0.5f], S(3))), [S(3, 3, 2, 2), S(3, 3, 2, 2)], [N, N]),

        // fused ProGAN ops
        new("PixelNorm NCHW", x => Ops.PixelNorm(x[0]), [S(2, 3, 3, 5)], [N]),
        new("PixelNorm latent [N, C]", x => Ops.PixelNorm(x[0]), [S(3, 8)], [N]),
        new("MinibatchStdDev N=8 G=4", x => Ops.MinibatchStdDev(x[0], 4), [S(8, 2, 2, 2)], [N]),
        new("MinibatchStdDev N=4 G=2 (strided)", x => Ops.MinibatchStdDev(x[0], 2), [S(4, 3, 3, 1)], [N]),
        new("MinibatchStdDev N=3 (G=N)", x => Ops.MinibatchStdDev(x[0], 4), [S(3, 1, 3, 3)], [N]),
        new("MinibatchStdDev N=1", x => Ops.MinibatchStdDev(x[0], 4), [S(1, 2, 2, 2)], [N]),
        new("GradientPenalty", x => Ops.GradientPenalty(x[0]), [S(3, 2, 3, 3)], [N]),
    ];

    public static TheoryData<string, string> BackendsAndCases(bool secondOrder)
    {
        var data = new TheoryData<string, string>();
        foreach (var b in TestBackends.Names)
            foreach (var c in Cases)
                if (!secondOrder || c.SecondOrder) data.Add(b, c.Name);
        return data;
    }

    public static TheoryData<string, string> FirstOrderCases => BackendsAndCases(false);
    public static TheoryData<string, string> SecondOrderCases => BackendsAndCases(true);

    private static (float[][] values, Shape[] shapes) Inputs(Case c) =>
        (c.Shapes.Select((s, i) => c.Inputs[i](s, 17 * i + c.Name.Length)).ToArray(), c.Shapes);

    [Theory]
    [MemberData(nameof(FirstOrderCases))]
    public void FirstOrder(string backend, string op)
    {
        var c = Cases.Single(k => k.Name == op);
        var (values, shapes) = Inputs(c);
        GradCheck.FirstOrder(TestBackends.Get(backend), c.F, values, shapes);
    }

    [Theory]
    [MemberData(nameof(SecondOrderCases))]
    public void SecondOrder(string backend, string op)
    {
        var c = Cases.Single(k => k.Name == op);
        var (values, shapes) = Inputs(c);
        GradCheck.SecondOrder(TestBackends.Get(backend), c.F, values, shapes);
    }

    [Fact]
    public void EveryOpOfTheClosedSetHasACase()
    {
        // The public differentiable API of Ops, minus helpers that are not ops.
        var ops = typeof(Ops).GetMethods(System.Reflection.BindingFlags.Public | System.Reflection.BindingFlags.Static)
            .Where(m => m.ReturnType == typeof(Tensor) && !m.Name.EndsWith("Reference") && m.Name != "Detach")
            .Select(m => m.Name).Distinct().ToList();
        var covered = Cases.Select(c => c.Name.Split(' ')[0]).ToHashSet();
        var missing = ops.Where(o => !covered.Contains(o)).ToList();
        Assert.True(missing.Count == 0, "ops without a gradient check: " + string.Join(", ", missing));
    }
}
