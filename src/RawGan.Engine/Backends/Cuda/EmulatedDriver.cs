using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;
using System.Text.RegularExpressions;

namespace RawGan.Engine.Backends.Cuda;

/// <summary>
/// A CUDA driver that runs the kernels on the CPU. The same kernels/*.cu that NVRTC compiles for
/// the GPU are compiled by g++ together with kernels/simt/, which supplies CUDA's execution
/// model (a grid of blocks run in parallel, a block's threads as cooperatively scheduled fibers,
/// __syncthreads, shared memory, atomics). Each kernel is exported as
/// <c>int simt_launch_NAME(const simt_launch_config*, void** args)</c>, called here with exactly
/// the argument array that cuLaunchKernel would receive. "Device" memory is host memory, so
/// everything above this class (CudaBackend, its allocator, its launch arithmetic) runs unchanged.
///
/// Set RAWGAN_EMULATOR_DEBUG=1 to build with -O0 -g, then step into a kernel with gdb. Set
/// RAWGAN_SIMT_ORDER=reverse or random (or <see cref="Order"/>) to run a block's threads in
/// another order, which exposes races that the default forward order hides.
/// </summary>
public sealed unsafe partial class EmulatedDriver : ICudaDriver
{
    [StructLayout(LayoutKind.Sequential)]
    private struct SimtLaunchConfig
    {
        public uint GridX, GridY, GridZ, BlockX, BlockY, BlockZ, SharedBytes, Schedule, Seed;
    }

    private nint _library;
    private readonly Dictionary<string, nint> _functions = new();
    private readonly Dictionary<nint, (string kernel, int maxThreads)> _limits = new();
    private readonly Dictionary<string, int> _declaredMaxThreads = new();
    private readonly HashSet<ulong> _allocations = new();
    private readonly Dictionary<nint, int[]> _argumentSizes = new();
    private readonly Lock _lock = new();
    private delegate* unmanaged<sbyte*> _lastError;
    private bool _disposed;

    private static readonly bool DebugBuild = Environment.GetEnvironmentVariable("RAWGAN_EMULATOR_DEBUG") == "1";

    /// <summary>The largest dynamic + static shared memory a block may use, as on most GPUs.</summary>
    public const int SharedMemoryPerBlock = 48 * 1024;

    public EmulatedDriver()
    {
        Device = new DeviceInfo(
            $"RawGan SIMT emulator on {Environment.ProcessorCount} CPU threads", 8, 0,
            GC.GetGCMemoryInfo().TotalAvailableMemoryBytes, Environment.ProcessorCount, 1024, SharedMemoryPerBlock, 32,
            "emulated", CompilerVersion());
    }

    /// <summary>An emulated driver with other kernels loaded (the emulator's own self-tests).</summary>
    public static EmulatedDriver ForSources(IReadOnlyList<KernelSource> sources, IReadOnlyDictionary<string, string>? headers = null)
    {
        var driver = new EmulatedDriver();
        driver.LoadModule(sources, headers ?? KernelLibrary.Headers);
        return driver;
    }

    public string Name => "cuda-emulated";
    public DeviceInfo Device { get; }

    // ------------------------------------------------------------------ memory: host memory posing as device memory

    public ulong Allocate(long bytes)
    {
        CaptureRules.Refuse(Capturing, "cuMemAlloc_v2", "device memory was allocated");
        var p = (ulong)NativeMemory.AlignedAlloc((nuint)Math.Max(bytes, 1), 256);   // cudaMalloc aligns to at least 256 bytes
        lock (_lock) _allocations.Add(p);
        return p;
    }

    public void Free(ulong address)
    {
        CaptureRules.Refuse(Capturing, "cuMemFree_v2", "device memory was freed (cuMemFree synchronizes)");
        lock (_lock)
        {
            if (!_allocations.Remove(address))
                throw new CudaException("cuMemFree_v2", 1, "CUDA_ERROR_INVALID_VALUE", $"0x{address:x} is not an allocation of this device");
        }
        NativeMemory.AlignedFree((void*)address);
    }

    public void CopyHostToDevice(ulong destination, void* source, long bytes)
    {
        CaptureRules.Refuse(Capturing, "cuMemcpyHtoDAsync_v2", "host memory was uploaded");
        Buffer.MemoryCopy(source, (void*)destination, bytes, bytes);
    }

