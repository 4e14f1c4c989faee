using System.CommandLine;
using System.Diagnostics;
using RawGan.Engine;
using RawGan.Engine.Autograd;
using RawGan.Engine.Backends;
using RawGan.Engine.Backends.Reference;
using RawGan.ProGan.Checkpoints;
using RawGan.ProGan.Data;
using RawGan.ProGan.Model;
using RawGan.ProGan.Training;

namespace RawGan.Trainer;

/// <summary>
/// `check [--device D]`: a self-test of a device, for users and bug reports. Every kernel against
/// the reference backend's plain loops at a few sizes; the WGAN-GP penalty's gradient with
/// respect to a small critic's weights (a double backward pass) against finite differences; and
/// a short training run: losses finite, weights changed, checkpoint written and read back
/// unchanged. A pass/fail table with timings; exit 1 on any failure. At --precision tf32 (the
/// default on GPUs that have it) the products and convolutions are held to TF32's bound, and the
/// gradient check runs in fp32 on the same device (finite differences cannot resolve TF32).
/// </summary>
public static class CheckCommand
{
    public static Command Create()
    {
        var c = new Command("check", "Self-test a device: every kernel against the reference backend, the critic penalty's gradient against finite differences, a short training run.");
        var collective = new Option<bool>("--collective") { Description = "only check the collectives between the ranks of `mpirun -np N rawgan check --collective` (all-reduce, broadcast, barrier)" };
        c.Add(TrainCommand.Device);
        c.Add(collective);
        c.Add(TrainCommand.Precision);
        c.SetAction(parse => Program.Guard(() => parse.GetValue(collective) ? Collectives(parse.GetValue(TrainCommand.Device)!) : Run(parse)));
        return c;
    }

    /// <summary>Every rank contributes known values; each checks what comes back, and rank 0
    /// prints the table for all (a rank that fails says so on its own line).</summary>
    private static int Collectives(string device)
    {
        var (rank, size) = Engine.Distributed.Launcher.FromEnvironment();
        using var collective = Engine.Distributed.Launcher.Open();
        using var owned = new OwnedBackend(Devices.Open(device, rank == 0 ? Console.WriteLine : _ => { }));
        var backend = owned.Backend;
        var failures = new List<string>();
        void Expect(bool ok, string what) { if (!ok) failures.Add(what); }

        // All-reduce on the host: rank r gives r + 1 + i / 1000 at element i.
        const int n = 100_003;
        var host = new float[n];
        for (int i = 0; i < n; i++) host[i] = collective.Rank + 1 + i / 1000f;
        collective.AllReduceSum(host);
        double ranksSum = size * (size + 1) / 2.0;
        Expect(Enumerable.Range(0, n).All(i => Math.Abs(host[i] - (ranksSum + size * (i / 1000f))) <= 1e-3 * (1 + Math.Abs(host[i]))), "all-reduce on host memory");

        // All-reduce of a backend buffer (in place on the CPU; staged or NCCL on a GPU).
        var buffer = backend.Allocate(n);
        try
        {
            var values = new float[n];
            Array.Fill(values, collective.Rank + 1);
            backend.Upload(values, buffer);
            collective.AllReduceSum(backend, buffer, n);
            backend.Download(buffer, values);
            Expect(values.All(v => v == (float)ranksSum), $"all-reduce of a {backend.Name} buffer");
        }
        finally { backend.Free(buffer); }

        // Broadcast from the last rank, then a barrier.
        var b = new float[] { collective.Rank, collective.Rank * 2 };
        collective.Broadcast(b, root: size - 1);
        Expect(b[0] == size - 1 && b[1] == 2 * (size - 1), "broadcast from the last rank");
        collective.Barrier();

        var mine = new float[] { failures.Count };
        collective.AllReduceSum(mine);
        foreach (var f in failures) Console.WriteLine($"FAIL  rank {collective.Rank}: {f}");
        if (collective.Rank == 0)
            Console.WriteLine(mine[0] == 0
                ? $"check passed: {collective.Name}, {size} rank(s); all-reduce (host and {backend.Name} buffers), broadcast, barrier"
                : $"check FAILED: {mine[0]} failure(s) across {size} ranks");
        return mine[0] == 0 ? 0 : 1;
    }

