using System.Globalization;
using System.Text.RegularExpressions;

namespace RawGan.Engine.Backends.Cuda;

/// <summary>
/// What ptxas reported for one kernel (`--ptxas-options=-v`): registers per thread, static
/// shared memory, stack frame and spills. These decide whether a launch can run at all:
/// registers x threads must fit the register file of one multiprocessor.
/// </summary>
public sealed record KernelResources(
    string Kernel, string Architecture, int Registers, int SharedBytes, int StackBytes, int SpillStoreBytes, int SpillLoadBytes);

/// <summary>The result of compiling one .cu file to machine code (CUBIN) for one sm_XY.</summary>
public sealed record MachineCode(string Name, string Architecture, byte[] Cubin, string Log, IReadOnlyList<KernelResources> Kernels);

/// <summary>
/// Hardware limits that hold for every architecture RawGan targets (sm_70 to sm_90), and the
/// arithmetic that turns ptxas's report into "the largest block this kernel can launch with".
/// </summary>
public static partial class LaunchLimits
{
    /// <summary>The most threads in one block.</summary>
    public const int MaxThreadsPerBlock = 1024;
    /// <summary>32-bit registers one block may hold (the register file of one SM, sm_70..sm_90).</summary>
    public const int RegistersPerBlock = 65536;
    /// <summary>Registers are handed out per warp in units of this many (so 8 per thread).</summary>
    public const int RegisterAllocationUnit = 256;
    /// <summary>Static plus dynamic shared memory without opting in (cuFuncSetAttribute).</summary>
    public const int SharedBytesPerBlock = 48 * 1024;
    public const int WarpSize = 32;

    /// <summary>Registers a block of <paramref name="threads"/> threads really takes: each warp's
    /// share rounded up to the allocation unit.</summary>
    public static long RegistersForBlock(int registersPerThread, int threads)
    {
        long warps = (threads + WarpSize - 1) / WarpSize;
        long perWarp = (registersPerThread * (long)WarpSize + RegisterAllocationUnit - 1) / RegisterAllocationUnit * RegisterAllocationUnit;
        return warps * perWarp;
    }

    /// <summary>What one multiprocessor of an architecture holds at once (the CUDA C++ Programming
    /// Guide's table "Technical Specifications per Compute Capability"; the 1 KiB that sm_80 and
    /// newer reserve per block is cudaDevAttrReservedSharedMemoryPerBlock).</summary>
    public sealed record Multiprocessor(int Sm, int MaxThreads, int MaxBlocks, int SharedBytes, int ReservedSharedBytesPerBlock);

    /// <summary>The multiprocessor of sm_XY: 65,536 registers on all of them, and
    /// <list type="bullet">
    /// <item>sm_70 (V100): 2048 threads, 32 blocks, 96 KiB of shared memory</item>
    /// <item>sm_75 (T4, RTX 20): 1024 threads, 16 blocks, 64 KiB</item>
    /// <item>sm_80 (A100): 2048 threads, 32 blocks, 164 KiB</item>
    /// <item>sm_86 (RTX 30, A40) and sm_89 (RTX 40, L40): 1536 threads, 16 and 24 blocks, 100 KiB</item>
    /// <item>sm_90 (H100, H200): 2048 threads, 32 blocks, 228 KiB</item>
    /// </list></summary>
    public static Multiprocessor MultiprocessorOf(int sm) => sm switch
    {
        70 => new(70, 2048, 32, 96 * 1024, 0),
        75 => new(75, 1024, 16, 64 * 1024, 0),
        80 => new(80, 2048, 32, 164 * 1024, 1024),
        86 => new(86, 1536, 16, 100 * 1024, 1024),
        89 => new(89, 1536, 24, 100 * 1024, 1024),
        90 => new(90, 2048, 32, 228 * 1024, 1024),
        _ => throw new ArgumentException($"no multiprocessor table for sm_{sm}"),
    };

    /// <summary>Shared memory is handed to blocks in units of this many bytes.</summary>
    public const int SharedAllocationUnit = 128;

