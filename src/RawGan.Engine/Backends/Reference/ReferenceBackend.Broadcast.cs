namespace RawGan.Engine.Backends.Reference;

// Broadcasting (NumPy rules, four dimensions right-aligned): y = a op b for op in + - * /,
// broadcast_to (y = x repeated along its size-1 axes) and sum_to, its adjoint (x summed along
// every axis where y has size 1). An operand with size 1 on an axis reads index 0 there.
public sealed unsafe partial class ReferenceBackend
{
    public void Add(DeviceBuffer a, Dims4 aDims, DeviceBuffer b, Dims4 bDims, DeviceBuffer y, Dims4 yDims) =>
        Binary(a, aDims, b, bDims, y, yDims, "add_broadcast", (u, v) => u + v);

    public void Sub(DeviceBuffer a, Dims4 aDims, DeviceBuffer b, Dims4 bDims, DeviceBuffer y, Dims4 yDims) =>
        Binary(a, aDims, b, bDims, y, yDims, "sub_broadcast", (u, v) => u - v);

    public void Mul(DeviceBuffer a, Dims4 aDims, DeviceBuffer b, Dims4 bDims, DeviceBuffer y, Dims4 yDims) =>
        Binary(a, aDims, b, bDims, y, yDims, "mul_broadcast", (u, v) => u * v);

    public void Div(DeviceBuffer a, Dims4 aDims, DeviceBuffer b, Dims4 bDims, DeviceBuffer y, Dims4 yDims) =>
        Binary(a, aDims, b, bDims, y, yDims, "div_broadcast", (u, v) => u / v);

    /// <summary>The flat index, in an array of dims <paramref name="d"/>, of the element that
    /// broadcasts to position (i0, i1, i2, i3) of the loop: index 0 on every axis of size 1.</summary>
    private static long At(Dims4 d, long i0, long i1, long i2, long i3)
    {
        long j0 = d.D0 == 1 ? 0 : i0, j1 = d.D1 == 1 ? 0 : i1, j2 = d.D2 == 1 ? 0 : i2, j3 = d.D3 == 1 ? 0 : i3;
        return ((j0 * d.D1 + j1) * d.D2 + j2) * d.D3 + j3;
    }

    /// <summary>Each axis of <paramref name="x"/> is the same as <paramref name="full"/>'s or 1.
    /// (CpuBackend does not check this and would read out of bounds.)</summary>
    private static void CheckBroadcast(Dims4 x, Dims4 full, string op)
    {
        for (int k = 0; k < 4; k++)
            if (x[k] != 1 && x[k] != full[k])
                throw new ArgumentException($"{op}: {x} does not broadcast to {full}");
    }

    private static void Binary(DeviceBuffer a, Dims4 aDims, DeviceBuffer b, Dims4 bDims, DeviceBuffer y, Dims4 yDims, string op, Func<float, float, float> f)
    {
        CheckBroadcast(aDims, yDims, op);
        CheckBroadcast(bDims, yDims, op);
        float* pa = P(a), pb = P(b), py = P(y);
        for (long i0 = 0; i0 < yDims.D0; i0++)
            for (long i1 = 0; i1 < yDims.D1; i1++)
                for (long i2 = 0; i2 < yDims.D2; i2++)
                    for (long i3 = 0; i3 < yDims.D3; i3++)
                        py[At(yDims, i0, i1, i2, i3)] = f(pa[At(aDims, i0, i1, i2, i3)], pb[At(bDims, i0, i1, i2, i3)]);
    }

    public void BroadcastTo(DeviceBuffer x, Dims4 xDims, DeviceBuffer y, Dims4 yDims)
    {
        CheckBroadcast(xDims, yDims, "broadcast_to");
        float* px = P(x), py = P(y);
        for (long i0 = 0; i0 < yDims.D0; i0++)
            for (long i1 = 0; i1 < yDims.D1; i1++)
                for (long i2 = 0; i2 < yDims.D2; i2++)
                    for (long i3 = 0; i3 < yDims.D3; i3++)
                        py[At(yDims, i0, i1, i2, i3)] = px[At(xDims, i0, i1, i2, i3)];
    }

    /// <summary>y[j] = sum of the x[i] that broadcast_to(y) would put at i: every element of x
    /// is added, in double, to the element of y it maps to.</summary>
    public void SumTo(DeviceBuffer x, Dims4 xDims, DeviceBuffer y, Dims4 yDims)
    {
        CheckBroadcast(yDims, xDims, "sum_to");
        float* px = P(x), py = P(y);
        var sums = new double[yDims.Length];
        for (long i0 = 0; i0 < xDims.D0; i0++)
            for (long i1 = 0; i1 < xDims.D1; i1++)
                for (long i2 = 0; i2 < xDims.D2; i2++)
                    for (long i3 = 0; i3 < xDims.D3; i3++)
                        sums[At(yDims, i0, i1, i2, i3)] += px[At(xDims, i0, i1, i2, i3)];
        for (long j = 0; j < sums.Length; j++) py[j] = (float)sums[j];
    }
}
