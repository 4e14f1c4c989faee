using RawGan.Engine.Backends;
using RawGan.Engine.Backends.Cuda;

namespace RawGan.Engine.Tests;

/// <summary>
/// Uploads that do not wait (CudaBackend's upload ring: every upload copied into page-locked
/// staging, the device copy queued from there): what lands is what the caller passed, whatever
/// the caller does with its memory afterwards and however the ring wraps and grows; a region is
/// reused only after its copy's event; and on the emulator a host that writes page-locked bytes
/// an upload could still be reading fails with the address.
/// </summary>
public class StagedUploadTests
{
    [Fact]
    public unsafe void OnTheEmulatorWritingPageLockedBytesBeforeTheUploadsEventFails()
    {
        using var driver = new EmulatedDriver();
        ICudaDriver d = driver;
        ulong device = d.Allocate(64);
        var host = (float*)d.AllocateHost(64);
        try
        {
            for (int i = 0; i < 16; i++) host[i] = i;
            nint e = d.CreateEvent();
            d.CopyHostToDeviceAsync(device, host, 64);
            d.RecordEvent(e);
            Assert.Equal(5f, ((float*)device)[5]);   // in stream order: a launch after it sees it
            host[3] = -1;                            // too early: the device may still be reading
            var early = Assert.Throws<CudaException>(() => d.WaitEvent(e));
            Assert.Contains("while an upload from them could still be reading", early.Message);

            // Waited for first, the bytes are the host's again.
            host[3] = 3;
            d.CopyHostToDeviceAsync(device, host, 64);
            d.RecordEvent(e);
            d.WaitEvent(e);
            host[3] = -1;
            d.CopyHostToDeviceAsync(device, host, 64);   // a new upload from the same bytes: nothing pending to compare
            d.Synchronize();
            Assert.Equal(-1f, ((float*)device)[3]);

            // A second upload from bytes that changed while the first was pending is caught as well.
            d.CopyHostToDeviceAsync(device, host, 32);
            host[0] = 99;
            var overlapping = Assert.Throws<CudaException>(() => d.CopyHostToDeviceAsync(device, host, 16));
            Assert.Contains("0x", overlapping.Message);

            // Only page-locked memory may be the source.
            var pageable = (float*)System.Runtime.InteropServices.NativeMemory.Alloc(16);
            try
            {
                var notPinned = Assert.Throws<CudaException>(() => d.CopyHostToDeviceAsync(device, pageable, 16));
                Assert.Contains("not inside a page-locked block", notPinned.Message);
            }
            finally { System.Runtime.InteropServices.NativeMemory.Free(pageable); }
            var pastTheEnd = Assert.Throws<CudaException>(() => d.CopyHostToDeviceAsync(device, host + 8, 64));
            Assert.Contains("not inside a page-locked block", pastTheEnd.Message);
            d.DestroyEvent(e);
        }
        finally
        {
            d.FreeHost(host);
            d.Free(device);
        }
    }

    [Fact]
    public void UploadsLandWhatWasPassedAcrossWrapsAndGrowth()
    {
        using var backend = new CudaBackend(new EmulatedDriver());
        var rng = new Random(5);
        // Sizes from a few floats to well past the first ring (1 MiB), so the ring wraps many
        // times, grows twice, and has to wait for its oldest regions.
        int[] lengths = [3, 1000, 70_000, 17, 250_000, 4096, 600_000, 1, 90_000, 333_333];
        var buffers = lengths.Select(n => backend.Allocate(n)).ToArray();
        try
        {
            var expected = new float[lengths.Length][];
            for (int round = 0; round < 6; round++)
            {
                for (int b = 0; b < lengths.Length; b++)
                {
                    var host = new float[lengths[b]];
                    for (int i = 0; i < host.Length; i++) host[i] = (float)rng.NextDouble() + round;
                    backend.Upload(host, buffers[b]);
                    expected[b] = (float[])host.Clone();
                    Array.Fill(host, float.NaN);   // the caller's memory is free at once
                }
                for (int b = 0; b < lengths.Length; b++)
                {
                    var got = new float[lengths[b]];
                    backend.Download(buffers[b], got);
                    Assert.Equal(expected[b], got);
                }
            }
            backend.Upload(ReadOnlySpan<float>.Empty, buffers[0]);   // nothing to copy: not staged, not an error
            var (staged, waited) = backend.Uploads;
            Assert.Equal(6 * lengths.Length, staged);
            Assert.True(waited > 0, "the ring never had to wait for a region: it did not wrap");
        }
        finally
        {
            foreach (var b in buffers) backend.Free(b);
        }
    }

    [Fact]
    public void AnUploadWhileAStepIsBeingCapturedIsRefusedWithItsName()
    {
        using var backend = new CudaBackend(new EmulatedDriver());
        var buffer = backend.Allocate(8);
        try
        {
            var e = Assert.Throws<CudaException>(() => backend.CaptureGraph(() => backend.Upload(new float[8], buffer)));
            Assert.Contains("host memory was uploaded", e.Message);
        }
        finally
        {
            backend.Free(buffer);
        }
    }
}
