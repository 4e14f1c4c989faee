using RawGan.Engine;
using RawGan.Engine.Autograd;
using RawGan.Engine.Backends;
using RawGan.ProGan.Model;

namespace RawGan.ProGan.Training;

/// <summary>
/// Runs training steps, as one CUDA graph each where the backend can capture one.
///
/// A step's inputs live on the device at fixed addresses (<see cref="Inputs"/>): the reals, the
/// latents, the penalty's mixing weights and, during a fade-in, alpha (one value per sample). The
/// caller uploads the next values into them, then calls <see cref="Run"/>, which runs the step in
/// one of three ways:
/// <list type="number">
/// <item>the first step of a configuration (resolution, fade, batch, learning rates, EMA beta)
/// runs as it comes, kernel by kernel: it fills the allocator's cache with exactly the blocks the
/// step needs;</item>
/// <item>the second is captured (<see cref="IBackend.CaptureGraph"/>: the same C# code runs, its
/// launches are recorded, none runs, nothing is allocated from the device), then replayed;</item>
/// <item>every later one is a replay: one cuGraphLaunch instead of a thousand launches.</item>
/// </list>
/// The graph reads everything that changes from step to step from the device (inputs, alpha,
/// Adam's step count, the skip decision), so a replay computes exactly what the eager step would:
/// the same kernels with the same arguments on the same buffers (the emulator's tests compare the
/// two bit for bit). A configuration change, or <see cref="Invalidate"/> (a rollback, a resume),
/// drops the graph. The CPU backends run every step eagerly, through the same code.
/// </summary>
public sealed class StepRunner : IDisposable
{
    private readonly GanModels _models;
    private readonly IBackend _backend;
    private StepInputs? _inputs;
    private IStepGraph? _graph;
    private Key? _graphKey, _warmKey;

    private readonly record struct Key(StepInputs Inputs, int Level, bool FadeIn, float EmaBeta, float LearningRateG, float LearningRateD);

    /// <param name="models">The networks and optimizers the steps update.</param>
    /// <param name="useGraphs">Capture and replay where the backend can (false: every step eager,
    /// for comparison: `--graphs off`).</param>
    public StepRunner(GanModels models, bool useGraphs = true)
    {
        _models = models;
        _backend = models.G.Backend;
        // Several ranks average their gradients through the host inside the step: not capturable.
        UsesGraphs = useGraphs && _backend.SupportsGraphs && models.Collective.Size == 1;
    }

    /// <summary>Whether steps are captured and replayed (false after a capture failed).</summary>
    public bool UsesGraphs { get; private set; }

    /// <summary>Whether the last step ran as a replay of a graph.</summary>
    public bool LastRanAsGraph { get; private set; }

    /// <summary>Steps run eagerly, graphs captured, and replays so far.</summary>
    public long EagerSteps { get; private set; }
    public long Captures { get; private set; }
    public long Replays { get; private set; }

    /// <summary>The graph in use, if any (its size, for `bench`).</summary>
    public IStepGraph? Graph => _graph;

    /// <summary>The device tensors a step reads, for <paramref name="share"/> samples of
    /// <paramref name="channels"/> x <paramref name="resolution"/>^2 and latents of
    /// <paramref name="latentSize"/>: the same ones while the shapes stay (a new shape drops the graph).</summary>
    public StepInputs Inputs(int share, int channels, int resolution, int latentSize)
    {
        if (_inputs is { } i && i.Matches(share, channels, resolution, latentSize)) return i;
        Invalidate();
        _inputs?.Dispose();
        return _inputs = new StepInputs(_backend, share, channels, resolution, latentSize);
    }

    /// <summary>One step on the current <see cref="Inputs"/>; waits for it and returns what it measured.</summary>
    public StepStats Run(int level, bool fadeIn, float emaBeta)
    {
        if (InFlight > 0) throw new InvalidOperationException($"StepRunner.Run: {InFlight} step(s) still in flight (Finish them first)");
        Launch(level, fadeIn, emaBeta);
        return Finish();
    }

    /// <summary>Steps queued by <see cref="Launch"/> whose statistics <see cref="Finish"/> has not
    /// returned yet (0, 1 or 2).</summary>
    public int InFlight { get; private set; }

    /// <summary>Steps launched while another was still in flight (the trainer's look-ahead).</summary>
    public long LaunchedAhead { get; private set; }

    /// <summary>
    /// Queues one step on the current <see cref="Inputs"/> and begins reading its statistics, then
    /// returns without waiting for the device. A second step may be launched before the first is
    /// finished (upload its inputs first: the uploads, like everything else, run in stream order,
    /// after the first step has read its own); <see cref="Finish"/> returns the statistics in launch
    /// order. So the host prepares step t + 1 while the device runs step t, and reads step t's
    /// statistics only when step t + 1 is already queued: the device never waits for the host
    /// between steps.
    /// </summary>
    public void Launch(int level, bool fadeIn, float emaBeta)
    {
        if (InFlight == _reads.Length) throw new InvalidOperationException($"StepRunner.Launch: {InFlight} steps in flight already (Finish one first)");
        if (InFlight > 0) LaunchedAhead++;
        Enqueue(level, fadeIn, emaBeta);
        var read = _reads[(_oldest + InFlight) % _reads.Length] ??= _backend.CreateAsyncRead(GanModels.StatisticsLength);
        read.Begin(_models.Statistics);
        InFlight++;
    }

