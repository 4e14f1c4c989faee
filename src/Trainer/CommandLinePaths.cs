using System.Text;
using System.Text.Unicode;
using RawGan.ProGan.IO;

namespace RawGan.Trainer;

/// <summary>
/// Paths typed on the command line, as the bytes that were typed. On Linux a path is bytes, and
/// <c>--data $'caf\xE9'</c> (a Latin-1 name) is not valid UTF-8: .NET decodes the arguments as
/// UTF-8 and puts U+FFFD in place of such bytes, so the string it hands to <c>Main</c> names no
/// file. When an argument holds U+FFFD, the exact bytes of the arguments are read back from
/// <c>/proc/self/cmdline</c> (the arguments separated by NULs; `dotnet rawgan.dll` and `dotnet exec`
/// put their own arguments first, so the last ones are matched with <c>Main</c>'s), or from the
/// parent's when it is `dotnet run` (which starts the program with the arguments it decoded
/// itself), and the path goes on as a <see cref="NativePath"/>: handed to .NET's file
/// APIs through <see cref="NativePath.Usable"/>, saved in checkpoints as
/// <see cref="NativePath.Persisted"/>, shown in messages with those bytes escaped
/// (<c>caf\xE9</c>, see <see cref="Install"/>).
/// </summary>
internal static partial class CommandLinePaths
{
    private static byte[][]? _arguments;

    /// <summary>Whether an argument's bytes are not valid UTF-8 (then messages are rewritten, see <see cref="Install"/>, as they are in a working folder whose path is not).</summary>
    public static bool AnyNotUtf8 { get; private set; }

    /// <summary>
    /// Reads back the bytes of <paramref name="args"/> when one of them holds U+FFFD (on Linux),
    /// and when one is not UTF-8 (or the working folder's path is not, see <see cref="BytesOf"/>)
    /// writes standard output and error through <see cref="NativePath.ShowPaths"/>, so that a path
    /// reached through <c>/proc/self/fd</c> is shown as the path it is.
    /// </summary>
    public static void Install(string[] args)
    {
        if (!OperatingSystem.IsLinux()) return;
        // `dotnet run` decodes the arguments itself and starts the program with them re-encoded,
        // U+FFFD and all: then the bytes are in its own command line, the parent's.
        int pid = Environment.ProcessId;
        for (int level = 0; level < 3 && pid > 1 && args.Any(a => a.Contains('\uFFFD')); level++, pid = ParentOf(pid))
        {
            if (ArgumentsOf(pid, args) is not { } found) continue;
            _arguments ??= found;
            if (!found.Any(a => !Utf8.IsValid(a))) continue;
            _arguments = found;
            AnyNotUtf8 = true;
            break;
        }
        if (!AnyNotUtf8 && !BadWorkingFolder.Value) return;
        Console.SetOut(TextWriter.Synchronized(new ShowingWriter(Console.Out)));
        Console.SetError(TextWriter.Synchronized(new ShowingWriter(Console.Error)));
    }

