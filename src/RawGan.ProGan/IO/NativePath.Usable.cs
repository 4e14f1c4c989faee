using System.Runtime.InteropServices;
using System.Text;
using System.Text.Unicode;

namespace RawGan.ProGan.IO;

/// <summary>
/// Paths whose bytes are not valid UTF-8 beyond a folder's listing: a path typed on the command
/// line (<c>--data $'caf\xE9'</c>), kept as its bytes, saved in a checkpoint, and handed to .NET's
/// own file APIs, which take strings.
///
/// <para>A .NET string cannot hold such bytes, so <see cref="Usable"/> opens the deepest folder
/// (or file) of the path whose name is not valid UTF-8 by its bytes (<c>open(2)</c> with
/// <c>O_PATH</c>, which reads nothing) and names it <c>/proc/self/fd/N</c>: the kernel resolves
/// that name to the very folder it has open, so <c>/proc/self/fd/N/run/state.json</c> is a path
/// .NET can create, open and rename under like any other, for as long as the process lives. The
/// descriptor stays open until the process ends. <see cref="Of(string)"/> maps such a name back to
/// the bytes it stands for, so folder scans, cache keys and fingerprints see the real path, and
/// <see cref="ShowPaths"/> writes it in messages as <see cref="Shown"/> does
/// (<c>/data/caf\xE9/run</c>).</para>
///
/// <para><see cref="Persisted"/> is a text for the path that survives the process (a checkpoint's
/// options, a message to another rank): the path itself when it is valid UTF-8, else
/// <c>bytes:</c> and its <see cref="KeyOf"/> key, which <see cref="TryParsePersisted"/> reads back.</para>
/// </summary>
public sealed partial class NativePath
{
    /// <summary>What <see cref="Persisted"/> puts before the key of a path that is not valid UTF-8.</summary>
    public const string PersistedPrefix = "bytes:";

    private const string DescriptorFolder = "/proc/self/fd/";

    /// <summary>The path of exactly these bytes (no NUL among them).</summary>
    public static NativePath FromBytes(ReadOnlySpan<byte> bytes)
    {
        if (bytes.Contains((byte)0)) throw new ArgumentException("a path cannot hold a NUL byte", nameof(bytes));
        if (!UsesBytes) return new NativePath(Encoding.UTF8.GetString(bytes), null);
        var own = new byte[bytes.Length + 1];
        bytes.CopyTo(own);
        return new NativePath(Show(bytes), own);
    }

    /// <summary>The path's bytes (without the terminating NUL).</summary>
    public ReadOnlySpan<byte> Bytes => _bytes is { } b ? b.AsSpan(0, b.Length - 1) : Encoding.UTF8.GetBytes(Shown);

    /// <summary>Whether the bytes are valid UTF-8 (always, where paths are strings): then the path is a .NET string.</summary>
    public bool IsUtf8 => _bytes == null || Utf8.IsValid(Bytes);

    /// <summary>
    /// The path made absolute (against the working folder) with "." and ".." taken out and no
    /// slash at the end, as <see cref="Path.GetFullPath(string)"/> does for a string, byte for byte.
    /// </summary>
    public NativePath Full()
    {
        var bytes = Bytes;
        bool relative = bytes.IsEmpty || bytes[0] != (byte)'/';
        // A relative path in a working folder whose own path is not UTF-8 is made absolute by bytes
        // too: .NET's Environment.CurrentDirectory has U+FFFD in place of them.
        if (IsUtf8 && (!relative || WorkingFolder().IsUtf8))
            return Of(Path.TrimEndingDirectorySeparator(Path.GetFullPath(Encoding.UTF8.GetString(bytes))));
        var parts = new List<byte[]>();
        if (relative)
        {
            var working = WorkingFolder().Bytes;
            foreach (var part in working.Split((byte)'/')) Push(parts, working[part]);
        }
        foreach (var part in bytes.Split((byte)'/')) Push(parts, bytes[part]);
        var full = new List<byte>();
        foreach (var part in parts) full.AddRange([(byte)'/', .. part]);
        if (full.Count == 0) full.Add((byte)'/');
        return FromBytes(full.ToArray());

        static void Push(List<byte[]> parts, ReadOnlySpan<byte> part)
        {
            if (part.IsEmpty || part.SequenceEqual("."u8)) return;
            if (part.SequenceEqual(".."u8))
            {
                if (parts.Count > 0) parts.RemoveAt(parts.Count - 1);
                return;
            }
            parts.Add(part.ToArray());
        }
    }

