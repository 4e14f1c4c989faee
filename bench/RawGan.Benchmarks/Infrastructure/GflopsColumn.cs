using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;

namespace RawGan.Benchmarks.Infrastructure;

/// <summary>
/// GFLOP/s = floating-point operations of one call / mean time of one call. The operation count
/// comes from the benchmark's <see cref="IFlopCounted"/> parameter (GEMM and convolution cases);
/// other benchmarks show "-".
/// </summary>
public sealed class GflopsColumn : IColumn
{
    public string Id => nameof(GflopsColumn);
    public string ColumnName => "GFLOP/s";
    public bool AlwaysShow => true;
    public ColumnCategory Category => ColumnCategory.Custom;
    public int PriorityInCategory => 0;
    public bool IsNumeric => true;
    public UnitType UnitType => UnitType.Dimensionless;
    public string Legend => "Billions of floating-point operations per second (a multiply-add is 2), from the mean time";

    private static double? Flops(BenchmarkCase benchmarkCase) =>
        benchmarkCase.Parameters.Items.Select(p => p.Value).OfType<IFlopCounted>().FirstOrDefault()?.Flops;

    public bool IsAvailable(Summary summary) => summary.BenchmarksCases.Any(b => Flops(b) != null);

    public bool IsDefault(Summary summary, BenchmarkCase benchmarkCase) => false;

    public string GetValue(Summary summary, BenchmarkCase benchmarkCase) => GetValue(summary, benchmarkCase, SummaryStyle.Default);

    public string GetValue(Summary summary, BenchmarkCase benchmarkCase, SummaryStyle style)
    {
        var flops = Flops(benchmarkCase);
        var stats = summary[benchmarkCase]?.ResultStatistics;
        if (flops == null || stats == null || stats.Mean <= 0) return "-";
        double gflops = flops.Value / stats.Mean;   // FLOP per ns = GFLOP/s
        return gflops.ToString(gflops >= 10 ? "F1" : "G3", System.Globalization.CultureInfo.InvariantCulture);
    }

    public override string ToString() => ColumnName;
}
