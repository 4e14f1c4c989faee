using System.Reflection;

namespace RawGan.Engine.Backends.Cuda;

/// <summary>
/// The GPU backend: every IBackend method launches the kernel of the same name (snake_case) from
/// kernels/*.cu through an <see cref="ICudaDriver"/>. Memory comes from a caching allocator, so a
/// steady training step never calls cuMemAlloc. Launches are asynchronous; downloads wait.
/// </summary>
public sealed unsafe partial class CudaBackend
{
    private readonly ICudaDriver _driver;
    private readonly CachingAllocator _allocator;
    private readonly UploadRing _uploads;
    // Tests share one backend across threads; kernel handles (and the block each one launches
    // with) are looked up once and shared.
    private readonly System.Collections.Concurrent.ConcurrentDictionary<string, (nint function, int threads)> _functions = new();
    private long _launches;
    private bool _disposed;

    /// <param name="driver">The real driver or the emulator.</param>
    /// <param name="blockSize">Threads per block of one-dimensional kernels and reductions: a power
    /// of two from 32 to 1024 (tests sweep several; every kernel must be right for all of them).</param>
    /// <param name="precision">How matrix products and convolutions compute; null takes
    /// <see cref="DefaultPrecision"/>. <see cref="Precision.Tf32"/> needs compute capability 8.0.</param>
    public CudaBackend(ICudaDriver driver, int blockSize = 256, Precision? precision = null)
    {
        if (blockSize < 32 || blockSize > 1024 || (blockSize & (blockSize - 1)) != 0)
            throw new ArgumentOutOfRangeException(nameof(blockSize), $"block size must be a power of two from 32 to 1024, got {blockSize}");
        BlockSize = blockSize;
        Precision = precision ?? DefaultPrecision(driver);
        if (Precision == Precision.Tf32 && !SupportsTf32(driver.Device))
            throw new ArgumentException($"precision tf32 needs tensor cores with TF32 (compute capability 8.0, Ampere, or newer); {driver.Device.Name} is {driver.Device.ComputeMajor}.{driver.Device.ComputeMinor}: use fp32");
        _driver = driver;
        _allocator = new CachingAllocator(bytes => (nint)driver.Allocate(bytes), p => driver.Free((ulong)p));
        _uploads = new UploadRing(driver);
        _driver.LoadModule(KernelLibrary.Sources, KernelLibrary.Headers);
    }

    public string Name => _driver.Name;
    public string Description => $"{_driver.Name}: {_driver.Device}; {(Precision == Precision.Tf32 ? "tf32" : "fp32")} matrix products and convolutions";

    /// <summary>How <c>Gemm</c> and the three convolutions compute: fp32 (kernels/gemm.cu and
    /// conv.cu, version 1; gemm_wide.cu and conv_wide.cu, version 3) or tf32 tensor cores
    /// (gemm_tf32.cu, conv_tf32.cu, version 2).</summary>
    public Precision Precision { get; }

    /// <summary>Which fp32 kernels the products use: <see cref="ProductTiling.Auto"/> (version 3
    /// where its tiles fit, version 1 elsewhere: <see cref="TilingFor"/>), or always one version
    /// (the kernel lab and the tests compare them). Ignored at tf32. Set it between steps, not
    /// while a step is being captured as a graph (a graph keeps the kernels it was captured with).</summary>
    public ProductTiling Fp32Tiling
    {
        get => _fp32Tiling;
        set => _fp32Tiling = value == ProductTiling.Version2
            ? throw new ArgumentException("version 2 is the tf32 tiling: ask for Precision.Tf32 instead", nameof(Fp32Tiling))
            : value;
    }
    private ProductTiling _fp32Tiling = ProductTiling.Auto;

    /// <summary>Whether a device has TF32 tensor cores (mma.sync .tf32 and cp.async: sm_80 and newer).</summary>
    public static bool SupportsTf32(DeviceInfo device) => device.ComputeMajor >= 8;

    /// <summary>The precision a backend takes when none is asked for: TF32 on a GPU that has it, as
    /// PyTorch's default for convolutions is (torch.backends.cudnn.allow_tf32 = True); fp32 on older
    /// GPUs, and on the emulator, where the TF32 kernels run two to five times slower (every
    /// mma.sync is a rendezvous of a warp's 32 fibers) and are tested when asked for.</summary>
    public static Precision DefaultPrecision(ICudaDriver driver) =>
        driver is EmulatedDriver || !SupportsTf32(driver.Device) ? Precision.Fp32 : Precision.Tf32;
    public ICudaDriver Driver => _driver;

