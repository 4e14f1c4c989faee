using System.Buffers.Binary;
using System.IO.Compression;
using System.Text;
using RawGan.ProGan.IO;

namespace RawGan.ProGan.Imaging;

/// <summary>What a PNG's IHDR chunk says, read without decoding the image.</summary>
/// <param name="Width">Pixels per row.</param>
/// <param name="Height">Rows.</param>
/// <param name="ColourType">0 grey, 2 RGB, 3 palette, 4 grey + alpha, 6 RGBA.</param>
/// <param name="BitDepth">Bits per sample (per palette index for colour type 3): 1, 2, 4, 8 or 16.</param>
/// <param name="Interlaced">Adam7 interlacing.</param>
public readonly record struct PngInfo(int Width, int Height, int ColourType, int BitDepth, bool Interlaced)
{
    /// <summary>Colour types 0 and 4 hold grey samples only.</summary>
    public bool IsGrey => ColourType is 0 or 4;
}

/// <summary>
/// PNG (ISO/IEC 15948, the W3C PNG specification), read and written by hand. A PNG file is an
/// 8-byte signature and a list of chunks, each <c>length (4 bytes, big-endian) | type (4 ASCII
/// letters) | data | CRC-32 of type and data</c>. IHDR gives the size and pixel format, PLTE and
/// tRNS a palette and transparency, the IDAT chunks together hold one zlib stream of "filtered"
/// rows, and IEND closes the file.
///
/// The decoder reads every standard kind of image: colour types 0, 2, 3, 4 and 6 at every bit
/// depth the specification allows, plain or Adam7-interlaced, with all five row filters. It
/// returns an 8-bit <see cref="Image"/>: 16-bit samples are rounded to 8 bits
/// (<c>round(v * 255 / 65535)</c>), 1/2/4-bit grey is stretched to 0..255 (so 1-bit black and white
/// is 0 and 255), palettes are expanded to RGB, and a tRNS chunk adds an alpha channel (grey → grey
/// + alpha, RGB or palette → RGBA).
///
/// Files come from users, so nothing in the file is trusted: every length is checked against what
/// is actually present before anything is allocated, every CRC is verified, and any problem becomes
/// an <see cref="InvalidFileException"/> naming the file, the chunk and the byte offset.
/// </summary>
public static partial class Png
{
    /// <summary>
    /// The largest image RawGan decodes: 2^27 pixels (about 134 megapixels, e.g. 11585 x 11585).
    /// A header asking for more is far more likely corrupt than real, and a GAN trains on a few
    /// hundred pixels a side anyway.
    /// </summary>
    public const long MaxPixels = 1L << 27;

    /// <summary>
    /// The longest side RawGan decodes: 65535 pixels, JPEG's own limit. A PNG may claim up to
    /// 2^31-1 a side; a crafted very wide one within <see cref="MaxPixels"/> is a row of gigabytes
    /// that a centre crop would shrink to a few pixels anyway.
    /// </summary>
    public const int MaxSide = 65535;

    /// <summary>
    /// Deflate cannot expand data by more than about 1032:1 (a 258-byte match costs at least two
    /// bits), so compressed data smaller than 1/1032 of the image it claims to hold is truncated.
    /// </summary>
    private const long MaxDeflateExpansion = 1032;

    private static ReadOnlySpan<byte> Signature => [137, 80, 78, 71, 13, 10, 26, 10];

    // Adam7 passes: first column, first row, column step, row step (PNG specification, section 8.2).
    private static readonly (int X0, int Y0, int Dx, int Dy)[] Adam7Passes =
    [
        (0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2),
    ];

    /// <summary>True when <paramref name="fileStart"/> begins with the PNG signature.</summary>
    public static bool HasSignature(ReadOnlySpan<byte> fileStart) =>
        fileStart.Length >= 8 && fileStart[..8].SequenceEqual(Signature);

    /// <summary>Reads and decodes the PNG file at <paramref name="path"/>.</summary>
    public static Image Load(string path) => Decode(File.ReadAllBytes(path), path);