    private static int Run(ParseResult parse)
    {
        using var owned = new OwnedBackend(TrainCommand.OpenDevice(parse));
        var backend = owned.Backend;
        Console.WriteLine($"rawgan check on {backend.Description}");
        bool tf32 = backend is Engine.Backends.Cuda.CudaBackend { Precision: Engine.Backends.Cuda.Precision.Tf32 };
        if (backend is Engine.Backends.Cuda.CudaBackend cuda) Console.WriteLine($"kernels: {cuda.Driver.KernelTarget}");
        if (tf32) Console.WriteLine("products and convolutions in tf32: their errors are relative to sum |a b| (TF32's bound); the others' to max(1, |expected|)");
        int failures = 0;

        Console.WriteLine();
        Console.WriteLine($"{"kernel",-28} {"size",-34} {"max error",10} {"bound",8} {"ms",9}  result");
        var total = Stopwatch.StartNew();
        foreach (var r in BackendCheck.Run(backend, tf32))
        {
            if (!r.Passed) failures++;
            string result = r.Passed ? "pass" : r.Failure != null ? $"FAIL: {r.Failure}" : "FAIL";
            Console.WriteLine($"{r.Kernel,-28} {r.Size,-34} {r.MaxError,10:G3} {r.Bound,8:G2} {r.Milliseconds,9:F2}  {result}");
        }
        Console.WriteLine($"kernels: {total.Elapsed.TotalSeconds:F1} s");

        Console.WriteLine();
        failures += Step("critic penalty gradient vs finite differences", () =>
        {
            if (!tf32) return PenaltyGradient(backend);
            // Central differences of a TF32 loss are mostly its rounding: the tape's gradients
            // are checked in fp32, on the same device.
            using var fp32 = new OwnedBackend(Devices.Open(parse.GetValue(TrainCommand.Device)!, _ => { }, Engine.Backends.Cuda.Precision.Fp32));
            return PenaltyGradient(fp32.Backend) + "; in fp32, since finite differences cannot resolve TF32's rounding";
        });
        failures += Step("training: 6 steps, losses finite, weights change, checkpoint round trip", () => ShortTraining(backend));
        if (backend.SupportsGraphs)
            failures += Step("training with CUDA graphs: 6 steps captured and replayed equal 6 launched from the host, bit for bit", () => GraphTraining(backend));
        else
            Console.WriteLine($"skip  training with CUDA graphs: the {backend.Name} backend runs every step from the host, there is nothing to capture");

        Console.WriteLine();
        Console.WriteLine(failures == 0 ? $"check passed on {backend.Name}" : $"check FAILED on {backend.Name}: {failures} failure(s)");
        return failures == 0 ? 0 : 1;
    }

    private static int Step(string what, Func<string> check)
    {
        var clock = Stopwatch.StartNew();
        try
        {
            string detail = check();
            Console.WriteLine($"pass  {what} ({detail}; {clock.Elapsed.TotalSeconds:F1} s)");
            return 0;
        }
        catch (Exception e) when (e is CheckFailed or ArithmeticException or InvalidOperationException or Engine.Backends.Cuda.CudaException)
        {
            Console.WriteLine($"FAIL  {what}: {Program.OneLine(e)}");
            return 1;
        }
    }

    private sealed class CheckFailed(string message) : Exception(message);

    // ------------------------------------------------------------------ the critic penalty

    // A ProGAN critic in miniature (fromRGB 1x1, conv 3x3, average pool, minibatch stddev,
    // conv 3x3, dense, dense), each layer with its equalized-learning-rate scale.
    private static readonly Shape[] CriticShapes =
    [
        new(4, 3, 1, 1), new(4), new(4, 4, 3, 3), new(4), new(4, 5, 3, 3), new(4), new(8, 4 * 2 * 2), new(8), new(1, 8), new(1),
    ];

