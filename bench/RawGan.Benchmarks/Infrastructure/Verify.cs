namespace RawGan.Benchmarks.Infrastructure;

/// <summary>A benchmark whose output disagrees with the naive reference: nothing is timed.</summary>
public sealed class MismatchException(string message) : Exception(message);

/// <summary>
/// Output checks run in every [GlobalSetup] before BenchmarkDotNet times anything (the kernel-lab
/// rule: a fast wrong kernel is not a result). The error measure is max |actual - expected|
/// relative to max |expected|, so it does not depend on the scale of the data; float32 sums of a
/// few thousand terms in a different order stay well under the default 1e-4.
/// </summary>
public static class Verify
{
    public const double DefaultTolerance = 1e-4;

    /// <summary>For kernels that round their inputs to TF32 (10 mantissa bits: each product off
    /// by up to 2^-10 of itself; typically a few 1e-4 of max |expected| on these sizes).</summary>
    public const double Tf32Tolerance = 4e-3;

    public static void Close(string what, ReadOnlySpan<float> expected, ReadOnlySpan<float> actual, double tolerance = DefaultTolerance)
    {
        if (expected.Length != actual.Length)
            throw new MismatchException($"{what}: {actual.Length} values, the reference has {expected.Length}");
        double scale = 0, worst = 0;
        int worstAt = -1;
        for (int i = 0; i < expected.Length; i++)
        {
            scale = Math.Max(scale, Math.Abs((double)expected[i]));
            double d = Math.Abs((double)actual[i] - expected[i]);
            if (!(d <= worst))          // also catches NaN
            {
                worst = double.IsNaN(d) ? double.PositiveInfinity : d;
                worstAt = i;
            }
        }
        double relative = worst / Math.Max(scale, 1e-30);
        if (!(relative <= tolerance))
            throw new MismatchException(FormattableString.Invariant(
                $"{what}: differs from the naive reference by {relative:G3} of its largest value (tolerance {tolerance:G3}); worst at [{worstAt}]: {actual[worstAt]} vs {expected[worstAt]}"));
        Checked++;
    }

    /// <summary>How many comparisons passed in this process (Program's --check mode prints it).</summary>
    public static int Checked { get; private set; }
}
