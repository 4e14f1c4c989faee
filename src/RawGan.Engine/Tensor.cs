using RawGan.Engine.Autograd;
using RawGan.Engine.Backends;

namespace RawGan.Engine;

/// <summary>
/// Memory shared by a tensor and its reshaped views. Freed when the last of them is disposed;
/// the object itself is then reused for the next tensor (a training step makes hundreds). Only
/// live tensors refer to a storage: a tensor drops its reference when disposed.
/// </summary>
internal sealed class Storage
{
    private const int MaxPooled = 4096;
    [ThreadStatic] private static Stack<Storage>? _free;

    public IBackend Backend { get; private set; } = null!;
    public DeviceBuffer Buffer { get; private set; }
    private int _references;

    private Storage() { }

    public static Storage Rent(IBackend backend, DeviceBuffer buffer)
    {
        var s = (_free ??= new()).TryPop(out var pooled) ? pooled : new Storage();
        s.Backend = backend;
        s.Buffer = buffer;
        s._references = 1;
        return s;
    }

    public void AddReference() => Interlocked.Increment(ref _references);

    public void Release()
    {
        if (Interlocked.Decrement(ref _references) != 0) return;
        Backend.Free(Buffer);
        Backend = null!;
        Buffer = default;
        if ((_free ??= new()).Count < MaxPooled) _free.Push(this);
    }
}

/// <summary>
/// A float32 tensor of rank 0 to 4, contiguous and row-major (NCHW for images), living on one
/// backend. Made inside a <see cref="Scope"/>, it is freed when the scope ends; made outside any
/// scope (or escaped from one), it lives until disposed. Gradient flow: a leaf with
/// <see cref="RequiresGrad"/> set, or the result of an op on such tensors, is tracked by the tape.
/// </summary>
public sealed class Tensor : IDisposable
{
    private const int MaxRecycled = 8192;
    [ThreadStatic] private static Stack<Tensor>? _recycled;

    private IBackend _backend;
    private Storage? _storage;          // null once disposed
    private bool _leafRequiresGrad;
    private bool _disposed;

    /// <summary>How many times this object has been handed out again by a recycling
    /// <see cref="Scope"/>; a node remembers its inputs' generations, so that a backward pass
    /// through an input that was recycled meanwhile fails instead of reading another tensor.</summary>
    internal int Generation;

    /// <summary>The op that made this tensor, if the tape recorded it.</summary>
    public Node? GradFn { get; internal set; }

    internal Scope? Owner;

    public Shape Shape { get; private set; }
    public IBackend Backend => _backend;
    public long Length => Shape.Length;

    /// <summary>Optional name used in error messages and checkpoints.</summary>
    public string? Name { get; set; }

    /// <summary>Gradient accumulated by <see cref="Tape.Backward"/> (leaves only); owned by this tensor.</summary>
    public Tensor? Grad { get; internal set; }

    internal Tensor(Storage storage, Shape shape, bool track = true)
    {
        _storage = storage;
        _backend = storage.Backend;
        Shape = shape;
        if (track) Scope.Current?.Track(this);
    }

    /// <summary>A tensor owned by the current scope: inside a recycling scope, an object that an
    /// ended recycling scope gave back; otherwise a new one.</summary>
    internal static Tensor Create(Storage storage, Shape shape)
    {
        var scope = Scope.Current;
        if (scope is not { Recycles: true } || _recycled is not { Count: > 0 } pool) return new Tensor(storage, shape);
        var t = pool.Pop();
        t._storage = storage;
        t._backend = storage.Backend;
        t.Shape = shape;
        t._disposed = false;
        scope.Track(t);
        return t;
    }

    /// <summary>Called by a recycling scope on a tensor it has just freed: the object may now become
    /// another tensor. Everything a user could have set is cleared.</summary>
    internal void Recycle()
    {
        Generation++;
        Name = null;
        _leafRequiresGrad = false;
        if ((_recycled ??= new()).Count < MaxRecycled) _recycled.Push(this);
    }

