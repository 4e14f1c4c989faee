using RawGan.Engine.Backends.Cuda;

using RawGan.Tests;

namespace RawGan.Engine.Tests;

/// <summary>
/// The real CUDA libraries on a machine without a GPU: NVRTC compiles every kernel (it needs no
/// device), the driver library loads, reports its version, and cuInit's "no device" becomes one
/// clear message. CI installs libnvrtc11.2 and libcuda1 (.ci/run), so these run there.
/// </summary>
public class CudaDriverTests
{
    public static TheoryData<string, string> KernelsAndArchitectures()
    {
        var data = new TheoryData<string, string>();
        foreach (var source in KernelLibrary.Sources)
            foreach (var arch in new[] { "compute_70", "compute_80", "compute_90" })
                data.Add(source.Name, arch);
        return data;
    }

    [NvrtcTheory]
    [MemberData(nameof(KernelsAndArchitectures))]
    public void EveryKernelCompilesWithNvrtcWithoutWarnings(string file, string architecture)
    {
        var source = KernelLibrary.Sources.Single(s => s.Name == file);
        var compiled = NvrtcCompiler.Compile(source, KernelLibrary.Headers, architecture);
        Assert.True(compiled.Log.Length == 0, $"NVRTC said about kernels/{file} for {architecture}:\n{compiled.Log}");
        string ptx = System.Text.Encoding.ASCII.GetString(compiled.Image);
        Assert.Contains($".target sm_{architecture["compute_".Length..]}", ptx);
        Assert.Equal(0, compiled.Image[^1]);   // NUL-terminated, as cuModuleLoadData requires
        // Every kernel of the file is in the PTX under its C name (extern "C": no mangling).
        foreach (var kernel in EmulatedDriver.KernelNames(source.Text))
            Assert.Contains($".entry {kernel}(", ptx);
    }

    [NvrtcFact]
    public void ACompileErrorShowsTheNvrtcLogWithFileAndLine()
    {
        var bad = new KernelSource("broken.cu", "extern \"C\" __global__ void broken(float* y)\n{\n    y[0] = undefined_name;\n}\n");
        var ex = Assert.Throws<KernelCompileException>(() => NvrtcCompiler.Compile(bad, new Dictionary<string, string>(), "compute_80"));
        Assert.Contains("broken.cu(3)", ex.Message);
        Assert.Contains("undefined_name", ex.Message);
    }

