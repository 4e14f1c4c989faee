using RawGan.Engine.Backends.Cpu;
using RawGan.ProGan.Model;
using RawGan.ProGan.Training;

namespace RawGan.ProGan.Tests;

/// <summary>The memory plan that `train` checks before anything is made, against the peak the CPU
/// backend's allocator measures when the configuration trains.</summary>
public class MemoryPlanTests
{
    [Theory]
    [InlineData("tiny", 8, 8)]
    [InlineData("tiny", 16, 16)]
    [InlineData("tiny", 32, 16)]
    [InlineData("small", 16, 16)]
    public void ThePlanIsNearTheMeasuredPeakAndNotBelowIt(string preset, int resolution, int batch)
    {
        using var dir = new TempDirectory();
        var cpu = new CpuBackend();
        var data = new InMemoryShapes(64, resolution);
        // One batch per phase below the top resolution, two at the top: the peak is a step there.
        var below = new Dictionary<int, long>();
        for (int r = 4; r < resolution; r *= 2) below[r] = batch;
        var options = new TrainOptions
        {
            Model = ProGanConfig.FromPreset(preset, resolution, 3),
            ImagesPerPhase = 2 * batch,
            ImagesPerPhaseByResolution = below,
            DefaultBatch = batch,
            TickImages = 1 << 20,
            CheckpointTicks = 1000,
            SwdImages = 0,
        };
        using (var trainer = new Trainer(options, cpu, data, dir.Path, new SilentObserver()))
            Assert.Equal(StopReason.Finished, trainer.Run());
        long measured = cpu.Memory.PeakBytesInUse, planned = options.MemoryPlan().Bytes;
        Assert.InRange((double)measured / planned, 0.6, 1.03);
    }
}
