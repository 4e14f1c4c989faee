namespace RawGan.Engine;

/// <summary>
/// Owns every tensor made on this thread while it is the innermost open scope, and frees them all
/// when disposed. GPU memory cannot wait for the garbage collector, so a training step runs as
///
/// <code>
/// using (var scope = new Scope())
/// {
///     var loss = ...;             // temporaries: freed at the closing brace
///     Tape.Backward(loss);        // parameters' .Grad tensors are owned by the parameters
/// }
/// </code>
///
/// A result that must outlive the scope is handed to the enclosing one with <see cref="Keep"/>, or
/// to the caller with <see cref="Tensor.Escape"/>.
/// </summary>
public sealed class Scope : IDisposable
{
    [ThreadStatic] private static Scope? _current;
    // Lists of ended scopes, reused: a training step opens several scopes, and each list grows to
    // hundreds of entries.
    [ThreadStatic] private static Stack<List<Tensor>>? _freeLists;

    private readonly List<Tensor> _tensors = (_freeLists ??= new()).TryPop(out var list) ? list : new();
    private readonly Scope? _parent;
    private readonly int _thread;
    private bool _disposed;

    public Scope()
    {
        _parent = _current;
        _current = this;
        _thread = Environment.CurrentManagedThreadId;
    }

    /// <summary>The innermost open scope on this thread, or null.</summary>
    public static Scope? Current => _current;

    /// <summary>How many live tensors this scope owns.</summary>
    public int Count => _disposed ? 0 : _tensors.Count;

    internal void Track(Tensor t)
    {
        t.Owner = this;
        _tensors.Add(t);
    }

    internal void Untrack(Tensor t)
    {
        // Most untracked tensors are recent, so search from the end.
        int i = _tensors.LastIndexOf(t);
        if (i >= 0)
        {
            _tensors[i] = _tensors[^1];
            _tensors.RemoveAt(_tensors.Count - 1);
        }
    }

    /// <summary>Hands <paramref name="t"/> to the enclosing scope (or to the caller if there is none).</summary>
    public Tensor Keep(Tensor t)
    {
        if (t.Owner != this) return t;
        Untrack(t);
        t.Owner = null;
        _parent?.Track(t);
        return t;
    }

    public void Dispose()
    {
        if (_disposed) return;
        if (_current != this)
            throw new InvalidOperationException(Environment.CurrentManagedThreadId != _thread
                ? "a Scope must be disposed on the thread that opened it"
                : "scopes must be disposed innermost first");
        _disposed = true;
        _current = _parent;
        foreach (var t in _tensors)
        {
            t.Owner = null;
            t.Dispose();
        }
        _tensors.Clear();
        _freeLists!.Push(_tensors);
    }
}
