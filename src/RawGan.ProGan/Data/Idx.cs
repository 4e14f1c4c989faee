using System.Buffers.Binary;
using System.IO.Compression;
using RawGan.ProGan.IO;

namespace RawGan.ProGan.Data;

/// <summary>An n-dimensional array of bytes read from an IDX file; <see cref="Data"/> is in C order.</summary>
public sealed record IdxArray(int[] Shape, byte[] Data);

/// <summary>MNIST-style images: <see cref="Count"/> grey images of <see cref="Height"/> x
/// <see cref="Width"/> bytes each, one after another (0 = background, 255 = ink).</summary>
public sealed record IdxImages(int Count, int Height, int Width, byte[] Pixels)
{
    public ReadOnlySpan<byte> this[int index] => Pixels.AsSpan(index * Height * Width, Height * Width);
}

/// <summary>
/// The IDX format of MNIST and Fashion-MNIST (LeCun et al.): a 4-byte magic <c>0, 0, type, rank</c>,
/// then <c>rank</c> dimensions as big-endian 32-bit integers, then the data in C order. Type 0x08 is
/// unsigned bytes, the only type those data sets use and the only one read here. The files are
/// usually distributed gzipped; gzip is recognised by its own magic bytes (1F 8B), not the name.
/// </summary>
public static class Idx
{
    /// <summary>The most bytes of data an IDX file may declare (1 GiB; all of MNIST is 55 MB).</summary>
    public const long MaxDataBytes = 1L << 30;

    private const int UnsignedByteType = 0x08;

    /// <summary>Reads an IDX file of unsigned bytes, gzipped or not.</summary>
    public static IdxArray Read(string path)
    {
        using var file = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
        return Read(file, path);
    }

    /// <summary>Reads IDX from <paramref name="stream"/>; <paramref name="fileName"/> names it in errors.</summary>
    public static IdxArray Read(Stream stream, string fileName)
    {
        Span<byte> start = stackalloc byte[2];
        int got = stream.ReadAtLeast(start, 2, throwOnEndOfStream: false);
        if (got < 2)
            throw new InvalidFileException(fileName, $"file is {got} bytes long, too short for an IDX header");
        var prefix = new MemoryStream(start.ToArray());
        Stream content = new ConcatenatedStream(prefix, stream);
        bool gzipped = start[0] == 0x1F && start[1] == 0x8B;
        if (gzipped)
            content = new GZipStream(content, CompressionMode.Decompress);
        try
        {
            return ReadUncompressed(content, fileName, gzipped, stream.CanSeek ? stream.Length : -1);
        }
        catch (InvalidDataException ex)
        {
            throw new InvalidFileException(fileName, $"the gzip data is corrupt ({ex.Message})", ex);
        }
    }

    private static IdxArray ReadUncompressed(Stream content, string fileName, bool gzipped, long fileLength)
    {
        var magic = new byte[4];
        int got = content.ReadAtLeast(magic, 4, throwOnEndOfStream: false);
        if (got < 4)
            throw new InvalidFileException(fileName, $"{(gzipped ? "the decompressed data" : "file")} is {got} bytes long, too short for an IDX header");
        if (magic[0] != 0 || magic[1] != 0)
            throw new InvalidFileException(fileName, $"not an IDX file (it starts with {Convert.ToHexString(magic)}, IDX starts with 00 00)");
        if (magic[2] != UnsignedByteType)
            throw new InvalidFileException(fileName, $"IDX element type 0x{magic[2]:X2} is not 0x08 (unsigned byte), the only type MNIST data sets use");
        int rank = magic[3];
        if (rank is < 1 or > 4)
            throw new InvalidFileException(fileName, $"IDX rank {rank} is not 1..4");

        var dimensionBytes = new byte[4 * rank];
        got = content.ReadAtLeast(dimensionBytes, dimensionBytes.Length, throwOnEndOfStream: false);
        if (got < dimensionBytes.Length)
            throw new InvalidFileException(fileName, $"the header ends after {4 + got} bytes; {rank} dimensions need {4 + 4 * rank} (truncated?)");
        var shape = new int[rank];
        long total = 1;
        for (int d = 0; d < rank; d++)
        {
            uint size = BinaryPrimitives.ReadUInt32BigEndian(dimensionBytes.AsSpan(4 * d));
            if (size > int.MaxValue)
                throw new InvalidFileException(fileName, $"dimension {d} is {size}, beyond what an IDX file can hold");
            shape[d] = (int)size;
            total *= size;
            if (total > MaxDataBytes)
                throw new InvalidFileException(fileName, $"the header declares {string.Join(" x ", shape[..(d + 1)])}... elements, more than {MaxDataBytes} bytes (corrupt header?)");
        }
        long headerLength = 4 + 4L * rank;
        // An uncompressed file must hold exactly header + data; checking before allocating means a
        // corrupt header cannot make us reserve a gigabyte.
        if (!gzipped && fileLength >= 0 && fileLength != headerLength + total)
            throw new InvalidFileException(fileName,
                $"the header declares {string.Join(" x ", shape)} = {total} bytes of data but the file holds {fileLength - headerLength}");
        // Gzip (deflate) expands data at most about 1032-fold, so a small file cannot hold a large array.
        if (gzipped && fileLength >= 0 && total > fileLength * 1032 + 1024)
            throw new InvalidFileException(fileName,
                $"the header declares {string.Join(" x ", shape)} = {total} bytes of data, more than {fileLength} gzipped bytes can hold (truncated?)");

        var data = new byte[total];
        got = content.ReadAtLeast(data, data.Length, throwOnEndOfStream: false);
        if (got < data.Length)
            throw new InvalidFileException(fileName, $"the data ends after {got} of the {total} bytes the header declares (truncated?)");
        if (content.ReadByte() >= 0)
            throw new InvalidFileException(fileName, $"there is more data after the {total} bytes the header declares (wrong header?)");
        return new IdxArray(shape, data);
    }

    /// <summary>Reads a rank-3 IDX file of images (count, rows, columns).</summary>
    public static IdxImages ReadImages(string path)
    {
        var array = Read(path);
        if (array.Shape.Length != 3)
            throw new InvalidFileException(path, $"an image file has 3 dimensions (count, rows, columns), this one has {array.Shape.Length}");
        if (array.Shape[1] == 0 || array.Shape[2] == 0)
            throw new InvalidFileException(path, $"images of {array.Shape[1]}x{array.Shape[2]} pixels");
        return new IdxImages(array.Shape[0], array.Shape[1], array.Shape[2], array.Data);
    }

    /// <summary>Reads a rank-1 IDX file of labels.</summary>
    public static byte[] ReadLabels(string path)
    {
        var array = Read(path);
        if (array.Shape.Length != 1)
            throw new InvalidFileException(path, $"a label file has 1 dimension, this one has {array.Shape.Length}");
        return array.Data;
    }

    /// <summary>Reads one stream, then another, as if they were one (the peeked magic bytes, then the rest).</summary>
    private sealed class ConcatenatedStream(Stream first, Stream second) : Stream
    {
        private bool _firstDone;

        public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

        public override int Read(Span<byte> buffer)
        {
            if (!_firstDone)
            {
                int n = first.Read(buffer);
                if (n > 0)
                    return n;
                _firstDone = true;
            }
            return second.Read(buffer);
        }

        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }
}
