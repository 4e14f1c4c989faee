namespace RawGan.Engine.Backends.Cpu;

/// <summary>
/// The one place where CPU kernels split work across cores. A loop of <c>count</c> items is cut
/// into at most <see cref="Threads"/> contiguous ranges; a loop too small to pay for a thread
/// hand-off (less than <c>grain</c> items per range) runs inline on the caller.
/// </summary>
public static class CpuParallel
{
    private static int _threads = Environment.ProcessorCount;

    /// <summary>How many cores kernels may use (default: all). Set by `--threads`.</summary>
    public static int Threads
    {
        get => _threads;
        set => _threads = value >= 1 ? value : throw new ArgumentOutOfRangeException(nameof(value), $"threads must be at least 1, got {value}");
    }

    public static void For(long count, long grain, Action<long, long> body)
    {
        if (count <= 0) return;
        long chunks = Math.Min(_threads, Math.Max(1, count / Math.Max(1, grain)));
        if (chunks <= 1)
        {
            body(0, count);
            return;
        }
        Parallel.For(0, (int)chunks, new ParallelOptions { MaxDegreeOfParallelism = (int)chunks }, c =>
        {
            long start = count * c / chunks, end = count * (c + 1) / chunks;
            body(start, end);
        });
    }
}
