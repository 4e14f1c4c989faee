using RawGan.Engine.Backends;

namespace RawGan.Engine.Autograd;

// Fused ops. Each runs one kernel forward and one kernel backward (a convolution layer: one
// forward, its bias backward and the convolution's two adjoints), and keeps beside it a
// reference written with the primitive ops. The reference serves twice: tests compare the fused
// kernels against it, and when a backward pass is itself being recorded (createGraph, i.e. a
// second derivative is coming), the fused op's gradient is taken through the reference instead,
// so that it is differentiable again. A first-order backward never pays for that.
public static partial class Ops
{
    /// <summary>
    /// The vector-Jacobian product of <paramref name="reference"/> at x, recorded on the tape:
    /// the backward of a fused op when the backward pass must itself be differentiable. The
    /// reference reads the op's arguments from the node (a static lambda: nothing is allocated).
    /// </summary>
    private static Tensor RecordedVjp(Func<Node, Tensor, Tensor> reference, Node node, Tensor x, Tensor g) =>
        Tape.Grad(reference(node, x), x, g, createGraph: true);

    // ------------------------------------------------------------------ bias and leaky ReLU

    /// <summary>
    /// leaky_relu(x + b, slope) with one bias per channel (x [N, C] or [N, C, ...], b [C]): a layer's
    /// bias and activation in one pass forward and one backward (the mask and the bias gradient),
    /// instead of two each way. Slope 1 is the bias alone. The backward reads the mask from the
    /// output, which has the sign of x + b because the slope is positive.
    /// </summary>
    public static Tensor BiasLeakyRelu(Tensor x, Tensor b, float slope = 0.2f)
    {
        var backend = SameBackend("BiasLeakyRelu", x, b);
        var (n, c, plane) = ChannelLayout("BiasLeakyRelu", x);
        if (b.Shape != new Shape(c)) throw new ArgumentException($"BiasLeakyRelu: bias {b.Describe()} is not one value per channel of {x.Describe()}");
        if (!(slope > 0)) throw new ArgumentException($"BiasLeakyRelu: the slope must be positive (the backward reads the mask from the output), got {slope}");
        var y = Tensor.Empty(backend, x.Shape);
        backend.BiasLeakyRelu(x.Buffer, b.Buffer, y.Buffer, n, c, plane, slope);
        if (Recording(x, b))
        {
            y.GradFn = Node.Record("BiasLeakyRelu", x, b, y, static (node, g, gi) =>
            {
                var (x, b, y) = (node.Inputs[0], node.Inputs[1], node.Output);
                if (Tape.IsRecording)
                {
                    // Differentiable again: the masked multiply, and its sum over all but the channels.
                    var masked = LeakyReluMask(y, g, node.Slope);
                    if (node.Wants(1)) gi[1] = BiasLeakyReluReferenceSum(masked, b.Shape);
                    if (node.Wants(0)) gi[0] = masked;
                    return;
                }
                var (n, c, plane) = ChannelLayout("BiasLeakyRelu", x);
                var gx = Tensor.Empty(x.Backend, x.Shape);
                var gb = Tensor.Empty(x.Backend, b.Shape);
                x.Backend.BiasLeakyReluBackward(y.Buffer, g.Buffer, gx.Buffer, gb.Buffer, n, c, plane, node.Slope);
                // An unwanted one stays in the scope like any temporary (disposing it early would cost
                // a recycling scope its reuse of the tensor object).
                if (node.Wants(0)) gi[0] = gx;
                if (node.Wants(1)) gi[1] = gb;
            }).With(slope: slope);
        }
        return y;
    }

    /// <summary>leaky_relu(x + b) from primitive ops: the bias broadcast over everything but the channels.</summary>
    public static Tensor BiasLeakyReluReference(Tensor x, Tensor b, float slope = 0.2f) =>
        LeakyRelu(Add(x, Reshape(b, ChannelsThenOnes(x.Shape.Rank, b.Shape[0]))), slope);

    /// <summary>g [N, C, ...] summed to one value per channel, [C].</summary>
    private static Tensor BiasLeakyReluReferenceSum(Tensor g, Shape bias) =>
        Reshape(SumTo(g, ChannelsThenOnes(g.Shape.Rank, bias[0])), bias);

