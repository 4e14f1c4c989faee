using RawGan.Engine;
using RawGan.Engine.Autograd;
using RawGan.Engine.Distributed;
using RawGan.Engine.Optim;
using RawGan.ProGan.Model;

namespace RawGan.ProGan.Training;

/// <summary>What one training step measured (host values, for logs and metrics).</summary>
public readonly record struct StepStats(float CriticLoss, float GeneratorLoss, float RealScore, float FakeScore, float Penalty, bool CriticFinite, bool GeneratorFinite)
{
    public bool Finite => CriticFinite && GeneratorFinite;
}

/// <summary>The networks and optimizers one training step updates.</summary>
public sealed record GanModels(Generator G, Discriminator D, Generator GEma, Adam AdamG, Adam AdamD) : IDisposable
{
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

    public void Dispose()
    {
        G.Dispose(); D.Dispose(); GEma.Dispose();
        AdamG.Dispose(); AdamD.Dispose();
        NonFinite.Dispose();
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
/// normal: it estimates minus the Wasserstein distance.
/// </summary>
public static class WganGp
{
    public const float Lambda = 10f, Target = 1f, DriftEpsilon = 0.001f;

    /// <summary>The critic's loss and its gradients with respect to the critic's parameters
    /// (written into <paramref name="gradients"/> if given, one entry per parameter).</summary>
    public static (Tensor loss, Tensor[] gradients, Tensor realScore, Tensor fakeScore, Tensor penalty) CriticLoss(
        Generator g, Discriminator d, Tensor reals, Tensor latents, Tensor t, int level, float alpha, Tensor[]? gradients = null)
    {
        Tensor fakes;
        using (Tape.NoGrad()) fakes = g.Forward(latents, level, alpha);
        var real = d.Forward(reals, level, alpha);                   // [N, 1]
        var fake = d.Forward(fakes, level, alpha);
        var xhat = Ops.Lerp(reals, fakes, t);
        xhat.RequiresGrad = true;
        var scoreHat = d.Forward(xhat, level, alpha);
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

    /// <summary>The generator's loss -mean D(G(z)) and its gradients with respect to G's parameters
    /// (written into <paramref name="gradients"/> if given).</summary>
    public static (Tensor loss, Tensor[] gradients) GeneratorLoss(Generator g, Discriminator d, Tensor latents, int level, float alpha, Tensor[]? gradients = null)
    {
        var fake = d.Forward(g.Forward(latents, level, alpha), level, alpha);
        var loss = Ops.Scale(Ops.Mean(fake), -1f);
        gradients ??= new Tensor[g.Parameters().Count];
        Tape.GradInto([loss], g.ParameterSpan(), gradients);
        return (loss, gradients);
    }

    /// <summary>
    /// One training step, as the trainer, `bench` and the tests run it: a critic update on
    /// <paramref name="reals"/> (already blended during a fade-in), a generator update, then the
    /// moving average Gs = G + beta (Gs - G). An update whose loss or gradients are not finite is
    /// skipped (official behaviour); the caller counts and reports it. A non-finite critic update
    /// skips the generator's too: a skipped step changes no weight at all.
    /// </summary>
    public static StepStats TrainingStep(GanModels m, Tensor reals, Tensor latents, Tensor t, Tensor latents2, int level, float alpha, float emaBeta)
    {
        try
        {
            return Step(m, reals, latents, t, latents2, level, alpha, emaBeta);
        }
        finally
        {
            // The reused gradient arrays must not keep this step's tensors after its scope ends.
            Array.Clear(m.CriticGradients);
            Array.Clear(m.GeneratorGradients);
        }
    }

    private static StepStats Step(GanModels m, Tensor reals, Tensor latents, Tensor t, Tensor latents2, int level, float alpha, float emaBeta)
    {
        var (lossD, gradsD, real, fake, penalty) = CriticLoss(m.G, m.D, reals, latents, t, level, alpha, m.CriticGradients);
        Span<float> critic = stackalloc float[GanModels.CriticStatistics];
        (critic[0], critic[1], critic[2], critic[3]) = (lossD.Item(), real.Item(), fake.Item(), penalty.Item());
        // Across ranks: each rank's loss is the mean over its share of the batch, so the mean of
        // the ranks' gradients is the gradient of the whole batch's loss.
        m.CriticAverager?.Average(gradsD, critic);
        bool criticFinite = float.IsFinite(critic[0]) && AllFinite(m.NonFinite, gradsD);
        if (!criticFinite) return new StepStats(critic[0], float.NaN, critic[1], critic[2], critic[3], false, false);
        m.AdamD.Update(gradsD);

        var (lossG, gradsG) = GeneratorLoss(m.G, m.D, latents2, level, alpha, m.GeneratorGradients);
        Span<float> generator = [lossG.Item()];
        m.GeneratorAverager?.Average(gradsG, generator);
        bool generatorFinite = float.IsFinite(generator[0]) && AllFinite(m.NonFinite, gradsG);
        if (generatorFinite)
        {
            m.AdamG.Update(gradsG);
            Ema.Update(m.GEma.Parameters(), m.G.Parameters(), emaBeta);
        }
        return new StepStats(critic[0], generator[0], critic[1], critic[2], critic[3], criticFinite, generatorFinite);
    }

    /// <summary>True if every value of every tensor is finite: one reduction kernel per tensor
    /// into <paramref name="counter"/>, and one read.</summary>
    public static bool AllFinite(NonFiniteCounter counter, IReadOnlyList<Tensor> tensors)
    {
        counter.Reset();
        counter.Add(tensors);
        return counter.Read() == 0;
    }
}
