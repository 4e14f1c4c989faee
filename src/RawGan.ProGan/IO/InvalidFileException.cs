namespace RawGan.ProGan.IO;

/// <summary>
/// A user's file (an image, a data set file, a checkpoint, an array) cannot be read because its
/// content is wrong: truncated, corrupt, or not the format its name promises. The message always
/// names the file and says what is wrong (and where, when the reader knows), e.g.
/// <c>photos/cat.png: the PNG data end before the picture does (truncated?)</c>, so the user can fix
/// or remove it.
/// Problems of the machine rather than the file (a missing disk, no permission) stay
/// <see cref="IOException"/>s.
/// </summary>
public sealed class InvalidFileException : Exception
{
    public InvalidFileException(string filePath, string problem, Exception? innerException = null)
        : base($"{filePath}: {problem}", innerException)
    {
        FilePath = filePath;
        Problem = problem;
    }

    /// <summary>The file as the caller named it.</summary>
    public string FilePath { get; }

    /// <summary>What is wrong, without the file name.</summary>
    public string Problem { get; }
}