    /// <summary>[c, 1, ..., 1] of rank - 1 dimensions: a per-channel value broadcast against [N, C, ...].</summary>
    private static Shape ChannelsThenOnes(int rank, int c)
    {
        Span<int> d = stackalloc int[rank - 1];
        d.Fill(1);
        d[0] = c;
        return new Shape(d);
    }

    // ------------------------------------------------------------------ a convolution layer

    /// <summary>
    /// leaky_relu(conv(x, scale * w) + b, slope), x [N, Cin, H, W], w [Cout, Cin, k, k], b [Cout]: a
    /// convolution layer whose bias and activation are folded into the convolution's output pass
    /// (conv2d_forward with its epilogue), one kernel forward where <see cref="Conv2d"/> then
    /// <see cref="BiasLeakyRelu"/> take two. Slope 1 is the convolution and its bias alone.
    /// Backward: the mask and the bias gradient in one pass over the output (bias_leaky_relu_backward,
    /// the mask read from y as in <see cref="BiasLeakyRelu"/>), then the convolution's two adjoints of
    /// that masked gradient. When the backward is itself recorded, the same steps run as
    /// differentiable ops (the masked multiply, its sum over all but the channels, ConvInputGrad and
    /// ConvWeightGrad), as in <see cref="Conv2dBiasLeakyReluReference"/>.
    /// </summary>
    public static Tensor Conv2dBiasLeakyRelu(Tensor x, Tensor w, float scale, Tensor b, float slope = 0.2f)
    {
        var (backend, n, cin, h, wd, cout, k) = LayerSizes("Conv2dBiasLeakyRelu", x, w, b, slope);
        var y = Tensor.Empty(backend, new Shape(n, cout, h, wd));
        backend.Conv2dForward(x.Buffer, w.Buffer, y.Buffer, n, cin, h, wd, cout, k, scale, b.Buffer, slope);
        if (Recording(x, w, b))
        {
            y.GradFn = Node.Record("Conv2dBiasLeakyRelu", x, w, b, y, static (node, g, gi) =>
            {
                var (x, w, b, y) = (node.Inputs[0], node.Inputs[1], node.Inputs[2], node.Output);
                Tensor gz;   // the gradient before the activation and the bias: masked by the sign of y
                if (Tape.IsRecording)
                {
                    // Differentiable again: the masked multiply, and its sum over all but the channels.
                    gz = LeakyReluMask(y, g, node.Slope);
                    if (node.Wants(2)) gi[2] = BiasLeakyReluReferenceSum(gz, b.Shape);
                }
                else
                {
                    var (n, c, plane) = ChannelLayout("Conv2dBiasLeakyRelu", y);
                    gz = Tensor.Empty(y.Backend, y.Shape);
                    var gb = Tensor.Empty(y.Backend, b.Shape);
                    y.Backend.BiasLeakyReluBackward(y.Buffer, g.Buffer, gz.Buffer, gb.Buffer, n, c, plane, node.Slope);
                    if (node.Wants(2)) gi[2] = gb;
                }
                if (node.Wants(0)) gi[0] = ConvInputGrad(gz, w, x.Shape, node.Scale);
                if (node.Wants(1)) gi[1] = ConvWeightGrad(x, gz, w.Shape, node.Scale);
            }).With(scale: scale, slope: slope);
        }
        return y;
    }

    /// <summary>The checks and sizes of a convolution layer's arguments (one backend, a bias per
    /// output channel, a positive slope: the backward reads the mask from the output).</summary>
    private static (IBackend backend, int n, int cin, int h, int wd, int cout, int k) LayerSizes(string op, Tensor x, Tensor w, Tensor b, float slope)
    {
        var backend = SameBackend(op, x, w);
        SameBackend(op, x, b);
        var (n, cin, h, wd, cout, k) = ConvSizes(op, x.Shape, w.Shape);
        if (b.Shape != new Shape(cout)) throw new ArgumentException($"{op}: bias {b.Describe()} is not one value per output channel of weight {w.Describe()}");
        if (!(slope > 0)) throw new ArgumentException($"{op}: the slope must be positive (the backward reads the mask from the output), got {slope}");
        return (backend, n, cin, h, wd, cout, k);
    }

