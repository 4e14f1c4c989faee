using RawGan.ProGan.Imaging;

namespace RawGan.ProGan.Tests;

public class GifTests
{
    /// <summary>
    /// A GIF LZW decoder written from the GIF89a specification (appendix F), independent of the
    /// encoder: codes are read least significant bit first; the width grows when the next code to be
    /// defined reaches 2^width; clear resets; a full table (4096) stops defining new codes.
    /// </summary>
    private static List<byte> LzwDecode(byte[] data, int minimumCodeSize)
    {
        int clear = 1 << minimumCodeSize, end = clear + 1;
        var table = new List<byte[]>();
        void Reset()
        {
            table.Clear();
            for (int i = 0; i < clear; i++) table.Add([(byte)i]);
            table.Add([]); // clear
            table.Add([]); // end
        }
        Reset();
        int width = minimumCodeSize + 1;
        var output = new List<byte>();
        byte[]? previous = null;
        long bitPosition = 0;
        while (true)
        {
            if (bitPosition + width > data.Length * 8L)
                throw new InvalidDataException("LZW data ended without an end code");
            int code = 0;
            for (int b = 0; b < width; b++, bitPosition++)
                if ((data[bitPosition >> 3] >> (int)(bitPosition & 7) & 1) != 0)
                    code |= 1 << b;
            if (code == clear)
            {
                Reset();
                width = minimumCodeSize + 1;
                previous = null;
                continue;
            }
            if (code == end)
                return output;
            byte[] entry;
            if (code < table.Count)
                entry = table[code];
            else if (code == table.Count && previous is not null)
                entry = [.. previous, previous[0]]; // the code being defined right now (KwKwK)
            else
                throw new InvalidDataException($"code {code} is not defined (table has {table.Count})");
            output.AddRange(entry);
            if (previous is not null && table.Count < 4096)
            {
                table.Add([.. previous, entry[0]]);
                if (table.Count == 1 << width && width < 12)
                    width++;
            }
            previous = entry;
        }
    }

    [Theory]
    [InlineData(2, 100, 4)]     // tiny alphabet, short
    [InlineData(8, 50_000, 256)] // random bytes: the table fills up and is cleared many times
    [InlineData(8, 50_000, 3)]  // long runs: long strings, codes reach 12 bits
    [InlineData(4, 20_000, 16)]
    [InlineData(2, 1, 2)]
    public void LzwRoundTripsThroughAnIndependentDecoder(int minimumCodeSize, int length, int alphabet)
    {
        var random = new Random(length + alphabet);
        var indices = new byte[length];
        for (int i = 0; i < length; i++)
            indices[i] = alphabet <= 3 ? (byte)(i / 97 % alphabet) : (byte)random.Next(alphabet);
        var encoded = Gif.LzwEncode(indices, minimumCodeSize);
        Assert.Equal(indices, LzwDecode(encoded, minimumCodeSize));
    }

    private sealed record Frame(int Delay, byte[] Palette, byte[] Indices, int Width, int Height);

    /// <summary>Walks the GIF block structure, checking every field the writer promises.</summary>
    private static (int Width, int Height, int Loop, List<Frame> Frames) Parse(byte[] gif)
    {
        int p = 0;
        int U16() { int v = gif[p] | gif[p + 1] << 8; p += 2; return v; }
        byte[] SubBlocks()
        {
            var data = new List<byte>();
            while (gif[p] != 0)
            {
                int n = gif[p++];
                data.AddRange(gif.AsSpan(p, n).ToArray());
                p += n;
            }
            p++;
            return data.ToArray();
        }
        Assert.Equal("GIF89a"u8.ToArray(), gif[..6]);
        p = 6;
        int width = U16(), height = U16();
        Assert.Equal(0, gif[p] & 0x80); // no global colour table
        p += 3;
        int loop = -1, delay = -1;
        var frames = new List<Frame>();
        while (true)
        {
            byte block = gif[p++];
            if (block == 0x3B)
            {
                Assert.Equal(gif.Length, p); // the trailer is the last byte
                return (width, height, loop, frames);
            }
            if (block == 0x21 && gif[p] == 0xFF)
            {
                p++;
                Assert.Equal(11, gif[p++]);
                Assert.Equal("NETSCAPE2.0"u8.ToArray(), gif[p..(p + 11)]);
                p += 11;
                var data = SubBlocks();
                Assert.Equal(3, data.Length);
                Assert.Equal(1, data[0]);
                loop = data[1] | data[2] << 8;
            }
            else if (block == 0x21 && gif[p] == 0xF9)
            {
                p++;
                Assert.Equal(4, gif[p++]);
                p++; // packed fields
                delay = U16();
                p++; // transparent index
                Assert.Equal(0, gif[p++]);
            }
            else if (block == 0x2C)
            {
                Assert.Equal(0, U16());
                Assert.Equal(0, U16());
                int w = U16(), h = U16();
                byte packed = gif[p++];
                Assert.Equal(0x80, packed & 0xC0); // local colour table, not interlaced
                int entries = 2 << (packed & 7);
                var palette = gif[p..(p + 3 * entries)];
                p += 3 * entries;
                int minimumCodeSize = gif[p++];
                var indices = LzwDecode(SubBlocks(), minimumCodeSize).ToArray();
                Assert.Equal(w * h, indices.Length);
                Assert.All(indices, i => Assert.True(i < entries));
                frames.Add(new Frame(delay, palette, indices, w, h));
            }
            else
            {
                throw new InvalidDataException($"unexpected block 0x{block:X2} at byte {p - 1}");
            }
        }
    }

