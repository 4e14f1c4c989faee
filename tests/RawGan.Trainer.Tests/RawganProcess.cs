using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text;

namespace RawGan.Trainer.Tests;

/// <summary>
/// The real `rawgan` executable running as a child process (<c>dotnet rawgan.dll ...</c>), with its
/// standard output and error collected line by line, so that a test can wait for a progress line
/// ("tick 3:", "checkpoint:") before it acts, send it a POSIX signal, or kill it.
/// </summary>
internal sealed partial class RawganProcess : IDisposable
{
    public const int SIGHUP = 1, SIGINT = 2, SIGQUIT = 3, SIGKILL = 9, SIGUSR1 = 10, SIGTERM = 15;

    private readonly Process _process;
    private readonly Stopwatch _clock = new();
    private readonly object _gate = new();
    private readonly List<string> _stdout = new(), _stderr = new();
    private bool _stdoutClosed, _stderrClosed;

    /// <param name="ranks">Above 1: started as `mpirun -np ranks` (Open MPI, on this machine).</param>
    public RawganProcess(string dll, string cacheDirectory, IEnumerable<string> args, IReadOnlyDictionary<string, string>? environment = null, int ranks = 1)
        : this(dll, cacheDirectory, args.Select(Encoding.UTF8.GetBytes).ToArray(), environment, ranks)
    {
    }

