using RawGan.Engine.Backends.Cpu;
namespace RawGan.ProGan.Data;

/// <summary>
/// The built-in data set: pictures of one to three coloured shapes (circles, squares, triangles,
/// rings) on a plain, gradient or vignetted background. It needs no files, so the default training
/// run works anywhere, and it is easy to judge by eye whether a generator has learnt it: at 32x32 a
/// shape is ten or more pixels across.
///
/// Every picture is a pure function of (seed, index): its scene (colours, shapes, positions, sizes,
/// angles) is drawn from a generator seeded by both, and the scene is described in coordinates
/// relative to the image, so the same index renders the same picture at every resolution.
/// Pixels are anti-aliased by supersampling: each pixel averages a regular grid of sample points.
/// </summary>
public sealed class ShapesDataset
{
    /// <summary>The largest resolution the shapes are rendered at.</summary>
    public const int MaxResolution = 256;

    public const int Channels = 3;

    /// <summary>
    /// Changes whenever the pictures a (seed, index) renders change; include it in the source hash of
    /// a cache of these pictures so that an old cache is rebuilt.
    /// </summary>
    public const int Version = 2;

    /// <param name="seed">Chooses the data set; the same seed gives the same pictures everywhere.</param>
    /// <param name="count">How many pictures the data set holds (any number can be rendered).</param>
    public ShapesDataset(int seed = 0, int count = 50_000)
    {
        if (count <= 0)
            throw new ArgumentOutOfRangeException(nameof(count), $"a data set holds at least one picture, got {count}");
        Seed = seed;
        Count = count;
    }

    public int Seed { get; }
    public int Count { get; }

    public enum ShapeKind { Circle, Square, Triangle, Ring }

    private enum BackgroundKind { Plain, LinearGradient, Vignette }

    /// <summary>One shape: centre and size in image coordinates (0..1 across), angle in radians, colour in 0..1.</summary>
    public readonly record struct Shape(ShapeKind Kind, double CentreX, double CentreY, double Size, double Angle, double R, double G, double B);

    private sealed record Scene(
        BackgroundKind Background, (double R, double G, double B) Colour0, (double R, double G, double B) Colour1,
        double GradientAngle, Shape[] Shapes);

    /// <summary>The shapes in picture <paramref name="index"/>, bottom to top (for tests and curious readers).</summary>
    public IReadOnlyList<Shape> ShapesOf(int index) => Describe(index).Shapes;

    private Scene Describe(int index)
    {
        if ((uint)index >= (uint)Count)
            throw new ArgumentOutOfRangeException(nameof(index), $"picture {index} of a data set of {Count}");
        var random = new SplitMix64(SplitMix64.Mix((ulong)(uint)Seed, (ulong)index));

        // Backgrounds are muted (low saturation), either dark or light; shapes are saturated and take
        // the opposite brightness, so they always stand out.
        bool darkBackground = random.NextDouble() < 0.6;
        double backgroundValue = darkBackground ? random.NextDouble(0.08, 0.40) : random.NextDouble(0.70, 0.95);
        double hue = random.NextDouble();
        var colour0 = Hsv(hue, random.NextDouble(0.0, 0.45), backgroundValue);
        var colour1 = Hsv(hue + random.NextDouble(-0.15, 0.15), random.NextDouble(0.0, 0.45),
            Math.Clamp(backgroundValue + random.NextDouble(-0.2, 0.2), 0.03, 0.97));
        double roll = random.NextDouble();
        var background = roll < 0.4 ? BackgroundKind.Plain : roll < 0.8 ? BackgroundKind.LinearGradient : BackgroundKind.Vignette;
        double gradientAngle = random.NextDouble(0, 2 * Math.PI);

        double shapeRoll = random.NextDouble();
        int shapeCount = shapeRoll < 0.5 ? 1 : shapeRoll < 0.85 ? 2 : 3;
        var shapes = new Shape[shapeCount];
        for (int s = 0; s < shapeCount; s++)
        {
            var kind = (ShapeKind)random.NextInt(4);
            double size = shapeCount == 1 ? random.NextDouble(0.20, 0.36) : random.NextDouble(0.13, 0.26);
            // Shapes may overlap, but mostly should not: a few tries find a place clear of the others.
            double x = 0, y = 0;
            for (int attempt = 0; attempt < 20; attempt++)
            {
                x = random.NextDouble(size, 1 - size);
                y = random.NextDouble(size, 1 - size);
                bool clear = true;
                for (int other = 0; other < s; other++)
                {
                    double dx = x - shapes[other].CentreX, dy = y - shapes[other].CentreY, gap = size + shapes[other].Size;
                    clear &= dx * dx + dy * dy >= gap * gap;
                }
                if (clear)
                    break;
            }
            double angle = random.NextDouble(0, 2 * Math.PI);
            double value = darkBackground ? random.NextDouble(0.70, 1.0) : random.NextDouble(0.25, 0.60);
            var (r, g, b) = Hsv(random.NextDouble(), random.NextDouble(0.55, 1.0), value);
            shapes[s] = new Shape(kind, x, y, size, angle, r, g, b);
        }
        return new Scene(background, colour0, colour1, gradientAngle, shapes);
    }

