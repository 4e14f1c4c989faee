namespace RawGan.Engine.Autograd;

/// <summary>
/// Reverse-mode automatic differentiation over the graph that ops record as they run.
///
/// The graph lives in the tensors: each result of an op on tracked tensors points to its
/// <see cref="Node"/>, which points to its inputs. <c>Grad</c> walks that graph backwards
/// from the outputs, calling each node's rule once all gradients of its output have arrived.
/// With <c>createGraph: true</c> the rules run while recording, so the gradients are themselves
/// tracked tensors: this is how WGAN-GP differentiates the norm of a gradient.
/// </summary>
public static class Tape
{
    [ThreadStatic] private static int _noGradDepth;

    /// <summary>True when ops record nodes (not inside <see cref="NoGrad"/>).</summary>
    public static bool IsRecording => _noGradDepth == 0;

    /// <summary>Stops recording until disposed: for inference, EMA updates, sampling.</summary>
    public static IDisposable NoGrad() => new GradModeGuard(recording: false);

    /// <summary>Recording on again inside a NoGrad block (used when a backward pass must be recorded).</summary>
    internal static IDisposable EnableGrad() => new GradModeGuard(recording: true);

    private sealed class GradModeGuard : IDisposable
    {
        private readonly int _saved;
        private bool _done;

        public GradModeGuard(bool recording)
        {
            _saved = _noGradDepth;
            _noGradDepth = recording ? 0 : _noGradDepth + 1;
        }

        public void Dispose()
        {
            if (_done) return;
            _done = true;
            _noGradDepth = _saved;
        }
    }

    /// <summary>
    /// The gradients of sum_k &lt;gradOutputs[k], outputs[k]&gt; with respect to each input.
    /// A one-element output may omit its gradOutput (1 is used). Inputs the outputs do not depend
    /// on get zeros. With <paramref name="createGraph"/> the result is tracked and can be
    /// differentiated again; otherwise intermediate gradients are freed before returning.
    /// Results belong to the current scope.
    /// </summary>
    public static Tensor[] Grad(IReadOnlyList<Tensor> outputs, IReadOnlyList<Tensor> inputs,
        IReadOnlyList<Tensor>? gradOutputs = null, bool createGraph = false)
    {
        var inputSet = new HashSet<Tensor>(inputs, ReferenceEqualityComparer.Instance);
        // Without createGraph nothing refers to the intermediate gradients afterwards: make them in
        // a scope of their own and hand only the results to the caller's scope.
        using var scratch = createGraph ? null : new Scope();
        var grads = Run(outputs, gradOutputs, createGraph, inputSet, collectLeaves: false, out _);
        var results = new Tensor[inputs.Count];
        for (int i = 0; i < inputs.Count; i++)
        {
            var x = inputs[i];
            results[i] = grads.TryGetValue(x, out var g) ? g : Tensor.Zeros(x.Backend, x.Shape);
            scratch?.Keep(results[i]);
        }
        return results;
    }

    /// <summary>Single-output, single-input convenience form of <see cref="Grad(IReadOnlyList{Tensor}, IReadOnlyList{Tensor}, IReadOnlyList{Tensor}?, bool)"/>.</summary>
    public static Tensor Grad(Tensor output, Tensor input, Tensor? gradOutput = null, bool createGraph = false) =>
        Grad([output], [input], gradOutput == null ? null : [gradOutput], createGraph)[0];

    /// <summary>
    /// Adds d loss / d leaf to <see cref="Tensor.Grad"/> of every leaf that requires a gradient
    /// (parameters). <paramref name="loss"/> must have one element. Temporaries are freed.
    /// </summary>
    public static void Backward(Tensor loss)
    {
        if (loss.Length != 1)
            throw new ArgumentException($"Backward: the loss must have one element, got shape {loss.Shape}; reduce it first (Ops.Mean)");
        if (!loss.RequiresGrad)
            throw new InvalidOperationException($"Backward: the loss {loss.Describe()} does not depend on any tensor that requires a gradient");
        using var scope = new Scope();
        var grads = Run([loss], null, createGraph: false, inputSet: null, collectLeaves: true, out var leaves);
        foreach (var leaf in leaves)
            if (grads.TryGetValue(leaf, out var g)) leaf.AccumulateGrad(g);
    }

