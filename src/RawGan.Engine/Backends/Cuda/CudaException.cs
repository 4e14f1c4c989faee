namespace RawGan.Engine.Backends.Cuda;

/// <summary>A failed CUDA driver, NVRTC or cuBLAS call: which call, the error's name and its text.</summary>
public sealed class CudaException : Exception
{
    public CudaException(string call, int code, string errorName, string message)
        : base($"{call} failed: {errorName} ({code}): {message}")
    {
        Call = call;
        Code = code;
        ErrorName = errorName;
    }

    public string Call { get; }
    public int Code { get; }
    public string ErrorName { get; }
}

/// <summary>CUDA cannot be used on this machine: no driver library, no device, no NVRTC. The
/// message is one line for the user.</summary>
public sealed class CudaUnavailableException(string message, Exception? inner = null) : Exception(message, inner);
