using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.ExceptionServices;

namespace RawGan.Engine.Backends.Cpu;

/// <summary>
/// The body of a parallel loop: processes items [start, end). A struct, so that handing it to
/// <see cref="CpuParallel.For{TBody}(long, long, TBody)"/> allocates nothing; its fields are the
/// kernel's arguments (pointers, sizes, scalars).
/// </summary>
public interface IRangeBody
{
    void Run(long start, long end);
}

/// <summary>
/// The one place where CPU kernels split work across cores. A loop of <c>count</c> items is cut
/// into at most <see cref="Threads"/> contiguous chunks; a loop too small to pay for a thread
/// hand-off (less than <c>grain</c> items per chunk) runs inline on the caller.
///
/// <para>How it works. <see cref="Threads"/> - 1 worker threads are started on first use and
/// then wait, parked, for work. A parallel loop (a "region") publishes its body and its chunk
/// count, wakes the workers, and then every participant, the calling thread included, claims the
/// next unclaimed chunk until none are left. The caller returns once every chunk has finished.
/// Nothing is allocated per loop: the body is a struct copied into a static field of
/// <c>Slot&lt;TBody&gt;</c> (one field per body type), and the workers reach it through a delegate
/// made once per body type. This matters because a training step runs thousands of kernels.</para>
///
/// <para>Waking a parked thread costs the operating system tens of microseconds (about 60 on the
/// virtual machines measured), and a training step opens hundreds of regions, most of them
/// shorter than a millisecond. So a worker that finishes a region first spins for a while
/// (<see cref="SpinMicroseconds"/>, like OpenMP's blocktime) watching for the next one, and
/// only parks when none comes; the caller likewise spins before it blocks on the last chunk.
/// A region only signals the workers that are parked (counted in <c>_sleepers</c>).</para>
///
/// <para>One region runs at a time. A loop that starts while one is running (from inside a body,
/// or from a second thread) runs its chunks inline on its own thread, in order. The chunks are the
/// same either way, so a result never depends on which thread ran which chunk. An exception thrown
/// by a body, on any thread, is rethrown to the caller (the first one, if several throw).</para>
/// </summary>
public static class CpuParallel
{
    private static int _threads = Environment.ProcessorCount;

    /// <summary>How many cores kernels may use (default: all; 1 runs every loop inline). Set by `--threads`.</summary>
    public static int Threads
    {
        get => _threads;
        set => _threads = value >= 1 ? value : throw new ArgumentOutOfRangeException(nameof(value), $"threads must be at least 1, got {value}");
    }

    /// <summary>Options that hold a <see cref="Parallel"/> loop to <see cref="Threads"/> (the metrics'
    /// loops, which are not kernels, use these so that `--threads` bounds a whole run).</summary>
    public static ParallelOptions Options => new() { MaxDegreeOfParallelism = _threads };

    /// <summary>
    /// How long a thread spins for the next region (a worker) or for the last chunk (the caller)
    /// before it parks: RAWGAN_SPIN_US microseconds, default 500; 0 parks at once.
    /// </summary>
    public static int SpinMicroseconds { get; set; } =
        int.TryParse(Environment.GetEnvironmentVariable("RAWGAN_SPIN_US"), out int us) && us >= 0 ? us : 500;

    /// <summary>Runs <paramref name="body"/> over [0, count), split into chunks of at least <paramref name="grain"/> items.</summary>
    public static void For<TBody>(long count, long grain, TBody body) where TBody : struct, IRangeBody => For(count, grain, body, 1);

    /// <summary>
    /// The same loop cut into up to <paramref name="chunksPerThread"/> chunks per thread, which the threads claim as
    /// they finish: a thread held up (by another process on its core, or by a share that costs more) then leaves its
    /// unclaimed chunks to the others instead of making them wait. Which thread runs which chunk then varies from run
    /// to run, so a body must write each item's result alone (no sums across items in per-thread state).
    /// </summary>
    public static void For<TBody>(long count, long grain, TBody body, int chunksPerThread) where TBody : struct, IRangeBody
    {
        if (count <= 0) return;
        int chunks = (int)Math.Min((long)_threads * Math.Max(1, chunksPerThread), Math.Max(1, count / Math.Max(1, grain)));
        if (chunks <= 1)
        {
            body.Run(0, count);
            return;
        }
        if (_insideRegion || Interlocked.CompareExchange(ref _busy, 1, 0) != 0)
        {
            for (int c = 0; c < chunks; c++) body.Run(ChunkStart(count, chunks, c), ChunkStart(count, chunks, c + 1));
            return;
        }
        try
        {
            Slot<TBody>.Body = body;
            RunRegion(count, chunks, Slot<TBody>.Run);
        }
        finally
        {
            // Do not keep the last body's references (if it has any) alive until the next loop.
            if (RuntimeHelpers.IsReferenceOrContainsReferences<TBody>()) Slot<TBody>.Body = default;
            Volatile.Write(ref _busy, 0);
        }
    }

    /// <summary>
    /// The same loop with a delegate body. A lambda that captures variables allocates a closure at
    /// every call: hot kernels use the struct form instead.
    /// </summary>
    public static void For(long count, long grain, Action<long, long> body) => For(count, grain, new ActionBody(body));

