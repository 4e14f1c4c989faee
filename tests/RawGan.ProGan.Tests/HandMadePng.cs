using System.Text;

namespace RawGan.ProGan.Tests;

/// <summary>
/// Builds PNG files byte by byte, independently of the decoder under test: its own bitwise CRC-32
/// (no table), its own zlib stream made of stored (uncompressed) deflate blocks with an Adler-32
/// trailer, and its own row filters.
/// </summary>
internal static class HandMadePng
{
    public static readonly byte[] Signature = [137, 80, 78, 71, 13, 10, 26, 10];

    /// <summary>CRC-32 computed one bit at a time (polynomial 0xEDB88320, reflected).</summary>
    public static uint Crc(ReadOnlySpan<byte> data)
    {
        uint crc = 0xFFFFFFFF;
        foreach (byte b in data)
        {
            crc ^= b;
            for (int bit = 0; bit < 8; bit++)
                crc = (crc >> 1) ^ (0xEDB88320u & (uint)-(int)(crc & 1));
        }
        return ~crc;
    }

    public static uint Adler32(ReadOnlySpan<byte> data)
    {
        uint a = 1, b = 0;
        foreach (byte x in data)
        {
            a = (a + x) % 65521;
            b = (b + a) % 65521;
        }
        return (b << 16) | a;
    }

    /// <summary>A zlib stream of stored deflate blocks (at most 65535 bytes each) holding <paramref name="data"/>.</summary>
    public static byte[] ZlibStored(ReadOnlySpan<byte> data)
    {
        var output = new List<byte> { 0x78, 0x01 }; // deflate, 32K window; (0x78 * 256 + 0x01) % 31 == 0
        int offset = 0;
        do
        {
            int length = Math.Min(65535, data.Length - offset);
            bool final = offset + length == data.Length;
            output.Add((byte)(final ? 1 : 0)); // BFINAL, BTYPE = 00 (stored)
            output.Add((byte)length);
            output.Add((byte)(length >> 8));
            output.Add((byte)~length);
            output.Add((byte)(~length >> 8));
            output.AddRange(data.Slice(offset, length).ToArray());
            offset += length;
        } while (offset < data.Length);
        uint adler = Adler32(data);
        output.AddRange([(byte)(adler >> 24), (byte)(adler >> 16), (byte)(adler >> 8), (byte)adler]);
        return output.ToArray();
    }

    public static byte[] Chunk(string type, ReadOnlySpan<byte> data)
    {
        var chunk = new byte[12 + data.Length];
        WriteBigEndian(chunk, 0, (uint)data.Length);
        Encoding.ASCII.GetBytes(type).CopyTo(chunk, 4);
        data.CopyTo(chunk.AsSpan(8));
        WriteBigEndian(chunk, 8 + data.Length, Crc(chunk.AsSpan(4, 4 + data.Length)));
        return chunk;
    }

    public static byte[] Header(int width, int height, int bitDepth, int colourType, int interlace = 0)
    {
        var data = new byte[13];
        WriteBigEndian(data, 0, (uint)width);
        WriteBigEndian(data, 4, (uint)height);
        data[8] = (byte)bitDepth;
        data[9] = (byte)colourType;
        data[12] = (byte)interlace;
        return Chunk("IHDR", data);
    }

    /// <summary>A whole file: signature, IHDR, extra chunks, the rows in <paramref name="idatParts"/> IDAT chunks, IEND.</summary>
    public static byte[] File(int width, int height, int bitDepth, int colourType, byte[] filteredRows,
        int interlace = 0, IEnumerable<byte[]>? extraChunks = null, int idatParts = 1)
    {
        var file = new List<byte>(Signature);
        file.AddRange(Header(width, height, bitDepth, colourType, interlace));
        foreach (var chunk in extraChunks ?? [])
            file.AddRange(chunk);
        var zlib = ZlibStored(filteredRows);
        for (int part = 0; part < idatParts; part++)
        {
            int begin = zlib.Length * part / idatParts, end = zlib.Length * (part + 1) / idatParts;
            file.AddRange(Chunk("IDAT", zlib.AsSpan(begin, end - begin)));
        }
        file.AddRange(Chunk("IEND", []));
        return file.ToArray();
    }

    public static void WriteBigEndian(byte[] buffer, int offset, uint value)
    {
        buffer[offset] = (byte)(value >> 24);
        buffer[offset + 1] = (byte)(value >> 16);
        buffer[offset + 2] = (byte)(value >> 8);
        buffer[offset + 3] = (byte)value;
    }

    /// <summary>
    /// Filters raw rows (each <paramref name="stride"/> bytes, pixels of <paramref name="bytesPerPixel"/>)
    /// with the filter <paramref name="filterOfRow"/> gives for each row, prepending the filter byte.
    /// </summary>
    public static byte[] Filter(byte[] rows, int stride, int bytesPerPixel, Func<int, int> filterOfRow)
    {
        int height = rows.Length / stride;
        var output = new byte[height * (stride + 1)];
        for (int y = 0; y < height; y++)
        {
            int filter = filterOfRow(y);
            output[y * (stride + 1)] = (byte)filter;
            for (int i = 0; i < stride; i++)
            {
                int x = rows[y * stride + i];
                int a = i >= bytesPerPixel ? rows[y * stride + i - bytesPerPixel] : 0;
                int b = y > 0 ? rows[(y - 1) * stride + i] : 0;
                int c = y > 0 && i >= bytesPerPixel ? rows[(y - 1) * stride + i - bytesPerPixel] : 0;
                int predicted = filter switch
                {
                    0 => 0,
                    1 => a,
                    2 => b,
                    3 => (a + b) / 2,
                    4 => Paeth(a, b, c),
                    _ => throw new ArgumentException("filter 0..4"),
                };
                output[y * (stride + 1) + 1 + i] = (byte)(x - predicted);
            }
        }
        return output;
    }

    private static int Paeth(int a, int b, int c)
    {
        int p = a + b - c, pa = Math.Abs(p - a), pb = Math.Abs(p - b), pc = Math.Abs(p - c);
        return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
    }
}
