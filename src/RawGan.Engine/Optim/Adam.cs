namespace RawGan.Engine.Optim;

/// <summary>
/// Adam (Kingma and Ba 2015) in TensorFlow's form (the bias corrections folded into the step
/// size, eps added to sqrt(v) unscaled), one fused kernel per parameter tensor. The defaults are
/// ProGAN's (lr 0.001, beta1 0, beta2 0.99, eps 1e-8; its appendix A.1). The moments are tensors
/// of their own, so a trainer can save them and reset them (ProGAN does at every phase). The step
/// count t lives on the device too, and an update can be skipped on the device by a non-finite
/// count (<see cref="Update"/>): a training step makes its decisions without waiting for the host,
/// and the same launches can be captured once and replayed (a CUDA graph).
/// </summary>
public sealed class Adam : IDisposable
{
    private readonly IReadOnlyList<Tensor> _parameters;
    private readonly Tensor[] _m, _v;
    private readonly Backends.IBackend _backend;
    private readonly Backends.DeviceBuffer _step;   // t, an int in one float's storage

    public Adam(IReadOnlyList<Tensor> parameters, float learningRate = 0.001f, float beta1 = 0f, float beta2 = 0.99f, float epsilon = 1e-8f)
    {
        _parameters = parameters;
        LearningRate = learningRate;
        Beta1 = beta1;
        Beta2 = beta2;
        Epsilon = epsilon;
        _m = parameters.Select(p => Tensor.Zeros(p.Backend, p.Shape).Escape()).ToArray();
        _v = parameters.Select(p => Tensor.Zeros(p.Backend, p.Shape).Escape()).ToArray();
        _backend = parameters.Count > 0 ? parameters[0].Backend : throw new ArgumentException("Adam: no parameters to update");
        _step = _backend.Allocate(1);
        Step = 0;
    }

    public float LearningRate { get; set; }
    public float Beta1 { get; }
    public float Beta2 { get; }
    public float Epsilon { get; }
    /// <summary>Updates since the last reset (t in Adam's bias corrections), skipped ones not
    /// counted. Kept on the device: reading it waits for the device and copies 4 bytes back.</summary>
    public int Step
    {
        get
        {
            Span<float> host = stackalloc float[1];
            _backend.Download(_step, host);
            return BitConverter.SingleToInt32Bits(host[0]);
        }
        set
        {
            if (value < 0) throw new ArgumentOutOfRangeException(nameof(value), $"Adam: a step count cannot be negative, got {value}");
            Span<float> host = [BitConverter.Int32BitsToSingle(value)];
            _backend.Upload(host, _step);
        }
    }

    public IReadOnlyList<Tensor> FirstMoments => _m;
    public IReadOnlyList<Tensor> SecondMoments => _v;

    /// <summary>Applies one update with <paramref name="gradients"/> (one per parameter, same
    /// order), unless <paramref name="skipIfNonFinite"/> has counted a non-finite value: then the
    /// parameters, the moments and the step count stay as they are. Decided on the device. With
    /// <paramref name="countNonFinite"/>, the update kernels add to it how many of the new
    /// parameters and moments are not finite (nothing when the update is skipped).</summary>
    public void Update(IReadOnlyList<Tensor> gradients, NonFiniteCounter? skipIfNonFinite = null, NonFiniteCounter? countNonFinite = null)
    {
        if (gradients.Count != _parameters.Count)
            throw new ArgumentException($"Adam: {gradients.Count} gradients for {_parameters.Count} parameters");
        var skip = skipIfNonFinite?.Buffer ?? Backends.DeviceBuffer.Null;
        var count = countNonFinite?.Buffer ?? Backends.DeviceBuffer.Null;
        _backend.AdamStep(_step, skip);
        for (int i = 0; i < _parameters.Count; i++)
        {
            var p = _parameters[i];
            p.Backend.AdamUpdate(p.Buffer, gradients[i].Buffer, _m[i].Buffer, _v[i].Buffer, p.Length, LearningRate, Beta1, Beta2, Epsilon, _step, skip, count);
        }
    }

    /// <summary>Zero the moments and the step count (start of a phase).</summary>
    public void Reset()
    {
        Step = 0;
        foreach (var t in _m.Concat(_v)) t.Backend.Fill(t.Buffer, t.Length, 0f);
    }

    public void Dispose()
    {
        foreach (var t in _m.Concat(_v)) t.Dispose();
        _backend.Free(_step);
    }
}
