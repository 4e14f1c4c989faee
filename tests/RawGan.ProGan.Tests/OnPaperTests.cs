using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;
using RawGan.Engine;
using RawGan.Engine.Backends;
using RawGan.Engine.Backends.Cuda;
using RawGan.ProGan.Model;
using RawGan.ProGan.Training;
using Xunit.Abstractions;

namespace RawGan.ProGan.Tests;

/// <summary>
/// The per-kernel table of bench/README.md ("On paper: an H100"): one real training iteration of
/// the paper preset at 256x256, batch 16, run through CudaBackend over a driver that launches
/// nothing, so every convolution the step makes is counted by shape (ProfilingBackend), without
/// a GPU and in seconds. For each product and shape: the FLOPs and the bytes one launch must move
/// to and from device memory, the bound that gives on an H100 SXM (compute at 495 TFLOP/s TF32
/// dense or 67 TFLOP/s fp32, memory at 3.35 TB/s; whichever is slower), and the step's total.
/// The test prints the table and checks that bench/README.md holds it.
/// </summary>
public partial class OnPaperTests(ITestOutputHelper output)
{
    private const double Tf32FlopsPerSecond = 495e12, Fp32FlopsPerSecond = 67e12, BytesPerSecond = 3.35e12;
    private const int H100Multiprocessors = 132;

    [GeneratedRegex(@"^(?<product>Conv2d\w+) (?<k>\d+)x\d+ (?<h>\d+)x(?<w>\d+) (?<cin>\d+)->(?<cout>\d+) N(?<n>\d+)$")]
    private static partial Regex ConvKey();

    private sealed record Row(string Product, int K, int H, int W, int Cin, int Cout, int N, long Calls)
    {
        public double Flops => 2.0 * N * H * W * Cout * Cin * K * K;
        public double X => 4.0 * N * Cin * H * W;
        public double Y => 4.0 * N * Cout * H * W;
        public double Weights => 4.0 * Cout * Cin * K * K;

        /// <summary>The weight gradient's split of its sum over gridDim.z at 128 x 128 tiles on 132
        /// multiprocessors, as CudaBackend.Conv2dBackwardWeight chooses it.</summary>
        public int Splits
        {
            get
            {
                if (Product != "Conv2dBackwardWeight") return 1;
                long columns = (long)Cin * K * K, pixels = (long)N * H * W;
                var block = CudaBackend.MmaBlock(512, Cout, columns);
                long tiles = (Cout + 32 * block.Y - 1) / (32 * block.Y) * ((columns + 32 * block.Z - 1) / (32 * block.Z));
                long wanted = 2L * H100Multiprocessors;
                return tiles >= wanted ? 1 : (int)Math.Clamp(Math.Min((wanted + tiles - 1) / tiles, pixels / 1024), 1, 64);
            }
        }

        /// <summary>Each operand read once and the result written once; a split weight gradient
        /// also writes its partial sums and reads them back (sum_to).</summary>
        public double Bytes => Product switch
        {
            "Conv2dForward" => X + Weights + Y,
            "Conv2dForwardPixelNorm" => X + Weights + Y + 4.0 * N * H * W,   // and the factor kept per pixel
            "Conv2dBackwardInput" => Y + Weights + X,
            _ => X + Y + (Splits > 1 ? 2 * Splits + 1 : 1) * Weights,
        };

        public double Tf32Seconds => Math.Max(Flops / Tf32FlopsPerSecond, Bytes / BytesPerSecond);
        public double Fp32Seconds => Math.Max(Flops / Fp32FlopsPerSecond, Bytes / BytesPerSecond);
        public string Tf32Bound => Flops / Tf32FlopsPerSecond >= Bytes / BytesPerSecond ? "compute" : "memory";
    }

    private static List<Row> CountTheStep()
    {
        var config = ProGanConfig.Paper(256);
        using var cuda = new CudaBackend(new CountingDriver(), precision: Precision.Tf32);
        var backend = new ProfilingBackend(cuda);
        var rng = new Rng(1);
        using var models = GanModels.Create(backend, config, rng);
        const int batch = 16;
        using var scope = new Scope();
        var reals = Tensor.FromArray(backend, new float[batch * 3 * 256 * 256], new Shape(batch, 3, 256, 256));
        WganGp.TrainingStep(models, reals, Tensor.RandomNormal(backend, new Shape(batch, 512), rng), Tensor.RandomUniform(backend, new Shape(batch), rng),
            Tensor.RandomNormal(backend, new Shape(batch, 512), rng), config.MaxLevel, 1f, 0.999f);
        var rows = new List<Row>();
        foreach (var (kernel, calls, _) in backend.Report(byShape: true))
        {
            if (ConvKey().Match(kernel) is not { Success: true } m) continue;
            int I(string g) => int.Parse(m.Groups[g].Value, CultureInfo.InvariantCulture);
            rows.Add(new Row(m.Groups["product"].Value, I("k"), I("h"), I("w"), I("cin"), I("cout"), I("n"), calls));
        }
        string[] order = ["Conv2dForward", "Conv2dForwardPixelNorm", "Conv2dBackwardInput", "Conv2dBackwardWeight"];
        return rows.OrderByDescending(r => r.Flops * r.Calls).ThenBy(r => Array.IndexOf(order, r.Product)).ToList();
    }

