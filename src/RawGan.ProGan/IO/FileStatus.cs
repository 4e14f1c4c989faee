using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace RawGan.ProGan.IO;

/// <summary>What a directory entry is. Only <see cref="Regular"/> files are ever opened for
/// reading by a folder scan: opening a named pipe blocks until a writer appears, and a device
/// can be endless.</summary>
public enum FileKind
{
    Missing,
    Regular,
    Directory,
    NamedPipe,
    CharacterDevice,
    BlockDevice,
    Socket,
    SymbolicLink,
    Other,
}

/// <summary>
/// The status of a path as the operating system reports it, read without opening the file:
/// its kind, its identity (device and inode: two paths with the same identity are one file, and a
/// directory seen twice on one walk is a symbolic-link loop), its length and its modification
/// time in UTC ticks (what <see cref="FileSystemInfo.LastWriteTimeUtc"/> gives).
/// </summary>
public readonly partial record struct FileStatus(FileKind Kind, ulong Device, ulong Inode, long Length, long ModifiedTicks)
{
    /// <summary>Device and inode together: one real file or folder.</summary>
    public (ulong Device, ulong Inode) Identity => (Device, Inode);

    /// <summary>What the kind is called in a message: "a named pipe (FIFO)", ...</summary>
    public static string Describe(FileKind kind) => kind switch
    {
        FileKind.Missing => "missing (a symbolic link to nothing?)",
        FileKind.Regular => "a regular file",
        FileKind.Directory => "a folder",
        FileKind.NamedPipe => "a named pipe (FIFO)",
        FileKind.CharacterDevice => "a character device",
        FileKind.BlockDevice => "a block device",
        FileKind.Socket => "a socket",
        FileKind.SymbolicLink => "a symbolic link",
        _ => "not a regular file",
    };

    /// <summary>
    /// The status of <paramref name="path"/>, following symbolic links unless
    /// <paramref name="followLinks"/> is false. On Linux this is <c>statx(2)</c>, so a named pipe
    /// or a device is recognized without being opened; elsewhere .NET's file information is used
    /// (every non-folder counts as regular there, and the identity is the resolved full path's hash).
    /// </summary>
    public static FileStatus Of(string path, bool followLinks = true) => Of(NativePath.Of(path), followLinks);

    /// <summary>
    /// The status of <paramref name="path"/>, as <see cref="Of(string, bool)"/>; on Linux the path's
    /// bytes are what statx is given, so a name that is not valid UTF-8 is found.
    /// </summary>
    public static unsafe FileStatus Of(NativePath path, bool followLinks = true)
    {
        if (NativePath.UsesBytes)
        {
            fixed (byte* bytes = path.Terminated)
                if (LinuxStatx.TryGet(LinuxStatx.AtFdCwd, bytes, followLinks ? 0 : LinuxStatx.AtSymlinkNoFollow, out var status))
                    return status;
        }
        return Managed(path.Shown, followLinks);
    }

    /// <summary>
    /// The status of the file <paramref name="handle"/> has open (what it is now, whatever its path
    /// names since). On Linux, statx of the descriptor; elsewhere a regular file of the handle's length.
    /// </summary>
    public static unsafe FileStatus Of(SafeFileHandle handle)
    {
        if (NativePath.UsesBytes)
        {
            bool added = false;
            try
            {
                handle.DangerousAddRef(ref added);
                byte empty = 0;
                if (LinuxStatx.TryGet((int)handle.DangerousGetHandle(), &empty, LinuxStatx.AtEmptyPath, out var status))
                    return status;
            }
            finally
            {
                if (added) handle.DangerousRelease();
            }
        }
        return new FileStatus(FileKind.Regular, 0, 0, RandomAccess.GetLength(handle), 0);
    }

    private static FileStatus Managed(string path, bool followLinks)
    {
        FileSystemInfo info = Directory.Exists(path) ? new DirectoryInfo(path) : new FileInfo(path);
        if (info.LinkTarget != null)
        {
            if (!followLinks)
                return new FileStatus(FileKind.SymbolicLink, 0, Hash(path), 0, 0);
            try
            {
                info = info.ResolveLinkTarget(returnFinalTarget: true) ?? info;
            }
            catch (IOException)
            {
                return new FileStatus(FileKind.Missing, 0, 0, 0, 0); // a loop of links
            }
        }
        if (!info.Exists)
            return new FileStatus(FileKind.Missing, 0, 0, 0, 0);
        ulong identity = Hash(info.FullName);
        return info is FileInfo file
            ? new FileStatus(FileKind.Regular, 0, identity, file.Length, file.LastWriteTimeUtc.Ticks)
            : new FileStatus(FileKind.Directory, 0, identity, 0, info.LastWriteTimeUtc.Ticks);
    }

    private static ulong Hash(string fullPath)
    {
        var bytes = System.Security.Cryptography.SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(fullPath));
        return BinaryPrimitives.ReadUInt64LittleEndian(bytes);
    }

    /// <summary>statx(2) through the C library: its struct has the same layout on every Linux architecture.</summary>
    private static partial class LinuxStatx
    {
        public const int AtFdCwd = -100, AtSymlinkNoFollow = 0x100, AtEmptyPath = 0x1000;
        private const uint StatxBasicStats = 0x7ff;
        private const int Enoent = 2, Enotdir = 20, Eloop = 40, Enametoolong = 36;
        private static volatile bool _unavailable;

        [LibraryImport("libc", EntryPoint = "statx", SetLastError = true)]
        private static unsafe partial int Statx(int directoryFd, byte* path, int flags, uint mask, byte* buffer);

        /// <summary>statx of <paramref name="path"/> (NUL-terminated) relative to <paramref name="directoryFd"/>.</summary>
        public static unsafe bool TryGet(int directoryFd, byte* path, int flags, out FileStatus status)
        {
            status = default;
            if (_unavailable) return false;
            byte* buffer = stackalloc byte[256];
            int result;
            try
            {
                result = Statx(directoryFd, path, flags, StatxBasicStats, buffer);
            }
            catch (Exception e) when (e is EntryPointNotFoundException or DllNotFoundException)
            {
                _unavailable = true;   // a C library without statx (glibc before 2.28)
                return false;
            }
            if (result != 0)
            {
                int errno = Marshal.GetLastPInvokeError();
                if (errno is Enoent or Enotdir or Eloop or Enametoolong)
                {
                    status = new FileStatus(FileKind.Missing, 0, 0, 0, 0);
                    return true;
                }
                return false;   // EACCES, ENOSYS (a sandbox), ...: let .NET say what it can
            }
            var bytes = new ReadOnlySpan<byte>(buffer, 256);
            int mode = BinaryPrimitives.ReadUInt16LittleEndian(bytes[28..]);
            ulong inode = BinaryPrimitives.ReadUInt64LittleEndian(bytes[32..]);
            long length = (long)Math.Min(BinaryPrimitives.ReadUInt64LittleEndian(bytes[40..]), long.MaxValue);
            long seconds = BinaryPrimitives.ReadInt64LittleEndian(bytes[112..]);
            uint nanoseconds = BinaryPrimitives.ReadUInt32LittleEndian(bytes[120..]);
            ulong device = ((ulong)BinaryPrimitives.ReadUInt32LittleEndian(bytes[136..]) << 32) | BinaryPrimitives.ReadUInt32LittleEndian(bytes[140..]);
            var kind = (mode & 0xF000) switch
            {
                0x8000 => FileKind.Regular,
                0x4000 => FileKind.Directory,
                0x1000 => FileKind.NamedPipe,
                0x2000 => FileKind.CharacterDevice,
                0x6000 => FileKind.BlockDevice,
                0xC000 => FileKind.Socket,
                0xA000 => FileKind.SymbolicLink,
                _ => FileKind.Other,
            };
            long ticks;
            try
            {
                ticks = checked(DateTime.UnixEpoch.Ticks + seconds * TimeSpan.TicksPerSecond + nanoseconds / 100);
            }
            catch (OverflowException)
            {
                ticks = 0;   // a modification time outside .NET's calendar
            }
            status = new FileStatus(kind, device, inode, length, ticks);
            return true;
        }
    }
}