    [Fact]
    public void AnimationHasHeaderLoopFramesAndTrailer()
    {
        // Frames with few colours keep them exactly, so decoding must give the very same pixels.
        var frames = new List<Image>();
        for (int f = 0; f < 3; f++)
        {
            var frame = new Image(20, 11, 3);
            for (int y = 0; y < 11; y++)
                for (int x = 0; x < 20; x++)
                {
                    frame[x, y, 0] = (byte)(x * 10 + f);
                    frame[x, y, 1] = (byte)(y * 20);
                    frame[x, y, 2] = (byte)(f * 100);
                }
            frames.Add(frame);
        }
        var (width, height, loop, parsed) = Parse(Gif.Encode(frames, delayCentiseconds: 7));
        Assert.Equal((20, 11, 0), (width, height, loop));
        Assert.Equal(3, parsed.Count);
        for (int f = 0; f < 3; f++)
        {
            Assert.Equal(7, parsed[f].Delay);
            for (int i = 0; i < 20 * 11; i++)
            {
                int index = parsed[f].Indices[i];
                Assert.Equal(frames[f].Pixels.AsSpan(i * 3, 3).ToArray(), parsed[f].Palette.AsSpan(index * 3, 3).ToArray());
            }
        }
    }

    [Fact]
    public void ManyColoursAreReducedToANearbyPalette()
    {
        // A smooth 64x64 image with 4096 colours: median cut keeps it close.
        var image = new Image(64, 64, 3);
        for (int y = 0; y < 64; y++)
            for (int x = 0; x < 64; x++)
            {
                image[x, y, 0] = (byte)(x * 4);
                image[x, y, 1] = (byte)(y * 4);
                image[x, y, 2] = (byte)((x + y) * 2);
            }
        var (_, _, _, frames) = Parse(Gif.Encode([image, ImageOps.ToGrey(image)]));
        double error = 0;
        for (int i = 0; i < 64 * 64; i++)
            for (int c = 0; c < 3; c++)
                error += Math.Abs(image.Pixels[i * 3 + c] - frames[0].Palette[frames[0].Indices[i] * 3 + c]);
        error /= 64 * 64 * 3;
        Assert.True(error < 6, $"mean absolute error {error:F2}");
        Assert.Equal(256 * 3, frames[0].Palette.Length);
    }

    [Fact]
    public void FramesOfDifferentSizesAreRefused()
    {
        Assert.Throws<ArgumentException>(() => Gif.Encode([new Image(2, 2, 3), new Image(3, 2, 3)]));
        Assert.Throws<ArgumentException>(() => Gif.Encode([]));
    }

    [Fact]
    public void FramesAreTakenOneAtATimeAsTheyAreWritten()
    {
        // A lazy sequence of 50 frames: when frame k is asked for, frames 0..k-1 are already in
        // the stream, so the writer holds one frame, not the animation.
        var stream = new MemoryStream();
        var lengths = new List<long>();
        IEnumerable<Image> Frames()
        {
            for (int f = 0; f < 50; f++)
            {
                lengths.Add(stream.Length);
                var frame = new Image(16, 16, 3);
                frame.Pixels.AsSpan().Fill((byte)(f * 5));
                yield return frame;
            }
        }
        Gif.Write(stream, Frames(), delayCentiseconds: 4);
        Assert.Equal(50, lengths.Count);
        for (int f = 1; f < 50; f++)
            Assert.True(lengths[f] > lengths[f - 1], $"frame {f} was asked for before frame {f - 1} was written");
        var (_, _, _, parsed) = Parse(stream.ToArray());
        Assert.Equal(50, parsed.Count);
        Assert.Equal(new byte[] { 245, 245, 245 }, parsed[49].Palette.AsSpan(parsed[49].Indices[0] * 3, 3).ToArray());
    }
}
