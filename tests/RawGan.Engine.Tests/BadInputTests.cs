using RawGan.Engine.Autograd;
using RawGan.Engine.Backends.Cpu;

namespace RawGan.Engine.Tests;

/// <summary>Mistakes get an exception that names the op and the shapes involved.</summary>
public class BadInputTests
{
    private static Tensor Z(params int[] shape) => Tensor.Zeros(CpuBackend.Shared, new Shape(shape));

    private static void Fails<TException>(Action act, params string[] mustMention) where TException : Exception
    {
        using var scope = new Scope();
        var ex = Assert.Throws<TException>(act);
        foreach (var m in mustMention) Assert.Contains(m, ex.Message);
    }

    [Fact]
    public void MismatchedShapesNameTheOpAndBothShapes()
    {
        Fails<ArgumentException>(() => Ops.Add(Z(2, 3), Z(3, 2)), "Add", "[2, 3]", "[3, 2]");
        Fails<ArgumentException>(() => Ops.Mul(Z(4, 3, 8, 8), Z(1, 2, 1, 1)), "Mul", "[4, 3, 8, 8]", "[1, 2, 1, 1]");
        Fails<ArgumentException>(() => Ops.MatMul(Z(2, 3), Z(4, 5)), "MatMul", "[2, 3]", "[4, 5]");
        Fails<ArgumentException>(() => Ops.Conv2d(Z(1, 3, 4, 4), Z(8, 4, 3, 3)), "Conv2d", "[1, 3, 4, 4]", "[8, 4, 3, 3]");
        Fails<ArgumentException>(() => Ops.Conv2d(Z(1, 3, 4, 4), Z(8, 3, 2, 2)), "Conv2d", "odd", "[8, 3, 2, 2]");
        Fails<ArgumentException>(() => Ops.Concat(Z(2, 3, 4, 4), Z(2, 1, 4, 5)), "Concat", "[2, 1, 4, 5]", "[2, 3, 4, 4]");
        Fails<ArgumentException>(() => Ops.Lerp(Z(2, 3), Z(2, 4), 0.5f), "Lerp", "[2, 3]", "[2, 4]");
        Fails<ArgumentException>(() => Ops.Reshape(Z(2, 3), new Shape(5)), "Reshape", "[2, 3]", "[5]");
        Fails<ArgumentException>(() => Ops.AvgPool2x(Z(1, 1, 3, 4)), "AvgPool2x", "[1, 1, 3, 4]");
        Fails<ArgumentException>(() => Ops.PixelNorm(Z(5)), "PixelNorm", "[5]");
        Fails<ArgumentException>(() => Ops.Sum(Z(2, 3), [2]), "Sum", "axis 2", "[2, 3]");
    }

    [Fact]
    public void NegativeDimensionsAreRejected()
    {
        var ex = Assert.Throws<ArgumentException>(() => new Shape(2, -3, 4));
        Assert.Contains("-3", ex.Message);
        Assert.Contains("axis 1", ex.Message);
        Assert.Throws<ArgumentException>(() => new Shape(1, 2, 3, 4, 5));
    }

    [Fact]
    public void BatchNotDivisibleByTheMinibatchGroupIsNamed()
    {
        Fails<ArgumentException>(() => Ops.MinibatchStdDev(Z(6, 3, 4, 4)), "MinibatchStdDev", "batch 6", "group size 4", "[6, 3, 4, 4]");
        Fails<ArgumentException>(() => Ops.MinibatchStdDev(Z(4, 3, 4, 4), 0), "MinibatchStdDev", "group size");
    }

    [Fact]
    public void BackwardOfANonScalarOrUntrackedLossIsExplained()
    {
        Fails<ArgumentException>(() => Tape.Backward(Z(2, 2)), "Backward", "[2, 2]");
        Fails<InvalidOperationException>(() => Tape.Backward(Z(1)), "Backward", "does not depend");
        Fails<ArgumentException>(() => Tape.Grad([Z(2)], [Z(2)]), "Grad", "[2]");
    }

    [Fact]
    public void TensorsFromDifferentBackendsDoNotMix()
    {
        using var other = new CpuBackend();
        using var scope = new Scope();
        var a = Tensor.Zeros(other, new Shape(2));
        Fails<ArgumentException>(() => Ops.Add(a, Z(2)), "Add");
    }

    [Fact]
    public void FromArrayChecksTheLength()
    {
        Fails<ArgumentException>(() => Tensor.FromArray(CpuBackend.Shared, [1, 2, 3], new Shape(2, 2)), "3 values", "[2, 2]");
    }
}
