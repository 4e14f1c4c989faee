using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace RawGan.Engine.Backends.Cpu;

/// <summary>
/// The reference backend: every kernel in C#, on host memory, split over the cores by
/// <see cref="CpuParallel"/>. The CUDA kernels are checked against this class.
/// </summary>
public sealed unsafe partial class CpuBackend : IBackend
{
    private readonly CachingAllocator _allocator;
    private bool _disposed;

    /// <summary>One shared instance is enough for a process; tests may make their own to count memory.</summary>
    public static CpuBackend Shared { get; } = new();

    public CpuBackend()
    {
        // 64-byte alignment: one AVX-512 register, one cache line.
        _allocator = new CachingAllocator(bytes => (nint)NativeMemory.AlignedAlloc((nuint)bytes, 64), p => NativeMemory.AlignedFree((void*)p));
    }

    public string Name => "cpu";

    public string Description => $"CPU: {Environment.ProcessorCount} logical cores, {CpuParallel.Threads} used, " +
        (_vectors == HardwareVectors ? VectorsName(_vectors) : $"{VectorsName(_vectors)} (of {VectorsName(HardwareVectors)})");

    /// <summary>The vector instructions the products (GEMM, convolutions) are written for.</summary>
    public enum CpuVectors
    {
        /// <summary>No fast GEMM: the portable loops (Vector&lt;float&gt;) and im2col convolutions.</summary>
        Portable,
        /// <summary>AVX2 and FMA: the GEMM's 6 x 16 micro-kernel, 3x3 convolutions as the AVX2 Winograd F(4x4)
        /// (Winograd.Avx2.cs), other convolutions as implicit GEMMs.</summary>
        Avx2,
        /// <summary>AVX-512: the GEMM's 6 x 64 micro-kernel and every Winograd version.</summary>
        Avx512,
    }

    /// <summary>The best this CPU runs.</summary>
    public static CpuVectors HardwareVectors => Sgemm.Wide ? CpuVectors.Avx512 : Sgemm.Narrow ? CpuVectors.Avx2 : CpuVectors.Portable;

    /// <summary>What a new backend uses: the hardware's best, or less where RAWGAN_CPU_VECTORS
    /// (avx512, avx2, portable) asks for less (to compare them on one machine); a name that is not one of
    /// these, or more than the CPU has, is ignored. (Computed on each call, not stored: <see cref="Shared"/>
    /// is constructed before any static field declared after it.)</summary>
    public static CpuVectors DefaultVectors =>
        Environment.GetEnvironmentVariable("RAWGAN_CPU_VECTORS")?.Trim().ToLowerInvariant() switch
        {
            "portable" => CpuVectors.Portable,
            "avx2" when HardwareVectors >= CpuVectors.Avx2 => CpuVectors.Avx2,
            _ => HardwareVectors,
        };

    private CpuVectors _vectors = DefaultVectors;

    /// <summary>The vector instructions this backend's products use (<see cref="DefaultVectors"/> unless
    /// set); more than the CPU has is refused.</summary>
    public CpuVectors Vectors
    {
        get => _vectors;
        set => _vectors = value <= HardwareVectors ? value
            : throw new NotSupportedException($"{VectorsName(value)} is more than this CPU has ({VectorsName(HardwareVectors)})");
    }

    private bool Wide => _vectors == CpuVectors.Avx512;

    private static string VectorsName(CpuVectors v) => v switch
    {
        CpuVectors.Avx512 => "AVX-512",
        CpuVectors.Avx2 => "AVX2",
        _ => "no wide SIMD",
    };

    private static float* P(DeviceBuffer b) => (float*)b.Address;

    // ------------------------------------------------------------------ memory

    public DeviceBuffer Allocate(long length) => _allocator.Allocate(length);

    public void Free(DeviceBuffer buffer) => _allocator.Free(buffer);

    public void Upload(ReadOnlySpan<float> source, DeviceBuffer destination)
    {
        CheckLength(destination, source.Length, nameof(Upload));
        source.CopyTo(new Span<float>(P(destination), source.Length));
    }

    public void Download(DeviceBuffer source, Span<float> destination)
    {
        CheckLength(source, destination.Length, nameof(Download));
        new ReadOnlySpan<float>(P(source), destination.Length).CopyTo(destination);
    }

    public void Copy(DeviceBuffer source, DeviceBuffer destination, long length)
    {
        CheckLength(source, length, nameof(Copy));
        CheckLength(destination, length, nameof(Copy));
        Buffer.MemoryCopy(P(source), P(destination), destination.Length * sizeof(float), length * sizeof(float));
    }