    private static Dictionary<Tensor, Tensor> Run(IReadOnlyList<Tensor> outputs, IReadOnlyList<Tensor>? gradOutputs, bool createGraph,
        HashSet<Tensor>? inputSet, bool collectLeaves, out List<Tensor> leaves)
    {
        if (gradOutputs != null && gradOutputs.Count != outputs.Count)
            throw new ArgumentException($"Grad: {outputs.Count} outputs but {gradOutputs.Count} output gradients");

        // 1. Nodes in post-order (every node after the nodes of its inputs), by an explicit-stack DFS
        //    so that deep graphs (a recorded backward pass doubles the depth) cannot overflow the stack.
        var order = new List<Node>();
        var visited = new HashSet<Node>(ReferenceEqualityComparer.Instance);
        var stack = new Stack<(Node node, int next)>();
        leaves = new List<Tensor>();
        var leafSet = new HashSet<Tensor>(ReferenceEqualityComparer.Instance);
        foreach (var o in outputs)
        {
            if (o.GradFn == null || !visited.Add(o.GradFn)) continue;
            stack.Push((o.GradFn, 0));
            while (stack.Count > 0)
            {
                var (node, next) = stack.Pop();
                if (next < node.Inputs.Length)
                {
                    stack.Push((node, next + 1));
                    var input = node.Inputs[next];
                    if (input.GradFn != null)
                    {
                        if (visited.Add(input.GradFn)) stack.Push((input.GradFn, 0));
                    }
                    else if (collectLeaves && input.RequiresGrad && leafSet.Add(input)) leaves.Add(input);
                }
                else order.Add(node);
            }
        }
        if (collectLeaves) inputSet = leafSet;

        // 2. Keep only nodes on a path to a requested input, so that (for example) the gradient with
        //    respect to an activation does not also run the backward pass of everything before it.
        var needed = new HashSet<Node>(ReferenceEqualityComparer.Instance);
        foreach (var node in order)
        {
            foreach (var input in node.Inputs)
            {
                if (inputSet!.Contains(input) || (input.GradFn != null && needed.Contains(input.GradFn)))
                {
                    needed.Add(node);
                    break;
                }
            }
        }

        // 3. Seed with the output gradients and walk backwards.
        var grads = new Dictionary<Tensor, Tensor>(ReferenceEqualityComparer.Instance);
        using var mode = createGraph ? EnableGrad() : NoGrad();
        for (int k = 0; k < outputs.Count; k++)
        {
            var o = outputs[k];
            Tensor seed;
            if (gradOutputs != null)
            {
                seed = gradOutputs[k];
                if (seed.Shape != o.Shape)
                    throw new ArgumentException($"Grad: output gradient {seed.Describe()} does not match output {o.Describe()}");
            }
            else if (o.Length == 1) seed = Tensor.Ones(o.Backend, o.Shape);
            else throw new ArgumentException($"Grad: output {o.Describe()} has {o.Length} elements; pass its gradient explicitly");
            Accumulate(grads, o, seed);
        }

        for (int n = order.Count - 1; n >= 0; n--)
        {
            var node = order[n];
            if (!needed.Contains(node) || !grads.TryGetValue(node.Output, out var gy)) continue;
            var gin = new Tensor?[node.Inputs.Length];
            ulong mask = 0;
            for (int i = 0; i < node.Inputs.Length && i < 64; i++)
            {
                var input = node.Inputs[i];
                if (input.RequiresGrad && (inputSet!.Contains(input) || (input.GradFn != null && needed.Contains(input.GradFn))))
                    mask |= 1UL << i;
            }
            node.WantedMask = mask | (node.Inputs.Length > 64 ? ~0UL << 63 : 0);
            node.Backward(node, gy, gin);
            for (int i = 0; i < gin.Length; i++)
            {
                var input = node.Inputs[i];
                if (gin[i] == null || !input.RequiresGrad || !node.Wants(i)) continue;
                if (gin[i]!.Shape != input.Shape)
                    throw new InvalidOperationException($"backward of {node.Op}: gradient {gin[i]!.Shape} for input {i} of shape {input.Shape}");
                Accumulate(grads, input, gin[i]!);
            }
        }
        return grads;
    }

    private static void Accumulate(Dictionary<Tensor, Tensor> grads, Tensor x, Tensor g)
    {
        grads[x] = grads.TryGetValue(x, out var existing) ? Ops.Add(existing, g) : g;
    }
}
