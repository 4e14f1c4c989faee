using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using Microsoft.Win32.SafeHandles;
using RawGan.ProGan.IO;

namespace RawGan.ProGan.Checkpoints;

/// <summary>A named float tensor: <see cref="Data"/> holds the elements in C (row-major) order.</summary>
public sealed record NamedTensor
{
    public NamedTensor(string name, int[] shape, float[] data)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        ArgumentNullException.ThrowIfNull(shape);
        ArgumentNullException.ThrowIfNull(data);
        long count = 1;
        foreach (int d in shape)
        {
            if (d < 0)
                throw new ArgumentException($"tensor '{name}': shape [{string.Join(", ", shape)}] has a negative dimension");
            count *= d;
        }
        if (count != data.LongLength)
            throw new ArgumentException($"tensor '{name}': shape [{string.Join(", ", shape)}] holds {count} elements, the data {data.LongLength}");
        Name = name;
        Shape = shape;
        Data = data;
    }

    public string Name { get; }
    public int[] Shape { get; }
    public float[] Data { get; }
}

/// <summary>One tensor as a safetensors header describes it (before any data is read).</summary>
/// <param name="Name">The tensor's name.</param>
/// <param name="DType">F32, F16, BF16 or F64.</param>
/// <param name="Shape">Dimensions, outermost first.</param>
/// <param name="Begin">Start of the tensor's bytes, counted from the end of the header.</param>
/// <param name="End">One past the last byte, likewise.</param>
public sealed record SafeTensorInfo(string Name, string DType, int[] Shape, long Begin, long End);

/// <summary>Everything in a safetensors file, converted to float.</summary>
public sealed record SafeTensorsContent(IReadOnlyDictionary<string, NamedTensor> Tensors, IReadOnlyDictionary<string, string> Metadata);

/// <summary>
/// The safetensors format (Hugging Face), RawGan's checkpoint format: a file other frameworks load
/// with nothing but a table of names (docs/DESIGN.md, decision 7). Layout:
/// <code>
///   8 bytes    N, the header length, unsigned little-endian
///   N bytes    a JSON object, UTF-8:
///              {"__metadata__": {"key": "value", ...},
///               "name": {"dtype": "F32", "shape": [d0, d1, ...], "data_offsets": [begin, end]}, ...}
///              padded with spaces so that the data starts at a multiple of 8 bytes
///   the data   each tensor's elements, little-endian, C order, at [begin, end) after the header
/// </code>
/// RawGan writes F32 tensors in ordinal name order, packed one after another, with the metadata
/// first. It reads F32, F16, BF16 and F64 (converting to float) and validates everything before
/// allocating: a malformed file becomes an <see cref="InvalidFileException"/> naming the problem.
/// </summary>
public static class SafeTensors
{
    /// <summary>Headers larger than this are refused (the reference implementation's limit too).</summary>
    public const long MaxHeaderBytes = 100_000_000;

    public const string MetadataKey = "__metadata__";

    /// <summary>The largest tensor RawGan loads: 2 GiB as float32 (536,870,911 values), what one
    /// span of bytes can address. The biggest tensor of the paper's network is 9.4 MB.</summary>
    public const long MaxTensorBytes = int.MaxValue;

    /// <summary>Writes the tensors and metadata atomically to <paramref name="path"/>.</summary>
    public static void Save(string path, IEnumerable<NamedTensor> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var sorted = SortAndCheck(tensors);
        AtomicFile.Write(path, stream => WriteTo(stream, sorted, metadata));
    }

    /// <summary>The exact bytes <see cref="Save"/> writes.</summary>
    public static byte[] Serialize(IEnumerable<NamedTensor> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var stream = new MemoryStream();
        WriteTo(stream, SortAndCheck(tensors), metadata);
        return stream.ToArray();
    }

    private static NamedTensor[] SortAndCheck(IEnumerable<NamedTensor> tensors)
    {
        ArgumentNullException.ThrowIfNull(tensors);
        var sorted = tensors.OrderBy(t => t.Name, StringComparer.Ordinal).ToArray();
        for (int i = 0; i < sorted.Length; i++)
        {
            if (sorted[i].Name == MetadataKey)
                throw new ArgumentException($"'{MetadataKey}' is reserved and cannot name a tensor");
            if (i > 0 && sorted[i].Name == sorted[i - 1].Name)
                throw new ArgumentException($"two tensors are named '{sorted[i].Name}'");
        }
        return sorted;
    }