    public void CopyDeviceToHost(void* destination, ulong source, long bytes)
    {
        CaptureRules.Refuse(Capturing, "cuMemcpyDtoHAsync_v2", "device memory was read back to the host");
        CompleteReads(long.MaxValue);   // it waits for the stream: every copy queued before it has landed
        Buffer.MemoryCopy((void*)source, destination, bytes, bytes);
    }

    // ------------------------------------------------------------------ reads that do not wait, made late on purpose
    //
    // On a GPU, cuMemcpyDtoHAsync returns before the bytes arrive; they are there once an event
    // recorded after the copy has been reached. The emulator runs every launch before it returns,
    // so it could copy at once, and a host that read the page-locked memory before waiting for the
    // event would never see the difference. It does the opposite: the copy takes its bytes now
    // (in stream order), fills the destination with 0xFF bytes (NaN as floats, -1 as integers),
    // and writes the real bytes only when an event recorded after it is waited for (or the
    // stream is synchronized). A missing wait reads NaN here.

    // Page-locked blocks: each has a staging copy of its size, made when it is allocated, so that
    // a steady step's reads allocate nothing; a block holds at most one read in flight.
    private readonly Dictionary<nint, byte[]> _hostBlocks = new();
    private readonly List<(long sequence, nint destination, int bytes)> _pendingReads = new();
    private readonly Dictionary<nint, long> _events = new();
    private long _readSequence, _nextEvent = 1;

    public void* AllocateHost(long bytes)
    {
        CaptureRules.Refuse(Capturing, "cuMemHostAlloc", "host memory was page-locked");
        void* p = NativeMemory.AlignedAlloc((nuint)Math.Max(bytes, 1), 64);
        lock (_lock) _hostBlocks[(nint)p] = new byte[Math.Max(bytes, 1)];
        return p;
    }

    public void FreeHost(void* host)
    {
        lock (_lock)
        {
            if (!_hostBlocks.Remove((nint)host, out var staging))
                throw new CudaException("cuMemFreeHost", 1, "CUDA_ERROR_INVALID_VALUE", $"0x{(nint)host:x} is not page-locked memory of this driver");
            _pendingReads.RemoveAll(r => r.destination == (nint)host);
            _pendingWrites.RemoveAll(w => w.source >= (nint)host && w.source < (nint)host + staging.Length);
        }
        NativeMemory.AlignedFree(host);
    }

    public void CopyDeviceToHostAsync(void* destination, ulong source, long bytes)
    {
        CaptureRules.Refuse(Capturing, "cuMemcpyDtoHAsync_v2", "device memory was read back to the host");
        lock (_lock)
        {
            if (!_hostBlocks.TryGetValue((nint)destination, out var staging) || bytes > staging.Length)
                throw new CudaException("cuMemcpyDtoHAsync_v2", 1, "CUDA_ERROR_INVALID_VALUE",
                    $"an asynchronous read of {bytes} bytes into 0x{(nint)destination:x}, which is not the start of a page-locked block that large (cuMemHostAlloc)");
            foreach (var r in _pendingReads)
                if (r.destination == (nint)destination)
                    throw new CudaException("cuMemcpyDtoHAsync_v2", 1, "CUDA_ERROR_INVALID_VALUE",
                        $"a second asynchronous read into 0x{(nint)destination:x} before the first was waited for");
            new ReadOnlySpan<byte>((void*)source, (int)bytes).CopyTo(staging);
            new Span<byte>(destination, (int)bytes).Fill(0xFF);
            _pendingReads.Add((++_readSequence, (nint)destination, (int)bytes));
        }
    }

    // Uploads that do not wait: cuMemcpyHtoDAsync from page-locked memory returns at once, and the
    // GPU reads the source when the stream reaches the copy, which may be long after (behind a
    // whole step). A host that writes those bytes again before an event recorded after the copy
    // has been reached races with the device. The emulator copies at once (everything queued
    // before has run) but keeps a snapshot of the source, and when the host waits for an event
    // past the copy (or synchronizes), or queues another upload from the same bytes, it compares:
    // bytes changed in between fail with the address, so a missing wait is caught here.
    private readonly List<(long sequence, nint source, byte[] snapshot)> _pendingWrites = new();

