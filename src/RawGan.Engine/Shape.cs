using System.Runtime.CompilerServices;

namespace RawGan.Engine;

/// <summary>
/// The dimensions of a tensor: rank 0 (a scalar) to rank 4 (NCHW), stored inline so that making
/// a shape never touches the heap. Row-major: the last dimension is contiguous.
/// </summary>
public readonly struct Shape : IEquatable<Shape>
{
    /// <summary>Every tensor in RawGan has at most four dimensions (N, C, H, W).</summary>
    public const int MaxRank = 4;

    private readonly Dims4 _dims;

    /// <summary>Number of dimensions (0 for a scalar).</summary>
    public int Rank { get; }

    [InlineArray(MaxRank)]
    private struct Dims4
    {
        private int _element0;
    }

    public Shape(params ReadOnlySpan<int> dims)
    {
        if (dims.Length > MaxRank)
            throw new ArgumentException($"a shape has at most {MaxRank} dimensions, got {dims.Length}: [{string.Join(", ", dims.ToArray())}]");
        for (int i = 0; i < dims.Length; i++)
        {
            if (dims[i] < 0)
                throw new ArgumentException($"negative dimension {dims[i]} at axis {i} of shape [{string.Join(", ", dims.ToArray())}]");
        }
        Rank = dims.Length;
        for (int i = 0; i < dims.Length; i++) _dims[i] = dims[i];
    }

    public int this[int axis]
    {
        get
        {
            if ((uint)axis >= (uint)Rank)
                throw new ArgumentOutOfRangeException(nameof(axis), $"axis {axis} is outside shape {this}");
            return _dims[axis];
        }
    }

    /// <summary>Number of elements: the product of the dimensions (1 for a scalar).</summary>
    public long Length
    {
        get
        {
            long n = 1;
            for (int i = 0; i < Rank; i++) n *= _dims[i];
            return n;
        }
    }

    /// <summary>The dimensions right-aligned into four slots, padded with 1 on the left:
    /// [C] becomes [1, 1, 1, C]. Kernels index every tensor through this form.</summary>
    /// <summary>The four right-aligned dimensions a kernel takes (<see cref="As4D"/>).</summary>
    public Backends.Dims4 ToDims4()
    {
        var (a, b, c, d) = As4D();
        return new Backends.Dims4(a, b, c, d);
    }

    public (int D0, int D1, int D2, int D3) As4D()
    {
        Span<int> d = [1, 1, 1, 1];
        for (int i = 0; i < Rank; i++) d[MaxRank - Rank + i] = _dims[i];
        return (d[0], d[1], d[2], d[3]);
    }

    public int[] ToArray()
    {
        var a = new int[Rank];
        for (int i = 0; i < Rank; i++) a[i] = _dims[i];
        return a;
    }

    public bool Equals(Shape other)
    {
        if (Rank != other.Rank) return false;
        for (int i = 0; i < Rank; i++)
            if (_dims[i] != other._dims[i]) return false;
        return true;
    }

    public override bool Equals(object? obj) => obj is Shape s && Equals(s);

    public override int GetHashCode()
    {
        var h = new HashCode();
        h.Add(Rank);
        for (int i = 0; i < Rank; i++) h.Add(_dims[i]);
        return h.ToHashCode();
    }

    public static bool operator ==(Shape a, Shape b) => a.Equals(b);
    public static bool operator !=(Shape a, Shape b) => !a.Equals(b);

    public static implicit operator Shape(int[] dims) => new(dims);

    public override string ToString()
    {
        var parts = new string[Rank];
        for (int i = 0; i < Rank; i++) parts[i] = _dims[i].ToString();
        return "[" + string.Join(", ", parts) + "]";
    }
}