    /// <summary>The last <paramref name="args"/>.Length arguments of process <paramref name="pid"/>
    /// as bytes, if they are <paramref name="args"/> (.NET's decoding of them); else null.</summary>
    private static byte[][]? ArgumentsOf(int pid, string[] args)
    {
        byte[] all;
        try
        {
            all = File.ReadAllBytes($"/proc/{pid}/cmdline");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
        var parts = new List<byte[]>();
        int start = 0;
        for (int i = 0; i < all.Length; i++)
        {
            if (all[i] != 0) continue;
            parts.Add(all[start..i]);
            start = i + 1;
        }
        if (start < all.Length) parts.Add(all[start..]);
        if (parts.Count < args.Length) return null;
        var tail = parts.Skip(parts.Count - args.Length).ToArray();
        for (int i = 0; i < args.Length; i++)
            if (!SameText(Encoding.UTF8.GetString(tail[i]), args[i])) return null;
        return tail;
    }

    private static int ParentOf(int pid)
    {
        try
        {
            string stat = File.ReadAllText($"/proc/{pid}/stat");
            // "pid (name) state ppid ...": the name may hold spaces and parentheses.
            var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
            return fields.Length > 1 && int.TryParse(fields[1], out int parent) ? parent : 0;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return 0;
        }
    }

    /// <summary>Two decodings of the same bytes: .NET's and ours may put one U+FFFD or several for one bad sequence.</summary>
    private static bool SameText(string a, string b) =>
        a == b || a.Contains('\uFFFD') && b.Contains('\uFFFD') && Replacements().Replace(a, "\uFFFD") == Replacements().Replace(b, "\uFFFD");

    [System.Text.RegularExpressions.GeneratedRegex("\uFFFD+")]
    private static partial System.Text.RegularExpressions.Regex Replacements();

    /// <summary>
    /// The bytes <paramref name="option"/>'s <paramref name="value"/> was typed as, when they are
    /// not valid UTF-8; null when the value is the text it was typed as (the usual case: no U+FFFD
    /// in it, or a U+FFFD typed as such).
    /// </summary>
    private static byte[]? BytesOf(string option, string value)
    {
        var bytes = TypedBytes(option, value);
        // .NET resolves a relative path against Environment.CurrentDirectory, which has U+FFFD in
        // place of the working folder's bytes that are not UTF-8: it would name another folder
        // (which .NET would then make). Such a path goes by its bytes, made absolute by getcwd(3)'s.
        if (bytes == null && !Path.IsPathRooted(value) && BadWorkingFolder.Value) return Encoding.UTF8.GetBytes(value);
        return bytes;
    }

    private static readonly Lazy<bool> BadWorkingFolder = new(() =>
        OperatingSystem.IsLinux() && Environment.CurrentDirectory.Contains('\uFFFD') && !NativePath.WorkingFolder().IsUtf8);

    private static byte[]? TypedBytes(string option, string value)
    {
        // Elsewhere the system's arguments are text (Windows), or not read back: as given.
        if (!value.Contains('\uFFFD') || !OperatingSystem.IsLinux()) return null;
        if (_arguments == null)
            throw new UserError($"{option}: '{value}' is not valid UTF-8 (U+FFFD stands for bytes that are not), and its bytes could not be read back " +
                                "from /proc/self/cmdline; rename it (or make a symbolic link to it) in UTF-8");
        var found = new List<byte[]>();
        foreach (var argument in _arguments)
        {
            if (SameText(Encoding.UTF8.GetString(argument), value)) found.Add(argument);
            else if (argument.Length > 2 && argument[0] == (byte)'-' && argument.AsSpan().IndexOfAny((byte)'=', (byte)':') is int separator and > 0
                     && SameText(Encoding.UTF8.GetString(argument.AsSpan(separator + 1)), value))
                found.Add(argument[(separator + 1)..]);   // --option=VALUE, --option:VALUE
        }
        var distinct = found.DistinctBy(Convert.ToHexString).ToArray();
        if (distinct.Length > 1)
            throw new UserError($"{option}: '{string.Join("' and '", distinct.Select(b => NativePath.Show(b)))}' are different paths that .NET reads as the same text; " +
                                $"RawGan cannot tell which one {option} is: give each of them once, or rename one");
        if (distinct.Length == 0)
            throw new UserError($"{option}: '{value}' is not valid UTF-8, and no argument in /proc/self/cmdline matches it; rename it (or make a symbolic link to it) in UTF-8");
        return Utf8.IsValid(distinct[0]) ? null : distinct[0];
    }

    /// <summary>The path an option names, by its bytes as typed.</summary>
    public static NativePath Native(string option, string value) =>
        BytesOf(option, value) is { } bytes ? NativePath.FromBytes(bytes) : NativePath.Of(value);

    /// <summary>An existing file or folder named by <paramref name="option"/>: a path .NET can open. A
    /// path that is not valid UTF-8 and does not exist is refused as such.</summary>
    public static string Existing(string option, string value)
    {
        if (BytesOf(option, value) is not { } bytes) return value;
        var path = NativePath.FromBytes(bytes);
        return path.Usable() ?? throw new UserError($"{option}: {path.Full().Shown}: no such file or folder");
    }

    /// <summary>A folder <paramref name="option"/> names to write into, made (with the folders above
    /// it) when its path is not valid UTF-8; a UTF-8 path is returned as it is, for the caller to make.</summary>
    public static string Folder(string option, string value) =>
        BytesOf(option, value) is { } bytes ? NativePath.FromBytes(bytes).Usable(createFolders: true)! : value;

    /// <summary>
    /// A file <paramref name="option"/> names to write: any folder above it may have a name that
    /// is not valid UTF-8 (it is made when missing), the file's own name must be UTF-8. RawGan
    /// writes a file under a temporary name beside it and renames it into place by name, through
    /// .NET, whose names are strings: refused with a message otherwise.
    /// </summary>
    public static string NewFile(string option, string value)
    {
        if (BytesOf(option, value) is not { } bytes) return value;
        var path = NativePath.FromBytes(bytes).Full();
        var name = path.NameBytes;
        if (!Utf8.IsValid(name))
            throw new UserError($"{option}: the file name '{NativePath.Show(name)}' is not valid UTF-8: RawGan writes a file under a temporary name beside it and renames it " +
                                "into place, by name, and .NET names files in UTF-8 only; choose a UTF-8 name (the folders above it may have any name)");
        return Path.Join(path.Parent.Usable(createFolders: true), Encoding.UTF8.GetString(name));
    }

    /// <summary>
    /// <c>--data</c> as typed: a folder (or the DIR of <c>mnist:DIR</c>) whose path is not valid
    /// UTF-8 becomes its full path's <see cref="NativePath.Persisted"/> text (<c>bytes:/data/caf\xE9</c>),
    /// which a checkpoint keeps and <see cref="ProGan.Data.TrainingData.Open"/> reads; anything else is returned as it is.
    /// </summary>
    public static string DataSpec(string option, string value)
    {
        if (value is "shapes" or "fashion-mnist" || BytesOf(option, value) is not { } bytes) return value;
        foreach (var prefix in new[] { "fashion-mnist:", "mnist:" })
            if (bytes.AsSpan().StartsWith(Encoding.ASCII.GetBytes(prefix)))
                return prefix + NativePath.FromBytes(bytes.AsSpan(prefix.Length)).Full().Persisted;
        return NativePath.FromBytes(bytes).Full().Persisted;
    }

    /// <summary>Standard output or error with every <c>/proc/self/fd/N</c> of <see cref="NativePath.Usable"/> shown as its path.</summary>
    private sealed class ShowingWriter(TextWriter inner) : TextWriter
    {
        public override Encoding Encoding => inner.Encoding;
        public override void Write(char value) => inner.Write(value);
        public override void Write(string? value) => inner.Write(value == null ? null : NativePath.ShowPaths(value));
        public override void Write(char[] buffer, int index, int count) => Write(new string(buffer, index, count));
        public override void WriteLine(string? value) => inner.WriteLine(value == null ? null : NativePath.ShowPaths(value));
        public override void Flush() => inner.Flush();
    }
}
