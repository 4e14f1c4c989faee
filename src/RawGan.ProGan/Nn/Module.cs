using RawGan.Engine;

namespace RawGan.ProGan.Nn;

/// <summary>
/// A bag of named parameters. Names are PyTorch-style paths ("blocks.3.conv1.weight"), which is
/// what checkpoints store, so the weights load elsewhere with nothing but this name table.
/// Parameters are leaves that require gradients and live until the module is disposed.
/// </summary>
public abstract class Module : IDisposable
{
    private readonly List<(string name, Tensor tensor)> _parameters = new();
    private readonly List<(string name, Module module)> _children = new();
    // Parameters(), made once: a training step asks for them several times.
    private Tensor[]? _parameterArray;
    private IReadOnlyList<Tensor>? _parameterList;
    private bool _disposed;

    protected Tensor AddParameter(string name, Tensor tensor)
    {
        tensor.Escape();              // parameters never belong to a scope
        tensor.RequiresGrad = true;
        tensor.Name = name;
        _parameters.Add((name, tensor));
        (_parameterArray, _parameterList) = (null, null);
        return tensor;
    }

    protected T AddModule<T>(string name, T module) where T : Module
    {
        _children.Add((name, module));
        (_parameterArray, _parameterList) = (null, null);
        return module;
    }

    /// <summary>Every parameter below this module with its full dotted name, in a fixed order.</summary>
    public IEnumerable<(string Name, Tensor Tensor)> NamedParameters(string prefix = "")
    {
        foreach (var (name, t) in _parameters) yield return (prefix + name, t);
        foreach (var (name, child) in _children)
            foreach (var p in child.NamedParameters(prefix + name + "."))
                yield return p;
    }

    /// <summary>Every parameter below this module, in the order of <see cref="NamedParameters"/>.
    /// The same list on every call (modules are built once, in their constructors).</summary>
    public IReadOnlyList<Tensor> Parameters() => _parameterList ??= Array.AsReadOnly(ParameterArray);

    /// <summary><see cref="Parameters"/> as a span, for <see cref="RawGan.Engine.Autograd.Tape.GradInto"/>.</summary>
    public ReadOnlySpan<Tensor> ParameterSpan() => ParameterArray;

    private Tensor[] ParameterArray => _parameterArray ??= NamedParameters().Select(p => p.Tensor).ToArray();

    public long ParameterCount => NamedParameters().Sum(p => p.Tensor.Length);

    /// <summary>Copies every parameter value from a module of the same architecture.</summary>
    public void CopyFrom(Module other)
    {
        var mine = NamedParameters().ToList();
        var theirs = other.NamedParameters().ToList();
        if (mine.Count != theirs.Count)
            throw new ArgumentException($"CopyFrom: {theirs.Count} parameters do not match {mine.Count}");
        for (int i = 0; i < mine.Count; i++)
        {
            if (mine[i].Name != theirs[i].Name || mine[i].Tensor.Shape != theirs[i].Tensor.Shape)
                throw new ArgumentException($"CopyFrom: {theirs[i].Name} {theirs[i].Tensor.Shape} does not match {mine[i].Name} {mine[i].Tensor.Shape}");
            mine[i].Tensor.CopyFrom(theirs[i].Tensor);
        }
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        foreach (var (_, t) in _parameters) t.Dispose();
        foreach (var (_, c) in _children) c.Dispose();
        GC.SuppressFinalize(this);
    }
}
