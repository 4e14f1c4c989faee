using System.Buffers;
using System.Runtime.InteropServices;
using System.Text;
using Microsoft.Win32.SafeHandles;

namespace RawGan.ProGan.IO;

/// <summary>
/// A path as the operating system names it, and how RawGan shows it. On Linux a file name is a
/// sequence of bytes that need not be UTF-8: "café.png" saved by an old camera or unpacked from an
/// old zip may be Latin-1, <c>63 61 66 E9 2E 70 6E 67</c>. .NET turns such a name into a string
/// with U+FFFD in place of the byte, and that string then names no file (its bytes are
/// <c>EF BF BD</c>). So on Linux a <see cref="NativePath"/> keeps the bytes the directory listed,
/// and <see cref="FileStatus.Of(NativePath, bool)"/>, <see cref="OpenRead"/> and <see cref="List"/>
/// use them with the C library.
///
/// <see cref="Shown"/> is the path for messages: a name that is valid UTF-8 as it is; a name that
/// is not, with each byte outside valid UTF-8 written <c>\xE9</c> and each backslash <c>\\</c>
/// (<c>caf\xE9.png</c>). <see cref="KeyOf"/> writes every name that way, backslashes doubled
/// even in valid names, so that it is a different text for every sequence of bytes (the key a
/// folder's cache is identified by).
///
/// Elsewhere (Windows: names are UTF-16, .NET's own strings), and in a 32-bit process on Linux
/// (whose directory entries are laid out differently), a path is its string and .NET opens it.
/// </summary>
public sealed partial class NativePath
{
    /// <summary>On Linux: the path's bytes and a terminating NUL. Null where the string is the path.</summary>
    private readonly byte[]? _bytes;

    private NativePath(string shown, byte[]? bytes)
    {
        Shown = shown;
        _bytes = bytes;
    }

    /// <summary>The path for messages (and, when its bytes are valid UTF-8, for .NET's own file APIs).</summary>
    public string Shown { get; }

    /// <summary>Whether paths are handed to the C library as bytes here (64-bit Linux).</summary>
    internal static bool UsesBytes { get; } = OperatingSystem.IsLinux() && Environment.Is64BitProcess;

    /// <summary>The path that <paramref name="path"/> names (on Linux, its UTF-8 bytes, as .NET would pass them;
    /// for a <c>/proc/self/fd/N</c> name that <see cref="Usable"/> made, the bytes it stands for).</summary>
    public static NativePath Of(string path)
    {
        if (!UsesBytes) return new NativePath(path, null);
        if (FromAlias(path) is { } alias) return alias;
        var bytes = new byte[Encoding.UTF8.GetByteCount(path) + 1];
        Encoding.UTF8.GetBytes(path, bytes);
        return new NativePath(path, bytes);
    }

    /// <summary>The bytes of the path followed by a NUL, for the C library; empty where paths are strings.</summary>
    internal ReadOnlySpan<byte> Terminated => _bytes;

    public override string ToString() => Shown;

    /// <summary>
    /// How a name (or path) of these bytes is shown: the text itself when the bytes are valid
    /// UTF-8; otherwise each byte outside valid UTF-8 as <c>\xHH</c> and each backslash as <c>\\</c>.
    /// </summary>
    public static string Show(ReadOnlySpan<byte> name) =>
        System.Text.Unicode.Utf8.IsValid(name) ? Encoding.UTF8.GetString(name) : Escape(name);

    /// <summary>
    /// A text for these bytes that no other sequence of bytes has: valid UTF-8 as it is, except
    /// that each backslash is doubled, and each byte outside valid UTF-8 as <c>\xHH</c>. A name that
    /// is valid UTF-8 and has no backslash is its own key.
    /// </summary>
    public static string KeyOf(ReadOnlySpan<byte> name) =>
        System.Text.Unicode.Utf8.IsValid(name) && !name.Contains((byte)'\\') ? Encoding.UTF8.GetString(name) : Escape(name);

    private static string Escape(ReadOnlySpan<byte> bytes)
    {
        var text = new StringBuilder(bytes.Length + 16);
        Span<char> units = stackalloc char[2];
        while (!bytes.IsEmpty)
        {
            var status = Rune.DecodeFromUtf8(bytes, out var rune, out int consumed);
            if (status == OperationStatus.Done)
            {
                if (rune.Value == '\\') text.Append(@"\\");
                else text.Append(units[..rune.EncodeToUtf16(units)]);
            }
            else
            {
                // A maximal invalid subsequence (at least one byte): each byte escaped.
                foreach (byte b in bytes[..consumed]) text.Append(@"\x").Append(b.ToString("X2"));
            }
            bytes = bytes[consumed..];
        }
        return text.ToString();
    }