    /// <summary>The backend memory. Throws if the tensor has been freed (use after the end of its scope).</summary>
    public DeviceBuffer Buffer
    {
        get
        {
            if (_disposed)
                throw new ObjectDisposedException(nameof(Tensor), $"tensor {Describe()} was used after it was freed (did its Scope end?)");
            return _storage!.Buffer;
        }
    }


    public bool IsDisposed => _disposed;

    /// <summary>
    /// True if gradients flow to or through this tensor. Settable on leaves only (tensors no op
    /// made), which is how parameters are marked.
    /// </summary>
    public bool RequiresGrad
    {
        get => _leafRequiresGrad || GradFn != null;
        set
        {
            if (GradFn != null)
                throw new InvalidOperationException($"RequiresGrad can only be set on a leaf tensor; {Describe()} was made by {GradFn.Op}");
            _leafRequiresGrad = value;
        }
    }

    public bool IsLeaf => GradFn == null;

    public Dims4 Dims => Shape.ToDims4();

    /// <summary>How many of the values are NaN or infinite (one reduction kernel; reads one number
    /// back). To check many tensors with one read, add them to a <see cref="NonFiniteCounter"/>.</summary>
    public long CountNonFinite()
    {
        using var counter = new NonFiniteCounter(Backend);
        counter.Add(this);
        return counter.Read();
    }

    // ------------------------------------------------------------------ making tensors

    /// <summary>Uninitialised memory of the given shape (for ops that overwrite every element).</summary>
    public static Tensor Empty(IBackend backend, Shape shape)
    {
        var buffer = backend.Allocate(shape.Length);
        return Create(Storage.Rent(backend, buffer), shape);
    }

    public static Tensor Zeros(IBackend backend, Shape shape) => Full(backend, shape, 0f);

    public static Tensor Ones(IBackend backend, Shape shape) => Full(backend, shape, 1f);

    public static Tensor Full(IBackend backend, Shape shape, float value)
    {
        var t = Empty(backend, shape);
        backend.Fill(t.Buffer, t.Length, value);
        return t;
    }

    public static Tensor FromArray(IBackend backend, ReadOnlySpan<float> data, Shape shape)
    {
        if (data.Length != shape.Length)
            throw new ArgumentException($"FromArray: {data.Length} values do not fill shape {shape} ({shape.Length} elements)");
        var t = Empty(backend, shape);
        backend.Upload(data, t.Buffer);
        return t;
    }

    public static Tensor Scalar(IBackend backend, float value) => FromArray(backend, [value], new Shape());

    /// <summary>Samples from N(0, 1) drawn by the host RNG: the same values on every backend.</summary>
    public static Tensor RandomNormal(IBackend backend, Shape shape, Rng rng)
    {
        // A pooled host buffer: a training step draws its latents every step.
        var host = System.Buffers.ArrayPool<float>.Shared.Rent(checked((int)shape.Length));
        try
        {
            var values = host.AsSpan(0, (int)shape.Length);
            rng.FillNormal(values);
            return FromArray(backend, values, shape);
        }
        finally
        {
            System.Buffers.ArrayPool<float>.Shared.Return(host);
        }
    }

    /// <summary>Samples from U[0, 1) drawn by the host RNG.</summary>
    public static Tensor RandomUniform(IBackend backend, Shape shape, Rng rng)
    {
        var host = System.Buffers.ArrayPool<float>.Shared.Rent(checked((int)shape.Length));
        try
        {
            var values = host.AsSpan(0, (int)shape.Length);
            rng.FillUniform(values);
            return FromArray(backend, values, shape);
        }
        finally
        {
            System.Buffers.ArrayPool<float>.Shared.Return(host);
        }
    }

    /// <summary>A tensor on the same memory with another shape (no copy). Used by Ops.Reshape.</summary>
    internal Tensor View(Shape shape)
    {
        _ = Buffer; // throws if freed
        _storage!.AddReference();
        return Create(_storage, shape);
    }

