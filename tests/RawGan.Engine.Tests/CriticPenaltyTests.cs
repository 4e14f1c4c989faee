using RawGan.Engine.Autograd;

namespace RawGan.Engine.Tests;

/// <summary>
/// End to end: the WGAN-GP penalty of a tiny ProGAN-shaped critic, differentiated with respect to
/// every critic weight through the recorded backward pass, against finite differences.
/// </summary>
public class CriticPenaltyTests
{
    // fromRGB 1x1 -> conv3x3 -> lrelu -> avgpool -> mbstd -> conv3x3 -> lrelu -> dense -> lrelu -> dense
    private static readonly Shape[] ParamShapes =
    [
        new(2, 3, 1, 1), new(2),        // fromRGB
        new(2, 2, 3, 3), new(2),        // conv at 4x4
        new(3, 3, 3, 3), new(3),        // head conv after mbstd (2 + 1 channels in)
        new(4, 3 * 2 * 2), new(4),      // dense
        new(1, 4), new(1),              // output dense (linear)
    ];

    private const int Batch = 4, Group = 2;

    private static Tensor Bias(Tensor x, Tensor b) =>
        x.Shape.Rank == 4 ? Ops.Add(x, Ops.Reshape(b, new Shape(b.Shape[0], 1, 1))) : Ops.Add(x, b);

    private static float EqLr(Shape w, float gain = 1.41421356f)
    {
        long fanIn = w.Length / w[0];
        return gain / MathF.Sqrt(fanIn);
    }

    /// <summary>
    /// The critic, with equalized-LR scales folded into the conv and dense kernels. If
    /// <paramref name="piece"/> is given, it receives a hash of the sign of every leaky ReLU input:
    /// the linear piece of the network that this input and these weights are on.
    /// </summary>
    public static Tensor Critic(Tensor img, Tensor[] p, HashCode? piece = null)
    {
        Tensor Act(Tensor z)
        {
            if (piece is HashCode hc)
            {
                foreach (var v in z.ToArray()) hc.Add(v > 0);
                piece = hc;
            }
            return Ops.LeakyRelu(z);
        }
        var x = Act(Bias(Ops.Conv2d(img, p[0], EqLr(p[0].Shape)), p[1]));
        x = Act(Bias(Ops.Conv2d(x, p[2], EqLr(p[2].Shape)), p[3]));
        x = Ops.AvgPool2x(x);
        x = Ops.MinibatchStdDev(x, Group);
        x = Act(Bias(Ops.Conv2d(x, p[4], EqLr(p[4].Shape)), p[5]));
        x = Ops.Reshape(x, new Shape(x.Shape[0], (int)(x.Length / x.Shape[0])));
        x = Act(Bias(Ops.MatMul(x, p[6], transB: true, alpha: EqLr(p[6].Shape)), p[7]));
        LastPiece = piece?.ToHashCode() ?? 0;
        return Bias(Ops.MatMul(x, p[8], transB: true, alpha: EqLr(p[8].Shape, 1f)), p[9]);
    }

    [ThreadStatic] private static long LastPiece;

    /// <summary>mean over samples of (||d sum(D(x_hat)) / d x_hat||_2 - 1)^2.</summary>
    public static Tensor Penalty(Tensor xhat, Tensor[] p, bool createGraph, bool trackPiece = false)
    {
        var d = Critic(xhat, p, trackPiece ? new HashCode() : null);
        var g = Tape.Grad([Ops.Sum(d)], [xhat], createGraph: createGraph)[0];
        return Ops.Mean(Ops.GradientPenalty(g));
    }

    [Theory]
    [MemberData(nameof(TestBackends.All), MemberType = typeof(TestBackends))]
    public void PenaltyGradientMatchesFiniteDifferencesForEveryWeight(string backend)
    {
        var be = TestBackends.Get(backend);
        var rng = new Rng(7);
        var values = ParamShapes.Select(s => { var v = new float[s.Length]; rng.FillNormal(v); return v; }).ToArray();
        // Non-zero biases, so that every path is exercised.
        for (int i = 1; i < values.Length; i += 2)
            for (int j = 0; j < values[i].Length; j++) values[i][j] *= 0.1f;
        var real = new float[Batch * 3 * 4 * 4];
        var fake = new float[real.Length];
        var t = new float[Batch];
        rng.FillNormal(real); rng.FillNormal(fake); rng.FillUniform(t);

        Tensor XHat()
        {
            var r = Tensor.FromArray(be, real, new Shape(Batch, 3, 4, 4));
            var f = Tensor.FromArray(be, fake, new Shape(Batch, 3, 4, 4));
            var x = Ops.Lerp(r, f, Tensor.FromArray(be, t, new Shape(Batch)));
            x.RequiresGrad = true;
            return x;
        }

        float[][] analytic;
        using (var scope = new Scope())
        {
            var p = GradCheck.Leaves(be, values, ParamShapes);
            var penalty = Penalty(XHat(), p, createGraph: true);
            Assert.True(penalty.Item() > 1e-3, "the penalty should not vanish at random weights");
            analytic = Tape.Grad([penalty], p).Select(g => g.ToArray()).ToArray();
        }
        Assert.Contains(analytic, g => g.Any(v => v != 0));

        (double, long) PenaltyAt(float[][] w)
        {
            using var scope = new Scope();
            double value = Penalty(XHat(), GradCheck.Leaves(be, w, ParamShapes, requiresGrad: false), createGraph: false, trackPiece: true).Item();
            return (value, LastPiece);
        }
        int total = values.Sum(v => v.Length);
        GradCheck.Compare("WGAN-GP penalty w.r.t. critic weights", values, analytic, PenaltyAt, rng, maxElements: total);
    }
}