    private static void CheckLength(DeviceBuffer b, long needed, string op)
    {
        if (b.Length < needed)
            throw new ArgumentException($"{op}: buffer holds {b.Length} floats, {needed} needed");
    }

    public void Synchronize() { }

    public MemoryStats Memory => _allocator.Stats;

    public void ReleaseCachedMemory() => _allocator.ReleaseCached();

    public void Dispose()
    {
        if (_disposed || ReferenceEquals(this, Shared)) return;
        _disposed = true;
        _allocator.ReleaseAll();
    }

    // ------------------------------------------------------------------ elementwise

    private const long ElementGrain = 1 << 15;

    // Each kernel's loop body is a struct (see CpuParallel): the lambda it would be, with the
    // captured variables as fields. Defined next to the method that uses it.

    public void Fill(DeviceBuffer y, long n, float value) => CpuParallel.For(n, ElementGrain, new FillLoop(P(y), value));

    private readonly struct FillLoop(float* y, float value) : IRangeBody
    {
        public void Run(long s, long e) => new Span<float>(y + s, (int)(e - s)).Fill(value);
    }

    public void Scale(DeviceBuffer x, DeviceBuffer y, long n, float a) => CpuParallel.For(n, ElementGrain, new ScaleLoop(P(x), P(y), a));

    private readonly struct ScaleLoop(float* x, float* y, float a) : IRangeBody
    {
        public void Run(long s, long e) { for (long i = s; i < e; i++) y[i] = a * x[i]; }
    }

    public void AddScalar(DeviceBuffer x, DeviceBuffer y, long n, float b) => CpuParallel.For(n, ElementGrain, new AddScalarLoop(P(x), P(y), b));

    private readonly struct AddScalarLoop(float* x, float* y, float b) : IRangeBody
    {
        public void Run(long s, long e) { for (long i = s; i < e; i++) y[i] = x[i] + b; }
    }

    public void Square(DeviceBuffer x, DeviceBuffer y, long n) => CpuParallel.For(n, ElementGrain, new SquareLoop(P(x), P(y)));

    private readonly struct SquareLoop(float* x, float* y) : IRangeBody
    {
        public void Run(long s, long e) { for (long i = s; i < e; i++) y[i] = x[i] * x[i]; }
    }

    public void Sqrt(DeviceBuffer x, DeviceBuffer y, long n) => CpuParallel.For(n, ElementGrain, new SqrtLoop(P(x), P(y)));

    private readonly struct SqrtLoop(float* x, float* y) : IRangeBody
    {
        public void Run(long s, long e) { for (long i = s; i < e; i++) y[i] = MathF.Sqrt(x[i]); }
    }

    public void Rsqrt(DeviceBuffer x, DeviceBuffer y, long n) => CpuParallel.For(n, ElementGrain, new RsqrtLoop(P(x), P(y)));

    private readonly struct RsqrtLoop(float* x, float* y) : IRangeBody
    {
        public void Run(long s, long e) { for (long i = s; i < e; i++) y[i] = 1f / MathF.Sqrt(x[i]); }
    }

    public void Softplus(DeviceBuffer x, DeviceBuffer y, long n) => CpuParallel.For(n, ElementGrain, new SoftplusLoop(P(x), P(y)));

    /// <summary>max(x, 0) + log1p(e^-|x|), in double (one or two calls per step: the losses).</summary>
    private readonly struct SoftplusLoop(float* x, float* y) : IRangeBody
    {
        public void Run(long s, long e)
        {
            for (long i = s; i < e; i++)
            {
                double v = x[i];
                y[i] = (float)(Math.Max(v, 0) + Math.Log(1 + Math.Exp(-Math.Abs(v))));
            }
        }
    }

    public void Sigmoid(DeviceBuffer x, DeviceBuffer y, long n) => CpuParallel.For(n, ElementGrain, new SigmoidLoop(P(x), P(y)));

    private readonly struct SigmoidLoop(float* x, float* y) : IRangeBody
    {
        public void Run(long s, long e) { for (long i = s; i < e; i++) y[i] = (float)(1 / (1 + Math.Exp(-(double)x[i]))); }
    }

    public void LeakyReluForward(DeviceBuffer x, DeviceBuffer y, long n, float slope) =>
        CpuParallel.For(n, ElementGrain, new LeakyReluForwardLoop(P(x), P(y), slope));

