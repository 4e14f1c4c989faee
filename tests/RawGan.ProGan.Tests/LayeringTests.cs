using System.Reflection;
using System.Reflection.Emit;
using RawGan.Engine;
using RawGan.ProGan.Model;

namespace RawGan.ProGan.Tests;

/// <summary>
/// The layering of docs/DESIGN.md, checked on the compiled code: every type a type mentions (base
/// types, fields, signatures, and every type, method and field its IL refers to) is collected
/// by reflection, and each rule below names what one namespace may not reach. A new arrow that
/// breaks the design fails here with the referring type and the type it reached.
/// </summary>
public class LayeringTests
{
    private static readonly Assembly EngineAssembly = typeof(Tensor).Assembly, ProGanAssembly = typeof(Generator).Assembly;

    /// <summary>Namespace (and sub-namespaces) -> what it may not use (namespace prefixes or full type names).</summary>
    private static readonly (string from, string[] forbidden, string why)[] Rules =
    [
        ("RawGan.Engine.Backends", ["RawGan.Engine.Autograd", "RawGan.Engine.Optim", "RawGan.Engine.Tensor", "RawGan.Engine.Scope", "RawGan.Engine.Shape"],
            "backends know nothing of tensors or the tape: they take buffers and sizes"),
        ("RawGan.Engine.Backends.Cpu", ["RawGan.Engine.Backends.Cuda", "RawGan.Engine.Backends.Reference"], "the CPU backend stands alone"),
        ("RawGan.Engine.Backends.Cuda", ["RawGan.Engine.Backends.Cpu", "RawGan.Engine.Backends.Reference"], "the CUDA backend stands alone"),
        ("RawGan.Engine.Backends.Reference", ["RawGan.Engine.Backends.Cpu", "RawGan.Engine.Backends.Cuda"], "the reference is independent of what it checks"),
        ("RawGan.Engine", ["RawGan.ProGan", "RawGan.Trainer"], "the engine knows nothing of GANs or the command line"),
        ("RawGan.ProGan", ["RawGan.Trainer"], "the model and its training know nothing of the command line"),
    ];

    /// <summary>RawGan.ProGan's namespaces from the bottom up: each may use only those before it.</summary>
    private static readonly string[] ProGanLayers = ["IO", "Imaging", "Checkpoints", "Data", "Nn", "Model", "Metrics", "Training"];

    [Fact]
    public void EveryReferenceFollowsTheLayers()
    {
        var violations = new List<string>();
        foreach (var (type, used) in References(EngineAssembly).Concat(References(ProGanAssembly)))
        {
            string from = Namespace(type);
            foreach (var (rule, forbidden, why) in Rules)
            {
                if (!Within(from, rule)) continue;
                foreach (var target in used)
                    if (forbidden.Any(f => Within(Namespace(target), f) || target.FullName == f))
                        violations.Add($"{Name(type)} -> {Name(target)} ({why})");
            }
        }
        Assert.True(violations.Count == 0, "layering violations:\n" + string.Join("\n", violations.Distinct().Order()));
    }

    [Fact]
    public void RawGanProGanNamespacesFormALadder()
    {
        var violations = new List<string>();
        foreach (var (type, used) in References(ProGanAssembly))
        {
            int from = Layer(Namespace(type));
            foreach (var target in used.Where(t => t.Assembly == ProGanAssembly))
            {
                int to = Layer(Namespace(target));
                if (from >= 0 && to > from)
                    violations.Add($"{Name(type)} ({ProGanLayers[from]}) -> {Name(target)} ({ProGanLayers[to]})");
            }
        }
        Assert.True(violations.Count == 0, $"RawGan.ProGan's namespaces go {string.Join(" < ", ProGanLayers)}; these point up:\n" +
                                           string.Join("\n", violations.Distinct().Order()));
    }

    [Fact]
    public void TheEngineReferencesNoOtherRawGanAssembly()
    {
        Assert.DoesNotContain(EngineAssembly.GetReferencedAssemblies(), a => a.Name!.StartsWith("RawGan", StringComparison.Ordinal));
        Assert.DoesNotContain(ProGanAssembly.GetReferencedAssemblies(), a => a.Name == "rawgan" || a.Name!.StartsWith("RawGan.Trainer", StringComparison.Ordinal));
    }

    [Fact]
    public void TheScannerSeesReferencesInsideMethodBodies()
    {
        // A method body that only calls another class (no field or signature mentions it) must
        // still count: this test's own Probe refers to Tensor only through a call in its body.
        var (_, used) = References(typeof(LayeringTests).Assembly).Single(r => r.type == typeof(Probe));
        Assert.Contains(typeof(Tensor), used);
        Assert.Contains(typeof(RawGan.Engine.Backends.Cpu.CpuBackend), used);
    }

    private static class Probe
    {
        public static object Make() => Tensor.Zeros(RawGan.Engine.Backends.Cpu.CpuBackend.Shared, new Shape(1));
    }

    // ------------------------------------------------------------------ the scanner