    /// <summary>
    /// Reads the IHDR chunk (the first 33 bytes of a PNG) without decoding the image.
    /// <paramref name="fileName"/> names the file in error messages.
    /// </summary>
    public static PngInfo ReadInfo(ReadOnlySpan<byte> fileStart, string fileName)
    {
        if (!HasSignature(fileStart))
            throw new InvalidFileException(fileName, "not a PNG file (the 8-byte PNG signature is missing)");
        if (fileStart.Length < 8 + 12 + 13)
            throw new InvalidFileException(fileName, $"file ends at byte {fileStart.Length}, inside the IHDR chunk (truncated?)");
        var chunk = ReadChunk(fileStart, 8, fileName);
        if (chunk.Type != "IHDR")
            throw new InvalidFileException(fileName, $"the first chunk is {chunk.Type}, not IHDR");
        return ParseHeader(chunk.Data, fileName);
    }

    /// <summary>
    /// Decodes a whole PNG file held in memory. <paramref name="fileName"/> names the file in error
    /// messages.
    /// </summary>
    public static Image Decode(ReadOnlySpan<byte> file, string fileName)
    {
        if (!HasSignature(file))
            throw new InvalidFileException(fileName, "not a PNG file (the 8-byte PNG signature is missing)");

        PngInfo? header = null;
        byte[]? palette = null;          // RGB triples
        byte[]? paletteAlpha = null;     // tRNS for colour type 3: alpha of the first entries
        int transparentGrey = -1;        // tRNS for colour type 0: this sample value is transparent
        (int R, int G, int B)? transparentRgb = null; // tRNS for colour type 2
        var compressed = new MemoryStream();
        int idatCount = 0;

        int position = 8;
        while (true)
        {
            var chunk = ReadChunk(file, position, fileName);
            string where = $"chunk {chunk.Type} at byte {position}";
            if (header is null && chunk.Type != "IHDR")
                throw new InvalidFileException(fileName, $"the first chunk is {chunk.Type}, not IHDR");

            switch (chunk.Type)
            {
                case "IHDR":
                    if (header is not null)
                        throw new InvalidFileException(fileName, $"{where}: a second IHDR chunk");
                    header = ParseHeader(chunk.Data, fileName);
                    break;

                case "PLTE":
                    if (chunk.Data.Length % 3 != 0 || chunk.Data.Length == 0 || chunk.Data.Length > 256 * 3)
                        throw new InvalidFileException(fileName, $"{where}: a palette is 1 to 256 RGB entries, but the chunk holds {chunk.Data.Length} bytes");
                    palette = chunk.Data.ToArray();
                    break;

                case "tRNS":
                    switch (header!.Value.ColourType)
                    {
                        case 3:
                            if (palette is null)
                                throw new InvalidFileException(fileName, $"{where}: tRNS comes before the PLTE chunk it refers to");
                            if (chunk.Data.Length > palette.Length / 3)
                                throw new InvalidFileException(fileName, $"{where}: {chunk.Data.Length} alpha values for a palette of {palette.Length / 3} entries");
                            paletteAlpha = chunk.Data.ToArray();
                            break;
                        case 0:
                            if (chunk.Data.Length != 2)
                                throw new InvalidFileException(fileName, $"{where}: a grey transparency chunk holds 2 bytes, not {chunk.Data.Length}");
                            transparentGrey = BinaryPrimitives.ReadUInt16BigEndian(chunk.Data);
                            break;
                        case 2:
                            if (chunk.Data.Length != 6)
                                throw new InvalidFileException(fileName, $"{where}: an RGB transparency chunk holds 6 bytes, not {chunk.Data.Length}");
                            transparentRgb = (BinaryPrimitives.ReadUInt16BigEndian(chunk.Data),
                                              BinaryPrimitives.ReadUInt16BigEndian(chunk.Data[2..]),
                                              BinaryPrimitives.ReadUInt16BigEndian(chunk.Data[4..]));
                            break;
                        default:
                            break; // Types 4 and 6 already carry alpha; the specification forbids tRNS there, so it is ignored.
                    }
                    break;

                case "IDAT":
                    compressed.Write(chunk.Data);
                    idatCount++;
                    break;

                case "IEND":
                    break;

                default:
                    // Bit 5 of the first letter (lower case) marks an ancillary chunk, which a decoder may
                    // skip (text, gamma, time, ...). An unknown critical chunk changes how pixels are read.
                    if (char.IsUpper(chunk.Type[0]))
                        throw new InvalidFileException(fileName, $"{where}: unknown critical chunk; this PNG uses a feature RawGan does not read");
                    break;
            }

            position += 12 + chunk.Data.Length;
            if (chunk.Type == "IEND")
                break;
        }

        PngInfo info = header!.Value;
        if (idatCount == 0)
            throw new InvalidFileException(fileName, "no IDAT chunk: the file holds no image data");
        if (info.ColourType == 3 && palette is null)
            throw new InvalidFileException(fileName, "colour type 3 (palette) but no PLTE chunk");

        // How many bytes the filtered rows take once decompressed, pass by pass.
        int bitsPerPixel = SamplesPerPixel(info.ColourType) * info.BitDepth;
        var passes = info.Interlaced ? Adam7Passes : [(0, 0, 1, 1)];
        long rawSize = RowBytes(info);
        if (rawSize > Array.MaxLength)
            throw new InvalidFileException(fileName, $"IHDR: a {info.Width}x{info.Height} image has {rawSize} bytes of rows, more than RawGan decodes");
        if (rawSize > compressed.Length * MaxDeflateExpansion + 64)
            throw new InvalidFileException(fileName,
                $"IDAT: {compressed.Length} compressed bytes cannot hold a {info.Width}x{info.Height} image ({rawSize} bytes of rows); the file is truncated or its header is wrong");

        byte[] raw = Inflate(compressed, (int)rawSize, fileName);

        var image = new Image(info.Width, info.Height, OutputChannels(info, paletteAlpha, transparentGrey, transparentRgb));
        var pixelReader = new PixelReader(info, palette, paletteAlpha, transparentGrey, transparentRgb);
        int filterUnit = Math.Max(1, bitsPerPixel / 8);
        int offset = 0;
        for (int p = 0; p < passes.Length; p++)
        {
            var (x0, y0, dx, dy) = passes[p];
            int passWidth = (int)PassExtent(info.Width, x0, dx), passHeight = (int)PassExtent(info.Height, y0, dy);
            if (passWidth == 0 || passHeight == 0)
                continue; // an empty pass has no rows and no filter bytes (PNG specification, section 8.2)
            int stride = checked((int)(((long)passWidth * bitsPerPixel + 7) / 8));
            for (int row = 0; row < passHeight; row++)
            {
                int filterType = raw[offset];
                var current = raw.AsSpan(offset + 1, stride);
                ReadOnlySpan<byte> previous = row > 0 ? raw.AsSpan(offset + 1 - (stride + 1), stride) : [];
                if (filterType > 4)
                {
                    string pass = info.Interlaced ? $" of interlace pass {p + 1}" : "";
                    throw new InvalidFileException(fileName, $"IDAT: row {row}{pass} has filter type {filterType}, which is not one of 0..4 (corrupt image data)");
                }
                Unfilter(filterType, current, previous, filterUnit);
                pixelReader.EmitRow(current, image, y0 + row * dy, x0, dx, passWidth);
                offset += stride + 1;
            }
        }
        return image;
    }

