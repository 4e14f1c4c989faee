using System.Reflection;
using System.Text.RegularExpressions;
using RawGan.Engine.Backends;
using RawGan.Engine.Backends.Cuda;
using RawGan.Engine.Backends.Reference;

namespace RawGan.Engine.Tests;

/// <summary>
/// A kernel's signature is written in its .cu file; everything else is checked against it: the
/// IBackend method of the same name (mechanically: PixelNormForward is pixel_norm_forward, or
/// through the alias table below), the arguments CudaBackend packs for it (their C types, in
/// order, seen on every launch), and the constants the host shares with the .cu files. A later
/// version of a kernel (docs/DESIGN.md, decision 9) carries a suffix, <c>_tf32</c>, <c>_wide</c>
/// or <c>_v2</c>, <c>_v3</c>, ...: it belongs to the method of its base name and takes exactly its
/// parameters.
/// </summary>
public partial class KernelSignatureTests
{
    /// <summary>The IBackend methods whose kernel name is not their snake_case name.</summary>
    private static readonly Dictionary<string, string> Aliases = new()
    {
        ["Gemm"] = "sgemm",
        ["Sqrt"] = "sqrt_forward",
        ["Rsqrt"] = "rsqrt_forward",
        ["Softplus"] = "softplus_forward",
        ["Sigmoid"] = "sigmoid_forward",
        ["Add"] = "add_broadcast",
        ["Sub"] = "sub_broadcast",
        ["Mul"] = "mul_broadcast",
        ["Div"] = "div_broadcast",
        ["Upsample2x"] = "upsample2x_nearest",
        ["AvgPool2x"] = "avgpool2x",
        ["PixelNormForward"] = "pixelnorm_forward",
        ["PixelNormBackward"] = "pixelnorm_backward",
        ["PixelNormLeakyReluBackward"] = "pixelnorm_leaky_relu_backward",
        ["Conv2dForwardPixelNorm"] = "conv2d_forward_pixelnorm",
        ["MinibatchStdDevForward"] = "minibatch_stddev_forward",
        ["MinibatchStdDevBackward"] = "minibatch_stddev_backward",
        ["CountNonFinite"] = "count_nonfinite",
    };

    /// <summary>IBackend's members that are not kernels.</summary>
    private static readonly HashSet<string> NotKernels =
        ["Allocate", "Free", "Upload", "Download", "Copy", "Synchronize", "ReleaseCachedMemory", "Dispose", "get_Name", "get_Description", "get_Memory", "get_SupportsGraphs", "CaptureGraph", "CreateAsyncRead"];

    [GeneratedRegex(@"extern\s+""C""\s+__global__\s+void\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?(?<name>\w+)\s*\((?<params>[^)]*)\)")]
    private static partial Regex KernelSignature();

    /// <summary>Every kernel of kernels/*.cu with the C types of its parameters.</summary>
    private static Dictionary<string, KernelArgs.Kind[]> Signatures()
    {
        var result = new Dictionary<string, KernelArgs.Kind[]>();
        foreach (var source in KernelLibrary.Sources)
            foreach (Match m in KernelSignature().Matches(Regex.Replace(source.Text, @"//[^\n]*", "")))
                result.Add(m.Groups["name"].Value, m.Groups["params"].Value.Split(',').Select(p => KindOf(p, m.Groups["name"].Value)).ToArray());
        return result;
    }

    private static KernelArgs.Kind KindOf(string parameter, string kernel)
    {
        string type = Regex.Replace(parameter, @"\b(const|__restrict__)\b", " ");
        type = Regex.Replace(type.Trim(), @"\s*\w+$", "");                   // drop the parameter's name
        type = Regex.Replace(type, @"\s+", " ").Replace(" *", "*").Trim();
        return type switch
        {
            _ when type.EndsWith('*') => KernelArgs.Kind.Pointer,
            "int" => KernelArgs.Kind.Int,
            "long long" => KernelArgs.Kind.Long,
            "float" => KernelArgs.Kind.Float,
            "dims4" => KernelArgs.Kind.Dims,
            _ => throw new InvalidOperationException($"kernel {kernel}: parameter '{parameter.Trim()}' has a type KernelArgs cannot pack ({type})"),
        };
    }

    private static string SnakeCase(string name) => Regex.Replace(name, @"(?<=[a-z0-9])([A-Z])", "_$1").ToLowerInvariant();

    [GeneratedRegex(@"^(?<base>\w+?)_(?:tf32|wide|v\d+)$")]
    private static partial Regex VersionSuffix();

