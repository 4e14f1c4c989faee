using System.Runtime.InteropServices;

namespace RawGan.Engine.Backends.Reference;

/// <summary>
/// The one true reference: every kernel of <see cref="IBackend"/> as the plainest single-threaded
/// loops, written straight from the formula in the interface's summary, so that a reader can check
/// each one by eye. No SIMD, no threads, no tiling. Sums are accumulated in double and rounded
/// once when stored. Every other backend (CpuBackend included) is tested against this one.
///
/// This file: memory (one aligned native block per allocation, no cache). The kernels live in
/// one partial file per family (Elementwise, Broadcast, Gemm, Conv, Resample, Normalization,
/// Penalty, Optim).
/// </summary>
public sealed unsafe partial class ReferenceBackend : IBackend
{
    private readonly Dictionary<nint, long> _blocks = new();   // address -> bytes
    private readonly Lock _lock = new();
    private long _bytesInUse, _peak, _allocations, _frees;
    private bool _disposed;

    /// <summary>One shared instance is enough for a process; tests may make their own to count memory.</summary>
    public static ReferenceBackend Shared { get; } = new();

    public string Name => "reference";

    public string Description => "Reference: plain single-threaded loops, sums in double (slow, for tests)";

    /// <summary>The float array behind a buffer.</summary>
    private static float* P(DeviceBuffer b) => (float*)b.Address;

    // ------------------------------------------------------------------ memory

    public DeviceBuffer Allocate(long length)
    {
        if (length < 0) throw new ArgumentOutOfRangeException(nameof(length), $"cannot allocate {length} floats");
        long bytes = Math.Max(1, length) * sizeof(float);
        nint address = (nint)NativeMemory.AlignedAlloc((nuint)bytes, 64);
        lock (_lock)
        {
            _blocks.Add(address, bytes);
            _bytesInUse += bytes;
            _peak = Math.Max(_peak, _bytesInUse);
            _allocations++;
        }
        return new DeviceBuffer(address, length);
    }

    public void Free(DeviceBuffer buffer)
    {
        if (buffer.IsNull) return;
        lock (_lock)
        {
            if (!_blocks.Remove(buffer.Address, out long bytes))
                throw new InvalidOperationException($"buffer 0x{buffer.Address:x} was not allocated here or was freed twice");
            _bytesInUse -= bytes;
            _frees++;
        }
        NativeMemory.AlignedFree((void*)buffer.Address);
    }

    public void Upload(ReadOnlySpan<float> source, DeviceBuffer destination)
    {
        CheckLength(destination, source.Length, nameof(Upload));
        float* d = P(destination);
        for (int i = 0; i < source.Length; i++) d[i] = source[i];
    }

    public void Download(DeviceBuffer source, Span<float> destination)
    {
        CheckLength(source, destination.Length, nameof(Download));
        float* s = P(source);
        for (int i = 0; i < destination.Length; i++) destination[i] = s[i];
    }

    public void Copy(DeviceBuffer source, DeviceBuffer destination, long length)
    {
        CheckLength(source, length, nameof(Copy));
        CheckLength(destination, length, nameof(Copy));
        // A memmove, as on the CPU backend: right even if the two ranges overlap.
        Buffer.MemoryCopy(P(source), P(destination), destination.Length * sizeof(float), length * sizeof(float));
    }

    private static void CheckLength(DeviceBuffer b, long needed, string op)
    {
        if (b.Length < needed)
            throw new ArgumentException($"{op}: buffer holds {b.Length} floats, {needed} needed");
    }

    public void Synchronize() { }

    /// <summary>Nothing is cached: BytesCached and CacheHits stay 0, every Allocate is a system allocation.</summary>
    public MemoryStats Memory
    {
        get
        {
            lock (_lock) return new MemoryStats(_bytesInUse, 0, _peak, _allocations, _frees, 0);
        }
    }

    public void ReleaseCachedMemory() { }

    public void Dispose()
    {
        if (_disposed || ReferenceEquals(this, Shared)) return;
        _disposed = true;
        lock (_lock)
        {
            foreach (var address in _blocks.Keys)
            {
                NativeMemory.AlignedFree((void*)address);
                _frees++;
            }
            _blocks.Clear();
            _bytesInUse = 0;
        }
    }
}
