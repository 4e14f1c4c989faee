using RawGan.Engine;
using RawGan.Engine.Autograd;
using RawGan.Engine.Backends.Cpu;
using RawGan.ProGan.Checkpoints;
using RawGan.ProGan.Data;
using RawGan.ProGan.Model;
using RawGan.ProGan.Training;

namespace RawGan.ProGan.Tests;

/// <summary>Built-in shapes held in memory at every resolution (the tests' data set).</summary>
public sealed class InMemoryShapes : ITrainingImages
{
    private readonly Dictionary<int, float[][]> _levels = new();

    public InMemoryShapes(int count, int resolution)
    {
        var shapes = new ShapesDataset(seed: 3, count: count);
        for (int r = 4; r <= resolution; r *= 2)
        {
            int res = r;
            _levels[r] = Enumerable.Range(0, count).Select(i => shapes.Render(i, res)).ToArray();
        }
        Count = count;
        Resolution = resolution;
    }

    public string Name => "shapes (in memory)";
    public int Count { get; }
    public int Channels => 3;
    public int Resolution { get; }

    public void FillBatch(ReadOnlySpan<int> indices, int resolution, ReadOnlySpan<bool> mirror, Span<float> destination)
    {
        int per = 3 * resolution * resolution;
        for (int i = 0; i < indices.Length; i++)
        {
            var src = _levels[resolution][indices[i]];
            var dst = destination.Slice(i * per, per);
            if (!mirror[i]) { src.CopyTo(dst); continue; }
            for (int p = 0; p < 3 * resolution; p++)
                for (int x = 0; x < resolution; x++)
                    dst[p * resolution + x] = src[p * resolution + resolution - 1 - x];
        }
    }
}

internal sealed class SilentObserver : ITrainingObserver
{
    public List<TickReport> Ticks { get; } = new();
    public List<string> Notices { get; } = new();
    public void Tick(TickReport report) => Ticks.Add(report);
    public void Notice(string message) => Notices.Add(message);
}

public class TrainingTests
{
    private static readonly CpuBackend Cpu = CpuBackend.Shared;

    private static TrainOptions Tiny(int resolution, long imagesPerPhase, ulong seed = 5) => new()
    {
        Model = ProGanConfig.Tiny(resolution) with { LatentSize = 32, FmapBase = 64, FmapMax = 32 },
        ImagesPerPhase = imagesPerPhase,
        DefaultBatch = 8,
        Seed = seed,
        TickImages = 200,
        CheckpointTicks = 1000,
        SwdImages = 0,
    };

    /// <summary>
    /// A hash of the sign of every leaky ReLU input in the graph that made <paramref name="output"/>:
    /// which linear piece of the networks (and of their recorded backward passes) the point is on.
    /// The critic loss contains the norm of a gradient of a piecewise-linear network, so it jumps
    /// where any unit changes sign; a finite difference is only meaningful within one piece.
    /// </summary>
    private static long Piece(Tensor output)
    {
        var hash = new HashCode();
        var seen = new HashSet<Node>(ReferenceEqualityComparer.Instance);
        var stack = new Stack<Node>();
        if (output.GradFn != null) stack.Push(output.GradFn);
        while (stack.Count > 0)
        {
            var node = stack.Pop();
            if (!seen.Add(node)) continue;
            if (node.Op is "LeakyRelu" or "LeakyReluMask")
                foreach (var v in node.Inputs[0].ToArray()) hash.Add(v > 0);
            // The kink is at x + b = 0 (conv(x) + b for a layer), where the output changes sign; slope 1 has none.
            if (node.Op is "BiasLeakyRelu" or "Conv2dBiasLeakyRelu" && node.Slope != 1f)
                foreach (var v in node.Output.ToArray()) hash.Add(v > 0);
            foreach (var input in node.Inputs)
                if (input.GradFn != null) stack.Push(input.GradFn);
        }
        return hash.ToHashCode();
    }

