using System.Buffers.Binary;
using System.IO.Compression;
using System.Text;
using RawGan.ProGan.IO;

namespace RawGan.ProGan.Imaging;

public static partial class Png
{
    /// <summary>
    /// Encodes an 8-bit image as PNG: grey, grey + alpha, RGB or RGBA (colour types 0, 4, 2, 6),
    /// not interlaced, one IDAT chunk. Each row gets the filter that makes it most compressible by
    /// the usual heuristic (below), and the rows are deflated by zlib.
    /// </summary>
    public static byte[] Encode(Image image, CompressionLevel compression = CompressionLevel.Optimal)
    {
        ArgumentNullException.ThrowIfNull(image);
        int colourType = image.Channels switch { 1 => 0, 2 => 4, 3 => 2, _ => 6 };

        var file = new MemoryStream();
        file.Write(Signature);

        Span<byte> header = stackalloc byte[13];
        BinaryPrimitives.WriteUInt32BigEndian(header, (uint)image.Width);
        BinaryPrimitives.WriteUInt32BigEndian(header[4..], (uint)image.Height);
        header[8] = 8;            // bit depth
        header[9] = (byte)colourType;
        header[10] = 0;           // compression: deflate
        header[11] = 0;           // filter method 0: the five adaptive filters
        header[12] = 0;           // not interlaced
        WriteChunk(file, "IHDR", header);

        var compressed = new MemoryStream();
        using (var zlib = new ZLibStream(compressed, compression, leaveOpen: true))
        {
            FilterRows(image, zlib);
        }
        WriteChunk(file, "IDAT", compressed.GetBuffer().AsSpan(0, (int)compressed.Length));
        WriteChunk(file, "IEND", []);
        return file.ToArray();
    }

    /// <summary>Encodes <paramref name="image"/> and writes it atomically to <paramref name="path"/>.</summary>
    public static void Save(string path, Image image) => AtomicFile.WriteAllBytes(path, Encode(image));

    /// <summary>
    /// Writes each row as a filter-type byte and the filtered bytes. The filter is chosen per row by
    /// the heuristic the PNG specification recommends (section 12.8) and libpng uses: try all five and
    /// keep the one whose output, read as signed bytes, has the smallest sum of absolute values.
    /// Small values mean the prediction was good, and deflate compresses runs of small values well.
    /// </summary>
    private static void FilterRows(Image image, Stream output)
    {
        int stride = image.Width * image.Channels;
        int unit = image.Channels; // bytes per pixel at 8 bits
        var previous = new byte[stride]; // the row above the first is all zeros
        var candidates = new byte[5][];
        for (int f = 0; f < 5; f++)
            candidates[f] = new byte[stride + 1];

        for (int y = 0; y < image.Height; y++)
        {
            var current = image.Pixels.AsSpan(y * stride, stride);
            int bestFilter = 0;
            long bestScore = long.MaxValue;
            for (int f = 0; f < 5; f++)
            {
                var candidate = candidates[f];
                candidate[0] = (byte)f;
                long score = 0;
                for (int i = 0; i < stride; i++)
                {
                    int left = i >= unit ? current[i - unit] : 0;
                    int up = previous[i];
                    int upLeft = i >= unit ? previous[i - unit] : 0;
                    int prediction = f switch
                    {
                        0 => 0,
                        1 => left,
                        2 => up,
                        3 => (left + up) >> 1,
                        _ => PaethPredictor(left, up, upLeft),
                    };
                    byte filtered = (byte)(current[i] - prediction);
                    candidate[i + 1] = filtered;
                    score += Math.Abs((int)(sbyte)filtered); // widened first: Math.Abs(sbyte -128) would overflow
                }
                if (score < bestScore)
                {
                    bestScore = score;
                    bestFilter = f;
                }
            }
            output.Write(candidates[bestFilter]);
            current.CopyTo(previous);
        }
    }

    private static void WriteChunk(Stream file, string type, ReadOnlySpan<byte> data)
    {
        Span<byte> word = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(word, (uint)data.Length);
        file.Write(word);
        Span<byte> typeBytes = stackalloc byte[4];
        Encoding.ASCII.GetBytes(type, typeBytes);
        file.Write(typeBytes);
        file.Write(data);
        uint crc = Crc32.Finish(Crc32.Update(Crc32.Update(0xFFFFFFFFu, typeBytes), data));
        BinaryPrimitives.WriteUInt32BigEndian(word, crc);
        file.Write(word);
    }
}
