using RawGan.ProGan.IO;

namespace RawGan.ProGan.Imaging;

/// <summary>
/// Animated GIF writer (GIF89a), used for latent-space interpolation videos that play in any
/// browser. A GIF frame holds at most 256 colours, so every frame gets its own palette by median
/// cut (below); its pixels become palette indices, compressed with variable-width LZW.
///
/// File layout: "GIF89a" | logical screen descriptor | NETSCAPE2.0 application extension (loop
/// count) | per frame: graphic control extension (delay) + image descriptor + local colour table +
/// LZW data in sub-blocks | trailer byte 0x3B.
/// </summary>
public static class Gif
{
    /// <summary>
    /// Writes <paramref name="frames"/> (all the same size; grey, RGB or with alpha, which is
    /// ignored) as an animation showing each frame for <paramref name="delayCentiseconds"/>
    /// hundredths of a second, looping <paramref name="loopCount"/> times (0 = forever).
    /// The file is written atomically. The frames are taken one at a time as they are encoded, so
    /// a lazy sequence keeps one frame in memory however long the animation.
    /// </summary>
    public static void Save(string path, IEnumerable<Image> frames, int delayCentiseconds = 10, int loopCount = 0) =>
        AtomicFile.Write(path, stream => Write(stream, frames, delayCentiseconds, loopCount));

    /// <inheritdoc cref="Save"/>
    public static byte[] Encode(IEnumerable<Image> frames, int delayCentiseconds = 10, int loopCount = 0)
    {
        var file = new MemoryStream();
        Write(file, frames, delayCentiseconds, loopCount);
        return file.ToArray();
    }

    /// <inheritdoc cref="Save"/>
    public static void Write(Stream file, IEnumerable<Image> frames, int delayCentiseconds = 10, int loopCount = 0)
    {
        ArgumentNullException.ThrowIfNull(frames);
        if (delayCentiseconds is < 0 or > ushort.MaxValue || loopCount is < 0 or > ushort.MaxValue)
            throw new ArgumentOutOfRangeException(nameof(delayCentiseconds), "delay and loop count are 0..65535");
        using var each = frames.GetEnumerator();
        if (!each.MoveNext())
            throw new ArgumentException("an animation needs at least one frame", nameof(frames));
        int width = each.Current.Width, height = each.Current.Height;
        if (width > ushort.MaxValue || height > ushort.MaxValue)
            throw new ArgumentException($"GIF sizes are at most 65535, got {width}x{height}");

        file.Write("GIF89a"u8);
        // Logical screen descriptor: size, no global colour table (each frame brings its own),
        // background colour 0, no aspect ratio.
        WriteUInt16(file, width);
        WriteUInt16(file, height);
        file.Write([0x00, 0x00, 0x00]);
        // NETSCAPE2.0 application extension: sub-block 1 holds the loop count.
        file.Write([0x21, 0xFF, 0x0B]);
        file.Write("NETSCAPE2.0"u8);
        file.Write([0x03, 0x01]);
        WriteUInt16(file, loopCount);
        file.WriteByte(0x00);

        do
        {
            var frame = each.Current;
            if (frame.Width != width || frame.Height != height)
                throw new ArgumentException($"all frames must be {width}x{height}; one is {frame.Width}x{frame.Height}");
            var rgb = ImageOps.ToRgb(ImageOps.DropAlpha(frame));
            var (palette, indices) = Quantize(rgb);
            int tableBits = 1; // the colour table holds 2^tableBits entries, 2..256
            while ((1 << tableBits) < palette.Length / 3)
                tableBits++;

            // Graphic control extension: disposal 1 (leave the frame in place), no transparency, delay.
            file.Write([0x21, 0xF9, 0x04, 0x04]);
            WriteUInt16(file, delayCentiseconds);
            file.Write([0x00, 0x00]);
            // Image descriptor: the whole screen, a local colour table of 2^tableBits entries.
            file.WriteByte(0x2C);
            WriteUInt16(file, 0);
            WriteUInt16(file, 0);
            WriteUInt16(file, width);
            WriteUInt16(file, height);
            file.WriteByte((byte)(0x80 | (tableBits - 1)));
            var table = new byte[3 << tableBits];
            palette.CopyTo(table, 0);
            file.Write(table);

            int minimumCodeSize = Math.Max(2, tableBits);
            file.WriteByte((byte)minimumCodeSize);
            WriteSubBlocks(file, LzwEncode(indices, minimumCodeSize));
        } while (each.MoveNext());
        file.WriteByte(0x3B);
    }