    /// <summary>
    /// Bytes of the filtered rows of <paramref name="info"/>'s image once decompressed (a filter
    /// byte and the packed samples per row, pass by pass when interlaced), in checked 64-bit
    /// arithmetic: a size beyond it (no header <see cref="ReadInfo"/> accepts comes near) is
    /// <see cref="long.MaxValue"/>.
    /// </summary>
    public static long RowBytes(PngInfo info)
    {
        long bitsPerPixel = SamplesPerPixel(info.ColourType) * info.BitDepth;
        long total = 0;
        try
        {
            foreach (var (x0, y0, dx, dy) in info.Interlaced ? Adam7Passes : [(0, 0, 1, 1)])
            {
                long passWidth = PassExtent(info.Width, x0, dx), passHeight = PassExtent(info.Height, y0, dy);
                if (passWidth > 0 && passHeight > 0)
                    total = checked(total + passHeight * (1 + (passWidth * bitsPerPixel + 7) / 8));
            }
        }
        catch (OverflowException)
        {
            return long.MaxValue;
        }
        return total;
    }

    private readonly ref struct Chunk(string type, ReadOnlySpan<byte> data)
    {
        public readonly string Type = type;
        public readonly ReadOnlySpan<byte> Data = data;
    }

    /// <summary>Reads the chunk at <paramref name="position"/>, checking its length and CRC.</summary>
    private static Chunk ReadChunk(ReadOnlySpan<byte> file, int position, string fileName)
    {
        if (position == file.Length)
            throw new InvalidFileException(fileName, $"file ends at byte {position} without an IEND chunk (truncated?)");
        if (file.Length - position < 12)
            throw new InvalidFileException(fileName, $"file ends at byte {file.Length}, inside the chunk header at byte {position} (truncated?)");
        uint length = BinaryPrimitives.ReadUInt32BigEndian(file[position..]);
        var typeBytes = file.Slice(position + 4, 4);
        foreach (byte b in typeBytes)
        {
            if (!(b is >= (byte)'A' and <= (byte)'Z' || b is >= (byte)'a' and <= (byte)'z'))
                throw new InvalidFileException(fileName, $"byte {position}: the chunk type {Convert.ToHexString(typeBytes)} is not four letters (corrupt file)");
        }
        string type = Encoding.ASCII.GetString(typeBytes);
        if (length > int.MaxValue)
            throw new InvalidFileException(fileName, $"chunk {type} at byte {position}: length {length} is beyond PNG's limit of 2^31-1 (corrupt file)");
        long available = file.Length - position - 12L;
        if (length > available)
            throw new InvalidFileException(fileName, $"chunk {type} at byte {position}: declares {length} bytes of data but only {Math.Max(0, available)} follow (truncated?)");
        var data = file.Slice(position + 8, (int)length);
        uint storedCrc = BinaryPrimitives.ReadUInt32BigEndian(file[(position + 8 + (int)length)..]);
        uint computedCrc = Crc32.Compute(file.Slice(position + 4, 4 + (int)length));
        if (storedCrc != computedCrc)
            throw new InvalidFileException(fileName, $"chunk {type} at byte {position}: CRC mismatch (stored {storedCrc:X8}, computed {computedCrc:X8})");
        return new Chunk(type, data);
    }

