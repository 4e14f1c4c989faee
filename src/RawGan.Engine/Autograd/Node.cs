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
/// </summary>
public sealed class Node
{
    public Node(string op, Tensor[] inputs, Tensor output, BackwardRule backward)
    {
        Op = op;
        Inputs = inputs;
        Output = output;
        Backward = backward;
    }

    /// <summary>The op's name, for error messages and graph dumps.</summary>
    public string Op { get; }
    public Tensor[] Inputs { get; }
    public Tensor Output { get; }
    public BackwardRule Backward { get; }

    /// <summary>A tensor kept from the forward pass besides inputs and output (e.g. a norm).</summary>
    public Tensor? Saved { get; init; }
    /// <summary>Scalar arguments of the op (scale, slope, alpha, eps...).</summary>
    public float A { get; init; }
    public float B { get; init; }
    /// <summary>Integer arguments of the op (group size, channel offset...).</summary>
    public int I { get; init; }
    public int J { get; init; }
    /// <summary>Flags of the op (transposes...).</summary>
    public bool F { get; init; }
    public bool G { get; init; }

    /// <summary>
    /// Which inputs the running backward pass needs a gradient for (set by the tape before it
    /// calls <see cref="Backward"/>): an input that requires a gradient but leads to none of the
    /// tensors asked for is skipped. The critic's weight gradients, for example, are never
    /// computed while taking the gradient with respect to x_hat or to the generator.
    /// </summary>
    public bool Wants(int input) => input >= 64 || ((WantedMask >> input) & 1) != 0;

    internal ulong WantedMask { get; set; } = ulong.MaxValue;

    public override string ToString() => $"{Op}({string.Join(", ", Inputs.Select(i => i.Describe()))}) -> {Output.Describe()}";
}