    /// <summary>
    /// The entries of this folder ("." and ".." left out), each with its path, its name as shown
    /// and its <see cref="KeyOf"/> key, in the order the system lists them. Throws
    /// <see cref="UnauthorizedAccessException"/> or <see cref="IOException"/> when the folder cannot
    /// be listed. Where paths are strings, inaccessible entries and hidden or system ones (by their
    /// attributes) are left out, as .NET's enumeration does.
    /// </summary>
    public IReadOnlyList<(NativePath Path, string Name, string Key)> List()
    {
        if (!UsesBytes)
        {
            var options = new EnumerationOptions
            {
                RecurseSubdirectories = false,
                IgnoreInaccessible = true,
                AttributesToSkip = FileAttributes.Hidden | FileAttributes.System,
            };
            return Directory.EnumerateFileSystemEntries(Shown, "*", options)
                .Select(path => (new NativePath(path, null), System.IO.Path.GetFileName(path), System.IO.Path.GetFileName(path)))
                .ToArray();
        }
        return Linux.List(this);
    }

    /// <summary>The path of <paramref name="name"/> (the bytes of one name, no '/') inside this folder.</summary>
    private NativePath Child(ReadOnlySpan<byte> name)
    {
        byte[] own = _bytes!;
        var parent = own.AsSpan(0, own.Length - 1);
        bool slash = parent.IsEmpty || parent[^1] != (byte)'/';
        var bytes = new byte[parent.Length + (slash ? 1 : 0) + name.Length + 1];
        parent.CopyTo(bytes);
        if (slash) bytes[parent.Length] = (byte)'/';
        name.CopyTo(bytes.AsSpan(bytes.Length - 1 - name.Length));
        return new NativePath(System.IO.Path.Join(Shown, Show(name)), bytes);
    }

    /// <summary>
    /// Opens the file for reading. On Linux the open does not block (a named pipe put in a
    /// file's place after it was checked opens at once, instead of waiting for a writer: a caller
    /// checks the handle's <see cref="FileStatus.Of(SafeFileHandle)"/>). Throws
    /// <see cref="FileNotFoundException"/>, <see cref="UnauthorizedAccessException"/> or
    /// <see cref="IOException"/>, each naming the path as shown.
    /// </summary>
    public SafeFileHandle OpenRead()
    {
        if (!UsesBytes)
            return File.OpenHandle(Shown, FileMode.Open, FileAccess.Read, FileShare.Read);
        return Linux.OpenRead(this);
    }

    /// <summary>The C library's directory listing and open(2), by bytes (64-bit Linux only).</summary>
    private static unsafe partial class Linux
    {
        // O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC (the generic Linux values, shared by x64 and arm64).
        private const int OpenFlags = 0 | 0x800 | 0x100 | 0x80000;
        public const int Enoent = 2, Eacces = 13, Enotdir = 20;
        // struct dirent on 64-bit Linux (glibc and musl): d_ino (8), d_off (8), d_reclen (2), d_type (1), d_name.
        private const int NameOffset = 19;

        public static IReadOnlyList<(NativePath, string, string)> List(NativePath folder)
        {
            nint directory;
            fixed (byte* path = folder.Terminated) directory = OpenDirectory(path);
            if (directory == 0)
                throw Failure(folder, Marshal.GetLastPInvokeError(), "cannot be listed");
            try
            {
                var entries = new List<(NativePath, string, string)>();
                while (true)
                {
                    byte* entry = ReadDirectory(directory);
                    if (entry == null)
                    {
                        // The end, or an error (errno, cleared before the call, tells which).
                        int errno = Marshal.GetLastPInvokeError();
                        if (errno != 0) throw Failure(folder, errno, "could not be listed to its end");
                        return entries;
                    }
                    var name = MemoryMarshal.CreateReadOnlySpanFromNullTerminated(entry + NameOffset);
                    if (name.SequenceEqual("."u8) || name.SequenceEqual(".."u8)) continue;
                    entries.Add((folder.Child(name), Show(name), KeyOf(name)));
                }
            }
            finally
            {
                CloseDirectory(directory);
            }
        }

        public static SafeFileHandle OpenRead(NativePath file)
        {
            int fd;
            fixed (byte* path = file.Terminated) fd = Open(path, OpenFlags, 0);
            if (fd < 0)
                throw Failure(file, Marshal.GetLastPInvokeError(), "cannot be opened");
            return new SafeFileHandle(fd, ownsHandle: true);
        }

        public static Exception Failure(NativePath path, int errno, string what) => errno switch
        {
            Enoent or Enotdir => new FileNotFoundException($"{path.Shown}: no such file", path.Shown),
            Eacces => new UnauthorizedAccessException($"{path.Shown}: {what}: permission denied"),
            _ => new IOException($"{path.Shown}: {what}: {Marshal.GetPInvokeErrorMessage(errno)}"),
        };

        [LibraryImport("libc", EntryPoint = "opendir", SetLastError = true)]
        private static partial nint OpenDirectory(byte* path);

        [LibraryImport("libc", EntryPoint = "readdir", SetLastError = true)]
        private static partial byte* ReadDirectory(nint directory);

        [LibraryImport("libc", EntryPoint = "closedir")]
        private static partial int CloseDirectory(nint directory);

        [LibraryImport("libc", EntryPoint = "open", SetLastError = true)]
        private static partial int Open(byte* path, int flags, int mode);
    }
}
