using RawGan.Engine.Backends.Cuda;
using RawGan.Tests;
using Xunit.Abstractions;

namespace RawGan.Engine.Tests;

/// <summary>
/// PTX is not proof that a kernel runs: ptxas, which the driver calls when it loads PTX on the
/// user's GPU, can still refuse it (an unresolved function), and a block can still be too big
/// for the kernel's registers. Neither shows on the emulator. So every kernel file is assembled
/// here, without a GPU, to machine code for every architecture RawGan targets, and every launch
/// the backend can make is checked against ptxas's report.
/// </summary>
public class MachineCodeTests(ITestOutputHelper output)
{
    public static TheoryData<string, int> FilesAndArchitectures()
    {
        var data = new TheoryData<string, int>();
        foreach (var source in KernelLibrary.Sources)
            foreach (int sm in MachineCodeReport.Architectures)
                data.Add(source.Name, sm);
        return data;
    }

    [NvrtcTheory]
    [MemberData(nameof(FilesAndArchitectures))]
    public void EveryKernelAssemblesWithoutWarningsOrSpillsAndEveryLaunchFits(string file, int sm)
    {
        var supported = NvrtcCompiler.SupportedArchitectures();
        if (!supported.Contains(sm))
        {
            // CUDA 13 dropped Volta (sm_70); every other target must be there.
            Assert.True(sm < 75 && NvrtcCompiler.Version().major >= 13,
                $"NVRTC {NvrtcCompiler.Version()} cannot target sm_{sm} (it supports {string.Join(", ", supported)})");
            return;
        }
        var source = KernelLibrary.Sources.Single(s => s.Name == file);
        var compiled = NvrtcCompiler.Compile(source, KernelLibrary.Headers, $"sm_{sm}");
        Assert.True(compiled.IsMachineCode);
        Assert.Equal((byte)0x7f, compiled.Image[0]);   // an ELF image
        Assert.Equal("ELF", System.Text.Encoding.ASCII.GetString(compiled.Image, 1, 3));
        Assert.Empty(compiled.Warnings);

        var checks = MachineCodeReport.Check(source, KernelLibrary.Headers, sm, cached: false);
        foreach (var line in MachineCodeReport.Format(checks)) output.WriteLine(line);
        var kernels = EmulatedDriver.KernelNames(source.Text).ToArray();
        Assert.Equal(kernels.Order(), compiled.Kernels.Select(k => k.Kernel).Order());
        foreach (var k in compiled.Kernels)
        {
            Assert.Equal($"sm_{sm}", k.Architecture);
            Assert.InRange(k.Registers, 1, 255);
            Assert.True(k.SpillStoreBytes == 0 && k.SpillLoadBytes == 0, $"{k.Kernel} spills on sm_{sm}: {k}");
        }
        foreach (var c in checks)
        {
            // Independently of the report's arithmetic: registers x threads, without the
            // allocation granularity, must fit the 65536 of a block, and the largest block the
            // backend can pick is what the kernel declares, else 1024.
            Assert.True((long)c.Resources.Registers * c.MaxThreads <= 65536,
                $"{file}: {c.Resources.Kernel} on sm_{sm}: {c.Resources.Registers} registers x {c.MaxThreads} threads");
            Assert.True(c.SharedBytesAtMaxThreads <= 48 * 1024, $"{c.Resources.Kernel}: {c.SharedBytesAtMaxThreads} bytes of shared memory");
            Assert.True(c.Problems.Count == 0, $"{file}: {c.Resources.Kernel} on sm_{sm}: {string.Join("; ", c.Problems)}");
        }
    }

    public static TheoryData<int> Architectures()
    {
        var data = new TheoryData<int>();
        foreach (int sm in MachineCodeReport.Architectures) data.Add(sm);
        return data;
    }

