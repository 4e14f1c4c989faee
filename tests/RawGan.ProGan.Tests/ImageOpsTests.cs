using RawGan.ProGan.Imaging;

namespace RawGan.ProGan.Tests;

public class ImageOpsTests
{
    [Fact]
    public void AreaResizeAveragesExactlyForNonIntegerRatios()
    {
        // Three pixels into two: each output covers 1.5 inputs.
        // out0 = (0 * 1 + 90 * 0.5) / 1.5 = 30, out1 = (90 * 0.5 + 180 * 1) / 1.5 = 150.
        var row = new Image(3, 1, 1, [0, 90, 180]);
        Assert.Equal([30, 150], ImageOps.ResizeArea(row, 2, 1).Pixels);

        // Five into three (each covers 5/3): out1 = (v1 * 1/3 + v2 * 1 + v3 * 1/3) / (5/3).
        var five = new Image(5, 1, 1, [0, 30, 60, 90, 120]);
        var three = ImageOps.ResizeArea(five, 3, 1).Pixels;
        Assert.Equal(Math.Round((30 / 3.0 + 60 + 90 / 3.0) / (5 / 3.0)), three[1]);
        Assert.Equal(Math.Round((0 + 30 * 2 / 3.0) / (5 / 3.0)), three[0]);
    }

    [Fact]
    public void HalvingIsTheTwoByTwoBoxAverage()
    {
        var image = new Image(4, 4, 3);
        var random = new Random(1);
        random.NextBytes(image.Pixels);
        var half = ImageOps.ResizeArea(image, 2);
        for (int y = 0; y < 2; y++)
            for (int x = 0; x < 2; x++)
                for (int c = 0; c < 3; c++)
                {
                    double mean = (image[2 * x, 2 * y, c] + image[2 * x + 1, 2 * y, c] + image[2 * x, 2 * y + 1, c] + image[2 * x + 1, 2 * y + 1, c]) / 4.0;
                    Assert.True(Math.Abs(half[x, y, c] - mean) <= 0.5 + 1e-4, $"({x},{y},{c}): {half[x, y, c]} vs {mean}");
                }
    }

    [Theory]
    [InlineData(97, 61, 32)]
    [InlineData(7, 5, 16)]  // enlarging
    [InlineData(300, 300, 7)]
    public void AreaResizeKeepsAConstantImageConstant(int width, int height, int size)
    {
        var image = new Image(width, height, 3);
        for (int i = 0; i < image.Pixels.Length; i++)
            image.Pixels[i] = (byte)(i % 3 == 0 ? 200 : i % 3 == 1 ? 17 : 99);
        var resized = ImageOps.ResizeArea(image, size);
        for (int p = 0; p < size * size; p++)
            Assert.Equal([200, 17, 99], resized.Pixels.AsSpan(p * 3, 3).ToArray());
    }

    [Fact]
    public void AreaWeightsSumToOne()
    {
        foreach (var (input, output) in new[] { (97, 32), (3, 2), (5, 8), (1000, 3), (64, 64) })
            foreach (var (_, weights) in ImageOps.AreaWeights(input, output))
                Assert.Equal(1.0, weights.Sum(w => (double)w), 5);
    }

    [Fact]
    public void CentreCropTakesTheMiddleSquare()
    {
        var wide = new Image(5, 2, 1, [0, 1, 2, 3, 4, 10, 11, 12, 13, 14]);
        var square = ImageOps.CenterCropSquare(wide);
        Assert.Equal((2, 2), (square.Width, square.Height));
        Assert.Equal([1, 2, 11, 12], square.Pixels);
    }

    [Fact]
    public void FloatConversionRoundTripsEveryByte()
    {
        var image = new Image(256, 1, 1, Enumerable.Range(0, 256).Select(i => (byte)i).ToArray());
        var floats = ImageOps.ToFloatChw(image);
        Assert.Equal(-1f, floats[0]);
        Assert.Equal(1f, floats[255]);
        Assert.Equal(image.Pixels, ImageOps.FromFloatChw(floats, 1, 1, 256).Pixels);
    }

