using System.Runtime.InteropServices;
using System.Text;

namespace RawGan.ProGan.IO;

/// <summary>
/// An exclusive lock on a file that the operating system releases when the process ends, however
/// it ends (kill -9 included), so a lock can never be stale: on Unix <c>flock(LOCK_EX | LOCK_NB)</c>
/// on a descriptor of its own (opened through the C library, so .NET's own advisory locks on the
/// file play no part), on Windows a handle that shares reading only. The holder writes its process
/// id into the file, so that a refused process can say who holds it.
/// </summary>
public sealed partial class ExclusiveLock : IDisposable
{
    private readonly int _fd = -1;
    private readonly FileStream? _windows;
    private bool _disposed;

    private ExclusiveLock(string path, int fd, FileStream? windows)
    {
        Path = path;
        _fd = fd;
        _windows = windows;
    }

    /// <summary>The lock file.</summary>
    public string Path { get; }

    /// <summary>
    /// Takes the lock on <paramref name="path"/> (creating the file) or returns null at once when
    /// another process holds it, with that process's id in <paramref name="holder"/> when the file
    /// names one. Throws <see cref="IOException"/> when the file cannot be opened at all.
    /// </summary>
    public static ExclusiveLock? TryAcquire(string path, out int? holder)
    {
        holder = null;
        return OperatingSystem.IsWindows() ? TryAcquireWindows(path, out holder) : TryAcquireUnix(path, out holder);
    }

    private static ExclusiveLock? TryAcquireWindows(string path, out int? holder)
    {
        holder = null;
        try
        {
            var stream = new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.Read);
            stream.SetLength(0);
            stream.Write(Encoding.ASCII.GetBytes($"{Environment.ProcessId}\n"));
            stream.Flush();
            return new ExclusiveLock(path, -1, stream);
        }
        catch (IOException) when (File.Exists(path))
        {
            try
            {
                using var reader = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
                var buffer = new byte[32];
                holder = ParsePid(buffer.AsSpan(0, reader.Read(buffer)));
            }
            catch (IOException) { }
            return null;
        }
    }

    private static unsafe ExclusiveLock? TryAcquireUnix(string path, out int? holder)
    {
        holder = null;
        bool mac = OperatingSystem.IsMacOS();
        int flags = 2 /* O_RDWR */ | (mac ? 0x200 : 0x40) /* O_CREAT */ | (mac ? 0x1000000 : 0x80000) /* O_CLOEXEC */;
        int fd = Open(path, flags, 0x1A4 /* 0644 */);
        if (fd < 0)
            throw new IOException($"cannot open the lock file {path}: {Marshal.GetPInvokeErrorMessage(Marshal.GetLastPInvokeError())}");
        if (Flock(fd, 2 /* LOCK_EX */ | 4 /* LOCK_NB */) != 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            try
            {
                if (errno != (mac ? 35 : 11) /* EWOULDBLOCK */)
                    throw new IOException($"cannot lock {path}: {Marshal.GetPInvokeErrorMessage(errno)}");
                var buffer = new byte[32];
                nint read;
                fixed (byte* b = buffer) read = Pread(fd, b, buffer.Length, 0);
                holder = read > 0 ? ParsePid(buffer.AsSpan(0, (int)read)) : null;
                return null;
            }
            finally
            {
                Close(fd);
            }
        }
        var text = Encoding.ASCII.GetBytes($"{Environment.ProcessId}\n");
        fixed (byte* b = text)
        {
            if (Ftruncate(fd, 0) != 0 || Pwrite(fd, b, text.Length, 0) != text.Length)
            {
                // The lock holds without the id; a refused process then only cannot name this one.
            }
        }
        return new ExclusiveLock(path, fd, null);
    }

    private static int? ParsePid(ReadOnlySpan<byte> text) =>
        int.TryParse(Encoding.ASCII.GetString(text).Trim(), out int pid) && pid > 0 ? pid : null;

    /// <summary>Releases the lock (the file stays; an unlocked file is not a lock).</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        if (_windows != null) _windows.Dispose();
        else if (_fd >= 0) Close(_fd);   // closing the descriptor releases the flock
    }

    [LibraryImport("libc", EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Open(string path, int flags, int mode);

    [LibraryImport("libc", EntryPoint = "flock", SetLastError = true)]
    private static partial int Flock(int fd, int operation);

    [LibraryImport("libc", EntryPoint = "ftruncate", SetLastError = true)]
    private static partial int Ftruncate(int fd, long length);

    [LibraryImport("libc", EntryPoint = "pwrite", SetLastError = true)]
    private static unsafe partial nint Pwrite(int fd, byte* buffer, nint count, long offset);

    [LibraryImport("libc", EntryPoint = "pread", SetLastError = true)]
    private static unsafe partial nint Pread(int fd, byte* buffer, nint count, long offset);

    [LibraryImport("libc", EntryPoint = "close", SetLastError = true)]
    private static partial int Close(int fd);
}
