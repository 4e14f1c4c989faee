using RawGan.Engine.Autograd;
using RawGan.Engine.Backends;

namespace RawGan.Engine.Tests;

/// <summary>
/// Finite-difference checks of the tape's gradients.
///
/// Every check reduces the op's output y to a scalar L = sum(r * y) with a fixed random r, so
/// all of y's elements are weighed. First order compares dL/dx from the tape with the central
/// difference (L(x + h e) - L(x - h e)) / 2h; second order compares the tape's gradient of
/// H = sum_i sum(s_i * dL/dx_i) (the gradient recorded with createGraph, projected on random s_i)
/// with the central difference of H, where H itself is evaluated by a first-order tape pass.
///
/// Tolerance. Everything runs in float32 (the only dtype). With inputs of order 1 and h = 1e-2:
/// the truncation error of a central difference is h^2/6 |f'''| ~ 2e-5 |f'''|; the rounding
/// error is about eps32 * |L| * sqrt(#terms) / h ~ 6e-8 * 10 * 30 / 1e-2 ~ 2e-3 for the sizes
/// used here. So an element passes when |tape - fd| &lt;= atol + rtol * max(|tape|, |fd|), with
/// rtol = 2e-2 and atol = 5e-3 * max(1, largest |fd| of that input): two orders of magnitude
/// below the size of a real error (a wrong sign, a missing factor 2, a dropped term), yet above
/// float32 noise. A failing element is retried once with h / 4 and passes if either step agrees.
/// Piecewise-smooth functions (networks of leaky ReLUs) pass a signature of the piece, and
/// steps that cross a kink are shrunk (see <see cref="Compare(string, float[][], float[][], Func{float[][], ValueTuple{double, long}}, Rng, int)"/>).
/// </summary>
public static class GradCheck
{
    public const double H = 1e-2, Rtol = 2e-2, AtolFactor = 5e-3;

    /// <summary>At most this many elements of each input are perturbed (chosen at random, always
    /// including the first and last), so that large inputs stay fast.</summary>
    public const int MaxElements = 40;

    public static void FirstOrder(IBackend be, Func<Tensor[], Tensor> f, float[][] inputs, Shape[] shapes, int seed = 1, int maxElements = MaxElements)
    {
        var rng = new Rng((ulong)seed);
        float[] r;
        Tensor[] grads;
        using (var scope = new Scope())
        {
            var xs = Leaves(be, inputs, shapes);
            var y = f(xs);
            r = new float[y.Length];
            rng.FillNormal(r);
            var rt = Tensor.FromArray(be, r, y.Shape);
            grads = Tape.Grad([y], xs, [rt]);
            var analytic = grads.Select(g => g.ToArray()).ToArray();
            double Loss(float[][] values)
            {
                using var s = new Scope();
                using var _ = Tape.NoGrad();
                var ys = f(Leaves(be, values, shapes, requiresGrad: false)).ToArray();
                double l = 0;
                for (int i = 0; i < ys.Length; i++) l += (double)r[i] * ys[i];
                return l;
            }
            Compare("first-order", inputs, analytic, Loss, rng, maxElements);
        }
    }

    public static void SecondOrder(IBackend be, Func<Tensor[], Tensor> f, float[][] inputs, Shape[] shapes, int seed = 2, int maxElements = MaxElements)
    {
        var rng = new Rng((ulong)seed);
        float[] r;
        float[][] s;
        using var scope = new Scope();
        var xs = Leaves(be, inputs, shapes);
        var y = f(xs);
        r = new float[y.Length];
        rng.FillNormal(r);
        s = inputs.Select(a => { var v = new float[a.Length]; rng.FillNormal(v); return v; }).ToArray();
        var rt = Tensor.FromArray(be, r, y.Shape);
        var g1 = Tape.Grad([y], xs, [rt], createGraph: true);
        Tensor h = Tensor.Zeros(be, new Shape());
        for (int i = 0; i < xs.Length; i++)
            h = Ops.Add(h, Ops.Sum(Ops.Mul(g1[i], Tensor.FromArray(be, s[i], shapes[i]))));
        var analytic = Tape.Grad([h], xs).Select(g => g.ToArray()).ToArray();

        double Projected(float[][] values)
        {
            using var sc = new Scope();
            var x2 = Leaves(be, values, shapes);
            var y2 = f(x2);
            var g = Tape.Grad([y2], x2, [Tensor.FromArray(be, r, y2.Shape)]);
            double acc = 0;
            for (int i = 0; i < g.Length; i++)
            {
                var gv = g[i].ToArray();
                for (int j = 0; j < gv.Length; j++) acc += (double)gv[j] * s[i][j];
            }
            return acc;
        }
        Compare("second-order", inputs, analytic, Projected, rng, maxElements);
    }