    /// <summary>The layer from primitive ops: leaky_relu(conv(x) + b) as a convolution, a broadcast add and leaky ReLU.</summary>
    public static Tensor Conv2dBiasLeakyReluReference(Tensor x, Tensor w, float scale, Tensor b, float slope = 0.2f) =>
        BiasLeakyReluReference(Conv2d(x, w, scale), b, slope);

    /// <summary>
    /// pixel_norm(leaky_relu(conv(x, scale * w) + b, slope)): a generator layer with the pixel norm
    /// that follows each of its convolutions (ProGAN 4.2), one backend call forward
    /// (<c>Conv2dForwardPixelNorm</c>: on a GPU the norm is taken in the convolution's output store
    /// where one block holds all of a pixel's channels) and one pass backward for the norm, the mask
    /// and the bias gradient's input (<c>PixelNormLeakyReluBackward</c>), instead of a pass each for
    /// the norm and for the mask. Only z and the per-pixel factor 1 / sqrt(mean_c v^2 + eps) are kept
    /// (the pre-norm activation v is never stored). When the backward is itself recorded it is taken
    /// through <see cref="Conv2dBiasLeakyReluPixelNormReference"/>, so that it is differentiable again.
    /// </summary>
    public static Tensor Conv2dBiasLeakyReluPixelNorm(Tensor x, Tensor w, float scale, Tensor b, float slope = 0.2f, float eps = NormEpsilon)
    {
        var (backend, n, cin, h, wd, cout, k) = LayerSizes("Conv2dBiasLeakyReluPixelNorm", x, w, b, slope);
        var z = Tensor.Empty(backend, new Shape(n, cout, h, wd));
        var inv = Tensor.Empty(backend, new Shape(n, h, wd));
        backend.Conv2dForwardPixelNorm(x.Buffer, w.Buffer, z.Buffer, inv.Buffer, n, cin, h, wd, cout, k, scale, b.Buffer, slope, eps);
        if (!Recording(x, w, b)) return z;
        z.GradFn = Node.Record("Conv2dBiasLeakyReluPixelNorm", x, w, b, z, static (node, g, gi) =>
        {
            var (x, w, b, z) = (node.Inputs[0], node.Inputs[1], node.Inputs[2], node.Output);
            if (Tape.IsRecording)
            {
                DifferentiableLayerVjp(node, g, gi);
                return;
            }
            var (n, c, plane) = ChannelLayout("Conv2dBiasLeakyReluPixelNorm", z);
            var ga = Tensor.Empty(z.Backend, z.Shape);   // the gradient before the bias and the activation
            var gb = Tensor.Empty(z.Backend, b.Shape);
            z.Backend.PixelNormLeakyReluBackward(z.Buffer, node.Saved!.Buffer, g.Buffer, ga.Buffer, gb.Buffer, n, c, plane, node.Slope);
            // An unwanted bias gradient stays in the scope like any temporary.
            if (node.Wants(2)) gi[2] = gb;
            if (node.Wants(0)) gi[0] = ConvInputGrad(ga, w, x.Shape, node.Scale);
            if (node.Wants(1)) gi[1] = ConvWeightGrad(x, ga, w.Shape, node.Scale);
        }).With(scale: scale, slope: slope, epsilon: eps, saved: inv);
        return z;
    }

    /// <summary>The layer from primitive ops: the convolution layer, then pixel norm written out (mean, rsqrt, multiply).</summary>
    public static Tensor Conv2dBiasLeakyReluPixelNormReference(Tensor x, Tensor w, float scale, Tensor b, float slope = 0.2f, float eps = NormEpsilon) =>
        PixelNormReference(Conv2dBiasLeakyReluReference(x, w, scale, b, slope), eps);

    /// <summary>The layer's vector-Jacobian product recorded on the tape (a second derivative is
    /// coming): the reference recomputed from the node's inputs and differentiated with createGraph,
    /// for the inputs that want a gradient.</summary>
    private static void DifferentiableLayerVjp(Node node, Tensor g, Tensor?[] gi)
    {
        var (x, w, b) = (node.Inputs[0], node.Inputs[1], node.Inputs[2]);
        var y = Conv2dBiasLeakyReluPixelNormReference(x, w, node.Scale, b, node.Slope, node.Epsilon);
        var wanted = new List<Tensor>(3);
        var slots = new List<int>(3);
        for (int i = 0; i < 3; i++)
            if (node.Wants(i)) { wanted.Add(node.Inputs[i]); slots.Add(i); }
        var grads = Tape.Grad([y], wanted, [g], createGraph: true);
        for (int i = 0; i < slots.Count; i++) gi[slots[i]] = grads[i];
    }

