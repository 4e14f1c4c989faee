namespace RawGan.Engine.Backends;

/// <summary>
/// A block of float32 memory owned by a backend: a host address for the CPU backend, a device
/// address (CUdeviceptr) for CUDA. It is only a number; the backend that made it gives it meaning.
/// </summary>
public readonly record struct DeviceBuffer(nint Address, long Length)
{
    public static readonly DeviceBuffer Null = new(0, 0);
    public bool IsNull => Address == 0;

    /// <summary>Floats [offset, offset + length) of this buffer, as a buffer of their own (no copy).</summary>
    public DeviceBuffer Slice(long offset, long length) =>
        offset >= 0 && length >= 0 && offset + length <= Length
            ? new(Address + (nint)(offset * sizeof(float)), length)
            : throw new ArgumentOutOfRangeException(nameof(offset), $"floats {offset} to {offset + length} of a buffer of {Length}");
}

/// <summary>
/// Four dimensions, right-aligned (a rank-2 [r, c] is [1, 1, r, c]). Passed by value to kernels.
/// </summary>
public readonly record struct Dims4(int D0, int D1, int D2, int D3)
{
    public long Length => (long)D0 * D1 * D2 * D3;

    public int this[int i] => i switch { 0 => D0, 1 => D1, 2 => D2, 3 => D3, _ => throw new ArgumentOutOfRangeException(nameof(i)) };

    public override string ToString() => $"[{D0}, {D1}, {D2}, {D3}]";
}

/// <summary>How much memory a backend holds and how often it had to ask the system for more.</summary>
public readonly record struct MemoryStats(
    long BytesInUse, long BytesCached, long PeakBytesInUse, long SystemAllocations, long SystemFrees, long CacheHits);

/// <summary>A sequence of launches recorded once by <see cref="IBackend.CaptureGraph"/> and run
/// again with one call. Disposing it gives its reserved memory back.</summary>
public interface IStepGraph : IDisposable
{
    /// <summary>Runs every recorded operation, in order (asynchronously, like a launch).</summary>
    void Replay();
    /// <summary>How many operations (kernel launches and copies) it holds.</summary>
    int Operations { get; }
    /// <summary>How many times it has been replayed.</summary>
    long Replays { get; }
}

/// <summary>
/// A read of up to <see cref="Capacity"/> floats from the device that does not wait for it:
/// <see cref="Begin"/> queues the copy behind everything queued so far and returns at once;
/// <see cref="Wait"/> blocks until it has landed and hands the values over. Made once and reused
/// (a steady training step allocates nothing): the step's statistics are read this way, one step
/// late, so that the host prepares and queues the next step while the device runs this one.
/// </summary>
public interface IAsyncRead : IDisposable
{
    long Capacity { get; }
    /// <summary>Whether a read was begun and not yet waited for.</summary>
    bool Pending { get; }
    /// <summary>Queues the copy of <paramref name="source"/> (at most <see cref="Capacity"/> floats).
    /// One read at a time: a Begin while <see cref="Pending"/> is an error.</summary>
    void Begin(DeviceBuffer source);
    /// <summary>Waits for the copy begun last and writes its first destination.Length values.</summary>
    void Wait(Span<float> destination);
}

/// <summary>The bookkeeping every <see cref="IAsyncRead"/> shares (one read at a time, lengths
/// within the capacity); a backend supplies how the copy starts and how it is waited for.</summary>
public abstract class AsyncRead(long capacity) : IAsyncRead
{
    private long _length;

    public long Capacity { get; } = capacity;
    public bool Pending { get; private set; }

    public void Begin(DeviceBuffer source)
    {
        if (Pending) throw new InvalidOperationException("a read is already in flight: Wait for it first");
        if (source.Length > Capacity) throw new ArgumentException($"an asynchronous read of {Capacity} floats cannot hold {source.Length}");
        Start(source);
        _length = source.Length;
        Pending = true;
    }

    public void Wait(Span<float> destination)
    {
        if (!Pending) throw new InvalidOperationException("Wait without a Begin");
        if (destination.Length > _length) throw new ArgumentException($"the read holds {_length} floats, {destination.Length} were asked for");
        Land(destination);
        Pending = false;
    }

