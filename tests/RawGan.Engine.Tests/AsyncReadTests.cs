using RawGan.Engine.Backends;
using RawGan.Engine.Backends.Cuda;

namespace RawGan.Engine.Tests;

/// <summary>
/// Reads that do not wait (<see cref="IAsyncRead"/>: what the trainer reads a step's statistics
/// with, one step late): a read returns the values its buffer held when it was queued, whatever
/// runs after it; and on the emulator the page-locked memory holds NaN until the read's event is
/// waited for, as a GPU's would hold whatever was there, so a host that skips the wait fails here.
/// </summary>
public class AsyncReadTests
{
    [Theory]
    [MemberData(nameof(TestBackends.All), MemberType = typeof(TestBackends))]
    public void AReadReturnsWhatTheBufferHeldWhenItWasQueued(string name)
    {
        var backend = TestBackends.Get(name);
        var source = backend.Allocate(11);
        try
        {
            using var read = backend.CreateAsyncRead(11);
            Assert.Equal(11, read.Capacity);
            float[] values = Enumerable.Range(0, 11).Select(i => i * 1.5f - 3).ToArray();
            for (int round = 0; round < 3; round++)
            {
                backend.Upload(values, source);
                read.Begin(source);
                Assert.True(read.Pending);
                Assert.Throws<InvalidOperationException>(() => read.Begin(source));   // one at a time
                backend.Fill(source, 11, float.NaN);   // queued after the read: must not show in it
                var got = new float[11];
                read.Wait(got);
                Assert.False(read.Pending);
                Assert.Equal(values, got);
                for (int i = 0; i < values.Length; i++) values[i] += round + 1;
            }
            Assert.Throws<InvalidOperationException>(() => read.Wait(new float[1]));   // nothing in flight
            var tooLong = backend.Allocate(12);
            try { Assert.Throws<ArgumentException>(() => read.Begin(tooLong)); }
            finally { backend.Free(tooLong); }
        }
        finally
        {
            backend.Free(source);
        }
    }

    [Fact]
    public unsafe void OnTheEmulatorPageLockedMemoryHoldsNanUntilTheEventIsWaitedFor()
    {
        using var driver = new EmulatedDriver();
        ICudaDriver d = driver;
        ulong source = d.Allocate(16);
        var host = (float*)d.AllocateHost(16);
        var other = (float*)d.AllocateHost(16);
        try
        {
            for (int i = 0; i < 4; i++) ((float*)source)[i] = i + 10;
            nint before = d.CreateEvent(), after = d.CreateEvent();
            d.RecordEvent(before);
            d.CopyDeviceToHostAsync(host, source, 16);
            Assert.True(float.IsNaN(host[0]) && float.IsNaN(host[3]));   // not landed
            d.WaitEvent(before);                                          // recorded before the copy: does not land it
            Assert.True(float.IsNaN(host[0]));
            ((float*)source)[0] = -1;                                     // later work does not change what was copied
            d.RecordEvent(after);
            d.WaitEvent(after);
            Assert.Equal([10f, 11f, 12f, 13f], new ReadOnlySpan<float>(host, 4).ToArray());

            // A second read into a block before the first was waited for, and a read into memory
            // that is not page-locked, are refused; synchronizing the stream lands every read.
            d.CopyDeviceToHostAsync(other, source, 16);
            var twice = Assert.Throws<CudaException>(() => d.CopyDeviceToHostAsync(other, source, 16));
            Assert.Contains("before the first was waited for", twice.Message);
            var notPinned = Assert.Throws<CudaException>(() => d.CopyDeviceToHostAsync(host + 1, source, 4));
            Assert.Contains("page-locked", notPinned.Message);
            d.Synchronize();
            Assert.Equal(-1f, other[0]);
            d.DestroyEvent(before);
            d.DestroyEvent(after);
            Assert.Throws<CudaException>(() => d.DestroyEvent(after));
        }
        finally
        {
            d.FreeHost(host);
            d.FreeHost(other);
            d.Free(source);
        }
    }
}
