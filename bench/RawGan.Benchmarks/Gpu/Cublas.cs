using RawGan.Engine.Backends.Cuda;

namespace RawGan.Benchmarks.Gpu;

/// <summary>
/// cuBLAS for the GPU comparisons, through the engine's own bindings (CudaApi). cuBLAS is
/// column-major; RawGan's matrices are row-major, so a row-major C = A B is computed as the
/// column-major C^T = B^T A^T: swap the operands and the m / n sizes, keep the leading dimensions
/// as row lengths.
/// </summary>
public sealed unsafe class Cublas : IDisposable
{
    private readonly nint _handle;

    /// <param name="gpu">The backend whose buffers cuBLAS works on: cuBLAS runs on its stream, in
    /// order with its kernels and copies.</param>
    /// <param name="tf32">Let sgemm round its inputs to TF32 on tensor cores
    /// (CUBLAS_TF32_TENSOR_OP_MATH): the baseline of RawGan's version-2 kernels.</param>
    public Cublas(CudaBackend gpu, bool tf32 = false)
    {
        if (CudaApi.Locate(CudaApi.Cublas) == null)
            throw new InvalidOperationException($"cuBLAS is not installed: none of {string.Join(", ", CudaApi.Candidates[CudaApi.Cublas])} could be loaded");
        CudaApi.CheckCublas(CudaApi.cublasCreate(out _handle), "cublasCreate_v2");
        if (gpu.Driver is NativeDriver native) CudaApi.CheckCublas(CudaApi.cublasSetStream(_handle, native.Stream), "cublasSetStream_v2");
        if (tf32) CudaApi.CheckCublas(CudaApi.cublasSetMathMode(_handle, CudaApi.CUBLAS_TF32_TENSOR_OP_MATH), "cublasSetMathMode");
    }

    private const int OpN = 0;

    /// <summary>Row-major C[m, n] = alpha A[m, k] B[k, n] + beta C.</summary>
    public void Sgemm(int m, int n, int k, float alpha, ulong a, ulong b, float beta, ulong c) =>
        CudaApi.CheckCublas(CudaApi.cublasSgemm(_handle, OpN, OpN, n, m, k, &alpha, b, n, a, k, &beta, c, n), "cublasSgemm_v2");

    /// <summary>Row-major C_s[m, n] = alpha A[m, k] B_s[k, n] for s &lt; batch: one A shared by all
    /// (stride 0), B and C strided by their matrix sizes (convolution as im2col + GEMM).</summary>
    public void SgemmSharedA(int m, int n, int k, float alpha, ulong a, ulong b, ulong c, int batch)
    {
        float beta = 0;
        CudaApi.CheckCublas(CudaApi.cublasSgemmStridedBatched(_handle, OpN, OpN, n, m, k, &alpha, b, n, (long)k * n, a, k, 0, &beta, c, n, (long)m * n, batch),
            "cublasSgemmStridedBatched");
    }

    public void Dispose()
    {
        if (_handle != 0) CudaApi.cublasDestroy(_handle);
    }
}
