using RawGan.Engine.Backends;
using RawGan.Engine.Backends.Cpu;

namespace RawGan.Engine.Tests;

/// <summary>
/// The backends every engine test runs on. Each test takes the backend's name as a theory
/// argument, so a failure says which backend failed.
/// </summary>
public static class TestBackends
{
    public static TheoryData<string> All
    {
        get
        {
            var data = new TheoryData<string>();
            foreach (var name in Names) data.Add(name);
            return data;
        }
    }

    public static IEnumerable<string> Names
    {
        get
        {
            yield return "cpu";
        }
    }

    public static IBackend Get(string name) => name switch
    {
        "cpu" => CpuBackend.Shared,
        _ => throw new ArgumentException($"unknown test backend '{name}'"),
    };
}