    /// <summary>The working folder, by its bytes (getcwd(3)); where paths are strings, .NET's.</summary>
    public static unsafe NativePath WorkingFolder()
    {
        if (!UsesBytes || !Environment.CurrentDirectory.Contains('\uFFFD')) return Of(Environment.CurrentDirectory);
        for (int size = 4096; size <= 1 << 20; size *= 4)
        {
            var buffer = new byte[size];
            fixed (byte* b = buffer)
                if (Linux.GetWorkingFolder(b, (nuint)size) != null)
                    return FromBytes(buffer.AsSpan(0, buffer.AsSpan().IndexOf((byte)0)));
            if (Marshal.GetLastPInvokeError() != Linux.Erange) break;
        }
        return Of(Environment.CurrentDirectory);
    }

    /// <summary>The folder this path is in (of a full path; the root is its own).</summary>
    public NativePath Parent
    {
        get
        {
            if (!UsesBytes) return Of(Path.GetDirectoryName(Path.TrimEndingDirectorySeparator(Shown)) ?? Shown);
            var bytes = Bytes;
            while (bytes.Length > 1 && bytes[^1] == (byte)'/') bytes = bytes[..^1];
            int slash = bytes.LastIndexOf((byte)'/');
            return slash switch
            {
                < 0 => Of("."),
                0 => FromBytes("/"u8),
                _ => FromBytes(bytes[..slash]),
            };
        }
    }

    /// <summary>The bytes of the last name of the path.</summary>
    public ReadOnlySpan<byte> NameBytes
    {
        get
        {
            if (!UsesBytes) return Encoding.UTF8.GetBytes(Path.GetFileName(Path.TrimEndingDirectorySeparator(Shown)));
            var bytes = Bytes;
            while (bytes.Length > 1 && bytes[^1] == (byte)'/') bytes = bytes[..^1];
            return bytes[(bytes.LastIndexOf((byte)'/') + 1)..];
        }
    }

    /// <summary>This folder's entry <paramref name="name"/> (the bytes of one name, no '/').</summary>
    public NativePath Join(ReadOnlySpan<byte> name) =>
        _bytes != null ? Child(name) : Of(System.IO.Path.Join(Shown, Encoding.UTF8.GetString(name)));

    /// <summary>A text for the path that names it outside this process: the path when it is valid
    /// UTF-8, else <see cref="PersistedPrefix"/> and its <see cref="KeyOf"/> key.</summary>
    public string Persisted => IsUtf8 ? Encoding.UTF8.GetString(Bytes) : PersistedPrefix + KeyOf(Bytes);

    /// <summary>Reads a <see cref="Persisted"/> text of a path that is not valid UTF-8 (false for any other text).</summary>
    public static bool TryParsePersisted(string text, out NativePath path)
    {
        path = null!;
        if (!text.StartsWith(PersistedPrefix, StringComparison.Ordinal)) return false;
        var bytes = new List<byte>();
        string key = text[PersistedPrefix.Length..];
        Span<byte> utf8 = stackalloc byte[4];
        for (int i = 0; i < key.Length; i++)
        {
            if (key[i] == '\\' && i + 1 < key.Length && key[i + 1] == '\\')
            {
                bytes.Add((byte)'\\');
                i++;
            }
            else if (key[i] == '\\' && i + 3 < key.Length && key[i + 1] == 'x' && byte.TryParse(key.AsSpan(i + 2, 2), System.Globalization.NumberStyles.AllowHexSpecifier, null, out byte b))
            {
                bytes.Add(b);
                i += 3;
            }
            else
            {
                var rune = Rune.GetRuneAt(key, i);
                bytes.AddRange(utf8[..rune.EncodeToUtf8(utf8)]);
                i += rune.Utf16SequenceLength - 1;
            }
        }
        if (bytes.Contains(0)) return false;
        path = FromBytes(bytes.ToArray());
        return true;
    }

