using RawGan.ProGan.IO;
using RawGan.ProGan.Training;

namespace RawGan.ProGan.Tests;

/// <summary>
/// One writer per run folder (failure class 3), in process: the lock is exclusive, names its
/// holder and is released with it; folders made at the same moment under one name are all
/// different. (Across processes and kill -9: RunFolderTests in RawGan.Trainer.Tests.)
/// </summary>
public class RunLockTests
{
    [Fact]
    public void TheLockIsExclusiveNamesItsHolderAndIsReleasedWithIt()
    {
        using var directory = new TempDirectory();
        using (var held = RunLock.Acquire(directory.Path))
        {
            // A second descriptor, even in this process, is a second writer.
            Assert.Null(ExclusiveLock.TryAcquire(held.Path, out int? holder));
            Assert.Equal(Environment.ProcessId, holder);
            var refused = Assert.Throws<RunInUseException>(() => RunLock.Acquire(directory.Path));
            Assert.Contains($"PID {Environment.ProcessId}", refused.Message);
            Assert.Equal(Environment.ProcessId, refused.Holder);
        }
        string path;
        using (var again = RunLock.Acquire(directory.Path)) path = again.Path;
        Assert.Equal($"{Environment.ProcessId}\n", File.ReadAllText(path));   // .NET's own reader takes a lock too: read it after
    }

    [Fact]
    public void FoldersMadeTogetherUnderOneNameAreAllDifferent()
    {
        using var directory = new TempDirectory();
        var made = new (string Directory, ExclusiveLock Lock)[8];
        Parallel.For(0, made.Length, new ParallelOptions { MaxDegreeOfParallelism = made.Length }, i => made[i] = RunLock.CreateUnique(directory.Path, "20260101-000000-shapes-8"));
        try
        {
            Assert.Equal(made.Length, made.Select(m => m.Directory).Distinct().Count());
            Assert.Contains(made, m => Path.GetFileName(m.Directory) == "20260101-000000-shapes-8");
            Assert.Contains(made, m => Path.GetFileName(m.Directory) == "20260101-000000-shapes-8-8");
        }
        finally
        {
            foreach (var m in made) m.Lock.Dispose();
        }
        // A folder that exists, locked or not, is never taken over.
        var (next, nextLock) = RunLock.CreateUnique(directory.Path, "20260101-000000-shapes-8");
        using (nextLock) Assert.EndsWith("-9", next);
    }
}
