using System.CommandLine;
using RawGan.Engine.Backends.Cuda;
using RawGan.ProGan.IO;

namespace RawGan.Trainer;

/// <summary>
/// The RawGan command line: `dotnet run --project src/Trainer -- &lt;command&gt;`.
/// With no command it trains a small ProGAN on the built-in shapes up to 32x32.
/// </summary>
public static partial class Program
{
    public static int Main(string[] args)
    {
        var root = new RootCommand("RawGan: a ProGAN written by hand on a CUDA tensor engine written from scratch in C#.\n" +
                                   "With no command, trains a small ProGAN on built-in shapes up to 32x32 (a few minutes on a CPU).");
        root.Add(TrainCommand.Create());
        root.Add(GenerateCommand.Create());
        root.Add(InterpolateCommand.Create());
        root.Add(EvaluateCommand.Create());
        root.Add(BenchCommand.Create());
        root.Add(InfoCommand.Create());
        root.Add(CheckCommand.Create());
        root.SetAction(parse => Guard(() => TrainCommand.RunDefault()));

        var result = root.Parse(args);
        if (result.Errors.Count > 0)
        {
            // One clear line for a user mistake; --help shows the rest.
            string command = result.CommandResult.Command == root ? "" : " " + result.CommandResult.Command.Name;
            Console.Error.WriteLine($"rawgan: {OneLine(ParseErrorText(result.Errors[0].Message))} (see 'rawgan{command} --help')");
            return 2;
        }
        var config = new InvocationConfiguration { ProcessTerminationTimeout = null, EnableDefaultExceptionHandler = false };
        return result.Invoke(config);
    }

    /// <summary>Runs a command, turning the mistakes a user can make into one line and a non-zero
    /// exit. Anything else is a bug in RawGan and keeps its stack trace.</summary>
    public static int Guard(Func<int> action)
    {
        try
        {
            return action();
        }
        catch (Exception e) when (IsUserError(e))
        {
            Console.Out.Flush();
            Console.Error.WriteLine($"rawgan: {OneLine(e)}");
            return e is CudaUnavailableException ? 3 : 1;
        }
    }

    /// <summary>A message as one line: an ArgumentException's "(Parameter 'x')" dropped, detail lines
    /// (a list of skipped files, of differing settings) joined with "; ".</summary>
    internal static string OneLine(Exception e) =>
        OneLine(e is ArgumentException { ParamName: string p } ? e.Message.Replace($" (Parameter '{p}')", "") : e.Message);

    internal static string OneLine(string message)
    {
        var parts = message.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        if (parts.Length == 0) return message.Trim();
        var line = new System.Text.StringBuilder(parts[0]);
        for (int i = 1; i < parts.Length; i++) line.Append(parts[i - 1].EndsWith(':') ? " " : "; ").Append(parts[i]);
        return line.ToString();
    }

    /// <summary>System.CommandLine's parse errors name .NET types; a user reads what to type instead.</summary>
    private static string ParseErrorText(string message) => ExpectedType().Replace(message, m => m.Groups[1].Value switch
    {
        var t when t.Contains("UInt") => "as expected: a whole number, 0 or more",
        var t when t.Contains("Int") => "as expected: a whole number",
        var t when t.Contains("Double") || t.Contains("Single") => "as expected: a number",
        var t when t.Contains("Boolean") => "as expected: true or false",
        _ => m.Value,
    });

    [System.Text.RegularExpressions.GeneratedRegex(@"as expected type '([^']+)'")]
    private static partial System.Text.RegularExpressions.Regex ExpectedType();

    private static bool IsUserError(Exception e) => e is ArgumentException or InvalidFileException or CudaUnavailableException
        or FileNotFoundException or DirectoryNotFoundException or UnauthorizedAccessException or IOException or KernelCompileException or UserError
        or Engine.Distributed.MpiException;
}

/// <summary>A mistake in what the user asked for; its message is the whole story.</summary>
public sealed class UserError(string message) : Exception(message);