    /// <summary>How many blocks of a kernel one multiprocessor holds, and what limits it.</summary>
    public sealed record Occupancy(int Blocks, int ByRegisters, int ByThreads, int BySharedMemory, int ByBlockCount, double Fraction)
    {
        /// <summary>"50% (2 blocks; registers 2, threads 4, shared memory 4)".</summary>
        public override string ToString() =>
            $"{Percent} ({Blocks} blocks; registers {ByRegisters}, threads {ByThreads}, shared memory {BySharedMemory}, block slots {ByBlockCount})";

        /// <summary>"50%".</summary>
        public string Percent => FormattableString.Invariant($"{100 * Fraction:F0}%");
    }

    /// <summary>
    /// Occupancy from registers and shared memory, as CUDA's occupancy calculator computes it:
    /// <code>
    /// blocks = min( 65536 / registers per block (each warp's share rounded up to 256),
    ///               threads per SM / threads per block,
    ///               shared memory per SM / (shared memory per block + reserve, rounded up to 128 bytes),
    ///               blocks per SM )
    /// occupancy = blocks * threads per block / threads per SM
    /// </code>
    /// e.g. 64 registers x 512 threads = 32,768 registers per block: 2 blocks, 1024 threads: 50% of
    /// sm_80's 2048 and 67% of sm_86's 1536.
    /// </summary>
    public static Occupancy OccupancyOf(int sm, int registersPerThread, int threadsPerBlock, int sharedBytesPerBlock)
    {
        var mp = MultiprocessorOf(sm);
        long registers = RegistersForBlock(Math.Max(1, registersPerThread), threadsPerBlock);
        int byRegisters = (int)(RegistersPerBlock / registers);
        int byThreads = mp.MaxThreads / threadsPerBlock;
        long shared = (sharedBytesPerBlock + mp.ReservedSharedBytesPerBlock + SharedAllocationUnit - 1) / SharedAllocationUnit * SharedAllocationUnit;
        int byShared = shared == 0 ? int.MaxValue : (int)(mp.SharedBytes / shared);
        int blocks = Math.Min(Math.Min(byRegisters, byThreads), Math.Min(byShared, mp.MaxBlocks));
        return new Occupancy(blocks, byRegisters, byThreads, byShared, mp.MaxBlocks, (double)blocks * threadsPerBlock / mp.MaxThreads);
    }

    /// <summary>The largest power-of-two block (at most <paramref name="declaredMaximum"/>) whose
    /// registers fit; what the backend clamps its block size to.</summary>
    public static int MaxPowerOfTwoThreads(int registersPerThread, int declaredMaximum = MaxThreadsPerBlock)
    {
        int threads = 1 << (int)Math.Log2(Math.Clamp(declaredMaximum, 1, MaxThreadsPerBlock));
        while (threads > WarpSize && RegistersForBlock(registersPerThread, threads) > RegistersPerBlock) threads /= 2;
        return threads;
    }

    // ptxas -v, one kernel:
    //   ptxas info    : Compiling entry function 'sgemm' for 'sm_80'
    //   ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
    //   ptxas info    : Used 118 registers, 8192 bytes smem, 408 bytes cmem[0], 24 bytes cmem[2]
    [GeneratedRegex(@"Compiling entry function '(?<name>[^']+)' for '(?<arch>[^']+)'")]
    private static partial Regex EntryLine();
    [GeneratedRegex(@"(?<stack>\d+) bytes stack frame, (?<stores>\d+) bytes spill stores, (?<loads>\d+) bytes spill loads")]
    private static partial Regex FrameLine();
    [GeneratedRegex(@"Used (?<regs>\d+) registers(?:, (?<smem>\d+) bytes smem)?")]
    private static partial Regex UsedLine();

