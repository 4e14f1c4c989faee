using RawGan.Engine;
using RawGan.Engine.Autograd;
using RawGan.Engine.Backends;
using RawGan.Engine.Distributed;
using RawGan.Engine.Optim;
using RawGan.ProGan.Model;

namespace RawGan.ProGan.Training;

/// <summary>What one training step measured (host values, for logs and metrics).
/// <paramref name="StateFinite"/>: every weight, average and Adam moment is finite after it (an
/// update whose values overflowed cannot be skipped after the fact).</summary>
public readonly record struct StepStats(float CriticLoss, float GeneratorLoss, float RealScore, float FakeScore, float Penalty, bool CriticFinite, bool GeneratorFinite,
    bool StateFinite = true)
{
    public bool Finite => CriticFinite && GeneratorFinite;
}

/// <summary>The two losses a step can train with (<see cref="WganGp"/>).</summary>
public enum GanLoss
{
    /// <summary>WGAN-GP with ProGAN's drift term (the paper's and the default).</summary>
    WganGp,
    /// <summary>The non-saturating logistic loss with an R1 penalty on the reals (the official
    /// code's G_logistic_nonsaturating and D_logistic_simplegp).</summary>
    Logistic,
}

/// <summary>The loss and, for <see cref="GanLoss.Logistic"/>, the R1 penalty's weight gamma.</summary>
public readonly record struct GanObjective(GanLoss Loss, float R1Gamma)
{
    public static GanObjective Default => new(GanLoss.WganGp, 1f);
}

/// <summary>The networks and optimizers one training step updates.</summary>
public sealed record GanModels(Generator G, Discriminator D, Generator GEma, Adam AdamG, Adam AdamD) : IDisposable
{
    /// <summary>What the steps minimize (WGAN-GP unless the trainer says otherwise).</summary>
    public GanObjective Objective { get; set; } = GanObjective.Default;

    /// <summary>Fresh networks: G then D drawn from <paramref name="rng"/> (in that order, so a
    /// seed always gives the same weights), the moving average a copy of G, Adam for each.</summary>
    public static GanModels Create(RawGan.Engine.Backends.IBackend backend, ProGanConfig config, Rng rng, float learningRate = 0.001f, ICollective? collective = null)
    {
        var g = new Generator(backend, config, rng);
        var d = new Discriminator(backend, config, rng);
        var gEma = new Generator(backend, config, new Rng(0));
        gEma.CopyFrom(g);
        var models = new GanModels(g, d, gEma, new Adam(g.Parameters(), learningRate), new Adam(d.Parameters(), learningRate));
        if (collective is { Size: > 1 })
        {
            models.Collective = collective;
            // Every rank starts from rank 0's weights (the same seed gives the same ones; this
            // makes sure of it), and averages its gradients with the others' before each update.
            foreach (var p in g.Parameters().Concat(d.Parameters()))
            {
                var host = p.ToArray();
                collective.Broadcast(host);
                p.CopyFrom(host);
            }
            gEma.CopyFrom(g);
            models.CriticAverager = new GradientAverager(collective, backend, d.Parameters().Select(p => p.Length).ToArray(), CriticStatistics);
            models.GeneratorAverager = new GradientAverager(collective, backend, g.Parameters().Select(p => p.Length).ToArray(), 1);
        }
        return models;
    }

    /// <summary>The ranks this step's gradients are averaged over (one process unless given).</summary>
    public ICollective Collective { get; private set; } = SingleProcess.Instance;
    internal GradientAverager? CriticAverager { get; private set; }
    internal GradientAverager? GeneratorAverager { get; private set; }
    internal const int CriticStatistics = 4;   // loss, real score, fake score, penalty

    // The gradient arrays a training step fills, one entry per parameter, reused from step to step.
    internal Tensor[] CriticGradients => _criticGradients ??= new Tensor[D.Parameters().Count];
    internal Tensor[] GeneratorGradients => _generatorGradients ??= new Tensor[G.Parameters().Count];
    private Tensor[]? _criticGradients, _generatorGradients;

    /// <summary>One device-side count of non-finite values: a step checks its loss and all its
    /// gradients with one read instead of one per tensor.</summary>
    internal NonFiniteCounter NonFinite { get; } = new(G.Backend);

    /// <summary>Counts the non-finite weights, averages and Adam moments after a step's updates.</summary>
    internal NonFiniteCounter StateNonFinite { get; } = new(G.Backend);

    /// <summary>Everything a step updates: G, D, the average of G, and both Adams' moments.</summary>
    internal IReadOnlyList<Tensor> TrainedTensors => _trained ??=
        [.. G.Parameters(), .. D.Parameters(), .. GEma.Parameters(), .. AdamG.FirstMoments, .. AdamG.SecondMoments, .. AdamD.FirstMoments, .. AdamD.SecondMoments];
    private Tensor[]? _trained;

