namespace RawGan.Engine.Autograd;

// The bookkeeping of a backward pass, kept out of Tape.cs so that the algorithm reads on one
// screen. It exists for speed alone: a steady training step must allocate nothing (a GPU step of
// a few milliseconds cannot afford garbage-collector pauses, and a CUDA graph replays a step only
// if it is the same every time), so the collections are reused rather than made anew.
public static partial class Tape
{
    /// <summary>
    /// The collections one backward pass needs. They are kept and cleared between passes rather
    /// than made anew: a training step runs several passes, and a pass can start another one
    /// (a fused op's recorded backward), hence a small stack of them per thread.
    /// </summary>
    private sealed class Workspace
    {
        [ThreadStatic] private static Stack<Workspace>? _free;

        public readonly List<Node> Order = new();
        public readonly HashSet<Node> Visited = new(ReferenceEqualityComparer.Instance);
        public readonly Stack<(Node node, int next)> Stack = new();
        public readonly List<Tensor> Leaves = new();
        public readonly HashSet<Tensor> InputSet = new(ReferenceEqualityComparer.Instance);
        public readonly HashSet<Node> Needed = new(ReferenceEqualityComparer.Instance);
        public readonly Dictionary<Tensor, Tensor> Grads = new(ReferenceEqualityComparer.Instance);
        private readonly List<Tensor?[]> _gradInputs = new();     // by length: the array handed to backward rules

        public static Workspace Rent() => (_free ??= new()).TryPop(out var w) ? w : new Workspace();

        public static void Return(Workspace w)
        {
            // Cleared now, so that a workspace never keeps tensors alive between passes.
            w.Order.Clear(); w.Visited.Clear(); w.Stack.Clear(); w.Leaves.Clear();
            w.InputSet.Clear(); w.Needed.Clear(); w.Grads.Clear();
            _free!.Push(w);
        }

        /// <summary>An array of nulls of the given length, for one backward rule's results.</summary>
        public Tensor?[] GradInputs(int length)
        {
            while (_gradInputs.Count <= length) _gradInputs.Add(new Tensor?[_gradInputs.Count]);
            var a = _gradInputs[length];
            Array.Clear(a);
            return a;
        }
    }

}