    public static TheoryData<GanLoss> Losses => new() { GanLoss.WganGp, GanLoss.Logistic };

    [Theory]
    [MemberData(nameof(Losses))]
    public void TheCriticLossGradientMatchesFiniteDifferencesForEveryCriticWeight(GanLoss kind)
    {
        var objective = new GanObjective(kind, 0.5f);
        var config = ProGanConfig.Tiny(8) with { LatentSize = 8, FmapBase = 16, FmapMax = 4 };
        using var g = new Generator(Cpu, config, new Rng(1));
        using var d = new Discriminator(Cpu, config, new Rng(2));
        var reals = new InMemoryShapes(4, 8);
        var realHost = new float[4 * 3 * 64];
        reals.FillBatch(Enumerable.Range(0, 4).ToArray(), 8, new bool[4], realHost);
        var rng = new Rng(3);
        var zHost = new float[4 * config.LatentSize];
        var tHost = new float[4];
        rng.FillNormal(zHost);
        rng.FillUniform(tHost);
        var parameters = d.Parameters();

        (double value, long piece, float[][] grads) Evaluate()
        {
            using var scope = new Scope();
            var (loss, grads, _, _, _) = WganGp.CriticLoss(g, d, Tensor.FromArray(Cpu, realHost, new Shape(4, 3, 8, 8)),
                Tensor.FromArray(Cpu, zHost, new Shape(4, config.LatentSize)), Tensor.FromArray(Cpu, tHost, new Shape(4)), 3, Fade.At(0.7f), null, objective);
            return (loss.Item(), Piece(loss), grads.Select(t => t.ToArray()).ToArray());
        }

        var (_, basePiece, analytic) = Evaluate();
        var failures = new List<string>();
        int checkedCount = 0, skipped = 0;
        for (int i = 0; i < parameters.Count; i++)
        {
            var original = parameters[i].ToArray();
            for (int j = 0; j < original.Length; j++)
            {
                double? numeric = null;
                double noise = 0;   // what the float loss's rounding alone can put into the difference quotient
                for (double h = 1e-2; h > 1e-5 && numeric == null; h /= 4)
                {
                    var values = (float[])original.Clone();
                    values[j] = (float)(original[j] + h);
                    parameters[i].CopyFrom(values);
                    var plus = Evaluate();
                    values[j] = (float)(original[j] - h);
                    parameters[i].CopyFrom(values);
                    var minus = Evaluate();
                    if (plus.piece == basePiece && minus.piece == basePiece)
                    {
                        numeric = (plus.value - minus.value) / (2 * h);
                        // Two ulps on each side: the loss is a float, so a small step (where a kink forced
                        // one) measures its rounding too, and how it rounds depends on each 3x3 product's
                        // method, which the CPU measures per machine.
                        noise = 4 * Math.Max(Math.Abs(plus.value), Math.Abs(minus.value)) * Math.Pow(2, -23) / h;
                    }
                }
                parameters[i].CopyFrom(original);
                checkedCount++;
                if (numeric is not double n) { skipped++; continue; }
                double a = analytic[i][j];
                if (Math.Abs(a - n) > 2e-3 + 2e-2 * Math.Max(Math.Abs(a), Math.Abs(n)) + noise)
                    failures.Add($"{d.NamedParameters().ElementAt(i).Name}[{j}]: tape {a:G6}, finite difference {n:G6}");
            }
        }
        Assert.True(failures.Count == 0, $"{failures.Count} of {checkedCount} critic weights disagree:\n" + string.Join("\n", failures.Take(10)));
        Assert.True(skipped <= checkedCount / 20, $"{skipped} of {checkedCount} weights sat on a kink at every step size");
    }