    private readonly struct LeakyReluForwardLoop(float* px, float* py, float slope) : IRangeBody
    {
        public void Run(long s, long e)
        {
            long i = s;
            if (Vector512.IsHardwareAccelerated)
            {
                var vs = Vector512.Create(slope);
                for (; i + 16 <= e; i += 16)
                {
                    var v = Vector512.Load(px + i);
                    Vector512.ConditionalSelect(Vector512.GreaterThan(v, Vector512<float>.Zero), v, v * vs).Store(py + i);
                }
            }
            for (; i < e; i++) { float v = px[i]; py[i] = v > 0 ? v : slope * v; }
        }
    }

    public void LeakyReluBackward(DeviceBuffer x, DeviceBuffer gy, DeviceBuffer gx, long n, float slope) =>
        CpuParallel.For(n, ElementGrain, new LeakyReluBackwardLoop(P(x), P(gy), P(gx), slope));

    private readonly struct LeakyReluBackwardLoop(float* px, float* pg, float* po, float slope) : IRangeBody
    {
        public void Run(long s, long e)
        {
            long i = s;
            if (Vector512.IsHardwareAccelerated)
            {
                var vs = Vector512.Create(slope);
                for (; i + 16 <= e; i += 16)
                {
                    var g = Vector512.Load(pg + i);
                    Vector512.ConditionalSelect(Vector512.GreaterThan(Vector512.Load(px + i), Vector512<float>.Zero), g, g * vs).Store(po + i);
                }
            }
            else if (Vector256.IsHardwareAccelerated)
            {
                var vs = Vector256.Create(slope);
                for (; i + 8 <= e; i += 8)
                {
                    var g = Vector256.Load(pg + i);
                    Vector256.ConditionalSelect(Vector256.GreaterThan(Vector256.Load(px + i), Vector256<float>.Zero), g, g * vs).Store(po + i);
                }
            }
            for (; i < e; i++) po[i] = px[i] > 0 ? pg[i] : slope * pg[i];
        }
    }

    public void BiasLeakyRelu(DeviceBuffer x, DeviceBuffer b, DeviceBuffer y, int n, int c, int plane, float slope) =>
        CpuParallel.For((long)n * c, Math.Max(1, ElementGrain / Math.Max(1, plane)), new BiasLeakyReluLoop(P(x), P(b), P(y), c, plane, slope));

    /// <summary>Planes [r0, r1) of [n, c]: y = act(x + b[c]), 16 at a time.</summary>
    private readonly struct BiasLeakyReluLoop(float* px, float* pb, float* py, int c, int plane, float slope) : IRangeBody
    {
        public void Run(long r0, long r1)
        {
            var vs = Vector512.Create(slope);
            for (long r = r0; r < r1; r++)
            {
                float bias = pb[r % c];
                float* src = px + r * plane, dst = py + r * plane;
                int i = 0;
                if (Vector512.IsHardwareAccelerated)
                {
                    var vb = Vector512.Create(bias);
                    for (; i + 16 <= plane; i += 16)
                    {
                        var z = Vector512.Load(src + i) + vb;
                        Vector512.ConditionalSelect(Vector512.GreaterThan(z, Vector512<float>.Zero), z, z * vs).Store(dst + i);
                    }
                }
                for (; i < plane; i++) { float z = src[i] + bias; dst[i] = z > 0 ? z : slope * z; }
            }
        }
    }

    public void BiasLeakyReluBackward(DeviceBuffer y, DeviceBuffer gy, DeviceBuffer gx, DeviceBuffer gb, int n, int c, int plane, float slope) =>
        CpuParallel.For(c, Math.Max(1, ElementGrain / Math.Max(1, (long)n * plane)), new BiasLeakyReluBackwardLoop(P(y), P(gy), P(gx), P(gb), n, c, plane, slope));