    /// <summary>One folder open by its bytes (an <c>O_PATH</c> descriptor) and its full path.</summary>
    private sealed record Alias(int Descriptor, byte[] Path, string Shown)
    {
        public string Name => DescriptorFolder + Descriptor.ToString(System.Globalization.CultureInfo.InvariantCulture);
    }

    private static readonly object AliasGate = new();
    private static readonly Dictionary<string, Alias> AliasByKey = new(StringComparer.Ordinal);
    private static readonly Dictionary<int, Alias> AliasByDescriptor = new();

    /// <summary>
    /// A string that names this path for .NET's file APIs in this process: the path itself when it
    /// is valid UTF-8, else <c>/proc/self/fd/N/REST</c>, where N has the deepest part of the path
    /// whose name is not valid UTF-8 open and REST is the rest (see the class). With
    /// <paramref name="createFolders"/> the path is first made as a folder, with those above it,
    /// where missing. Null when that deepest part does not exist (without creating it); throws
    /// <see cref="IOException"/> or <see cref="UnauthorizedAccessException"/>, naming the path as
    /// shown, when it cannot be made or opened.
    /// </summary>
    public string? Usable(bool createFolders = false)
    {
        bool relative = Bytes.IsEmpty || Bytes[0] != (byte)'/';
        var full = IsUtf8 && !relative ? this : Full();
        if (full.IsUtf8)
        {
            string text = IsUtf8 ? Encoding.UTF8.GetString(Bytes) : full.Shown;
            if (createFolders) Directory.CreateDirectory(text);
            return text;
        }
        if (createFolders) full.CreateFolders();
        var bytes = full.Bytes;
        // The deepest name that is not valid UTF-8 ends where the next '/' (or the path) does.
        int end = bytes.Length;
        while (end > 0)
        {
            int start = bytes[..end].LastIndexOf((byte)'/') + 1;
            if (!Utf8.IsValid(bytes[start..end])) break;
            end = start - 1;
        }
        var head = bytes[..end];
        string rest = Encoding.UTF8.GetString(bytes[end..]);
        var alias = Open(head);
        return alias == null ? null : alias.Name + rest;
    }

    private static unsafe Alias? Open(ReadOnlySpan<byte> path)
    {
        string key = KeyOf(path);
        lock (AliasGate)
        {
            if (AliasByKey.TryGetValue(key, out var known)) return known;
            var terminated = new byte[path.Length + 1];
            path.CopyTo(terminated);
            int fd;
            fixed (byte* p = terminated) fd = Linux.OpenPath(p);
            if (fd < 0)
            {
                int errno = Marshal.GetLastPInvokeError();
                if (errno is Linux.Enoent or Linux.Enotdir) return null;
                throw Linux.Failure(FromBytes(path), errno, "cannot be opened");
            }
            var alias = new Alias(fd, path.ToArray(), Show(path));
            // Without /proc (a chroot, some containers) the name leads nowhere: say so, rather than "missing".
            if (!Directory.Exists(alias.Name) && !File.Exists(alias.Name))
            {
                Linux.CloseDescriptor(fd);
                throw new IOException($"{alias.Shown}: its name is not valid UTF-8, and RawGan reaches such a path through {DescriptorFolder}, " +
                                      "which is not mounted here; rename it (or make a symbolic link to it) in UTF-8");
            }
            AliasByKey[key] = alias;
            AliasByDescriptor[fd] = alias;
            return alias;
        }
    }

