using System.Diagnostics;
using System.Globalization;
using System.Text;

namespace RawGan.Engine.Backends.Cpu;

// ---------------------------------------------------------------------------------------------
// Measured choice of the 3x3 convolution method.
//
// Three Winograd versions compute every 3x3 product: F(2x2) and F(4x4) by rows of tiles
// (Winograd.cs) and F(4x4) with channels in the vector lanes (Winograd.Channels.cs). Which is
// fastest depends on the CPU as much as on the shape: at 32x32, 128 channels, batch 16, channel
// lanes led F(4x4) by rows on a Zen 4 and a Zen 5 and lost to it by 1.4-1.65x on an Intel Xeon
// (bench/README.md). A fixed table (Choose) can be right for one machine only, so Auto measures,
// as cuDNN's benchmark mode and FFTW's planner do: the first time a product of a new shape runs,
// each candidate runs once to warm up and then three to eight times more in alternation (more
// while the two fastest are within 5%), and the fastest call decides. The choice is kept for the process and written to the cache directory
// (cpu-convolutions/<this CPU>.tsv), so later runs on this machine start with it and compute
// the same rounding as the run before (a resumed run reproduces bit for bit). Set
// RAWGAN_CONV_TUNING=off for the fixed table alone. Candidates write the real output buffer
// (every method overwrites all of it and reads none of it); the chosen method then runs last.
// ---------------------------------------------------------------------------------------------

public sealed unsafe partial class CpuBackend
{
    /// <summary>Whether Auto measures its 3x3 methods on this machine (default) or keeps the fixed
    /// table (RAWGAN_CONV_TUNING=off, or false here).</summary>
    public static bool ConvolutionTuning { get; set; } =
        Environment.GetEnvironmentVariable("RAWGAN_CONV_TUNING")?.Trim().ToLowerInvariant() is not ("off" or "0" or "false" or "no");

    /// <summary>The measured choices this process made or loaded, for reports (bench).</summary>
    public static IReadOnlyList<ConvolutionChoice> ConvolutionChoices => ConvolutionTuner.Shared.Choices;

    /// <summary>The file this CPU's measured choices are kept in.</summary>
    public static string ConvolutionChoicesFile => ConvolutionTuner.Shared.FilePath;

    private static readonly ConvMethod[] TunedCandidates = [ConvMethod.WinogradChannels, ConvMethod.WinogradF4, ConvMethod.WinogradF2];

    private bool Tunes(ConvMethod method) =>
        _convolution == ConvolutionAlgorithm.Auto && ConvolutionTuning && method is ConvMethod.WinogradChannels or ConvMethod.WinogradF4 or ConvMethod.WinogradF2;

    /// <summary>The measured method for a known shape, or false when the shape is new.</summary>
    private static bool Remembered(ConvProduct product, int n, int cin, int h, int w, int cout, out ConvMethod method) =>
        ConvolutionTuner.Shared.TryGet(new(product, n, cin, h, w, cout, CpuParallel.Threads), out method);

    // One method per product, so that the closures below are only made when a shape is new.

    private ConvMethod TuneForward(DeviceBuffer x, DeviceBuffer w, DeviceBuffer y, int n, int cin, int h, int wd, int cout, float scale, DeviceBuffer bias, float slope) =>
        Overlaps(y, x, w, bias) ? Choose(ConvProduct.Forward, 3, h, wd, cin, cout)
            : ConvolutionTuner.Shared.Choose(new(ConvProduct.Forward, n, cin, h, wd, cout, CpuParallel.Threads),
                m => Conv2dForward(m, x, w, y, n, cin, h, wd, cout, 3, scale, bias, slope));

    private ConvMethod TuneBackwardInput(DeviceBuffer gy, DeviceBuffer w, DeviceBuffer gx, int n, int cin, int h, int wd, int cout, float scale) =>
        Overlaps(gx, gy, w) ? Choose(ConvProduct.InputGradient, 3, h, wd, cin, cout)
            : ConvolutionTuner.Shared.Choose(new(ConvProduct.InputGradient, n, cin, h, wd, cout, CpuParallel.Threads),
                m => Conv2dBackwardInput(m, gy, w, gx, n, cin, h, wd, cout, 3, scale));