    private static PngInfo ParseHeader(ReadOnlySpan<byte> data, string fileName)
    {
        if (data.Length != 13)
            throw new InvalidFileException(fileName, $"chunk IHDR at byte 8: holds {data.Length} bytes, not 13");
        uint width = BinaryPrimitives.ReadUInt32BigEndian(data);
        uint height = BinaryPrimitives.ReadUInt32BigEndian(data[4..]);
        int bitDepth = data[8], colourType = data[9], compression = data[10], filter = data[11], interlace = data[12];
        if (width == 0 || height == 0 || width > int.MaxValue || height > int.MaxValue)
            throw new InvalidFileException(fileName, $"IHDR: image size {width}x{height} is not valid (each side is 1 to 2^31-1)");
        bool depthAllowed = colourType switch
        {
            0 => bitDepth is 1 or 2 or 4 or 8 or 16,
            3 => bitDepth is 1 or 2 or 4 or 8,
            2 or 4 or 6 => bitDepth is 8 or 16,
            _ => throw new InvalidFileException(fileName, $"IHDR: colour type {colourType} is not one of 0, 2, 3, 4, 6"),
        };
        if (!depthAllowed)
            throw new InvalidFileException(fileName, $"IHDR: bit depth {bitDepth} is not allowed for colour type {colourType}");
        if (compression != 0)
            throw new InvalidFileException(fileName, $"IHDR: compression method {compression} is unknown (only 0, deflate, exists)");
        if (filter != 0)
            throw new InvalidFileException(fileName, $"IHDR: filter method {filter} is unknown (only 0 exists)");
        if (interlace > 1)
            throw new InvalidFileException(fileName, $"IHDR: interlace method {interlace} is unknown (0 none, 1 Adam7)");
        if ((long)width * height > MaxPixels)
            throw new InvalidFileException(fileName,
                $"IHDR: {width}x{height} is {(long)width * height / 1_000_000} megapixels, more than RawGan's limit of {MaxPixels / 1_000_000}; scale the image down first");
        if (width > MaxSide || height > MaxSide)
            throw new InvalidFileException(fileName,
                $"IHDR: {width}x{height} has a side longer than RawGan's limit of {MaxSide} pixels; scale the image down first");
        return new PngInfo((int)width, (int)height, colourType, bitDepth, interlace == 1);
    }

