namespace RawGan.ProGan.IO;

/// <summary>
/// Writes a file so that, whatever happens, the path holds either the complete old content or the
/// complete new content, never a mixture or a stump. The content goes to a temporary file in the
/// same directory, is flushed to the disk (fsync), and only then renamed over the target; a rename
/// within one file system is atomic. A crash, a kill -9 or a full disk during the write leaves the
/// previous file untouched (and at worst a stray <c>.*.tmp</c> file beside it, named after the
/// writing process, which <see cref="RemoveStaleTemporaries"/> removes once that process is gone).
/// </summary>
public static partial class AtomicFile
{
    /// <summary>
    /// Creates or replaces <paramref name="path"/> with whatever <paramref name="writeContent"/>
    /// writes to the stream it is given. The stream is seekable, so a writer may come back to patch
    /// a header. Failures of the disk or the folder become an <see cref="IOException"/> whose
    /// message names the path; the previous file is left intact.
    /// </summary>
    public static void Write(string path, Action<Stream> writeContent)
    {
        ArgumentNullException.ThrowIfNull(writeContent);
        string fullPath = Path.GetFullPath(path);
        string directory = Path.GetDirectoryName(fullPath)
            ?? throw new IOException($"Cannot save '{path}': it names a root, not a file.");
        if (!Directory.Exists(directory))
            throw new DirectoryNotFoundException($"Cannot save '{path}': the folder '{directory}' does not exist.");

        // A unique name beside the target, hidden on Unix, so that the final rename stays on one
        // file system (a rename across file systems would be a copy, and not atomic).
        // The process id in the name lets a later run tell a leftover of a killed writer from the
        // file of one still writing (RemoveStaleTemporaries).
        string temporaryPath = Path.Combine(directory, $".{Path.GetFileName(fullPath)}.{Environment.ProcessId}-{Guid.NewGuid():N}.tmp");
        try
        {
            using (var stream = new FileStream(temporaryPath, FileMode.CreateNew, FileAccess.ReadWrite,
                       FileShare.None, bufferSize: 1 << 16))
            {
                writeContent(stream);
                // Flush(true) pushes the data through the operating system's cache to the disk; without
                // it a power cut after the rename could leave a renamed but empty file.
                stream.Flush(flushToDisk: true);
            }
            File.Move(temporaryPath, fullPath, overwrite: true);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            TryDelete(temporaryPath);
            string previous = File.Exists(fullPath) ? " The previous file is left as it was." : "";
            throw new IOException($"Could not save '{path}': {ex.Message}{previous}", ex);
        }
        catch
        {
            // The content writer failed (a bug or bad values): the target must not change either.
            TryDelete(temporaryPath);
            throw;
        }
    }

    /// <summary>Atomically writes <paramref name="bytes"/> to <paramref name="path"/>.</summary>
    public static void WriteAllBytes(string path, byte[] bytes)
    {
        ArgumentNullException.ThrowIfNull(bytes);
        Write(path, stream => stream.Write(bytes));
    }

    /// <summary>Atomically writes <paramref name="text"/> as UTF-8 (no byte order mark).</summary>
    public static void WriteAllText(string path, string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        Write(path, stream =>
        {
            using var writer = new StreamWriter(stream, new System.Text.UTF8Encoding(false), 1 << 16, leaveOpen: true);
            writer.Write(text);
        });
    }

    /// <summary>
    /// Deletes the temporary files that writers killed mid-write (kill -9, a power cut) left in
    /// <paramref name="directory"/>: those whose writer process no longer runs, and any older than
    /// <paramref name="maxAge"/> (a writer's id may have been reused, or the file predates the
    /// process id in the name). A temporary file of a writer still running is kept. Returns how many
    /// were deleted.
    /// </summary>
    public static int RemoveStaleTemporaries(string directory, TimeSpan maxAge)
    {
        if (!Directory.Exists(directory)) return 0;
        int removed = 0;
        foreach (string path in Directory.EnumerateFiles(directory, ".*.tmp"))
        {
            var match = TemporaryName().Match(Path.GetFileName(path));
            if (!match.Success) continue;
            bool writerGone = match.Groups[1].Success && int.TryParse(match.Groups[1].Value, out int pid) && !IsRunning(pid);
            bool old;
            try
            {
                old = DateTime.UtcNow - File.GetLastWriteTimeUtc(path) > maxAge;
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                continue;
            }
            if (!writerGone && !old) continue;
            try
            {
                File.Delete(path);
                removed++;
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
        }
        return removed;
    }

    private static bool IsRunning(int pid)
    {
        if (pid == Environment.ProcessId) return true;
        if (OperatingSystem.IsLinux()) return Directory.Exists($"/proc/{pid}");
        try
        {
            using var process = System.Diagnostics.Process.GetProcessById(pid);
            return !process.HasExited;
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException)
        {
            return false;
        }
    }

    /// <summary>".NAME.PID-GUID.tmp" (and ".NAME.GUID.tmp", before the process id was added).</summary>
    [System.Text.RegularExpressions.GeneratedRegex(@"^\..+\.(?:([0-9]+)-)?[0-9a-f]{32}\.tmp$")]
    private static partial System.Text.RegularExpressions.Regex TemporaryName();

    private static void TryDelete(string path)
    {
        try { File.Delete(path); }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException) { }
    }
}
