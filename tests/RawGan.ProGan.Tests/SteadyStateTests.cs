using RawGan.Engine;
using RawGan.Engine.Backends;
using RawGan.Engine.Backends.Cpu;
using RawGan.Engine.Backends.Cuda;
using RawGan.ProGan.Model;
using RawGan.ProGan.Training;

namespace RawGan.ProGan.Tests;

/// <summary>
/// A steady training step asks the backend for no new memory: after a warm-up step, every
/// tensor of a critic step (with its recorded double backward), a generator step, Adam and the
/// EMA is served by the caching allocator, on the CPU and on the CUDA backend (emulated driver).
/// </summary>
public class SteadyStateTests
{
    public static TheoryData<string> Backends => new() { "cpu", "cuda-emulated" };

    [Theory]
    [MemberData(nameof(Backends))]
    public void AfterWarmUpATrainingStepMakesNoNewDeviceAllocations(string name)
    {
        using IBackend backend = name == "cpu" ? new CpuBackend() : new CudaBackend(new EmulatedDriver());
        var config = ProGanConfig.Tiny(8) with { LatentSize = 16, FmapBase = 32, FmapMax = 16 };
        var rng = new Rng(1);
        using var models = GanModels.Create(backend, config, rng);
        var reals = new InMemoryShapes(8, 8);
        var host = new float[8 * 3 * 64];
        reals.FillBatch(Enumerable.Range(0, 8).ToArray(), 8, new bool[8], host);

        void Step(float alpha)
        {
            using var scope = new Scope();
            var x = Tensor.FromArray(backend, host, new Shape(8, 3, 8, 8));
            var stats = WganGp.TrainingStep(models, x, Tensor.RandomNormal(backend, new Shape(8, 16), rng), Tensor.RandomUniform(backend, new Shape(8), rng),
                Tensor.RandomNormal(backend, new Shape(8, 16), rng), 3, alpha, 0.99f);
            Assert.True(stats.Finite);
        }

        Step(0.5f);
        long allocations = backend.Memory.SystemAllocations;
        long inUse = backend.Memory.BytesInUse;
        for (int i = 0; i < 3; i++) Step(0.5f);
        Assert.Equal(allocations, backend.Memory.SystemAllocations);
        Assert.Equal(inUse, backend.Memory.BytesInUse);
        Assert.True(backend.Memory.CacheHits > 0);
    }
}