    /// <summary>Channels [c0, c1): gx = mask(y) gy over every sample's plane of the channel, gb[c] = their sum.</summary>
    private readonly struct BiasLeakyReluBackwardLoop(float* py, float* pg, float* po, float* pb, int n, int c, int plane, float slope) : IRangeBody
    {
        public void Run(long c0, long c1)
        {
            var vs = Vector512.Create(slope);
            for (long ch = c0; ch < c1; ch++)
            {
                double total = 0;   // per sample a vector of float partial sums, added up in double
                for (long s = 0; s < n; s++)
                {
                    var vsum = Vector512<float>.Zero;
                    var vsum8 = Vector256<float>.Zero;
                    float tail = 0;
                    long o = (s * c + ch) * plane;
                    float* y = py + o, g = pg + o, gx = po + o;
                    int i = 0;
                    if (Vector512.IsHardwareAccelerated)
                        for (; i + 16 <= plane; i += 16)
                        {
                            var v = Vector512.Load(g + i);
                            v = Vector512.ConditionalSelect(Vector512.GreaterThan(Vector512.Load(y + i), Vector512<float>.Zero), v, v * vs);
                            v.Store(gx + i);
                            vsum += v;
                        }
                    else if (Vector256.IsHardwareAccelerated)
                        for (; i + 8 <= plane; i += 8)
                        {
                            var v = Vector256.Load(g + i);
                            v = Vector256.ConditionalSelect(Vector256.GreaterThan(Vector256.Load(y + i), Vector256<float>.Zero), v, v * Vector256.Create(slope));
                            v.Store(gx + i);
                            vsum8 += v;
                        }
                    for (; i < plane; i++)
                    {
                        float v = y[i] > 0 ? g[i] : slope * g[i];
                        gx[i] = v;
                        tail += v;
                    }
                    total += (Vector512.IsHardwareAccelerated ? (double)Vector512.Sum(vsum) : Vector256.Sum(vsum8)) + tail;
                }
                pb[ch] = (float)total;
            }
        }
    }

    public void LerpScalar(DeviceBuffer a, DeviceBuffer b, DeviceBuffer y, long n, float t) =>
        CpuParallel.For(n, ElementGrain, new LerpScalarLoop(P(a), P(b), P(y), t));

    private readonly struct LerpScalarLoop(float* pa, float* pb, float* py, float t) : IRangeBody
    {
        public void Run(long s, long e) { for (long i = s; i < e; i++) py[i] = pa[i] + t * (pb[i] - pa[i]); }
    }

    public void LerpPerSample(DeviceBuffer a, DeviceBuffer b, DeviceBuffer t, DeviceBuffer y, int samples, int inner) =>
        CpuParallel.For((long)samples * inner, ElementGrain, new LerpPerSampleLoop(P(a), P(b), P(t), P(y), inner));

    private readonly struct LerpPerSampleLoop(float* pa, float* pb, float* pt, float* py, int inner) : IRangeBody
    {
        public void Run(long s, long e) { for (long i = s; i < e; i++) py[i] = pa[i] + pt[i / inner] * (pb[i] - pa[i]); }
    }

    // ------------------------------------------------------------------ broadcast

    private interface IBinary
    {
        static abstract float Apply(float a, float b);
        static abstract Vector512<float> Apply(Vector512<float> a, Vector512<float> b);
    }
    private struct AddOp : IBinary
    {
        public static float Apply(float a, float b) => a + b;
        public static Vector512<float> Apply(Vector512<float> a, Vector512<float> b) => a + b;
    }
    private struct SubOp : IBinary
    {
        public static float Apply(float a, float b) => a - b;
        public static Vector512<float> Apply(Vector512<float> a, Vector512<float> b) => a - b;
    }
    private struct MulOp : IBinary
    {
        public static float Apply(float a, float b) => a * b;
        public static Vector512<float> Apply(Vector512<float> a, Vector512<float> b) => a * b;
    }
    private struct DivOp : IBinary
    {
        public static float Apply(float a, float b) => a / b;
        public static Vector512<float> Apply(Vector512<float> a, Vector512<float> b) => a / b;
    }

    public void Add(DeviceBuffer a, Dims4 aDims, DeviceBuffer b, Dims4 bDims, DeviceBuffer y, Dims4 yDims) => Binary<AddOp>(a, aDims, b, bDims, y, yDims);
    public void Sub(DeviceBuffer a, Dims4 aDims, DeviceBuffer b, Dims4 bDims, DeviceBuffer y, Dims4 yDims) => Binary<SubOp>(a, aDims, b, bDims, y, yDims);
    public void Mul(DeviceBuffer a, Dims4 aDims, DeviceBuffer b, Dims4 bDims, DeviceBuffer y, Dims4 yDims) => Binary<MulOp>(a, aDims, b, bDims, y, yDims);
    public void Div(DeviceBuffer a, Dims4 aDims, DeviceBuffer b, Dims4 bDims, DeviceBuffer y, Dims4 yDims) => Binary<DivOp>(a, aDims, b, bDims, y, yDims);

