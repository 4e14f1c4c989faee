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
    /// <summary>The exit code of an internal error (BSD's EX_SOFTWARE), distinct from a user's mistake (1, 2, 3) and a stopped run (4, 130).</summary>
    public const int InternalErrorExit = 70;

    /// <summary>The run folder of this invocation once it is known: where an internal error's log goes.</summary>
    internal static string? RunFolder { get; set; }

    private static string[] _args = [];

    public static int Main(string[] args)
    {
        _args = args;
        // Paths typed as bytes that are not valid UTF-8: read back, and shown with those bytes escaped.
        CommandLinePaths.Install(args);
        // Exceptions on other threads would end the process with a runtime dump: one line and a log instead.
        AppDomain.CurrentDomain.UnhandledException += (_, e) =>
        {
            InternalError(e.ExceptionObject as Exception ?? new InvalidOperationException(e.ExceptionObject?.ToString()));
            Environment.Exit(InternalErrorExit);
        };
        try
        {
            return Dispatch(args);
        }
        catch (Exception e) when (IsUserError(e))
        {
            Console.Out.Flush();
            Console.Error.WriteLine($"rawgan: {OneLine(e)}");
            return e is CudaUnavailableException ? 3 : 1;
        }
        catch (Exception e)
        {
            return InternalError(e);
        }
    }

    /// <summary>
    /// The last resort, for a bug in RawGan (every mistake a user can make has its own message):
    /// one line on stderr, the stack trace in a log file in the run folder when there is one (else
    /// the temporary folder), exit code <see cref="InternalErrorExit"/>.
    /// </summary>
    private static int InternalError(Exception e)
    {
        string? log = null;
        foreach (var folder in new[] { RunFolder, Path.GetTempPath() })
        {
            if (folder == null || !Directory.Exists(folder)) continue;
            try
            {
                string path = Path.Combine(folder, $"rawgan-internal-error-{DateTime.Now:yyyyMMdd-HHmmss}-{Environment.ProcessId}.log");
                File.WriteAllText(path, NativePath.ShowPaths($"rawgan {string.Join(' ', _args)}\n{DateTimeOffset.Now:O}, {System.Runtime.InteropServices.RuntimeInformation.OSDescription}, " +
                                                             $".NET {Environment.Version}, {Environment.ProcessorCount} cores\n\n{e}\n"));
                log = path;
                break;
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException) { }
        }
        try
        {
            Console.Out.Flush();
        }
        catch (IOException) { }
        Console.Error.WriteLine($"rawgan: internal error: {OneLine(e.Message)} (a bug in RawGan; " +
                                (log != null ? $"the details are in {log}; please attach it to a bug report)" : "no log could be written; the details follow)"));
        if (log == null) Console.Error.WriteLine(e);
        return InternalErrorExit;
    }

    /// <summary>Fails on purpose at <paramref name="point"/> when RAWGAN_FAULT names it: how the tests
    /// reach the last-resort handler, which no input reaches by design.</summary>
    internal static void InjectFault(string point)
    {
        if (Environment.GetEnvironmentVariable("RAWGAN_FAULT") == point)
            throw new InvalidOperationException($"injected fault at {point} (RAWGAN_FAULT={point})");
    }

    private static int Dispatch(string[] args)
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
