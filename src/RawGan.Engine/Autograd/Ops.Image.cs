namespace RawGan.Engine.Autograd;

// Image ops: convolution and its two adjoints, resampling, channel concatenation, fade-in lerps,
// (the fused ops, pixel norm, minibatch stddev and the gradient-norm penalty, are in Ops.Fused.cs).
public static partial class Ops
{
    private static (int n, int c, int h, int w) Nchw(string op, Tensor x)
    {
        if (x.Shape.Rank != 4) throw new ArgumentException($"{op}: expected an NCHW tensor, got {x.Describe()}");
        return (x.Shape[0], x.Shape[1], x.Shape[2], x.Shape[3]);
    }

    // ------------------------------------------------------------------ convolution

    // The three products below are one trilinear form T(x, w, gy) = scale * sum gy * w * x-patch
    // seen from each of its arguments, so each one's gradient is made of the other two:
    //   y  = Conv2d(x, w):           dx = ConvInputGrad(g, w),  dw = ConvWeightGrad(x, g)
    //   gx = ConvInputGrad(gy, w):   dgy = Conv2d(G, w),        dw = ConvWeightGrad(G, gy)
    //   gw = ConvWeightGrad(x, gy):  dx = ConvInputGrad(gy, G), dgy = Conv2d(x, G)

    private static (int n, int cin, int h, int w, int cout, int k) ConvSizes(string op, Shape x, Shape w)
    {
        if (x.Rank != 4 || w.Rank != 4)
            throw new ArgumentException($"{op}: expected input [N, Cin, H, W] and weight [Cout, Cin, k, k], got {x} and {w}");
        if (w[2] != w[3] || w[2] % 2 == 0)
            throw new ArgumentException($"{op}: the kernel must be square with odd size, got weight {w}");
        if (x[1] != w[1])
            throw new ArgumentException($"{op}: input {x} has {x[1]} channels but weight {w} expects {w[1]}");
        return (x[0], x[1], x[2], x[3], w[0], w[2]);
    }

    /// <summary>
    /// Stride-1 'same' convolution y = conv(x, scale * w), x [N, Cin, H, W], w [Cout, Cin, k, k].
    /// With scale = gain / sqrt(Cin k k) this is ProGAN's equalized-learning-rate conv (section 4.1):
    /// the multiplier is applied inside the kernel, never as a separate pass over w.
    /// </summary>
    public static Tensor Conv2d(Tensor x, Tensor w, float scale = 1f)
    {
        var backend = SameBackend("Conv2d", x, w);
        var (n, cin, h, wd, cout, k) = ConvSizes("Conv2d", x.Shape, w.Shape);
        var y = Tensor.Empty(backend, new Shape(n, cout, h, wd));
        backend.Conv2dForward(x.Buffer, w.Buffer, y.Buffer, n, cin, h, wd, cout, k, scale);
        if (Recording(x, w))
        {
            y.GradFn = Node.Record("Conv2d", x, w, y, static (node, g, gi) =>
            {
                var (x, w) = (node.Inputs[0], node.Inputs[1]);
                if (node.Wants(0)) gi[0] = ConvInputGrad(g, w, x.Shape, node.Scale);
                if (node.Wants(1)) gi[1] = ConvWeightGrad(x, g, w.Shape, node.Scale);
            }).With(scale: scale);
        }
        return y;
    }

    /// <summary>The gradient of Conv2d with respect to its input: a transposed convolution of gy.</summary>
    public static Tensor ConvInputGrad(Tensor gy, Tensor w, Shape xShape, float scale = 1f)
    {
        var backend = SameBackend("ConvInputGrad", gy, w);
        var (n, cin, h, wd, cout, k) = ConvSizes("ConvInputGrad", xShape, w.Shape);
        if (gy.Shape != new Shape(n, cout, h, wd))
            throw new ArgumentException($"ConvInputGrad: output gradient {gy.Describe()} does not match input {xShape} and weight {w.Describe()}");
        var gx = Tensor.Empty(backend, xShape);
        backend.Conv2dBackwardInput(gy.Buffer, w.Buffer, gx.Buffer, n, cin, h, wd, cout, k, scale);
        if (Recording(gy, w))
        {
            gx.GradFn = Node.Record("ConvInputGrad", gy, w, gx, static (node, g, gi) =>
            {
                var (gy, w) = (node.Inputs[0], node.Inputs[1]);
                if (node.Wants(0)) gi[0] = Conv2d(g, w, node.Scale);
                if (node.Wants(1)) gi[1] = ConvWeightGrad(g, gy, w.Shape, node.Scale);
            }).With(scale: scale);
        }
        return gx;
    }