    [Fact]
    public void TheLogisticLossIsItsFormulaOnTheCriticsScoresAndGradients()
    {
        // softplus(D(fake)) + softplus(-D(real)) + gamma / 2 ||grad_x D(real)||^2, averaged: assembled
        // here in double from the critic's scores and a plain (first-order) gradient, against the loss.
        var config = ProGanConfig.Tiny(8) with { LatentSize = 8, FmapBase = 16, FmapMax = 4 };
        using var g = new Generator(Cpu, config, new Rng(1));
        using var d = new Discriminator(Cpu, config, new Rng(2));
        var realHost = new float[4 * 3 * 64];
        new InMemoryShapes(4, 8).FillBatch(Enumerable.Range(0, 4).ToArray(), 8, new bool[4], realHost);
        var zHost = new float[4 * config.LatentSize];
        new Rng(3).FillNormal(zHost);
        const float gamma = 2.5f;
        using var scope = new Scope();
        var reals = Tensor.FromArray(Cpu, realHost, new Shape(4, 3, 8, 8));
        var z = Tensor.FromArray(Cpu, zHost, new Shape(4, config.LatentSize));
        var (loss, _, realScore, fakeScore, penalty) = WganGp.CriticLoss(g, d, reals, z, Tensor.Zeros(Cpu, new Shape(4)), 3, Fade.At(0.4f), null,
            new GanObjective(GanLoss.Logistic, gamma));
        float[] fakes;
        using (Tape.NoGrad()) fakes = d.Forward(g.Forward(z, 3, Fade.At(0.4f)), 3, Fade.At(0.4f)).ToArray();
        var x = Tensor.FromArray(Cpu, realHost, new Shape(4, 3, 8, 8));
        x.RequiresGrad = true;
        var realOut = d.Forward(x, 3, Fade.At(0.4f));
        var scores = realOut.ToArray();
        var grad = Tape.Grad(Ops.Sum(realOut), x).ToArray();
        static double Softplus(double v) => Math.Log(1 + Math.Exp(v));
        double expected = 0, squares = 0;
        for (int s = 0; s < 4; s++)
        {
            double norm2 = 0;
            for (int i = 0; i < 3 * 64; i++) norm2 += (double)grad[s * 192 + i] * grad[s * 192 + i];
            squares += norm2 / 4;
            expected += (Softplus(fakes[s]) + Softplus(-scores[s]) + gamma / 2 * norm2) / 4;
        }
        Assert.Equal(expected, loss.Item(), 1e-5 * Math.Max(1, Math.Abs(expected)));
        Assert.Equal(squares, penalty.Item(), 1e-5 * Math.Max(1, squares));
        Assert.Equal(scores.Average(), realScore.Item(), 1e-6);
        Assert.Equal(fakes.Average(), fakeScore.Item(), 1e-6);
        // The non-saturating generator loss: mean softplus(-D(G(z))).
        var (lossG, _) = WganGp.GeneratorLoss(g, d, z, 3, Fade.At(0.4f), null, new GanObjective(GanLoss.Logistic, gamma));
        Assert.Equal(fakes.Average(f => Softplus(-f)), lossG.Item(), 1e-6);
    }

    [Theory]
    [MemberData(nameof(Losses))]
    public void SeveralHundredStepsUpTo8x8BringTheGeneratorCloserToTheData(GanLoss loss)
    {
        // The tiny preset through 4x4 stable, 8x8 fade-in and 8x8 stable, 4000 images each
        // (750 steps of 16), judged by the sliced Wasserstein distance to the data (section 5).
        using var dir = new TempDirectory();
        var data = new InMemoryShapes(1024, 8);
        // Each objective at its usual rate: the paper's 0.001 for WGAN-GP, 0.002 for the logistic loss with R1 (gamma 1).
        var options = new TrainOptions
        {
            Model = ProGanConfig.Tiny(8),
            ImagesPerPhase = 4000,
            DefaultBatch = 16,
            Seed = 5,
            TickImages = 1000,
            CheckpointTicks = 1000,
            SwdImages = 0,
            Loss = loss,
            R1Gamma = 1f,
            LearningRate = loss == GanLoss.Logistic ? 0.002f : 0.001f,
        };
        using var trainer = new Trainer(options, Cpu, data, dir.Path, new SilentObserver());
        var before = Evaluation.Swd(trainer.GeneratorEma, data, 512, 9).Mean;
        Assert.Equal(StopReason.Finished, trainer.Run());
        var after = Evaluation.Swd(trainer.GeneratorEma, data, 512, 9).Mean;
        var floor = Evaluation.NoiseFloor(data, 512, 8, 9).Mean;
        Assert.True(after < 0.7 * before, $"SWD before {before:F1}, after {after:F1} (real vs real {floor:F1})");
        Assert.True(after > floor, $"SWD after {after:F1} cannot beat the real-vs-real noise floor {floor:F1}");
        // One metrics line per tick of 1000 images.
        Assert.Equal(12, File.ReadAllLines(Path.Combine(dir.Path, "metrics.jsonl")).Length);
    }

