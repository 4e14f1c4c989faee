// One ProGAN training iteration in TorchSharp (LibTorch's C# binding), timed: the second peer of
// RawGan's `rawgan bench`, beside bench/pytorch_progan.py. It is that script line for line (same
// network, loss, optimizer, sizes and seed order), so read its docstring for the model; only the
// language differs. A C# user who wants a ProGAN without RawGan would write this.
//
//   bash bench/torchsharp/run.sh --resolution 8 --threads 2            # builds on first use
//   bash bench/torchsharp/run.sh --resolution 8 --iterations 1 --shapes # prints the critic loss's shapes
//
// Options as pytorch_progan.py: --resolution, --batch, --threads, --latent, --fmap-base, --fmap-max,
// --channels, --iterations, --warmup. Its first line gives the parameter counts, which match
// pytorch_progan.py's and `rawgan bench`'s (8x8: G 705,798, D 707,329), and --shapes the shapes
// of the critic's scores, the penalty's gradient and the loss ([16], [16, 3, 8, 8], [] at 8x8).
//
// bench/compare.sh builds and runs it (with the libstdc++ shim it needs on Debian 12: see there).
// The last line printed is `ms_per_iter=<median> images_per_s=<value>`, as `rawgan bench` prints.

using System.Diagnostics;
using System.Globalization;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

static class Program
{
    private const double Eps = 1e-8;
    private static readonly double Sqrt2 = Math.Sqrt(2.0);

    private static int Main(string[] args)
    {
        var o = Options.Parse(args);
        if (o == null) return 2;
        torch.set_num_threads(o.Threads);
        torch.manual_seed(1);
        var g = new Generator(o.Resolution, o.Channels, o.Latent, o.FmapBase, o.FmapMax);
        var d = new Discriminator(o.Resolution, o.Channels, o.FmapBase, o.FmapMax);
        var gs = new Generator(o.Resolution, o.Channels, o.Latent, o.FmapBase, o.FmapMax);
        using (torch.no_grad())
            foreach (var (pe, pg) in gs.Parameters.Zip(g.Parameters)) { pe.copy_(pg); pe.requires_grad = false; }
        var optG = torch.optim.Adam(g.Parameters, lr: 0.001, beta1: 0.0, beta2: 0.99, eps: 1e-8);
        var optD = torch.optim.Adam(d.Parameters, lr: 0.001, beta1: 0.0, beta2: 0.99, eps: 1e-8);
        int n = o.Batch;
        var reals = torch.rand(n, o.Channels, o.Resolution, o.Resolution) * 2 - 1;

        Console.WriteLine(Invariant($"torchsharp {typeof(torch).Assembly.GetName().Version} (libtorch {torch.__version__}): threads {torch.get_num_threads()}; ") +
            Invariant($"{o.Resolution}x{o.Resolution}, batch {n}, latent {o.Latent}, fmap-base {o.FmapBase}, fmap-max {o.FmapMax}; ") +
            Invariant($"G {Count(g.Parameters):N0}, D {Count(d.Parameters):N0} parameters"));

        bool Iteration()
        {
            // Everything an iteration makes is freed at its end (parameters, gradients and the
            // optimizers' moments live outside the scope), as a C# user of TorchSharp does.
            using var scope = torch.NewDisposeScope();
            // Critic step (WGAN-GP with ProGAN's drift term).
            var z = torch.randn(n, o.Latent);
            Tensor fakes;
            using (torch.no_grad()) fakes = g.Forward(z);
            var real = d.Forward(reals).reshape(n);
            var fake = d.Forward(fakes).reshape(n);
            var t = torch.rand(n, 1, 1, 1);
            var xHat = (reals + t * (fakes - reals)).detach().requires_grad_(true);
            // retain_graph: PyTorch's default when create_graph is set; TorchSharp's default is false.
            var grad = torch.autograd.grad([d.Forward(xHat).sum()], [xHat], retain_graph: true, create_graph: true)[0];
            var penalty = (grad.reshape(n, -1).norm(1) - 1.0).pow(2);
            var lossD = (fake - real + 10.0 * penalty + 0.001 * real.pow(2)).mean();
            if (o.Shapes) Console.WriteLine($"shapes: real {Shape(real)} fake {Shape(fake)} grad {Shape(grad)} penalty {Shape(penalty)} loss_d {Shape(lossD)}");
            optD.zero_grad();
            lossD.backward();
            if (!AllFinite(lossD, d.Parameters)) return false;      // the official trainer skips a step with non-finite gradients
            optD.step();
            // Generator step: gradients flow through D to G, but D's weights need none.
            foreach (var p in d.Parameters) p.requires_grad = false;
            var lossG = -d.Forward(g.Forward(torch.randn(n, o.Latent))).mean();
            optG.zero_grad();
            lossG.backward();
            foreach (var p in d.Parameters) p.requires_grad = true;
            if (!AllFinite(lossG, g.Parameters)) return false;
            optG.step();
            // Generator EMA: Gs <- G + 0.999 (Gs - G) = lerp(Gs, G, 0.001).
            using (torch.no_grad())
                foreach (var (pe, pg) in gs.Parameters.Zip(g.Parameters)) pe.lerp_(pg, 1.0 - 0.999);
            return true;
        }

        for (int i = 0; i < o.Warmup; i++) Iteration();
        var times = new List<double>();
        for (int i = 0; i < o.Iterations; i++)
        {
            var sw = Stopwatch.StartNew();
            bool finite = Iteration();
            times.Add(sw.Elapsed.TotalMilliseconds);
            Console.WriteLine(Invariant($"iteration {i + 1}: {times[^1]:F1} ms{(finite ? "" : " (an update was skipped: non-finite)")}"));
        }
        double median = Median(times);
        Console.WriteLine(Invariant($"ms_per_iter={median:F1} images_per_s={n * 1000.0 / median:F2}"));
        return 0;
    }