    /// <summary>The version-1 kernel a later version belongs to (conv2d_forward_tf32 and
    /// conv2d_forward_v2 to conv2d_forward), or the name itself.</summary>
    private static string BaseKernel(string kernel) => VersionSuffix().Match(kernel) is { Success: true } m ? m.Groups["base"].Value : kernel;

    [Fact]
    public void VersionSuffixesNameTheirBaseKernel()
    {
        Assert.Equal("conv2d_forward", BaseKernel("conv2d_forward_tf32"));
        Assert.Equal("conv2d_backward_input", BaseKernel("conv2d_backward_input_wide"));
        Assert.Equal("sgemm", BaseKernel("sgemm_v2"));
        Assert.Equal("sgemm", BaseKernel("sgemm_v12"));
        Assert.Equal("pixelnorm_forward", BaseKernel("pixelnorm_forward"));
        Assert.Equal("sqrt_forward", BaseKernel("sqrt_forward"));
    }

    [Fact]
    public void EveryLaterVersionTakesExactlyItsBaseKernelsParameters()
    {
        var signatures = Signatures();
        var versions = signatures.Keys.Where(k => BaseKernel(k) != k).ToList();
        Assert.Contains("conv2d_backward_weight_tf32", versions);
        Assert.Contains("sgemm_wide", versions);
        foreach (var kernel in versions)
        {
            string root = BaseKernel(kernel);
            Assert.True(signatures.ContainsKey(root), $"kernel {kernel} is a later version of {root}, which no kernels/*.cu declares");
            Assert.True(signatures[kernel].SequenceEqual(signatures[root]),
                $"{kernel} declares ({string.Join(", ", signatures[kernel])}), its base {root} ({string.Join(", ", signatures[root])})");
        }
    }

    [Fact]
    public void EveryKernelHasItsIBackendMethodAndEveryKernelMethodItsKernel()
    {
        var kernels = Signatures().Keys.Select(BaseKernel).ToHashSet();
        var methods = typeof(IBackend).GetMethods().Select(m => m.Name).Where(n => !NotKernels.Contains(n)).ToHashSet();
        var named = methods.ToDictionary(m => m, m => Aliases.GetValueOrDefault(m, SnakeCase(m)));
        foreach (var (method, kernel) in named)
            Assert.True(kernels.Contains(kernel), $"IBackend.{method} has no kernel '{kernel}' in kernels/*.cu");
        foreach (var kernel in kernels)
            Assert.True(named.ContainsValue(kernel), $"kernel {kernel} has no IBackend method (expected {string.Concat(kernel.Split('_').Select(w => char.ToUpperInvariant(w[0]) + w[1..]))} or an alias)");
        foreach (var (method, kernel) in Aliases)
        {
            Assert.True(methods.Contains(method), $"the alias table names IBackend.{method}, which does not exist");
            Assert.NotEqual(SnakeCase(method), kernel);   // an alias that is mechanical anyway is noise
        }
    }

    [Fact]
    public void EveryLaunchPacksTheArgumentsItsKernelDeclares()
    {
        var signatures = Signatures();
        var launched = new Dictionary<string, int>();
        var mismatches = new List<string>();
        void Observe(string kernel, KernelArgs args)
        {
            launched[kernel] = launched.GetValueOrDefault(kernel) + 1;
            if (!signatures.TryGetValue(kernel, out var declared))
            {
                mismatches.Add($"{kernel}: launched, but no kernels/*.cu declares it");
                return;
            }
            var packed = Enumerable.Range(0, args.Count).Select(args.KindOf).ToArray();
            if (!packed.SequenceEqual(declared))
                mismatches.Add($"{kernel}: the .cu declares ({string.Join(", ", declared)}), CudaBackend packs ({string.Join(", ", packed)})");
        }
        // Every kernel method, at a few sizes (the self-check's cases), at both precisions and
        // both fp32 tilings (so every version of the products launches): only the launches
        // matter here; the recording driver runs nothing.
        foreach (var (precision, tiling) in new[] { (Precision.Fp32, ProductTiling.Version1), (Precision.Fp32, ProductTiling.Version3), (Precision.Tf32, ProductTiling.Auto) })
        {
            using var backend = new CudaBackend(new RecordingDriver(), precision: precision) { Fp32Tiling = tiling };
            backend.LaunchObserver = Observe;
            BackendCheck.Run(backend);
        }
        Assert.True(mismatches.Count == 0, string.Join("\n", mismatches.Distinct()));
        foreach (var kernel in signatures.Keys)
            Assert.True(launched.ContainsKey(kernel), $"no IBackend call launched {kernel}");
    }

