namespace RawGan.Engine.Optim;

/// <summary>
/// Adam (Kingma and Ba 2015) in TensorFlow's form (the bias corrections folded into the step
/// size, eps added to sqrt(v) unscaled), one fused kernel per parameter tensor. The defaults are
/// ProGAN's (lr 0.001, beta1 0, beta2 0.99, eps 1e-8; its appendix A.1). The moments are tensors
/// of their own, so a trainer can save them and reset them (ProGAN does at every phase).
/// </summary>
public sealed class Adam : IDisposable
{
    private readonly IReadOnlyList<Tensor> _parameters;
    private readonly Tensor[] _m, _v;

    public Adam(IReadOnlyList<Tensor> parameters, float learningRate = 0.001f, float beta1 = 0f, float beta2 = 0.99f, float epsilon = 1e-8f)
    {
        _parameters = parameters;
        LearningRate = learningRate;
        Beta1 = beta1;
        Beta2 = beta2;
        Epsilon = epsilon;
        _m = parameters.Select(p => Tensor.Zeros(p.Backend, p.Shape).Escape()).ToArray();
        _v = parameters.Select(p => Tensor.Zeros(p.Backend, p.Shape).Escape()).ToArray();
    }

    public float LearningRate { get; set; }
    public float Beta1 { get; }
    public float Beta2 { get; }
    public float Epsilon { get; }
    /// <summary>Updates since the last reset (t in Adam's bias corrections).</summary>
    public int Step { get; set; }

    public IReadOnlyList<Tensor> FirstMoments => _m;
    public IReadOnlyList<Tensor> SecondMoments => _v;

    /// <summary>Applies one update with <paramref name="gradients"/> (one per parameter, same order).</summary>
    public void Update(IReadOnlyList<Tensor> gradients)
    {
        if (gradients.Count != _parameters.Count)
            throw new ArgumentException($"Adam: {gradients.Count} gradients for {_parameters.Count} parameters");
        Step++;
        for (int i = 0; i < _parameters.Count; i++)
        {
            var p = _parameters[i];
            p.Backend.AdamUpdate(p.Buffer, gradients[i].Buffer, _m[i].Buffer, _v[i].Buffer, p.Length, LearningRate, Beta1, Beta2, Epsilon, Step);
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
    }
}