    private readonly struct ActionBody(Action<long, long> action) : IRangeBody
    {
        public void Run(long start, long end) => action(start, end);
    }

    /// <summary>Where chunk <paramref name="c"/> of <paramref name="chunks"/> starts (chunk <c>chunks</c> starts at count).</summary>
    private static long ChunkStart(long count, int chunks, int c) => count * c / chunks;

    // ------------------------------------------------------------------ the region

    /// <summary>The running region's body, per body type (written before the region opens).</summary>
    private static class Slot<TBody> where TBody : struct, IRangeBody
    {
        public static TBody Body;
        public static readonly Action<long, long> Run = static (start, end) => Body.Run(start, end);
    }

    [ThreadStatic] private static bool _insideRegion;   // true on workers, and on the caller while it runs chunks
    private static int _busy;                           // 1 while a region runs
    private static int _workers;                        // worker threads started so far

    // The running region. _claim packs (region number << 32 | next chunk): a thread claims a chunk
    // by incrementing it with a compare-exchange, which fails if the region changed meanwhile, so a
    // worker that wakes late can never run a chunk of a region with another region's parameters.
    private static long _claim;
    private static long _count;
    private static int _chunks;
    private static Action<long, long>? _run;
    private static int _unfinished;                     // chunks not yet finished
    private static int _sleepers;                       // workers parked (or about to park) on Wake
    private static Exception? _error;                   // the first exception a chunk threw

    private static readonly SemaphoreSlim Wake = new(0);                    // one permit wakes one worker
    private static readonly ManualResetEventSlim Finished = new(false);     // set by a worker that finishes the last chunk

    private static void RunRegion(long count, int chunks, Action<long, long> run)
    {
        int helpers = Math.Min(chunks, _threads) - 1;
        while (_workers < helpers)
        {
            new Thread(Work) { IsBackground = true, Name = $"RawGan CPU worker {_workers + 1}" }.Start();
            _workers++;
        }
        _count = count;
        _chunks = chunks;
        _run = run;
        _error = null;
        _unfinished = chunks;
        // Opening the region (a full fence) publishes the fields above to the workers. A worker
        // counts itself in _sleepers before it checks for a region one last time and parks, so
        // one that this read misses sees the region itself (both sides are full fences).
        Interlocked.Exchange(ref _claim, ((Volatile.Read(ref _claim) >> 32) + 1) << 32);
        int sleepers = Volatile.Read(ref _sleepers);
        if (sleepers > 0) Wake.Release(Math.Min(sleepers, helpers));

        _insideRegion = true;
        bool finishedLast;
        try { finishedLast = RunChunks(); }
        finally { _insideRegion = false; }
        if (!finishedLast)
        {
            // A worker is still running a chunk; it sets Finished when the last one is done. Only
            // the region's caller resets it, so a Set always belongs to the current region. Spin
            // first: the worker's Set follows its last decrement at once.
            for (long end = SpinEnd(); Volatile.Read(ref _unfinished) != 0 && Spinning(end);) { }
            Finished.Wait();
            Finished.Reset();
        }
        _run = null;
        if (_error is { } error)
        {
            _error = null;
            ExceptionDispatchInfo.Throw(error);
        }
    }

    /// <summary>Claims and runs chunks until none are left; true if this thread finished the region's last chunk.</summary>
    private static bool RunChunks()
    {
        while (true)
        {
            long claim = Volatile.Read(ref _claim);
            int chunk = (int)(claim & uint.MaxValue);
            // Read before claiming, valid only if the claim below succeeds (the region cannot
            // change while one of its chunks is unclaimed).
            int chunks = _chunks;
            long count = _count;
            var run = _run;
            if (chunk >= chunks || run == null) return false;
            if (Interlocked.CompareExchange(ref _claim, claim + 1, claim) != claim) continue;
            try { run(ChunkStart(count, chunks, chunk), ChunkStart(count, chunks, chunk + 1)); }
            catch (Exception e) { Interlocked.CompareExchange(ref _error, e, null); }
            if (Interlocked.Decrement(ref _unfinished) == 0) return true;
        }
    }

    private static void Work()
    {
        _insideRegion = true;   // a loop inside a body runs inline
        long seen = 0;          // the region number last looked at
        while (true)
        {
            long end = SpinEnd();
            while (Region() == seen && Spinning(end)) { }
            if (Region() == seen)
            {
                Interlocked.Increment(ref _sleepers);
                if (Region() == seen) Wake.Wait();   // a permit left by a region that found this worker awake only costs one more look
                Interlocked.Decrement(ref _sleepers);
            }
            seen = Region();
            if (RunChunks()) Finished.Set();
        }
    }

    private static long Region() => Volatile.Read(ref _claim) >> 32;

    /// <summary>When a spin that starts now ends (<see cref="SpinMicroseconds"/> from now).</summary>
    private static long SpinEnd() => Stopwatch.GetTimestamp() + SpinMicroseconds * Stopwatch.Frequency / 1_000_000;

    /// <summary>One short pause of a spin; false once <paramref name="end"/> has passed.</summary>
    private static bool Spinning(long end)
    {
        if (Stopwatch.GetTimestamp() >= end) return false;
        Thread.SpinWait(16);
        return true;
    }
}