    // ------------------------------------------------------------------ pixel norm

    /// <summary>Epsilon inside pixel norm and minibatch stddev (1e-8, as in ProGAN's official code).</summary>
    public const float NormEpsilon = 1e-8f;

    /// <summary>
    /// Pixelwise feature normalization (ProGAN section 4.2): b = a / sqrt(mean over channels of
    /// a^2 + eps), separately at each pixel of each sample. x is [N, C] or [N, C, H, W].
    /// </summary>
    public static Tensor PixelNorm(Tensor x, float eps = NormEpsilon)
    {
        var (n, c, plane) = ChannelLayout("PixelNorm", x);
        var y = Tensor.Empty(x.Backend, x.Shape);
        x.Backend.PixelNormForward(x.Buffer, y.Buffer, n, c, plane, eps);
        if (Recording(x))
        {
            y.GradFn = Node.Record("PixelNorm", x, y, static (node, g, gi) =>
            {
                var x = node.Inputs[0];
                float eps = node.Epsilon;
                if (Tape.IsRecording)
                {
                    gi[0] = RecordedVjp(static (node, v) => PixelNormReference(v, node.Epsilon), node, x, g);
                    return;
                }
                var (n, c, plane) = ChannelLayout("PixelNorm", x);
                var gx = Tensor.Empty(x.Backend, x.Shape);
                x.Backend.PixelNormBackward(x.Buffer, g.Buffer, gx.Buffer, n, c, plane, eps);
                gi[0] = gx;
            }).With(epsilon: eps);
        }
        return y;
    }

    /// <summary>Pixel norm from primitive ops: x * rsqrt(mean_c(x^2) + eps).</summary>
    public static Tensor PixelNormReference(Tensor x, float eps = NormEpsilon) =>
        Mul(x, Rsqrt(AddScalar(Mean(Square(x), [1], keepDims: true), eps)));

    // ------------------------------------------------------------------ minibatch standard deviation

    /// <summary>The group size actually used for a batch of <paramref name="n"/>: min(groupSize, n), which must divide n.</summary>
    public static int MinibatchGroupSize(int n, int groupSize, string? tensor = null)
    {
        if (groupSize < 1) throw new ArgumentException($"MinibatchStdDev: group size must be at least 1, got {groupSize}");
        int g = Math.Min(groupSize, n);
        if (g > 0 && n % g != 0)
            throw new ArgumentException($"MinibatchStdDev: batch {n}{(tensor == null ? "" : $" of {tensor}")} is not divisible by the group size {g}; use a batch that is a multiple of {g}");
        return g;
    }

    /// <summary>The group size for <paramref name="x"/>, naming it only if there is an error (a description is a string to build).</summary>
    private static int MinibatchGroupSize(Tensor x, int n, int groupSize) =>
        groupSize >= 1 && n % Math.Max(1, Math.Min(groupSize, n)) == 0 ? Math.Min(groupSize, n) : MinibatchGroupSize(n, groupSize, x.Describe());