    [NvrtcTheory]
    [MemberData(nameof(Architectures))]
    public void TheEmulatorSelfTestKernelsAssembleForEveryArchitecture(int sm)
    {
        // simt_selftest.cu goes through kernels/mma.cuh and kernels/async_copy.cuh: their inline
        // PTX on sm_80 and newer, their shuffle and plain-copy paths on sm_70 and sm_75.
        if (!NvrtcCompiler.SupportedArchitectures().Contains(sm)) return;   // CUDA 13 has no sm_70
        var source = new KernelSource("simt_selftest.cu", File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "simt_selftest.cu")));
        var compiled = NvrtcCompiler.Compile(source, KernelLibrary.Headers, $"sm_{sm}");
        Assert.True(compiled.IsMachineCode);
        Assert.Empty(compiled.Warnings);
        Assert.Equal(EmulatedDriver.KernelNames(source.Text).Order(), compiled.Kernels.Select(k => k.Kernel).Order());
        foreach (var k in compiled.Kernels)
            Assert.True(k.SpillStoreBytes == 0 && k.SpillLoadBytes == 0, $"{k.Kernel} spills on sm_{sm}: {k}");
    }

    public static TheoryData<int> TensorCoreArchitectures() => new() { 80, 86, 89, 90 };

    /// <summary>
    /// The version-2 kernels (gemm_tf32.cu, conv_tf32.cu) on every architecture the host runs them
    /// on: their PTX multiplies on tensor cores (mma.sync m16n8k8 .tf32, inputs rounded by
    /// cvt.rna.tf32.f32) and loads through cp.async with commit and wait groups; their machine code
    /// spills nothing; and two of their largest blocks (4 x 4 warps, 512 threads, 36 KiB of
    /// shared memory) fit one multiprocessor by registers and shared memory, which is 50% of the
    /// threads of an A100 or H100 (2048) and 67% of an RTX 30 or 40 (1536): LaunchLimits.OccupancyOf.
    /// </summary>
    [NvrtcTheory]
    [MemberData(nameof(TensorCoreArchitectures))]
    public void TensorCoreKernelsUseMmaAndCpAsyncWithoutSpillsAtHalfOccupancyOrMore(int sm)
    {
        foreach (var source in KernelLibrary.Sources.Where(s => s.Name.EndsWith("_tf32.cu")))
        {
            var kernels = EmulatedDriver.KernelNames(source.Text).ToArray();
            Assert.All(kernels, k => Assert.Contains(k, CudaBackend.MmaKernels));
            string ptx = System.Text.Encoding.ASCII.GetString(NvrtcCompiler.Compile(source, KernelLibrary.Headers, $"compute_{sm}").Image);
            foreach (string kernel in kernels)
            {
                string body = PtxEntry(ptx, kernel);
                Assert.Contains("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32", body);
                Assert.Contains("cvt.rna.tf32.f32", body);
                Assert.Contains("cp.async.ca.shared.global", body);
                Assert.Contains("cp.async.commit_group", body);
                Assert.Contains("cp.async.wait_group", body);
            }
            var checks = MachineCodeReport.Check(source, KernelLibrary.Headers, sm, cached: false);
            foreach (var line in MachineCodeReport.Format(checks)) output.WriteLine(line);
            foreach (var c in checks)
            {
                Assert.True(c.Problems.Count == 0, $"{c.Resources.Kernel} on sm_{sm}: {string.Join("; ", c.Problems)}");
                Assert.Equal(0, c.Resources.SpillStoreBytes + c.Resources.SpillLoadBytes);
                Assert.Equal(512, c.MaxThreads);
                Assert.Equal(36864, c.SharedBytesAtMaxThreads);
                var occupancy = c.Occupancy!;
                output.WriteLine($"  {c.Resources.Kernel} on sm_{sm} at (32, 4, 4): {occupancy}");
                Assert.True(occupancy.Fraction >= 0.5, $"{c.Resources.Kernel} on sm_{sm}: occupancy {occupancy}");
                // The smaller blocks the host picks for small outputs, for the record.
                foreach (var (wm, wn) in new[] { (1u, 4u), (2u, 2u), (2u, 4u) })
                {
                    var block = new Dim3(32, wm, wn);
                    output.WriteLine($"  {c.Resources.Kernel} on sm_{sm} at {block}: " +
                                     LaunchLimits.OccupancyOf(sm, c.Resources.Registers, (int)block.Count, c.Resources.SharedBytes + (int)CudaBackend.MmaSharedBytes(block)));
                }
            }
        }
    }

    /// <summary>
    /// The version-3 kernels (gemm_wide.cu, conv_wide.cu), the fp32 path of every architecture
    /// RawGan targets: their PTX reads the shared tiles 16 bytes at a time (ld.shared.v4.f32) and
    /// writes its outputs so (st.global.v4.f32), as wide_tile.cuh says; their machine code spills nothing at 128 registers or fewer; their
    /// block is 256 threads with 16.5 KiB of shared memory; and two such blocks fit one
    /// multiprocessor, so one block's barrier never leaves a multiprocessor idle.
    /// </summary>
    [NvrtcTheory]
    [MemberData(nameof(Architectures))]
    public void WideKernelsReadSharedMemorySixteenBytesAtATimeWithoutSpillsAtTwoBlocksPerMultiprocessor(int sm)
    {
        if (!NvrtcCompiler.SupportedArchitectures().Contains(sm))
        {
            // CUDA 13 dropped Volta (sm_70); every other target must be there.
            Assert.True(sm < 75 && NvrtcCompiler.Version().major >= 13, $"NVRTC {NvrtcCompiler.Version()} cannot target sm_{sm}");
            return;
        }
        var sources = KernelLibrary.Sources.Where(s => s.Name.EndsWith("_wide.cu")).ToArray();
        Assert.Equal(["conv_wide.cu", "gemm_wide.cu"], sources.Select(s => s.Name).Order());
        foreach (var source in sources)
        {
            var kernels = EmulatedDriver.KernelNames(source.Text).ToArray();
            Assert.All(kernels, k => Assert.Contains(k, CudaBackend.WideKernels));
            string ptx = System.Text.Encoding.ASCII.GetString(NvrtcCompiler.Compile(source, KernelLibrary.Headers, $"compute_{sm}").Image);
            foreach (string kernel in kernels)
            {
                Assert.Contains("ld.shared.v4.f32", PtxEntry(ptx, kernel));
                string entry = PtxEntry(ptx, kernel);
                var stores = System.Text.RegularExpressions.Regex.Matches(entry, @"\bst\.[a-z0-9.]+").Select(m => m.Value).Distinct();
                Assert.True(entry.Contains("st.global.v4.f32"), $"{kernel}: its outputs are not written four at a time (wide_store4); its stores: {string.Join(", ", stores)}");
            }
            var checks = MachineCodeReport.Check(source, KernelLibrary.Headers, sm, cached: false);
            foreach (var line in MachineCodeReport.Format(checks)) output.WriteLine(line);
            foreach (var c in checks)
            {
                Assert.True(c.Problems.Count == 0, $"{c.Resources.Kernel} on sm_{sm}: {string.Join("; ", c.Problems)}");
                Assert.Equal(0, c.Resources.SpillStoreBytes + c.Resources.SpillLoadBytes);
                Assert.InRange(c.Resources.Registers, 64, 128);   // 64 accumulators live in registers
                Assert.Equal(256, c.MaxThreads);
                Assert.Equal(16896, c.SharedBytesAtMaxThreads);
                Assert.True(c.Occupancy!.Blocks >= 2, $"{c.Resources.Kernel} on sm_{sm}: {c.Occupancy}");
            }
        }
    }

    /// <summary>The text of one <c>.entry</c> of a PTX module, up to the next.</summary>
    private static string PtxEntry(string ptx, string kernel)
    {
        int start = ptx.IndexOf($".entry {kernel}(", StringComparison.Ordinal);
        Assert.True(start >= 0, $"no .entry {kernel} in the PTX");
        int end = ptx.IndexOf(".entry ", start + 7, StringComparison.Ordinal);
        return end < 0 ? ptx[start..] : ptx[start..end];
    }

    [Fact]
    public void OccupancyIsTheTightestOfRegistersThreadsSharedMemoryAndBlockSlots()
    {
        // 64 registers x 512 threads: 2 blocks by registers. sm_80: 2048 threads, 164 KiB.
        var a100 = LaunchLimits.OccupancyOf(80, 64, 512, 36864);
        Assert.Equal((2, 2, 4, 4), (a100.Blocks, a100.ByRegisters, a100.ByThreads, a100.BySharedMemory));   // 164 KiB / (36 + 1) KiB = 4
        Assert.Equal(0.5, a100.Fraction);
        var rtx = LaunchLimits.OccupancyOf(86, 64, 512, 36864);   // 1536 threads: 3 blocks by threads, 100 KiB: 2 by shared memory
        Assert.Equal((2, 2, 3, 2), (rtx.Blocks, rtx.ByRegisters, rtx.ByThreads, rtx.BySharedMemory));
        Assert.Equal(1024.0 / 1536, rtx.Fraction, 1e-12);
        // The register file's allocation unit: 65 registers are 72 per thread, 1 block of 512.
        Assert.Equal(1, LaunchLimits.OccupancyOf(90, 65, 512, 0).ByRegisters);
        // Shared memory alone: 60 KiB blocks, 1 KiB reserved each: 3 on sm_90 (228 KiB).
        Assert.Equal(3, LaunchLimits.OccupancyOf(90, 32, 128, 60 * 1024).Blocks);
        // Block slots: 32-thread blocks on sm_86 stop at 16 (512 of 1536 threads).
        Assert.Equal(16, LaunchLimits.OccupancyOf(86, 16, 32, 0).Blocks);
    }

    [NvrtcFact]
    public void AnUnresolvedFunctionCompilesToPtxButFailsToAssemble()
    {
        // The trap optim.cu once fell into: pow(double, int) has no device definition, so PTX
        // names an extern function that only ptxas (or the driver, on the user's GPU) rejects.
        var source = new KernelSource("unresolved.cu",
            "extern \"C\" __global__ void k(double* y, int n) { y[threadIdx.x] = pow(y[threadIdx.x], n); }\n");
        var ptx = NvrtcCompiler.Compile(source, new Dictionary<string, string>(), "compute_80");
        Assert.Contains(".extern .func", System.Text.Encoding.ASCII.GetString(ptx.Image));
        var ex = Assert.Throws<KernelCompileException>(() => NvrtcCompiler.Compile(source, new Dictionary<string, string>(), "sm_80"));
        Assert.Contains("Unresolved extern function", ex.Message);
    }

    [NvrtcFact]
    public void ATooLargeBlockForTheRegistersIsReported()
    {
        // 64 independent accumulators keep well over 64 registers live; without a launch bound,
        // 1024 threads of it cannot launch.
        var body = new System.Text.StringBuilder();
        body.Append("extern \"C\" __global__ void hungry(const float* x, float* y, int n) {\n  float a[64];\n");
        body.Append("  #pragma unroll\n  for (int j = 0; j < 64; j++) a[j] = x[j * n + threadIdx.x];\n");
        body.Append("  for (int i = 0; i < n; i++) {\n    #pragma unroll\n    for (int j = 0; j < 64; j++) a[j] = a[j] * a[(j + 1) % 64] + x[i];\n  }\n");
        body.Append("  float s = 0;\n  #pragma unroll\n  for (int j = 0; j < 64; j++) s += a[j];\n  y[threadIdx.x] = s;\n}\n");
        var source = new KernelSource("hungry.cu", body.ToString());
        var check = Assert.Single(MachineCodeReport.Check(source, new Dictionary<string, string>(), 80, cached: false));
        Assert.True(check.Resources.Registers > 64, $"the test kernel uses only {check.Resources.Registers} registers");
        Assert.Contains(check.Problems, p => p.Contains("registers per block"));
    }

    [Fact]
    public void PtxasReportsAreParsedPerKernel()
    {
        const string log = """
            ptxas info    : 0 bytes gmem
            ptxas info    : Compiling entry function 'sum_to' for 'sm_80'
            ptxas info    : Function properties for sum_to
            ptxas         .     8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads
            ptxas info    : Used 40 registers, 8192 bytes smem, 400 bytes cmem[0]
            ptxas info    : Compiling entry function 'fill' for 'sm_80'
            ptxas info    : Function properties for fill
            ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
            ptxas info    : Used 24 registers, 372 bytes cmem[0]
            """;
        var kernels = LaunchLimits.ParsePtxasLog(log);
        Assert.Equal(
            [new KernelResources("sum_to", "sm_80", 40, 8192, 8, 4, 12), new KernelResources("fill", "sm_80", 24, 0, 0, 0, 0)],
            kernels);
    }

    [Fact]
    public void RegisterArithmeticFollowsTheHardwaresAllocationUnits()
    {
        // 118 registers are allocated as 120 per thread (whole 256-register units per warp).
        Assert.Equal(120L * 1024, LaunchLimits.RegistersForBlock(118, 1024));
        Assert.Equal(65536L, LaunchLimits.RegistersForBlock(128, 512));
        Assert.Equal(512, LaunchLimits.MaxPowerOfTwoThreads(118));
        Assert.Equal(1024, LaunchLimits.MaxPowerOfTwoThreads(64));
        Assert.Equal(256, LaunchLimits.MaxPowerOfTwoThreads(255));
        Assert.Equal(256, LaunchLimits.MaxPowerOfTwoThreads(32, declaredMaximum: 300));
    }

    [Fact]
    public void LaunchBoundsAreReadFromTheSourceThroughItsDefines()
    {
        var conv = KernelLibrary.Sources.Single(s => s.Name == "conv.cu");
        var bounds = LaunchLimits.DeclaredMaxThreads(conv.Text, KernelLibrary.Headers);
        Assert.Equal(512, bounds["conv2d_forward"]);
        Assert.Equal(512, bounds["conv2d_backward_weight"]);
        Assert.Equal(new Dictionary<string, int> { ["k"] = 128 },
            LaunchLimits.DeclaredMaxThreads("extern \"C\" __global__ void __launch_bounds__(128, 2) k(float* y) {}", new Dictionary<string, string>()));
    }

    [Fact]
    public void TheArchitectureIsMachineCodeWhenNvrtcKnowsTheDeviceElsePtxForTheNewestBelow()
    {
        int[] nvrtc118 = [35, 37, 50, 52, 53, 60, 61, 62, 70, 72, 75, 80, 86, 87, 89, 90];
        Assert.Equal("sm_90", NvrtcCompiler.ChooseArchitecture(9, 0, nvrtc118));
        Assert.Equal("sm_86", NvrtcCompiler.ChooseArchitecture(8, 6, nvrtc118));
        Assert.Equal("compute_90", NvrtcCompiler.ChooseArchitecture(10, 0, nvrtc118));   // a Blackwell GPU: the driver assembles PTX
        Assert.Equal("compute_90", NvrtcCompiler.ChooseArchitecture(12, 0, nvrtc118));
        var ex = Assert.Throws<CudaUnavailableException>(() => NvrtcCompiler.ChooseArchitecture(6, 1, [75, 80, 86, 89, 90, 100, 120]));
        Assert.Contains("compute 6.1", ex.Message);
    }

    [Fact]
    public void TheBackendLowersItsBlockToWhatEachKernelCanLaunch()
    {
        var backend = TestBackends.Emulated(1024);
        Assert.Equal(1024, backend.ThreadsPerBlock("fill"));
        Assert.Equal(512, backend.ThreadsPerBlock("sgemm"));
        Assert.Equal(512, backend.ThreadsPerBlock("conv2d_backward_input"));
        Assert.Equal(512, backend.ThreadsPerBlock("conv2d_forward_tf32"));
        Assert.Equal(256, TestBackends.Emulated(256).ThreadsPerBlock("sgemm"));
        // The tensor-core kernels take their own block, 4 x 4 warps, whatever the block size.
        Assert.Equal(512, TestBackends.Emulated(256).ThreadsPerBlock("conv2d_backward_weight_tf32"));
        Assert.Equal(512, TestBackends.Emulated(32).ThreadsPerBlock("sgemm_tf32"));
    }

    [Fact]
    public unsafe void TheEmulatorRefusesABlockOverTheDeclaredBoundAsAGpuWould()
    {
        var driver = TestBackends.Emulated(256).Driver;
        nint sgemm = driver.GetFunction("sgemm");
        Assert.Equal(512, driver.MaxThreadsPerBlock(sgemm));
        var ex = Assert.Throws<CudaException>(() => driver.Launch(sgemm, "sgemm", new Dim3(1), new Dim3(32, 32), 0, null));
        Assert.Equal("CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES", ex.ErrorName);
    }
}
