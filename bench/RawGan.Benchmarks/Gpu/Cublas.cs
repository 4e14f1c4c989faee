using System.Runtime.InteropServices;

namespace RawGan.Benchmarks.Gpu;

/// <summary>
/// The few cuBLAS entry points the GPU comparisons call, bound here as function pointers (the
/// engine's own cuBLAS declarations are internal to it). cuBLAS is column-major; RawGan's
/// matrices are row-major, so a row-major C = A B is computed as the column-major C^T = B^T A^T:
/// swap the operands and the m / n sizes, keep the leading dimensions as row lengths.
/// </summary>
public sealed unsafe class Cublas : IDisposable
{
    private static readonly string[] Candidates = OperatingSystem.IsWindows()
        ? ["cublas64_13.dll", "cublas64_12.dll", "cublas64_11.dll"]
        : ["libcublas.so.13", "libcublas.so.12", "libcublas.so.11", "libcublas.so"];

    private readonly nint _library, _handle;
    private readonly delegate* unmanaged<nint, int> _destroy;
    private readonly delegate* unmanaged<nint, int, int, int, int, int, float*, ulong, int, ulong, int, float*, ulong, int, int> _sgemm;
    private readonly delegate* unmanaged<nint, int, int, int, int, int, float*, ulong, int, long, ulong, int, long, float*, ulong, int, long, int, int> _sgemmStridedBatched;

    public Cublas()
    {
        _library = Candidates.Select(name => NativeLibrary.TryLoad(name, out var h) ? h : 0).FirstOrDefault(h => h != 0);
        if (_library == 0) throw new InvalidOperationException($"cuBLAS is not installed: none of {string.Join(", ", Candidates)} could be loaded");
        var create = (delegate* unmanaged<nint*, int>)NativeLibrary.GetExport(_library, "cublasCreate_v2");
        _destroy = (delegate* unmanaged<nint, int>)NativeLibrary.GetExport(_library, "cublasDestroy_v2");
        _sgemm = (delegate* unmanaged<nint, int, int, int, int, int, float*, ulong, int, ulong, int, float*, ulong, int, int>)
            NativeLibrary.GetExport(_library, "cublasSgemm_v2");
        _sgemmStridedBatched = (delegate* unmanaged<nint, int, int, int, int, int, float*, ulong, int, long, ulong, int, long, float*, ulong, int, long, int, int>)
            NativeLibrary.GetExport(_library, "cublasSgemmStridedBatched");
        nint handle;
        Check(create(&handle), "cublasCreate_v2");
        _handle = handle;
    }

    private const int OpN = 0;

    /// <summary>Row-major C[m, n] = alpha A[m, k] B[k, n] + beta C.</summary>
    public void Sgemm(int m, int n, int k, float alpha, ulong a, ulong b, float beta, ulong c) =>
        Check(_sgemm(_handle, OpN, OpN, n, m, k, &alpha, b, n, a, k, &beta, c, n), "cublasSgemm_v2");

    /// <summary>Row-major C_s[m, n] = alpha A[m, k] B_s[k, n] for s &lt; batch: one A shared by all
    /// (stride 0), B and C strided by their matrix sizes (convolution as im2col + GEMM).</summary>
    public void SgemmSharedA(int m, int n, int k, float alpha, ulong a, ulong b, ulong c, int batch)
    {
        float beta = 0;
        Check(_sgemmStridedBatched(_handle, OpN, OpN, n, m, k, &alpha, b, n, (long)k * n, a, k, 0, &beta, c, n, (long)m * n, batch),
            "cublasSgemmStridedBatched");
    }

    private static void Check(int status, string call)
    {
        if (status != 0) throw new InvalidOperationException($"{call} failed with cublasStatus {status}");
    }

    public void Dispose()
    {
        if (_handle != 0) _destroy(_handle);
    }
}
