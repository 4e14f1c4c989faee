namespace RawGan.Engine.Backends;

/// <summary>
/// Keeps freed blocks for reuse instead of returning them to the system. A training step asks
/// for the same sizes every time, so after the first step every request is served from the
/// cache: no cudaMalloc (which synchronizes the device) and no native heap traffic.
///
/// Sizes are rounded up (to 256 floats, or to 64K floats above 1M floats) so that tensors of
/// nearly equal size share blocks. Thread-safe.
/// </summary>
public sealed class CachingAllocator
{
    private readonly Func<long, nint> _systemAllocate;   // bytes -> address
    private readonly Action<nint> _systemFree;
    private readonly Dictionary<long, Stack<nint>> _free = new();
    private readonly Dictionary<nint, long> _inUse = new();
    private readonly Lock _lock = new();
    private long _bytesInUse, _bytesCached, _peak, _systemAllocations, _systemFrees, _cacheHits;

    public CachingAllocator(Func<long, nint> systemAllocate, Action<nint> systemFree)
    {
        _systemAllocate = systemAllocate;
        _systemFree = systemFree;
    }

    /// <summary>The rounded block length (in floats) that serves a request of <paramref name="length"/> floats.</summary>
    public static long RoundUp(long length)
    {
        const long small = 256, large = 64 * 1024, threshold = 1024 * 1024;
        long q = length <= threshold ? small : large;
        return Math.Max(q, (length + q - 1) / q * q);
    }

    public DeviceBuffer Allocate(long length)
    {
        if (length < 0) throw new ArgumentOutOfRangeException(nameof(length), $"cannot allocate {length} floats");
        long rounded = RoundUp(length);
        long bytes = rounded * sizeof(float);
        lock (_lock)
        {
            nint address;
            if (_free.TryGetValue(rounded, out var stack) && stack.Count > 0)
            {
                address = stack.Pop();
                _bytesCached -= bytes;
                _cacheHits++;
            }
            else
            {
                address = _systemAllocate(bytes);
                if (address == 0 && _bytesCached > 0)
                {
                    // Out of memory with blocks parked in the cache: give them back and retry once.
                    ReleaseCachedLocked();
                    address = _systemAllocate(bytes);
                }
                if (address == 0)
                    throw new OutOfMemoryException($"could not allocate {bytes:N0} bytes ({length:N0} floats); {_bytesInUse:N0} bytes are in use");
                _systemAllocations++;
            }
            _inUse.Add(address, rounded);
            _bytesInUse += bytes;
            _peak = Math.Max(_peak, _bytesInUse);
            return new DeviceBuffer(address, length);
        }
    }

    public void Free(DeviceBuffer buffer)
    {
        if (buffer.IsNull) return;
        lock (_lock)
        {
            if (!_inUse.Remove(buffer.Address, out long rounded))
                throw new InvalidOperationException($"buffer 0x{buffer.Address:x} was not allocated here or was freed twice");
            long bytes = rounded * sizeof(float);
            _bytesInUse -= bytes;
            _bytesCached += bytes;
            if (!_free.TryGetValue(rounded, out var stack)) _free[rounded] = stack = new Stack<nint>();
            stack.Push(buffer.Address);
        }
    }

    public void ReleaseCached()
    {
        lock (_lock) ReleaseCachedLocked();
    }

    private void ReleaseCachedLocked()
    {
        foreach (var stack in _free.Values)
        {
            while (stack.Count > 0)
            {
                _systemFree(stack.Pop());
                _systemFrees++;
            }
        }
        _bytesCached = 0;
    }

    /// <summary>Free everything, in use or cached (the backend is being disposed).</summary>
    public void ReleaseAll()
    {
        lock (_lock)
        {
            ReleaseCachedLocked();
            foreach (var address in _inUse.Keys)
            {
                _systemFree(address);
                _systemFrees++;
            }
            _inUse.Clear();
            _bytesInUse = 0;
        }
    }

    public MemoryStats Stats
    {
        get
        {
            lock (_lock) return new MemoryStats(_bytesInUse, _bytesCached, _peak, _systemAllocations, _systemFrees, _cacheHits);
        }
    }
}
