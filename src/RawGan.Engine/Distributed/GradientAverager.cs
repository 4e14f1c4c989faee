using RawGan.Engine.Backends;

namespace RawGan.Engine.Distributed;

/// <summary>
/// Averages a list of gradients over the ranks in one collective call: every gradient is copied
/// into one flat buffer (a "bucket"), a few host values (losses, scores) are appended, the
/// bucket is all-reduced and scaled by 1 / ranks, and the gradients are copied back. The bucket
/// is made once and reused, so a steady step allocates nothing. A NaN on any rank reaches every
/// rank through the sum, so a non-finite check after averaging decides the same on all.
/// </summary>
public sealed class GradientAverager : IDisposable
{
    private readonly ICollective _collective;
    private readonly IBackend _backend;
    private readonly long[] _offsets;
    private readonly long _gradients;
    private readonly int _extras;
    private readonly DeviceBuffer _bucket;
    private readonly float[] _hostExtras;

    /// <param name="collective">The ranks to average over.</param>
    /// <param name="backend">Where the gradients live.</param>
    /// <param name="shapes">The lengths of the gradients, in the order they will be given.</param>
    /// <param name="extras">How many host values ride along with each call.</param>
    public GradientAverager(ICollective collective, IBackend backend, IReadOnlyList<long> shapes, int extras)
    {
        _collective = collective;
        _backend = backend;
        _offsets = new long[shapes.Count];
        long total = 0;
        for (int i = 0; i < shapes.Count; i++)
        {
            _offsets[i] = total;
            total += shapes[i];
        }
        _gradients = total;
        _extras = extras;
        _bucket = backend.Allocate(total + extras);
        _hostExtras = new float[extras];
    }

    /// <summary>Bytes each call sends through the collective (for the README's numbers and logs).</summary>
    public long BytesPerCall => (_gradients + _extras) * sizeof(float);

    /// <summary>Replaces each gradient, and each value of <paramref name="extras"/>, by its mean over the ranks.</summary>
    public void Average(ReadOnlySpan<Tensor> gradients, Span<float> extras)
    {
        if (gradients.Length != _offsets.Length || extras.Length != _extras)
            throw new ArgumentException($"GradientAverager: made for {_offsets.Length} gradients and {_extras} values, given {gradients.Length} and {extras.Length}");
        for (int i = 0; i < gradients.Length; i++) _backend.Copy(gradients[i].Buffer, Slice(_offsets[i], gradients[i].Length), gradients[i].Length);
        extras.CopyTo(_hostExtras);
        _backend.Upload(_hostExtras, Slice(_gradients, _extras));
        _collective.AllReduceSum(_backend, _bucket, _gradients + _extras);
        _backend.Scale(_bucket, _bucket, _gradients + _extras, 1f / _collective.Size);
        for (int i = 0; i < gradients.Length; i++) _backend.Copy(Slice(_offsets[i], gradients[i].Length), gradients[i].Buffer, gradients[i].Length);
        _backend.Download(Slice(_gradients, _extras), _hostExtras);
        _hostExtras.CopyTo(extras);
    }

    private DeviceBuffer Slice(long offset, long length) => _bucket.Slice(offset, length);

    public void Dispose() => _backend.Free(_bucket);
}
