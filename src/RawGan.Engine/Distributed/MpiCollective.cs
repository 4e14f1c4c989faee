using System.Runtime.InteropServices;
using System.Text;
using RawGan.Engine.Backends;

namespace RawGan.Engine.Distributed;

/// <summary>A failing MPI call or a missing MPI library, with the call and MPI's own text.</summary>
public sealed class MpiException(string message) : Exception(message);

/// <summary>
/// The collectives over Open MPI (`libmpi.so.40`), bound by hand like the CUDA driver: a few
/// function pointers looked up by name. Open MPI's handles are not integers: MPI_COMM_WORLD is
/// the address of the exported object <c>ompi_mpi_comm_world</c>, MPI_FLOAT of
/// <c>ompi_mpi_float</c>, MPI_SUM of <c>ompi_mpi_op_sum</c>. Errors return instead of aborting
/// (MPI_ERRORS_RETURN), so a failing call becomes an <see cref="MpiException"/> naming it; a rank
/// that dies is noticed by mpirun, which ends the job's other ranks.
///
/// Device buffers of a CUDA backend are staged through host memory (one copy each way per
/// all-reduce); CPU buffers are reduced in place.
/// </summary>
public sealed unsafe class MpiCollective : ICollective
{
    private static readonly string[] Libraries = ["libmpi.so.40", "libmpi.so"];
    private const int MpiThreadFunneled = 1;
    private static readonly void* InPlace = (void*)1;   // Open MPI's MPI_IN_PLACE

    private readonly nint _library;
    private readonly nint _world, _float, _byte, _sum;
    private readonly delegate* unmanaged<void*, void*, int, nint, nint, nint, int> _allreduce;
    private readonly delegate* unmanaged<void*, int, nint, int, nint, int> _bcast;
    private readonly delegate* unmanaged<nint, int> _barrier;
    private readonly delegate* unmanaged<int, byte*, int*, int> _errorString;
    private readonly delegate* unmanaged<int> _finalize;
    private float[] _staging = [];
    private bool _disposed;

    public MpiCollective()
    {
        _library = Libraries.Select(n => NativeLibrary.TryLoad(n, out var h) ? h : 0).FirstOrDefault(h => h != 0);
        if (_library == 0)
            throw new MpiException($"Open MPI is not installed: none of {string.Join(", ", Libraries)} could be loaded (Debian: apt-get install openmpi-bin libopenmpi3)");
        nint Export(string name) => NativeLibrary.TryGetExport(_library, name, out var p) ? p
            : throw new MpiException($"the MPI library has no '{name}': RawGan speaks to Open MPI (libmpi.so.40); MPICH and others are not supported");
        _world = Export("ompi_mpi_comm_world");
        _float = Export("ompi_mpi_float");
        _byte = Export("ompi_mpi_byte");
        _sum = Export("ompi_mpi_op_sum");
        var errorsReturn = Export("ompi_mpi_errors_return");
        _allreduce = (delegate* unmanaged<void*, void*, int, nint, nint, nint, int>)Export("MPI_Allreduce");
        _bcast = (delegate* unmanaged<void*, int, nint, int, nint, int>)Export("MPI_Bcast");
        _barrier = (delegate* unmanaged<nint, int>)Export("MPI_Barrier");
        _errorString = (delegate* unmanaged<int, byte*, int*, int>)Export("MPI_Error_string");
        _finalize = (delegate* unmanaged<int>)Export("MPI_Finalize");
        var initialized = (delegate* unmanaged<int*, int>)Export("MPI_Initialized");
        var init = (delegate* unmanaged<int*, byte***, int, int*, int>)Export("MPI_Init_thread");
        var rank = (delegate* unmanaged<nint, int*, int>)Export("MPI_Comm_rank");
        var size = (delegate* unmanaged<nint, int*, int>)Export("MPI_Comm_size");
        var setErrhandler = (delegate* unmanaged<nint, nint, int>)Export("MPI_Comm_set_errhandler");

        int flag = 0, provided = 0;
        Check(initialized(&flag), "MPI_Initialized");
        if (flag == 0) Check(init(null, null, MpiThreadFunneled, &provided), "MPI_Init_thread");
        Check(setErrhandler(_world, errorsReturn), "MPI_Comm_set_errhandler");
        int r = 0, s = 0;
        Check(rank(_world, &r), "MPI_Comm_rank");
        Check(size(_world, &s), "MPI_Comm_size");
        (Rank, Size) = (r, s);
    }

    public string Name => "mpi";
    public int Rank { get; }
    public int Size { get; }

    public void AllReduceSum(Span<float> data)
    {
        fixed (float* p = data)
            for (int start = 0; start < data.Length; start += int.MaxValue / 2)
            {
                int count = Math.Min(int.MaxValue / 2, data.Length - start);
                Check(_allreduce(InPlace, p + start, count, _float, _sum, _world), "MPI_Allreduce");
            }
    }

    public void AllReduceSum(IBackend backend, DeviceBuffer buffer, long length)
    {
        if (length > buffer.Length) throw new ArgumentException($"AllReduceSum: {length} floats asked of a buffer of {buffer.Length}");
        if (backend.Name is "cpu" or "reference")
        {
            AllReduceSum(new Span<float>((void*)buffer.Address, checked((int)length)));
            return;
        }
        // Device memory: through a host buffer kept between calls (a steady step allocates nothing).
        if (_staging.Length < length) _staging = new float[length];
        var host = _staging.AsSpan(0, checked((int)length));
        backend.Download(buffer, host);
        AllReduceSum(host);
        backend.Upload(host, buffer);
    }

    public void Broadcast(Span<float> data, int root = 0)
    {
        SingleProcess.CheckRoot(root, Size);
        fixed (float* p = data) Check(_bcast(p, data.Length, _float, root, _world), "MPI_Bcast");
    }

    public void Broadcast(Span<byte> data, int root = 0)
    {
        SingleProcess.CheckRoot(root, Size);
        fixed (byte* p = data) Check(_bcast(p, data.Length, _byte, root, _world), "MPI_Bcast");
    }

    public void Barrier() => Check(_barrier(_world), "MPI_Barrier");

    private void Check(int code, string call)
    {
        if (code == 0) return;
        byte* text = stackalloc byte[512];
        int length = 0;
        string message = _errorString != null && _errorString(code, text, &length) == 0 ? Encoding.UTF8.GetString(text, Math.Clamp(length, 0, 512)) : $"error {code}";
        throw new MpiException($"{call} failed on rank {Rank}: {message} (another rank may have stopped)");
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _finalize();
    }
}