    public void CopyHostToDeviceAsync(ulong destination, void* source, long bytes)
    {
        CaptureRules.Refuse(Capturing, "cuMemcpyHtoDAsync_v2", "host memory was uploaded");
        lock (_lock)
        {
            if (!InsidePageLocked((nint)source, bytes))
                throw new CudaException("cuMemcpyHtoDAsync_v2", 1, "CUDA_ERROR_INVALID_VALUE",
                    $"an asynchronous upload of {bytes} bytes from 0x{(nint)source:x}, which is not inside a page-locked block (cuMemHostAlloc)");
            for (int i = _pendingWrites.Count - 1; i >= 0; i--)
            {
                var (_, at, snapshot) = _pendingWrites[i];
                if (at < (nint)source + (nint)bytes && (nint)source < at + snapshot.Length)
                {
                    CheckUnchanged(at, snapshot);
                    _pendingWrites.RemoveAt(i);
                }
            }
            _pendingWrites.Add((++_readSequence, (nint)source, new ReadOnlySpan<byte>(source, (int)bytes).ToArray()));
            Buffer.MemoryCopy(source, (void*)destination, bytes, bytes);
        }
    }

    private bool InsidePageLocked(nint start, long bytes)
    {
        foreach (var (block, staging) in _hostBlocks)
            if (start >= block && start + bytes <= block + staging.Length) return true;
        return false;
    }

    private static void CheckUnchanged(nint source, byte[] snapshot)
    {
        if (!new ReadOnlySpan<byte>((void*)source, snapshot.Length).SequenceEqual(snapshot))
            throw new CudaException("cuMemcpyHtoDAsync_v2", 1, "CUDA_ERROR_INVALID_VALUE",
                $"the host wrote the page-locked bytes at 0x{source:x} ({snapshot.Length} bytes) while an upload from them could still be reading: " +
                "wait for an event recorded after the copy before writing them again");
    }

    /// <summary>Checks and forgets the uploads queued up to <paramref name="sequence"/> (the host has waited past them).</summary>
    private void CompleteWrites(long sequence)
    {
        lock (_lock)
            for (int i = _pendingWrites.Count - 1; i >= 0; i--)
            {
                var (at, source, snapshot) = _pendingWrites[i];
                if (at > sequence) continue;
                _pendingWrites.RemoveAt(i);
                CheckUnchanged(source, snapshot);
            }
    }

    public nint CreateEvent()
    {
        lock (_lock)
        {
            nint e = (nint)_nextEvent++;
            _events[e] = 0;
            return e;
        }
    }

    public void RecordEvent(nint e)
    {
        lock (_lock)
        {
            if (!_events.ContainsKey(e)) throw new CudaException("cuEventRecord", 400, "CUDA_ERROR_INVALID_HANDLE", $"event {e} does not exist");
            _events[e] = _readSequence;   // reached once every copy queued so far has landed
        }
    }

    public void WaitEvent(nint e)
    {
        CaptureRules.Refuse(Capturing, "cuEventSynchronize", "the host waited for the device");
        long upTo;
        lock (_lock)
            if (!_events.TryGetValue(e, out upTo)) throw new CudaException("cuEventSynchronize", 400, "CUDA_ERROR_INVALID_HANDLE", $"event {e} does not exist");
        CompleteReads(upTo);
    }

    public void DestroyEvent(nint e)
    {
        lock (_lock)
            if (!_events.Remove(e)) throw new CudaException("cuEventDestroy_v2", 400, "CUDA_ERROR_INVALID_HANDLE", $"event {e} does not exist (destroyed twice?)");
    }

    /// <summary>Lands every asynchronous read queued up to <paramref name="sequence"/>, and checks
    /// the uploads queued up to it.</summary>
    private void CompleteReads(long sequence)
    {
        CompleteWrites(sequence);
        lock (_lock)
        {
            for (int i = _pendingReads.Count - 1; i >= 0; i--)
            {
                var (at, destination, bytes) = _pendingReads[i];
                if (at > sequence) continue;
                _hostBlocks[destination].AsSpan(0, bytes).CopyTo(new Span<byte>((void*)destination, bytes));
                _pendingReads.RemoveAt(i);
            }
        }
    }