    [Fact]
    public void ResumingFromACheckpointGivesBitForBitTheWeightsOfAnUninterruptedRun()
    {
        var data = new InMemoryShapes(64, 8);
        var options = Tiny(8, 96);   // 3 phases of 12 steps, batch 8: resume lands mid-fade-in
        using var straight = new TempDirectory();
        using var interrupted = new TempDirectory();
        float[][] expected;
        using (var trainer = new Trainer(options, Cpu, data, straight.Path, new SilentObserver()))
        {
            Assert.Equal(StopReason.Finished, trainer.Run());
            expected = Weights(trainer);
        }
        string checkpoint;
        using (var trainer = new Trainer(options, Cpu, data, interrupted.Path, new SilentObserver()))
        {
            Assert.Equal(StopReason.Interrupted, trainer.Run(maxSteps: 17));
            Assert.Equal(1, trainer.State.PhaseIndex);                 // in the 8x8 fade-in
            Assert.InRange(trainer.State.ImagesInPhase, 1, 95);
            checkpoint = new CheckpointStore(interrupted.Path).Latest!;
        }
        using (var resumed = new Trainer(options, Cpu, data, interrupted.Path, new SilentObserver(), checkpoint))
        {
            Assert.Equal(17, resumed.State.Steps);
            Assert.Equal(StopReason.Finished, resumed.Run());
            var actual = Weights(resumed);
            Assert.Equal(expected.Length, actual.Length);
            for (int i = 0; i < expected.Length; i++)
                Assert.True(expected[i].AsSpan().SequenceEqual(actual[i]), $"tensor {i} differs after resuming");
        }
    }

    [Fact]
    public void TheCriticsLearningRateRatioScalesItsFirstUpdateAndOnlyItsOwn()
    {
        // With beta1 = 0, Adam's first update is lr * g / sqrt(g^2) = lr * sign(g) for every weight
        // with a gradient well above epsilon (lr * g / (|g| + eps) for all): the same step from the
        // same weights and batch moves each critic weight by twice as much at ratio 2 (up to the
        // float rounding of w +- lr), and the
        // generator's learning rate stays --lr.
        var data = new InMemoryShapes(16, 4);
        float[][] Step(float ratio, out (float G, float D) rates)
        {
            using var dir = new TempDirectory();
            using var trainer = new Trainer(Tiny(4, 64) with { DiscriminatorLearningRateRatio = ratio }, Cpu, data, dir.Path, new SilentObserver());
            var before = trainer.Discriminator.Parameters().Select(p => p.ToArray()).ToArray();
            Assert.Equal(StopReason.Interrupted, trainer.Run(maxSteps: 1));
            rates = (trainer.Optimizers.Generator.LearningRate, trainer.Optimizers.Discriminator.LearningRate);
            var after = trainer.Discriminator.Parameters().Select(p => p.ToArray()).ToArray();
            return before.Zip(after, (b, a) => a.Zip(b, (x, y) => x - y).ToArray()).ToArray();
        }
        var one = Step(1f, out var ratesOne);
        var two = Step(2f, out var ratesTwo);
        Assert.Equal((0.001f, 0.001f), ratesOne);
        Assert.Equal((0.001f, 0.002f), ratesTwo);
        int moved = 0;
        for (int t = 0; t < one.Length; t++)
            for (int i = 0; i < one[t].Length; i++)
            {
                if (one[t][i] == 0) { Assert.Equal(0f, two[t][i]); continue; }
                moved++;
                Assert.InRange(two[t][i] / one[t][i], 1.999f, 2.001f);
                Assert.True(Math.Abs(one[t][i]) <= 0.001001f, $"a first update of {one[t][i]} at lr 0.001");
            }
        Assert.True(moved > 1000, $"only {moved} critic weights moved in the first step");
    }