    /// <summary>Waits for the oldest step in flight and returns its statistics.</summary>
    public StepStats Finish()
    {
        if (InFlight == 0) throw new InvalidOperationException("StepRunner.Finish: no step in flight");
        Span<float> values = stackalloc float[GanModels.StatisticsLength];
        _reads[_oldest]!.Wait(values);
        _oldest = (_oldest + 1) % _reads.Length;
        InFlight--;
        return WganGp.StepStatsOf(values);
    }

    /// <summary>Waits for every step in flight and forgets their statistics (before a rollback
    /// reloads the weights those steps updated).</summary>
    public void Discard()
    {
        while (InFlight > 0) Finish();
    }

    private readonly IAsyncRead?[] _reads = new IAsyncRead?[2];
    private int _oldest;

    private void Enqueue(int level, bool fadeIn, float emaBeta)
    {
        var inputs = _inputs ?? throw new InvalidOperationException("StepRunner.Launch: no inputs yet (call Inputs first)");
        var key = new Key(inputs, level, fadeIn, emaBeta, _models.AdamG.LearningRate, _models.AdamD.LearningRate);
        LastRanAsGraph = false;
        if (_graph != null && _graphKey == key)
        {
            _graph.Replay();
            Replays++;
            LastRanAsGraph = true;
        }
        else if (UsesGraphs && _warmKey == key && TryCapture(key, inputs, level, fadeIn, emaBeta))
        {
            _graph!.Replay();
            Replays++;
            LastRanAsGraph = true;
        }
        else
        {
            if (_graph != null && _graphKey != key) Invalidate();
            Body(inputs, level, fadeIn, emaBeta);
            _warmKey = key;
            EagerSteps++;
        }
    }

    /// <summary>Captures the step, or, if the driver refuses (a step that still waits for the host
    /// somewhere), says why in <see cref="GraphFailure"/> and runs every later step eagerly: a
    /// graph is a speed-up, never a reason to stop training.</summary>
    private bool TryCapture(Key key, StepInputs inputs, int level, bool fadeIn, float emaBeta)
    {
        _graph?.Dispose();
        _graph = null;
        try
        {
            _graph = _backend.CaptureGraph(() => Body(inputs, level, fadeIn, emaBeta));
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            GraphFailure = e.Message;
            UsesGraphs = false;
            return false;
        }
        _graphKey = key;
        Captures++;
        return true;
    }

    /// <summary>Why capturing failed, if it did (steps then run eagerly).</summary>
    public string? GraphFailure { get; private set; }

    private void Body(StepInputs inputs, int level, bool fadeIn, float emaBeta)
    {
        // Recycling: nothing of the step is used after it, and identical steps then allocate nothing.
        using var scope = Scope.Rent(recycle: true);
        var fade = fadeIn ? Fade.OnDevice(inputs.Alpha) : Fade.None;
        var reals = inputs.Reals;
        // During a fade-in the critic sees reals blended the same way as the generator's output.
        if (fadeIn) reals = fade.Blend(Ops.Upsample2x(Ops.AvgPool2x(reals)), reals);
        WganGp.EnqueueStep(_models, reals, inputs.Latents, inputs.Mix, inputs.Latents2, level, fade, emaBeta);
    }

    /// <summary>Drops the graph: the next step runs eagerly (weights reloaded, a new phase).</summary>
    public void Invalidate()
    {
        _graph?.Dispose();
        _graph = null;
        _graphKey = null;
        _warmKey = null;
    }

    public void Dispose()
    {
        Discard();
        Invalidate();
        _inputs?.Dispose();
        _inputs = null;
        for (int i = 0; i < _reads.Length; i++)
        {
            _reads[i]?.Dispose();
            _reads[i] = null;
        }
    }
}

/// <summary>The device tensors one training step reads (see <see cref="StepRunner"/>).</summary>
public sealed class StepInputs : IDisposable
{
    internal StepInputs(IBackend backend, int share, int channels, int resolution, int latentSize)
    {
        Reals = Tensor.Zeros(backend, new Shape(share, channels, resolution, resolution)).Escape();
        Latents = Tensor.Zeros(backend, new Shape(share, latentSize)).Escape();
        Mix = Tensor.Zeros(backend, new Shape(share)).Escape();
        Latents2 = Tensor.Zeros(backend, new Shape(share, latentSize)).Escape();
        Alpha = Tensor.Zeros(backend, new Shape(share)).Escape();
    }

    /// <summary>[N, C, R, R]: the minibatch of reals, in [-1, 1], before any fade blend.</summary>
    public Tensor Reals { get; }
    /// <summary>[N, latent]: the critic step's latents.</summary>
    public Tensor Latents { get; }
    /// <summary>[N]: the penalty's mixing weights t ~ U[0, 1).</summary>
    public Tensor Mix { get; }
    /// <summary>[N, latent]: the generator step's latents.</summary>
    public Tensor Latents2 { get; }
    /// <summary>[N]: alpha during a fade-in, the same value for every sample.</summary>
    public Tensor Alpha { get; }

    /// <summary>Sets alpha for every sample (an upload of N floats).</summary>
    public void SetAlpha(float alpha)
    {
        int n = (int)Alpha.Length;
        float[] host = _alphaHost.Length == n ? _alphaHost : _alphaHost = new float[n];
        Array.Fill(host, alpha);
        Alpha.CopyFrom(host);
    }
    private float[] _alphaHost = [];

    internal bool Matches(int share, int channels, int resolution, int latentSize) =>
        Reals.Shape == new Shape(share, channels, resolution, resolution) && Latents.Shape == new Shape(share, latentSize);

    public void Dispose()
    {
        Reals.Dispose(); Latents.Dispose(); Mix.Dispose(); Latents2.Dispose(); Alpha.Dispose();
    }
}