    /// <summary>The bytes a <c>/proc/self/fd/N/...</c> name from <see cref="Usable"/> stands for.</summary>
    private static NativePath? FromAlias(string path)
    {
        if (!path.StartsWith(DescriptorFolder, StringComparison.Ordinal)) return null;
        int end = DescriptorFolder.Length;
        while (end < path.Length && char.IsAsciiDigit(path[end])) end++;
        if (end == DescriptorFolder.Length || end < path.Length && path[end] != '/') return null;
        if (!int.TryParse(path.AsSpan(DescriptorFolder.Length, end - DescriptorFolder.Length), out int fd)) return null;
        Alias? alias;
        lock (AliasGate)
            if (!AliasByDescriptor.TryGetValue(fd, out alias)) return null;
        return FromBytes([.. alias.Path, .. Encoding.UTF8.GetBytes(path[end..])]);
    }

    /// <summary>
    /// <paramref name="text"/> (a message) with every <c>/proc/self/fd/N</c> that <see cref="Usable"/>
    /// made written as the path it stands for, shown as <see cref="Shown"/> shows it.
    /// </summary>
    public static string ShowPaths(string text)
    {
        lock (AliasGate)
        {
            if (AliasByDescriptor.Count == 0 || !text.Contains(DescriptorFolder, StringComparison.Ordinal)) return text;
            return AliasPattern().Replace(text, m =>
                int.TryParse(m.Groups[1].ValueSpan, out int fd) && AliasByDescriptor.TryGetValue(fd, out var alias) ? alias.Shown : m.Value);
        }
    }

    [System.Text.RegularExpressions.GeneratedRegex(@"/proc/self/fd/([0-9]+)(?![0-9])")]
    private static partial System.Text.RegularExpressions.Regex AliasPattern();

    /// <summary>Makes this path a folder by its bytes, and the folders above it, where missing.</summary>
    public void CreateFolders()
    {
        if (!UsesBytes)
        {
            Directory.CreateDirectory(Shown);
            return;
        }
        var bytes = Full().Bytes;
        for (int end = 1; end <= bytes.Length; end++)
        {
            if (end < bytes.Length && bytes[end] != (byte)'/') continue;
            var folder = FromBytes(bytes[..end]);
            if (FileStatus.Of(folder).Kind == FileKind.Directory) continue;
            if (!folder.TryCreateFolder() && FileStatus.Of(folder).Kind != FileKind.Directory)
                throw new IOException($"{folder.Shown}: cannot make the folder: something else of that name is in the way");
        }
    }

    /// <summary>Makes this path a folder by its bytes (mkdir(2)): false if something of that name exists.</summary>
    public unsafe bool TryCreateFolder()
    {
        if (!UsesBytes)
        {
            if (Directory.Exists(Shown) || File.Exists(Shown)) return false;
            Directory.CreateDirectory(Shown);
            return true;
        }
        int result;
        fixed (byte* p = Terminated) result = Linux.MakeDirectory(p, 0x1FF /* 0777, less the umask */);
        if (result == 0) return true;
        int errno = Marshal.GetLastPInvokeError();
        if (errno == Linux.Eexist) return false;
        throw Linux.Failure(this, errno, "cannot be made");
    }

    private static unsafe partial class Linux
    {
        // O_PATH | O_CLOEXEC (generic Linux values): the descriptor names the file, reads nothing.
        private const int PathFlags = 0x200000 | 0x80000;
        public const int Eexist = 17, Erange = 34;

        [LibraryImport("libc", EntryPoint = "getcwd", SetLastError = true)]
        public static partial byte* GetWorkingFolder(byte* buffer, nuint size);

        public static int OpenPath(byte* path) => Open(path, PathFlags, 0);

        public static void CloseDescriptor(int fd) => Close(fd);

        [LibraryImport("libc", EntryPoint = "mkdir", SetLastError = true)]
        public static partial int MakeDirectory(byte* path, int mode);

        [LibraryImport("libc", EntryPoint = "close")]
        private static partial int Close(int fd);
    }
}
