namespace RawGan.ProGan.Data;

/// <summary>Where the four files of an MNIST-style data set are.</summary>
public sealed record MnistFiles(string TrainImages, string TrainLabels, string TestImages, string TestLabels);

/// <summary>
/// Fashion-MNIST (Xiao, Rasul and Vollgraf, 2017): 70,000 grey 28x28 pictures of clothes in ten
/// classes, a drop-in replacement for MNIST's digits. Debian packages it as
/// <c>dataset-fashion-mnist</c>, which installs the gzipped IDX files under
/// <see cref="DebianDirectory"/>.
/// </summary>
public static class FashionMnist
{
    public const string DebianDirectory = "/usr/share/datasets/fashion-mnist";
    public const string InstallHint = "Fashion-MNIST is not installed (Debian/Ubuntu: apt-get install dataset-fashion-mnist), or give the folder holding train-images-idx3-ubyte(.gz)";

    /// <summary>
    /// Finds the four files in <paramref name="directory"/> (default: Debian's location), gzipped or
    /// not. Returns null when any is missing.
    /// </summary>
    public static MnistFiles? Locate(string? directory = null)
    {
        directory ??= DebianDirectory;
        string? Find(string stem)
        {
            foreach (string name in new[] { stem + ".gz", stem })
            {
                string path = Path.Combine(directory, name);
                if (File.Exists(path))
                    return path;
            }
            return null;
        }
        string? trainImages = Find("train-images-idx3-ubyte"), trainLabels = Find("train-labels-idx1-ubyte");
        string? testImages = Find("t10k-images-idx3-ubyte"), testLabels = Find("t10k-labels-idx1-ubyte");
        return trainImages is null || trainLabels is null || testImages is null || testLabels is null
            ? null
            : new MnistFiles(trainImages, trainLabels, testImages, testLabels);
    }

}
