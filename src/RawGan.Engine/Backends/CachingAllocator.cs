namespace RawGan.Engine.Backends;

/// <summary>
/// Keeps freed blocks for reuse instead of returning them to the system. A training step asks
/// for the same sizes every time, so after the first step every request is served from the
/// cache: no cudaMalloc (which synchronizes the device) and no native heap traffic.
///
/// Sizes are rounded up (to 256 floats, or to 64K floats above 1M floats) so that tensors of
/// nearly equal size share blocks. Thread-safe.
///
/// <para>A captured step (a CUDA graph) writes, at every replay, into the blocks it was given while
/// it was captured, long after its tensors were freed. Those blocks must never be handed to anyone
/// else while the graph lives: <see cref="BeginPool"/> starts a private pool, every block
/// allocated while it is open belongs to it, and a block of the pool, when freed, returns to the
/// pool, never to the shared cache. Requests while the pool is open are served from its own free
/// blocks first (a step reuses what its earlier tensors freed), then from the shared cache.
/// <see cref="ReleasePool"/> (when the graph is destroyed) gives the blocks back.</para>
/// </summary>
public sealed class CachingAllocator
{
    /// <summary>Blocks reserved for one captured graph (see the class comment).</summary>
    public sealed class Pool
    {
        internal readonly Dictionary<long, Stack<nint>> Free = new();
        internal readonly HashSet<nint> Owned = new();
        internal bool Released;
        /// <summary>Bytes of the blocks the pool owns, in use or free.</summary>
        public long Bytes { get; internal set; }
    }

    private Pool? _open;
    private readonly Dictionary<nint, Pool> _owner = new();

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
            if (_open != null && _open.Free.TryGetValue(rounded, out var own) && own.Count > 0)
            {
                address = own.Pop();
                _bytesCached -= bytes;
                _cacheHits++;
            }
            else if (_free.TryGetValue(rounded, out var stack) && stack.Count > 0)
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
            if (_open != null && _open.Owned.Add(address))
            {
                _owner[address] = _open;
                _open.Bytes += bytes;
            }
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
            var free = _owner.TryGetValue(buffer.Address, out var pool) ? pool.Free : _free;
            if (!free.TryGetValue(rounded, out var stack)) free[rounded] = stack = new Stack<nint>();
            stack.Push(buffer.Address);
        }
    }

    /// <summary>Opens a private pool: until <see cref="EndPool"/>, every block handed out belongs to it.</summary>
    public Pool BeginPool()
    {
        lock (_lock)
        {
            if (_open != null) throw new InvalidOperationException("a private pool is already open (graphs are captured one at a time)");
            return _open = new Pool();
        }
    }

    /// <summary>Closes the open pool; its blocks stay reserved until <see cref="ReleasePool"/>.</summary>
    public void EndPool(Pool pool)
    {
        lock (_lock)
        {
            if (!ReferenceEquals(_open, pool)) throw new InvalidOperationException("this pool is not the open one");
            _open = null;
        }
    }

    /// <summary>Gives a pool's blocks back: its free ones to the shared cache, and the ones still
    /// in use return there when they are freed.</summary>
    public void ReleasePool(Pool pool)
    {
        lock (_lock)
        {
            if (pool.Released) return;
            if (ReferenceEquals(_open, pool)) _open = null;
            pool.Released = true;
            foreach (var address in pool.Owned) _owner.Remove(address);
            foreach (var (rounded, blocks) in pool.Free)
            {
                if (!_free.TryGetValue(rounded, out var stack)) _free[rounded] = stack = new Stack<nint>();
                while (blocks.Count > 0) stack.Push(blocks.Pop());
            }
            pool.Owned.Clear();
            pool.Bytes = 0;
        }
    }

    public void ReleaseCached()
    {
        lock (_lock) ReleaseCachedLocked();
    }

    // A private pool's free blocks stay: its graph still writes into them.
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
        _bytesCached = _owner.Count == 0 ? 0 : PoolFreeBytes();
    }

    private long PoolFreeBytes()
    {
        long bytes = 0;
        foreach (var pool in _owner.Values.Distinct())
            foreach (var (rounded, blocks) in pool.Free) bytes += rounded * sizeof(float) * blocks.Count;
        return bytes;
    }

    /// <summary>Free everything, in use or cached (the backend is being disposed).</summary>
    public void ReleaseAll()
    {
        lock (_lock)
        {
            foreach (var pool in _owner.Values.Distinct().ToList())
                foreach (var (_, blocks) in pool.Free)
                    while (blocks.Count > 0)
                    {
                        _systemFree(blocks.Pop());
                        _systemFrees++;
                    }
            _owner.Clear();
            _open = null;
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
