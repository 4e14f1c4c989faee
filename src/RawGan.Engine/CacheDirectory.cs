namespace RawGan.Engine;

/// <summary>Where RawGan caches what it can rebuild (compiled kernels, the emulator, decoded data
/// sets): $RAWGAN_CACHE_DIR, else $XDG_CACHE_HOME/rawgan, else ~/.cache/rawgan.</summary>
public static class CacheDirectory
{
    public static string Root
    {
        get
        {
            var env = Environment.GetEnvironmentVariable("RAWGAN_CACHE_DIR");
            if (!string.IsNullOrEmpty(env)) return env;
            var xdg = Environment.GetEnvironmentVariable("XDG_CACHE_HOME");
            if (!string.IsNullOrEmpty(xdg)) return Path.Combine(xdg, "rawgan");
            var home = Environment.GetFolderPath(Environment.SpecialFolder.UserProfile);
            return string.IsNullOrEmpty(home) ? Path.Combine(Path.GetTempPath(), "rawgan-cache") : Path.Combine(home, ".cache", "rawgan");
        }
    }

    public static string For(string kind)
    {
        var dir = Path.Combine(Root, kind);
        Directory.CreateDirectory(dir);
        return dir;
    }

    /// <summary>Writes through a temporary file and a rename, so that concurrent processes never
    /// see a half-written cache entry.</summary>
    public static void WriteAtomically(string path, byte[] bytes)
    {
        var temp = $"{path}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp";
        try
        {
            File.WriteAllBytes(temp, bytes);
            File.Move(temp, path, overwrite: true);
        }
        catch (IOException)
        {
            // A read-only or full cache only costs a recompile next time.
            try { File.Delete(temp); } catch (IOException) { }
        }
        catch (UnauthorizedAccessException)
        {
            try { File.Delete(temp); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        }
    }
}