    /// <summary>Picture <paramref name="index"/> as 8-bit CHW (3 x resolution x resolution).</summary>
    public byte[] RenderBytes(int index, int resolution)
    {
        var result = new byte[Channels * resolution * resolution];
        RenderBytes(index, resolution, result);
        return result;
    }

    /// <summary>Writes picture <paramref name="index"/> as 8-bit CHW into <paramref name="destination"/>.</summary>
    public void RenderBytes(int index, int resolution, Span<byte> destination)
    {
        if (resolution < 4 || resolution > MaxResolution || (resolution & (resolution - 1)) != 0)
            throw new ArgumentOutOfRangeException(nameof(resolution), $"the shapes data set renders at 4, 8, ..., {MaxResolution} pixels, not {resolution}");
        int plane = resolution * resolution;
        if (destination.Length != Channels * plane)
            throw new ArgumentException($"a {resolution}x{resolution} RGB picture needs {Channels * plane} bytes, got {destination.Length}");
        var scene = Describe(index);
        // Fewer samples per pixel at high resolution, where each shape edge spans many pixels anyway.
        int samples = resolution <= 64 ? 4 : resolution <= 128 ? 3 : 2;
        double step = 1.0 / (resolution * samples);
        double weight = 1.0 / (samples * samples);
        var cosines = scene.Shapes.Select(s => Math.Cos(s.Angle)).ToArray();
        var sines = scene.Shapes.Select(s => Math.Sin(s.Angle)).ToArray();
        double halfDiagonal = Math.Sqrt(0.5) / resolution;
        for (int py = 0; py < resolution; py++)
        {
            for (int px = 0; px < resolution; px++)
            {
                int p = py * resolution + px;
                double centreX = (px + 0.5) / resolution, centreY = (py + 0.5) / resolution;
                // A pixel that no shape's circumcircle reaches shows only the background. Its average over
                // the pixel is its value at the centre (exactly so for plain and linear backgrounds), so
                // only pixels near shapes need the full grid of samples.
                bool nearShape = false;
                foreach (var shape in scene.Shapes)
                {
                    double dx = centreX - shape.CentreX, dy = centreY - shape.CentreY, reach = shape.Size + halfDiagonal;
                    nearShape |= dx * dx + dy * dy < reach * reach;
                }
                if (!nearShape)
                {
                    var background = BackgroundAt(scene, centreX, centreY);
                    destination[p] = ToByte(background.R);
                    destination[plane + p] = ToByte(background.G);
                    destination[2 * plane + p] = ToByte(background.B);
                    continue;
                }
                double r = 0, g = 0, b = 0;
                for (int sy = 0; sy < samples; sy++)
                {
                    double v = (py * samples + sy + 0.5) * step;
                    for (int sx = 0; sx < samples; sx++)
                    {
                        double u = (px * samples + sx + 0.5) * step;
                        var colour = BackgroundAt(scene, u, v);
                        for (int s = 0; s < scene.Shapes.Length; s++)
                        {
                            var shape = scene.Shapes[s];
                            if (Inside(shape, cosines[s], sines[s], u, v))
                                colour = (shape.R, shape.G, shape.B);
                        }
                        r += colour.R; g += colour.G; b += colour.B;
                    }
                }
                destination[p] = ToByte(r * weight);
                destination[plane + p] = ToByte(g * weight);
                destination[2 * plane + p] = ToByte(b * weight);
            }
        }
    }

