using RawGan.Engine.Backends.Cuda;

namespace RawGan.Engine.Tests;

/// <summary>How CudaBackend reports a device that is out of memory, through a driver whose
/// allocations fail as cuMemAlloc does (it returns no address).</summary>
public unsafe class CudaBackendFaultTests
{
    private sealed class FullDevice : ICudaDriver
    {
        public string Name => "cuda";
        public DeviceInfo Device { get; } = new("full test device", 8, 0, 1L << 30, 4, 1024, 48 * 1024, 32, "test", "test");
        public ulong Allocate(long bytes) => 0;
        public void Free(ulong address) { }
        public void CopyHostToDevice(ulong destination, void* source, long bytes) { }
        public void CopyDeviceToHost(void* destination, ulong source, long bytes) { }
        public void CopyDeviceToDevice(ulong destination, ulong source, long bytes) { }
        public (long free, long total) MemoryInfo() => (12_345_678, 1L << 30);
        public void LoadModule(IReadOnlyList<KernelSource> sources, IReadOnlyDictionary<string, string> headers) { }
        public string KernelTarget => "nothing: a test double";
        public nint GetFunction(string kernel) => 0;
        public int MaxThreadsPerBlock(nint function) => 1024;
        public void Launch(nint function, string kernel, Dim3 grid, Dim3 block, uint sharedBytes, void** arguments) { }
        public void Synchronize() { }
        public void Dispose() { }
    }

    [Fact]
    public void OutOfDeviceMemorySaysHowMuchWasAskedAndWhatIsFree()
    {
        using var backend = new CudaBackend(new FullDevice());
        var ex = Assert.Throws<CudaException>(() => backend.Allocate(1_000_000));
        Assert.Equal("cuMemAlloc", ex.Call);
        Assert.Equal("CUDA_ERROR_OUT_OF_MEMORY", ex.ErrorName);
        Assert.Contains("asked for 4,000,000 bytes", ex.Message);
        Assert.Contains("12,345,678 of 1,073,741,824 bytes free", ex.Message);
    }
}