    /// <summary>What a step leaves on the device for one read at its end (see <see cref="WganGp.EnqueueStep"/>):
    /// critic loss, real score, fake score, penalty, generator loss, then three 64-bit counts
    /// (critic; critic and generator; the state after the updates), two floats each.</summary>
    internal DeviceBuffer Statistics => _statistics ??= G.Backend.Allocate(StatisticsLength);
    private DeviceBuffer? _statistics;
    internal const int StatisticsLength = 11;

    public void Dispose()
    {
        G.Dispose(); D.Dispose(); GEma.Dispose();
        AdamG.Dispose(); AdamD.Dispose();
        NonFinite.Dispose();
        StateNonFinite.Dispose();
        if (_statistics is { } s) G.Backend.Free(s);
        CriticAverager?.Dispose();
        GeneratorAverager?.Dispose();
    }
}

/// <summary>
/// The WGAN-GP objective with ProGAN's drift term (Gulrajani et al. 2017; ProGAN appendix A.1):
///   critic:    D(fake) - D(real) + lambda (||grad_xhat D(xhat)||_2 - 1)^2 + eps_drift D(real)^2
///   generator: -D(G(z))
/// each term per sample, then averaged over the batch; xhat = real + t (fake - real), t ~ U[0, 1)
/// per sample. The gradient norm is per sample over all C*H*W values. A negative critic loss is
/// normal: it estimates minus the Wasserstein distance. The other objective a run can choose
/// (`--loss logistic`) is beside it: <see cref="LogisticCriticLoss"/> and the non-saturating
/// generator loss in <see cref="GeneratorLoss"/>.
/// </summary>
public static class WganGp
{
    public const float Lambda = 10f, Target = 1f, DriftEpsilon = 0.001f;

    /// <summary>The critic's loss and its gradients with respect to the critic's parameters
    /// (written into <paramref name="gradients"/> if given, one entry per parameter).</summary>
    public static (Tensor loss, Tensor[] gradients, Tensor realScore, Tensor fakeScore, Tensor penalty) CriticLoss(
        Generator g, Discriminator d, Tensor reals, Tensor latents, Tensor t, int level, float alpha, Tensor[]? gradients = null) =>
        CriticLoss(g, d, reals, latents, t, level, Fade.At(alpha), gradients);

    /// <summary>The same, with the fade as <see cref="Fade"/>, for <paramref name="objective"/> (WGAN-GP when not given).</summary>
    public static (Tensor loss, Tensor[] gradients, Tensor realScore, Tensor fakeScore, Tensor penalty) CriticLoss(
        Generator g, Discriminator d, Tensor reals, Tensor latents, Tensor t, int level, Fade fade, Tensor[]? gradients = null, GanObjective? objective = null)
    {
        if (objective is { Loss: GanLoss.Logistic } logistic) return LogisticCriticLoss(g, d, reals, latents, level, fade, logistic.R1Gamma, gradients);
        Tensor fakes;
        using (Tape.NoGrad()) fakes = g.Forward(latents, level, fade);
        var real = d.Forward(reals, level, fade);                   // [N, 1]
        var fake = d.Forward(fakes, level, fade);
        var xhat = Ops.Lerp(reals, fakes, t);
        xhat.RequiresGrad = true;
        var scoreHat = d.Forward(xhat, level, fade);
        // create_graph: the penalty's gradient with respect to D's weights goes through this gradient.
        var gradient = Tape.Grad(Ops.Sum(scoreHat), xhat, createGraph: true);
        var penalty = Ops.GradientPenalty(gradient, Target);          // [N]
        int n = reals.Shape[0];
        var realFlat = Ops.Reshape(real, new Shape(n));
        var fakeFlat = Ops.Reshape(fake, new Shape(n));
        var perSample = Ops.Add(
            Ops.Add(Ops.Sub(fakeFlat, realFlat), Ops.Scale(penalty, Lambda)),
            Ops.Scale(Ops.Square(realFlat), DriftEpsilon));
        var loss = Ops.Mean(perSample);
        gradients ??= new Tensor[d.Parameters().Count];
        Tape.GradInto([loss], d.ParameterSpan(), gradients);
        return (loss, gradients, Ops.Mean(Ops.Detach(realFlat)), Ops.Mean(Ops.Detach(fakeFlat)), Ops.Mean(Ops.Detach(penalty)));
    }

