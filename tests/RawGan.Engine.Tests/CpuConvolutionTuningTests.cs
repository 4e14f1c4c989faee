using System.Diagnostics;
using RawGan.Engine.Backends;
using RawGan.Engine.Backends.Cpu;
using RawGan.Tests;
using Method = RawGan.Engine.Backends.Cpu.CpuBackend.ConvMethod;

namespace RawGan.Engine.Tests;

/// <summary>
/// Auto's measured choice of 3x3 method (CpuBackend.Tuning.cs): the fastest candidate wins, the
/// choice is remembered in memory and in its file, a damaged file costs nothing but a measurement,
/// and a product computed while its shape is being measured equals the chosen method's own result
/// bit for bit (the trials leave nothing behind).
/// </summary>
public class CpuConvolutionTuningTests
{
    /// <summary>A folder of its own, removed afterwards.</summary>
    private sealed class TempDirectory : IDisposable
    {
        public string Path { get; } = Directory.CreateTempSubdirectory("rawgan-tuning-test-").FullName;

        public void Dispose()
        {
            try { Directory.Delete(Path, recursive: true); }
            catch (IOException) { }
        }
    }

    private static readonly CpuBackend.TuningKey Key = new(CpuBackend.ConvProduct.InputGradient, 5, 24, 12, 10, 40, 2);

    /// <summary>A trial that takes <paramref name="ms"/> of wall time (spinning, so that it cannot finish early).</summary>
    private static void Spin(double ms)
    {
        long start = Stopwatch.GetTimestamp();
        while (Stopwatch.GetElapsedTime(start).TotalMilliseconds < ms) { }
    }

    [Fact]
    public void TheFastestCandidateIsChosenAndRememberedInItsFile()
    {
        using var dir = new TempDirectory();
        string file = System.IO.Path.Combine(dir.Path, "cpu.tsv");
        var tuner = new CpuBackend.ConvolutionTuner(file);
        var calls = new Dictionary<Method, int>();
        var chosen = tuner.Choose(Key, m =>
        {
            calls[m] = calls.GetValueOrDefault(m) + 1;
            Spin(m == Method.WinogradF4 ? 0.5 : 8);
        });
        Assert.Equal(Method.WinogradF4, chosen);
        // Every candidate ran: once to warm up and at least once timed.
        Assert.Equal(new[] { Method.WinogradChannels, Method.WinogradF4, Method.WinogradF2 }.Order(), calls.Keys.Order());
        Assert.All(calls.Values, c => Assert.Equal(4, c));   // a clear winner: the warm-up and three timed rounds
        var choice = Assert.Single(tuner.Choices);
        Assert.Equal("winograd-f4-rows", choice.Method);
        Assert.Equal(3, choice.Measured.Count);
        Assert.True(choice.Measured.Single(m => m.Method == "winograd-f4-rows").Ms < 8, choice.ToString());

        // Remembered: no trial runs again, in this table or in a new one that reads the file.
        void NoTrials(Method m) => throw new InvalidOperationException($"{m} ran for a remembered shape");
        Assert.Equal(Method.WinogradF4, tuner.Choose(Key, NoTrials));
        var again = new CpuBackend.ConvolutionTuner(file);
        Assert.Equal(Method.WinogradF4, again.Choose(Key, NoTrials));
        Assert.Empty(Assert.Single(again.Choices).Measured);
        Assert.Contains("input-gradient\t5\t24\t12\t10\t40\t2\twinograd-f4-rows", File.ReadAllText(file));
    }

    [Fact]
    public void ACloseRaceRunsMoreRoundsAndANearTieIsStillDecided()
    {
        using var dir = new TempDirectory();
        var tuner = new CpuBackend.ConvolutionTuner(System.IO.Path.Combine(dir.Path, "cpu.tsv"));
        var calls = new Dictionary<Method, int>();
        // Two candidates 2% apart: every round up to the most is run, and one of the two is taken.
        var chosen = tuner.Choose(Key, m =>
        {
            calls[m] = calls.GetValueOrDefault(m) + 1;
            Spin(m switch { Method.WinogradChannels => 3.0, Method.WinogradF4 => 3.06, _ => 9 });
        });
        Assert.Contains(chosen, new[] { Method.WinogradChannels, Method.WinogradF4 });
        Assert.All(calls.Values, c => Assert.Equal(9, c));   // the warm-up and eight timed rounds
        Assert.Equal(0.1, CpuBackend.ConvolutionTuner.Margin([2.0, 2.2, 5.0]), 12);
        Assert.Equal(0.5, CpuBackend.ConvolutionTuner.Margin([3.0, 9.0, 2.0]), 12);
    }

    [Fact]
    public void DamagedLinesAreSkippedAndTheRestKept()
    {
        using var dir = new TempDirectory();
        string file = System.IO.Path.Combine(dir.Path, "cpu.tsv");
        File.WriteAllLines(file,
        [
            "# a header",
            $"methods\t{CpuBackend.ConvolutionTuner.MethodsVersion}",
            "forward\t16\t128\t32\t32\t128\t2\twinograd-f4-channels",
            "forward\t16\t128\t32\t32\t128\t2",                          // a field short
            "sideways\t16\t128\t16\t16\t128\t2\twinograd-f4-channels",    // no such product
            "forward\t16\t-1\t8\t8\t128\t2\twinograd-f4-channels",        // a size that is no size
            "forward\t16\t128\t8\t8\t128\t2\tim2col",                     // not a measured method
            "\u0000\u0001binary",
        ]);
        var tuner = new CpuBackend.ConvolutionTuner(file);
        Assert.Empty(tuner.Choices);   // known, but not run yet
        Assert.True(tuner.TryGet(new(CpuBackend.ConvProduct.Forward, 16, 128, 32, 32, 128, 2), out var method));
        Assert.Equal(Method.WinogradChannels, method);
        Assert.False(tuner.TryGet(new(CpuBackend.ConvProduct.Forward, 16, 128, 8, 8, 128, 2), out _));
        Assert.Single(tuner.Choices);
        // A new measurement rewrites the file: the valid line and the new one, none of the damage.
        tuner.Choose(Key, m => Spin(m == Method.WinogradF2 ? 0.5 : 8));
        var lines = File.ReadAllLines(file).Where(l => !l.StartsWith('#') && !l.StartsWith("methods")).ToArray();
        Assert.Equal(["forward\t16\t128\t32\t32\t128\t2\twinograd-f4-channels", "input-gradient\t5\t24\t12\t10\t40\t2\twinograd-f2-rows"], lines);
    }