    private static void WriteTo(Stream stream, NamedTensor[] sorted, IReadOnlyDictionary<string, string>? metadata)
    {
        var json = new StringBuilder("{");
        bool first = true;
        if (metadata is { Count: > 0 })
        {
            json.Append(Quote(MetadataKey)).Append(":{");
            bool firstEntry = true;
            foreach (var (key, value) in metadata.OrderBy(p => p.Key, StringComparer.Ordinal))
            {
                if (!firstEntry) json.Append(',');
                json.Append(Quote(key)).Append(':').Append(Quote(value));
                firstEntry = false;
            }
            json.Append('}');
            first = false;
        }
        long offset = 0;
        foreach (var tensor in sorted)
        {
            long size = tensor.Data.LongLength * sizeof(float);
            if (!first) json.Append(',');
            json.Append(Quote(tensor.Name))
                .Append(":{\"dtype\":\"F32\",\"shape\":[").Append(string.Join(',', tensor.Shape))
                .Append("],\"data_offsets\":[").Append(offset).Append(',').Append(offset + size).Append("]}");
            offset += size;
            first = false;
        }
        json.Append('}');

        byte[] headerText = Encoding.UTF8.GetBytes(json.ToString());
        // Spaces after the JSON (still valid JSON) make 8 + N a multiple of 8, so every tensor's data is
        // 8-byte aligned in the file and can be used in place when the file is memory-mapped.
        int padded = (headerText.Length + 7) / 8 * 8;
        Span<byte> length = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(length, (ulong)padded);
        stream.Write(length);
        stream.Write(headerText);
        for (int i = headerText.Length; i < padded; i++)
            stream.WriteByte((byte)' ');

        foreach (var tensor in sorted)
        {
            if (BitConverter.IsLittleEndian)
            {
                stream.Write(MemoryMarshal.AsBytes(tensor.Data.AsSpan()));
            }
            else
            {
                var element = new byte[4];
                foreach (float value in tensor.Data)
                {
                    BinaryPrimitives.WriteSingleLittleEndian(element, value);
                    stream.Write(element);
                }
            }
        }
    }

    /// <summary>A JSON string literal; non-ASCII characters are written as UTF-8, as JSON allows.</summary>
    private static string Quote(string text)
    {
        var quoted = new StringBuilder("\"");
        foreach (char c in text)
        {
            switch (c)
            {
                case '"': quoted.Append("\\\""); break;
                case '\\': quoted.Append("\\\\"); break;
                case '\n': quoted.Append("\\n"); break;
                case '\r': quoted.Append("\\r"); break;
                case '\t': quoted.Append("\\t"); break;
                case < ' ': quoted.Append($"\\u{(int)c:x4}"); break;
                default: quoted.Append(c); break;
            }
        }
        return quoted.Append('"').ToString();
    }

    /// <summary>
    /// Reads and validates the header only: names, dtypes, shapes and offsets, and the metadata.
    /// Useful to check a checkpoint against a configuration before loading it.
    /// </summary>
    public static (IReadOnlyList<SafeTensorInfo> Tensors, IReadOnlyDictionary<string, string> Metadata) ReadHeader(string path)
    {
        using var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        var (tensors, metadata, _) = ReadHeader(handle, path);
        return (tensors, metadata);
    }

    /// <summary>Loads every tensor as float, with the metadata.</summary>
    public static SafeTensorsContent Load(string path)
    {
        using var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        return Load(handle, path);
    }

    /// <summary>Loads every tensor from a file already open (so that it can be read even after its
    /// folder is deleted, on Unix); <paramref name="path"/> names it in errors.</summary>
    public static SafeTensorsContent Load(SafeFileHandle handle, string path)
    {
        var (infos, metadata, dataStart) = ReadHeader(handle, path);
        var tensors = new Dictionary<string, NamedTensor>(StringComparer.Ordinal);
        foreach (var info in infos)
        {
            long count = info.Shape.Aggregate(1L, (product, d) => product * d);
            var data = new float[count];
            long position = dataStart + info.Begin;
            if (info.DType == "F32" && BitConverter.IsLittleEndian)
            {
                ReadExactly(handle, MemoryMarshal.AsBytes(data.AsSpan()), position, path);
            }
            else
            {
                // Converted a chunk at a time: the stored bytes of an F64 tensor may be twice the floats.
                int size = ElementSize(info.DType);
                var bytes = new byte[Math.Min(info.End - info.Begin, 1 << 20)];
                for (long done = 0; done < count;)
                {
                    int n = (int)Math.Min(count - done, bytes.Length / size);
                    ReadExactly(handle, bytes.AsSpan(0, n * size), position + done * size, path);
                    ConvertToFloat(info.DType, bytes.AsSpan(0, n * size), data.AsSpan((int)done, n));
                    done += n;
                }
            }
            tensors.Add(info.Name, new NamedTensor(info.Name, info.Shape, data));
        }
        return new SafeTensorsContent(tensors, metadata);
    }