    private static int Layer(string ns)
    {
        const string root = "RawGan.ProGan.";
        if (!ns.StartsWith(root, StringComparison.Ordinal)) return -1;
        string first = ns[root.Length..].Split('.')[0];
        int i = Array.IndexOf(ProGanLayers, first);
        Assert.True(i >= 0, $"namespace {ns} is not in the ladder {string.Join(", ", ProGanLayers)}: place it");
        return i;
    }

    private static bool Within(string ns, string prefix) => ns == prefix || ns.StartsWith(prefix + ".", StringComparison.Ordinal);

    private static string Namespace(Type t)
    {
        while (t.IsNested) t = t.DeclaringType!;
        return t.Namespace ?? "";
    }

    private static string Name(Type t) => t.FullName ?? t.Name;

    private const BindingFlags All = BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Instance | BindingFlags.Static | BindingFlags.DeclaredOnly;

    private static readonly Dictionary<short, OpCode> OpCodesByValue = typeof(OpCodes).GetFields(BindingFlags.Public | BindingFlags.Static)
        .Select(f => (OpCode)f.GetValue(null)!).ToDictionary(o => o.Value);

    /// <summary>Every type of <paramref name="assembly"/> with the set of types it refers to.</summary>
    private static IEnumerable<(Type type, HashSet<Type> used)> References(Assembly assembly)
    {
        foreach (var type in assembly.GetTypes())
        {
            var used = new HashSet<Type>();
            void Add(Type? t)
            {
                if (t == null) return;
                while (t.HasElementType) t = t.GetElementType()!;
                if (t.IsGenericParameter) return;
                if (t.IsGenericType && !t.IsGenericTypeDefinition)
                {
                    foreach (var a in t.GetGenericArguments()) Add(a);
                    t = t.GetGenericTypeDefinition();
                }
                if (used.Add(t) && t.IsNested) Add(t.DeclaringType);
            }
            Add(type.BaseType);
            foreach (var i in type.GetInterfaces()) Add(i);
            foreach (var f in type.GetFields(All)) Add(f.FieldType);
            foreach (var p in type.GetProperties(All)) Add(p.PropertyType);
            foreach (var m in type.GetMethods(All).Cast<MethodBase>().Concat(type.GetConstructors(All)))
            {
                if (m is MethodInfo mi) Add(mi.ReturnType);
                foreach (var p in m.GetParameters()) Add(p.ParameterType);
                foreach (var t in BodyReferences(m)) Add(t);
            }
            used.Remove(type);
            yield return (type, used);
        }
    }

    /// <summary>The types named by the operands of a method body's IL: calls, fields, type tokens.</summary>
    private static IEnumerable<Type> BodyReferences(MethodBase method)
    {
        byte[]? il;
        try { il = method.GetMethodBody()?.GetILAsByteArray(); }
        catch (InvalidOperationException) { yield break; }
        if (il == null) yield break;
        var module = method.Module;
        Type[]? typeArgs = method.DeclaringType is { IsGenericType: true } d ? d.GetGenericArguments() : null;
        Type[]? methodArgs = method.IsGenericMethod ? method.GetGenericArguments() : null;
        for (int pc = 0; pc < il.Length;)
        {
            short value = il[pc] == 0xFE ? (short)(0xFE00 | il[pc + 1]) : il[pc];
            pc += il[pc] == 0xFE ? 2 : 1;
            if (!OpCodesByValue.TryGetValue(value, out var op)) yield break;   // not an opcode we know: stop rather than misread
            switch (op.OperandType)
            {
                case OperandType.InlineMethod or OperandType.InlineField or OperandType.InlineType or OperandType.InlineTok:
                    int token = BitConverter.ToInt32(il, pc);
                    MemberInfo? member = null;
                    try { member = module.ResolveMember(token, typeArgs, methodArgs); }
                    catch (ArgumentException) { }
                    if (member is Type t) yield return t;
                    else if (member != null)
                    {
                        if (member.DeclaringType != null) yield return member.DeclaringType;
                        if (member is FieldInfo f) yield return f.FieldType;
                        if (member is MethodInfo m)
                        {
                            yield return m.ReturnType;
                            if (m.IsGenericMethod) foreach (var a in m.GetGenericArguments()) yield return a;
                        }
                    }
                    pc += 4;
                    break;
                case OperandType.InlineSwitch:
                    pc += 4 + 4 * BitConverter.ToInt32(il, pc);
                    break;
                case OperandType.InlineNone:
                    break;
                case OperandType.ShortInlineBrTarget or OperandType.ShortInlineI or OperandType.ShortInlineVar:
                    pc += 1;
                    break;
                case OperandType.InlineVar:
                    pc += 2;
                    break;
                case OperandType.InlineI8 or OperandType.InlineR:
                    pc += 8;
                    break;
                default:   // InlineBrTarget, InlineI, InlineSig, InlineString, ShortInlineR
                    pc += 4;
                    break;
            }
        }
    }
}
