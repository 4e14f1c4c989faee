using System.Diagnostics;

namespace RawGan.Engine.Backends.Reference;

/// <summary>One kernel on one size: the largest error against the reference, the bound it must
/// stay under, and how long the backend took (including its copies).</summary>
public sealed record KernelCheckResult(string Kernel, string Size, double MaxError, double Bound, double Milliseconds, string? Failure)
{
    public bool Passed => Failure == null && MaxError <= Bound;
}

/// <summary>
/// Every kernel of a backend against <see cref="ReferenceBackend"/> at a few sizes, with the
/// same inputs: what `rawgan check` runs on the user's device. Outputs start as NaN, so an element
/// a kernel forgets to write fails. Errors are relative to max(1, |expected|); the bounds are
/// those the test suite uses (1e-6 elementwise, 1e-5 reductions, 1e-4 products).
///
/// A backend whose matrix products and convolutions round their inputs to TF32 (10 mantissa
/// bits) is checked on those against TF32's bound instead, as the test suite does: the error of
/// each output relative to sum_k |a_k b_k| (the same kernel run by the reference on absolute
/// values), at most 2 2^-11 + 2^-22 for the rounded factors plus (K + 2) 2^-23 for an fp32 sum of
/// K terms in any order.
/// </summary>
public static class BackendCheck
{
    private const double Elementwise = 1e-6, Reduction = 1e-5, Product = 1e-4;

    /// <summary>TF32's bound on a product's error relative to sum_k |a_k b_k|, for K terms.</summary>
    public static double Tf32Bound(long k) => 2 * Math.Pow(2, -11) + Math.Pow(2, -22) + (k + 2) * Math.Pow(2, -23);

    /// <summary>One kernel at one size. Products carry K, the length of their sums, and
    /// <paramref name="Magnitude"/>: the same product of the absolute values (|alpha|, |beta|,
    /// |scale| too), run by the reference for TF32's bound. <paramref name="Unfused"/>, for a fused kernel whose product is TF32 on a TF32 backend: the
    /// same result from that backend's own unfused kernels (checked against the reference by their
    /// own cases), which is then the expectation, with <paramref name="Bound"/>.</summary>
    private sealed record Case(string Kernel, string Size, float[][] Inputs, long[] Outputs, Action<IBackend, DeviceBuffer[]> Run, double Bound,
        long K = 0, Action<IBackend, DeviceBuffer[]>? Magnitude = null, Action<IBackend, DeviceBuffer[]>? Unfused = null);

    /// <param name="backend">The backend to check.</param>
    /// <param name="tf32Products">Whether its matrix products and convolutions round their inputs
    /// to TF32 (a CUDA backend at <c>Precision.Tf32</c>).</param>
    public static IReadOnlyList<KernelCheckResult> Run(IBackend backend, bool tf32Products = false)
    {
        var results = new List<KernelCheckResult>();
        foreach (var c in Cases())
        {
            try
            {
                var expected = tf32Products && c.Unfused != null ? Execute(backend, c.Inputs, c.Outputs, c.Unfused) : Execute(ReferenceBackend.Shared, c.Inputs, c.Outputs, c.Run);
                bool tf32 = tf32Products && c.Magnitude != null;
                var magnitude = tf32 ? Execute(ReferenceBackend.Shared, c.Inputs.Select(v => v.Select(MathF.Abs).ToArray()).ToArray(), c.Outputs, c.Magnitude!) : null;
                var clock = Stopwatch.StartNew();
                var actual = Execute(backend, c.Inputs, c.Outputs, c.Run);
                double ms = clock.Elapsed.TotalMilliseconds;
                double worst = 0;
                for (int b = 0; b < expected.Length; b++)
                    for (int i = 0; i < expected[b].Length; i++)
                    {
                        float e = expected[b][i], a = actual[b][i];
                        if ((float.IsNaN(e) && float.IsNaN(a)) || e == a) continue;
                        double scale = magnitude != null ? Math.Max(magnitude[b][i], 1e-30) : Math.Max(1, Math.Abs((double)e));
                        double error = float.IsFinite(a) ? Math.Abs((double)e - a) / scale : double.PositiveInfinity;
                        worst = Math.Max(worst, error);
                    }
                results.Add(new KernelCheckResult(c.Kernel, c.Size, worst, tf32 ? Tf32Bound(c.K) : c.Bound, ms, null));
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                results.Add(new KernelCheckResult(c.Kernel, c.Size, double.NaN, c.Bound, 0, e.Message.Split('\n')[0]));
            }
        }
        return results;
    }