    private static int ElementSize(string dtype) => dtype switch
    {
        "F32" => 4,
        "F16" or "BF16" => 2,
        "F64" => 8,
        _ => 0,
    };

    private static void ConvertToFloat(string dtype, ReadOnlySpan<byte> bytes, Span<float> destination)
    {
        for (int i = 0; i < destination.Length; i++)
        {
            destination[i] = dtype switch
            {
                "F32" => BinaryPrimitives.ReadSingleLittleEndian(bytes[(4 * i)..]),
                "F16" => (float)BinaryPrimitives.ReadHalfLittleEndian(bytes[(2 * i)..]),
                // bfloat16 is the top half of a float32.
                "BF16" => BitConverter.Int32BitsToSingle(BinaryPrimitives.ReadUInt16LittleEndian(bytes[(2 * i)..]) << 16),
                _ => (float)BinaryPrimitives.ReadDoubleLittleEndian(bytes[(8 * i)..]),
            };
        }
    }

    private static void ReadExactly(SafeFileHandle handle, Span<byte> buffer, long position, string path)
    {
        while (!buffer.IsEmpty)
        {
            int read = RandomAccess.Read(handle, buffer, position);
            if (read == 0)
                throw new InvalidFileException(path, $"the file ended while reading at byte {position} (it changed while being read?)");
            buffer = buffer[read..];
            position += read;
        }
    }