    /// <summary>A new tensor (in the current scope) with a copy of the values and no gradient history.</summary>
    public Tensor Clone()
    {
        var t = Empty(Backend, Shape);
        Backend.Copy(Buffer, t.Buffer, Length);
        return t;
    }

    /// <summary>The same values on another backend (a copy through the host).</summary>
    public Tensor To(IBackend backend) => FromArray(backend, ToArray(), Shape);

    // ------------------------------------------------------------------ reading back

    public float[] ToArray()
    {
        var host = new float[Length];
        Backend.Download(Buffer, host);
        return host;
    }

    /// <summary>The value of a one-element tensor.</summary>
    public float Item()
    {
        if (Length != 1) throw new InvalidOperationException($"Item() needs a one-element tensor, {Describe()} has {Length}");
        Span<float> one = stackalloc float[1];
        Backend.Download(Buffer, one);
        return one[0];
    }

    /// <summary>Overwrite the values from host memory.</summary>
    public void CopyFrom(ReadOnlySpan<float> data)
    {
        if (data.Length != Length)
            throw new ArgumentException($"CopyFrom: {data.Length} values for {Describe()}");
        Backend.Upload(data, Buffer);
    }

    /// <summary>Overwrite the values from another tensor of the same shape and backend.</summary>
    public void CopyFrom(Tensor source)
    {
        if (source.Shape != Shape || source.Backend != Backend)
            throw new ArgumentException($"CopyFrom: {source.Describe()} does not match {Describe()}");
        Backend.Copy(source.Buffer, Buffer, Length);
    }

    /// <summary>Drop the accumulated gradient (before the next backward pass).</summary>
    public void ZeroGrad()
    {
        Grad?.Dispose();
        Grad = null;
    }

    internal void AccumulateGrad(Tensor g)
    {
        if (Grad == null)
        {
            var copy = new Tensor(Storage.Rent(Backend, Backend.Allocate(Length)), Shape, track: false) { Name = Name == null ? null : Name + ".grad" };
            Backend.Copy(g.Buffer, copy.Buffer, Length);
            Grad = copy;
        }
        else
        {
            var d = Dims;
            Backend.Add(Grad.Buffer, d, g.Buffer, d, Grad.Buffer, d);
        }
    }

    /// <summary>Removes the tensor from its scope: the caller now owns it and must dispose it.</summary>
    public Tensor Escape()
    {
        Owner?.Untrack(this);
        Owner = null;
        return this;
    }

    public string Describe() => Name != null ? $"'{Name}' {Shape}" : Shape.ToString();

    public override string ToString() => $"Tensor{Describe()} on {Backend.Name}";

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        Owner?.Untrack(this);
        Owner = null;
        _storage!.Release();
        _storage = null;
        // The node that made this tensor is of no further use: it goes back to its pool.
        if (GradFn is { } node)
        {
            GradFn = null;
            node.Recycle();
        }
        Grad?.Dispose();
        Grad = null;
    }

    // ------------------------------------------------------------------ operators (the differentiable Ops)

    public static Tensor operator +(Tensor a, Tensor b) => Ops.Add(a, b);
    public static Tensor operator -(Tensor a, Tensor b) => Ops.Sub(a, b);
    public static Tensor operator *(Tensor a, Tensor b) => Ops.Mul(a, b);
    public static Tensor operator /(Tensor a, Tensor b) => Ops.Div(a, b);
    public static Tensor operator *(Tensor a, float s) => Ops.Scale(a, s);
    public static Tensor operator *(float s, Tensor a) => Ops.Scale(a, s);
    public static Tensor operator +(Tensor a, float s) => Ops.AddScalar(a, s);
    public static Tensor operator -(Tensor a, float s) => Ops.AddScalar(a, -s);
    public static Tensor operator -(Tensor a) => Ops.Scale(a, -1f);
}
