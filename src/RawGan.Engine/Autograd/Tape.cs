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
public static partial class Tape
{
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
        if (gradOutputs != null && gradOutputs.Count != outputs.Count)
            throw new ArgumentException($"Grad: {outputs.Count} outputs but {gradOutputs.Count} output gradients");
        var results = new Tensor[inputs.Count];
        GradInto([.. outputs], [.. inputs], results, gradOutputs == null ? default : [.. gradOutputs], createGraph);
        return results;
    }

    /// <summary>Single-output, single-input convenience form of <see cref="Grad(IReadOnlyList{Tensor}, IReadOnlyList{Tensor}, IReadOnlyList{Tensor}?, bool)"/>.</summary>
    public static Tensor Grad(Tensor output, Tensor input, Tensor? gradOutput = null, bool createGraph = false)
    {
        Tensor result = null!;
        GradInto(new ReadOnlySpan<Tensor>(in output), new ReadOnlySpan<Tensor>(in input), new Span<Tensor>(ref result),
            gradOutput == null ? default : new ReadOnlySpan<Tensor>(in gradOutput), createGraph);
        return result;
    }

    /// <summary>
    /// <see cref="Grad(IReadOnlyList{Tensor}, IReadOnlyList{Tensor}, IReadOnlyList{Tensor}?, bool)"/>
    /// writing the gradients into <paramref name="results"/> (one per input) instead of a new
    /// array, so that a training step can reuse its arrays. No <paramref name="gradOutputs"/>
    /// (an empty span) means none are given.
    /// </summary>
    public static void GradInto(ReadOnlySpan<Tensor> outputs, ReadOnlySpan<Tensor> inputs, Span<Tensor> results,
        ReadOnlySpan<Tensor> gradOutputs = default, bool createGraph = false)
    {
        if (results.Length != inputs.Length)
            throw new ArgumentException($"Grad: {inputs.Length} inputs but room for {results.Length} results");
        var work = Workspace.Rent();
        try
        {
            foreach (var x in inputs) work.InputSet.Add(x);
            // Without createGraph nothing refers to the intermediate gradients afterwards: make them in
            // a scope of their own and hand only the results to the caller's scope.
            using var scratch = createGraph ? null : Scope.Rent();
            Run(work, outputs, gradOutputs, createGraph, collectLeaves: false);
            for (int i = 0; i < inputs.Length; i++)
            {
                var x = inputs[i];
                results[i] = work.Grads.TryGetValue(x, out var g) ? g : Tensor.Zeros(x.Backend, x.Shape);
                scratch?.Keep(results[i]);
            }
        }
        finally
        {
            Workspace.Return(work);
        }
    }

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
        var work = Workspace.Rent();
        try
        {
            using var scope = Scope.Rent();
            Run(work, new ReadOnlySpan<Tensor>(in loss), default, createGraph: false, collectLeaves: true);
            foreach (var leaf in work.Leaves)
                if (work.Grads.TryGetValue(leaf, out var g)) leaf.AccumulateGrad(g);
        }
        finally
        {
            Workspace.Return(work);
        }
    }

    /// <summary>The backward pass: order the graph, keep what leads to the inputs, walk it backwards.</summary>
    private static void Run(Workspace work, ReadOnlySpan<Tensor> outputs, ReadOnlySpan<Tensor> gradOutputs, bool createGraph, bool collectLeaves)
    {
        if (!gradOutputs.IsEmpty && gradOutputs.Length != outputs.Length)
            throw new ArgumentException($"Grad: {outputs.Length} outputs but {gradOutputs.Length} output gradients");
        TopologicalOrder(work, outputs, collectLeaves);
        MarkNeeded(work);
        using var mode = createGraph ? EnableGrad() : NoGrad();
        Seed(work.Grads, outputs, gradOutputs);
        var order = work.Order;
        for (int n = order.Count - 1; n >= 0; n--)
        {
            var node = order[n];
            if (work.Needed.Contains(node) && work.Grads.TryGetValue(node.Output, out var gy)) Step(work, node, gy);
        }
    }

    /// <summary>1. Nodes in post-order (every node after the nodes of its inputs), by an explicit-stack
    /// DFS so that deep graphs (a recorded backward pass doubles the depth) cannot overflow the stack.
    /// Backward's targets are the leaves it finds; Grad's are the inputs it was given.</summary>
    private static void TopologicalOrder(Workspace work, ReadOnlySpan<Tensor> outputs, bool collectLeaves)
    {
        var (visited, stack) = (work.Visited, work.Stack);
        foreach (var o in outputs)
        {
            if (o.GradFn == null || !visited.Add(o.GradFn)) continue;
            stack.Push((o.GradFn, 0));
            while (stack.Count > 0)
            {
                var (node, next) = stack.Pop();
                if (next == node.Inputs.Length)
                {
                    work.Order.Add(node);
                    continue;
                }
                stack.Push((node, next + 1));
                var input = node.Inputs[next];
                // A freed tensor has lost its node (nodes are pooled), and a recycled one is
                // another tensor now: say so rather than silently computing something else.
                if (!node.StillHas(next))
                    throw new InvalidOperationException($"backward of {node.Op}: its input {input.Describe()} was freed before the backward pass (did its Scope end?)");
                if (input.GradFn != null)
                {
                    if (visited.Add(input.GradFn)) stack.Push((input.GradFn, 0));
                }
                else if (collectLeaves && input.RequiresGrad && work.InputSet.Add(input)) work.Leaves.Add(input);
            }
        }
    }

    /// <summary>2. Keep only nodes on a path to a requested input, so that (for example) the gradient
    /// with respect to an activation does not also run the backward pass of everything before it.</summary>
    private static void MarkNeeded(Workspace work)
    {
        foreach (var node in work.Order)
            foreach (var input in node.Inputs)
                if (LeadsToATarget(work, input))
                {
                    work.Needed.Add(node);
                    break;
                }
    }

    private static bool LeadsToATarget(Workspace work, Tensor t) => work.InputSet.Contains(t) || (t.GradFn != null && work.Needed.Contains(t.GradFn));

    /// <summary>3. The output gradients: given, or 1 for a one-element output.</summary>
    private static void Seed(Dictionary<Tensor, Tensor> grads, ReadOnlySpan<Tensor> outputs, ReadOnlySpan<Tensor> gradOutputs)
    {
        for (int k = 0; k < outputs.Length; k++)
        {
            var o = outputs[k];
            Tensor seed;
            if (!gradOutputs.IsEmpty)
            {
                seed = gradOutputs[k];
                if (seed.Shape != o.Shape)
                    throw new ArgumentException($"Grad: output gradient {seed.Describe()} does not match output {o.Describe()}");
            }
            else if (o.Length == 1) seed = Tensor.Ones(o.Backend, o.Shape);
            else throw new ArgumentException($"Grad: output {o.Describe()} has {o.Length} elements; pass its gradient explicitly");
            Accumulate(grads, o, seed);
        }
    }

    /// <summary>4. One node's backward rule: the gradients of the inputs that lead to a target,
    /// added to what those inputs already received.</summary>
    private static void Step(Workspace work, Node node, Tensor gy)
    {
        ulong mask = 0;
        for (int i = 0; i < node.Inputs.Length && i < 64; i++)
            if (node.Inputs[i].RequiresGrad && LeadsToATarget(work, node.Inputs[i])) mask |= 1UL << i;
        node.WantedMask = mask | (node.Inputs.Length > 64 ? ~0UL << 63 : 0);
        if (!node.StillHas(-1))
            throw new InvalidOperationException($"backward of {node.Op}: the tensor it saved from the forward pass was freed before the backward pass (did its Scope end?)");
        var gin = work.GradInputs(node.Inputs.Length);
        node.Backward(node, gy, gin);
        for (int i = 0; i < gin.Length; i++)
        {
            var input = node.Inputs[i];
            if (gin[i] is not { } g || !input.RequiresGrad || !node.Wants(i)) continue;
            if (g.Shape != input.Shape)
                throw new InvalidOperationException($"backward of {node.Op}: gradient {g.Shape} for input {i} of shape {input.Shape}");
            Accumulate(work.Grads, input, g);
        }
        Array.Clear(gin);
    }

    private static void Accumulate(Dictionary<Tensor, Tensor> grads, Tensor x, Tensor g)
    {
        grads[x] = grads.TryGetValue(x, out var existing) ? Ops.Add(existing, g) : g;
    }
}