    private static (List<SafeTensorInfo> Tensors, Dictionary<string, string> Metadata, long DataStart) ReadHeader(SafeFileHandle handle, string path)
    {
        long fileLength = RandomAccess.GetLength(handle);
        if (fileLength < 8)
            throw new InvalidFileException(path, $"{fileLength} bytes is too short for a safetensors file (it starts with an 8-byte header length)");
        Span<byte> lengthBytes = stackalloc byte[8];
        ReadExactly(handle, lengthBytes, 0, path);
        ulong headerLength = BinaryPrimitives.ReadUInt64LittleEndian(lengthBytes);
        if (headerLength > (ulong)(fileLength - 8))
            throw new InvalidFileException(path, $"the header length is {headerLength} bytes but only {fileLength - 8} bytes follow (truncated, or not a safetensors file)");
        if (headerLength > MaxHeaderBytes)
            throw new InvalidFileException(path, $"the header length {headerLength} is over the {MaxHeaderBytes}-byte limit");
        if (headerLength < 2)
            throw new InvalidFileException(path, $"the header is {headerLength} bytes, too short for a JSON object");
        var headerBytes = new byte[headerLength];
        ReadExactly(handle, headerBytes, 8, path);
        long dataStart = 8 + (long)headerLength;
        long dataLength = fileLength - dataStart;

        // The JSON reader checks the structure but not the bytes inside strings, so UTF-8 is checked first.
        if (!System.Text.Unicode.Utf8.IsValid(headerBytes))
            throw new InvalidFileException(path, "the header is not valid UTF-8 text");
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(headerBytes, new JsonDocumentOptions { MaxDepth = 4 });
        }
        catch (JsonException ex)
        {
            throw new InvalidFileException(path, $"the header is not valid JSON ({ex.Message})", ex);
        }
        using (document)
        {
            if (document.RootElement.ValueKind != JsonValueKind.Object)
                throw new InvalidFileException(path, $"the header is a JSON {document.RootElement.ValueKind}, not an object");
            var tensors = new List<SafeTensorInfo>();
            var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
            var seen = new HashSet<string>(StringComparer.Ordinal);
            foreach (var property in document.RootElement.EnumerateObject())
            {
                if (!seen.Add(property.Name))
                    throw new InvalidFileException(path, $"the header names '{property.Name}' twice");
                if (property.Name == MetadataKey)
                {
                    if (property.Value.ValueKind != JsonValueKind.Object)
                        throw new InvalidFileException(path, $"{MetadataKey} is a JSON {property.Value.ValueKind}, not an object of strings");
                    foreach (var entry in property.Value.EnumerateObject())
                    {
                        if (entry.Value.ValueKind != JsonValueKind.String)
                            throw new InvalidFileException(path, $"{MetadataKey}: the value of '{entry.Name}' is a JSON {entry.Value.ValueKind}, not a string");
                        if (!metadata.TryAdd(entry.Name, entry.Value.GetString()!))
                            throw new InvalidFileException(path, $"{MetadataKey} names '{entry.Name}' twice");
                    }
                    continue;
                }
                tensors.Add(ParseTensor(property, dataLength, path));
            }

            // Tensors may be stored in any order, but no two may share bytes.
            var byPosition = tensors.OrderBy(t => t.Begin).ThenBy(t => t.End).ToList();
            for (int i = 1; i < byPosition.Count; i++)
            {
                if (byPosition[i].Begin < byPosition[i - 1].End)
                    throw new InvalidFileException(path,
                        $"tensors '{byPosition[i - 1].Name}' [{byPosition[i - 1].Begin}, {byPosition[i - 1].End}) and '{byPosition[i].Name}' [{byPosition[i].Begin}, {byPosition[i].End}) overlap");
            }
            return (tensors, metadata, dataStart);
        }
    }

    private static SafeTensorInfo ParseTensor(JsonProperty property, long dataLength, string path)
    {
        string name = property.Name;
        var value = property.Value;
        if (value.ValueKind != JsonValueKind.Object)
            throw new InvalidFileException(path, $"tensor '{name}': its entry is a JSON {value.ValueKind}, not an object");
        if (!value.TryGetProperty("dtype", out var dtypeElement) || dtypeElement.ValueKind != JsonValueKind.String)
            throw new InvalidFileException(path, $"tensor '{name}': no \"dtype\" string");
        string dtype = dtypeElement.GetString()!;
        int elementSize = ElementSize(dtype);
        if (elementSize == 0)
            throw new InvalidFileException(path, $"tensor '{name}' has dtype {dtype}; RawGan reads F32, F16, BF16 and F64 tensors only");

        if (!value.TryGetProperty("shape", out var shapeElement) || shapeElement.ValueKind != JsonValueKind.Array)
            throw new InvalidFileException(path, $"tensor '{name}': no \"shape\" array");
        var shape = new int[shapeElement.GetArrayLength()];
        long count = 1;
        int d = 0;
        foreach (var dimension in shapeElement.EnumerateArray())
        {
            if (dimension.ValueKind != JsonValueKind.Number || !dimension.TryGetInt64(out long size) || size < 0 || size > int.MaxValue)
                throw new InvalidFileException(path, $"tensor '{name}': shape entry {d} is {dimension.GetRawText()}, not a dimension (0..2^31-1)");
            shape[d++] = (int)size;
            // The element count must fit in memory; checking as we go also rules out overflow.
            count = size == 0 ? 0 : count > Array.MaxLength / size ? long.MaxValue : count * size;
        }
        if (count > Array.MaxLength)
            throw new InvalidFileException(path, $"tensor '{name}': shape [{string.Join(", ", shape)}] has more elements than an array can hold");
        if (count > MaxTensorBytes / sizeof(float))
            throw new InvalidFileException(path,
                $"tensor '{name}': shape [{string.Join(", ", shape)}] is {count * (double)sizeof(float) / (1L << 30):F1} GiB as float32; RawGan loads tensors of at most 2 GiB");

        if (!value.TryGetProperty("data_offsets", out var offsetsElement) || offsetsElement.ValueKind != JsonValueKind.Array || offsetsElement.GetArrayLength() != 2)
            throw new InvalidFileException(path, $"tensor '{name}': no \"data_offsets\" pair [begin, end]");
        var offsets = new long[2];
        int k = 0;
        foreach (var offset in offsetsElement.EnumerateArray())
        {
            if (offset.ValueKind != JsonValueKind.Number || !offset.TryGetInt64(out offsets[k]) || offsets[k] < 0)
                throw new InvalidFileException(path, $"tensor '{name}': data offset {offset.GetRawText()} is not a byte position");
            k++;
        }
        long begin = offsets[0], end = offsets[1];
        if (begin > end)
            throw new InvalidFileException(path, $"tensor '{name}': data_offsets [{begin}, {end}] end before they begin");
        if (end > dataLength)
            throw new InvalidFileException(path, $"tensor '{name}': data_offsets [{begin}, {end}] reach past the {dataLength} bytes of data (truncated?)");
        if (end - begin != count * elementSize)
            throw new InvalidFileException(path,
                $"tensor '{name}': shape [{string.Join(", ", shape)}] of {dtype} needs {count * elementSize} bytes, data_offsets [{begin}, {end}] give {end - begin}");
        return new SafeTensorInfo(name, dtype, shape, begin, end);
    }
}