    /// <summary>The loss and every gradient are finite (what RawGan checks before each update).</summary>
    private static bool AllFinite(Tensor loss, IReadOnlyList<Parameter> parameters)
    {
        if (!double.IsFinite(loss.item<float>())) return false;
        foreach (var p in parameters)
            if (p.grad is { } gr && !torch.isfinite(gr).all().item<bool>()) return false;
        return true;
    }

    private static string Shape(Tensor t) => "[" + string.Join(", ", t.shape) + "]";

    private static long Count(IEnumerable<Parameter> parameters) => parameters.Sum(p => p.numel());

    private static double Median(List<double> values)
    {
        var sorted = values.OrderBy(v => v).ToArray();
        int m = sorted.Length / 2;
        return sorted.Length % 2 == 1 ? sorted[m] : (sorted[m - 1] + sorted[m]) / 2;
    }

    private static string Invariant(FormattableString s) => s.ToString(CultureInfo.InvariantCulture);

    /// <summary>Channels of the block at resolution 2^(stage + 1).</summary>
    internal static int Nf(int stage, int fmapBase, int fmapMax) => Math.Min(fmapBase >> stage, fmapMax);

    /// <summary>x / sqrt(mean over channels of x^2 + 1e-8), per pixel of each sample.</summary>
    internal static Tensor PixelNorm(Tensor x) => x * torch.rsqrt(x.pow(2).mean([1], keepdim: true) + Eps);

    internal static Tensor Lrelu(Tensor x) => F.leaky_relu(x, 0.2);

