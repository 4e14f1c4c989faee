using System.Runtime.CompilerServices;

namespace RawGan.Tests;

/// <summary>The tests' measured 3x3 methods go to a file of their own, not to this machine's cache (compiled into
/// RawGan.ProGan.Tests too).</summary>
internal static class TuningFileOfTheirOwn
{
    [ModuleInitializer]
    internal static void Use()
    {
        string file = Path.Combine(Path.GetTempPath(), $"rawgan-tests-{Environment.ProcessId}-cpu-convolutions.tsv");
        Environment.SetEnvironmentVariable("RAWGAN_CONV_TUNING_FILE", file);
        AppDomain.CurrentDomain.ProcessExit += (_, _) => File.Delete(file);
    }
}