    [Fact]
    public void TheCriticsRatioAndTheFadeShareAreCheckedAndMustMatchOnResume()
    {
        Assert.Contains("critic's learning rate ratio", Assert.Throws<ArgumentException>(() => (Tiny(8, 64) with { DiscriminatorLearningRateRatio = 0 }).Validate()).Message);
        Assert.Contains("critic's learning rate ratio", Assert.Throws<ArgumentException>(() => (Tiny(8, 64) with { DiscriminatorLearningRateRatio = float.NaN }).Validate()).Message);
        Assert.Contains("fade-in's share", Assert.Throws<ArgumentException>(() => (Tiny(8, 64) with { FadeShare = 1 }).Validate()).Message);
        Assert.Contains("fade-in's share", Assert.Throws<ArgumentException>(() => (Tiny(8, 64) with { FadeShare = 0 }).Validate()).Message);
        var saved = Tiny(8, 64);
        var diffs = (saved with { DiscriminatorLearningRateRatio = 2, FadeShare = 0.25 }).Differences(saved);
        Assert.Equal(["critic learning rate ratio: checkpoint has 1, this run asks for 2", "fade-in share: checkpoint has 0.5, this run asks for 0.25"], diffs);
    }

    private static float[][] Weights(Trainer t) =>
        t.Generator.Parameters().Concat(t.Discriminator.Parameters()).Concat(t.GeneratorEma.Parameters()).Select(p => p.ToArray()).ToArray();

    [Fact]
    public void ACheckpointRoundTripsEveryTensorAndRefusesAnotherConfiguration()
    {
        var data = new InMemoryShapes(32, 8);
        var options = Tiny(8, 64);
        using var dir = new TempDirectory();
        string checkpoint;
        float[][] saved;
        using (var trainer = new Trainer(options, Cpu, data, dir.Path, new SilentObserver()))
        {
            trainer.Run(maxSteps: 5);
            checkpoint = new CheckpointStore(dir.Path).Latest!;
            saved = Weights(trainer);
        }
        foreach (var file in new[] { "G.safetensors", "D.safetensors", "G_ema.safetensors", "optimizer.safetensors", "state.json" })
            Assert.True(File.Exists(Path.Combine(checkpoint, file)), file);
        var content = SafeTensors.Load(Path.Combine(checkpoint, "G_ema.safetensors"));
        // nf(1) = min(64 / 2, 32) = 32 channels at 4x4: the first dense layer is [32 * 16, latent 32], PyTorch's [out, in].
        Assert.Equal([512, 32], content.Tensors["latent_dense.weight"].Shape);
        using (var resumed = new Trainer(options, Cpu, data, dir.Path, new SilentObserver(), checkpoint))
        {
            var loaded = Weights(resumed);
            for (int i = 0; i < saved.Length; i++) Assert.Equal(saved[i], loaded[i]);
        }
        var other = options with { Model = options.Model with { FmapMax = 16 }, Seed = 99 };
        var ex = Assert.Throws<ArgumentException>(() => new Trainer(other, Cpu, data, dir.Path, new SilentObserver(), checkpoint));
        Assert.Contains("fmap-max: checkpoint has 32, this run asks for 16", ex.Message);
        Assert.Contains("seed: checkpoint has 5, this run asks for 99", ex.Message);
    }
}
