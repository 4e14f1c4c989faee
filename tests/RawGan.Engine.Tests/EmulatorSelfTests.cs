using RawGan.Engine.Backends;
using RawGan.Engine.Backends.Cuda;

namespace RawGan.Engine.Tests;

/// <summary>
/// The CPU emulator's own features, each on its own, through the small kernels of
/// simt_selftest.cu: a barrier in every block (not only the first), dynamic shared memory, many
/// barriers in a row, atomics under contention, odd and three-dimensional grids and blocks, the
/// built-in variables across barriers, launches from several threads at once, and misuse (a
/// barrier in divergent code) reported as an error instead of a hang.
/// </summary>
public unsafe class EmulatorSelfTests
{
    private static readonly Lazy<ICudaDriver> Driver = new(() =>
    {
        string path = Path.Combine(AppContext.BaseDirectory, "simt_selftest.cu");
        return EmulatedDriver.ForSources([new KernelSource("simt_selftest.cu", File.ReadAllText(path))]);
    });

    private static ICudaDriver D => Driver.Value;

    // ------------------------------------------------------------------ small helpers

    /// <summary>Device memory holding <paramref name="values"/>, freed on dispose.</summary>
    private sealed class DeviceArray<T> : IDisposable where T : unmanaged
    {
        public DeviceArray(T[] values)
        {
            Length = values.Length;
            Address = D.Allocate((long)Math.Max(1, values.Length) * sizeof(T));
            fixed (T* p = values) D.CopyHostToDevice(Address, p, (long)values.Length * sizeof(T));
        }

        public DeviceArray(int length, T fill) : this(Enumerable.Repeat(fill, length).ToArray()) { }

        public ulong Address;
        public int Length { get; }

        public T[] Read()
        {
            var result = new T[Length];
            fixed (T* p = result) D.CopyDeviceToHost(p, Address, (long)Length * sizeof(T));
            return result;
        }

        public void Dispose() => D.Free(Address);
    }

    /// <summary>Launches with cuLaunchKernel's argument layout: one pointer per parameter.</summary>
    private static void Launch(string kernel, Dim3 grid, Dim3 block, uint sharedBytes, KernelArgs args)
    {
        void** pointers = stackalloc void*[KernelArgs.MaxArguments];
        args.FillPointers(pointers);
        D.Launch(D.GetFunction(kernel), kernel, grid, block, sharedBytes, pointers);
    }

    private static DeviceBuffer Ptr<T>(DeviceArray<T> b) where T : unmanaged => new((nint)b.Address, b.Length);

    public static TheoryData<int> BlockSizes => new() { 1, 5, 32, 128, 256, 1024 };

    // ------------------------------------------------------------------ barriers and shared memory

    [Theory]
    [MemberData(nameof(BlockSizes))]
    public void EveryBlockReversesItsSegmentThroughStaticSharedMemory(int block) => CheckReversal("reverse_static_shared", block, 0);

    [Theory]
    [MemberData(nameof(BlockSizes))]
    public void EveryBlockReversesItsSegmentThroughDynamicSharedMemory(int block) => CheckReversal("reverse_dynamic_shared", block, (uint)(block * sizeof(float)));

    private static void CheckReversal(string kernel, int block, uint sharedBytes)
    {
        // 1037 is not a multiple of any block size: the last block is partly empty.
        const int n = 1037;
        var x = Enumerable.Range(0, n).Select(i => (float)i).ToArray();
        using var bx = new DeviceArray<float>(x);
        using var by = new DeviceArray<float>(n, float.NaN);
        int blocks = (n + block - 1) / block;
        Launch(kernel, new Dim3((uint)blocks), new Dim3((uint)block), sharedBytes, new KernelArgs().Ptr(Ptr(bx)).Ptr(Ptr(by)).Int(n));
        var y = by.Read();
        for (int i = 0; i < n; i++)
        {
            int source = i / block * block + (block - 1 - i % block);
            float expected = source < n ? source : -1f;
            Assert.True(y[i] == expected, $"{kernel}, block {block}: y[{i}] = {y[i]}, expected {expected}");
        }
    }

    [Theory]
    [MemberData(nameof(BlockSizes))]
    public void ManyBarriersInARowComputeABlockPrefixSum(int block)
    {
        const int blocks = 7;
        var x = Enumerable.Range(0, blocks * block).Select(i => i % 13 - 6).ToArray();
        using var bx = new DeviceArray<int>(x);
        using var by = new DeviceArray<int>(x.Length, int.MinValue);
        Launch("block_prefix_sum", new Dim3(blocks), new Dim3((uint)block), 0, new KernelArgs().Ptr(Ptr(bx)).Ptr(Ptr(by)));
        var y = by.Read();
        for (int b = 0; b < blocks; b++)
        {
            int sum = 0;
            for (int t = 0; t < block; t++)
            {
                sum += x[b * block + t];
                Assert.True(y[b * block + t] == sum, $"block size {block}: block {b} thread {t}: {y[b * block + t]}, expected {sum}");
            }
        }
    }

    // ------------------------------------------------------------------ atomics

