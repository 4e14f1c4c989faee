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
/// One recorded op: its inputs, its output, the backward rule, and the few arguments the rule
/// needs (a scale, a slope, a flag), by name. Nothing more. Ops take nodes from a pool
/// (Node.Pool.cs).
/// </summary>
public sealed partial class Node
{

    public Node(string op, Tensor[] inputs, Tensor output, BackwardRule backward)
    {
        Op = op;
        Inputs = inputs;
        _generations = new int[inputs.Length];
        for (int i = 0; i < inputs.Length; i++) _generations[i] = inputs[i].Generation;
        Output = output;
        Backward = backward;
    }


    // The inputs' (and Saved's) generations when recorded: a recycling scope may hand a freed
    // input's object out again, and the tape must not mistake the new tensor for the old one.
    private readonly int[] _generations;
    private int _savedGeneration;



    /// <summary>True if input i (or, for -1, <see cref="Saved"/>) is still the tensor that was recorded: not freed, not recycled.</summary>
    internal bool StillHas(int input)
    {
        if (input < 0) return Saved is not { } saved || (!saved.IsDisposed && saved.Generation == _savedGeneration);
        var t = Inputs[input];
        return !t.IsDisposed && t.Generation == _generations[input];
    }

    private Node Begin(string op, Tensor output, BackwardRule backward)
    {
        Op = op;
        Output = output;
        Backward = backward;
        return this;
    }

    /// <summary>Sets the op's arguments (what an object initializer would, on a pooled node).</summary>
    internal Node With(float scale = 0, float slope = 0, float t = 0, float epsilon = 0, float target = 0,
        int groupSize = 0, int start = 0, bool transposeA = false, bool transposeB = false, Tensor? saved = null)
    {
        (Scale, Slope, T, Epsilon, Target) = (scale, slope, t, epsilon, target);
        (GroupSize, Start, TransposeA, TransposeB, Saved) = (groupSize, start, transposeA, transposeB, saved);
        return this;
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
    // The op's arguments that its backward rule needs; each op sets the ones it has.
    /// <summary>A multiplier: a convolution's equalized-learning-rate scale, a matrix product's alpha, a gain.</summary>
    public float Scale { get; private set; }
    /// <summary>Leaky ReLU's slope for negative inputs.</summary>
    public float Slope { get; private set; }
    /// <summary>A lerp's weight of its second operand.</summary>
    public float T { get; private set; }
    /// <summary>The epsilon inside a square root (pixel norm, minibatch stddev).</summary>
    public float Epsilon { get; private set; }
    /// <summary>The norm a gradient penalty pulls toward.</summary>
    public float Target { get; private set; }
    /// <summary>Minibatch stddev's group size.</summary>
    public int GroupSize { get; private set; }
    /// <summary>The first channel of a channel slice or pad.</summary>
    public int Start { get; private set; }
    /// <summary>Whether a matrix product's first or second operand is transposed.</summary>
    public bool TransposeA { get; private set; }
    public bool TransposeB { get; private set; }

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