    public void CopyDeviceToDevice(ulong destination, ulong source, long bytes)
    {
        if (Record(new RecordedCopy(destination, source, bytes))) return;
        Buffer.MemoryCopy((void*)source, (void*)destination, bytes, bytes);
    }

    public (long free, long total) MemoryInfo()
    {
        var info = GC.GetGCMemoryInfo();
        return (Math.Max(0, info.TotalAvailableMemoryBytes - info.MemoryLoadBytes), info.TotalAvailableMemoryBytes);
    }

    // ------------------------------------------------------------------ kernels

    [GeneratedRegex(@"__global__\s+void\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?([A-Za-z_][A-Za-z0-9_]*)\s*\(")]
    private static partial Regex KernelDeclaration();

    /// <summary>Names of the kernels defined in a source (what SIMT_EXPORT lines are generated for).</summary>
    public static IEnumerable<string> KernelNames(string source) =>
        KernelDeclaration().Matches(StripComments(source)).Select(m => m.Groups[1].Value).Distinct();

    private static string StripComments(string s) => Regex.Replace(s, @"//[^\n]*|/\*.*?\*/", " ", RegexOptions.Singleline);

    public void LoadModule(IReadOnlyList<KernelSource> sources, IReadOnlyDictionary<string, string> headers)
    {
        if (_library != 0) throw new InvalidOperationException("the emulator loads its kernels once");
        foreach (var source in sources)
            foreach (var (kernel, bound) in LaunchLimits.DeclaredMaxThreads(source.Text, headers))
                _declaredMaxThreads[kernel] = bound;
        string path = BuildLibrary(sources, headers, KernelLibrary.EmulatorFiles);
        _library = NativeLibrary.Load(path);
        _lastError = (delegate* unmanaged<sbyte*>)NativeLibrary.GetExport(_library, "simt_last_error");
    }

    public nint GetFunction(string kernel)
    {
        lock (_lock)
        {
            if (_functions.TryGetValue(kernel, out var f)) return f;
            if (!NativeLibrary.TryGetExport(_library, "simt_launch_" + kernel, out f))
                throw new CudaException("cuModuleGetFunction", 500, "CUDA_ERROR_NOT_FOUND", $"no kernel named '{kernel}' in the emulated module");
            _functions[kernel] = f;
            var sizes = (delegate* unmanaged<int*, int, int>)NativeLibrary.GetExport(_library, "simt_argument_sizes_" + kernel);
            int* buffer = stackalloc int[KernelArgs.MaxArguments];
            int count = sizes(buffer, KernelArgs.MaxArguments);
            _argumentSizes[f] = new ReadOnlySpan<int>(buffer, Math.Min(count, KernelArgs.MaxArguments)).ToArray();
            _limits[f] = (kernel, Math.Min(Device.MaxThreadsPerBlock, _declaredMaxThreads.GetValueOrDefault(kernel, Device.MaxThreadsPerBlock)));
            return f;
        }
    }

    public string KernelTarget => $"the CPU, built by {Device.CompilerVersion} with kernels/simt";

    /// <summary>The kernel's declared <c>__launch_bounds__</c>, else 1024. A GPU lowers this further
    /// when registers x threads would not fit; ptxas's report (CudaDriverTests, `info --kernels`)
    /// checks that every declared bound fits on every architecture.</summary>
    public int MaxThreadsPerBlock(nint function)
    {
        lock (_lock) return _limits.TryGetValue(function, out var l) ? l.maxThreads : throw new ArgumentException("not a function of this module");
    }

    /// <summary>The order in which each block's threads start, and resume after a barrier or a
    /// warp collective (kernels/simt/simt.cpp, "Schedule orders"). <see cref="SimtOrder.Default"/>
    /// takes RAWGAN_SIMT_ORDER, forward when unset.</summary>
    public SimtOrder Order { get; set; }

    /// <summary>The seed of <see cref="SimtOrder.Random"/>; 0 takes RAWGAN_SIMT_SEED, 1 when unset.</summary>
    public uint OrderSeed { get; set; }

    public void Launch(nint function, string kernel, Dim3 grid, Dim3 block, uint sharedBytes, void** arguments) =>
        Launch(function, kernel, grid, block, sharedBytes, arguments, Order, OrderSeed);