    /// <summary>Queues the copy of <paramref name="source"/> (checked to fit).</summary>
    protected abstract void Start(DeviceBuffer source);
    /// <summary>Waits for it and writes its first destination.Length values.</summary>
    protected abstract void Land(Span<float> destination);

    public virtual void Dispose() { }
}

/// <summary>An <see cref="IAsyncRead"/> for a backend whose calls complete before they return (the
/// CPU backends): <see cref="AsyncRead.Begin"/> downloads at once.</summary>
public sealed class ImmediateRead(IBackend backend, long capacity) : AsyncRead(capacity)
{
    private readonly float[] _values = new float[capacity];

    protected override void Start(DeviceBuffer source) => backend.Download(source, _values.AsSpan(0, (int)source.Length));

    protected override void Land(Span<float> destination) => _values.AsSpan(0, destination.Length).CopyTo(destination);
}

/// <summary>
/// One method per kernel. Each has a twin in kernels/*.cu with the same argument order and the
/// snake_case name given in its summary; CpuBackend is the reference implementation in C#.
/// Backends know nothing of autograd: the tape (RawGan.Engine.Autograd) calls them.
///
/// Conventions: every buffer is contiguous float32, row-major; a dimension argument counts
/// elements, never bytes; outputs are fully overwritten (no kernel accumulates into its output
/// unless its name says so).
/// </summary>
public interface IBackend : IDisposable
{
    /// <summary>"cpu", "cuda", "cuda-emulated".</summary>
    string Name { get; }

    /// <summary>A one-line description of the device (for `info` and logs).</summary>
    string Description { get; }

    // ---------------------------------------------------------------- memory
    DeviceBuffer Allocate(long length);
    void Free(DeviceBuffer buffer);
    void Upload(ReadOnlySpan<float> source, DeviceBuffer destination);
    void Download(DeviceBuffer source, Span<float> destination);
    /// <summary>Device-to-device copy of <paramref name="length"/> floats.</summary>
    void Copy(DeviceBuffer source, DeviceBuffer destination, long length);
    /// <summary>Wait for every queued kernel to finish.</summary>
    void Synchronize();
    /// <summary>A reusable read of up to <paramref name="capacity"/> floats that does not wait
    /// (<see cref="IAsyncRead"/>); backends whose calls complete at once read immediately.</summary>
    IAsyncRead CreateAsyncRead(long capacity) => new ImmediateRead(this, capacity);
    MemoryStats Memory { get; }
    /// <summary>Return cached blocks to the system.</summary>
    void ReleaseCachedMemory();

    // ---------------------------------------------------------------- graphs
    /// <summary>Whether <see cref="CaptureGraph"/> works on this backend (CUDA: a CUDA graph; the
    /// CPU backends run every call as it comes, so there is nothing to replay).</summary>
    bool SupportsGraphs => false;

    /// <summary>Records every kernel launch and device copy that <paramref name="body"/> makes,
    /// without running them, as a graph that <see cref="IStepGraph.Replay"/> then runs with one
    /// call, as often as wanted: the same kernels, the same arguments, the same buffers. The body
    /// may not allocate from the system, copy to or from the host, or wait (an error names the
    /// call); memory it takes from the cache stays reserved for the graph until it is disposed.</summary>
    IStepGraph CaptureGraph(Action body) => throw new NotSupportedException($"the {Name} backend cannot capture graphs");

