using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace RawGan.Engine.Backends.Cpu;

/// <summary>AVX-512 building blocks shared by the CPU kernels.</summary>
internal static unsafe class Simd
{
    /// <summary>cols[j] lane i = rows[i] lane j: a 16x16 transpose in registers (unpack, shuffle, two 128-bit lane shuffles).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void Transpose16(Vector512<float>* rows, Vector512<float>* cols)
    {
        var t0 = Avx512F.UnpackLow(rows[0], rows[1]); var t1 = Avx512F.UnpackHigh(rows[0], rows[1]);
        var t2 = Avx512F.UnpackLow(rows[2], rows[3]); var t3 = Avx512F.UnpackHigh(rows[2], rows[3]);
        var t4 = Avx512F.UnpackLow(rows[4], rows[5]); var t5 = Avx512F.UnpackHigh(rows[4], rows[5]);
        var t6 = Avx512F.UnpackLow(rows[6], rows[7]); var t7 = Avx512F.UnpackHigh(rows[6], rows[7]);
        var t8 = Avx512F.UnpackLow(rows[8], rows[9]); var t9 = Avx512F.UnpackHigh(rows[8], rows[9]);
        var t10 = Avx512F.UnpackLow(rows[10], rows[11]); var t11 = Avx512F.UnpackHigh(rows[10], rows[11]);
        var t12 = Avx512F.UnpackLow(rows[12], rows[13]); var t13 = Avx512F.UnpackHigh(rows[12], rows[13]);
        var t14 = Avx512F.UnpackLow(rows[14], rows[15]); var t15 = Avx512F.UnpackHigh(rows[14], rows[15]);
        // Within each 128-bit lane k, u(4a + b) holds element 4k + b of rows 4a .. 4a + 3.
        var u0 = Avx512F.Shuffle(t0, t2, 0x44); var u1 = Avx512F.Shuffle(t0, t2, 0xEE);
        var u2 = Avx512F.Shuffle(t1, t3, 0x44); var u3 = Avx512F.Shuffle(t1, t3, 0xEE);
        var u4 = Avx512F.Shuffle(t4, t6, 0x44); var u5 = Avx512F.Shuffle(t4, t6, 0xEE);
        var u6 = Avx512F.Shuffle(t5, t7, 0x44); var u7 = Avx512F.Shuffle(t5, t7, 0xEE);
        var u8 = Avx512F.Shuffle(t8, t10, 0x44); var u9 = Avx512F.Shuffle(t8, t10, 0xEE);
        var u10 = Avx512F.Shuffle(t9, t11, 0x44); var u11 = Avx512F.Shuffle(t9, t11, 0xEE);
        var u12 = Avx512F.Shuffle(t12, t14, 0x44); var u13 = Avx512F.Shuffle(t12, t14, 0xEE);
        var u14 = Avx512F.Shuffle(t13, t15, 0x44); var u15 = Avx512F.Shuffle(t13, t15, 0xEE);
        var v0 = Avx512F.Shuffle4x128(u0, u4, 0x88); var v1 = Avx512F.Shuffle4x128(u1, u5, 0x88);
        var v2 = Avx512F.Shuffle4x128(u2, u6, 0x88); var v3 = Avx512F.Shuffle4x128(u3, u7, 0x88);
        var v4 = Avx512F.Shuffle4x128(u0, u4, 0xDD); var v5 = Avx512F.Shuffle4x128(u1, u5, 0xDD);
        var v6 = Avx512F.Shuffle4x128(u2, u6, 0xDD); var v7 = Avx512F.Shuffle4x128(u3, u7, 0xDD);
        var v8 = Avx512F.Shuffle4x128(u8, u12, 0x88); var v9 = Avx512F.Shuffle4x128(u9, u13, 0x88);
        var v10 = Avx512F.Shuffle4x128(u10, u14, 0x88); var v11 = Avx512F.Shuffle4x128(u11, u15, 0x88);
        var v12 = Avx512F.Shuffle4x128(u8, u12, 0xDD); var v13 = Avx512F.Shuffle4x128(u9, u13, 0xDD);
        var v14 = Avx512F.Shuffle4x128(u10, u14, 0xDD); var v15 = Avx512F.Shuffle4x128(u11, u15, 0xDD);
        cols[0] = Avx512F.Shuffle4x128(v0, v8, 0x88); cols[1] = Avx512F.Shuffle4x128(v1, v9, 0x88);
        cols[2] = Avx512F.Shuffle4x128(v2, v10, 0x88); cols[3] = Avx512F.Shuffle4x128(v3, v11, 0x88);
        cols[4] = Avx512F.Shuffle4x128(v4, v12, 0x88); cols[5] = Avx512F.Shuffle4x128(v5, v13, 0x88);
        cols[6] = Avx512F.Shuffle4x128(v6, v14, 0x88); cols[7] = Avx512F.Shuffle4x128(v7, v15, 0x88);
        cols[8] = Avx512F.Shuffle4x128(v0, v8, 0xDD); cols[9] = Avx512F.Shuffle4x128(v1, v9, 0xDD);
        cols[10] = Avx512F.Shuffle4x128(v2, v10, 0xDD); cols[11] = Avx512F.Shuffle4x128(v3, v11, 0xDD);
        cols[12] = Avx512F.Shuffle4x128(v4, v12, 0xDD); cols[13] = Avx512F.Shuffle4x128(v5, v13, 0xDD);
        cols[14] = Avx512F.Shuffle4x128(v6, v14, 0xDD); cols[15] = Avx512F.Shuffle4x128(v7, v15, 0xDD);
    }
}
