using RawGan.Engine.Backends;
using RawGan.Engine.Backends.Cuda;

namespace RawGan.Engine.Tests;

/// <summary>
/// The CPU emulator's own features, each on its own, through the small kernels of
/// simt_selftest.cu: a barrier in every block (not only the first), dynamic shared memory, many
/// barriers in a row, atomics under contention, odd and three-dimensional grids and blocks, the
/// built-in variables across barriers, launches from several threads at once, warp shuffles and
/// votes, tensor-core mma by the PTX ISA's fragment layouts, asynchronous copies, the schedule
/// orders that expose races, and misuse (a barrier in divergent code, a collective that a lane
/// of its mask never reaches) reported as an error instead of a hang. What a GPU defines the
/// same way (shuffles, mma, rounding) is checked on the GPU too when the tests run on one.
/// </summary>
public unsafe class EmulatorSelfTests
{
    private static KernelSource SelfTestSource() =>
        new("simt_selftest.cu", File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "simt_selftest.cu")));

    private static readonly Lazy<EmulatedDriver> Driver = new(() => EmulatedDriver.ForSources([SelfTestSource()]));

    private static EmulatedDriver D => Driver.Value;

    // The same kernels on this machine's GPU, when the suite runs on one (TestBackends.Names).
    private static readonly Lazy<ICudaDriver?> Gpu = new(() =>
    {
        if (!TestBackends.Names.Contains("cuda")) return null;
        var driver = new NativeDriver(0);
        driver.LoadModule([SelfTestSource()], KernelLibrary.Headers);
        return driver;
    });

    /// <summary>"emulated", and "gpu" when the tests run on a GPU too.</summary>
    public static TheoryData<string> Devices
    {
        get
        {
            var data = new TheoryData<string> { "emulated" };
            if (TestBackends.Names.Contains("cuda")) data.Add("gpu");
            return data;
        }
    }

    private static ICudaDriver On(string device) => device == "gpu" ? Gpu.Value ?? throw new InvalidOperationException("no GPU") : D;

    public static TheoryData<SimtOrder> Orders => new() { SimtOrder.Forward, SimtOrder.Reverse, SimtOrder.Random };

    // ------------------------------------------------------------------ small helpers

    /// <summary>Device memory holding <paramref name="values"/>, freed on dispose.</summary>
    private sealed class DeviceArray<T> : IDisposable where T : unmanaged
    {
        private readonly ICudaDriver _driver;

        public DeviceArray(T[] values) : this(D, values) { }

        public DeviceArray(int length, T fill) : this(D, length, fill) { }

        public DeviceArray(ICudaDriver driver, int length, T fill) : this(driver, Enumerable.Repeat(fill, length).ToArray()) { }

        public DeviceArray(ICudaDriver driver, T[] values)
        {
            _driver = driver;
            Length = values.Length;
            Address = driver.Allocate((long)Math.Max(1, values.Length) * sizeof(T));
            fixed (T* p = values) driver.CopyHostToDevice(Address, p, (long)values.Length * sizeof(T));
        }

        public ulong Address;
        public int Length { get; }

        public T[] Read()
        {
            var result = new T[Length];
            fixed (T* p = result) _driver.CopyDeviceToHost(p, Address, (long)Length * sizeof(T));
            return result;
        }

        public void Dispose() => _driver.Free(Address);
    }

    /// <summary>Launches with cuLaunchKernel's argument layout: one pointer per parameter.</summary>
    private static void Launch(string kernel, Dim3 grid, Dim3 block, uint sharedBytes, KernelArgs args) =>
        Launch(D, kernel, grid, block, sharedBytes, args);

    private static void Launch(ICudaDriver driver, string kernel, Dim3 grid, Dim3 block, uint sharedBytes, KernelArgs args)
    {
        void** pointers = stackalloc void*[KernelArgs.MaxArguments];
        args.FillPointers(pointers);
        driver.Launch(driver.GetFunction(kernel), kernel, grid, block, sharedBytes, pointers);
        driver.Synchronize();
    }

    /// <summary>A launch on the emulator in the given schedule order.</summary>
    private static void Launch(SimtOrder order, string kernel, Dim3 grid, Dim3 block, uint sharedBytes, KernelArgs args, uint seed = 0)
    {
        void** pointers = stackalloc void*[KernelArgs.MaxArguments];
        args.FillPointers(pointers);
        D.Launch(D.GetFunction(kernel), kernel, grid, block, sharedBytes, pointers, order, seed);
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

    private static void CheckReversal(string kernel, int block, uint sharedBytes, SimtOrder order = SimtOrder.Default)
    {
        // 1037 is not a multiple of any block size: the last block is partly empty.
        const int n = 1037;
        var x = Enumerable.Range(0, n).Select(i => (float)i).ToArray();
        using var bx = new DeviceArray<float>(x);
        using var by = new DeviceArray<float>(n, float.NaN);
        int blocks = (n + block - 1) / block;
        Launch(order, kernel, new Dim3((uint)blocks), new Dim3((uint)block), sharedBytes, new KernelArgs().Ptr(Ptr(bx)).Ptr(Ptr(by)).Int(n));
        var y = by.Read();
        for (int i = 0; i < n; i++)
        {
            int source = i / block * block + (block - 1 - i % block);
            float expected = source < n ? source : -1f;
            Assert.True(y[i] == expected, $"{kernel}, block {block}, order {order}: y[{i}] = {y[i]}, expected {expected}");
        }
    }

    [Theory]
    [MemberData(nameof(BlockSizes))]
    public void ManyBarriersInARowComputeABlockPrefixSum(int block) => CheckPrefixSum(block, SimtOrder.Default);

    private static void CheckPrefixSum(int block, SimtOrder order)
    {
        const int blocks = 7;
        var x = Enumerable.Range(0, blocks * block).Select(i => i % 13 - 6).ToArray();
        using var bx = new DeviceArray<int>(x);
        using var by = new DeviceArray<int>(x.Length, int.MinValue);
        Launch(order, "block_prefix_sum", new Dim3(blocks), new Dim3((uint)block), 0, new KernelArgs().Ptr(Ptr(bx)).Ptr(Ptr(by)));
        var y = by.Read();
        for (int b = 0; b < blocks; b++)
        {
            int sum = 0;
            for (int t = 0; t < block; t++)
            {
                sum += x[b * block + t];
                Assert.True(y[b * block + t] == sum, $"block size {block}, order {order}: block {b} thread {t}: {y[b * block + t]}, expected {sum}");
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
    public void ThreadCoordinatesSurviveABarrierInThreeDimensions(uint bx, uint by, uint bz) => CheckNeighbours3d(bx, by, bz, SimtOrder.Default);

    private static void CheckNeighbours3d(uint bx, uint by, uint bz, SimtOrder order)
    {
        const uint blocks = 5;
        int perBlock = (int)(bx * by * bz);
        using var outBuffer = new DeviceArray<int>((int)blocks * perBlock, -1);
        Launch(order, "neighbour_3d", new Dim3(blocks), new Dim3(bx, by, bz), 0, new KernelArgs().Ptr(Ptr(outBuffer)));
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

    // ------------------------------------------------------------------ warp collectives

    /// <summary>The lane a shuffle reads, by the PTX ISA's shfl.sync with CUDA's clamp values:
    /// segments of <paramref name="width"/> lanes; idx reads lane b of the segment, up and down
    /// stay in it (else the lane's own value), xor may reach back but not beyond its end.</summary>
    private static int ShuffleSource(char mode, int lane, int b, int width)
    {
        b &= 31;
        int first = lane & ~(width - 1), last = first + width - 1;
        return mode switch
        {
            'i' => first | (b & (width - 1)),
            'u' => lane - b >= first ? lane - b : lane,
            'd' => lane + b <= last ? lane + b : lane,
            _ => (lane ^ b) <= last ? lane ^ b : lane,
        };
    }

    public static TheoryData<string, int, int> ShuffleShapes()
    {
        var data = new TheoryData<string, int, int>();
        (int block, int width)[] shapes = [(32, 32), (64, 16), (40, 32), (40, 8), (7, 4), (96, 1), (1024, 32), (33, 2)];
        foreach (var device in Devices)
            foreach (var (block, width) in shapes)
                data.Add(device, block, width);
        return data;
    }

    [Theory]
    [MemberData(nameof(ShuffleShapes))]
    public void ShufflesAndVotesFollowThePtxRulesInFullAndPartialWarps(string device, int block, int width)
    {
        var driver = On(device);
        const int blocks = 3;
        int n = blocks * block;
        var x = Enumerable.Range(0, n).Select(i => (i * 37 + 11) % 101).ToArray();
        using var bx = new DeviceArray<int>(driver, x);
        using var bo = new DeviceArray<int>(driver, 10 * n, int.MinValue);
        Launch(driver, "warp_shuffles", new Dim3(blocks), new Dim3((uint)block), 0, new KernelArgs().Ptr(Ptr(bx)).Ptr(Ptr(bo)).Int(width));
        var o = bo.Read();
        for (int i = 0; i < n; i++)
        {
            int t = i % block, lane = t % 32, warpStart = i - lane, lanes = Math.Min(32, block - (t - lane));
            // A source outside the mask (a lane the partial warp lacks) is undefined on a GPU and
            // reads all one bits on the emulator.
            int? Read(char mode, int b, Func<int, int> value)
            {
                int j = ShuffleSource(mode, lane, b, width);
                if (j < lanes) return value(warpStart + j);
                return device == "emulated" ? -1 : null;
            }
            void Check(int field, int? expected)
            {
                if (expected is { } e) Assert.True(o[10 * i + field] == e, $"{device}, block {block}, width {width}: thread {i} field {field}: {o[10 * i + field]}, expected {e}");
            }
            Check(0, Read('i', lane * 7 + 3, j => x[j]));
            Check(1, Read('u', 3, j => x[j]));
            Check(2, Read('d', 5, j => x[j]));
            Check(3, Read('x', 6, j => x[j]));
            Check(4, Read('d', 1, j => BitConverter.SingleToInt32Bits(0.5f * x[j])));
            Check(5, Read('x', 1, j => (int)(3u * (uint)x[j])));
            int ballot = 0;
            for (int l = 0; l < lanes; l++) if (x[warpStart + l] % 3 == 0) ballot |= 1 << l;
            Check(6, ballot);
            bool any = Enumerable.Range(warpStart, lanes).Any(j => x[j] > 90);
            Check(7, (any ? 1 : 0) | 2);   // all(v >= 0) always holds
            Check(8, Read('x', 2, j => (int)BitConverter.DoubleToInt64Bits(x[j] + 0.25)));
            Check(9, Read('x', 2, j => (int)(BitConverter.DoubleToInt64Bits(x[j] + 0.25) >> 32)));
        }
    }

    public static TheoryData<SimtOrder, int, bool> WarpSumShapes()
    {
        var data = new TheoryData<SimtOrder, int, bool>();
        foreach (var order in Orders)
            foreach (int block in new[] { 32, 40, 96, 7, 1000, 1024 })
                foreach (bool skip in new[] { false, true })
                    data.Add(order, block, skip);
        return data;
    }

    [Theory]
    [MemberData(nameof(WarpSumShapes))]
    public void AWarpSumByShuffleDownIsExactInEveryOrder(SimtOrder order, int block, bool skipFirstWarp)
    {
        const int blocks = 5;
        int warps = (block + 31) / 32;
        var x = Enumerable.Range(0, blocks * block).Select(i => (float)(i % 7 - 3)).ToArray();
        using var bx = new DeviceArray<float>(x);
        using var sums = new DeviceArray<float>(blocks * warps, float.NaN);
        Launch(order, "warp_sum", new Dim3(blocks), new Dim3((uint)block), 0, new KernelArgs().Ptr(Ptr(bx)).Ptr(Ptr(sums)).Int(skipFirstWarp ? 1 : 0));
        var s = sums.Read();
        for (int b = 0; b < blocks; b++)
            for (int w = 0; w < warps; w++)
            {
                int first = b * block + 32 * w, count = Math.Min(32, block - 32 * w);
                float expected = skipFirstWarp && w == 0 ? float.NaN : x.Skip(first).Take(count).Sum();
                Assert.True(s[b * warps + w].Equals(expected), $"order {order}, block {block}: block {b} warp {w}: {s[b * warps + w]}, expected {expected}");
            }
    }

    [Theory]
    [MemberData(nameof(Orders))]
    public void SyncwarpMakesEachLanesSharedWriteVisibleToItsWarp(SimtOrder order)
    {
        foreach (int block in new[] { 32, 40, 7, 256 })
        {
            const int blocks = 3;
            var x = Enumerable.Range(0, blocks * block).Select(i => i * 3 + 1).ToArray();
            using var bx = new DeviceArray<int>(x);
            using var by = new DeviceArray<int>(x.Length, int.MinValue);
            Launch(order, "warp_rotate_shared", new Dim3(blocks), new Dim3((uint)block), 0, new KernelArgs().Ptr(Ptr(bx)).Ptr(Ptr(by)));
            var y = by.Read();
            for (int i = 0; i < x.Length; i++)
            {
                int t = i % block, lane = t % 32, lanes = Math.Min(32, block - (t - lane));
                Assert.Equal(x[i - lane + (lane + 1) % lanes], y[i]);
            }
        }
    }

    [Theory]
    [InlineData("shuffle_after_a_lane_exits", 64, "__shfl_sync(mask 0xffffffff) in warp 0 of block (0, 0, 0) was reached by lanes 0-4, 6-31; lane 5 finished without it")]
    [InlineData("mismatched_shuffles", 32, "lane 16 of warp 0 of block (0, 0, 0) reached __shfl_xor_sync(mask 0xffffffff) while lanes 0-15 wait at __shfl_down_sync(mask 0xffffffff)")]
    [InlineData("full_mask_in_a_partial_warp", 40, "__shfl_xor_sync(mask 0xffffffff) in warp 1 of block (0, 0, 0) names lanes 8-31, but that warp of a block of 40 threads has only 8 lanes (its full mask is 0x000000ff)")]
    [InlineData("mask_without_the_caller", 32, "__shfl_sync(mask 0x00000001) in lane 1 of warp 0 of block (0, 0, 0): the mask leaves out the calling lane")]
    [InlineData("shuffle_against_barrier", 32, "lanes 0-15 wait at __syncthreads() instead")]
    [InlineData("shuffle_width_not_a_power_of_two", 32, "width 12 is not a power of two from 1 to 32")]
    [InlineData("mma_in_a_partial_warp", 40, "mma.sync.m16n8k8 (tf32) in warp 1 of block (0, 0, 0) needs all 32 lanes, but that warp of a block of 40 threads has only 8")]
    public void AMisusedWarpCollectiveFailsTheLaunchInsteadOfHanging(string kernel, int block, string expected)
    {
        using var outBuffer = new DeviceArray<float>(block, 0f);
        var ex = Assert.Throws<CudaException>(() => Launch(SimtOrder.Forward, kernel, new Dim3(2), new Dim3((uint)block), 0, new KernelArgs().Ptr(Ptr(outBuffer))));
        Assert.Equal("CUDA_ERROR_LAUNCH_FAILED", ex.ErrorName);
        Assert.Contains(expected, ex.Message);

        // The emulator is still usable afterwards, warp collectives included.
        CheckReversal("reverse_static_shared", 64, 0);
        AWarpSumByShuffleDownIsExactInEveryOrder(SimtOrder.Forward, 40, false);
    }

    [Theory]
    [MemberData(nameof(Orders))]
    public void EveryMisuseFailsInEveryOrder(SimtOrder order)
    {
        (string kernel, int block)[] misuse =
        [
            ("shuffle_after_a_lane_exits", 64), ("mismatched_shuffles", 32), ("full_mask_in_a_partial_warp", 40), ("mask_without_the_caller", 32),
            ("shuffle_against_barrier", 32), ("shuffle_width_not_a_power_of_two", 32), ("mma_in_a_partial_warp", 40),
            ("divergent_barrier", 64), ("barrier_skipped_by_thread_zero", 64),
        ];
        foreach (var (kernel, block) in misuse)
        {
            using var outBuffer = new DeviceArray<float>(block, 0f);
            var ex = Assert.Throws<CudaException>(() => Launch(order, kernel, new Dim3(3), new Dim3((uint)block), 0, new KernelArgs().Ptr(Ptr(outBuffer))));
            Assert.Contains("of block (", ex.Message);
        }
        CheckReversal("reverse_static_shared", 64, 0, order);
    }

    // ------------------------------------------------------------------ tensor cores

    /// <summary>cvt.rna.tf32.f32: to nearest, ties away from zero, 10 mantissa bits.</summary>
    private static float Tf32(float x)
    {
        uint u = BitConverter.SingleToUInt32Bits(x);
        if ((u & 0x7f800000u) == 0x7f800000u) return x;
        return BitConverter.UInt32BitsToSingle((u + 0x1000u) & 0xffffe000u);
    }

    /// <summary>float to bfloat16 (to nearest, ties to even), back as a float.</summary>
    private static float Bf16(float x)
    {
        uint u = BitConverter.SingleToUInt32Bits(x);
        return BitConverter.UInt32BitsToSingle(((u + 0x7fffu + ((u >> 16) & 1u)) >> 16) << 16);
    }

    /// <summary>Values with all 23 mantissa bits in use, so that rounding the inputs matters.</summary>
    private static float[] Values(int n, int seed)
    {
        var random = new Random(seed);
        return Enumerable.Range(0, n).Select(_ => (float)((random.NextDouble() * 2 - 1) * Math.Pow(2, random.Next(-3, 4)))).ToArray();
    }

    /// <summary>What an mma kernel wrote, and the reference D = C + A B in double over the
    /// inputs rounded as the kernel rounds them (and, to show that rounding matters, over the
    /// fp32 inputs as they are), with the bound on each element's fp32 rounding error.</summary>
    private sealed record MmaRun(float[] D, double[] Expected, double[] Unrounded, double[] Bound);

    /// <summary>Runs one of the mma kernels on 4 tiles (2 blocks of 2 warps) of M x K times
    /// K x 8 plus M x 8 (A, B, C row-major).</summary>
    private static MmaRun RunMma(ICudaDriver driver, string kernel, int k, Func<float, float> round, int wrong, bool byShuffles, int seed = 1)
    {
        const int tiles = 4, m = 16, n = 8;
        var a = Values(tiles * m * k, seed);
        var b = Values(tiles * k * n, seed + 1);
        var c = Values(tiles * m * n, seed + 2);
        using var ba = new DeviceArray<float>(driver, a);
        using var bb = new DeviceArray<float>(driver, b);
        using var bc = new DeviceArray<float>(driver, c);
        using var bd = new DeviceArray<float>(driver, tiles * m * n, float.NaN);
        Launch(driver, kernel, new Dim3(2), new Dim3(64), 0,
            new KernelArgs().Ptr(Ptr(ba)).Ptr(Ptr(bb)).Ptr(Ptr(bc)).Ptr(Ptr(bd)).Int(wrong).Int(byShuffles ? 1 : 0));
        var expected = new double[tiles * m * n];
        var unrounded = new double[tiles * m * n];
        var bound = new double[tiles * m * n];
        for (int tile = 0; tile < tiles; tile++)
            for (int i = 0; i < m; i++)
                for (int j = 0; j < n; j++)
                {
                    int e = tile * m * n + i * n + j;
                    double sum = c[e], plain = c[e], magnitude = Math.Abs(c[e]);
                    for (int q = 0; q < k; q++)
                    {
                        float x = a[tile * m * k + i * k + q], y = b[tile * k * n + q * n + j];
                        double p = (double)round(x) * round(y);
                        sum += p;
                        plain += (double)x * y;
                        magnitude += Math.Abs(p);
                    }
                    expected[e] = sum;
                    unrounded[e] = plain;
                    bound[e] = 1e-6 * magnitude + 1e-30;   // k + 1 fp32 roundings, each under 6e-8 of the magnitude
                }
        return new MmaRun(bd.Read(), expected, unrounded, bound);
    }

    public static TheoryData<string, bool> DevicesAndPaths()
    {
        var data = new TheoryData<string, bool>();
        foreach (var device in Devices)
        {
            data.Add(device, false);
            data.Add(device, true);
        }
        return data;
    }

    [Theory]
    [MemberData(nameof(DevicesAndPaths))]
    public void MmaTf32MultipliesByThePtxFragmentLayout(string device, bool byShuffles)
    {
        var r = RunMma(On(device), "mma_tf32_tiles", 8, Tf32, 0, byShuffles);
        AssertMatches(r, $"{device}, by shuffles {byShuffles}");

        // The inputs really are rounded to tf32: the product of the fp32 inputs is farther off.
        Assert.Contains(Enumerable.Range(0, r.D.Length), e => Math.Abs(r.D[e] - r.Unrounded[e]) > r.Bound[e]);
    }

    private static void AssertMatches(MmaRun r, string what)
    {
        for (int e = 0; e < r.D.Length; e++)
            Assert.True(Math.Abs(r.D[e] - r.Expected[e]) <= r.Bound[e], $"{what}: tile {e / 128} D[{e % 128 / 8}][{e % 8}] = {r.D[e]}, expected {r.Expected[e]}");
    }

    [Theory]
    [MemberData(nameof(DevicesAndPaths))]
    public void MmaBf16MultipliesByThePtxFragmentLayout(string device, bool byShuffles)
    {
        var r = RunMma(On(device), "mma_bf16_tiles", 16, Bf16, 0, byShuffles);
        AssertMatches(r, $"{device}, by shuffles {byShuffles}");
        Assert.Contains(Enumerable.Range(0, r.D.Length), e => Math.Abs(r.D[e] - r.Unrounded[e]) > r.Bound[e]);
    }

    [Theory]
    [InlineData("mma_tf32_tiles", 8, 1)]    // a[1] and a[2] swapped: rows g + 8 and columns t + 4 of A exchanged
    [InlineData("mma_tf32_tiles", 8, 2)]    // b[0] and b[1] swapped
    [InlineData("mma_tf32_tiles", 8, 3)]    // c[1] and c[2] swapped
    [InlineData("mma_bf16_tiles", 16, 1)]
    [InlineData("mma_bf16_tiles", 16, 2)]
    public void AWrongFragmentIndexGivesAWrongProduct(string kernel, int k, int wrong)
    {
        // The layout test above would catch a kernel (or an emulator) that places one fragment
        // register differently from the PTX ISA.
        Func<float, float> round = k == 8 ? Tf32 : Bf16;
        foreach (bool byShuffles in new[] { false, true })
        {
            var r = RunMma(D, kernel, k, round, wrong, byShuffles);
            int off = Enumerable.Range(0, r.D.Length).Count(e => !(Math.Abs(r.D[e] - r.Expected[e]) <= r.Bound[e]));
            Assert.True(off > r.D.Length / 4, $"{kernel}, wrong = {wrong}, by shuffles {byShuffles}: only {off} of {r.D.Length} elements are off");
        }
    }

    [Theory]
    [InlineData("mma_tf32_tiles", 8)]
    [InlineData("mma_bf16_tiles", 16)]
    public void TheShufflePathOfOlderGpusGivesTheEmulatorsBitsExactly(string kernel, int k)
    {
        // sm_70 and sm_75 have no tf32 or bf16 mma; kernels/mma.cuh computes the same fragments by
        // shuffles there. Same inputs, same order of accumulation: the same bits.
        Func<float, float> round = k == 8 ? Tf32 : Bf16;
        for (int seed = 1; seed <= 3; seed++)
        {
            var emulated = RunMma(D, kernel, k, round, 0, false, seed).D;
            var shuffled = RunMma(D, kernel, k, round, 0, true, seed).D;
            Assert.Equal(emulated.Select(BitConverter.SingleToInt32Bits), shuffled.Select(BitConverter.SingleToInt32Bits));
        }
    }

    [Theory]
    [MemberData(nameof(Devices))]
    public void RoundingToTf32TiesAwayFromZeroAndToBf16TiesToEven(string device)
    {
        var driver = On(device);
        // (input bits, tf32 bits): ties (low 13 bits 0x1000) go away from zero, whichever the parity.
        (uint x, uint tf32)[] cases =
        [
            (0x3f800000, 0x3f800000),   // 1: exact
            (0x3f801000, 0x3f802000),   // 1 + half a tf32 ulp, below it even: away (to even would give 0x3f800000)
            (0x3f803000, 0x3f804000),   // the same tie above an odd significand
            (0xbf801000, 0xbf802000),   // a negative tie: away from zero, so down
            (0x3f800fff, 0x3f800000),   // just under the tie
            (0x3f801001, 0x3f802000),   // just over it
            (0x3fffffff, 0x40000000),   // the carry runs into the exponent
            (0x7f7ff000, 0x7f800000),   // the largest tie overflows to infinity
            (0x00001000, 0x00002000),   // a subnormal tie
            (0x00000fff, 0x00000000),
            (0x7f800000, 0x7f800000),   // infinities stay
            (0xff800000, 0xff800000),
        ];
        // bf16 (ties to even), of x in the low half and of -x in the high half.
        (uint x, uint bf16)[] bfCases =
        [
            (0x3f800000, 0x3f80), (0x3f808000, 0x3f80), (0x3f818000, 0x3f82), (0x3f808001, 0x3f81), (0x3f807fff, 0x3f80), (0x7f7f8000, 0x7f80),
        ];
        var inputs = cases.Select(c => c.x).Concat(bfCases.Select(c => c.x)).Append(0x7fc00001u).Append(0x7f800001u).ToArray();
        var x = inputs.Select(BitConverter.UInt32BitsToSingle).ToArray();
        using var bx = new DeviceArray<float>(driver, x);
        using var tf32 = new DeviceArray<uint>(driver, x.Length, 0u);
        using var bf16 = new DeviceArray<uint>(driver, x.Length, 0u);
        Launch(driver, "round_to_tf32_and_bf16", new Dim3(1), new Dim3(64), 0, new KernelArgs().Ptr(Ptr(bx)).Ptr(Ptr(tf32)).Ptr(Ptr(bf16)).Int(x.Length));
        var t = tf32.Read();
        var h = bf16.Read();
        for (int i = 0; i < cases.Length; i++)
            Assert.True(t[i] == cases[i].tf32, $"{device}: tf32 of 0x{cases[i].x:x8} is 0x{t[i]:x8}, expected 0x{cases[i].tf32:x8}");
        for (int i = 0; i < bfCases.Length; i++)
        {
            uint got = h[cases.Length + i], expected = bfCases[i].bf16 | ((bfCases[i].bf16 ^ 0x8000u) << 16);
            Assert.True(got == expected, $"{device}: bf16x2 of 0x{bfCases[i].x:x8} and its negation is 0x{got:x8}, expected 0x{expected:x8}");
        }
        for (int i = inputs.Length - 2; i < inputs.Length; i++)   // NaN stays NaN (the payload is the hardware's business)
        {
            Assert.True(float.IsNaN(BitConverter.UInt32BitsToSingle(t[i])), $"{device}: tf32 of NaN 0x{inputs[i]:x8} is 0x{t[i]:x8}");
            Assert.True(float.IsNaN(BitConverter.UInt32BitsToSingle(h[i] << 16)) && float.IsNaN(BitConverter.UInt32BitsToSingle(h[i] & 0xffff0000u)), $"{device}: bf16x2 of NaN is 0x{h[i]:x8}");
        }
    }

    // ------------------------------------------------------------------ asynchronous copies

    private const uint PendingCopy = 0x7fc0dead;   // what the emulator leaves where a copy has not arrived

    [Theory]
    [MemberData(nameof(Orders))]
    public void AsyncCopiesOfEverySizeArriveAtTheWait(SimtOrder order)
    {
        foreach (int block in new[] { 4, 64, 256 })
        {
            var (x, y) = RunAsyncCopyNeighbour(order, block, wait: true);
            for (int b = 0; b < 3; b++)
            {
                int baseIndex = b * 7 * block;
                for (int t = 0; t < block; t++)
                {
                    int u = (t + 1) % block;
                    Assert.Equal(x[baseIndex + u], y[baseIndex + t]);
                    for (int q = 0; q < 2; q++) Assert.Equal(x[baseIndex + block + 2 * u + q], y[baseIndex + block + 2 * t + q]);
                    for (int q = 0; q < 4; q++) Assert.Equal(x[baseIndex + 3 * block + 4 * u + q], y[baseIndex + 3 * block + 4 * t + q]);
                }
            }
        }
    }

    [Fact]
    public void AMissingWaitReadsNaN()
    {
        var (_, y) = RunAsyncCopyNeighbour(SimtOrder.Default, 64, wait: false);
        Assert.All(y, v => Assert.Equal(PendingCopy, BitConverter.SingleToUInt32Bits(v)));
    }

    private static (float[] x, float[] y) RunAsyncCopyNeighbour(SimtOrder order, int block, bool wait)
    {
        const int blocks = 3;
        var x = Enumerable.Range(0, blocks * 7 * block).Select(i => i + 0.5f).ToArray();
        using var bx = new DeviceArray<float>(x);
        using var by = new DeviceArray<float>(x.Length, -1f);
        Launch(order, "async_copy_neighbour", new Dim3(blocks), new Dim3((uint)block), 0, new KernelArgs().Ptr(Ptr(bx)).Ptr(Ptr(by)).Int(wait ? 1 : 0));
        return (x, by.Read());
    }

    [Fact]
    public void WaitGroupCompletesAllButTheNewestGroupsAndNeverAnUncommittedCopy()
    {
        const int n = 96;
        var x = Enumerable.Range(0, 3 * n).Select(i => i + 0.25f).ToArray();
        using var bx = new DeviceArray<float>(x);
        using var by = new DeviceArray<float>(5 * n, -1f);
        Launch("async_copy_groups", new Dim3(1), new Dim3(n), 0, new KernelArgs().Ptr(Ptr(bx)).Ptr(Ptr(by)));
        var y = by.Read().Select(BitConverter.SingleToUInt32Bits).ToArray();
        uint Bits(int i) => BitConverter.SingleToUInt32Bits(x[i]);
        for (int t = 0; t < n; t++)
        {
            Assert.Equal(Bits(t), y[t]);               // wait<1>: the first group is here
            Assert.Equal(PendingCopy, y[n + t]);       // the second, the newest, may still be in flight
            Assert.Equal(PendingCopy, y[2 * n + t]);   // not committed
            Assert.Equal(Bits(n + t), y[3 * n + t]);   // wait<0>: the second is here
            Assert.Equal(PendingCopy, y[4 * n + t]);   // an uncommitted copy is in no group
        }
    }

    // ------------------------------------------------------------------ schedule orders

    private static int[] RunNeighbours(SimtOrder order, bool barrier, int block = 64, uint seed = 0)
    {
        const int blocks = 3;
        using var outBuffer = new DeviceArray<int>(blocks * block, 0);
        Launch(order, "neighbour_without_barrier", new Dim3(blocks), new Dim3((uint)block), (uint)(block * sizeof(int)),
            new KernelArgs().Ptr(Ptr(outBuffer)).Int(barrier ? 1 : 0), seed);
        return outBuffer.Read();
    }

    [Fact]
    public void ARaceWithoutABarrierShowsInReverseOrder()
    {
        // Forward: thread t reads slot t + 1 before thread t + 1 has run (the 0xff bytes the
        // emulator fills shared memory with, -1); reverse: after. A race the default order
        // hides (or shows) one way, the other order shows the other way.
        var forward = RunNeighbours(SimtOrder.Forward, barrier: false);
        var reverse = RunNeighbours(SimtOrder.Reverse, barrier: false);
        Assert.NotEqual(forward, reverse);
        Assert.Equal(-1, forward[0]);
        Assert.Equal(2, reverse[0]);

        // Random orders differ with the seed.
        Assert.NotEqual(RunNeighbours(SimtOrder.Random, false, seed: 1), RunNeighbours(SimtOrder.Random, false, seed: 2));
    }

    [Fact]
    public void TheSameKernelWithABarrierGivesOneResultInEveryOrder()
    {
        var expected = Enumerable.Range(0, 3 * 64).Select(i => (i % 64 + 1) % 64 + 1).ToArray();
        foreach (var order in new[] { SimtOrder.Forward, SimtOrder.Reverse, SimtOrder.Random })
            foreach (uint seed in new uint[] { 1, 2, 3 })
                Assert.Equal(expected, RunNeighbours(order, barrier: true, seed: seed));
    }

    [Theory]
    [MemberData(nameof(Orders))]
    public void TheBarrierKernelsAreCorrectInEveryOrder(SimtOrder order)
    {
        foreach (int block in new[] { 1, 5, 32, 128, 1024 })
        {
            CheckReversal("reverse_static_shared", block, 0, order);
            CheckReversal("reverse_dynamic_shared", block, (uint)(block * sizeof(float)), order);
            CheckPrefixSum(block, order);
        }
        CheckNeighbours3d(4, 3, 2, order);
        CheckNeighbours3d(8, 8, 8, order);
    }
}