    // ---------------------------------------------------------------- elementwise.cu
    /// <summary>fill: y[i] = value.</summary>
    void Fill(DeviceBuffer y, long n, float value);
    /// <summary>scale: y[i] = a * x[i].</summary>
    void Scale(DeviceBuffer x, DeviceBuffer y, long n, float a);
    /// <summary>add_scalar: y[i] = x[i] + b.</summary>
    void AddScalar(DeviceBuffer x, DeviceBuffer y, long n, float b);
    /// <summary>square: y[i] = x[i]^2.</summary>
    void Square(DeviceBuffer x, DeviceBuffer y, long n);
    /// <summary>sqrt_forward: y[i] = sqrt(x[i]).</summary>
    void Sqrt(DeviceBuffer x, DeviceBuffer y, long n);
    /// <summary>rsqrt_forward: y[i] = 1 / sqrt(x[i]).</summary>
    void Rsqrt(DeviceBuffer x, DeviceBuffer y, long n);
    /// <summary>softplus_forward: y[i] = log(1 + e^x[i]).</summary>
    void Softplus(DeviceBuffer x, DeviceBuffer y, long n);
    /// <summary>sigmoid_forward: y[i] = 1 / (1 + e^-x[i]).</summary>
    void Sigmoid(DeviceBuffer x, DeviceBuffer y, long n);
    /// <summary>leaky_relu_forward: y = x if x &gt; 0 else slope * x.</summary>
    void LeakyReluForward(DeviceBuffer x, DeviceBuffer y, long n, float slope);
    /// <summary>leaky_relu_backward: gx = gy if x &gt; 0 else slope * gy (a masked multiply).</summary>
    void LeakyReluBackward(DeviceBuffer x, DeviceBuffer gy, DeviceBuffer gx, long n, float slope);
    /// <summary>lerp_scalar: y = a + t (b - a), one t for every element (the fade-in).</summary>
    void LerpScalar(DeviceBuffer a, DeviceBuffer b, DeviceBuffer y, long n, float t);
    /// <summary>lerp_per_sample: y[s, i] = a + t[s] (b - a), one t per sample of <paramref name="inner"/>
    /// elements (e.g. WGAN-GP's random points between two batches).</summary>
    void LerpPerSample(DeviceBuffer a, DeviceBuffer b, DeviceBuffer t, DeviceBuffer y, int samples, int inner);

    // ---------------------------------------------------------------- broadcast.cu
    // a and b have the dimensions of y or 1 on each axis (NumPy broadcasting, right-aligned).
    /// <summary>add_broadcast: y = a + b.</summary>
    void Add(DeviceBuffer a, Dims4 aDims, DeviceBuffer b, Dims4 bDims, DeviceBuffer y, Dims4 yDims);
    /// <summary>sub_broadcast: y = a - b.</summary>
    void Sub(DeviceBuffer a, Dims4 aDims, DeviceBuffer b, Dims4 bDims, DeviceBuffer y, Dims4 yDims);
    /// <summary>mul_broadcast: y = a * b.</summary>
    void Mul(DeviceBuffer a, Dims4 aDims, DeviceBuffer b, Dims4 bDims, DeviceBuffer y, Dims4 yDims);
    /// <summary>div_broadcast: y = a / b.</summary>
    void Div(DeviceBuffer a, Dims4 aDims, DeviceBuffer b, Dims4 bDims, DeviceBuffer y, Dims4 yDims);
    /// <summary>broadcast_to: y[i] = x[i mapped onto x's dims]; x has y's dims or 1 on each axis.</summary>
    void BroadcastTo(DeviceBuffer x, Dims4 xDims, DeviceBuffer y, Dims4 yDims);
    /// <summary>sum_to: y = x summed over every axis where y's dimension is 1 and x's is not
    /// (the adjoint of broadcast_to).</summary>
    void SumTo(DeviceBuffer x, Dims4 xDims, DeviceBuffer y, Dims4 yDims);

    // ---------------------------------------------------------------- bias.cu
    // x [n, c, plane] (plane 1 for a dense layer), b [c]; slope &gt; 0 (1: the bias alone).
    /// <summary>bias_leaky_relu: y = z if z &gt; 0 else slope z, z = x + b[channel]; y may be x.</summary>
    void BiasLeakyRelu(DeviceBuffer x, DeviceBuffer b, DeviceBuffer y, int n, int c, int plane, float slope);
    /// <summary>bias_leaky_relu_backward: gx = gy if y &gt; 0 else slope gy (the mask read from the
    /// output), gb[channel] = sum over samples and pixels of gx; gx may be gy.</summary>
    void BiasLeakyReluBackward(DeviceBuffer y, DeviceBuffer gy, DeviceBuffer gx, DeviceBuffer gb, int n, int c, int plane, float slope);

    // ---------------------------------------------------------------- gemm.cu
    /// <summary>
    /// sgemm: C[m, n] = alpha * op(A) op(B) + beta * C, row-major; op(A) is [m, k] (A is [k, m]
    /// when transposed), op(B) is [k, n] (B is [n, k] when transposed).
    /// </summary>
    void Gemm(bool transA, bool transB, int m, int n, int k, float alpha, DeviceBuffer a, DeviceBuffer b, float beta, DeviceBuffer c);