    /// <summary>Number of kernel launches so far (for tests and profiling).</summary>
    public long Launches => Interlocked.Read(ref _launches);

    /// <summary>Number of copies back to the host so far: each one waits for the device, so a
    /// fast step makes as few as it can (`bench` reports them per iteration).</summary>
    public long Readbacks => Interlocked.Read(ref _readbacks);
    private long _readbacks;

    // ------------------------------------------------------------------ memory

    public DeviceBuffer Allocate(long length)
    {
        try
        {
            return _allocator.Allocate(length);
        }
        catch (OutOfMemoryException)
        {
            var (free, total) = _driver.MemoryInfo();
            throw new CudaException("cuMemAlloc", 2, "CUDA_ERROR_OUT_OF_MEMORY",
                $"out of device memory: asked for {length * sizeof(float):N0} bytes, {free:N0} of {total:N0} bytes free, {Memory.BytesInUse:N0} in use by RawGan");
        }
    }

    public void Free(DeviceBuffer buffer) => _allocator.Free(buffer);

    /// <summary>The device's free and total memory in bytes (cuMemGetInfo), as the driver sees it now.</summary>
    public (long Free, long Total) DeviceMemory() => _driver.MemoryInfo();

    public void Upload(ReadOnlySpan<float> source, DeviceBuffer destination)
    {
        Check(destination, source.Length, nameof(Upload));
        CaptureRules.Refuse(_driver.Capturing, "cuMemcpyHtoDAsync_v2", "host memory was uploaded");
        long bytes = (long)source.Length * sizeof(float);
        if (bytes == 0) return;
        fixed (float* p = source)
        {
            if (bytes > UploadRing.LargestStaged) _driver.CopyHostToDevice((ulong)destination.Address, p, bytes);
            else lock (_uploads) _uploads.Upload((ulong)destination.Address, p, bytes);
        }
    }

    /// <summary>Uploads staged through page-locked memory so far, and how many of them had to wait
    /// for the device to finish reading a staging region first (`bench` reports both per iteration).</summary>
    public (long Staged, long Waited) Uploads
    {
        get { lock (_uploads) return (_uploads.Staged, _uploads.Waited); }
    }

    /// <summary>
    /// Page-locked staging for uploads. From pageable memory, cuMemcpyHtoDAsync may wait for the
    /// stream before it copies (the driver stages the bytes itself), so uploading the next step's
    /// batch while the current step runs could stall the host until the device is idle. Instead
    /// every upload copies its bytes into the next free region of one page-locked ring and queues
    /// the device copy from there, with an event after it; the caller's memory is free at once,
    /// and a region is written again only after its event is reached. With two or more steps'
    /// uploads in the ring, the host waits only for the copy of the step before last: double
    /// buffering without a second API. The ring grows (after the device has drained it) to four
    /// times the largest upload; an upload above <see cref="LargestStaged"/> goes direct.
    /// </summary>
    private sealed class UploadRing(ICudaDriver driver) : IDisposable
    {
        public const long LargestStaged = 64L << 20;
        private const long Alignment = 256, SmallestRing = 1L << 20;
        private byte* _ring;
        private long _capacity, _head;
        private readonly Queue<(long Start, long End, nint Event)> _inFlight = new();
        private readonly Stack<nint> _spareEvents = new();

        public long Staged { get; private set; }
        public long Waited { get; private set; }

        public void Upload(ulong destination, void* source, long bytes)
        {
            long need = (bytes + Alignment - 1) / Alignment * Alignment;
            if (need * 4 > _capacity) Grow(Math.Max(SmallestRing, need * 4));
            if (_head + need > _capacity) _head = 0;
            // Copies complete in stream order: waiting for the newest in-flight region that
            // overlaps [head, head + need) frees it and every older one.
            int newest = -1, index = 0;
            foreach (var r in _inFlight)
            {
                if (r.Start < _head + need && _head < r.End) newest = index;
                index++;
            }
            if (newest >= 0)
            {
                Waited++;
                for (int i = 0; i <= newest; i++)
                {
                    var r = _inFlight.Dequeue();
                    if (i == newest) driver.WaitEvent(r.Event);
                    _spareEvents.Push(r.Event);
                }
            }
            byte* staging = _ring + _head;
            Buffer.MemoryCopy(source, staging, bytes, bytes);
            driver.CopyHostToDeviceAsync(destination, staging, bytes);
            nint e = _spareEvents.Count > 0 ? _spareEvents.Pop() : driver.CreateEvent();
            driver.RecordEvent(e);
            _inFlight.Enqueue((_head, _head + need, e));
            _head += need;
            Staged++;
        }

