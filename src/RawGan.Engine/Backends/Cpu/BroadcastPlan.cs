namespace RawGan.Engine.Backends.Cpu;

/// <summary>
/// Turns a broadcast of up to two operands into the fewest loops: axes of size 1 are dropped and
/// neighbouring axes on which every operand is either full or broadcast alike are merged. Adding a
/// bias [1, C, 1, 1] to [N, C, H, W] becomes a loop over [N, C, H*W] whose inner loop is a plain
/// row with one bias value. Strides are 0 on broadcast axes.
/// </summary>
internal readonly struct BroadcastPlan
{
    public readonly int Rank;
    public readonly long D0, D1, D2, D3;       // collapsed output dims, right-aligned
    public readonly long A0, A1, A2, A3;       // strides of operand a (0 = broadcast)
    public readonly long B0, B1, B2, B3;       // strides of operand b

    public BroadcastPlan(Dims4 y, Dims4 a, Dims4 b)
    {
        Span<long> dims = stackalloc long[4];
        Span<bool> aFull = stackalloc bool[4], bFull = stackalloc bool[4];
        int r = 0;
        for (int k = 0; k < 4; k++)
        {
            if (y[k] == 1) continue;
            bool af = a[k] != 1, bf = b[k] != 1;
            if (r > 0 && aFull[r - 1] == af && bFull[r - 1] == bf)
            {
                dims[r - 1] *= y[k];
                continue;
            }
            dims[r] = y[k]; aFull[r] = af; bFull[r] = bf; r++;
        }
        Rank = r;
        Span<long> d = stackalloc long[4] { 1, 1, 1, 1 };
        Span<long> sa = stackalloc long[4], sb = stackalloc long[4];
        for (int i = 0; i < r; i++) d[4 - r + i] = dims[i];
        long stA = 1, stB = 1;
        for (int i = 3; i >= 0; i--)
        {
            int src = i - (4 - r);
            bool af = src >= 0 && aFull[src], bf = src >= 0 && bFull[src];
            sa[i] = af ? stA : 0; sb[i] = bf ? stB : 0;
            if (af) stA *= d[i];
            if (bf) stB *= d[i];
        }
        (D0, D1, D2, D3) = (d[0], d[1], d[2], d[3]);
        (A0, A1, A2, A3) = (sa[0], sa[1], sa[2], sa[3]);
        (B0, B1, B2, B3) = (sb[0], sb[1], sb[2], sb[3]);
    }

    /// <summary>Rows of the innermost axis: D0 * D1 * D2.</summary>
    public long Rows => D0 * D1 * D2;

    /// <summary>Offsets of operand a and b at the start of output row <paramref name="row"/>.</summary>
    public void RowOffsets(long row, out long aOffset, out long bOffset)
    {
        long i2 = row % D2, t = row / D2;
        long i1 = t % D1, i0 = t / D1;
        aOffset = i0 * A0 + i1 * A1 + i2 * A2;
        bOffset = i0 * B0 + i1 * B1 + i2 * B2;
    }
}