    private static Tensor Critic(Tensor x, Tensor[] p)
    {
        static float Scale(Tensor w, float gain = 1.41421356f) => gain / MathF.Sqrt(w.Length / w.Shape[0]);
        static Tensor Bias4(Tensor y, Tensor b) => Ops.Add(y, Ops.Reshape(b, new Shape(b.Shape[0], 1, 1)));
        x = Ops.LeakyRelu(Bias4(Ops.Conv2d(x, p[0], Scale(p[0])), p[1]));
        x = Ops.LeakyRelu(Bias4(Ops.Conv2d(x, p[2], Scale(p[2])), p[3]));
        x = Ops.MinibatchStdDev(Ops.AvgPool2x(x), 2);
        x = Ops.LeakyRelu(Bias4(Ops.Conv2d(x, p[4], Scale(p[4])), p[5]));
        x = Ops.Reshape(x, new Shape(x.Shape[0], (int)(x.Length / x.Shape[0])));
        x = Ops.LeakyRelu(Ops.Add(Ops.MatMul(x, p[6], transB: true, alpha: Scale(p[6])), p[7]));
        return Ops.Add(Ops.MatMul(x, p[8], transB: true, alpha: Scale(p[8], 1f)), p[9]);
    }

    /// <summary>mean over samples of (||d sum D(x) / dx|| - 1)^2: WGAN-GP's penalty.</summary>
    private static Tensor Penalty(IBackend backend, float[] image, Tensor[] p, bool createGraph)
    {
        var x = Tensor.FromArray(backend, image, new Shape(4, 3, 4, 4));
        x.RequiresGrad = true;
        var g = Tape.Grad([Ops.Sum(Critic(x, p))], [x], createGraph: createGraph)[0];
        return Ops.Mean(Ops.GradientPenalty(g));
    }

    private static string PenaltyGradient(IBackend backend)
    {
        var rng = new Rng(11);
        var weights = CriticShapes.Select(s => { var v = new float[s.Length]; rng.FillNormal(v); return v; }).ToArray();
        var image = new float[4 * 3 * 4 * 4];
        rng.FillNormal(image);

        Tensor[] Leaves(float[][] w, bool grad) => w.Select((v, i) =>
        {
            var t = Tensor.FromArray(backend, v, CriticShapes[i]);
            t.RequiresGrad = grad;
            return t;
        }).ToArray();
        double At(float[][] w)
        {
            using var scope = new Scope();
            return Penalty(backend, image, Leaves(w, false), createGraph: false).Item();
        }

        float[][] analytic;
        using (var scope = new Scope())
        {
            var p = Leaves(weights, true);
            analytic = Tape.Grad([Penalty(backend, image, p, createGraph: true)], p).Select(t => t.ToArray()).ToArray();
        }
        double largest = analytic.Max(a => a.Max(v => Math.Abs((double)v)));
        if (!(largest > 0)) throw new CheckFailed("the penalty's gradient is zero everywhere");

        // Central differences on 24 weights spread over every tensor. A weight whose differences at
        // h and h/2 disagree sits near a kink of a leaky ReLU, where no derivative exists: skipped.
        int compared = 0, kinks = 0;
        double worst = 0;
        for (int trial = 0; trial < 24; trial++)
        {
            int t = trial % weights.Length, i = rng.NextInt(weights[t].Length);
            float saved = weights[t][i];
            double Difference(float h)
            {
                weights[t][i] = saved + h;
                double plus = At(weights);
                weights[t][i] = saved - h;
                double minus = At(weights);
                weights[t][i] = saved;
                return (plus - minus) / (2 * h);
            }
            double d1 = Difference(1e-2f), d2 = Difference(5e-3f);
            double scale = Math.Max(Math.Abs(d1), 1e-2 * largest);
            if (Math.Abs(d1 - d2) > 0.05 * scale) { kinks++; continue; }
            double error = Math.Abs(d2 - analytic[t][i]) / scale;
            worst = Math.Max(worst, error);
            compared++;
            if (error > 0.05)
                throw new CheckFailed($"weight {i} of tensor {t} ({CriticShapes[t]}): the tape says {analytic[t][i]:G5}, finite differences {d2:G5}");
        }
        if (compared < 12) throw new CheckFailed($"only {compared} of 24 weights away from a kink; cannot judge");
        return $"{compared} weights, largest relative error {worst:G2}, {kinks} near a kink skipped";
    }

    // ------------------------------------------------------------------ a short training run

    /// <summary>The short run's settings: 8 steps of 8 images per phase, a tiny model at 4x4.</summary>
    private static TrainOptions ShortRun() => new()
    {
        Model = ProGanConfig.Tiny(8) with { LatentSize = 32, FmapBase = 64, FmapMax = 32 },
        ShapesCount = 64,
        ImagesPerPhase = 64,
        DefaultBatch = 8,
        Seed = 5,
        TickImages = 1000,
        CheckpointTicks = 1000,
        SwdImages = 0,
    };

