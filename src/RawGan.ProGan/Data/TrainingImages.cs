namespace RawGan.ProGan.Data;

/// <summary>Real images for training, at every power-of-two resolution up to <see cref="Resolution"/>.</summary>
public interface ITrainingImages
{
    /// <summary>What the data is, for logs and the report ("shapes", a folder, "fashion-mnist").</summary>
    string Name { get; }
    int Count { get; }
    int Channels { get; }
    int Resolution { get; }

    /// <summary>Writes images[indices] at <paramref name="resolution"/> as [n, C, r, r] floats in
    /// [-1, 1], mirrored left-right where <paramref name="mirror"/> says so.</summary>
    void FillBatch(ReadOnlySpan<int> indices, int resolution, ReadOnlySpan<bool> mirror, Span<float> destination);
}