    /// <summary>A launch in the given schedule order, whatever <see cref="Order"/> says.</summary>
    public void Launch(nint function, string kernel, Dim3 grid, Dim3 block, uint sharedBytes, void** arguments, SimtOrder order, uint seed = 0)
    {
        if (block.Count > 1024 || block.Count == 0 || grid.Count == 0)
            throw new CudaException("cuLaunchKernel", 1, "CUDA_ERROR_INVALID_VALUE", $"kernel {kernel}: grid {grid}, block {block} is not a valid launch");
        int maxThreads = MaxThreadsPerBlock(function);
        if (block.Count > (ulong)maxThreads)
            throw new CudaException("cuLaunchKernel", 701, "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES",
                $"kernel {kernel}: a block of {block.Count} threads exceeds its __launch_bounds__ of {maxThreads}");
        if (sharedBytes > SharedMemoryPerBlock)
            throw new CudaException("cuLaunchKernel", 701, "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES", $"kernel {kernel} asks for {sharedBytes} bytes of shared memory; the limit is {SharedMemoryPerBlock}");
        if (Capturing)
        {
            int[] sizes;
            lock (_lock) sizes = _argumentSizes[function];
            int total = sizes.Sum();
            var bytes = new byte[total];
            var offsets = new int[sizes.Length];
            for (int i = 0, at = 0; i < sizes.Length; at += sizes[i], i++)
            {
                offsets[i] = at;
                new ReadOnlySpan<byte>(arguments[i], sizes[i]).CopyTo(bytes.AsSpan(at));
            }
            Record(new RecordedLaunch(function, kernel, grid, block, sharedBytes, bytes, offsets));
            return;
        }
        Run(function, kernel, grid, block, sharedBytes, arguments, order, seed);
    }

    private void Run(nint function, string kernel, Dim3 grid, Dim3 block, uint sharedBytes, void** arguments, SimtOrder order, uint seed)
    {
        var config = new SimtLaunchConfig
        {
            GridX = grid.X,
            GridY = grid.Y,
            GridZ = grid.Z,
            BlockX = block.X,
            BlockY = block.Y,
            BlockZ = block.Z,
            SharedBytes = sharedBytes,
            Schedule = (uint)order,
            Seed = seed,
        };
        int r = ((delegate* unmanaged<SimtLaunchConfig*, void**, int>)function)(&config, arguments);
        if (r != 0)
        {
            string message = Marshal.PtrToStringUTF8((nint)_lastError()) ?? "unknown error";
            throw new CudaException("cuLaunchKernel (emulated)", 719, "CUDA_ERROR_LAUNCH_FAILED", $"kernel {kernel}, grid {grid}, block {block}: {message}");
        }
    }

    /// <summary>Launches run to completion before they return: nothing to wait for.</summary>
    public void Synchronize()
    {
        CaptureRules.Refuse(Capturing, "cuStreamSynchronize", "the host waited for the device");
        CompleteReads(long.MaxValue);
    }

    // ------------------------------------------------------------------ stream capture: CUDA graphs, recorded and replayed

    private abstract record RecordedOperation;
    /// <summary>A launch with a copy of its arguments' bytes (each parameter's C size, from the
    /// kernel's own signature: simt_argument_sizes_NAME), as cuLaunchKernel copies them into a node.</summary>
    private sealed record RecordedLaunch(nint Function, string Kernel, Dim3 Grid, Dim3 Block, uint SharedBytes, byte[] Arguments, int[] Offsets) : RecordedOperation;
    private sealed record RecordedCopy(ulong Destination, ulong Source, long Bytes) : RecordedOperation;

    private List<RecordedOperation>? _recording;
    private int _recordingThread;
    private readonly Dictionary<nint, RecordedOperation[]> _graphs = new();
    private nint _nextGraph = 1;

    public bool SupportsCapture => true;
    public bool Capturing => Volatile.Read(ref _recording) != null;

    /// <summary>Appends to the capture in progress; false when there is none. A call from a thread
    /// other than the capturing one is refused: it would land in the graph (on a GPU too, since
    /// the capture is of the stream), which is never what that thread meant.</summary>
    private bool Record(RecordedOperation operation)
    {
        var recording = Volatile.Read(ref _recording);
        if (recording == null) return false;
        if (Environment.CurrentManagedThreadId != _recordingThread)
            throw new CudaException("cuLaunchKernel", 901, "CUDA_ERROR_STREAM_CAPTURE_INVALIDATED",
                $"{Describe(operation)} came from another thread while a step was being captured as a CUDA graph");
        recording.Add(operation);
        return true;
    }