    /// <summary>The gradient of Conv2d with respect to its weight: a correlation of x with gy.</summary>
    public static Tensor ConvWeightGrad(Tensor x, Tensor gy, Shape wShape, float scale = 1f)
    {
        var backend = SameBackend("ConvWeightGrad", x, gy);
        var (n, cin, h, wd, cout, k) = ConvSizes("ConvWeightGrad", x.Shape, wShape);
        if (gy.Shape != new Shape(n, cout, h, wd))
            throw new ArgumentException($"ConvWeightGrad: output gradient {gy.Describe()} does not match input {x.Describe()} and weight {wShape}");
        var gw = Tensor.Empty(backend, wShape);
        backend.Conv2dBackwardWeight(x.Buffer, gy.Buffer, gw.Buffer, n, cin, h, wd, cout, k, scale);
        if (Recording(x, gy))
        {
            gw.GradFn = Node.Record("ConvWeightGrad", x, gy, gw, static (node, g, gi) =>
            {
                var (x, gy) = (node.Inputs[0], node.Inputs[1]);
                if (node.Wants(0)) gi[0] = ConvInputGrad(gy, g, x.Shape, node.Scale);
                if (node.Wants(1)) gi[1] = Conv2d(x, g, node.Scale);
            }).With(scale: scale);
        }
        return gw;
    }

    // ------------------------------------------------------------------ resampling

    /// <summary>Nearest-neighbour 2x upsampling (times <paramref name="gain"/>). Its adjoint is 2x2 sum pooling.</summary>
    public static Tensor Upsample2x(Tensor x, float gain = 1f)
    {
        var (n, c, h, w) = Nchw("Upsample2x", x);
        var y = Tensor.Empty(x.Backend, new Shape(n, c, 2 * h, 2 * w));
        x.Backend.Upsample2x(x.Buffer, y.Buffer, n * c, h, w, gain);
        if (Recording(x)) y.GradFn = Node.Record("Upsample2x", x, y, static (node, g, gi) => gi[0] = AvgPool2x(g, 4f * node.Scale)).With(scale: gain);
        return y;
    }

    /// <summary>2x2 average pooling (times <paramref name="gain"/>); H and W must be even. Its adjoint is upsampling / 4.</summary>
    public static Tensor AvgPool2x(Tensor x, float gain = 1f)
    {
        var (n, c, h, w) = Nchw("AvgPool2x", x);
        if (h % 2 != 0 || w % 2 != 0)
            throw new ArgumentException($"AvgPool2x: height and width of {x.Describe()} must be even");
        var y = Tensor.Empty(x.Backend, new Shape(n, c, h / 2, w / 2));
        x.Backend.AvgPool2x(x.Buffer, y.Buffer, n * c, h, w, gain);
        if (Recording(x)) y.GradFn = Node.Record("AvgPool2x", x, y, static (node, g, gi) => gi[0] = Upsample2x(g, 0.25f * node.Scale)).With(scale: gain);
        return y;
    }

    // ------------------------------------------------------------------ channels

    private static (int samples, int channels, int plane) ChannelLayout(string op, Tensor x)
    {
        if (x.Shape.Rank < 2) throw new ArgumentException($"{op}: needs at least [N, C], got {x.Describe()}");
        int plane = 1;
        for (int i = 2; i < x.Shape.Rank; i++) plane *= x.Shape[i];
        return (x.Shape[0], x.Shape[1], plane);
    }

    private static Shape WithChannels(Shape s, int c)
    {
        Span<int> d = stackalloc int[s.Rank];
        for (int i = 0; i < s.Rank; i++) d[i] = i == 1 ? c : s[i];
        return new Shape(d);
    }

    /// <summary>Concatenation along axis 1 (channels). Every part has the same other dimensions.</summary>
    public static Tensor Concat(params ReadOnlySpan<Tensor> parts)
    {
        if (parts.Length == 0) throw new ArgumentException("Concat: nothing to concatenate");
        var first = parts[0];
        int total = 0;
        foreach (var p in parts)
        {
            SameBackend("Concat", first, p);
            if (p.Shape.Rank != first.Shape.Rank || WithChannels(p.Shape, 1) != WithChannels(first.Shape, 1))
                throw new ArgumentException($"Concat: {p.Describe()} does not match {first.Describe()} outside the channel axis");
            total += p.Shape[1];
        }
        var y = Tensor.Empty(first.Backend, WithChannels(first.Shape, total));
        var (samples, _, plane) = ChannelLayout("Concat", first);
        int offset = 0;
        bool record = false;
        foreach (var p in parts)
        {
            first.Backend.CopyChannels(p.Buffer, p.Shape[1], 0, y.Buffer, total, offset, p.Shape[1], samples, plane);
            offset += p.Shape[1];
            record |= Recording(p);
        }
        if (record)
        {
            // Two parts (the usual case: minibatch stddev appends a channel) take a pooled node.
            y.GradFn = parts.Length == 2 ? Node.Record("Concat", parts[0], parts[1], y, ConcatBackward) : new Node("Concat", parts.ToArray(), y, ConcatBackward);
        }
        return y;
    }