    private static string Table(List<Row> rows)
    {
        static string Short(string product) => product switch
        {
            "Conv2dForward" => "forward",
            "Conv2dForwardPixelNorm" => "forward + pixel norm",
            "Conv2dBackwardInput" => "input grad",
            _ => "weight grad",
        };
        static string Us(double seconds) => (seconds * 1e6).ToString(seconds * 1e6 >= 100 ? "F0" : seconds * 1e6 >= 10 ? "F1" : "F2", CultureInfo.InvariantCulture);
        var t = new StringBuilder();
        t.AppendLine("| product | k | map | Cin -> Cout | launches per step | GFLOP per launch | MB per launch | FLOP/byte | TF32 bound | TF32 µs per launch | FP32 µs per launch | TF32 µs per step | FP32 µs per step |");
        t.AppendLine("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        foreach (var r in rows)
            t.AppendLine(string.Create(CultureInfo.InvariantCulture,
                $"| {Short(r.Product)}{(r.Splits > 1 ? $" (split {r.Splits})" : "")} | {r.K}x{r.K} | {r.H}x{r.W} | {r.Cin} -> {r.Cout} | {r.Calls} | {r.Flops / 1e9:F2} | {r.Bytes / 1e6:F1} | {r.Flops / r.Bytes:F0} | {r.Tf32Bound} | " +
                $"{Us(r.Tf32Seconds)} | {Us(r.Fp32Seconds)} | {Us(r.Calls * r.Tf32Seconds)} | {Us(r.Calls * r.Fp32Seconds)} |"));
        double flops = rows.Sum(r => r.Calls * r.Flops), tf32 = rows.Sum(r => r.Calls * r.Tf32Seconds), fp32 = rows.Sum(r => r.Calls * r.Fp32Seconds);
        t.AppendLine(string.Create(CultureInfo.InvariantCulture,
            $"| **all convolutions of one step** | | | | {rows.Sum(r => r.Calls)} | {flops / 1e9:F0} in all | {rows.Sum(r => r.Calls * r.Bytes) / 1e6:F0} in all | | | | | **{tf32 * 1e3:F2} ms** | **{fp32 * 1e3:F2} ms** |"));
        return t.ToString();
    }

    [Fact]
    public void TheH100TableOfBenchReadmeIsWhatOnePaperStepCounts()
    {
        var rows = CountTheStep();
        string table = Table(rows);
        output.WriteLine(table);

        // Every 3x3 convolution of G and D at 256x256, and the 1x1 toRGB and fromRGB, with all three products.
        Assert.Contains(rows, r => r is { Product: "Conv2dForward", K: 3, H: 256, Cin: 64, Cout: 64 });
        Assert.Contains(rows, r => r is { Product: "Conv2dForwardPixelNorm", K: 3, H: 256, Cin: 64, Cout: 64 });   // G's layers
        Assert.Contains(rows, r => r is { Product: "Conv2dBackwardWeight", K: 3, H: 4, Cin: 513, Cout: 512 });
        Assert.Contains(rows, r => r is { Product: "Conv2dForward", K: 1, H: 256, Cin: 64, Cout: 3 });
        Assert.Contains(rows, r => r is { Product: "Conv2dBackwardWeight", K: 1, H: 256, Cin: 3, Cout: 64 });
        foreach (var r in rows) Assert.True(r.Calls >= 1 && r.Flops > 0 && r.Bytes > 0, r.ToString());

        string readme = File.ReadAllText(Path.Combine(RepositoryRoot(), "bench", "README.md")).ReplaceLineEndings("\n");
        foreach (var line in table.ReplaceLineEndings("\n").Split('\n', StringSplitOptions.RemoveEmptyEntries))
            Assert.True(readme.Contains(line, StringComparison.Ordinal), $"bench/README.md lacks this line of the on-paper table (paste the whole table from the test output):\n{line}\n\n{table}");
    }

    private static string RepositoryRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "RawGan.sln"))) return dir.FullName;
        throw new InvalidOperationException($"no RawGan.sln above {AppContext.BaseDirectory}");
    }

    /// <summary>A CUDA driver that runs nothing: allocations are distinct fake addresses, copies
    /// back read zeros, launches return at once. An H100 SXM's description (9.0, 132 SMs), so
    /// the backend makes the launches (and splits) it would make there.</summary>
    private sealed unsafe class CountingDriver : ICudaDriver
    {
        private ulong _next = 1 << 20;
        private readonly Dictionary<string, nint> _functions = new();
        public string Name => "cuda";
        public DeviceInfo Device { get; } = new("H100 SXM (on paper)", 9, 0, 80L << 30, H100Multiprocessors, 1024, 48 * 1024, 32, "none", "none");
        public string KernelTarget => "nothing: launches are counted";
        public ulong Allocate(long bytes) { var a = _next; _next += (ulong)((bytes + 255) / 256 * 256); return a; }
        public void Free(ulong address) { }
        public void CopyHostToDevice(ulong destination, void* source, long bytes) { }
        public void CopyDeviceToHost(void* destination, ulong source, long bytes) => new Span<byte>(destination, (int)bytes).Clear();
        public void CopyDeviceToDevice(ulong destination, ulong source, long bytes) { }
        public (long free, long total) MemoryInfo() => (80L << 30, 80L << 30);
        public void LoadModule(IReadOnlyList<KernelSource> sources, IReadOnlyDictionary<string, string> headers) { }
        public nint GetFunction(string kernel) => _functions.TryGetValue(kernel, out var f) ? f : _functions[kernel] = _functions.Count + 1;
        public int MaxThreadsPerBlock(nint function) => 512;
        public void Launch(nint function, string kernel, Dim3 grid, Dim3 block, uint sharedBytes, void** arguments) { }
        public void Synchronize() { }
        public void Dispose() { }
    }
}
