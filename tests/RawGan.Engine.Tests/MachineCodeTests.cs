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
        Assert.Equal(256, TestBackends.Emulated(256).ThreadsPerBlock("sgemm"));
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
