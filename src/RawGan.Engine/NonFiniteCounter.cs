using RawGan.Engine.Backends;

namespace RawGan.Engine;

/// <summary>
/// A 64-bit count of NaN and infinite values, kept on the device: many tensors add to it (one
/// reduction kernel each, no copy back), and the host reads it once. A training step checks
/// its losses and every gradient this way with one round trip to the device instead of one per
/// tensor. Reusable: <see cref="Reset"/> zeroes it (a kernel, no copy).
/// </summary>
public sealed class NonFiniteCounter : IDisposable
{
    private readonly IBackend _backend;
    private readonly DeviceBuffer _count;

    public NonFiniteCounter(IBackend backend)
    {
        _backend = backend;
        _count = backend.Allocate(2);
        Reset();
    }

    /// <summary>The counter's storage: a 64-bit integer in two floats (what kernels that skip
    /// work on a non-finite count read).</summary>
    public DeviceBuffer Buffer => _count;

    public void Reset() => _backend.Fill(_count, 2, 0f);   // the bits of 0f are those of a 64-bit 0

    public void Add(Tensor t)
    {
        if (!ReferenceEquals(t.Backend, _backend))
            throw new ArgumentException($"NonFiniteCounter: {t.Describe()} is on {t.Backend.Name}, the counter on {_backend.Name}");
        Add(t.Buffer, t.Length);
    }

    /// <summary>Adds the first <paramref name="n"/> values of a buffer of this counter's backend.</summary>
    public void Add(DeviceBuffer values, long n) => _backend.CountNonFinite(values, n, _count);

    /// <summary>Copies the count so far into two floats of <paramref name="destination"/>, on the
    /// device (a step keeps its counts for one read at its end).</summary>
    public void CopyTo(DeviceBuffer destination) => _backend.Copy(_count, destination, 2);

    /// <summary>Adds every tensor of a list (walked by index: nothing is allocated).</summary>
    public void Add(IReadOnlyList<Tensor> tensors)
    {
        for (int i = 0; i < tensors.Count; i++) Add(tensors[i]);
    }

    /// <summary>The count so far: waits for the kernels and copies 8 bytes back.</summary>
    public long Read()
    {
        Span<float> host = stackalloc float[2];
        _backend.Download(_count, host);
        return System.Runtime.InteropServices.MemoryMarshal.Read<long>(System.Runtime.InteropServices.MemoryMarshal.AsBytes(host));
    }

    public void Dispose() => _backend.Free(_count);
}