    /// <summary>Runs <paramref name="kernel"/> on <paramref name="backend"/> with the inputs uploaded
    /// and one buffer per output filled with NaN first (so an element a kernel forgets to write
    /// shows), and returns every buffer afterwards, inputs included (some kernels update them).</summary>
    public static float[][] Execute(IBackend backend, float[][] inputs, long[] outputs, Action<IBackend, DeviceBuffer[]> kernel)
    {
        var buffers = new DeviceBuffer[inputs.Length + outputs.Length];
        try
        {
            for (int i = 0; i < inputs.Length; i++)
            {
                buffers[i] = backend.Allocate(Math.Max(1, inputs[i].Length));
                backend.Upload(inputs[i], buffers[i]);
            }
            for (int o = 0; o < outputs.Length; o++)
            {
                var nan = new float[outputs[o]];
                Array.Fill(nan, float.NaN);
                buffers[inputs.Length + o] = backend.Allocate(Math.Max(1, nan.Length));
                backend.Upload(nan, buffers[inputs.Length + o]);
            }
            kernel(backend, buffers);
            backend.Synchronize();
            var result = new float[buffers.Length][];
            for (int i = 0; i < buffers.Length; i++)
            {
                result[i] = new float[i < inputs.Length ? inputs[i].Length : outputs[i - inputs.Length]];
                backend.Download(buffers[i], result[i]);
            }
            return result;
        }
        finally
        {
            foreach (var b in buffers)
                if (!b.IsNull) backend.Free(b);
        }
    }