    private static int SamplesPerPixel(int colourType) => colourType switch
    {
        0 => 1,
        2 => 3,
        3 => 1,
        4 => 2,
        _ => 4,
    };

    private static int OutputChannels(PngInfo info, byte[]? paletteAlpha, int transparentGrey, (int, int, int)? transparentRgb) =>
        info.ColourType switch
        {
            0 => transparentGrey >= 0 ? 2 : 1,
            2 => transparentRgb is not null ? 4 : 3,
            3 => paletteAlpha is not null ? 4 : 3,
            4 => 2,
            _ => 4,
        };

    /// <summary>Pixels of an Adam7 pass along one axis: those at start, start + step, ... below size.</summary>
    private static long PassExtent(int size, int start, int step) => size > start ? (size - start + step - 1) / step : 0;

    /// <summary>Inflates exactly <paramref name="rawSize"/> bytes of rows from the concatenated IDAT data.</summary>
    private static byte[] Inflate(MemoryStream compressed, int rawSize, string fileName)
    {
        compressed.Position = 0;
        var raw = new byte[rawSize];
        int filled = 0;
        try
        {
            using var zlib = new ZLibStream(compressed, CompressionMode.Decompress);
            while (filled < rawSize)
            {
                int read = zlib.Read(raw, filled, rawSize - filled);
                if (read == 0)
                    break;
                filled += read;
            }
            // Reading on to the end of the stream makes zlib check the Adler-32 trailer. Extra bytes past
            // the image are tolerated, as most decoders do.
            Span<byte> spill = stackalloc byte[256];
            int extra = 0;
            while (filled == rawSize && extra < 1 << 20)
            {
                int read = zlib.Read(spill);
                if (read == 0)
                    break;
                extra += read;
            }
        }
        catch (InvalidDataException ex)
        {
            throw new InvalidFileException(fileName, $"IDAT: the zlib stream is corrupt after {filled} of {rawSize} bytes of rows ({ex.Message})", ex);
        }
        if (filled < rawSize)
            throw new InvalidFileException(fileName, $"IDAT: the image data ends after {filled} of {rawSize} bytes of rows (truncated?)");
        return raw;
    }

    /// <summary>
    /// Undoes one row's filter in place (PNG specification, section 9). Each byte was stored as the
    /// difference from a prediction made from its left neighbour a (one whole pixel back, at least a
    /// byte), the byte above b and the byte above-left c; all arithmetic is modulo 256.
    /// </summary>
    private static void Unfilter(int filterType, Span<byte> current, ReadOnlySpan<byte> previous, int filterUnit)
    {
        bool hasPrevious = !previous.IsEmpty;
        switch (filterType)
        {
            case 0: // None
                break;
            case 1: // Sub: predict a
                for (int i = filterUnit; i < current.Length; i++)
                    current[i] += current[i - filterUnit];
                break;
            case 2: // Up: predict b
                if (hasPrevious)
                    for (int i = 0; i < current.Length; i++)
                        current[i] += previous[i];
                break;
            case 3: // Average: predict floor((a + b) / 2)
                for (int i = 0; i < current.Length; i++)
                {
                    int left = i >= filterUnit ? current[i - filterUnit] : 0;
                    int up = hasPrevious ? previous[i] : 0;
                    current[i] += (byte)((left + up) >> 1);
                }
                break;
            case 4: // Paeth: predict whichever of a, b, c is closest to a + b - c
                for (int i = 0; i < current.Length; i++)
                {
                    int left = i >= filterUnit ? current[i - filterUnit] : 0;
                    int up = hasPrevious ? previous[i] : 0;
                    int upLeft = hasPrevious && i >= filterUnit ? previous[i - filterUnit] : 0;
                    current[i] += PaethPredictor(left, up, upLeft);
                }
                break;
        }
    }