        /// <summary>A larger ring, once every copy from the old one has been waited for.</summary>
        private void Grow(long capacity)
        {
            Drain();
            if (_ring != null) driver.FreeHost(_ring);
            _ring = null;
            _ring = (byte*)driver.AllocateHost(capacity);
            _capacity = capacity;
            _head = 0;
        }

        private void Drain()
        {
            while (_inFlight.Count > 0)
            {
                var r = _inFlight.Dequeue();
                if (_inFlight.Count == 0) driver.WaitEvent(r.Event);
                _spareEvents.Push(r.Event);
            }
        }

        public void Dispose()
        {
            if (_ring == null && _spareEvents.Count == 0 && _inFlight.Count == 0) return;
            Drain();
            while (_spareEvents.Count > 0) driver.DestroyEvent(_spareEvents.Pop());
            if (_ring != null) driver.FreeHost(_ring);
            _ring = null;
            _capacity = 0;
        }
    }

    public void Download(DeviceBuffer source, Span<float> destination)
    {
        Check(source, destination.Length, nameof(Download));
        Interlocked.Increment(ref _readbacks);
        fixed (float* p = destination) _driver.CopyDeviceToHost(p, (ulong)source.Address, (long)destination.Length * sizeof(float));
    }

    /// <summary>Page-locked host memory, a copy into it in stream order and an event after it:
    /// <see cref="IAsyncRead.Wait"/> waits for the event, not for the whole stream.</summary>
    public IAsyncRead CreateAsyncRead(long capacity) => new PinnedRead(this, capacity);

    private sealed class PinnedRead : AsyncRead
    {
        private readonly CudaBackend _backend;
        private float* _host;
        private nint _event;

        public PinnedRead(CudaBackend backend, long capacity) : base(capacity)
        {
            _backend = backend;
            _host = (float*)backend._driver.AllocateHost(capacity * sizeof(float));
            _event = backend._driver.CreateEvent();
        }

        protected override void Start(DeviceBuffer source)
        {
            Interlocked.Increment(ref _backend._readbacks);
            _backend._driver.CopyDeviceToHostAsync(_host, (ulong)source.Address, source.Length * sizeof(float));
            _backend._driver.RecordEvent(_event);
        }

        protected override void Land(Span<float> destination)
        {
            _backend._driver.WaitEvent(_event);
            new ReadOnlySpan<float>(_host, destination.Length).CopyTo(destination);
        }

        public override void Dispose()
        {
            if (_host == null) return;
            _backend._driver.DestroyEvent(_event);
            _backend._driver.FreeHost(_host);
            _host = null;
            _event = 0;
        }
    }

    public void Copy(DeviceBuffer source, DeviceBuffer destination, long length)
    {
        Check(source, length, nameof(Copy));
        Check(destination, length, nameof(Copy));
        _driver.CopyDeviceToDevice((ulong)destination.Address, (ulong)source.Address, length * sizeof(float));
    }

    private static void Check(DeviceBuffer b, long needed, string op)
    {
        if (b.Length < needed) throw new ArgumentException($"{op}: buffer holds {b.Length} floats, {needed} needed");
    }

    public void Synchronize() => _driver.Synchronize();

    // ------------------------------------------------------------------ graphs

    public bool SupportsGraphs => _driver.SupportsCapture;

    /// <summary>How many graph launches so far (each runs many kernels with one call).</summary>
    public long GraphLaunches => Interlocked.Read(ref _graphLaunches);
    private long _graphLaunches;