    private static string Describe(RecordedOperation operation) => operation switch
    {
        RecordedLaunch l => $"a launch of {l.Kernel}",
        RecordedCopy c => $"a copy of {c.Bytes} bytes",
        _ => "an operation",
    };

    public void BeginCapture()
    {
        lock (_lock)
        {
            if (_recording != null) throw new CudaException("cuStreamBeginCapture_v2", 900, "CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED", "a capture is already in progress");
            _recordingThread = Environment.CurrentManagedThreadId;
            Volatile.Write(ref _recording, new List<RecordedOperation>());
        }
    }

    public nint EndCapture(out int nodes)
    {
        lock (_lock)
        {
            var recording = _recording ?? throw new CudaException("cuStreamEndCapture", 1, "CUDA_ERROR_INVALID_VALUE", "no capture is in progress");
            Volatile.Write(ref _recording, null);
            nint graph = _nextGraph++;
            _graphs[graph] = recording.ToArray();
            nodes = recording.Count;
            return graph;
        }
    }

    public void AbortCapture()
    {
        lock (_lock) Volatile.Write(ref _recording, null);
    }

    /// <summary>Runs the recorded operations in order: each launch from its copied argument bytes,
    /// so a graph sees exactly the values it was captured with, whatever the host changed since.</summary>
    public void LaunchGraph(nint graph)
    {
        RecordedOperation[] operations;
        lock (_lock)
        {
            if (_recording != null) throw new CudaException("cuGraphLaunch", 900, "CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED", "a graph was launched while another is being captured");
            if (!_graphs.TryGetValue(graph, out operations!)) throw new CudaException("cuGraphLaunch", 400, "CUDA_ERROR_INVALID_HANDLE", $"graph {graph} does not exist (destroyed?)");
        }
        void** pointers = stackalloc void*[KernelArgs.MaxArguments];
        foreach (var operation in operations)
        {
            switch (operation)
            {
                case RecordedLaunch l:
                    fixed (byte* arguments = l.Arguments)
                    {
                        for (int i = 0; i < l.Offsets.Length; i++) pointers[i] = arguments + l.Offsets[i];
                        Run(l.Function, l.Kernel, l.Grid, l.Block, l.SharedBytes, pointers, Order, OrderSeed);
                    }
                    break;
                case RecordedCopy c:
                    Buffer.MemoryCopy((void*)c.Source, (void*)c.Destination, c.Bytes, c.Bytes);
                    break;
            }
        }
    }

    public void DestroyGraph(nint graph)
    {
        lock (_lock)
            if (!_graphs.Remove(graph)) throw new CudaException("cuGraphExecDestroy", 400, "CUDA_ERROR_INVALID_HANDLE", $"graph {graph} does not exist (destroyed twice?)");
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        // The library stays loaded: the runtime may still hold its worker threads, and unloading
        // code that a thread could be parked in is never safe. Memory is freed by the backend.
    }

    // ------------------------------------------------------------------ building the emulator library with g++

    private static readonly Lock BuildLock = new();

    /// <summary>"g++ 12.2.0" or a clear error if g++ is missing.</summary>
    public static string CompilerVersion()
    {
        try
        {
            var (code, output) = Run("g++", ["-dumpfullversion"], null);
            return code == 0 ? $"g++ {output.Trim()}" : "g++ (unknown version)";
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            throw new CudaUnavailableException("the CUDA emulator needs g++ to build the kernels for the CPU (Debian: apt-get install g++)", e);
        }
    }

