using RawGan.Engine.Backends;
using RawGan.Engine.Backends.Cuda;

namespace RawGan.Engine.Tests;

/// <summary>
/// Stream capture on the emulated driver, which records and replays launches the way a CUDA graph
/// does: nothing runs while capturing, a replay runs the recorded launches with the recorded
/// arguments on the recorded buffers, and every call that a capture cannot hold fails with the
/// driver's error. Each test has its own backend: a capture takes over the driver's stream.
/// </summary>
public class CudaGraphTests
{
    private static CudaBackend NewBackend() => new(new EmulatedDriver());

    private static float[] Read(CudaBackend b, DeviceBuffer buffer, int n)
    {
        var host = new float[n];
        b.Download(buffer, host);
        return host;
    }

    [Fact]
    public void ACapturedStepRunsOnlyWhenReplayedAndReadsItsInputsAtEveryReplay()
    {
        using var b = NewBackend();
        const int n = 1000;
        var x = b.Allocate(n);
        var y = b.Allocate(n);
        b.Upload(Enumerable.Repeat(2f, n).ToArray(), x);
        b.Fill(y, n, -1f);
        long before = b.Launches;
        using var graph = b.CaptureGraph(() =>
        {
            b.Scale(x, y, n, 3f);          // y = 3 x
            b.AddScalar(y, y, n, 0.5f);    // y = 3 x + 0.5
            b.Copy(y, x, n);               // x = y: the next replay starts from it
        });
        Assert.Equal(3, graph.Operations);
        Assert.Equal(before + 2, b.Launches);   // two kernels recorded, none run
        Assert.All(Read(b, y, n), v => Assert.Equal(-1f, v));
        Assert.All(Read(b, x, n), v => Assert.Equal(2f, v));

        graph.Replay();
        Assert.All(Read(b, y, n), v => Assert.Equal(6.5f, v));
        graph.Replay();                          // from x = 6.5: 3 * 6.5 + 0.5
        Assert.All(Read(b, y, n), v => Assert.Equal(20f, v));
        // A new input uploaded into the same buffer between replays is what the next replay reads.
        b.Upload(Enumerable.Repeat(1f, n).ToArray(), x);
        graph.Replay();
        Assert.All(Read(b, x, n), v => Assert.Equal(3.5f, v));
        Assert.Equal(3, graph.Replays);
        Assert.Equal(3, b.GraphLaunches);
    }

    [Fact]
    public void CallsACaptureCannotHoldFailWithTheDriversErrorAndLeaveNothingCaptured()
    {
        using var b = NewBackend();
        var x = b.Allocate(16);
        float[] host = new float[16];
        var cases = new (string what, Action body, string call)[]
        {
            ("a read back", () => b.Download(x, host), "cuMemcpyDtoHAsync_v2"),
            ("an upload", () => b.Upload(host, x), "cuMemcpyHtoDAsync_v2"),
            ("a wait", () => b.Synchronize(), "cuStreamSynchronize"),
            ("a new allocation", () => b.Allocate(1 << 20), "cuMemAlloc_v2"),
        };
        foreach (var (what, body, call) in cases)
        {
            var ex = Assert.Throws<CudaException>(() => b.CaptureGraph(() => { b.Fill(x, 16, 1f); body(); }));
            Assert.True(ex.Call == call && ex.ErrorName == "CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED", $"{what}: {ex.Message}");
            Assert.Contains("captured as a CUDA graph", ex.Message);
            // Nothing stays captured: the backend runs launches again at once.
            Assert.False(b.Driver.Capturing, what);
            b.Fill(x, 16, 7f);
            Assert.All(Read(b, x, 16), v => Assert.Equal(7f, v));
        }
    }

    [Fact]
    public void BlocksAStepFreedWhileCapturedStayReservedUntilTheGraphIsDisposed()
    {
        using var b = NewBackend();
        const int n = 4096;
        var input = b.Allocate(n);
        b.Fill(input, n, 1f);
        var output = b.Allocate(n);
        // A warm-up, as the trainer's first step of a phase: the scratch block is in the cache after it.
        var warm = b.Allocate(n);
        b.Free(warm);
        nint scratchAddress = 0;
        var graph = b.CaptureGraph(() =>
        {
            var scratch = b.Allocate(n);           // from the cache: no cuMemAlloc while capturing
            scratchAddress = scratch.Address;
            b.Scale(input, scratch, n, 2f);
            b.Scale(scratch, output, n, 2f);
            b.Free(scratch);                        // freed, but every replay writes it again
        });
        Assert.Equal(warm.Address, scratchAddress);
        // Someone else's tensor of the same size must not get the graph's scratch block.
        var other = b.Allocate(n);
        Assert.NotEqual(scratchAddress, other.Address);
        b.Fill(other, n, 5f);
        graph.Replay();
        Assert.All(Read(b, other, n), v => Assert.Equal(5f, v));
        Assert.All(Read(b, output, n), v => Assert.Equal(4f, v));
        // Released with the graph: the block is back in the shared cache.
        graph.Dispose();
        var after = b.Allocate(n);
        Assert.Equal(scratchAddress, after.Address);
        Assert.Throws<ObjectDisposedException>(() => graph.Replay());
    }

    [Fact]
    public void ALaunchFromAnotherThreadDuringACaptureIsRefused()
    {
        using var b = NewBackend();
        var x = b.Allocate(16);
        Exception? fromOtherThread = null;
        using var graph = b.CaptureGraph(() =>
        {
            b.Fill(x, 16, 1f);
            var t = new Thread(() =>
            {
                try { b.Fill(x, 16, 2f); }
                catch (Exception e) { fromOtherThread = e; }
            });
            t.Start();
            t.Join();
        });
        var ex = Assert.IsType<CudaException>(fromOtherThread);
        Assert.Equal("CUDA_ERROR_STREAM_CAPTURE_INVALIDATED", ex.ErrorName);
        Assert.Contains("fill", ex.Message);
        Assert.Equal(1, graph.Operations);
    }

    [Fact]
    public void TheCpuBackendsSayTheyCannotCapture()
    {
        IBackend cpu = Backends.Cpu.CpuBackend.Shared;
        Assert.False(cpu.SupportsGraphs);
        var ex = Assert.Throws<NotSupportedException>(() => cpu.CaptureGraph(() => { }));
        Assert.Contains("cpu", ex.Message);
        using var cuda = NewBackend();
        Assert.True(cuda.SupportsGraphs);
    }
}