    /// <summary>
    /// The logistic critic loss with R1 (Mescheder et al. 2018): per sample
    ///   softplus(D(fake)) + softplus(-D(real)) + gamma / 2 ||grad_x D(x)||^2 at x = real,
    /// averaged over the batch. It is the cross-entropy of a classifier that calls reals real
    /// (softplus(-s) = -log sigmoid(s)), with its gradient on the data kept small instead of
    /// WGAN-GP's norm of 1 between the data and the fakes; no drift term is needed, since the
    /// loss itself bounds the scores. The penalty reported is the mean squared norm, before gamma / 2.
    /// </summary>
    public static (Tensor loss, Tensor[] gradients, Tensor realScore, Tensor fakeScore, Tensor penalty) LogisticCriticLoss(
        Generator g, Discriminator d, Tensor reals, Tensor latents, int level, Fade fade, float r1Gamma, Tensor[]? gradients = null)
    {
        Tensor fakes;
        using (Tape.NoGrad()) fakes = g.Forward(latents, level, fade);
        var x = Ops.Detach(reals);
        x.RequiresGrad = true;
        var real = d.Forward(x, level, fade);                       // [N, 1]
        var fake = d.Forward(fakes, level, fade);
        // create_graph: R1's gradient with respect to D's weights goes through this gradient.
        var gradient = Tape.Grad(Ops.Sum(real), x, createGraph: true);
        var penalty = Ops.Sum(Ops.Square(gradient), [1, 2, 3]);     // [N]: ||grad||^2, no square root to differentiate at 0
        int n = reals.Shape[0];
        var realFlat = Ops.Reshape(real, new Shape(n));
        var fakeFlat = Ops.Reshape(fake, new Shape(n));
        var perSample = Ops.Add(
            Ops.Add(Ops.Softplus(fakeFlat), Ops.Softplus(Ops.Scale(realFlat, -1f))),
            Ops.Scale(penalty, r1Gamma / 2));
        var loss = Ops.Mean(perSample);
        gradients ??= new Tensor[d.Parameters().Count];
        Tape.GradInto([loss], d.ParameterSpan(), gradients);
        return (loss, gradients, Ops.Mean(Ops.Detach(realFlat)), Ops.Mean(Ops.Detach(fakeFlat)), Ops.Mean(Ops.Detach(penalty)));
    }

    /// <summary>The generator's loss and its gradients with respect to G's parameters (written into
    /// <paramref name="gradients"/> if given): -mean D(G(z)) for WGAN-GP, the non-saturating
    /// mean softplus(-D(G(z))) for the logistic loss.</summary>
    public static (Tensor loss, Tensor[] gradients) GeneratorLoss(Generator g, Discriminator d, Tensor latents, int level, Fade fade, Tensor[]? gradients = null,
        GanObjective? objective = null)
    {
        var fake = d.Forward(g.Forward(latents, level, fade), level, fade);
        var loss = objective is { Loss: GanLoss.Logistic } ? Ops.Mean(Ops.Softplus(Ops.Scale(fake, -1f))) : Ops.Scale(Ops.Mean(fake), -1f);
        gradients ??= new Tensor[g.Parameters().Count];
        Tape.GradInto([loss], g.ParameterSpan(), gradients);
        return (loss, gradients);
    }

    /// <summary>
    /// One training step, as `bench` and the tests run it: <see cref="EnqueueStep"/>, then
    /// <see cref="ReadStepStats"/> (one read).
    /// </summary>
    public static StepStats TrainingStep(GanModels m, Tensor reals, Tensor latents, Tensor t, Tensor latents2, int level, float alpha, float emaBeta)
    {
        EnqueueStep(m, reals, latents, t, latents2, level, Fade.At(alpha), emaBeta);
        return ReadStepStats(m);
    }

    /// <summary>
    /// One training step, queued on the device without waiting for it: a critic update on
    /// <paramref name="reals"/> (already blended during a fade-in), a generator update, then the
    /// moving average Gs = G + beta (Gs - G). An update whose loss or gradients are not finite is
    /// skipped (official behaviour), decided on the device by a non-finite count that the updates
    /// read; a non-finite critic update skips the generator's too, so a skipped step changes no
    /// weight at all. Its statistics stay on the device (<see cref="GanModels.Statistics"/>) for
    /// <see cref="ReadStepStats"/>. With one rank nothing here reads from or writes to the host, so
    /// the whole step can be captured once as a CUDA graph and replayed (<see cref="StepRunner"/>);
    /// with several, the gradient average goes through the host.
    /// </summary>
    public static void EnqueueStep(GanModels m, Tensor reals, Tensor latents, Tensor t, Tensor latents2, int level, Fade fade, float emaBeta)
    {
        try
        {
            Step(m, reals, latents, t, latents2, level, fade, emaBeta);
        }
        finally
        {
            // The reused gradient arrays must not keep this step's tensors after its scope ends.
            Array.Clear(m.CriticGradients);
            Array.Clear(m.GeneratorGradients);
        }
    }

