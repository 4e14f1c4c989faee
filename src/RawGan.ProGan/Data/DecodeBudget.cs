using RawGan.Engine;

namespace RawGan.ProGan.Data;

/// <summary>
/// The memory that decoding pictures in parallel may take at once. Each decode asks for its
/// estimated cost (from the file's header: the file itself, the decoder's working memory, the
/// decoded picture and the copies the preparation makes of it) before it starts and gives it back when it
/// ends; a decode that does not fit waits until others finish, and one that could never fit is
/// refused. So a few small files that announce large pictures are decoded one after another, or
/// skipped with the memory they would need, instead of all at once.
/// </summary>
public sealed class DecodeBudget
{
    private readonly object _gate = new();
    private long _inUse;

    public DecodeBudget(long bytes)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(bytes, 1L);
        Bytes = bytes;
    }

    /// <summary>A quarter of the memory available now, at least 256 MB and at most 16 GB.</summary>
    public static DecodeBudget FromAvailableMemory() =>
        new(Math.Clamp(SystemMemory.AvailableBytes / 4, 256L << 20, 16L << 30));

    /// <summary>The most that decodes may hold together.</summary>
    public long Bytes { get; }

    /// <summary>The most that was held at once so far (for tests and reports).</summary>
    public long PeakInUse { get; private set; }

    /// <summary>Waits until <paramref name="cost"/> bytes fit beside the decodes in progress (at
    /// once when none is), then holds them until the returned scope is disposed. False (holding
    /// nothing) when the cost exceeds the whole budget.</summary>
    public bool TryAcquire(long cost, out Lease lease)
    {
        lease = default;
        if (cost > Bytes) return false;
        cost = Math.Max(cost, 0);
        lock (_gate)
        {
            while (_inUse > 0 && _inUse + cost > Bytes) Monitor.Wait(_gate);
            _inUse += cost;
            PeakInUse = Math.Max(PeakInUse, _inUse);
        }
        lease = new Lease(this, cost);
        return true;
    }

    private void Release(long cost)
    {
        lock (_gate)
        {
            _inUse -= cost;
            Monitor.PulseAll(_gate);
        }
    }

    /// <summary>Bytes held by one decode; disposing gives them back.</summary>
    public readonly struct Lease(DecodeBudget? budget, long cost) : IDisposable
    {
        public void Dispose() => budget?.Release(cost);
    }
}