    private static void WriteUInt16(Stream stream, int value)
    {
        stream.WriteByte((byte)value);
        stream.WriteByte((byte)(value >> 8));
    }

    /// <summary>GIF cuts data into sub-blocks of at most 255 bytes, each preceded by its length; a zero length ends them.</summary>
    private static void WriteSubBlocks(Stream stream, byte[] data)
    {
        for (int offset = 0; offset < data.Length; offset += 255)
        {
            int length = Math.Min(255, data.Length - offset);
            stream.WriteByte((byte)length);
            stream.Write(data, offset, length);
        }
        stream.WriteByte(0);
    }

    /// <summary>
    /// GIF's LZW: the encoder keeps a dictionary of strings of indices seen so far, each with a code;
    /// it emits the code of the longest known string, then adds that string extended by the next index.
    /// Codes 0..2^m-1 are the single indices (m = minimum code size), 2^m is "clear" (start a new
    /// dictionary), 2^m+1 is "end of information". Codes start (m + 1) bits wide and widen as the
    /// dictionary grows, up to 12 bits (4096 codes); when it is full the encoder emits clear.
    /// Bits are packed least significant first.
    /// </summary>
    internal static byte[] LzwEncode(ReadOnlySpan<byte> indices, int minimumCodeSize)
    {
        int clearCode = 1 << minimumCodeSize, endCode = clearCode + 1;
        var output = new List<byte>(indices.Length / 2 + 16);
        int bitBuffer = 0, bitCount = 0;
        void Emit(int code, int width)
        {
            bitBuffer |= code << bitCount;
            bitCount += width;
            while (bitCount >= 8)
            {
                output.Add((byte)bitBuffer);
                bitBuffer >>= 8;
                bitCount -= 8;
            }
        }

        // The dictionary maps (code of a string, next index) to the code of the extended string.
        var dictionary = new Dictionary<int, int>(4096);
        int nextCode = endCode + 1;
        int codeWidth = minimumCodeSize + 1;
        Emit(clearCode, codeWidth); // decoders expect a clear code first

        if (indices.IsEmpty)
        {
            Emit(endCode, codeWidth);
            return Flush();
        }

        int prefix = indices[0];
        for (int i = 1; i < indices.Length; i++)
        {
            int index = indices[i];
            if (dictionary.TryGetValue((prefix << 8) | index, out int extended))
            {
                prefix = extended;
                continue;
            }
            Emit(prefix, codeWidth);
            if (nextCode < 4096)
            {
                dictionary[(prefix << 8) | index] = nextCode++;
                // The decoder learns each code one step later than the encoder makes it, so the width
                // grows once the largest code the decoder could see next (nextCode - 1) needs another bit.
                if (nextCode - 1 == 1 << codeWidth && codeWidth < 12)
                    codeWidth++;
            }
            else
            {
                Emit(clearCode, codeWidth);
                dictionary.Clear();
                nextCode = endCode + 1;
                codeWidth = minimumCodeSize + 1;
            }
            prefix = index;
        }
        Emit(prefix, codeWidth);
        Emit(endCode, codeWidth);
        return Flush();

        byte[] Flush()
        {
            if (bitCount > 0)
                output.Add((byte)bitBuffer);
            return output.ToArray();
        }
    }