    private static string TempRunFolder() => Path.Combine(Path.GetTempPath(), $"rawgan-check-{Environment.ProcessId}-{Guid.NewGuid():N}"[..40]);

    /// <summary>The same 6 steps twice from the same seed: every kernel launched from the host, then
    /// the first step eager, the second captured as a CUDA graph and the rest replayed. The kernels
    /// are deterministic (integer atomics only), so the weights must agree bit for bit.</summary>
    private static string GraphTraining(IBackend backend)
    {
        var options = ShortRun();
        using var data = TrainingData.Open("shapes", 8, _ => { }, options.ShapesCount);
        var runs = new List<(float[][] weights, long replays, long captures, string? failure)>();
        foreach (bool graphs in new[] { false, true })
        {
            string dir = TempRunFolder();
            try
            {
                using var trainer = new ProGan.Training.Trainer(options, backend, data, dir, new QuietObserver()) { UseGraphs = graphs };
                if (trainer.Run(maxSteps: 6) == ProGan.Training.StopReason.NonFinite) throw new CheckFailed("the losses or gradients were not finite");
                runs.Add((Weights(trainer), trainer.Steps.Replays, trainer.Steps.Captures, trainer.Steps.GraphFailure));
            }
            finally
            {
                try { Directory.Delete(dir, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
            }
        }
        var (eager, replayed) = (runs[0], runs[1]);
        if (replayed.failure != null) throw new CheckFailed($"the step could not be captured: {replayed.failure}");
        if (replayed.captures != 1 || replayed.replays != 5) throw new CheckFailed($"expected 1 capture and 5 replays, got {replayed.captures} and {replayed.replays}");
        for (int i = 0; i < eager.weights.Length; i++)
            if (!eager.weights[i].AsSpan().SequenceEqual(replayed.weights[i]))
                throw new CheckFailed($"tensor {i} differs between replayed and host-launched steps");
        return $"1 capture, 5 replays, {eager.weights.Length} tensors equal";
    }

    private static string ShortTraining(IBackend backend)
    {
        string dir = TempRunFolder();
        try
        {
            var options = ShortRun();
            using var data = TrainingData.Open("shapes", 8, _ => { }, options.ShapesCount);
            float[][] before, after;
            ProGan.Training.StopReason reason;
            using (var trainer = new ProGan.Training.Trainer(options, backend, data, dir, new QuietObserver()))
            {
                before = Weights(trainer);
                reason = trainer.Run(maxSteps: 6);
                after = Weights(trainer);
            }
            if (reason == ProGan.Training.StopReason.NonFinite) throw new CheckFailed("the losses or gradients were not finite");
            if (after.Any(w => w.Any(v => !float.IsFinite(v)))) throw new CheckFailed("a weight is not finite after training");
            int changed = before.Zip(after).Count(p => !p.First.AsSpan().SequenceEqual(p.Second));
            if (changed < before.Length / 2) throw new CheckFailed($"only {changed} of {before.Length} tensors changed in 6 steps");
            string checkpoint = new CheckpointStore(dir).Latest ?? throw new CheckFailed("no checkpoint was written");
            using (var resumed = new ProGan.Training.Trainer(options, backend, data, dir, new QuietObserver(), checkpoint))
            {
                var loaded = Weights(resumed);
                for (int i = 0; i < after.Length; i++)
                    if (!after[i].AsSpan().SequenceEqual(loaded[i])) throw new CheckFailed($"tensor {i} differs after the checkpoint round trip");
            }
            return $"{changed} of {before.Length} tensors changed, checkpoint {Path.GetFileName(checkpoint)} read back bit for bit";
        }
        finally
        {
            try { Directory.Delete(dir, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        }
    }

    private static float[][] Weights(ProGan.Training.Trainer t) =>
        t.Generator.Parameters().Concat(t.Discriminator.Parameters()).Concat(t.GeneratorEma.Parameters()).Select(p => p.ToArray()).ToArray();

    private sealed class QuietObserver : ProGan.Training.ITrainingObserver
    {
        public void Tick(ProGan.Training.TickReport report) { }
        public void Notice(string message) { }
    }
}