    // ---------------------------------------------------------------- conv.cu
    // Stride 1, zero 'same' padding (k / 2), odd k. x [N, Cin, H, W], w [Cout, Cin, k, k],
    // y [N, Cout, H, W]. The equalized-learning-rate multiplier (gain / sqrt(Cin k k)) is applied
    // to w inside the kernel, never as a separate pass.
    /// <summary>conv2d_forward: y = conv(x, scale * w). With a <paramref name="bias"/> [cout] (not
    /// null), a layer's epilogue folded into the output pass: y = z if z &gt; 0 else slope z,
    /// z = conv(x, scale * w) + bias[o] (slope &gt; 0; 1: the bias alone), as bias_leaky_relu would give.</summary>
    void Conv2dForward(DeviceBuffer x, DeviceBuffer w, DeviceBuffer y, int n, int cin, int h, int wd, int cout, int k, float scale,
        DeviceBuffer bias = default, float slope = 1f);
    /// <summary>conv2d_forward_pixelnorm: a generator layer whole, z = pixel_norm(v) with
    /// v = leaky_relu(conv(x, scale * w) + bias) (as <see cref="Conv2dForward"/> with a bias), and
    /// inv [n, h, wd] = 1 / sqrt(mean over channels of v^2 + eps) per pixel, what
    /// <see cref="PixelNormLeakyReluBackward"/> needs of the forward pass besides z (required: the
    /// fused kernels always write it).</summary>
    void Conv2dForwardPixelNorm(DeviceBuffer x, DeviceBuffer w, DeviceBuffer z, DeviceBuffer inv, int n, int cin, int h, int wd, int cout, int k,
        float scale, DeviceBuffer bias, float slope, float eps);
    /// <summary>conv2d_backward_input: gx = conv_transpose(gy, scale * w).</summary>
    void Conv2dBackwardInput(DeviceBuffer gy, DeviceBuffer w, DeviceBuffer gx, int n, int cin, int h, int wd, int cout, int k, float scale);
    /// <summary>conv2d_backward_weight: gw = scale * sum over n, pixels of gy (x) x-patch.</summary>
    void Conv2dBackwardWeight(DeviceBuffer x, DeviceBuffer gy, DeviceBuffer gw, int n, int cin, int h, int wd, int cout, int k, float scale);

    // ---------------------------------------------------------------- resample.cu
    /// <summary>upsample2x_nearest: y[p, 2i+a, 2j+b] = gain * x[p, i, j]; x is [planes, h, w].</summary>
    void Upsample2x(DeviceBuffer x, DeviceBuffer y, int planes, int h, int w, float gain);
    /// <summary>avgpool2x: y[p, i, j] = gain * mean of x[p, 2i..2i+1, 2j..2j+1]; x is [planes, h, w], h and w even.</summary>
    void AvgPool2x(DeviceBuffer x, DeviceBuffer y, int planes, int h, int w, float gain);

    // ---------------------------------------------------------------- channels.cu
    /// <summary>copy_channels: dst[s, dstStart + c, :] = src[s, srcStart + c, :] for c &lt; count,
    /// for each of <paramref name="samples"/> samples of <paramref name="plane"/> elements per channel.</summary>
    void CopyChannels(DeviceBuffer src, int srcChannels, int srcStart, DeviceBuffer dst, int dstChannels, int dstStart, int count, int samples, int plane);

    // ---------------------------------------------------------------- pixelnorm.cu
    /// <summary>pixelnorm_forward: y = x / sqrt(mean over channels of x^2 + eps), per pixel; x is [n, c, plane];
    /// y may be x. With <paramref name="inv"/> [n, plane] (not null), the factor of each pixel is kept there.</summary>
    void PixelNormForward(DeviceBuffer x, DeviceBuffer y, int n, int c, int plane, float eps, DeviceBuffer inv = default);
    /// <summary>pixelnorm_backward: gx = r (gy - y mean_c(gy y)), r = 1 / sqrt(mean_c x^2 + eps).</summary>
    void PixelNormBackward(DeviceBuffer x, DeviceBuffer gy, DeviceBuffer gx, int n, int c, int plane, float eps);
    /// <summary>pixelnorm_leaky_relu_backward: the gradient before the bias of a layer
    /// z = pixel_norm(leaky_relu(a)), from z and inv = 1 / sqrt(mean_c v^2 + eps) alone:
    /// ga = m(z) inv (gz - z mean_c(gz z)), m(z) = 1 if z &gt; 0 else slope; ga may be gz; and the
    /// bias gradient gb[channel] = sum over samples and pixels of ga.</summary>
    void PixelNormLeakyReluBackward(DeviceBuffer z, DeviceBuffer inv, DeviceBuffer gz, DeviceBuffer ga, DeviceBuffer gb, int n, int c, int plane, float slope);