    /// <summary>Finite differences of <paramref name="scalar"/> against the tape's gradients.</summary>
    public static void Compare(string what, float[][] inputs, float[][] analytic, Func<float[][], double> scalar, Rng rng, int maxElements) =>
        Compare(what, inputs, analytic, v => (scalar(v), 0L), rng, maxElements);

    /// <summary>
    /// Finite differences of a piecewise-smooth function. <paramref name="eval"/> returns the value
    /// and a signature of the smooth piece it is on (for a network: the sign pattern of every
    /// leaky ReLU input). A central difference is only taken between points of the same piece as
    /// the base point: when a step crosses a kink, it is quartered (down to h / 4^5); an element
    /// whose neighbourhood never settles is counted as skipped, and at most 5% may be.
    /// </summary>
    public static void Compare(string what, float[][] inputs, float[][] analytic, Func<float[][], (double value, long piece)> eval, Rng rng, int maxElements)
    {
        var failures = new List<string>();
        long basePiece = eval(inputs).piece;
        int checkedCount = 0, skipped = 0;
        for (int i = 0; i < inputs.Length; i++)
        {
            var idx = Pick(inputs[i].Length, maxElements, rng);
            var fd = new double?[idx.Length];
            for (int k = 0; k < idx.Length; k++)
            {
                double h = H;
                for (int attempt = 0; attempt < 6 && fd[k] == null; attempt++, h /= 4)
                    fd[k] = Difference(inputs, i, idx[k], h, eval, basePiece);
                if (fd[k] == null) skipped++;
                checkedCount++;
            }
            double scale = Math.Max(1, fd.Select(v => Math.Abs(v ?? 0)).DefaultIfEmpty(0).Max());
            for (int k = 0; k < idx.Length; k++)
            {
                if (fd[k] is not double n) continue;
                double a = analytic[i][idx[k]];
                if (Agrees(a, n, scale)) continue;
                // Smooth functions with large third derivatives: one retry with a quarter step.
                double? n2 = Difference(inputs, i, idx[k], H / 4, eval, basePiece);
                if (n2 is double m && Agrees(a, m, scale)) continue;
                failures.Add($"input {i} element {idx[k]}: tape {a:G6}, finite difference {n:G6} (h/4: {n2:G6})");
            }
        }
        Assert.True(failures.Count == 0, $"{what} gradient mismatch ({failures.Count} of {checkedCount} elements):\n" + string.Join("\n", failures.Take(12)));
        Assert.True(skipped <= 0.05 * checkedCount, $"{what}: {skipped} of {checkedCount} elements sat on a kink at every step size");
    }

    private static bool Agrees(double a, double n, double scale) =>
        Math.Abs(a - n) <= AtolFactor * scale + Rtol * Math.Max(Math.Abs(a), Math.Abs(n));

    private static double? Difference(float[][] inputs, int i, int j, double h, Func<float[][], (double value, long piece)> eval, long basePiece)
    {
        var plus = inputs.Select(a => (float[])a.Clone()).ToArray();
        var minus = inputs.Select(a => (float[])a.Clone()).ToArray();
        // Use the step actually representable in float32 for the denominator.
        float xp = (float)(inputs[i][j] + h), xm = (float)(inputs[i][j] - h);
        plus[i][j] = xp;
        minus[i][j] = xm;
        var (vp, pp) = eval(plus);
        var (vm, pm) = eval(minus);
        if (pp != basePiece || pm != basePiece) return null;
        return (vp - vm) / ((double)xp - xm);
    }

    private static int[] Pick(int length, int max, Rng rng)
    {
        if (length <= max) return Enumerable.Range(0, length).ToArray();
        var set = new SortedSet<int> { 0, length - 1 };
        while (set.Count < max) set.Add(rng.NextInt(length));
        return set.ToArray();
    }

    public static Tensor[] Leaves(IBackend be, float[][] values, Shape[] shapes, bool requiresGrad = true) =>
        values.Select((v, i) => { var t = Tensor.FromArray(be, v, shapes[i]); t.RequiresGrad = requiresGrad; return t; }).ToArray();

    // ------------------------------------------------------------------ input generators

    public static float[] Normal(Shape s, int seed)
    {
        var a = new float[s.Length];
        new Rng((ulong)seed + 1000).FillNormal(a);
        return a;
    }

    /// <summary>Normal values pushed at least <paramref name="gap"/> away from 0 (for kinks).</summary>
    public static float[] AwayFromZero(Shape s, int seed, float gap = 0.1f) =>
        Normal(s, seed).Select(v => v >= 0 ? v + gap : v - gap).ToArray();

    /// <summary>Values in [lo, hi] (for sqrt and rsqrt).</summary>
    public static float[] Positive(Shape s, int seed, float lo = 0.5f, float hi = 2f)
    {
        var a = new float[s.Length];
        new Rng((ulong)seed + 2000).FillUniform(a);
        return a.Select(u => lo + (hi - lo) * u).ToArray();
    }
}