    /// <summary>
    /// Captures <paramref name="body"/> as a CUDA graph (cuStreamBeginCapture ... cuStreamEndCapture,
    /// cuGraphInstantiate): nothing runs until <see cref="IStepGraph.Replay"/>. The blocks the body
    /// takes from the allocator belong to a private pool for the graph's lifetime, because every
    /// replay writes into them again (see <see cref="CachingAllocator"/>). A body that allocates
    /// from the device, copies to or from the host or synchronizes fails with the driver's
    /// CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED and a message naming the call; nothing is left captured.
    /// </summary>
    public IStepGraph CaptureGraph(Action body)
    {
        var pool = _allocator.BeginPool();
        long launches = Launches;
        nint graph;
        int nodes;
        try
        {
            _driver.BeginCapture();
            try
            {
                body();
            }
            catch
            {
                _driver.AbortCapture();
                throw;
            }
            graph = _driver.EndCapture(out nodes);
        }
        catch
        {
            _allocator.ReleasePool(pool);
            throw;
        }
        _allocator.EndPool(pool);
        return new Graph(this, graph, pool, nodes, Launches - launches);
    }

    private sealed class Graph(CudaBackend backend, nint handle, CachingAllocator.Pool pool, int operations, long kernels) : IStepGraph
    {
        private bool _disposed;
        private long _replays;

        public int Operations => operations;
        /// <summary>Kernel launches among the operations.</summary>
        public long Kernels => kernels;
        public long Replays => _replays;

        public void Replay()
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            backend._driver.LaunchGraph(handle);
            _replays++;
            Interlocked.Increment(ref backend._graphLaunches);
        }

        public void Dispose()
        {
            if (_disposed) return;
            _disposed = true;
            if (!backend._disposed)
            {
                backend._driver.DestroyGraph(handle);
                backend._allocator.ReleasePool(pool);
            }
        }

        public override string ToString() => $"a CUDA graph of {operations} operations ({kernels} kernels), {(pool.Bytes / 1048576.0):F1} MiB reserved";
    }
    public MemoryStats Memory => _allocator.Stats;
    public void ReleaseCachedMemory() => _allocator.ReleaseCached();

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        lock (_uploads) _uploads.Dispose();
        _allocator.ReleaseAll();
        _driver.Dispose();
    }

    // ------------------------------------------------------------------ launching

    /// <summary>Threads per block for one-dimensional kernels, reductions and version 1's tiles
    /// (gemm_tile.cuh). The tensor-core kernels take <see cref="TensorCoreThreads"/>.</summary>
    public int BlockSize { get; }

    /// <summary>The most threads a tensor-core kernel's block has (mma_tile.cuh: 512, 4 x 4 warps of
    /// 32 x 32 outputs, a 128 x 128 tile; fewer where the output is small). Tests lower it, before
    /// the first launch, to run every block shape from one warp up.</summary>
    internal int TensorCoreThreads { get; set; } = 512;

    /// <summary>Blocks of <paramref name="threads"/> for a grid-stride loop over <paramref name="n"/>
    /// items: enough to fill the device, never more than the items need.</summary>
    private Dim3 Grid1D(long n, int threads)
    {
        long needed = Math.Max(1, (n + threads - 1) / threads);
        long cap = Math.Max(1, _driver.Device.Multiprocessors) * 32L;
        return new Dim3((uint)Math.Min(needed, cap));
    }

    private (nint function, int threads) Function(string kernel) =>
        _functions.TryGetValue(kernel, out var f) ? f : _functions.GetOrAdd(kernel, Lookup);

    /// <summary>The function and the threads per block it launches with: <see cref="BlockSize"/>
    /// (<see cref="TensorCoreThreads"/> for the tensor-core kernels), lowered to the largest power
    /// of two the function can launch with on this device (its registers and declared
    /// <c>__launch_bounds__</c>), so that no block size can fail late.</summary>
    private (nint, int) Lookup(string kernel)
    {
        nint function = _driver.GetFunction(kernel);
        int limit = _driver.MaxThreadsPerBlock(function);
        if (limit < LaunchLimits.WarpSize)
            throw new CudaException("cuFuncGetAttribute", 701, "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES", $"kernel {kernel} cannot launch even one warp ({limit} threads at most)");
        if (WideKernels.Contains(kernel))
        {
            // Version 3's block is 256 threads, always (its loaders and tiles are sized for it).
            if (limit < WideThreads)
                throw new CudaException("cuFuncGetAttribute", 701, "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES", $"kernel {kernel} needs blocks of {WideThreads} threads; this device allows {limit}");
            return (function, WideThreads);
        }
        int threads = MmaKernels.Contains(kernel) ? TensorCoreThreads : BlockSize;
        while (threads > limit) threads /= 2;
        return (function, threads);
    }

    /// <summary>Threads per block that <paramref name="kernel"/> launches with (see <see cref="Lookup"/>).</summary>
    public int ThreadsPerBlock(string kernel) => Function(kernel).threads;

    /// <summary>Sees every launch before it is made (tests: the signature check of every kernel).</summary>
    internal Action<string, KernelArgs>? LaunchObserver { get; set; }

    private void Launch(string kernel, Dim3 grid, Dim3 block, uint sharedBytes, KernelArgs args)
    {
        LaunchObserver?.Invoke(kernel, args);
        if (grid.Count == 0) return;
        void** pointers = stackalloc void*[KernelArgs.MaxArguments];
        args.FillPointers(pointers);
        _driver.Launch(Function(kernel).function, kernel, grid, block, sharedBytes, pointers);
        Interlocked.Increment(ref _launches);
    }

    // The kernel methods, one per IBackend method, are in CudaBackend.Kernels.cs. The pattern:
    //   public void Fill(DeviceBuffer y, long n, float value) =>
    //       LaunchElementwise("fill", n, new KernelArgs().Ptr(y).Long(n).Float(value));
}