    [Fact]
    public void AtomicsAreExactUnderContention()
    {
        // 333 blocks of 64 threads, spread over every worker thread, each adding 10 times to the
        // same three counters. Integer sums must be exact; the float sum is exact too, since every
        // partial sum is an integer below 2^24.
        const int blocks = 333, threads = 64, repeats = 10;
        using var counter = new DeviceArray<uint>(1, 0u);
        using var sum = new DeviceArray<float>(1, 0f);
        using var wide = new DeviceArray<ulong>(1, 0ul);
        Launch("atomic_contention", new Dim3(blocks), new Dim3(threads), 0,
            new KernelArgs().Ptr(Ptr(counter)).Ptr(Ptr(sum)).Ptr(Ptr(wide)).Int(repeats));
        Assert.Equal((uint)(blocks * threads * repeats), counter.Read()[0]);
        Assert.Equal((float)(blocks * threads * repeats), sum.Read()[0]);
        Assert.Equal(3ul * blocks * threads * repeats, wide.Read()[0]);
    }

    // ------------------------------------------------------------------ grid and block shapes

    [Theory]
    [InlineData(7u, 3u, 1u, 5u, 3u, 1u)]     // odd everywhere
    [InlineData(2u, 2u, 3u, 4u, 3u, 2u)]     // three-dimensional both
    [InlineData(1u, 1u, 1u, 1u, 1u, 1u)]
    [InlineData(3u, 1u, 2u, 1u, 7u, 1u)]
    [InlineData(1u, 1u, 1u, 8u, 8u, 16u)]    // 1024 threads in 3-D
    public void EveryThreadSeesItsOwnCoordinates(uint gx, uint gy, uint gz, uint tx0, uint ty0, uint tz0)
    {
        var grid = new Dim3(gx, gy, gz);
        var block = new Dim3(tx0, ty0, tz0);
        int total = (int)(grid.Count * block.Count);
        using var outBuffer = new DeviceArray<int>(total * 7, -1);
        Launch("write_coordinates", grid, block, 0, new KernelArgs().Ptr(Ptr(outBuffer)));
        var o = outBuffer.Read();
        int id = 0;
        for (uint bz = 0; bz < grid.Z; bz++)
            for (uint by = 0; by < grid.Y; by++)
                for (uint bx = 0; bx < grid.X; bx++)
                    for (uint tz = 0; tz < block.Z; tz++)
                        for (uint ty = 0; ty < block.Y; ty++)
                            for (uint tx = 0; tx < block.X; tx++, id++)
                            {
                                int[] expected = [id, (int)tx, (int)ty, (int)tz, (int)bx, (int)by, (int)bz];
                                Assert.Equal(expected, o.AsSpan(id * 7, 7).ToArray());
                            }
    }

    [Theory]
    [InlineData(4u, 3u, 2u)]
    [InlineData(8u, 8u, 8u)]
    [InlineData(1u, 5u, 3u)]
    public void ThreadCoordinatesSurviveABarrierInThreeDimensions(uint bx, uint by, uint bz)
    {
        const uint blocks = 5;
        int perBlock = (int)(bx * by * bz);
        using var outBuffer = new DeviceArray<int>((int)blocks * perBlock, -1);
        Launch("neighbour_3d", new Dim3(blocks), new Dim3(bx, by, bz), 0, new KernelArgs().Ptr(Ptr(outBuffer)));
        var o = outBuffer.Read();
        for (uint b = 0; b < blocks; b++)
            for (uint z = 0; z < bz; z++)
                for (uint y = 0; y < by; y++)
                    for (uint x = 0; x < bx; x++)
                    {
                        int expected = (int)(100 * ((z + 1) % bz) + 10 * ((y + 1) % by) + (x + 1) % bx);
                        Assert.Equal(expected, o[b * perBlock + (z * by + y) * bx + x]);
                    }
    }

    // ------------------------------------------------------------------ concurrency

    [Fact]
    public void LaunchesFromSeveralThreadsAtOnceAreEachCorrect()
    {
        // Each .NET thread runs fibers on its own stacks; launches take turns on the worker pool.
        Parallel.For(0, 4, new ParallelOptions { MaxDegreeOfParallelism = 4 }, i =>
        {
            for (int r = 0; r < 20; r++) CheckReversal("reverse_static_shared", 32 << (i % 3), 0);
        });
    }

    // ------------------------------------------------------------------ misuse

    [Theory]
    [InlineData("divergent_barrier")]                // thread 0 waits, others finish
    [InlineData("barrier_skipped_by_thread_zero")]   // thread 0 finishes, others wait
    public void ABarrierInDivergentCodeFailsTheLaunchInsteadOfHanging(string kernel)
    {
        using var outBuffer = new DeviceArray<int>(64, 0);
        var ex = Assert.Throws<CudaException>(() => Launch(kernel, new Dim3(3), new Dim3(64), 0, new KernelArgs().Ptr(Ptr(outBuffer))));
        Assert.Contains("__syncthreads", ex.Message);
        Assert.Contains("of block (", ex.Message);

        // The emulator is still usable afterwards.
        CheckReversal("reverse_static_shared", 64, 0);
    }
}
