namespace RawGan.Engine.Autograd;

/// <summary>
/// Computes the gradients of an op's inputs from the gradient of its output. A rule is written
/// with the differentiable <see cref="Ops"/> themselves, so when the tape runs it while recording
/// (createGraph), the backward pass becomes part of the graph and can be differentiated again.
/// Rules are static lambdas: everything they need is on the node.
/// </summary>
/// <param name="node">The op being differentiated.</param>
/// <param name="gradOutput">d loss / d output, shaped like the output.</param>
/// <param name="gradInputs">Filled with d loss / d input for each input that requires a gradient
/// (entries for other inputs may be left null).</param>
public delegate void BackwardRule(Node node, Tensor gradOutput, Tensor?[] gradInputs);

/// <summary>
/// One recorded op: its inputs, its output, the backward rule, and a few values the rule needs
/// (a scale, a slope, a flag). Nothing more.
///
/// Ops take nodes from a per-thread pool (<see cref="Record(string, Tensor, Tensor, BackwardRule)"/>)
/// and a node goes back to it when its output tensor is disposed: a training step records
/// hundreds of nodes, and nothing can reach a node once its output is gone (only the output's
/// <see cref="Tensor.GradFn"/> refers to it, and that is cleared).
/// </summary>
public sealed class Node
{
    private const int MaxPooled = 4096;
    // By number of inputs (1 or 2: nearly every op), so that a pooled node keeps its input array.
    [ThreadStatic] private static Stack<Node>? _free1, _free2;
    private readonly bool _pooled;

    public Node(string op, Tensor[] inputs, Tensor output, BackwardRule backward)
    {
        Op = op;
        Inputs = inputs;
        _generations = new int[inputs.Length];
        for (int i = 0; i < inputs.Length; i++) _generations[i] = inputs[i].Generation;
        Output = output;
        Backward = backward;
    }

    private Node(int inputs)
    {
        _pooled = true;
        Op = "";
        Inputs = new Tensor[inputs];
        _generations = new int[inputs];
        Output = null!;
        Backward = null!;
    }

    // The inputs' (and Saved's) generations when recorded: a recycling scope may hand a freed
    // input's object out again, and the tape must not mistake the new tensor for the old one.
    private readonly int[] _generations;
    private int _savedGeneration;

    /// <summary>A node for a one-input op, from the pool.</summary>
    internal static Node Record(string op, Tensor input, Tensor output, BackwardRule backward)
    {
        var node = (_free1 ??= new()).TryPop(out var n) ? n : new Node(1);
        node.Inputs[0] = input;
        node._generations[0] = input.Generation;
        return node.Start(op, output, backward);
    }

    /// <summary>A node for a two-input op, from the pool.</summary>
    internal static Node Record(string op, Tensor a, Tensor b, Tensor output, BackwardRule backward)
    {
        var node = (_free2 ??= new()).TryPop(out var n) ? n : new Node(2);
        node.Inputs[0] = a;
        node.Inputs[1] = b;
        node._generations[0] = a.Generation;
        node._generations[1] = b.Generation;
        return node.Start(op, output, backward);
    }

    /// <summary>True if input i (or, for -1, <see cref="Saved"/>) is still the tensor that was recorded: not freed, not recycled.</summary>
    internal bool StillHas(int input)
    {
        if (input < 0) return Saved is not { } saved || (!saved.IsDisposed && saved.Generation == _savedGeneration);
        var t = Inputs[input];
        return !t.IsDisposed && t.Generation == _generations[input];
    }

    private Node Start(string op, Tensor output, BackwardRule backward)
    {
        Op = op;
        Output = output;
        Backward = backward;
        return this;
    }

    /// <summary>Sets the op's arguments (what an object initializer would, on a pooled node).</summary>
    internal Node With(float a = 0, int i = 0, bool f = false, bool g = false, Tensor? saved = null)
    {
        (A, I, F, G, Saved) = (a, i, f, g, saved);
        return this;
    }

    /// <summary>Back to the pool (called when the output is disposed); a node made with the public constructor is left alone.</summary>
    internal void Recycle()
    {
        if (!_pooled) return;
        Array.Clear(Inputs);
        (Op, Output, Backward, Saved) = ("", null!, null!, null);
        (A, B, I, J, F, G) = (0, 0, 0, 0, false, false);
        WantedMask = ulong.MaxValue;
        var free = Inputs.Length == 1 ? (_free1 ??= new()) : (_free2 ??= new());
        if (free.Count < MaxPooled) free.Push(this);
    }

    /// <summary>The op's name, for error messages and graph dumps.</summary>
    public string Op { get; private set; }
    public Tensor[] Inputs { get; }
    public Tensor Output { get; private set; }
    public BackwardRule Backward { get; private set; }

    /// <summary>A tensor kept from the forward pass besides inputs and output (e.g. a norm).</summary>
    public Tensor? Saved
    {
        get => _saved;
        set
        {
            _saved = value;
            _savedGeneration = value?.Generation ?? 0;
        }
    }
    private Tensor? _saved;
    /// <summary>Scalar arguments of the op (scale, slope, alpha, eps...).</summary>
    public float A { get; set; }
    public float B { get; set; }
    /// <summary>Integer arguments of the op (group size, channel offset...).</summary>
    public int I { get; set; }
    public int J { get; set; }
    /// <summary>Flags of the op (transposes...).</summary>
    public bool F { get; set; }
    public bool G { get; set; }

    /// <summary>
    /// Which inputs the running backward pass needs a gradient for (set by the tape before it
    /// calls <see cref="Backward"/>): an input that requires a gradient but leads to none of the
    /// tensors asked for is skipped: taking the gradient with respect to a network's input never
    /// computes its weight gradients.
    /// </summary>
    public bool Wants(int input) => input >= 64 || ((WantedMask >> input) & 1) != 0;

    internal ulong WantedMask { get; set; } = ulong.MaxValue;

    public override string ToString() => $"{Op}({string.Join(", ", Inputs.Select(i => i.Describe()))}) -> {Output.Describe()}";
}