    /// <summary>Appends one channel: per group (strided, size min(4, N)) the population std of
    /// every feature (+ 1e-8 inside the root), averaged over the features.</summary>
    internal static Tensor MinibatchStddev(Tensor x, int groupSize = 4)
    {
        long n = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3];
        long g = Math.Min(groupSize, n);
        if (n % g != 0) throw new ArgumentException($"batch {n} is not divisible by the minibatch stddev group size {g}");
        long m = n / g;
        var y = x.reshape(g, m, c, h, w);
        y = y - y.mean([0], keepdim: true);
        y = torch.sqrt(y.pow(2).mean([0]) + Eps);        // [M, C, H, W]
        y = y.mean([1, 2, 3]);                           // [M]
        y = y.reshape(1, m, 1, 1, 1).expand(g, m, 1, h, w).reshape(n, 1, h, w);
        return torch.cat([x, y], 1);
    }

    internal sealed class Options
    {
        public int Resolution = 32, Batch = 16, Threads = 2, Latent = 128, FmapBase = 2048, FmapMax = 128, Channels = 3, Iterations = 5, Warmup = 2;
        public bool Shapes;

        public static Options? Parse(string[] args)
        {
            var o = new Options();
            for (int i = 0; i < args.Length; i++)
            {
                if (args[i] == "--shapes") { o.Shapes = true; continue; }
                if (i + 1 >= args.Length || !int.TryParse(args[i + 1], NumberStyles.Integer, CultureInfo.InvariantCulture, out int v))
                    return Fail($"{args[i]} needs an integer");
                switch (args[i++])
                {
                    case "--resolution": o.Resolution = v; break;
                    case "--batch": o.Batch = v; break;
                    case "--threads": o.Threads = v; break;
                    case "--latent": o.Latent = v; break;
                    case "--fmap-base": o.FmapBase = v; break;
                    case "--fmap-max": o.FmapMax = v; break;
                    case "--channels": o.Channels = v; break;
                    case "--iterations": o.Iterations = v; break;
                    case "--warmup": o.Warmup = v; break;
                    default: return Fail($"unknown option {args[i - 1]}");
                }
            }
            if (o.Resolution < 4 || (o.Resolution & (o.Resolution - 1)) != 0) return Fail("--resolution must be a power of two, at least 4");
            if (o.Batch < 1 || o.Batch % Math.Min(4, o.Batch) != 0) return Fail("--batch must be a positive multiple of 4 (or smaller than 4)");
            if (o.Iterations < 1 || o.Warmup < 0) return Fail("--iterations must be at least 1 and --warmup at least 0");
            return o;
        }

        private static Options? Fail(string message)
        {
            Console.Error.WriteLine(message);
            return null;
        }
    }
}

/// <summary>Stride 1, 'same' padding; weight [out, in, k, k] scaled by gain / sqrt(in k k) at every use.</summary>
sealed class EqualizedConv2d
{
    public readonly Parameter Weight, Bias;
    private readonly double _scale;
    private readonly long _padding;

    public EqualizedConv2d(int cin, int cout, int kernel, double gain, List<Parameter> into)
    {
        Weight = new Parameter(torch.randn(cout, cin, kernel, kernel));
        Bias = new Parameter(torch.zeros(cout));
        _scale = gain / Math.Sqrt(cin * kernel * kernel);
        _padding = kernel / 2;
        into.Add(Weight);
        into.Add(Bias);
    }

    public Tensor Forward(Tensor x) => F.conv2d(x, Weight * _scale, Bias, padding: [_padding, _padding]);
}

/// <summary>Weight [out, in] scaled by gain / sqrt(in); the bias may be sized for use after a reshape.</summary>
sealed class EqualizedDense
{
    public readonly Parameter Weight, Bias;
    private readonly double _scale;

    public EqualizedDense(int fin, int fout, double gain, List<Parameter> into, int? biasFeatures = null)
    {
        Weight = new Parameter(torch.randn(fout, fin));
        Bias = new Parameter(torch.zeros(biasFeatures ?? fout));
        _scale = gain / Math.Sqrt(fin);
        into.Add(Weight);
        into.Add(Bias);
    }

    public Tensor ForwardNoBias(Tensor x) => F.linear(x, Weight * _scale);

    public Tensor Forward(Tensor x) => F.linear(x, Weight * _scale, Bias);
}

sealed class Generator
{
    public readonly List<Parameter> Parameters = [];
    private readonly int _maxLevel, _nf1;
    private readonly EqualizedDense _latentDense;
    private readonly EqualizedConv2d _conv4;
    private readonly Dictionary<int, EqualizedConv2d> _toRgb = [];
    private readonly Dictionary<int, (EqualizedConv2d Conv0, EqualizedConv2d Conv1)> _blocks = [];