    private ConvMethod TuneBackwardWeight(DeviceBuffer x, DeviceBuffer gy, DeviceBuffer gw, int n, int cin, int h, int wd, int cout, float scale) =>
        Overlaps(gw, x, gy) ? Choose(ConvProduct.WeightGradient, 3, h, wd, cin, cout)
            : ConvolutionTuner.Shared.Choose(new(ConvProduct.WeightGradient, n, cin, h, wd, cout, CpuParallel.Threads),
                m => Conv2dBackwardWeight(m, x, gy, gw, n, cin, h, wd, cout, 3, scale));

    /// <summary>Whether the output shares memory with an input (then trial runs would corrupt it: not measured).</summary>
    private static bool Overlaps(DeviceBuffer output, DeviceBuffer a, DeviceBuffer b, DeviceBuffer c = default)
    {
        static bool Both(DeviceBuffer p, DeviceBuffer q) =>
            !q.IsNull && p.Address < q.Address + (nint)(q.Length * sizeof(float)) && q.Address < p.Address + (nint)(p.Length * sizeof(float));
        return Both(output, a) || Both(output, b) || Both(output, c);
    }

    internal static string MethodName(ConvMethod method) => method switch
    {
        ConvMethod.WinogradChannels => "winograd-f4-channels",
        ConvMethod.WinogradF4 => "winograd-f4-rows",
        ConvMethod.WinogradF2 => "winograd-f2-rows",
        ConvMethod.WinogradAvx2 => "winograd-f4-avx2",
        ConvMethod.ImplicitGemm => "implicit-gemm",
        ConvMethod.Pointwise => "pointwise",
        _ => "im2col",
    };

    /// <summary>One measured choice: the product and its sizes, the method taken, and the best call
    /// of each candidate in milliseconds (empty when the choice was loaded from the cache).</summary>
    public sealed record ConvolutionChoice(string Product, int N, int Cin, int H, int W, int Cout, int Threads, string Method,
        IReadOnlyList<(string Method, double Ms)> Measured)
    {
        public override string ToString()
        {
            var sb = new StringBuilder(string.Create(CultureInfo.InvariantCulture, $"{Product} 3x3 {H}x{W} {Cin}->{Cout} N{N}, {Threads} threads: {Method}"));
            if (Measured.Count > 0)
                sb.Append(" (").AppendJoin(", ", Measured.Select(m => string.Create(CultureInfo.InvariantCulture, $"{m.Method} {m.Ms:F2} ms"))).Append(')');
            else sb.Append(" (from the cache)");
            return sb.ToString();
        }
    }

    internal readonly record struct TuningKey(ConvProduct Product, int N, int Cin, int H, int W, int Cout, int Threads);

    /// <summary>A table of measured choices backed by a file: <see cref="Shared"/> is the process's, with
    /// a file per CPU in the cache directory; tests make their own on a file of their own.</summary>
    internal sealed class ConvolutionTuner(string? file = null)
    {
        public static ConvolutionTuner Shared { get; } = new();

        private readonly Lock _gate = new();
        /// <summary>A choice and whether this process has run its shape (what <see cref="Choices"/> lists).</summary>
        private sealed class Entry(ConvMethod method, ConvolutionChoice choice)
        {
            public ConvMethod Method { get; } = method;
            public ConvolutionChoice Choice { get; } = choice;
            public bool Used { get; set; }
        }

        private readonly Dictionary<TuningKey, Entry> _table = [];
        private bool _loaded;

        /// <summary>The choices for the shapes this process has run (measured now or read from the file).</summary>
        public IReadOnlyList<ConvolutionChoice> Choices
        {
            get { lock (_gate) return [.. _table.Values.Where(e => e.Used).Select(e => e.Choice)]; }
        }