    /// <summary>Every entry function in a ptxas -v log, in the order ptxas reports them.</summary>
    public static IReadOnlyList<KernelResources> ParsePtxasLog(string log)
    {
        var result = new List<KernelResources>();
        string? name = null, arch = null;
        int stack = 0, stores = 0, loads = 0;
        foreach (var line in log.Split('\n'))
        {
            if (EntryLine().Match(line) is { Success: true } entry)
            {
                (name, arch, stack, stores, loads) = (entry.Groups["name"].Value, entry.Groups["arch"].Value, 0, 0, 0);
            }
            else if (name != null && FrameLine().Match(line) is { Success: true } frame)
            {
                stack = Int(frame, "stack");
                stores = Int(frame, "stores");
                loads = Int(frame, "loads");
            }
            else if (name != null && UsedLine().Match(line) is { Success: true } used)
            {
                int smem = used.Groups["smem"].Success ? Int(used, "smem") : 0;
                result.Add(new KernelResources(name, arch!, Int(used, "regs"), smem, stack, stores, loads));
                name = null;
            }
        }
        return result;
    }

    private static int Int(Match m, string group) => int.Parse(m.Groups[group].Value, CultureInfo.InvariantCulture);

    // A kernel declares the largest block it supports in its source, where both ptxas (which then
    // keeps registers within 65536 / N) and the emulator (which refuses bigger launches) see it:
    //   extern "C" __global__ void __launch_bounds__(GEMM_MAX_THREADS) sgemm(...)
    [GeneratedRegex(@"__global__\s+void\s+__launch_bounds__\s*\(\s*(?<bound>[A-Za-z_0-9]+)[^)]*\)\s*(?<name>[A-Za-z_][A-Za-z0-9_]*)\s*\(")]
    private static partial Regex LaunchBoundsDeclaration();
    [GeneratedRegex(@"^\s*#\s*define\s+(?<name>[A-Za-z_][A-Za-z0-9_]*)\s+(?<value>\d+)\b", RegexOptions.Multiline)]
    private static partial Regex NumericDefine();

    /// <summary>The declared maximum block of each kernel that has one (<c>__launch_bounds__</c>),
    /// resolving a macro argument through the numeric #defines of the source and its headers.</summary>
    public static IReadOnlyDictionary<string, int> DeclaredMaxThreads(string source, IReadOnlyDictionary<string, string> headers)
    {
        var defines = new Dictionary<string, int>();
        foreach (var text in headers.Values.Append(source))
            foreach (Match d in NumericDefine().Matches(text))
                defines[d.Groups["name"].Value] = int.Parse(d.Groups["value"].Value, CultureInfo.InvariantCulture);
        var result = new Dictionary<string, int>();
        foreach (Match m in LaunchBoundsDeclaration().Matches(source))
        {
            string bound = m.Groups["bound"].Value;
            int value = int.TryParse(bound, NumberStyles.None, CultureInfo.InvariantCulture, out int literal) ? literal
                : defines.TryGetValue(bound, out int defined) ? defined
                : throw new InvalidOperationException($"__launch_bounds__({bound}) of {m.Groups["name"].Value}: '{bound}' is not a number or a numeric #define");
            result[m.Groups["name"].Value] = value;
        }
        return result;
    }
}

/// <summary>One kernel on one architecture, with what the backend may launch it with, and the
/// occupancy of that largest launch (null for the lines of ptxas warnings).</summary>
public sealed record KernelLaunchCheck(
    string File, KernelResources Resources, int DeclaredMaxThreads, int MaxThreads, long RegistersAtMaxThreads, int SharedBytesAtMaxThreads,
    IReadOnlyList<string> Problems, LaunchLimits.Occupancy? Occupancy = null);

/// <summary>
/// Every kernel compiled to machine code for a set of architectures, each checked against the
/// launches CudaBackend can make: any power-of-two block from 32 threads up to its declared
/// <c>__launch_bounds__</c> (else 1024), with the dynamic shared memory of the tiled and tensor-core
/// kernels (<see cref="CudaBackend.DynamicSharedBytes"/>), and the occupancy of that largest launch.
/// What `rawgan info --kernels` prints and CI checks.
/// </summary>
public static class MachineCodeReport
{
    /// <summary>The architectures CI assembles for: Volta, Turing, Ampere (A100, consumer), Ada, Hopper.</summary>
    public static readonly int[] Architectures = [70, 75, 80, 86, 89, 90];