    public Generator(int resolution, int channels, int latent, int fmapBase, int fmapMax)
    {
        _maxLevel = (int)Math.Log2(resolution);
        int Nf(int s) => Program.Nf(s, fmapBase, fmapMax);
        _nf1 = Nf(1);
        // Made in the order of pytorch_progan.py's Generator, so both draw the same initial weights.
        _latentDense = new EqualizedDense(latent, _nf1 * 16, Math.Sqrt(2.0) / 4, Parameters, biasFeatures: _nf1);
        _conv4 = new EqualizedConv2d(_nf1, _nf1, 3, Math.Sqrt(2.0), Parameters);
        _toRgb[4] = new EqualizedConv2d(_nf1, channels, 1, 1.0, Parameters);
        for (int r = 3; r <= _maxLevel; r++)
        {
            int cin = Nf(r - 2), cout = Nf(r - 1);
            _blocks[1 << r] = (new EqualizedConv2d(cin, cout, 3, Math.Sqrt(2.0), Parameters), new EqualizedConv2d(cout, cout, 3, Math.Sqrt(2.0), Parameters));
            _toRgb[1 << r] = new EqualizedConv2d(cout, channels, 1, 1.0, Parameters);
        }
    }

    public Tensor Forward(Tensor z)
    {
        long n = z.shape[0];
        var x = _latentDense.ForwardNoBias(Program.PixelNorm(z)).reshape(n, _nf1, 4, 4);
        x = Program.PixelNorm(Program.Lrelu(x + _latentDense.Bias.reshape(1, _nf1, 1, 1)));
        x = Program.PixelNorm(Program.Lrelu(_conv4.Forward(x)));
        for (int r = 3; r <= _maxLevel; r++)
        {
            var (conv0, conv1) = _blocks[1 << r];
            x = F.interpolate(x, scale_factor: [2.0, 2.0], mode: InterpolationMode.Nearest);
            x = Program.PixelNorm(Program.Lrelu(conv0.Forward(x)));
            x = Program.PixelNorm(Program.Lrelu(conv1.Forward(x)));
        }
        return _toRgb[1 << _maxLevel].Forward(x);
    }
}

sealed class Discriminator
{
    public readonly List<Parameter> Parameters = [];
    private readonly int _maxLevel, _groupSize;
    private readonly Dictionary<int, EqualizedConv2d> _fromRgb = [];
    private readonly Dictionary<int, (EqualizedConv2d Conv0, EqualizedConv2d Conv1)> _blocks = [];
    private readonly EqualizedConv2d _headConv;
    private readonly EqualizedDense _headDense, _out;

    public Discriminator(int resolution, int channels, int fmapBase, int fmapMax, int groupSize = 4)
    {
        _maxLevel = (int)Math.Log2(resolution);
        _groupSize = groupSize;
        int Nf(int s) => Program.Nf(s, fmapBase, fmapMax);
        for (int r = _maxLevel; r > 2; r--)
        {
            _fromRgb[1 << r] = new EqualizedConv2d(channels, Nf(r - 1), 1, Math.Sqrt(2.0), Parameters);
            _blocks[1 << r] = (new EqualizedConv2d(Nf(r - 1), Nf(r - 1), 3, Math.Sqrt(2.0), Parameters), new EqualizedConv2d(Nf(r - 1), Nf(r - 2), 3, Math.Sqrt(2.0), Parameters));
        }
        int nf1 = Nf(1);
        _fromRgb[4] = new EqualizedConv2d(channels, nf1, 1, Math.Sqrt(2.0), Parameters);
        _headConv = new EqualizedConv2d(nf1 + 1, nf1, 3, Math.Sqrt(2.0), Parameters);
        _headDense = new EqualizedDense(nf1 * 16, Nf(0), Math.Sqrt(2.0), Parameters);
        _out = new EqualizedDense(Nf(0), 1, 1.0, Parameters);
    }

    public Tensor Forward(Tensor images)
    {
        var x = Program.Lrelu(_fromRgb[1 << _maxLevel].Forward(images));
        for (int r = _maxLevel; r > 2; r--)
        {
            var (conv0, conv1) = _blocks[1 << r];
            x = Program.Lrelu(conv0.Forward(x));
            x = F.avg_pool2d(Program.Lrelu(conv1.Forward(x)), 2);
        }
        x = Program.MinibatchStddev(x, _groupSize);
        x = Program.Lrelu(_headConv.Forward(x));
        x = Program.Lrelu(_headDense.Forward(x.reshape(x.shape[0], -1)));
        return _out.Forward(x);
    }
}