    private static void Binary<TOp>(DeviceBuffer a, Dims4 aDims, DeviceBuffer b, Dims4 bDims, DeviceBuffer y, Dims4 yDims) where TOp : struct, IBinary
    {
        var plan = new BroadcastPlan(yDims, aDims, bDims);
        CpuParallel.For(plan.Rows, Math.Max(1, ElementGrain / plan.D3), new BinaryLoop<TOp>(P(a), P(b), P(y), plan));
    }

    private readonly struct BinaryLoop<TOp>(float* pa, float* pb, float* py, BroadcastPlan plan) : IRangeBody where TOp : struct, IBinary
    {
        public void Run(long r0, long r1)
        {
            long inner = plan.D3, sa = plan.A3, sb = plan.B3;
            for (long row = r0; row < r1; row++)
            {
                plan.RowOffsets(row, out long ao, out long bo);
                float* ra = pa + ao, rb = pb + bo, ry = py + row * inner;
                long i = 0;
                // The common rows: both operands contiguous, or one of them a single value (a bias).
                if (Vector512.IsHardwareAccelerated && sa <= 1 && sb <= 1 && (sa | sb) != 0)
                {
                    var ca = Vector512.Create(*ra);
                    var cb = Vector512.Create(*rb);
                    for (; i + 16 <= inner; i += 16)
                        TOp.Apply(sa == 1 ? Vector512.Load(ra + i) : ca, sb == 1 ? Vector512.Load(rb + i) : cb).Store(ry + i);
                }
                for (; i < inner; i++) ry[i] = TOp.Apply(ra[i * sa], rb[i * sb]);
            }
        }
    }

    public void BroadcastTo(DeviceBuffer x, Dims4 xDims, DeviceBuffer y, Dims4 yDims)
    {
        var plan = new BroadcastPlan(yDims, xDims, yDims);
        CpuParallel.For(plan.Rows, Math.Max(1, ElementGrain / plan.D3), new BroadcastToLoop(P(x), P(y), plan));
    }

    private readonly struct BroadcastToLoop(float* px, float* py, BroadcastPlan plan) : IRangeBody
    {
        public void Run(long r0, long r1)
        {
            long inner = plan.D3, sx = plan.A3;
            for (long row = r0; row < r1; row++)
            {
                plan.RowOffsets(row, out long xo, out _);
                float* rx = px + xo, ry = py + row * inner;
                for (long i = 0; i < inner; i++) ry[i] = rx[i * sx];
            }
        }
    }

    public void SumTo(DeviceBuffer x, Dims4 xDims, DeviceBuffer y, Dims4 yDims)
    {
        // Loop space = x's dims; operand "a" = x itself, operand "b" = y (stride 0 on summed axes).
        var plan = new BroadcastPlan(xDims, xDims, yDims);
        long outCount = yDims.Length;
        // Each output element sums its own slice of x, in double, so the CPU reference does not
        // drift on long reductions; outputs are independent, so they split across cores freely.
        CpuParallel.For(outCount, Math.Max(1, ElementGrain / Math.Max(1, xDims.Length / Math.Max(1, outCount))), new SumToLoop(P(x), P(y), plan));
    }

    private readonly struct SumToLoop(float* px, float* py, BroadcastPlan plan) : IRangeBody
    {
        public void Run(long o0, long o1)
        {
            ReadOnlySpan<long> d = [plan.D0, plan.D1, plan.D2, plan.D3];
            ReadOnlySpan<long> sx = [plan.A0, plan.A1, plan.A2, plan.A3];
            ReadOnlySpan<long> sy = [plan.B0, plan.B1, plan.B2, plan.B3];
            for (long o = o0; o < o1; o++)
            {
                // Decompose o over the kept axes (y is contiguous over them, innermost last).
                long rem = o, baseX = 0;
                for (int k = 3; k >= 0; k--)
                {
                    if (sy[k] == 0) continue;
                    long idx = rem % d[k];
                    rem /= d[k];
                    baseX += idx * sx[k];
                }
                double sum = 0;
                long r0n = sy[0] == 0 ? d[0] : 1, r1n = sy[1] == 0 ? d[1] : 1, r2n = sy[2] == 0 ? d[2] : 1, r3n = sy[3] == 0 ? d[3] : 1;
                for (long i0 = 0; i0 < r0n; i0++)
                    for (long i1 = 0; i1 < r1n; i1++)
                        for (long i2 = 0; i2 < r2n; i2++)
                        {
                            float* row = px + baseX + i0 * sx[0] + i1 * sx[1] + i2 * sx[2];
                            for (long i3 = 0; i3 < r3n; i3++) sum += row[i3 * sx[3]];
                        }
                py[o] = (float)sum;
            }
        }
    }
}