    internal static byte PaethPredictor(int a, int b, int c)
    {
        int p = a + b - c;
        int pa = Math.Abs(p - a), pb = Math.Abs(p - b), pc = Math.Abs(p - c);
        // Ties go to a, then b, then c, exactly as the specification orders them.
        if (pa <= pb && pa <= pc) return (byte)a;
        return pb <= pc ? (byte)b : (byte)c;
    }

    /// <summary>Turns one unfiltered row of samples into 8-bit pixels of the output image.</summary>
    private sealed class PixelReader(
        PngInfo info, byte[]? palette, byte[]? paletteAlpha, int transparentGrey, (int R, int G, int B)? transparentRgb)
    {
        private readonly int _depth = info.BitDepth;
        private readonly int _samples = SamplesPerPixel(info.ColourType);
        private readonly int _maxSample = (1 << info.BitDepth) - 1;

        public void EmitRow(ReadOnlySpan<byte> row, Image image, int y, int x0, int dx, int count)
        {
            byte[] output = image.Pixels;
            int channels = image.Channels;
            // The common case (8-bit, no tRNS, not interlaced) is a straight copy.
            if (_depth == 8 && info.ColourType != 3 && channels == _samples && dx == 1)
            {
                row[..(count * channels)].CopyTo(output.AsSpan(y * image.Width * channels));
                return;
            }
            for (int i = 0; i < count; i++)
            {
                int o = (y * image.Width + x0 + i * dx) * channels;
                switch (info.ColourType)
                {
                    case 0:
                        {
                            int grey = Sample(row, i, 0);
                            output[o] = To8Bit(grey);
                            if (channels == 2) output[o + 1] = grey == transparentGrey ? (byte)0 : (byte)255;
                            break;
                        }
                    case 2:
                        {
                            int r = Sample(row, i, 0), g = Sample(row, i, 1), b = Sample(row, i, 2);
                            output[o] = To8Bit(r); output[o + 1] = To8Bit(g); output[o + 2] = To8Bit(b);
                            if (channels == 4) output[o + 3] = transparentRgb == (r, g, b) ? (byte)0 : (byte)255;
                            break;
                        }
                    case 3:
                        {
                            int index = Sample(row, i, 0);
                            // An index past the palette's end is an error in the file; it decodes as opaque
                            // black rather than rejecting an otherwise good image.
                            if (index * 3 + 2 < palette!.Length)
                            {
                                output[o] = palette[index * 3]; output[o + 1] = palette[index * 3 + 1]; output[o + 2] = palette[index * 3 + 2];
                            }
                            else
                            {
                                output[o] = 0; output[o + 1] = 0; output[o + 2] = 0;
                            }
                            if (channels == 4) output[o + 3] = index < paletteAlpha!.Length ? paletteAlpha[index] : (byte)255;
                            break;
                        }
                    default: // 4 and 6: samples map one to one
                        for (int c = 0; c < _samples; c++)
                            output[o + c] = To8Bit(Sample(row, i, c));
                        break;
                }
            }
        }

        /// <summary>Sample <paramref name="channel"/> of pixel <paramref name="pixel"/> at this image's bit depth.</summary>
        private int Sample(ReadOnlySpan<byte> row, int pixel, int channel)
        {
            switch (_depth)
            {
                case 8:
                    return row[pixel * _samples + channel];
                case 16:
                    return BinaryPrimitives.ReadUInt16BigEndian(row[((pixel * _samples + channel) * 2)..]);
                default:
                    {
                        // Depths below 8 occur only with one sample per pixel, packed from the high bit down.
                        int bit = pixel * _depth;
                        int shift = 8 - _depth - (bit & 7);
                        return (row[bit >> 3] >> shift) & _maxSample;
                    }
            }
        }

        private byte To8Bit(int sample) => _depth switch
        {
            8 => (byte)sample,
            16 => (byte)((sample * 255 + 32767) / 65535),
            _ => (byte)(sample * 255 / _maxSample), // exact for 1, 2 and 4 bits: multiples of 255, 85, 17
        };
    }
}
