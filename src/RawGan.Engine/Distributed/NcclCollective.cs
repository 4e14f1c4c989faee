using System.Runtime.InteropServices;
using RawGan.Engine.Backends;

namespace RawGan.Engine.Distributed;

/// <summary>
/// All-reduce across GPUs with NVIDIA's NCCL (`libnccl.so.2`, loaded when present), one rank
/// per GPU: the ranks meet over MPI first (rank 0 makes NCCL's unique id and broadcasts it), then
/// reduce device buffers directly, on the CUDA backend's stream (the legacy default stream).
/// Host buffers, broadcasts and barriers go through MPI.
/// </summary>
public sealed unsafe class NcclCollective : ICollective
{
    private static readonly string[] Libraries = ["libnccl.so.2", "libnccl.so"];
    private const int NcclFloat32 = 7, NcclSum = 0;

    /// <summary>ncclUniqueId: 128 opaque bytes, passed by value to ncclCommInitRank.</summary>
    [StructLayout(LayoutKind.Sequential, Size = 128)]
    private struct UniqueId { private long _first; }

    private readonly MpiCollective _mpi;
    private readonly nint _library, _comm;
    private readonly delegate* unmanaged<void*, void*, nuint, int, int, nint, nint, int> _allReduce;
    private readonly delegate* unmanaged<int, byte*> _errorString;
    private readonly delegate* unmanaged<nint, int> _destroy;
    private bool _disposed;

    /// <summary>Why NCCL cannot be used here (null if it can be loaded): for `info` and tests.</summary>
    public static string? Unavailable()
    {
        foreach (var name in Libraries)
            if (NativeLibrary.TryLoad(name, out var h))
            {
                NativeLibrary.Free(h);
                return null;
            }
        return $"NCCL not found: none of {string.Join(", ", Libraries)} could be loaded (it comes with the CUDA toolkit or PyTorch's nvidia-nccl wheel)";
    }

    public NcclCollective(MpiCollective mpi)
    {
        _mpi = mpi;
        if (Unavailable() is string reason) throw new MpiException(reason);
        _library = Libraries.Select(n => NativeLibrary.TryLoad(n, out var h) ? h : 0).First(h => h != 0);
        nint Export(string name) => NativeLibrary.TryGetExport(_library, name, out var p) ? p : throw new MpiException($"libnccl has no '{name}'");
        var getId = (delegate* unmanaged<UniqueId*, int>)Export("ncclGetUniqueId");
        var init = (delegate* unmanaged<nint*, int, UniqueId, int, int>)Export("ncclCommInitRank");
        _allReduce = (delegate* unmanaged<void*, void*, nuint, int, int, nint, nint, int>)Export("ncclAllReduce");
        _errorString = (delegate* unmanaged<int, byte*>)Export("ncclGetErrorString");
        _destroy = (delegate* unmanaged<nint, int>)Export("ncclCommDestroy");
        UniqueId id = default;
        if (mpi.Rank == 0) Check(getId(&id), "ncclGetUniqueId");
        mpi.Broadcast(new Span<byte>(&id, sizeof(UniqueId)));
        nint comm = 0;
        Check(init(&comm, mpi.Size, id, mpi.Rank), "ncclCommInitRank");
        _comm = comm;
    }

    public string Name => "nccl";
    public int Rank => _mpi.Rank;
    public int Size => _mpi.Size;

    public void AllReduceSum(Span<float> data) => _mpi.AllReduceSum(data);

    public void AllReduceSum(IBackend backend, DeviceBuffer buffer, long length)
    {
        if (backend.Name != "cuda")
        {
            _mpi.AllReduceSum(backend, buffer, length);
            return;
        }
        void* p = (void*)buffer.Address;
        Check(_allReduce(p, p, (nuint)length, NcclFloat32, NcclSum, _comm, 0), "ncclAllReduce");
    }

    public void Broadcast(Span<float> data, int root = 0) => _mpi.Broadcast(data, root);
    public void Broadcast(Span<byte> data, int root = 0) => _mpi.Broadcast(data, root);
    public void Barrier() => _mpi.Barrier();

    private void Check(int result, string call)
    {
        if (result == 0) return;
        string text = _errorString != null ? Marshal.PtrToStringUTF8((nint)_errorString(result)) ?? "" : "";
        throw new MpiException($"{call} failed on rank {Rank}: {text} (ncclResult {result})");
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        if (_comm != 0) _destroy(_comm);
    }
}
