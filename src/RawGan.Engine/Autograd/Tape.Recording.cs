namespace RawGan.Engine.Autograd;

// Whether ops record nodes: on by default, off inside NoGrad (inference, EMA updates, sampling),
// and on again while a backward pass is itself recorded (createGraph).
public static partial class Tape
{
    [ThreadStatic] private static int _noGradDepth;

    /// <summary>True when ops record nodes (not inside <see cref="NoGrad"/>).</summary>
    public static bool IsRecording => _noGradDepth == 0;

    /// <summary>Stops recording until disposed: for inference, EMA updates, sampling.</summary>
    public static GradMode NoGrad() => new(recording: false);

    /// <summary>Recording on again inside a NoGrad block (used when a backward pass must be recorded).</summary>
    internal static GradMode EnableGrad() => new(recording: true);

    /// <summary>Restores the previous recording mode when disposed. A struct: `using` it allocates nothing.</summary>
    public readonly struct GradMode : IDisposable
    {
        private readonly int _saved;

        internal GradMode(bool recording)
        {
            _saved = _noGradDepth;
            _noGradDepth = recording ? 0 : _noGradDepth + 1;
        }

        public void Dispose() => _noGradDepth = _saved;
    }
}
