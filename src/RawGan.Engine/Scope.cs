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
///
/// <para>A recycling scope (<c>new Scope(recycle: true)</c>, and every scope opened inside one) also
/// gives its freed <see cref="Tensor"/> objects back for the next tensors to reuse, so a loop of
/// identical steps allocates nothing on the managed heap. The price is a promise: no reference to
/// a tensor of the scope is used after it ends (outside a recycling scope such a use fails with
/// "used after it was freed"; here it could see a newer tensor). A backward pass through a
/// recycled input is still caught.</para>
/// </summary>
public sealed class Scope : IDisposable
{
    [ThreadStatic] private static Scope? _current;
    // Lists of ended scopes, reused: a training step opens several scopes, and each list grows to
    // hundreds of entries.
    [ThreadStatic] private static Stack<List<Tensor>>? _freeLists;

    // Scopes from Rent, ended and waiting to be opened again.
    [ThreadStatic] private static Stack<Scope>? _freeScopes;

    private List<Tensor> _tensors = null!;
    private Scope? _parent;
    private int _thread;
    private bool _disposed, _rented;

    public Scope() : this(recycle: false) { }

    /// <param name="recycle">Give the freed tensor objects back for reuse (see the class comment).</param>
    public Scope(bool recycle) => Open(recycle);

    private Scope(bool recycle, bool rented)
    {
        _rented = rented;
        Open(recycle);
    }

    /// <summary>
    /// The same as <c>new Scope(recycle)</c>, but the scope object itself comes from a per-thread
    /// pool and returns to it when disposed, so opening one allocates nothing. The caller must not
    /// touch it after disposing it. The training step and the tape's own scratch scopes use this.
    /// </summary>
    public static Scope Rent(bool recycle = false)
    {
        if ((_freeScopes ??= new()).TryPop(out var scope))
        {
            scope.Open(recycle);
            return scope;
        }
        return new Scope(recycle, rented: true);
    }

    private void Open(bool recycle)
    {
        _tensors = (_freeLists ??= new()).TryPop(out var list) ? list : new();
        _parent = _current;
        Recycles = recycle || (_parent?.Recycles ?? false);
        _disposed = false;
        _current = this;
        _thread = Environment.CurrentManagedThreadId;
    }

    /// <summary>True if this scope, or one it is nested in, recycles its tensor objects.</summary>
    public bool Recycles { get; private set; }

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
            if (Recycles) t.Recycle();
        }
        _tensors.Clear();
        _freeLists!.Push(_tensors);
        _tensors = null!;
        _parent = null;
        if (_rented) _freeScopes!.Push(this);
    }
}
