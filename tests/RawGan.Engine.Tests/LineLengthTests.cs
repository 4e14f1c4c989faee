using RawGan.Engine.Backends.Cuda;

namespace RawGan.Engine.Tests;

/// <summary>
/// The kernels are what students read first: every line of kernels/ (the .cu files, their
/// headers and the emulator's runtime) fits in 160 columns, as .editorconfig says.
/// </summary>
public class LineLengthTests
{
    private const int MaxColumns = 160;

    [Fact]
    public void EveryKernelLineFitsOnAScreen()
    {
        var files = KernelLibrary.Sources.Select(s => (s.Name, s.Text))
            .Concat(KernelLibrary.Headers.Select(h => (h.Key, h.Value)))
            .Concat(KernelLibrary.EmulatorFiles.Select(e => (e.Key, e.Value)));
        var tooLong = new List<string>();
        foreach (var (name, text) in files)
        {
            var lines = text.Split('\n');
            for (int i = 0; i < lines.Length; i++)
                if (lines[i].TrimEnd('\r').Length > MaxColumns) tooLong.Add($"kernels/{name}:{i + 1}: {lines[i].Length} columns");
        }
        Assert.True(tooLong.Count == 0, $"lines over {MaxColumns} columns:\n" + string.Join("\n", tooLong));
    }
}