    private static readonly BackwardRule ConcatBackward = static (node, g, gi) =>
    {
        int start = 0;
        for (int i = 0; i < node.Inputs.Length; i++)
        {
            int c = node.Inputs[i].Shape[1];
            if (node.Wants(i)) gi[i] = SliceChannels(g, start, c);
            start += c;
        }
    };

    /// <summary>Channels [start, start + count) of x. Adjoint of <see cref="PadChannels"/>.</summary>
    public static Tensor SliceChannels(Tensor x, int start, int count)
    {
        var (samples, channels, plane) = ChannelLayout("SliceChannels", x);
        if (start < 0 || count < 0 || start + count > channels)
            throw new ArgumentException($"SliceChannels: channels [{start}, {start + count}) are outside {x.Describe()}");
        var y = Tensor.Empty(x.Backend, WithChannels(x.Shape, count));
        x.Backend.CopyChannels(x.Buffer, channels, start, y.Buffer, count, 0, count, samples, plane);
        if (Recording(x)) y.GradFn = Node.Record("SliceChannels", x, y,
            static (node, g, gi) => gi[0] = PadChannels(g, node.Start, node.Inputs[0].Shape[1])).With(start: start);
        return y;
    }

    /// <summary>x placed at channel <paramref name="start"/> of a zero tensor with <paramref name="total"/> channels.</summary>
    public static Tensor PadChannels(Tensor x, int start, int total)
    {
        var (samples, channels, plane) = ChannelLayout("PadChannels", x);
        if (start < 0 || start + channels > total)
            throw new ArgumentException($"PadChannels: {x.Describe()} at channel {start} does not fit in {total} channels");
        var y = Tensor.Zeros(x.Backend, WithChannels(x.Shape, total));
        x.Backend.CopyChannels(x.Buffer, channels, 0, y.Buffer, total, start, channels, samples, plane);
        if (Recording(x)) y.GradFn = Node.Record("PadChannels", x, y,
            static (node, g, gi) => gi[0] = SliceChannels(g, node.Start, node.Inputs[0].Shape[1])).With(start: start);
        return y;
    }

    // ------------------------------------------------------------------ interpolation

    /// <summary>a + t (b - a) with one t for all elements: ProGAN's fade-in (t = alpha, section 3).</summary>
    public static Tensor Lerp(Tensor a, Tensor b, float t)
    {
        var backend = SameBackend("Lerp", a, b);
        if (a.Shape != b.Shape) throw new ArgumentException($"Lerp: {a.Describe()} and {b.Describe()} differ");
        var y = Tensor.Empty(backend, a.Shape);
        backend.LerpScalar(a.Buffer, b.Buffer, y.Buffer, a.Length, t);
        if (Recording(a, b))
        {
            y.GradFn = Node.Record("Lerp", a, b, y, static (node, g, gi) =>
            {
                if (node.Wants(0)) gi[0] = Scale(g, 1f - node.T);
                if (node.Wants(1)) gi[1] = Scale(g, node.T);
            }).With(t: t);
        }
        return y;
    }

    /// <summary>
    /// a + t[s] (b - a) with one t per sample s (t has shape [N]), e.g. WGAN-GP's random points
    /// between two batches. t is treated as a constant.
    /// </summary>
    public static Tensor Lerp(Tensor a, Tensor b, Tensor t)
    {
        var backend = SameBackend("Lerp", a, b);
        SameBackend("Lerp", a, t);
        if (a.Shape != b.Shape) throw new ArgumentException($"Lerp: {a.Describe()} and {b.Describe()} differ");
        if (a.Shape.Rank < 1 || t.Shape != new Shape(a.Shape[0]))
            throw new ArgumentException($"Lerp: per-sample t must have shape [{(a.Shape.Rank > 0 ? a.Shape[0] : 0)}], got {t.Describe()}");
        if (t.RequiresGrad) throw new ArgumentException($"Lerp: per-sample t {t.Describe()} is a constant and must not require a gradient");
        var y = Tensor.Empty(backend, a.Shape);
        int samples = a.Shape[0];
        int inner = samples == 0 ? 0 : (int)(a.Length / samples);
        backend.LerpPerSample(a.Buffer, b.Buffer, t.Buffer, y.Buffer, samples, inner);
        if (Recording(a, b))
        {
            y.GradFn = Node.Record("LerpPerSample", a, b, y, static (node, g, gi) =>
            {
                var s = node.Saved!;
                Span<int> dims = stackalloc int[node.Output.Shape.Rank];
                dims.Fill(1);
                dims[0] = s.Shape[0];
                var tb = Reshape(s, new Shape(dims));
                var gb = Mul(g, tb);
                if (node.Wants(1)) gi[1] = gb;
                if (node.Wants(0)) gi[0] = Sub(g, gb);
            }).With(saved: t);
        }
        return y;
    }
}
