using RawGan.Engine.Backends.Cpu;

namespace RawGan.Engine.Tests;

/// <summary>
/// The worker pool behind the CPU kernels: every item runs exactly once, a loop inside a loop
/// runs inline instead of waiting for itself, an exception reaches the caller, several threads
/// may start loops at once, and a loop with a struct body allocates nothing.
/// </summary>
public unsafe class CpuParallelTests
{
    /// <summary>Adds 1 to hits[i] for every item i (atomically, so that a duplicate would show).</summary>
    private readonly struct CountHits(int* hits) : IRangeBody
    {
        public void Run(long start, long end)
        {
            for (long i = start; i < end; i++) Interlocked.Increment(ref hits[i]);
        }
    }

    private static void AssertEveryItemOnce(int[] hits)
    {
        for (int i = 0; i < hits.Length; i++) Assert.True(hits[i] == 1, $"item {i} ran {hits[i]} times");
    }

    [Theory]
    [InlineData(1, 1)]
    [InlineData(7, 1)]
    [InlineData(1000, 1)]
    [InlineData(1000, 300)]
    [InlineData(100_000, 16)]
    public void EveryItemRunsExactlyOnce(int count, int grain)
    {
        var hits = new int[count];
        fixed (int* p = hits)
            for (int repeat = 0; repeat < 20; repeat++)
            {
                Array.Clear(hits);
                CpuParallel.For(count, grain, new CountHits(p));
                AssertEveryItemOnce(hits);
            }
    }

    /// <summary>
    /// Workers that spin for the next region, and workers that have parked and must be woken:
    /// regions back to back (caught while spinning) and regions after a pause longer than the
    /// spin (the workers have parked) all run every item once. With no spin at all every region
    /// wakes parked workers.
    /// </summary>
    [Theory]
    [InlineData(0)]
    [InlineData(50)]
    [InlineData(500)]
    public void RegionsRunWhetherTheWorkersSpinOrPark(int spinMicroseconds)
    {
        int spin = CpuParallel.SpinMicroseconds;
        CpuParallel.SpinMicroseconds = spinMicroseconds;
        try
        {
            var hits = new int[64];
            var random = new Random(spinMicroseconds);
            fixed (int* p = hits)
                for (int repeat = 0; repeat < 300; repeat++)
                {
                    Array.Clear(hits);
                    int pause = random.Next(4);   // 0: back to back; else a pause of 0.3 to 1 ms
                    if (pause > 0) Thread.Sleep(TimeSpan.FromMicroseconds(pause * 330));
                    CpuParallel.For(hits.Length, 1, new CountHits(p));
                    AssertEveryItemOnce(hits);
                }
        }
        finally
        {
            CpuParallel.SpinMicroseconds = spin;
        }
    }

    private readonly struct Nested(int* hits, int inner) : IRangeBody
    {
        public void Run(long start, long end)
        {
            for (long i = start; i < end; i++) CpuParallel.For(inner, 1, new CountHits(hits + i * inner));
        }
    }

    [Fact]
    public void ALoopInsideALoopRunsInline()
    {
        const int outer = 8, inner = 50;
        var hits = new int[outer * inner];
        fixed (int* p = hits) CpuParallel.For(outer, 1, new Nested(p, inner));
        AssertEveryItemOnce(hits);
    }

    [Fact]
    public void AnExceptionInAnyChunkReachesTheCaller()
    {
        // Every chunk throws, so whichever thread runs the last one, its exception must come back.
        for (int repeat = 0; repeat < 20; repeat++)
        {
            var e = Assert.Throws<InvalidOperationException>(() => CpuParallel.For(1000, 1, (s, _) => throw new InvalidOperationException($"chunk at {s}")));
            Assert.StartsWith("chunk at ", e.Message);
        }
        // And the pool still works afterwards.
        var hits = new int[1000];
        fixed (int* p = hits) CpuParallel.For(hits.Length, 1, new CountHits(p));
        AssertEveryItemOnce(hits);
    }

    [Fact]
    public void LoopsStartedFromSeveralThreadsAtOnceAllComplete()
    {
        var hits = new int[4][];
        var threads = new Thread[hits.Length];
        for (int t = 0; t < threads.Length; t++)
        {
            var mine = hits[t] = new int[10_000];
            threads[t] = new Thread(() =>
            {
                fixed (int* p = mine)
                    for (int repeat = 0; repeat < 200; repeat++) CpuParallel.For(mine.Length, 1, new CountHits(p));
            });
            threads[t].Start();
        }
        foreach (var thread in threads) thread.Join();
        foreach (var h in hits) Assert.All(h, n => Assert.Equal(200, n));
    }
}

/// <summary>Runs alone: <see cref="GC.GetTotalAllocatedBytes(bool)"/> counts every thread of the process.</summary>
[CollectionDefinition(nameof(AllocationCounting), DisableParallelization = true)]
public class AllocationCounting;

[Collection(nameof(AllocationCounting))]
public unsafe class CpuParallelAllocationTests
{
    private readonly struct Sum(float* x, long* total) : IRangeBody
    {
        public void Run(long start, long end)
        {
            long local = 0;
            for (long i = start; i < end; i++) local += (long)x[i];
            Interlocked.Add(ref *total, local);
        }
    }

    [Fact]
    public void AParallelLoopWithAStructBodyAllocatesNothing()
    {
        var data = new float[100_000];
        Array.Fill(data, 1f);
        long total = 0;
        // Four chunks on three workers and the caller, whatever the machine (this test runs alone).
        int threads = CpuParallel.Threads;
        CpuParallel.Threads = 4;
        try
        {
            fixed (float* x = data)
            {
                // Warm-up: starts the workers, compiles the code paths.
                for (int i = 0; i < 10; i++) CpuParallel.For(data.Length, 16, new Sum(x, &total));
                // The counter covers the whole process, and the test runner's own threads may
                // allocate now and then: the least of a few windows is kept. An allocation by the
                // pool would show in every window (200 loops each).
                long least = long.MaxValue;
                for (int window = 0; window < 20 && least > 0; window++)
                {
                    total = 0;
                    long before = GC.GetTotalAllocatedBytes(precise: true);
                    for (int i = 0; i < 200; i++) CpuParallel.For(data.Length, 16, new Sum(x, &total));
                    least = Math.Min(least, GC.GetTotalAllocatedBytes(precise: true) - before);
                    Assert.Equal(200L * data.Length, total);
                }
                Assert.Equal(0, least);
            }
        }
        finally
        {
            CpuParallel.Threads = threads;
        }
    }
}