    /// <summary>
    /// Minibatch standard deviation (ProGAN section 3, official formula). With G = min(groupSize, N)
    /// and M = N / G groups, sample s belongs to group s mod M (groups are strided). For each group:
    /// the population standard deviation over its G members of every feature (c, h, w), plus eps
    /// inside the root, averaged over the features: one number, appended to each member as a last
    /// channel. A batch of one gives sqrt(eps), never NaN. x [N, C, H, W] -> [N, C + 1, H, W].
    /// </summary>
    public static Tensor MinibatchStdDev(Tensor x, int groupSize = 4, float eps = NormEpsilon)
    {
        var (n, c, h, w) = Nchw("MinibatchStdDev", x);
        int g = MinibatchGroupSize(x, n, groupSize);
        var y = Tensor.Empty(x.Backend, new Shape(n, c + 1, h, w));
        x.Backend.MinibatchStdDevForward(x.Buffer, y.Buffer, n, c, h * w, g, eps);
        if (Recording(x))
        {
            y.GradFn = Node.Record("MinibatchStdDev", x, y, static (node, gy, gi) =>
            {
                var x = node.Inputs[0];
                int group = node.GroupSize;
                float eps = node.Epsilon;
                if (Tape.IsRecording)
                {
                    gi[0] = RecordedVjp(static (node, v) => MinibatchStdDevReference(v, node.GroupSize, node.Epsilon), node, x, gy);
                    return;
                }
                var (n, c, h, w) = Nchw("MinibatchStdDev", x);
                var gx = Tensor.Empty(x.Backend, x.Shape);
                x.Backend.MinibatchStdDevBackward(x.Buffer, gy.Buffer, gx.Buffer, n, c, h * w, group, eps);
                gi[0] = gx;
            }).With(groupSize: g, epsilon: eps);
        }
        return y;
    }

    /// <summary>Minibatch stddev from primitive ops (reshape, mean, square, sqrt, broadcast, concat).</summary>
    public static Tensor MinibatchStdDevReference(Tensor x, int groupSize = 4, float eps = NormEpsilon)
    {
        var (n, c, h, w) = Nchw("MinibatchStdDev", x);
        int g = MinibatchGroupSize(x, n, groupSize);
        int m = n / g;
        // Sample s = k * M + j is member k of group j, so [N, ...] reshapes to [G, M, features].
        var r = Reshape(x, new Shape(g, m, c * h * w));
        var centred = Sub(r, Mean(r, [0], keepDims: true));
        var std = Sqrt(AddScalar(Mean(Square(centred), [0], keepDims: true), eps));   // [1, M, F]
        var stat = Mean(std, [2], keepDims: true);                                      // [1, M, 1]
        var channel = Reshape(BroadcastTo(stat, new Shape(g, m, h * w)), new Shape(n, 1, h, w));
        return Concat(x, channel);
    }

    // ------------------------------------------------------------------ WGAN-GP penalty

    /// <summary>
    /// The gradient-norm penalty per sample, as in WGAN-GP (Gulrajani et al. 2017):
    /// (||g[s]||_2 - target)^2, the norm taken over all of sample s (C*H*W values), where g is
    /// typically a gradient taken with createGraph. Returns [N].
    /// </summary>
    public static Tensor GradientPenalty(Tensor g, float target = 1f)
    {
        if (g.Shape.Rank < 1 || g.Shape[0] == 0) throw new ArgumentException($"GradientPenalty: needs a batch, got {g.Describe()}");
        int samples = g.Shape[0];
        int inner = (int)(g.Length / samples);
        var norm = Tensor.Empty(g.Backend, new Shape(samples));
        var penalty = Tensor.Empty(g.Backend, new Shape(samples));
        g.Backend.GradientPenaltyForward(g.Buffer, norm.Buffer, penalty.Buffer, samples, inner, target);
        if (Recording(g))
        {
            penalty.GradFn = Node.Record("GradientPenalty", g, penalty, static (node, gp, gi) =>
            {
                var g = node.Inputs[0];
                float target = node.Target;
                if (Tape.IsRecording)
                {
                    gi[0] = RecordedVjp(static (node, v) => GradientPenaltyReference(v, node.Target), node, g, gp);
                    return;
                }
                int samples = g.Shape[0];
                var gg = Tensor.Empty(g.Backend, g.Shape);
                g.Backend.GradientPenaltyBackward(g.Buffer, node.Saved!.Buffer, gp.Buffer, gg.Buffer, samples, (int)(g.Length / samples), target);
                gi[0] = gg;
            }).With(target: target, saved: norm);
        }
        return penalty;
    }

    /// <summary>The penalty from primitive ops: (sqrt(sum of squares per sample) - target)^2.</summary>
    public static Tensor GradientPenaltyReference(Tensor g, float target = 1f)
    {
        ReadOnlySpan<int> allButBatch = [1, 2, 3];
        var norm = g.Shape.Rank == 1 ? Sqrt(Square(g)) : Sqrt(Sum(Square(g), allButBatch[..(g.Shape.Rank - 1)]));
        return Square(AddScalar(norm, -target));
    }
}