    private static void Step(GanModels m, Tensor reals, Tensor latents, Tensor t, Tensor latents2, int level, Fade fade, float emaBeta)
    {
        var backend = m.G.Backend;
        var stats = m.Statistics;
        var (lossD, gradsD, real, fake, penalty) = CriticLoss(m.G, m.D, reals, latents, t, level, fade, m.CriticGradients, m.Objective);
        backend.Copy(lossD.Buffer, stats.Slice(0, 1), 1);
        backend.Copy(real.Buffer, stats.Slice(1, 1), 1);
        backend.Copy(fake.Buffer, stats.Slice(2, 1), 1);
        backend.Copy(penalty.Buffer, stats.Slice(3, 1), 1);
        // Across ranks: each rank's loss is the mean over its share of the batch, so the mean of
        // the ranks' gradients is the gradient of the whole batch's loss. The averaged values are
        // the same on every rank, so every rank makes the same decision below.
        if (m.CriticAverager is { } criticAverager)
        {
            Span<float> critic = stackalloc float[GanModels.CriticStatistics];
            backend.Download(stats.Slice(0, GanModels.CriticStatistics), critic);
            criticAverager.Average(gradsD, critic);
            backend.Upload(critic, stats.Slice(0, GanModels.CriticStatistics));
        }
        var nonFinite = m.NonFinite;
        nonFinite.Reset();
        nonFinite.Add(stats.Slice(0, 1), 1);
        nonFinite.Add(gradsD);
        nonFinite.CopyTo(stats.Slice(5, 2));
        // The state after the updates is counted by the update kernels themselves, as they write
        // it (a skipped update leaves, and counts, nothing: what it would have changed was counted
        // finite by the step that wrote it).
        var state = m.StateNonFinite;
        state.Reset();
        m.AdamD.Update(gradsD, skipIfNonFinite: nonFinite, countNonFinite: state);

        // The generator's step runs whatever the critic's count says (no host decision); its
        // updates are skipped on the device when either count is not zero.
        var (lossG, gradsG) = GeneratorLoss(m.G, m.D, latents2, level, fade, m.GeneratorGradients, m.Objective);
        backend.Copy(lossG.Buffer, stats.Slice(4, 1), 1);
        if (m.GeneratorAverager is { } generatorAverager)
        {
            Span<float> generator = stackalloc float[1];
            backend.Download(stats.Slice(4, 1), generator);
            generatorAverager.Average(gradsG, generator);
            backend.Upload(generator, stats.Slice(4, 1));
        }
        nonFinite.Add(stats.Slice(4, 1), 1);
        nonFinite.Add(gradsG);
        nonFinite.CopyTo(stats.Slice(7, 2));
        m.AdamG.Update(gradsG, skipIfNonFinite: nonFinite, countNonFinite: state);
        Ema.Update(m.GEma.Parameters(), m.G.Parameters(), emaBeta, skipIfNonFinite: nonFinite, countNonFinite: state);
        state.CopyTo(stats.Slice(9, 2));
    }

    /// <summary>The statistics of the last step queued: waits for it and reads 44 bytes.</summary>
    public static StepStats ReadStepStats(GanModels m)
    {
        Span<float> s = stackalloc float[GanModels.StatisticsLength];
        m.G.Backend.Download(m.Statistics, s);
        return StepStatsOf(s);
    }

    /// <summary>A step's statistics from the <see cref="GanModels.StatisticsLength"/> floats of
    /// <see cref="GanModels.Statistics"/>: losses and scores, then three 64-bit counts.</summary>
    public static StepStats StepStatsOf(ReadOnlySpan<float> s)
    {
        long critic = Count(s, 5), total = Count(s, 7), state = Count(s, 9);
        bool criticFinite = critic == 0;
        return new StepStats(s[0], criticFinite ? s[4] : float.NaN, s[1], s[2], s[3], criticFinite, total == 0, state == 0);
    }

    private static long Count(ReadOnlySpan<float> s, int at) =>
        System.Runtime.InteropServices.MemoryMarshal.Read<long>(System.Runtime.InteropServices.MemoryMarshal.AsBytes(s.Slice(at, 2)));

    /// <summary>True if every value of every tensor is finite: one reduction kernel per tensor
    /// into <paramref name="counter"/>, and one read.</summary>
    public static bool AllFinite(NonFiniteCounter counter, IReadOnlyList<Tensor> tensors)
    {
        counter.Reset();
        counter.Add(tensors);
        return counter.Read() == 0;
    }
}