    public static IReadOnlyList<KernelLaunchCheck> Check(KernelSource source, IReadOnlyDictionary<string, string> headers, int sm, bool cached = true)
    {
        string arch = $"sm_{sm}";
        var compiled = cached ? NvrtcCompiler.CompileCached(source, headers, arch) : NvrtcCompiler.Compile(source, headers, arch);
        var declared = LaunchLimits.DeclaredMaxThreads(source.Text, headers);
        var result = new List<KernelLaunchCheck>();
        var reported = compiled.Kernels.ToDictionary(k => k.Kernel);
        foreach (string kernel in EmulatedDriver.KernelNames(source.Text))
        {
            var problems = new List<string>();
            if (!reported.TryGetValue(kernel, out var r))
            {
                problems.Add($"ptxas reported nothing for {kernel}");
                r = new KernelResources(kernel, arch, 0, 0, 0, 0, 0);
            }
            int bound = declared.GetValueOrDefault(kernel, LaunchLimits.MaxThreadsPerBlock);
            int threads = 1 << (int)Math.Log2(Math.Clamp(bound, 1, LaunchLimits.MaxThreadsPerBlock));
            long registers = LaunchLimits.RegistersForBlock(r.Registers, threads);
            int shared = r.SharedBytes + (int)CudaBackend.DynamicSharedBytes(kernel, threads);
            if (threads < LaunchLimits.WarpSize) problems.Add($"declares a block of {bound} threads, under one warp");
            if (registers > LaunchLimits.RegistersPerBlock)
                problems.Add($"{r.Registers} registers x {threads} threads = {registers} registers per block, over the {LaunchLimits.RegistersPerBlock} a block may hold " +
                             $"(declare __launch_bounds__({LaunchLimits.MaxPowerOfTwoThreads(r.Registers)}) or use fewer registers)");
            if (shared > LaunchLimits.SharedBytesPerBlock)
                problems.Add($"{shared} bytes of shared memory at {threads} threads, over {LaunchLimits.SharedBytesPerBlock}");
            if (r.SpillStoreBytes > 0 || r.SpillLoadBytes > 0)
                problems.Add($"spills registers to local memory ({r.SpillStoreBytes} bytes stored, {r.SpillLoadBytes} loaded)");
            var occupancy = threads >= LaunchLimits.WarpSize && r.Registers > 0 && Architectures.Contains(sm) ? LaunchLimits.OccupancyOf(sm, r.Registers, threads, shared) : null;
            result.Add(new KernelLaunchCheck(source.Name, r, bound, threads, registers, shared, problems, occupancy));
        }
        foreach (var warning in compiled.Warnings)
            result.Add(new KernelLaunchCheck(source.Name, new KernelResources("(ptxas)", arch, 0, 0, 0, 0, 0), 0, 0, 0, 0, [warning]));
        return result;
    }

    /// <summary>The table, one line per kernel and architecture.</summary>
    public static IEnumerable<string> Format(IEnumerable<KernelLaunchCheck> checks)
    {
        yield return $"{"file",-14} {"kernel",-28} {"arch",-6} {"regs",4} {"smem B",7} {"spill B",7} {"max block",9} {"regs/block",10} {"occupancy",9}  status";
        foreach (var c in checks)
            yield return $"{c.File,-14} {c.Resources.Kernel,-28} {c.Resources.Architecture,-6} {c.Resources.Registers,4} {c.SharedBytesAtMaxThreads,7} " +
                         $"{c.Resources.SpillStoreBytes + c.Resources.SpillLoadBytes,7} {c.MaxThreads,9} {c.RegistersAtMaxThreads,10} " +
                         $"{(c.Occupancy is { } o ? $"{o.Percent} ({o.Blocks})" : ""),9}  " +
                         (c.Problems.Count == 0 ? "ok" : string.Join("; ", c.Problems));
    }
}