    [Fact]
    public void FloatConversionIsChannelsFirstAndClampsBack()
    {
        var image = new Image(2, 1, 3, [0, 128, 255, 10, 20, 30]);
        var chw = ImageOps.ToFloatChw(image);
        // Channel planes: R = [0, 10], G = [128, 20], B = [255, 30].
        Assert.Equal(new[] { 0f, 10f, 128f, 20f, 255f, 30f }.Select(v => v / 127.5f - 1f), chw);
        Assert.Equal(255, ImageOps.ToByte(3.5f));
        Assert.Equal(0, ImageOps.ToByte(-7f));
        Assert.Equal(0, ImageOps.ToByte(float.NaN));
        Assert.Equal(255, ImageOps.ToByte(float.PositiveInfinity));
    }

    [Fact]
    public void GreyAndRgbConversions()
    {
        var rgb = new Image(2, 1, 3, [255, 0, 0, 10, 200, 30]);
        // BT.601: 0.299 * 255 = 76.2 → 76; 0.299 * 10 + 0.587 * 200 + 0.114 * 30 = 123.81 → 124.
        Assert.Equal([76, 124], ImageOps.ToGrey(rgb).Pixels);
        var grey = new Image(2, 1, 2, [7, 100, 9, 255]);
        Assert.Equal([7, 7, 7, 100, 9, 9, 9, 255], ImageOps.ToRgb(grey).Pixels);
    }

    [Fact]
    public void AlphaIsCompositedOnBlackOrDropped()
    {
        var rgba = new Image(3, 1, 4, [200, 100, 50, 255, 200, 100, 50, 0, 200, 100, 50, 128]);
        Assert.Equal([200, 100, 50, 0, 0, 0, 100, 50, 25], ImageOps.CompositeOnBlack(rgba).Pixels);
        Assert.Equal([200, 100, 50, 200, 100, 50, 200, 100, 50], ImageOps.DropAlpha(rgba).Pixels);
    }

    [Fact]
    public void GridTilesImagesWithBorders()
    {
        // Three 2x2 images: red, a grey ramp, and blue; 2 columns, 1-pixel border, border value 9.
        int r = 2;
        var red = new float[] { 1, 1, 1, 1, -1, -1, -1, -1, -1, -1, -1, -1 };
        var blue = new float[] { -1, -1, -1, -1, -1, -1, -1, -1, 1, 1, 1, 1 };
        var batch = red.Concat(new float[12]).Concat(blue).ToArray();
        var grid = ImageOps.Grid(batch, 3, 3, r, columns: 2, border: 1, borderValue: 9);
        Assert.Equal((2 * 2 + 3, 2 * 2 + 3, 3), (grid.Width, grid.Height, grid.Channels));
        Assert.Equal([9, 9, 9], Pixel(grid, 0, 0));
        Assert.Equal([255, 0, 0], Pixel(grid, 1, 1));
        Assert.Equal([9, 9, 9], Pixel(grid, 3, 1));
        Assert.Equal([128, 128, 128], Pixel(grid, 4, 2)); // 0.0 → round(127.5) = 128 (to even)
        Assert.Equal([0, 0, 255], Pixel(grid, 1, 4));
        Assert.Equal([9, 9, 9], Pixel(grid, 4, 4)); // the empty fourth cell keeps the border colour

        var greyGrid = ImageOps.Grid(new float[] { 1, 1, 1, 1 }, 1, 1, 2);
        Assert.Equal([255, 255, 255], Pixel(greyGrid, 2, 2));
    }

    private static byte[] Pixel(Image image, int x, int y) => image.Pixels.AsSpan((y * image.Width + x) * image.Channels, image.Channels).ToArray();
}