    /// <summary>n standard normal values (Box-Muller over System.Random: the same for a seed everywhere).</summary>
    public static float[] Normal(long n, int seed, float scale = 1f)
    {
        var rng = new Random(seed);
        var v = new float[n];
        for (long i = 0; i < n; i++)
            v[i] = scale * (float)(Math.Sqrt(-2 * Math.Log(1.0 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble()));
        return v;
    }

    /// <summary>n values uniform in [lo, hi).</summary>
    public static float[] Uniform(long n, int seed, float lo, float hi)
    {
        var rng = new Random(seed);
        var v = new float[n];
        for (long i = 0; i < n; i++) v[i] = lo + (hi - lo) * (float)rng.NextDouble();
        return v;
    }

    private static IEnumerable<Case> Cases()
    {
        // Elementwise: under a warp, and more than one pass of a grid-stride loop.
        foreach (long n in new long[] { 31, 300_001 })
        {
            var x = Normal(n, 1);
            var y = Normal(n, 2);
            var positive = Uniform(n, 3, 0.01f, 4f);
            string size = $"n={n}";
            yield return new("fill", size, [], [n], (b, p) => b.Fill(p[0], n, 0.25f), 0);
            yield return new("scale", size, [x], [n], (b, p) => b.Scale(p[0], p[1], n, -1.5f), Elementwise);
            yield return new("add_scalar", size, [x], [n], (b, p) => b.AddScalar(p[0], p[1], n, 0.5f), Elementwise);
            yield return new("square", size, [x], [n], (b, p) => b.Square(p[0], p[1], n), Elementwise);
            yield return new("sqrt_forward", size, [positive], [n], (b, p) => b.Sqrt(p[0], p[1], n), Elementwise);
            yield return new("rsqrt_forward", size, [positive], [n], (b, p) => b.Rsqrt(p[0], p[1], n), Elementwise);
            var wide = Normal(n, 6, 30f);   // past |x| = 88, where e^x overflows a float
            yield return new("softplus_forward", size, [wide], [n], (b, p) => b.Softplus(p[0], p[1], n), Elementwise);
            yield return new("sigmoid_forward", size, [wide], [n], (b, p) => b.Sigmoid(p[0], p[1], n), Elementwise);
            yield return new("leaky_relu_forward", size, [x], [n], (b, p) => b.LeakyReluForward(p[0], p[1], n, 0.2f), 0);
            yield return new("leaky_relu_backward", size, [x, y], [n], (b, p) => b.LeakyReluBackward(p[0], p[1], p[2], n, 0.2f), 0);
            yield return new("lerp_scalar", size, [x, y], [n], (b, p) => b.LerpScalar(p[0], p[1], p[2], n, 0.3f), Elementwise);
            yield return new("ema_update", size, [x, y], [], (b, p) => b.EmaUpdate(p[0], p[1], n, 0.999f, DeviceBuffer.Null), Elementwise);
            var g = Normal(n, 4, 0.1f);
            var v = Uniform(n, 5, 0f, 0.01f);
            // The step count t = 2 becomes 3 (adam_step), an int in a float's storage, read by the update.
            yield return new("adam_update", size, [x, g, Normal(n, 6, 0.01f), v, [BitConverter.Int32BitsToSingle(2)]], [],
                (b, p) => { b.AdamStep(p[4], DeviceBuffer.Null); b.AdamUpdate(p[0], p[1], p[2], p[3], n, 1e-3f, 0f, 0.99f, 1e-8f, p[4], DeviceBuffer.Null); }, Elementwise);
        }
        {
            const int samples = 5, inner = 777;
            yield return new("lerp_per_sample", $"{samples}x{inner}", [Normal(samples * inner, 7), Normal(samples * inner, 8), Uniform(samples, 9, 0, 1)],
                [samples * inner], (b, p) => b.LerpPerSample(p[0], p[1], p[2], p[3], samples, inner), Elementwise);
        }

        // Broadcasting: a bias over NCHW, and sums back to it (the adjoint).
        foreach (var (n, c, h, w) in new[] { (2, 3, 5, 7), (16, 64, 8, 8) })
        {
            var full = new Dims4(n, c, h, w);
            var bias = new Dims4(1, c, 1, 1);
            string size = full.ToString();
            var x = Normal(full.Length, 10);
            var bv = Normal(bias.Length, 11);
            yield return new("add_broadcast", size, [x, bv], [full.Length], (b, p) => b.Add(p[0], full, p[1], bias, p[2], full), Elementwise);
            yield return new("sub_broadcast", size, [x, bv], [full.Length], (b, p) => b.Sub(p[0], full, p[1], bias, p[2], full), Elementwise);
            yield return new("mul_broadcast", size, [x, bv], [full.Length], (b, p) => b.Mul(p[0], full, p[1], bias, p[2], full), Elementwise);
            yield return new("div_broadcast", size, [x, Uniform(bias.Length, 12, 0.5f, 2f)], [full.Length], (b, p) => b.Div(p[0], full, p[1], bias, p[2], full), Elementwise);
            yield return new("broadcast_to", size, [bv], [full.Length], (b, p) => b.BroadcastTo(p[0], bias, p[1], full), 0);
            yield return new("sum_to", size, [x], [bias.Length], (b, p) => b.SumTo(p[0], full, p[1], bias), Reduction);
        }

        // A layer's bias and leaky ReLU, and their backward: a dense layer's [n, c] and a map over NCHW.
        foreach (var (n, c, plane) in new[] { (3, 5, 1), (16, 64, 64) })
        {
            long total = (long)n * c * plane;
            string size = $"{n}x{c}x{plane}";
            var x = Normal(total, 20);
            var bv = Normal(c, 21);
            yield return new("bias_leaky_relu", size, [x, bv], [total], (b, p) => b.BiasLeakyRelu(p[0], p[1], p[2], n, c, plane, 0.2f), Elementwise);
            yield return new("bias_leaky_relu_backward", size, [x, Normal(total, 22)], [total, c],
                (b, p) => b.BiasLeakyReluBackward(p[0], p[1], p[2], p[3], n, c, plane, 0.2f), Reduction);
        }

        // Matrix products: every transpose, odd sizes.
        foreach (var (m, n, k) in new[] { (17, 33, 20), (128, 256, 512) })
            foreach (bool ta in new[] { false, true })
                foreach (bool tb in new[] { false, true })
                    yield return new("sgemm", $"{m}x{n}x{k}{(ta ? " A^T" : "")}{(tb ? " B^T" : "")}", [Normal(m * k, 13), Normal(k * n, 14), Normal(m * n, 15)], [],
                        (b, p) => b.Gemm(ta, tb, m, n, k, 0.75f, p[0], p[1], 0.5f, p[2]), Product, k,
                        (b, p) => b.Gemm(ta, tb, m, n, k, 0.75f, p[0], p[1], 0.5f, p[2]));

        // Convolutions: 3x3 and 1x1 (fromRGB), the weight gradient over many pixels.
        foreach (var (n, cin, h, w, cout, k) in new[] { (2, 3, 5, 7, 4, 3), (4, 32, 16, 16, 32, 3), (8, 3, 32, 32, 16, 1), (2, 16, 8, 8, 100, 3) })
        {
            long xs = (long)n * cin * h * w, ws = (long)cout * cin * k * k, ys = (long)n * cout * h * w;
            float scale = MathF.Sqrt(2f / (cin * k * k));
            string size = $"{n}x{cin}x{h}x{w} -> {cout}, k={k}";
            Action<IBackend, DeviceBuffer[]> forward = (b, p) => b.Conv2dForward(p[0], p[1], p[2], n, cin, h, w, cout, k, scale);
            Action<IBackend, DeviceBuffer[]> input = (b, p) => b.Conv2dBackwardInput(p[0], p[1], p[2], n, cin, h, w, cout, k, scale);
            Action<IBackend, DeviceBuffer[]> weight = (b, p) => b.Conv2dBackwardWeight(p[0], p[1], p[2], n, cin, h, w, cout, k, scale);
            yield return new("conv2d_forward", size, [Normal(xs, 16), Normal(ws, 17)], [ys], forward, Product, cin * k * k, forward);
            // With the epilogue (bias, leaky ReLU); for TF32 the magnitude adds |b| (the bias alone on absolute values).
            yield return new("conv2d_forward", $"{size}, bias and leaky ReLU", [Normal(xs, 16), Normal(ws, 17), Normal(cout, 19)], [ys],
                (b, p) => b.Conv2dForward(p[0], p[1], p[3], n, cin, h, w, cout, k, scale, p[2], 0.2f), Product, cin * k * k,
                (b, p) => b.Conv2dForward(p[0], p[1], p[3], n, cin, h, w, cout, k, scale, p[2], 1f));
            // The generator's layer with its pixel norm (z and the kept factors).
            yield return new("conv2d_forward_pixelnorm", $"{size}, bias, leaky ReLU and pixel norm", [Normal(xs, 16), Normal(ws, 17), Normal(cout, 19)],
                [ys, (long)n * h * w], (b, p) => b.Conv2dForwardPixelNorm(p[0], p[1], p[3], p[4], n, cin, h, w, cout, k, scale, p[2], 0.2f, 1e-8f), Product,
                Unfused: (b, p) =>
                {
                    b.Conv2dForward(p[0], p[1], p[3], n, cin, h, w, cout, k, scale, p[2], 0.2f);
                    b.PixelNormForward(p[3], p[3], n, cout, h * w, 1e-8f, p[4]);
                });
            yield return new("conv2d_backward_input", size, [Normal(ys, 18), Normal(ws, 17)], [xs], input, Product, cout * k * k, input);
            yield return new("conv2d_backward_weight", size, [Normal(xs, 16), Normal(ys, 18)], [ws], weight, Product, (long)n * h * w, weight);
        }

        // Resampling and channel copies.
        foreach (var (planes, h, w) in new[] { (3, 4, 6), (96, 32, 32) })
        {
            string size = $"{planes}x{h}x{w}";
            yield return new("upsample2x_nearest", size, [Normal(planes * h * w, 19)], [4L * planes * h * w], (b, p) => b.Upsample2x(p[0], p[1], planes, h, w, 1f), 0);
            yield return new("avgpool2x", size, [Normal(planes * h * w, 20)], [(long)planes * h * w / 4], (b, p) => b.AvgPool2x(p[0], p[1], planes, h, w, 1f), Elementwise);
        }
        {
            const int samples = 4, plane = 25;
            yield return new("copy_channels", "4 samples, 3 of 5 channels into 7", [Normal(samples * 5 * plane, 21), Normal(samples * 7 * plane, 22)], [],
                (b, p) => b.CopyChannels(p[0], 5, 1, p[1], 7, 2, 3, samples, plane), 0);
        }

        // The GAN's normalizations and the gradient penalty.
        foreach (var (n, c, plane) in new[] { (4, 3, 5), (16, 128, 64) })
        {
            long len = (long)n * c * plane;
            string size = $"{n}x{c}x{plane}";
            yield return new("pixelnorm_forward", size, [Normal(len, 23)], [len], (b, p) => b.PixelNormForward(p[0], p[1], n, c, plane, 1e-8f), Reduction);
            yield return new("pixelnorm_backward", size, [Normal(len, 23), Normal(len, 24)], [len], (b, p) => b.PixelNormBackward(p[0], p[1], p[2], n, c, plane, 1e-8f), Reduction);
            // The layer's backward from z (unit mean square per pixel, as a pixel norm leaves it) and factors around 1.
            yield return new("pixelnorm_leaky_relu_backward", size, [Normal(len, 23), Uniform((long)n * plane, 28, 0.5f, 2f), Normal(len, 24)], [len, c],
                (b, p) => b.PixelNormLeakyReluBackward(p[0], p[1], p[2], p[3], p[4], n, c, plane, 0.2f), Reduction);
            long outLen = (long)n * (c + 1) * plane;
            yield return new("minibatch_stddev_forward", size, [Normal(len, 25)], [outLen], (b, p) => b.MinibatchStdDevForward(p[0], p[1], n, c, plane, 4, 1e-8f), Reduction);
            yield return new("minibatch_stddev_backward", size, [Normal(len, 25), Normal(outLen, 26)], [len], (b, p) => b.MinibatchStdDevBackward(p[0], p[1], p[2], n, c, plane, 4, 1e-8f), Reduction);
            int inner = c * plane;
            yield return new("gradient_penalty_forward", size, [Normal(len, 27)], [n, n], (b, p) => b.GradientPenaltyForward(p[0], p[1], p[2], n, inner, 1f), Reduction);
        }
        {
            const int samples = 6, inner = 1000;
            var g = Normal(samples * inner, 28);
            var norm = new float[samples];
            for (int s = 0; s < samples; s++)
            {
                double sum = 0;
                for (int i = 0; i < inner; i++) sum += (double)g[s * inner + i] * g[s * inner + i];
                norm[s] = (float)Math.Sqrt(sum);
            }
            yield return new("gradient_penalty_backward", $"{samples}x{inner}", [g, norm, Normal(samples, 29)], [samples * inner],
                (b, p) => b.GradientPenaltyBackward(p[0], p[1], p[2], p[3], samples, inner, 1f), Reduction);
        }
        foreach (long n in new long[] { 1000, 300_001 })
        {
            var x = Normal(n, 30);
            x[n / 3] = float.NaN;
            x[n / 2] = float.PositiveInfinity;
            x[n - 1] = float.NegativeInfinity;
            // The count travels as a float, exact below 2^24.
            // The counter starts at 5 (as a 64-bit integer in two floats): the kernel adds to it.
            float[] five = [BitConverter.Int32BitsToSingle(5), 0f];
            yield return new("count_nonfinite", $"n={n}, 3 non-finite", [x, five], [], (b, p) => b.CountNonFinite(p[0], n, p[1]), 0);
        }
    }
}
