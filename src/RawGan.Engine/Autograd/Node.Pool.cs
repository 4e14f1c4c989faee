namespace RawGan.Engine.Autograd;

// Ops take nodes from a per-thread pool and a node goes back to it when its output tensor is
// disposed: a training step records hundreds of nodes, and nothing can reach a node once its
// output is gone (only the output's Tensor.GradFn refers to it, and that is cleared). This is for
// speed alone (a steady step allocates nothing); Node.cs is what a node is.
public sealed partial class Node
{
    private const int MaxPooled = 4096;
    // By number of inputs (1 or 2: nearly every op; 3: a convolution layer with its bias), so that a
    // pooled node keeps its input array.
    [ThreadStatic] private static Stack<Node>? _free1, _free2, _free3;
    private readonly bool _pooled;

    private Node(int inputs)
    {
        _pooled = true;
        Op = "";
        Inputs = new Tensor[inputs];
        _generations = new int[inputs];
        Output = null!;
        Backward = null!;
    }

    /// <summary>A node for a one-input op, from the pool.</summary>
    internal static Node Record(string op, Tensor input, Tensor output, BackwardRule backward)
    {
        var node = (_free1 ??= new()).TryPop(out var n) ? n : new Node(1);
        node.Inputs[0] = input;
        node._generations[0] = input.Generation;
        return node.Begin(op, output, backward);
    }

    /// <summary>A node for a two-input op, from the pool.</summary>
    internal static Node Record(string op, Tensor a, Tensor b, Tensor output, BackwardRule backward)
    {
        var node = (_free2 ??= new()).TryPop(out var n) ? n : new Node(2);
        node.Inputs[0] = a;
        node.Inputs[1] = b;
        node._generations[0] = a.Generation;
        node._generations[1] = b.Generation;
        return node.Begin(op, output, backward);
    }

    /// <summary>A node for a three-input op, from the pool.</summary>
    internal static Node Record(string op, Tensor a, Tensor b, Tensor c, Tensor output, BackwardRule backward)
    {
        var node = (_free3 ??= new()).TryPop(out var n) ? n : new Node(3);
        node.Inputs[0] = a;
        node.Inputs[1] = b;
        node.Inputs[2] = c;
        node._generations[0] = a.Generation;
        node._generations[1] = b.Generation;
        node._generations[2] = c.Generation;
        return node.Begin(op, output, backward);
    }

    /// <summary>Back to the pool (called when the output is disposed); a node made with the public constructor is left alone.</summary>
    internal void Recycle()
    {
        if (!_pooled) return;
        Array.Clear(Inputs);
        (Op, Output, Backward, Saved) = ("", null!, null!, null);
        With();
        WantedMask = ulong.MaxValue;
        var free = Inputs.Length switch { 1 => _free1 ??= new(), 2 => _free2 ??= new(), _ => _free3 ??= new() };
        if (free.Count < MaxPooled) free.Push(this);
    }
}