    /// <summary>
    /// Started with arguments given as bytes, which need not be valid UTF-8 (.NET's process API
    /// takes strings, so such arguments go through /bin/sh: <c>exec dotnet rawgan.dll "$(printf '\351')"</c>,
    /// every byte written in octal; the process that runs is still dotnet itself).
    /// </summary>
    /// <param name="workingFolder">Where the process starts (by bytes: its path need not be UTF-8 either); null for this process's.</param>
    public RawganProcess(string dll, string cacheDirectory, byte[][] args, IReadOnlyDictionary<string, string>? environment = null, int ranks = 1, byte[]? workingFolder = null)
    {
        string dotnet = Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet";
        bool bytes = workingFolder != null || args.Any(a => !System.Text.Unicode.Utf8.IsValid(a));
        var launcher = new List<string>();
        if (ranks > 1)
        {
            // A session folder of the job's own, under the test run's folder, instead of the one
            // /tmp/ompi.HOST.UID that every mpirun of the user shares: jobs started and ending
            // together there race on making and removing it (open-mpi/ompi#8510), and other
            // engineers' and CI's jobs on the machine are no part of this test.
            string session = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(cacheDirectory))!, "mpi-" + Guid.NewGuid().ToString("N")[..12]);
            Directory.CreateDirectory(session);
            // --stdin none: no rank reads it, and mpirun then never touches the test host's.
            launcher.AddRange(["mpirun", "--allow-run-as-root", "--oversubscribe", "--mca", "orte_tmpdir_base", session, "--stdin", "none", "-np", ranks.ToString()]);
        }
        launcher.AddRange([dotnet, dll]);
        var start = new ProcessStartInfo(bytes ? "/bin/sh" : launcher[0])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        if (bytes)
        {
            static string Quoted(string text) => "'" + text.Replace("'", "'\\''") + "'";
            static string Printed(byte[] argument) => "\"$(printf '" + string.Concat(argument.Select(b => $"\\{Convert.ToString(b, 8).PadLeft(3, '0')}")) + "')\"";
            start.ArgumentList.Add("-c");
            start.ArgumentList.Add((workingFolder != null ? $"cd {Printed(workingFolder)} && " : "") + "exec " + string.Join(' ', launcher.Select(Quoted).Concat(args.Select(Printed))));
        }
        else
        {
            foreach (var a in launcher.Skip(1)) start.ArgumentList.Add(a);
            foreach (var a in args) start.ArgumentList.Add(Encoding.UTF8.GetString(a));
        }
        start.Environment["RAWGAN_CACHE_DIR"] = cacheDirectory;
        start.Environment.Remove("TERM");   // plain log lines, as in CI
        foreach (var (name, value) in environment ?? new Dictionary<string, string>()) start.Environment[name] = value;
        Arguments = string.Join(' ', args.Select(a => RawGan.ProGan.IO.NativePath.Show(a)));
        _process = new Process { StartInfo = start };
        _process.OutputDataReceived += (_, e) => Receive(_stdout, e.Data, stdout: true);
        _process.ErrorDataReceived += (_, e) => Receive(_stderr, e.Data, stdout: false);
        _process.Start();
        _clock.Start();
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();
    }

    public string Arguments { get; }

    /// <summary>Seconds from the start to the end (or until now).</summary>
    public double Seconds => _clock.Elapsed.TotalSeconds;
    public int Id => _process.Id;
    public bool HasExited => _process.HasExited;

    private void Receive(List<string> lines, string? line, bool stdout)
    {
        lock (_gate)
        {
            if (line != null) lines.Add(line);
            else if (stdout) _stdoutClosed = true;
            else _stderrClosed = true;
            Monitor.PulseAll(_gate);
        }
    }

    public string Stdout { get { lock (_gate) return string.Join('\n', _stdout); } }
    public string Stderr { get { lock (_gate) return string.Join('\n', _stderr); } }
    public string[] StdoutLines { get { lock (_gate) return _stdout.ToArray(); } }

    /// <summary>Waits for a line of standard output that <paramref name="match"/> accepts (counting
    /// lines already printed); null if the output ends or the time runs out first.</summary>
    public string? WaitForLine(Func<string, bool> match, TimeSpan timeout, int skip = 0)
    {
        var deadline = DateTime.UtcNow + timeout;
        int next = 0;
        lock (_gate)
        {
            while (true)
            {
                for (; next < _stdout.Count; next++)
                    if (match(_stdout[next]) && skip-- <= 0) return _stdout[next];
                if (_stdoutClosed) return null;
                var left = deadline - DateTime.UtcNow;
                if (left <= TimeSpan.Zero) return null;
                Monitor.Wait(_gate, left);
            }
        }
    }

    [LibraryImport("libc", SetLastError = true)]
    private static partial int kill(int pid, int signal);

    /// <summary>Sends a POSIX signal (SIGINT, SIGTERM, SIGKILL) to the child.</summary>
    public void Signal(int signal)
    {
        if (kill(_process.Id, signal) != 0)
            throw new InvalidOperationException($"kill({_process.Id}, {signal}) failed: errno {Marshal.GetLastPInvokeError()}");
    }

    /// <summary>True if the child ignores <paramref name="signal"/> (Linux /proc): a process started
    /// from a background job of a non-interactive shell inherits SIGINT ignored, as Unix prescribes.</summary>
    public bool Ignores(int signal)
    {
        string status = $"/proc/{_process.Id}/status";
        if (!File.Exists(status)) return false;
        string? line = File.ReadLines(status).FirstOrDefault(l => l.StartsWith("SigIgn:"));
        return line != null && ((Convert.ToUInt64(line["SigIgn:".Length..].Trim(), 16) >> (signal - 1)) & 1) == 1;
    }

    /// <summary>Waits for the child to end and for its output to be read to the end; on timeout the
    /// child is killed and the test fails with what it printed.</summary>
    public int WaitForExit(TimeSpan timeout)
    {
        if (!_process.WaitForExit(timeout))
        {
            _process.Kill(entireProcessTree: true);
            _process.WaitForExit();
            throw new TimeoutException($"rawgan {Arguments} did not end within {timeout.TotalSeconds:F0} s.\nstdout:\n{Stdout}\nstderr:\n{Stderr}");
        }
        _process.WaitForExit();   // drains the redirected output
        _clock.Stop();
        lock (_gate)
        {
            var until = DateTime.UtcNow.AddSeconds(10);
            while (!(_stdoutClosed && _stderrClosed) && DateTime.UtcNow < until) Monitor.Wait(_gate, TimeSpan.FromSeconds(1));
        }
        return _process.ExitCode;
    }

    public string Describe() => $"rawgan {Arguments}\n--- stdout:\n{Stdout}\n--- stderr:\n{Stderr}";

    public void Dispose()
    {
        try
        {
            if (!_process.HasExited)
            {
                _process.Kill(entireProcessTree: true);
                _process.WaitForExit();
            }
        }
        catch (InvalidOperationException) { }
        _process.Dispose();
    }
}

/// <summary>What a finished invocation printed and returned.</summary>
internal sealed record RawganResult(string Arguments, int ExitCode, string Stdout, string Stderr, double Seconds = double.NaN)
{
    public override string ToString() =>
        $"rawgan {Arguments} -> exit {ExitCode}{(double.IsNaN(Seconds) ? "" : $" after {Seconds:F1} s")}\n" +
        $"--- stdout:{(Stdout.Length == 0 ? " (nothing)" : "\n" + Stdout)}\n--- stderr:{(Stderr.Length == 0 ? " (nothing)" : "\n" + Stderr)}";
}
