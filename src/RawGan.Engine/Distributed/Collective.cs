using RawGan.Engine.Backends;

namespace RawGan.Engine.Distributed;

/// <summary>
/// The few collective operations data-parallel training needs, over the processes ("ranks") of
/// one job: every rank calls each operation in the same order with buffers of the same length.
/// <list type="bullet">
/// <item><see cref="SingleProcess"/>: one rank; every operation is a no-op (the default).</item>
/// <item><see cref="MpiCollective"/>: Open MPI across processes and machines (`mpirun -np N ...`).</item>
/// <item><see cref="NcclCollective"/>: NVIDIA's NCCL across GPUs, on device buffers.</item>
/// </list>
/// </summary>
public interface ICollective : IDisposable
{
    /// <summary>"single process", "mpi", "nccl".</summary>
    string Name { get; }
    int Rank { get; }
    int Size { get; }

    /// <summary>data = the element-wise sum of every rank's data (in place), on host memory.</summary>
    void AllReduceSum(Span<float> data);

    /// <summary>The same on a backend's buffer: in place on a CPU buffer; a device buffer is
    /// reduced on the device (NCCL, CUDA-aware MPI) or staged through host memory.</summary>
    void AllReduceSum(IBackend backend, DeviceBuffer buffer, long length);

    /// <summary>Every rank's data = the root's data.</summary>
    void Broadcast(Span<float> data, int root = 0);

    /// <summary>Every rank's bytes = the root's bytes (options, identifiers).</summary>
    void Broadcast(Span<byte> data, int root = 0);

    /// <summary>Returns on every rank once all ranks have called it.</summary>
    void Barrier();
}

/// <summary>One process: rank 0 of 1; nothing to exchange.</summary>
public sealed class SingleProcess : ICollective
{
    public static readonly SingleProcess Instance = new();
    public string Name => "single process";
    public int Rank => 0;
    public int Size => 1;
    public void AllReduceSum(Span<float> data) { }
    public void AllReduceSum(IBackend backend, DeviceBuffer buffer, long length) { }
    public void Broadcast(Span<float> data, int root = 0) => CheckRoot(root, 1);
    public void Broadcast(Span<byte> data, int root = 0) => CheckRoot(root, 1);
    public void Barrier() { }
    public void Dispose() { }

    internal static void CheckRoot(int root, int size)
    {
        if (root < 0 || root >= size) throw new ArgumentOutOfRangeException(nameof(root), $"root {root} is not a rank of {size}");
    }
}

/// <summary>What the launcher says about this process.</summary>
public static class Launcher
{
    /// <summary>The rank and size a launcher set in the environment (Open MPI's mpirun; also
    /// PMI and Slurm names), or (0, 1) when the process was started on its own.</summary>
    public static (int rank, int size) FromEnvironment()
    {
        foreach (var (rank, size) in new[] { ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"), ("PMI_RANK", "PMI_SIZE"), ("PMIX_RANK", "PMIX_SIZE") })
        {
            if (int.TryParse(Environment.GetEnvironmentVariable(rank), out int r) && int.TryParse(Environment.GetEnvironmentVariable(size), out int s) && s > 0)
                return (r, s);
        }
        return (0, 1);
    }

    /// <summary>The rank among the processes of this machine (for choosing a GPU), else the rank.</summary>
    public static int LocalRank() =>
        int.TryParse(Environment.GetEnvironmentVariable("OMPI_COMM_WORLD_LOCAL_RANK"), out int r) ? r : FromEnvironment().rank;

    /// <summary>The processes of this job on this machine.</summary>
    public static int LocalSize() =>
        int.TryParse(Environment.GetEnvironmentVariable("OMPI_COMM_WORLD_LOCAL_SIZE"), out int s) ? s : FromEnvironment().size;

    /// <summary>MPI when a launcher started several ranks, else the single process.</summary>
    public static ICollective Open() => FromEnvironment().size > 1 ? new MpiCollective() : SingleProcess.Instance;
}