/// <summary>The kernel versions of a matrix product or convolution (kernels/*.cu, each documented
/// in its header).</summary>
public enum ProductTiling
{
    /// <summary>Chosen per product by <see cref="CudaBackend.TilingFor"/>.</summary>
    Auto,
    /// <summary>fp32, 4 x 4 outputs per thread of a 64 x 64 tile (gemm_tile.cuh: gemm.cu, conv.cu).</summary>
    Version1,
    /// <summary>tf32 tensor cores, a cp.async pipeline (mma_tile.cuh: gemm_tf32.cu, conv_tf32.cu).</summary>
    Version2,
    /// <summary>fp32, 8 x 8 outputs per thread of a 128 x 128 tile, global loads overlapped with
    /// the arithmetic (wide_tile.cuh: gemm_wide.cu, conv_wide.cu).</summary>
    Version3,
}

/// <summary>How a CUDA backend computes matrix products and convolutions.</summary>
public enum Precision
{
    /// <summary>fp32 multiplies and sums: kernels/gemm.cu and conv.cu (version 1), gemm_wide.cu and
    /// conv_wide.cu (version 3).</summary>
    Fp32,
    /// <summary>Inputs rounded to tf32 (10 mantissa bits) on tensor cores, fp32 sums:
    /// kernels/gemm_tf32.cu and conv_tf32.cu (version 2). Compute capability 8.0 and newer.</summary>
    Tf32,
}

/// <summary>The .cu sources and headers, embedded in this assembly from kernels/.</summary>
public static class KernelLibrary
{
    private static readonly Lazy<(KernelSource[] sources, Dictionary<string, string> headers, Dictionary<string, string> emulator)> Files = new(Load);

    /// <summary>kernels/*.cu: what NVRTC compiles and the emulator builds.</summary>
    public static IReadOnlyList<KernelSource> Sources => Files.Value.sources;
    /// <summary>kernels/*.cuh: headers the kernels include, by include name.</summary>
    public static IReadOnlyDictionary<string, string> Headers => Files.Value.headers;
    /// <summary>kernels/simt/*: the CPU execution model used only by the emulator.</summary>
    public static IReadOnlyDictionary<string, string> EmulatorFiles => Files.Value.emulator;

    private static (KernelSource[], Dictionary<string, string>, Dictionary<string, string>) Load()
    {
        var asm = typeof(KernelLibrary).Assembly;
        var sources = new List<KernelSource>();
        var headers = new Dictionary<string, string>();
        var emulator = new Dictionary<string, string>();
        foreach (var name in asm.GetManifestResourceNames().Where(n => n.StartsWith("kernels/")).Order())
        {
            using var stream = asm.GetManifestResourceStream(name)!;
            var text = new StreamReader(stream).ReadToEnd();
            var rel = name["kernels/".Length..];
            if (rel.StartsWith("simt/")) emulator[rel] = text;
            else if (rel.EndsWith(".cu")) sources.Add(new KernelSource(rel, text));
            else headers[rel] = text;
        }
        if (sources.Count == 0)
            throw new InvalidOperationException($"no kernels are embedded in {asm.GetName().Name}; the build did not include kernels/*.cu");
        return (sources.ToArray(), headers, emulator);
    }
}