        /// <summary>The file of the choices: $RAWGAN_CONV_TUNING_FILE if set, else this CPU's in the cache directory
        /// (named by its model name from /proc/cpuinfo and its core count).</summary>
        internal string FilePath => file ??= Environment.GetEnvironmentVariable("RAWGAN_CONV_TUNING_FILE") is { Length: > 0 } chosen
            ? chosen
            : Path.Combine(CacheDirectory.Root, "cpu-convolutions", $"{CpuSignature()}.tsv");

        /// <summary>The remembered method for <paramref name="key"/>, if there is one (no allocation: every call asks).</summary>
        public bool TryGet(TuningKey key, out ConvMethod method)
        {
            lock (_gate)
            {
                Load();
                if (!_table.TryGetValue(key, out var known))
                {
                    method = default;
                    return false;
                }
                known.Used = true;
                method = known.Method;
                return true;
            }
        }

        /// <summary>The remembered method for <paramref name="key"/>, or the fastest of the candidates, each
        /// run through <paramref name="run"/> (which writes the product's real output).</summary>
        public ConvMethod Choose(TuningKey key, Action<ConvMethod> run)
        {
            if (TryGet(key, out var remembered)) return remembered;
            var best = new double[TunedCandidates.Length];
            Array.Fill(best, double.MaxValue);
            // Round 0 warms up (first touch of scratch, packing buffers) untimed. Then timed rounds:
            // three, and more (up to eight) while the two fastest are within 5% of each other, since
            // a choice is kept for good and one slow call (another process, the host taking the
            // core) can flip a close race; fewer where the trials would pass two seconds.
            long began = Stopwatch.GetTimestamp();
            for (int round = 0; round <= MaxTimedRounds; round++)
            {
                if (round >= 2 && Stopwatch.GetElapsedTime(began).TotalSeconds >= TuningSeconds) break;
                if (round > MinTimedRounds && Margin(best) > CloseRace) break;
                for (int c = 0; c < TunedCandidates.Length; c++)
                {
                    long start = Stopwatch.GetTimestamp();
                    run(TunedCandidates[c]);
                    double ms = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
                    if (round > 0) best[c] = Math.Min(best[c], ms);
                }
            }
            int chosen = Array.IndexOf(best, best.Min());
            var choice = new ConvolutionChoice(ProductName(key.Product), key.N, key.Cin, key.H, key.W, key.Cout, key.Threads,
                MethodName(TunedCandidates[chosen]), [.. TunedCandidates.Select((m, i) => (MethodName(m), best[i]))]);
            lock (_gate)
            {
                // Another thread may have measured the same shape meanwhile: the first choice stands.
                if (_table.TryGetValue(key, out var known)) return known.Method;
                _table[key] = new Entry(TunedCandidates[chosen], choice) { Used = true };
                Save();
            }
            return TunedCandidates[chosen];
        }

        private const int MinTimedRounds = 3, MaxTimedRounds = 8;
        private const double CloseRace = 0.05, TuningSeconds = 2;

        /// <summary>How much slower the second fastest candidate is than the fastest (0.1: 10%).</summary>
        internal static double Margin(ReadOnlySpan<double> best)
        {
            double first = double.MaxValue, second = double.MaxValue;
            foreach (double t in best)
                if (t < first) (first, second) = (t, first);
                else if (t < second) second = t;
            return second / first - 1;
        }

        private static string ProductName(ConvProduct p) => p switch
        {
            ConvProduct.Forward => "forward",
            ConvProduct.InputGradient => "input-gradient",
            _ => "weight-gradient",
        };

        private static readonly ConvProduct[] Products = [ConvProduct.Forward, ConvProduct.InputGradient, ConvProduct.WeightGradient];

        /// <summary>The one of <paramref name="values"/> whose name is <paramref name="text"/>.</summary>
        private static bool TryNamed<T>(T[] values, Func<T, string> name, string text, out T value)
        {
            foreach (var v in values)
                if (name(v) == text)
                {
                    value = v;
                    return true;
                }
            value = default!;
            return false;
        }

        // The file: a header line, the methods' version, then one line per choice, tab-separated:
        //   methods  <MethodsVersion>
        //   product  n  cin  h  w  cout  threads  method
        // Lines that do not parse are skipped (a damaged file costs a measurement, nothing else). A
        // file of another version (or none: before versions were written) is read as empty, so its
        // choices are measured again and the file rewritten: a choice measured against methods
        // that have since changed speed says nothing about the methods of this build.