    /// <summary>
    /// Pictures <paramref name="first"/> .. first + count - 1 as 8-bit CHW, in order, rendered a
    /// batch at a time on all cores (for filling a data set cache).
    /// </summary>
    public IEnumerable<byte[]> RenderAllBytes(int resolution, int first = 0, int count = -1)
    {
        if (count < 0)
            count = Count - first;
        int batch = Math.Max(16, Environment.ProcessorCount * 16);
        for (int start = first; start < first + count; start += batch)
        {
            int n = Math.Min(batch, first + count - start);
            var pictures = new byte[n][];
            Parallel.For(0, n, CpuParallel.Options, i => pictures[i] = RenderBytes(start + i, resolution));
            foreach (var picture in pictures)
                yield return picture;
        }
    }

    /// <summary>Picture <paramref name="index"/> as the network sees it: float CHW in [-1, 1] (<c>u / 127.5 - 1</c>
    /// of the 8-bit picture, so that it equals what a data set cache of these pictures returns).</summary>
    public float[] Render(int index, int resolution)
    {
        var bytes = RenderBytes(index, resolution);
        var result = new float[bytes.Length];
        for (int i = 0; i < bytes.Length; i++)
            result[i] = bytes[i] / 127.5f - 1f;
        return result;
    }

    private static (double R, double G, double B) BackgroundAt(Scene scene, double u, double v)
    {
        double t = scene.Background switch
        {
            BackgroundKind.Plain => 0,
            // Position along the gradient direction, mapped so that the corners span 0..1.
            BackgroundKind.LinearGradient => Math.Clamp(0.5 + ((u - 0.5) * Math.Cos(scene.GradientAngle) + (v - 0.5) * Math.Sin(scene.GradientAngle)) / Math.Sqrt(2), 0, 1),
            _ => Math.Clamp(2 * Math.Sqrt((u - 0.5) * (u - 0.5) + (v - 0.5) * (v - 0.5)) / Math.Sqrt(2), 0, 1),
        };
        return (scene.Colour0.R + t * (scene.Colour1.R - scene.Colour0.R),
                scene.Colour0.G + t * (scene.Colour1.G - scene.Colour0.G),
                scene.Colour0.B + t * (scene.Colour1.B - scene.Colour0.B));
    }

    /// <summary>Whether the point (u, v) is inside <paramref name="shape"/>; Size is the circumradius.</summary>
    internal static bool Inside(Shape shape, double cos, double sin, double u, double v)
    {
        // The point in the shape's own frame: centred, then rotated by -Angle.
        double dx = u - shape.CentreX, dy = v - shape.CentreY;
        double x = dx * cos + dy * sin, y = -dx * sin + dy * cos;
        double r = shape.Size;
        switch (shape.Kind)
        {
            case ShapeKind.Circle:
                return x * x + y * y <= r * r;
            case ShapeKind.Ring:
                double d2 = x * x + y * y;
                return d2 <= r * r && d2 >= 0.3 * r * r; // inner radius ≈ 0.55 r
            case ShapeKind.Square:
                double half = r * 0.7; // corners stay inside the circumcircle, so a rotated square never leaves the picture
                return Math.Abs(x) <= half && Math.Abs(y) <= half;
            default:
                // Equilateral triangle with circumradius r: inside all three edges, each at distance r/2
                // from the centre, with outward normals at -90, 30 and 150 degrees.
                const double c30 = 0.8660254037844386;
                return -y <= r / 2 && x * c30 + y * 0.5 <= r / 2 && -x * c30 + y * 0.5 <= r / 2;
        }
    }

    private static (double R, double G, double B) Hsv(double hue, double saturation, double value)
    {
        hue -= Math.Floor(hue);
        double h = hue * 6;
        int sector = (int)h % 6;
        double f = h - Math.Floor(h);
        double p = value * (1 - saturation), q = value * (1 - saturation * f), t = value * (1 - saturation * (1 - f));
        return sector switch
        {
            0 => (value, t, p),
            1 => (q, value, p),
            2 => (p, value, t),
            3 => (p, q, value),
            4 => (t, p, value),
            _ => (value, p, q),
        };
    }

    private static byte ToByte(double unit) => (byte)Math.Clamp(Math.Round(unit * 255), 0, 255);
}