    // ---------------------------------------------------------------- mbstd.cu
    /// <summary>minibatch_stddev_forward: y [n, c + 1, plane] = x with one more channel holding the
    /// group statistic (strided groups of <paramref name="groupSize"/>; see ProGAN section 3).</summary>
    void MinibatchStdDevForward(DeviceBuffer x, DeviceBuffer y, int n, int c, int plane, int groupSize, float eps);
    /// <summary>minibatch_stddev_backward: gx from gy [n, c + 1, plane].</summary>
    void MinibatchStdDevBackward(DeviceBuffer x, DeviceBuffer gy, DeviceBuffer gx, int n, int c, int plane, int groupSize, float eps);

    // ---------------------------------------------------------------- wgan_gp.cu
    /// <summary>gradient_penalty_forward: norm[s] = ||g[s]||_2, penalty[s] = (norm[s] - target)^2.</summary>
    void GradientPenaltyForward(DeviceBuffer g, DeviceBuffer norm, DeviceBuffer penalty, int samples, int inner, float target);
    /// <summary>gradient_penalty_backward: gg[s, i] = gpen[s] 2 (norm[s] - target) g[s, i] / norm[s].</summary>
    void GradientPenaltyBackward(DeviceBuffer g, DeviceBuffer norm, DeviceBuffer gpenalty, DeviceBuffer gg, int samples, int inner, float target);

    // ---------------------------------------------------------------- optim.cu
    /// <summary>adam_step: the step count t (an int in the first float of <paramref name="step"/>)
    /// goes up by one, unless <paramref name="skip"/> (a 64-bit non-finite count, see
    /// <see cref="CountNonFinite"/>; <see cref="DeviceBuffer.Null"/> for none) is not zero.</summary>
    void AdamStep(DeviceBuffer step, DeviceBuffer skip);
    /// <summary>adam_update (TensorFlow's form, as in the official ProGAN): m = b1 m + (1 - b1) g;
    /// v = b2 v + (1 - b2) g^2; p -= lr sqrt(1 - b2^t) / (1 - b1^t) m / (sqrt(v) + eps); t counts from 1
    /// and is read from <paramref name="step"/> on the device. Nothing changes when
    /// <paramref name="skip"/> is given and not zero: the decision never waits for the host. With
    /// <paramref name="nonFiniteCount"/> (a 64-bit counter as <see cref="CountNonFinite"/>'s), the
    /// number of NaN or infinite values among the new p, m and v is added to it.</summary>
    void AdamUpdate(DeviceBuffer p, DeviceBuffer g, DeviceBuffer m, DeviceBuffer v, long n, float lr, float beta1, float beta2, float eps, DeviceBuffer step, DeviceBuffer skip,
        DeviceBuffer nonFiniteCount = default);
    /// <summary>ema_update: ema = p + beta (ema - p), unless <paramref name="skip"/> is given and not
    /// zero; with <paramref name="nonFiniteCount"/>, the non-finite values of the new ema are added to it.</summary>
    void EmaUpdate(DeviceBuffer ema, DeviceBuffer p, long n, float beta, DeviceBuffer skip, DeviceBuffer nonFiniteCount = default);
    /// <summary>count_nonfinite: count += the number of NaN or infinite values in x, where count
    /// is a 64-bit integer held in the first two floats of <paramref name="count"/> (so many
    /// tensors add to one counter on the device, read back once; see NonFiniteCounter).</summary>
    void CountNonFinite(DeviceBuffer x, long n, DeviceBuffer count);
}

/// <summary>The argument checks every backend's <see cref="IBackend.Conv2dForwardPixelNorm"/> shares.</summary>
internal static class PixelNormLayerChecks
{
    public static void RequireFactors(DeviceBuffer inv)
    {
        if (inv.IsNull) throw new ArgumentException("conv2d_forward_pixelnorm: inv (one factor per pixel) is required; the fused kernels always write it");
    }
}