        /// <summary>Raised whenever a candidate method's code changes enough to move its speed.</summary>
        internal const int MethodsVersion = 3;

        private void Load()
        {
            if (_loaded) return;
            _loaded = true;
            foreach (var (key, choice) in ReadFile()) _table.TryAdd(key, choice);
        }

        private List<(TuningKey, Entry)> ReadFile()
        {
            var entries = new List<(TuningKey, Entry)>();
            string[] lines;
            try { lines = File.Exists(FilePath) ? File.ReadAllLines(FilePath) : []; }
            catch (IOException) { return entries; }
            catch (UnauthorizedAccessException) { return entries; }
            if (!lines.Contains($"methods\t{MethodsVersion}")) return entries;
            foreach (var line in lines)
            {
                var f = line.Split('\t');
                if (f.Length != 8 || !TryNamed(Products, ProductName, f[0], out var product) || !TryNamed(TunedCandidates, MethodName, f[7], out var method)) continue;
                var sizes = new int[6];
                bool ok = true;
                for (int i = 0; i < 6 && ok; i++) ok = int.TryParse(f[1 + i], NumberStyles.None, CultureInfo.InvariantCulture, out sizes[i]) && sizes[i] > 0;
                if (!ok) continue;
                var key = new TuningKey(product, sizes[0], sizes[1], sizes[2], sizes[3], sizes[4], sizes[5]);
                entries.Add((key, new Entry(method, new ConvolutionChoice(f[0], sizes[0], sizes[1], sizes[2], sizes[3], sizes[4], sizes[5], f[7], []))));
            }
            return entries;
        }

        /// <summary>Merges the table into the file (another process may have added lines since it was read).</summary>
        private void Save()
        {
            var merged = new Dictionary<TuningKey, Entry>();
            foreach (var (key, choice) in ReadFile()) merged.TryAdd(key, choice);
            foreach (var (key, choice) in _table) merged.TryAdd(key, choice);
            var sb = new StringBuilder("# RawGan: the measured 3x3 convolution method per product and size on this CPU (RAWGAN_CONV_TUNING=off ignores it)\n");
            sb.Append(CultureInfo.InvariantCulture, $"methods\t{MethodsVersion}\n");
            foreach (var (k, entry) in merged.OrderBy(e => (e.Key.Product, e.Key.H, e.Key.Cin, e.Key.Cout, e.Key.N, e.Key.Threads)))
                sb.Append(CultureInfo.InvariantCulture, $"{entry.Choice.Product}\t{k.N}\t{k.Cin}\t{k.H}\t{k.W}\t{k.Cout}\t{k.Threads}\t{entry.Choice.Method}\n");
            try
            {
                Directory.CreateDirectory(Path.GetDirectoryName(FilePath)!);
                CacheDirectory.WriteAtomically(FilePath, Encoding.UTF8.GetBytes(sb.ToString()));
            }
            catch (IOException) { }
            catch (UnauthorizedAccessException) { }
        }

        private static string CpuSignature()
        {
            string model = "cpu";
            try
            {
                if (File.Exists("/proc/cpuinfo"))
                    foreach (var line in File.ReadLines("/proc/cpuinfo"))
                        if (line.StartsWith("model name", StringComparison.Ordinal) || line.StartsWith("cpu family", StringComparison.Ordinal) ||
                            line.StartsWith("model\t", StringComparison.Ordinal))
                        {
                            model = model == "cpu" ? "" : model + "-";
                            model += line[(line.IndexOf(':') + 1)..].Trim();
                            if (line.StartsWith("model name", StringComparison.Ordinal)) break;
                        }
            }
            catch (IOException) { }
            catch (UnauthorizedAccessException) { }
            var safe = new StringBuilder();
            foreach (char ch in $"{model}-{Environment.ProcessorCount}cores")
                safe.Append(char.IsAsciiLetterOrDigit(ch) ? ch : '-');
            return safe.ToString();
        }
    }
}