    [Fact]
    public void ConstantsSharedByTheHostAndTheKernelsAgree()
    {
        var defines = new Dictionary<string, long>();
        foreach (var text in KernelLibrary.Sources.Select(s => s.Text).Concat(KernelLibrary.Headers.Values))
            foreach (Match m in Regex.Matches(text, @"^\s*#\s*define\s+(\w+)\s+(\d+)\b", RegexOptions.Multiline))
                defines[m.Groups[1].Value] = long.Parse(m.Groups[2].Value);
        long Host(string name) => Convert.ToInt64(typeof(CudaBackend).GetField(name, BindingFlags.NonPublic | BindingFlags.Static)?.GetRawConstantValue()
            ?? throw new InvalidOperationException($"CudaBackend has no constant {name}"));
        Assert.Equal(defines["GEMM_TM"], Host("TileRowsPerThread"));
        Assert.Equal(defines["GEMM_TN"], Host("TileColumnsPerThread"));
        Assert.Equal(defines["GEMM_BK"], Host("TileDepth"));
        Assert.Equal(defines["SUM_TO_SERIAL_MAX"], Host("SumToSerialMax"));
        Assert.Equal(defines["MMA_STAGES"], Host("MmaStages"));
        Assert.Equal(defines["MMA_K_PITCH"], Host("MmaKPitch"));
        Assert.Equal(defines["MMA_BK"] + 4, Host("MmaKPitch"));
        Assert.Equal(16 * defines["MMA_MI"], Host("MmaWarpTile"));       // m16 fragments
        Assert.Equal(8 * defines["MMA_NI"], Host("MmaWarpTile"));        // four n8 fragments
        Assert.Equal(defines["MMA_MAX_THREADS"], 32 * Host("MmaMaxWarps") * Host("MmaMaxWarps"));
        Assert.Equal(LaunchLimits.MaxThreadsPerBlock, defines["MAX_BLOCK"]);
        Assert.Equal(defines["WIDE_THREADS"], Host("WideThreads"));
        Assert.Equal(defines["WIDE_TILE"], Host("WideTile"));
        Assert.Equal(defines["WIDE_BK"], Host("WideDepth"));
        Assert.Equal(defines["WIDE_PITCH"], Host("WidePitch"));
        Assert.Equal(defines["WIDE_TILE"] + 4, defines["WIDE_PITCH"]);
        Assert.Equal(defines["WIDE_TILE"] * defines["WIDE_BK"], defines["WIDE_LOADS"] * defines["WIDE_THREADS"]);
        Assert.Equal(defines["WIDE_TILE"], 16 * defines["WIDE_T"]);   // 16 x 16 threads of WIDE_T x WIDE_T outputs
    }

    /// <summary>A driver that launches nothing: allocations are distinct fake addresses.</summary>
    internal sealed unsafe class RecordingDriver : ICudaDriver
    {
        private ulong _next = 1 << 20;
        private readonly Dictionary<string, nint> _functions = new();
        public string Name => "cuda";
        public DeviceInfo Device { get; } = new("recording driver", 8, 0, 1L << 40, 4, 1024, 48 * 1024, 32, "test", "test");
        public string KernelTarget => "nothing: launches are recorded";
        public ulong Allocate(long bytes) { var a = _next; _next += (ulong)((bytes + 255) / 256 * 256); return a; }
        public void Free(ulong address) { }
        public void CopyHostToDevice(ulong destination, void* source, long bytes) { }
        public void CopyDeviceToHost(void* destination, ulong source, long bytes) => new Span<byte>(destination, (int)bytes).Clear();
        public void CopyDeviceToDevice(ulong destination, ulong source, long bytes) { }
        public (long free, long total) MemoryInfo() => (1L << 40, 1L << 40);
        public void LoadModule(IReadOnlyList<KernelSource> sources, IReadOnlyDictionary<string, string> headers) { }
        public nint GetFunction(string kernel) => _functions.TryGetValue(kernel, out var f) ? f : _functions[kernel] = _functions.Count + 1;
        public int MaxThreadsPerBlock(nint function) => 1024;
        public void Launch(nint function, string kernel, Dim3 grid, Dim3 block, uint sharedBytes, void** arguments) { }
        public void Synchronize() { }
        public void Dispose() { }
    }
}
