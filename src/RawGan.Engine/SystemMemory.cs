namespace RawGan.Engine;

/// <summary>How much more memory this process can use: the smaller of what is left under the
/// runtime's limit (the machine's memory, or a container's limit, less this process's working set)
/// and what the system reports as available (Linux: MemAvailable in /proc/meminfo, which counts
/// reclaimable caches).</summary>
public static class SystemMemory
{
    /// <summary>Bytes the process can expect to allocate now without swapping or being killed.</summary>
    public static long AvailableBytes
    {
        get
        {
            long total = GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;
            long limit = total > 0 ? Math.Max(0, total - Environment.WorkingSet) : long.MaxValue;
            if (MemAvailable() is long available) limit = Math.Min(limit, available);
            return limit == long.MaxValue ? 8L << 30 : limit;
        }
    }

    /// <summary>"3.2 GB", "640 MB": sizes in messages.</summary>
    public static string Format(long bytes) =>
        bytes >= 10L << 30 ? $"{bytes / (double)(1L << 30):F0} GB"
        : bytes >= 1L << 30 ? $"{bytes / (double)(1L << 30):F1} GB"
        : bytes >= 1L << 20 ? $"{Math.Max(1, bytes >> 20)} MB"
        : $"{Math.Max(1, bytes >> 10)} KB";

    private static long? MemAvailable()
    {
        if (!OperatingSystem.IsLinux()) return null;
        try
        {
            foreach (var line in File.ReadLines("/proc/meminfo"))
            {
                if (!line.StartsWith("MemAvailable:", StringComparison.Ordinal)) continue;
                var parts = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
                return parts.Length >= 2 && long.TryParse(parts[1], out long kb) ? kb * 1024 : null;
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
        return null;
    }
}