    /// <summary>
    /// Writes the sources into a cache directory, generates the translation unit (simt.h, every
    /// .cu, one SIMT_EXPORT per kernel) and compiles it into a shared library, unless a library
    /// built from exactly these files, flags and compiler is already there. Returns its path.
    /// </summary>
    public static string BuildLibrary(IReadOnlyList<KernelSource> sources, IReadOnlyDictionary<string, string> headers, IReadOnlyDictionary<string, string> emulatorFiles)
    {
        var unit = new StringBuilder();
        unit.AppendLine("// Generated by RawGan's EmulatedDriver: the kernels of kernels/*.cu built for the CPU.");
        unit.AppendLine("#include \"simt/simt.h\"");
        foreach (var s in sources) unit.AppendLine($"#include \"{s.Name}\"");
        foreach (var s in sources)
            foreach (var k in KernelNames(s.Text))
                unit.AppendLine($"SIMT_EXPORT({k})");

        string[] flags = DebugBuild
            ? ["-std=c++17", "-O0", "-g", "-fPIC", "-shared", "-pthread"]
            : ["-std=c++17", "-O3", "-fPIC", "-shared", "-pthread"];
        string compiler = CompilerVersion();
        var key = new StringBuilder(unit.ToString());
        foreach (var (name, text) in sources.Select(s => (s.Name, s.Text)).Concat(headers.Select(h => (h.Key, h.Value))).Concat(emulatorFiles.Select(e => (e.Key, e.Value))).OrderBy(p => p.Item1, StringComparer.Ordinal))
            key.Append('\0').Append(name).Append('\0').Append(text);
        key.Append('\0').AppendJoin(' ', flags).Append(" -fdebug-prefix-map").Append('\0').Append(compiler).Append('\0').Append(RuntimeInformation.OSArchitecture);
        string hash = Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(key.ToString())))[..16].ToLowerInvariant();
        string dir = Path.Combine(CacheDirectory.For("emulator"), hash);
        string library = Path.Combine(dir, OperatingSystem.IsWindows() ? "rawgan_simt.dll" : "librawgan_simt.so");
        lock (BuildLock)
        {
            if (File.Exists(library)) return library;
            // Build in a private directory, then rename it into place: concurrent test processes
            // either find a complete library or build their own.
            string work = dir + "." + Environment.ProcessId + "." + Guid.NewGuid().ToString("N")[..8];
            Directory.CreateDirectory(work);
            foreach (var (name, text) in sources.Select(s => (s.Name, s.Text)).Concat(headers.Select(h => (h.Key, h.Value))).Concat(emulatorFiles.Select(e => (e.Key, e.Value))))
            {
                string file = Path.Combine(work, name);
                Directory.CreateDirectory(Path.GetDirectoryName(file)!);
                File.WriteAllText(file, text);
            }
            File.WriteAllText(Path.Combine(work, "emulator.cpp"), unit.ToString());
            // Debug information names the sources where they will live after the rename below, so
            // that gdb finds them.
            var args = new List<string>(flags) { $"-fdebug-prefix-map={work}={dir}", "-I", work, "-o", Path.Combine(work, Path.GetFileName(library)), Path.Combine(work, "emulator.cpp") };
            args.AddRange(emulatorFiles.Keys.Where(k => k.EndsWith(".cpp")).Order().Select(k => Path.Combine(work, k)));
            var (code, output) = Run("g++", args, work);
            if (code != 0)
                throw new KernelCompileException($"g++ could not build the emulated kernels (sources kept in {work}):\n{output}");
            try
            {
                Directory.Move(work, dir);
            }
            catch (IOException)
            {
                // Another process won the race: its library is identical.
                if (!File.Exists(library)) throw;
                try { Directory.Delete(work, recursive: true); } catch (IOException) { }
            }
            return library;
        }
    }

    private static (int code, string output) Run(string file, IEnumerable<string> args, string? directory)
    {
        var psi = new ProcessStartInfo(file)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = directory ?? Environment.CurrentDirectory,
        };
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var stderr = p.StandardError.ReadToEndAsync();
        string stdout = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        return (p.ExitCode, stdout + stderr.Result);
    }
}

/// <summary>The order in which the emulator runs a block's threads (kernels/simt/simt.cpp).</summary>
public enum SimtOrder : uint
{
    /// <summary>RAWGAN_SIMT_ORDER (forward, reverse or random), forward when unset.</summary>
    Default = 0,
    /// <summary>Threads start in linear order; waiting threads resume in linear order.</summary>
    Forward = 1,
    /// <summary>The other way round: the last thread first.</summary>
    Reverse = 2,
    /// <summary>Shuffled anew for every block, barrier and warp collective, from the seed and the block index.</summary>
    Random = 3,
}