    /// <summary>Choices measured against another build's methods (an older version, or a file from before
    /// versions were written) are measured again, and the rewritten file holds only this version's.</summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void ChoicesOfAnotherMethodsVersionAreMeasuredAgain(bool withOldVersion)
    {
        using var dir = new TempDirectory();
        string file = System.IO.Path.Combine(dir.Path, "cpu.tsv");
        var stale = new List<string> { "# a header", "forward\t16\t128\t32\t32\t128\t2\twinograd-f4-channels" };
        if (withOldVersion) stale.Insert(1, $"methods\t{CpuBackend.ConvolutionTuner.MethodsVersion - 1}");
        File.WriteAllLines(file, stale);
        var tuner = new CpuBackend.ConvolutionTuner(file);
        Assert.False(tuner.TryGet(new(CpuBackend.ConvProduct.Forward, 16, 128, 32, 32, 128, 2), out _));
        Assert.Equal(Method.WinogradF2, tuner.Choose(Key, m => Spin(m == Method.WinogradF2 ? 0.5 : 8)));
        var lines = File.ReadAllLines(file).Where(l => !l.StartsWith('#')).ToArray();
        Assert.Equal([$"methods\t{CpuBackend.ConvolutionTuner.MethodsVersion}", "input-gradient\t5\t24\t12\t10\t40\t2\twinograd-f2-rows"], lines);
    }

    [Fact]
    public void AFileThatCannotBeWrittenCostsOnlyTheMemory()
    {
        using var dir = new TempDirectory();
        string blocker = System.IO.Path.Combine(dir.Path, "a-file");
        File.WriteAllText(blocker, "");
        // The choices' folder would have to be made inside a file: neither reading nor writing can succeed.
        var tuner = new CpuBackend.ConvolutionTuner(System.IO.Path.Combine(blocker, "cpu-convolutions", "cpu.tsv"));
        Assert.Equal(Method.WinogradChannels, tuner.Choose(Key, m => Spin(m == Method.WinogradChannels ? 0.5 : 8)));
        Assert.Equal(Method.WinogradChannels, tuner.Choose(Key, m => throw new InvalidOperationException("remembered in memory")));
    }

    [Avx512Fact]
    public void AProductMeasuredWhileItRunsEqualsItsChosenMethodBitForBit()
    {
        CpuBackend.ConvolutionTuning = true;   // the default; set in case the environment turned it off
        using var be = new CpuBackend { Vectors = CpuBackend.CpuVectors.Avx512 };
        // A shape no other test uses (the process's table may already know it from the cache file: either way it holds).
        const int n = 3, cin = 17, h = 12, w = 11, cout = 19;
        var x = Upload(be, GradCheck.Normal(new Shape(n * cin * h * w), 1));
        var wt = Upload(be, GradCheck.Normal(new Shape(cout * cin * 9), 2));
        var gy = Upload(be, GradCheck.Normal(new Shape(n * cout * h * w), 3));
        var bias = Upload(be, GradCheck.Normal(new Shape(cout), 4));
        var products = new (CpuBackend.ConvProduct Product, long Length, Action<DeviceBuffer> Run)[]
        {
            (CpuBackend.ConvProduct.Forward, n * cout * h * w, y => be.Conv2dForward(x, wt, y, n, cin, h, w, cout, 3, 0.3f, bias, 0.2f)),
            (CpuBackend.ConvProduct.InputGradient, n * cin * h * w, gx => be.Conv2dBackwardInput(gy, wt, gx, n, cin, h, w, cout, 3, 0.3f)),
            (CpuBackend.ConvProduct.WeightGradient, cout * cin * 9, gw => be.Conv2dBackwardWeight(x, gy, gw, n, cin, h, w, cout, 3, 0.3f)),
        };
        foreach (var (product, length, run) in products)
        {
            be.Convolution = CpuBackend.ConvolutionAlgorithm.Auto;
            var measured = be.Allocate(length);
            run(measured);
            Assert.True(CpuBackend.ConvolutionTuner.Shared.TryGet(new(product, n, cin, h, w, cout, CpuParallel.Threads), out var method), $"{product}: no choice remembered");
            be.Convolution = method switch
            {
                Method.WinogradChannels => CpuBackend.ConvolutionAlgorithm.WinogradChannels,
                Method.WinogradF4 => CpuBackend.ConvolutionAlgorithm.Winograd4,
                _ => CpuBackend.ConvolutionAlgorithm.Winograd,
            };
            var forced = be.Allocate(length);
            run(forced);
            var (a, b) = (new float[length], new float[length]);
            be.Download(measured, a);
            be.Download(forced, b);
            Assert.True(a.AsSpan().SequenceEqual(b), $"{product}: Auto's result differs from {method}'s");
        }
    }

    private static DeviceBuffer Upload(CpuBackend be, float[] values)
    {
        var b = be.Allocate(values.Length);
        be.Upload(values, b);
        return b;
    }
}