    /// <summary>
    /// Reduces an RGB image to at most 256 colours. An image that already has 256 or fewer keeps
    /// them exactly. Otherwise median cut (Heckbert, 1982): start with one box holding every colour
    /// (counted on a 5-bit-per-channel histogram), repeatedly split the box with the most pixels ×
    /// widest channel range at the pixel-weighted median of that channel, and use each box's mean
    /// colour. Each pixel then takes the nearest palette colour.
    /// </summary>
    internal static (byte[] Palette, byte[] Indices) Quantize(Image rgb)
    {
        int pixels = rgb.Width * rgb.Height;
        var indices = new byte[pixels];

        // Few colours: an exact palette.
        var exact = new Dictionary<int, int>();
        for (int p = 0; p < pixels && exact.Count <= 256; p++)
        {
            int colour = (rgb.Pixels[p * 3] << 16) | (rgb.Pixels[p * 3 + 1] << 8) | rgb.Pixels[p * 3 + 2];
            if (!exact.ContainsKey(colour))
                exact[colour] = exact.Count;
        }
        if (exact.Count <= 256)
        {
            var palette = new byte[Math.Max(2, exact.Count) * 3];
            foreach (var (colour, index) in exact)
            {
                palette[index * 3] = (byte)(colour >> 16);
                palette[index * 3 + 1] = (byte)(colour >> 8);
                palette[index * 3 + 2] = (byte)colour;
            }
            for (int p = 0; p < pixels; p++)
                indices[p] = (byte)exact[(rgb.Pixels[p * 3] << 16) | (rgb.Pixels[p * 3 + 1] << 8) | rgb.Pixels[p * 3 + 2]];
            return (palette, indices);
        }

        // Median cut on a 32x32x32 histogram.
        var histogram = new int[32 * 32 * 32];
        for (int p = 0; p < pixels; p++)
            histogram[Bin(rgb.Pixels[p * 3], rgb.Pixels[p * 3 + 1], rgb.Pixels[p * 3 + 2])]++;
        var bins = new List<int>();
        for (int b = 0; b < histogram.Length; b++)
            if (histogram[b] > 0)
                bins.Add(b);

        var boxes = new List<List<int>> { bins };
        while (boxes.Count < 256)
        {
            int best = -1, bestChannel = 0;
            long bestScore = 0;
            for (int i = 0; i < boxes.Count; i++)
            {
                if (boxes[i].Count < 2)
                    continue;
                var (channel, range) = WidestChannel(boxes[i]);
                long count = 0;
                foreach (int b in boxes[i]) count += histogram[b];
                long score = count * range;
                if (score > bestScore)
                {
                    bestScore = score;
                    best = i;
                    bestChannel = channel;
                }
            }
            if (best < 0)
                break; // every box is a single histogram bin
            var box = boxes[best];
            box.Sort((a, b) => BinChannel(a, bestChannel).CompareTo(BinChannel(b, bestChannel)));
            long total = 0, half = 0;
            foreach (int b in box) total += histogram[b];
            int split = 1;
            for (int i = 0; i < box.Count - 1; i++)
            {
                half += histogram[box[i]];
                split = i + 1;
                if (half * 2 >= total)
                    break;
            }
            boxes[best] = box.GetRange(0, split);
            boxes.Add(box.GetRange(split, box.Count - split));
        }

        var cutPalette = new byte[boxes.Count * 3];
        for (int i = 0; i < boxes.Count; i++)
        {
            double r = 0, g = 0, bl = 0, n = 0;
            foreach (int b in boxes[i])
            {
                double weight = histogram[b];
                r += weight * (BinChannel(b, 0) * 8 + 4);
                g += weight * (BinChannel(b, 1) * 8 + 4);
                bl += weight * (BinChannel(b, 2) * 8 + 4);
                n += weight;
            }
            cutPalette[i * 3] = (byte)Math.Round(r / n);
            cutPalette[i * 3 + 1] = (byte)Math.Round(g / n);
            cutPalette[i * 3 + 2] = (byte)Math.Round(bl / n);
        }

        // Nearest palette colour, computed once per pixel colour and remembered.
        var nearest = new Dictionary<int, byte>();
        for (int p = 0; p < pixels; p++)
        {
            int r = rgb.Pixels[p * 3], g = rgb.Pixels[p * 3 + 1], b = rgb.Pixels[p * 3 + 2];
            int key = (r << 16) | (g << 8) | b;
            if (!nearest.TryGetValue(key, out byte index))
            {
                int bestDistance = int.MaxValue;
                for (int i = 0; i < boxes.Count; i++)
                {
                    int dr = r - cutPalette[i * 3], dg = g - cutPalette[i * 3 + 1], db = b - cutPalette[i * 3 + 2];
                    int distance = dr * dr + dg * dg + db * db;
                    if (distance < bestDistance)
                    {
                        bestDistance = distance;
                        index = (byte)i;
                    }
                }
                nearest[key] = index;
            }
            indices[p] = index;
        }
        return (cutPalette, indices);
    }

    private static int Bin(int r, int g, int b) => ((r >> 3) << 10) | ((g >> 3) << 5) | (b >> 3);

    private static int BinChannel(int bin, int channel) => (bin >> (10 - 5 * channel)) & 31;

    private static (int Channel, int Range) WidestChannel(List<int> box)
    {
        int bestChannel = 0, bestRange = -1;
        for (int c = 0; c < 3; c++)
        {
            int low = 31, high = 0;
            foreach (int b in box)
            {
                int v = BinChannel(b, c);
                low = Math.Min(low, v);
                high = Math.Max(high, v);
            }
            if (high - low > bestRange)
            {
                bestRange = high - low;
                bestChannel = c;
            }
        }
        return (bestChannel, bestRange);
    }
}