    [NvrtcFact]
    public void PtxIsCachedByHash()
    {
        // The cache root is passed, not set through RAWGAN_CACHE_DIR: tests run in parallel, and a
        // process-wide variable would move every other test's cache too.
        var dir = Path.Combine(Path.GetTempPath(), "rawgan-cache-test-" + Guid.NewGuid().ToString("N"));
        try
        {
            var source = new KernelSource("tiny.cu", "extern \"C\" __global__ void tiny(float* y) { y[threadIdx.x] = 1.0f; }\n");
            var first = NvrtcCompiler.CompileCached(source, new Dictionary<string, string>(), "compute_80", dir);
            var files = Directory.GetFiles(Path.Combine(dir, "ptx"));
            Assert.Single(files);
            Assert.Contains("tiny-compute_80-", Path.GetFileName(files[0]));
            Assert.Equal(first.Image, File.ReadAllBytes(files[0]));
            // A changed source is a different entry; the same source is served from the file.
            NvrtcCompiler.CompileCached(source with { Text = source.Text + "// changed\n" }, new Dictionary<string, string>(), "compute_80", dir);
            Assert.Equal(2, Directory.GetFiles(Path.Combine(dir, "ptx")).Length);
            Assert.Equal(first.Image, NvrtcCompiler.CompileCached(source, new Dictionary<string, string>(), "compute_80", dir).Image);
            // Machine code is cached with ptxas's report beside it, and read back with it.
            var cubin = NvrtcCompiler.CompileCached(source, new Dictionary<string, string>(), "sm_80", dir);
            var again = NvrtcCompiler.CompileCached(source, new Dictionary<string, string>(), "sm_80", dir);
            Assert.Equal(cubin.Image, again.Image);
            Assert.Equal(cubin.Kernels, again.Kernels);
            Assert.Equal("tiny", Assert.Single(again.Kernels).Kernel);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [NvrtcFact]
    public void NvrtcReportsItsVersion()
    {
        var (major, minor) = NvrtcCompiler.Version();
        Assert.InRange(major, 11, 99);
        Assert.InRange(minor, 0, 99);
    }

    [NvrtcAndDriverFact]
    public void TheDriverLoadsReportsItsVersionAndSaysClearlyThatThereIsNoDevice()
    {
        int version = NativeDriver.ProbeDriverVersion();
        Assert.InRange(version, 10000, 99999);   // 1000 * major + 10 * minor
        if (HasGpu()) return;   // on a machine with a GPU the constructor succeeds; nothing to check here
        var ex = Assert.Throws<CudaUnavailableException>(() => new NativeDriver());
        Assert.Equal($"no CUDA device: the CUDA driver {NativeDriver.FormatVersion(version)} is installed but found no GPU (cuInit: CUDA_ERROR_NO_DEVICE)", ex.Message);
        Assert.DoesNotContain("\n", ex.Message);
    }

    [DriverFact]
    public void DriverErrorsNameTheCallTheErrorAndItsText()
    {
        NativeDriver.ProbeDriverVersion();
        var ex = Assert.Throws<CudaException>(() => CudaApi.Check(700, "cuMemcpyDtoH_v2"));
        Assert.Equal("cuMemcpyDtoH_v2 failed: CUDA_ERROR_ILLEGAL_ADDRESS (700): an illegal memory access was encountered", ex.Message);
        var unknown = Assert.Throws<CudaException>(() => CudaApi.Check(12345, "cuInit"));
        Assert.Contains("12345", unknown.Message);
    }

    [DriverFact]
    public void TheDriverLibraryExportsEveryEntryPointRawGanBinds()
    {
        // A wrong name does not fail when the library loads, only at the first call: on a GPU,
        // in the middle of a run. Every [LibraryImport] of the driver, by its exported name.
        NativeDriver.ProbeDriverVersion();
        string file = CudaApi.Locate(CudaApi.Driver)!;
        var handle = System.Runtime.InteropServices.NativeLibrary.Load(file);
        try
        {
            var symbols = typeof(CudaApi).GetMethods(System.Reflection.BindingFlags.Static | System.Reflection.BindingFlags.Public | System.Reflection.BindingFlags.NonPublic)
                .Select(m => (m, a: m.GetCustomAttributes(typeof(System.Runtime.InteropServices.LibraryImportAttribute), false).Cast<System.Runtime.InteropServices.LibraryImportAttribute>().FirstOrDefault()))
                .Where(x => x.a?.LibraryName == CudaApi.Driver)
                .Select(x => x.a!.EntryPoint ?? x.m.Name)
                .ToList();
            Assert.Contains("cuGraphLaunch", symbols);
            Assert.Contains("cuStreamBeginCapture_v2", symbols);
            Assert.True(symbols.Count >= 30, $"found only {symbols.Count} driver imports by reflection");
            foreach (var symbol in symbols)
                Assert.True(System.Runtime.InteropServices.NativeLibrary.TryGetExport(handle, symbol, out _), $"{file} does not export {symbol}");
        }
        finally { System.Runtime.InteropServices.NativeLibrary.Free(handle); }
    }

    [CublasFact]
    public void CublasExportsEverySymbolRawGanBinds()
    {
        string? file = CudaApi.Locate(CudaApi.Cublas);
        Assert.True(file != null, "cuBLAS is not installed (CI installs libcublas11 from Debian non-free)");
        var handle = System.Runtime.InteropServices.NativeLibrary.Load(file);
        try
        {
            foreach (var symbol in CudaApi.CublasSymbols)
                Assert.True(System.Runtime.InteropServices.NativeLibrary.TryGetExport(handle, symbol, out _), $"{file} does not export {symbol}");
        }
        finally { System.Runtime.InteropServices.NativeLibrary.Free(handle); }
        // Without a device, creating a handle fails with a named status instead of crashing.
        if (!HasGpu())
        {
            var ex = Assert.Throws<CudaException>(() =>
            {
                CudaApi.CheckCublas(CudaApi.cublasCreate(out var h), "cublasCreate_v2");
                CudaApi.cublasDestroy(h);
            });
            Assert.StartsWith("cublasCreate_v2 failed: CUBLAS_STATUS_", ex.Message);
        }
    }

    [Fact]
    public void NcclIsLoadedWhenPresentAndOtherwiseNamedInOneLine()
    {
        string? reason = Engine.Distributed.NcclCollective.Unavailable();
        bool present = new[] { "libnccl.so.2", "libnccl.so" }.Any(n => System.Runtime.InteropServices.NativeLibrary.TryLoad(n, out _));
        if (present)
        {
            Assert.Null(reason);
            return;
        }
        Assert.NotNull(reason);
        Assert.StartsWith("NCCL not found: none of libnccl.so.2, libnccl.so could be loaded", reason);
        Assert.DoesNotContain("\n", reason);
    }

    private static bool HasGpu()
    {
        try { using var d = new NativeDriver(); return true; }
        catch (CudaUnavailableException) { return false; }
    }
}
