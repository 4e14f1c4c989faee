using System.Buffers.Binary;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using RawGan.ProGan.IO;

namespace RawGan.ProGan.Checkpoints;

/// <summary>An array read from a .npy file: <see cref="Data"/> in C order.</summary>
public sealed record NpyArray(int[] Shape, float[] Data);

/// <summary>
/// NumPy's .npy format, for latents and raw generator outputs that users take to Python
/// (<c>np.load("latents.npy")</c>). Layout of version 1.0:
/// <code>
///   "\x93NUMPY"  magic (6 bytes)
///   1, 0         major and minor version
///   uint16 LE    length of the header text
///   header       a Python dict literal, e.g. {'descr': '&lt;f4', 'fortran_order': False, 'shape': (2, 3), }
///                padded with spaces and ended by '\n' so that the data starts at a multiple of 64
///   data         the elements, C order
/// </code>
/// RawGan writes little-endian float32 in C order, and reads little-endian float32 and float64
/// (converted to float) in C order, from versions 1.0, 2.0 (32-bit header length) and 3.0. Anything
/// else, and any inconsistency, is an <see cref="InvalidFileException"/> that says what to do.
/// </summary>
public static class Npy
{
    private static ReadOnlySpan<byte> Magic => [0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y'];

    /// <summary>The header is padded so that the data begins at a multiple of this (NumPy's choice, for aligned memory maps).</summary>
    private const int Alignment = 64;

    /// <summary>Writes <paramref name="data"/> with <paramref name="shape"/> atomically to <paramref name="path"/>.</summary>
    public static void Save(string path, float[] data, int[] shape) => AtomicFile.WriteAllBytes(path, Serialize(data, shape));

    /// <summary>The exact bytes of a version 1.0 .npy file holding <paramref name="data"/>.</summary>
    public static byte[] Serialize(ReadOnlySpan<float> data, int[] shape)
    {
        ArgumentNullException.ThrowIfNull(shape);
        long count = 1;
        foreach (int d in shape)
        {
            if (d < 0)
                throw new ArgumentException($"shape ({string.Join(", ", shape)}) has a negative dimension");
            count *= d;
        }
        if (count != data.Length)
            throw new ArgumentException($"shape ({string.Join(", ", shape)}) holds {count} elements, the data {data.Length}");

        // Python's repr of a tuple: "()", "(5,)", "(2, 3)".
        string tuple = shape.Length == 1 ? $"({shape[0]},)" : $"({string.Join(", ", shape)})";
        string dictionary = $"{{'descr': '<f4', 'fortran_order': False, 'shape': {tuple}, }}";
        int unpadded = Magic.Length + 2 + 2 + dictionary.Length + 1; // + 1 for the final '\n'
        int padding = (Alignment - unpadded % Alignment) % Alignment;
        string header = dictionary + new string(' ', padding) + "\n";
        if (header.Length > ushort.MaxValue)
            throw new ArgumentException("the shape is too long for a version 1.0 header");

        var file = new byte[Magic.Length + 4 + header.Length + data.Length * 4];
        Magic.CopyTo(file);
        file[6] = 1; // major version
        file[7] = 0; // minor version
        BinaryPrimitives.WriteUInt16LittleEndian(file.AsSpan(8), (ushort)header.Length);
        Encoding.ASCII.GetBytes(header, file.AsSpan(10));
        var body = file.AsSpan(10 + header.Length);
        if (BitConverter.IsLittleEndian)
            MemoryMarshal.AsBytes(data).CopyTo(body);
        else
            for (int i = 0; i < data.Length; i++)
                BinaryPrimitives.WriteSingleLittleEndian(body[(4 * i)..], data[i]);
        return file;
    }

    /// <summary>Reads a .npy file of float32 or float64.</summary>
    public static NpyArray Load(string path) => Parse(File.ReadAllBytes(path), path);

    /// <summary>Parses a whole .npy file held in memory; <paramref name="fileName"/> names it in errors.</summary>
    public static NpyArray Parse(ReadOnlySpan<byte> file, string fileName)
    {
        if (file.Length < 10 || !file[..6].SequenceEqual(Magic))
            throw new InvalidFileException(fileName, "not a .npy file (it does not start with \\x93NUMPY)");
        int major = file[6], minor = file[7];
        long headerLength;
        int headerStart;
        switch (major)
        {
            case 1:
                headerLength = BinaryPrimitives.ReadUInt16LittleEndian(file[8..]);
                headerStart = 10;
                break;
            case 2 or 3:
                if (file.Length < 12)
                    throw new InvalidFileException(fileName, "the file ends inside the .npy preamble (truncated?)");
                headerLength = BinaryPrimitives.ReadUInt32LittleEndian(file[8..]);
                headerStart = 12;
                break;
            default:
                throw new InvalidFileException(fileName, $".npy format version {major}.{minor} is unknown (1.0, 2.0 and 3.0 exist)");
        }
        if (headerLength > file.Length - headerStart)
            throw new InvalidFileException(fileName, $"the header is {headerLength} bytes long but only {file.Length - headerStart} follow (truncated?)");
        string header;
        try
        {
            // Versions 1 and 2 are Latin-1 text, 3 is UTF-8; valid headers are ASCII either way.
            header = (major == 3 ? new UTF8Encoding(false, true) : Encoding.Latin1).GetString(file.Slice(headerStart, (int)headerLength));
        }
        catch (DecoderFallbackException)
        {
            throw new InvalidFileException(fileName, "the header is not valid UTF-8");
        }

        var (descr, fortranOrder, shape) = ParseHeader(header, fileName);
        int elementSize = descr switch
        {
            "<f4" => 4,
            "<f8" => 8,
            ">f4" or ">f8" => throw new InvalidFileException(fileName, $"the array is big-endian ({descr}); save it with arr.astype('<f4')"),
            _ => throw new InvalidFileException(fileName, $"dtype '{descr}' is not float32 or float64; save it with arr.astype(np.float32)"),
        };
        if (fortranOrder)
            throw new InvalidFileException(fileName, "the array is in Fortran order; save it with np.ascontiguousarray(arr)");

        long count = 1;
        foreach (int d in shape)
            count = count > Array.MaxLength ? count : count * d;
        long dataStart = headerStart + headerLength;
        long dataLength = file.Length - dataStart;
        if (count > Array.MaxLength || count * elementSize != dataLength)
            throw new InvalidFileException(fileName,
                $"shape ({string.Join(", ", shape)}) of {descr} needs {count * elementSize} bytes of data, the file holds {dataLength}");

        var data = new float[count];
        var body = file[(int)dataStart..];
        if (elementSize == 4 && BitConverter.IsLittleEndian)
            body.CopyTo(MemoryMarshal.AsBytes(data.AsSpan()));
        else
            for (int i = 0; i < data.Length; i++)
                data[i] = elementSize == 4
                    ? BinaryPrimitives.ReadSingleLittleEndian(body[(4 * i)..])
                    : (float)BinaryPrimitives.ReadDoubleLittleEndian(body[(8 * i)..]);
        return new NpyArray(shape, data);
    }

    /// <summary>
    /// Parses the header's Python dict literal: exactly the keys 'descr' (a string),
    /// 'fortran_order' (True or False) and 'shape' (a tuple of non-negative integers), in any order,
    /// with an optional trailing comma; then only spaces and a newline.
    /// </summary>
    private static (string Descr, bool FortranOrder, int[] Shape) ParseHeader(string header, string fileName)
    {
        int position = 0;
        InvalidFileException Bad(string problem) =>
            new(fileName, $"header at character {position}: {problem} (header: {header.TrimEnd()})");
        void SkipSpaces()
        {
            while (position < header.Length && header[position] is ' ' or '\t' or '\n' or '\r')
                position++;
        }
        void Expect(char c)
        {
            SkipSpaces();
            if (position >= header.Length || header[position] != c)
                throw Bad($"expected '{c}'");
            position++;
        }
        bool Peek(char c)
        {
            SkipSpaces();
            return position < header.Length && header[position] == c;
        }
        string ReadString()
        {
            SkipSpaces();
            if (position >= header.Length || header[position] is not ('\'' or '"'))
                throw Bad("expected a quoted string");
            char quote = header[position++];
            int end = header.IndexOf(quote, position);
            if (end < 0)
                throw Bad("unterminated string");
            string text = header[position..end];
            position = end + 1;
            return text;
        }
        int ReadInteger()
        {
            SkipSpaces();
            int start = position;
            while (position < header.Length && char.IsAsciiDigit(header[position]))
                position++;
            // Python 2 era files may write long integers as "3L".
            string digits = header[start..position];
            if (position < header.Length && header[position] == 'L')
                position++;
            if (digits.Length == 0 || !int.TryParse(digits, NumberStyles.None, CultureInfo.InvariantCulture, out int value))
                throw Bad("expected a dimension (0..2^31-1)");
            return value;
        }

        string? descr = null;
        bool? fortranOrder = null;
        int[]? shape = null;
        Expect('{');
        while (!Peek('}'))
        {
            string key = ReadString();
            Expect(':');
            switch (key)
            {
                case "descr" when descr is null:
                    descr = ReadString();
                    break;
                case "fortran_order" when fortranOrder is null:
                    SkipSpaces();
                    if (string.CompareOrdinal(header, position, "True", 0, 4) == 0) { fortranOrder = true; position += 4; }
                    else if (string.CompareOrdinal(header, position, "False", 0, 5) == 0) { fortranOrder = false; position += 5; }
                    else throw Bad("fortran_order must be True or False");
                    break;
                case "shape" when shape is null:
                    var dimensions = new List<int>();
                    Expect('(');
                    while (!Peek(')'))
                    {
                        dimensions.Add(ReadInteger());
                        if (dimensions.Count > 32)
                            throw Bad("more than 32 dimensions");
                        if (!Peek(')'))
                            Expect(',');
                    }
                    Expect(')');
                    shape = dimensions.ToArray();
                    break;
                default:
                    throw Bad($"unexpected or repeated key '{key}'");
            }
            if (!Peek('}'))
                Expect(',');
        }
        Expect('}');
        SkipSpaces();
        if (position != header.Length)
            throw Bad("unexpected text after the dictionary");
        if (descr is null || fortranOrder is null || shape is null)
            throw Bad("the header needs the keys 'descr', 'fortran_order' and 'shape'");
        return (descr, fortranOrder.Value, shape);
    }
}
