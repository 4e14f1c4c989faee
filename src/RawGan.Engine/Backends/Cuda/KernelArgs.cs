using System.Runtime.CompilerServices;

namespace RawGan.Engine.Backends.Cuda;

/// <summary>
/// The arguments of one kernel launch, packed the way cuLaunchKernel wants them: each argument
/// stored with its exact C size (8 bytes for a device pointer or a long long, 4 for an int or a
/// float, 16 for a <see cref="Dims4"/> passed by value as <c>struct dims4 { int d0, d1, d2, d3; }</c>).
/// A struct on the stack: building and launching allocates nothing.
/// </summary>
public unsafe struct KernelArgs
{
    public const int MaxArguments = 20;

    /// <summary>The C type of an argument, as a kernel's parameter list declares it.</summary>
    public enum Kind : byte { Pointer, Int, Long, Float, Dims }

    [InlineArray(MaxArguments * 2)]
    private struct Storage { private ulong _element0; }

    [InlineArray(MaxArguments)]
    private struct Offsets { private int _element0; }

    [InlineArray(MaxArguments)]
    private struct Kinds { private Kind _element0; }

#pragma warning disable CS0649 // written through pointers
    private Storage _storage;     // 8-byte slots
#pragma warning restore CS0649
    private Offsets _offsets;     // first slot of each argument
    private Kinds _kinds;         // and its type (for the test that the .cu signatures match)
    private int _count, _slots;

    public readonly int Count => _count;

    /// <summary>The type of argument <paramref name="i"/>.</summary>
    public readonly Kind KindOf(int i) => (uint)i < (uint)_count ? _kinds[i] : throw new ArgumentOutOfRangeException(nameof(i));

    private void* Next(int slots, Kind kind)
    {
        if (_count == MaxArguments || _slots + slots > MaxArguments * 2)
            throw new InvalidOperationException($"a kernel launch takes at most {MaxArguments} arguments");
        _kinds[_count] = kind;
        _offsets[_count++] = _slots;
        void* slot = Unsafe.AsPointer(ref _storage[_slots]);
        _slots += slots;
        *(ulong*)slot = 0;
        return slot;
    }

    /// <summary>A device pointer (CUdeviceptr, 8 bytes): <c>float*</c> in the kernel.</summary>
    public KernelArgs Ptr(DeviceBuffer b) { *(ulong*)Next(1, Kind.Pointer) = (ulong)b.Address; return this; }
    /// <summary><c>int</c>.</summary>
    public KernelArgs Int(int v) { *(int*)Next(1, Kind.Int) = v; return this; }
    /// <summary><c>long long</c>.</summary>
    public KernelArgs Long(long v) { *(long*)Next(1, Kind.Long) = v; return this; }
    /// <summary><c>float</c>.</summary>
    public KernelArgs Float(float v) { *(float*)Next(1, Kind.Float) = v; return this; }
    /// <summary><c>struct dims4</c> by value.</summary>
    public KernelArgs Dims(Dims4 d) { *(Dims4*)Next(2, Kind.Dims) = d; return this; }

    /// <summary>Fills <paramref name="pointers"/> with the address of each argument. Call it on a
    /// local variable (which does not move) right before the launch.</summary>
    internal void FillPointers(void** pointers)
    {
        byte* storage = (byte*)Unsafe.AsPointer(ref _storage[0]);
        for (int i = 0; i < _count; i++) pointers[i] = storage + _offsets[i] * sizeof(ulong);
    }
}
