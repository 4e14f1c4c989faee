using System.Numerics;
using System.Runtime.InteropServices;

namespace RawGan.Engine.Backends.Cuda;

// The kernel methods of IBackend: each one checks what the CPU backend checks, chooses the
// launch shape its kernel's opening comment describes (kernels/*.cu), packs the arguments in the
// kernel's parameter order and launches. Nothing here allocates on the managed heap.
public sealed unsafe partial class CudaBackend : IBackend
{
    // ------------------------------------------------------------------ launch shapes

    /// <summary>The one-dimensional block of <paramref name="kernel"/>.</summary>
    private Dim3 Block1D(string kernel) => new((uint)ThreadsPerBlock(kernel));

    /// <summary>A grid-stride kernel over n items (elementwise.cu and friends).</summary>
    private void LaunchElementwise(string kernel, long n, KernelArgs args)
    {
        if (n <= 0) return;
        int threads = ThreadsPerBlock(kernel);
        Launch(kernel, Grid1D(n, threads), new Dim3((uint)threads), 0, args);
    }

    /// <summary>One block per item (a sample, a group, an output), capped at CUDA's grid limit;
    /// the kernels loop over items by block, so the cap is only a limit on parallelism.</summary>
    private static Dim3 GridPerItem(long items) => new((uint)Math.Clamp(items, 0, int.MaxValue));

    /// <summary>The kernels that run the tiled product of gemm_tile.cuh: two-dimensional blocks
    /// and <see cref="TileSharedBytes"/> of dynamic shared memory.</summary>
    public static readonly IReadOnlySet<string> TiledKernels =
        new HashSet<string> { "sgemm", "conv2d_forward", "conv2d_forward_pixelnorm", "conv2d_backward_input", "conv2d_backward_weight" };

    /// <summary>The two-dimensional block of the tiled GEMM and convolutions (gemm_tile.cuh):
    /// <paramref name="threads"/> as close to square as a power of two allows (16 x 16 for 256,
    /// 8 x 4 for 32), x the longer side so a warp spans whole rows of the tile.</summary>
    public static Dim3 TileBlock(int threads)
    {
        int log = BitOperations.Log2((uint)threads);
        uint bx = 1u << ((log + 1) / 2);
        return new Dim3(bx, (uint)threads / bx);
    }

    // Must match GEMM_TM, GEMM_TN, GEMM_BK and gemm_tile_shared_bytes in kernels/gemm_tile.cuh.
    private const int TileRowsPerThread = 4, TileColumnsPerThread = 4, TileDepth = 16;

    /// <summary>Dynamic shared memory of a tiled kernel's block (gemm_tile_shared_bytes).</summary>
    public static uint TileSharedBytes(Dim3 block) =>
        (uint)(sizeof(float) * TileDepth * ((TileRowsPerThread * block.Y + 1) + (TileColumnsPerThread * block.X + 1)));

    /// <summary>Tiles of a rows x columns output (the grid's x and y).</summary>
    private static (long x, long y) TileGrid(Dim3 block, long rows, long columns)
    {
        long tileRows = TileRowsPerThread * block.Y, tileColumns = TileColumnsPerThread * block.X;
        return ((columns + tileColumns - 1) / tileColumns, (rows + tileRows - 1) / tileRows);
    }

    /// <summary>Launches a product kernel on a grid of tiles (x along the columns, y along the
    /// rows, z the splits of the reduction), refusing a grid CUDA cannot launch.</summary>
    private void LaunchTiles(string kernel, long rows, long columns, (long x, long y) grid, int splits, Dim3 block, uint sharedBytes, KernelArgs args)
    {
        if (grid.x > int.MaxValue || grid.y > 65535)
            throw new ArgumentException($"{kernel}: a {rows} x {columns} output needs a grid of {grid.x} x {grid.y} tiles; CUDA allows {int.MaxValue} x 65535");
        Launch(kernel, new Dim3((uint)grid.x, (uint)grid.y, (uint)splits), block, sharedBytes, args);
    }

    /// <summary>Launches a tiled kernel whose output is a rows x columns matrix, with
    /// <paramref name="splits"/> blocks per tile along the grid's z (conv2d_backward_weight only).</summary>
    private void LaunchTiled(string kernel, long rows, long columns, KernelArgs args, int splits = 1)
    {
        if (rows <= 0 || columns <= 0) return;
        var block = TileBlock(ThreadsPerBlock(kernel));
        LaunchTiles(kernel, rows, columns, TileGrid(block, rows, columns), splits, block, TileSharedBytes(block), args);
    }

    /// <summary>The tensor-core kernels of version 2 (kernels/mma_tile.cuh): blocks of (32, WM, WN)
    /// threads and <see cref="MmaSharedBytes"/> of dynamic shared memory.</summary>
    public static readonly IReadOnlySet<string> MmaKernels =
        new HashSet<string> { "sgemm_tf32", "conv2d_forward_tf32", "conv2d_forward_pixelnorm_tf32", "conv2d_backward_input_tf32", "conv2d_backward_weight_tf32" };

    // Must match MMA_STAGES, MMA_K_PITCH and mma_tile_shared_bytes in kernels/mma_tile.cuh; a warp
    // owns 32 x 32 outputs, a block at most 4 x 4 warps.
    private const int MmaStages = 3, MmaKPitch = 12, MmaWarpTile = 32, MmaMaxWarps = 4;

    /// <summary>Dynamic shared memory of a tensor-core kernel's block of (32, WM, WN) threads
    /// (mma_tile_shared_bytes): three stages of a (32 WM) x 12 slice of A and a (32 WN) x 12 of B.</summary>
    public static uint MmaSharedBytes(Dim3 block) => (uint)(sizeof(float) * MmaStages * MmaKPitch * MmaWarpTile * (block.Y + block.Z));

    /// <summary>
    /// The block of a tensor-core kernel for a rows x columns output: (32, WM, WN) threads, WM x WN
    /// warps of 32 x 32 outputs each. Starting from one warp, the side the output still needs
    /// (rows beyond 32 WM, columns beyond 32 WN) doubles, the shorter side first, up to 4 per side
    /// and <paramref name="threads"/> in all: 4 x 4 warps (512 threads, 128 x 128 tiles) for every
    /// large product, fewer where the output is small (toRGB's three rows: 1 x 4 warps).
    /// </summary>
    public static Dim3 MmaBlock(int threads, long rows, long columns)
    {
        int warps = Math.Max(1, threads / MmaWarpTile);
        uint wm = 1, wn = 1;
        while (wm * wn * 2 <= warps)
        {
            bool growM = wm < MmaMaxWarps && rows > MmaWarpTile * wm, growN = wn < MmaMaxWarps && columns > MmaWarpTile * wn;
            if (growM && (!growN || wm <= wn)) wm *= 2;
            else if (growN) wn *= 2;
            else break;
        }
        return new Dim3(MmaWarpTile, wm, wn);
    }

    private static (long x, long y) MmaGrid(Dim3 block, long rows, long columns)
    {
        long tileRows = MmaWarpTile * block.Y, tileColumns = MmaWarpTile * block.Z;
        return ((columns + tileColumns - 1) / tileColumns, (rows + tileRows - 1) / tileRows);
    }

    /// <summary>Launches a tensor-core kernel whose output is a rows x columns matrix, with
    /// <paramref name="splits"/> blocks per tile along the grid's z (the weight gradient only).</summary>
    private void LaunchMma(string kernel, long rows, long columns, KernelArgs args, int splits = 1)
    {
        if (rows <= 0 || columns <= 0) return;
        var block = MmaBlock(ThreadsPerBlock(kernel), rows, columns);
        LaunchTiles(kernel, rows, columns, MmaGrid(block, rows, columns), splits, block, MmaSharedBytes(block), args);
    }

    /// <summary>The fp32 kernels of version 3 (kernels/wide_tile.cuh): blocks of 256 threads, 128 x 128
    /// tiles, 8 x 8 outputs per thread, <see cref="WideSharedBytes"/> of dynamic shared memory.</summary>
    public static readonly IReadOnlySet<string> WideKernels =
        new HashSet<string> { "sgemm_wide", "conv2d_forward_wide", "conv2d_forward_pixelnorm_wide", "conv2d_backward_input_wide", "conv2d_backward_weight_wide" };

    // Must match WIDE_THREADS, WIDE_TILE, WIDE_BK, WIDE_PITCH and wide_tile_shared_bytes in kernels/wide_tile.cuh.
    private const int WideThreads = 256, WideTile = 128, WideDepth = 8, WidePitch = 132;

    /// <summary>Dynamic shared memory of a version-3 block (wide_tile_shared_bytes): two buffers of
    /// a stage of A and of B, 8 rows of 132 floats each: 16.5 KiB.</summary>
    public static uint WideSharedBytes => (uint)(sizeof(float) * 2 * 2 * WideDepth * WidePitch);

    private static (long x, long y) WideGrid(long rows, long columns) =>
        ((columns + WideTile - 1) / WideTile, (rows + WideTile - 1) / WideTile);

    /// <summary>Launches a version-3 kernel whose output is a rows x columns matrix, with
    /// <paramref name="splits"/> blocks per tile along the grid's z (the weight gradient only).</summary>
    private void LaunchWide(string kernel, long rows, long columns, KernelArgs args, int splits = 1)
    {
        if (rows <= 0 || columns <= 0) return;
        LaunchTiles(kernel, rows, columns, WideGrid(rows, columns), splits, new Dim3(WideThreads), WideSharedBytes, args);
    }

    /// <summary>The dynamic shared memory <paramref name="kernel"/> launches with at a block of
    /// <paramref name="threads"/> threads, at its largest output (what the machine-code report checks).</summary>
    public static uint DynamicSharedBytes(string kernel, int threads) =>
        TiledKernels.Contains(kernel) ? TileSharedBytes(TileBlock(threads))
        : MmaKernels.Contains(kernel) ? MmaSharedBytes(MmaBlock(threads, long.MaxValue, long.MaxValue))
        : WideKernels.Contains(kernel) ? WideSharedBytes
        : 0;

    /// <summary>The tiling of a rows x columns product (see <see cref="ProductTiling"/>):
    /// version 2 at tf32; at fp32, what <see cref="Fp32Tiling"/> asks, and by default version 3
    /// where its 128 x 128 tiles fit the output (64 rows and columns or more) and, unless the
    /// reduction can be split over more blocks (<paramref name="splittable"/>: the weight
    /// gradient), make at least one tile per multiprocessor; version 1's 64 x 64 tiles elsewhere
    /// (a thin or small product: toRGB, the 4x4 layers), where they keep more of the GPU busy.</summary>
    public ProductTiling TilingFor(long rows, long columns, bool splittable = false) =>
        ChooseTiling(Precision, Fp32Tiling, _driver.Device.Multiprocessors, rows, columns, splittable);

    /// <summary><see cref="TilingFor"/> for a device of <paramref name="multiprocessors"/>.</summary>
    public static ProductTiling ChooseTiling(Precision precision, ProductTiling fp32Tiling, int multiprocessors, long rows, long columns, bool splittable)
    {
        if (precision == Precision.Tf32) return ProductTiling.Version2;
        if (fp32Tiling != ProductTiling.Auto) return fp32Tiling;
        if (rows < WideTile / 2 || columns < WideTile / 2) return ProductTiling.Version1;
        var (gridX, gridY) = WideGrid(rows, columns);
        return splittable || gridX * gridY >= Math.Max(1, multiprocessors) ? ProductTiling.Version3 : ProductTiling.Version1;
    }

    /// <summary>A matrix product or convolution at this backend's precision and tiling
    /// (<see cref="TilingFor"/>): version 1 (<paramref name="v1"/>, gemm_tile.cuh), version 3
    /// (<paramref name="v3"/>, wide_tile.cuh) or the version-2 tensor-core kernel
    /// (<paramref name="tf32"/>, mma_tile.cuh), which all take the same arguments. (Literal names
    /// rather than a suffix appended per call: a steady step allocates nothing.)</summary>
    private void LaunchProduct(ProductTiling tiling, string v1, string v3, string tf32, long rows, long columns, KernelArgs args, int splits = 1)
    {
        switch (tiling)
        {
            case ProductTiling.Version2: LaunchMma(tf32, rows, columns, args, splits); break;
            case ProductTiling.Version3: LaunchWide(v3, rows, columns, args, splits); break;
            default: LaunchTiled(v1, rows, columns, args, splits); break;
        }
    }

    // ------------------------------------------------------------------ elementwise.cu

    public void Fill(DeviceBuffer y, long n, float value) =>
        LaunchElementwise("fill", n, new KernelArgs().Ptr(y).Long(n).Float(value));

    public void Scale(DeviceBuffer x, DeviceBuffer y, long n, float a) =>
        LaunchElementwise("scale", n, new KernelArgs().Ptr(x).Ptr(y).Long(n).Float(a));

    public void AddScalar(DeviceBuffer x, DeviceBuffer y, long n, float b) =>
        LaunchElementwise("add_scalar", n, new KernelArgs().Ptr(x).Ptr(y).Long(n).Float(b));

    public void Square(DeviceBuffer x, DeviceBuffer y, long n) =>
        LaunchElementwise("square", n, new KernelArgs().Ptr(x).Ptr(y).Long(n));

    public void Sqrt(DeviceBuffer x, DeviceBuffer y, long n) =>
        LaunchElementwise("sqrt_forward", n, new KernelArgs().Ptr(x).Ptr(y).Long(n));

    public void Rsqrt(DeviceBuffer x, DeviceBuffer y, long n) =>
        LaunchElementwise("rsqrt_forward", n, new KernelArgs().Ptr(x).Ptr(y).Long(n));

    public void Softplus(DeviceBuffer x, DeviceBuffer y, long n) =>
        LaunchElementwise("softplus_forward", n, new KernelArgs().Ptr(x).Ptr(y).Long(n));

    public void Sigmoid(DeviceBuffer x, DeviceBuffer y, long n) =>
        LaunchElementwise("sigmoid_forward", n, new KernelArgs().Ptr(x).Ptr(y).Long(n));

    public void LeakyReluForward(DeviceBuffer x, DeviceBuffer y, long n, float slope) =>
        LaunchElementwise("leaky_relu_forward", n, new KernelArgs().Ptr(x).Ptr(y).Long(n).Float(slope));

    public void LeakyReluBackward(DeviceBuffer x, DeviceBuffer gy, DeviceBuffer gx, long n, float slope) =>
        LaunchElementwise("leaky_relu_backward", n, new KernelArgs().Ptr(x).Ptr(gy).Ptr(gx).Long(n).Float(slope));

    public void LerpScalar(DeviceBuffer a, DeviceBuffer b, DeviceBuffer y, long n, float t) =>
        LaunchElementwise("lerp_scalar", n, new KernelArgs().Ptr(a).Ptr(b).Ptr(y).Long(n).Float(t));

    public void LerpPerSample(DeviceBuffer a, DeviceBuffer b, DeviceBuffer t, DeviceBuffer y, int samples, int inner) =>
        LaunchElementwise("lerp_per_sample", (long)samples * inner, new KernelArgs().Ptr(a).Ptr(b).Ptr(t).Ptr(y).Int(samples).Int(inner));

    // ------------------------------------------------------------------ broadcast.cu

    public void Add(DeviceBuffer a, Dims4 aDims, DeviceBuffer b, Dims4 bDims, DeviceBuffer y, Dims4 yDims) => Binary("add_broadcast", a, aDims, b, bDims, y, yDims);
    public void Sub(DeviceBuffer a, Dims4 aDims, DeviceBuffer b, Dims4 bDims, DeviceBuffer y, Dims4 yDims) => Binary("sub_broadcast", a, aDims, b, bDims, y, yDims);
    public void Mul(DeviceBuffer a, Dims4 aDims, DeviceBuffer b, Dims4 bDims, DeviceBuffer y, Dims4 yDims) => Binary("mul_broadcast", a, aDims, b, bDims, y, yDims);
    public void Div(DeviceBuffer a, Dims4 aDims, DeviceBuffer b, Dims4 bDims, DeviceBuffer y, Dims4 yDims) => Binary("div_broadcast", a, aDims, b, bDims, y, yDims);

    private void Binary(string kernel, DeviceBuffer a, Dims4 aDims, DeviceBuffer b, Dims4 bDims, DeviceBuffer y, Dims4 yDims) =>
        LaunchElementwise(kernel, yDims.Length, new KernelArgs().Ptr(a).Dims(aDims).Ptr(b).Dims(bDims).Ptr(y).Dims(yDims));

    public void BroadcastTo(DeviceBuffer x, Dims4 xDims, DeviceBuffer y, Dims4 yDims) =>
        LaunchElementwise("broadcast_to", yDims.Length, new KernelArgs().Ptr(x).Dims(xDims).Ptr(y).Dims(yDims));

    /// <summary>SUM_TO_SERIAL_MAX in kernels/broadcast.cu: up to this many values per output,
    /// sum_to uses one thread per output; above it, one block per output.</summary>
    private const long SumToSerialMax = 64;

    public void SumTo(DeviceBuffer x, Dims4 xDims, DeviceBuffer y, Dims4 yDims)
    {
        long outputs = yDims.Length;
        if (outputs <= 0) return;
        long perOutput = xDims.Length / outputs;
        var args = new KernelArgs().Ptr(x).Dims(xDims).Ptr(y).Dims(yDims);
        int threads = ThreadsPerBlock("sum_to");
        Launch("sum_to", perOutput <= SumToSerialMax ? Grid1D(outputs, threads) : GridPerItem(outputs), new Dim3((uint)threads), 0, args);
    }

    // ------------------------------------------------------------------ bias.cu

    public void BiasLeakyRelu(DeviceBuffer x, DeviceBuffer b, DeviceBuffer y, int n, int c, int plane, float slope) =>
        LaunchElementwise("bias_leaky_relu", (long)n * c * plane, new KernelArgs().Ptr(x).Ptr(b).Ptr(y).Int(n).Int(c).Int(plane).Float(slope));

    public void BiasLeakyReluBackward(DeviceBuffer y, DeviceBuffer gy, DeviceBuffer gx, DeviceBuffer gb, int n, int c, int plane, float slope)
    {
        if (c <= 0) return;
        // One block per channel: its threads stride over the channel's n * plane values.
        Launch("bias_leaky_relu_backward", GridPerItem(c), Block1D("bias_leaky_relu_backward"), 0,
            new KernelArgs().Ptr(y).Ptr(gy).Ptr(gx).Ptr(gb).Int(n).Int(c).Int(plane).Float(slope));
    }

    // ------------------------------------------------------------------ gemm.cu

    public void Gemm(bool transA, bool transB, int m, int n, int k, float alpha, DeviceBuffer a, DeviceBuffer b, float beta, DeviceBuffer c)
    {
        if (m < 0 || n < 0 || k < 0) throw new ArgumentException($"Gemm: negative size m={m} n={n} k={k}");
        LaunchProduct(TilingFor(m, n), "sgemm", "sgemm_wide", "sgemm_tf32", m, n, new KernelArgs().Int(transA ? 1 : 0).Int(transB ? 1 : 0).Int(m).Int(n).Int(k).Float(alpha).Ptr(a).Ptr(b).Float(beta).Ptr(c));
    }

    // ------------------------------------------------------------------ conv.cu

    private static void CheckConv(int n, int cin, int h, int w, int cout, int k)
    {
        if (n <= 0 || cin <= 0 || h <= 0 || w <= 0 || cout <= 0 || k <= 0 || k % 2 == 0)
            throw new ArgumentException($"conv2d: invalid sizes n={n} cin={cin} h={h} w={w} cout={cout} k={k} (k must be odd)");
        if ((long)n * h * w > int.MaxValue || (long)Math.Max(cin, cout) * k * k > int.MaxValue)
            throw new ArgumentException($"conv2d: n={n} h={h} w={w} cin={cin} cout={cout} k={k} overflows the kernels' 32-bit indices");
    }

    private static KernelArgs ConvArgs(DeviceBuffer first, DeviceBuffer second, DeviceBuffer output, int n, int cin, int h, int wd, int cout, int k, float scale) =>
        new KernelArgs().Ptr(first).Ptr(second).Ptr(output).Int(n).Int(cin).Int(h).Int(wd).Int(cout).Int(k).Float(scale);

    public void Conv2dForward(DeviceBuffer x, DeviceBuffer w, DeviceBuffer y, int n, int cin, int h, int wd, int cout, int k, float scale,
        DeviceBuffer bias = default, float slope = 1f)
    {
        CheckConv(n, cin, h, wd, cout, k);
        // The epilogue's bias travels as a pointer, null for none (the kernel tests it).
        long columns = (long)n * h * wd;
        LaunchProduct(TilingFor(cout, columns), "conv2d_forward", "conv2d_forward_wide", "conv2d_forward_tf32", cout, columns,
            ConvArgs(x, w, y, n, cin, h, wd, cout, k, scale).Ptr(bias).Float(slope));
    }

    /// <summary>
    /// The layer and its pixel norm in the convolution's output store (conv2d_forward_pixelnorm in
    /// the version the product's tiling asks) where one block's rows hold every output channel of
    /// its pixels (version 1: 4 blockDim.y rows, 64 at 512 threads; version 2: 32 WM, up to 128;
    /// version 3: 128); with more channels the layer, then pixel norm in place over its output.
    /// </summary>
    public void Conv2dForwardPixelNorm(DeviceBuffer x, DeviceBuffer w, DeviceBuffer z, DeviceBuffer inv, int n, int cin, int h, int wd, int cout, int k,
        float scale, DeviceBuffer bias, float slope, float eps)
    {
        CheckConv(n, cin, h, wd, cout, k);
        PixelNormLayerChecks.RequireFactors(inv);
        long columns = (long)n * h * wd;
        var tiling = TilingFor(cout, columns);
        long blockRows = tiling switch
        {
            ProductTiling.Version2 => MmaWarpTile * MmaBlock(ThreadsPerBlock("conv2d_forward_pixelnorm_tf32"), cout, columns).Y,
            ProductTiling.Version1 => TileRowsPerThread * TileBlock(ThreadsPerBlock("conv2d_forward_pixelnorm")).Y,
            _ => WideTile,
        };
        if (cout <= blockRows)
        {
            var args = new KernelArgs().Ptr(x).Ptr(w).Ptr(z).Ptr(inv).Int(n).Int(cin).Int(h).Int(wd).Int(cout).Int(k).Float(scale).Ptr(bias).Float(slope).Float(eps);
            switch (tiling)
            {
                case ProductTiling.Version2: LaunchMma("conv2d_forward_pixelnorm_tf32", cout, columns, args); break;
                case ProductTiling.Version3: LaunchWide("conv2d_forward_pixelnorm_wide", cout, columns, args); break;
                default: LaunchTiled("conv2d_forward_pixelnorm", cout, columns, args); break;
            }
            return;
        }
        Conv2dForward(x, w, z, n, cin, h, wd, cout, k, scale, bias, slope);
        PixelNormForward(z, z, n, cout, h * wd, eps, inv);
    }

    public void Conv2dBackwardInput(DeviceBuffer gy, DeviceBuffer w, DeviceBuffer gx, int n, int cin, int h, int wd, int cout, int k, float scale)
    {
        CheckConv(n, cin, h, wd, cout, k);
        long columns = (long)n * h * wd;
        LaunchProduct(TilingFor(cin, columns), "conv2d_backward_input", "conv2d_backward_input_wide", "conv2d_backward_input_tf32", cin, columns,
            ConvArgs(gy, w, gx, n, cin, h, wd, cout, k, scale));
    }

    /// <summary>The fewest pixels (terms of the reduction) one slice of a split weight gradient sums.</summary>
    private const long MinPixelsPerSplit = 1024;

    public void Conv2dBackwardWeight(DeviceBuffer x, DeviceBuffer gy, DeviceBuffer gw, int n, int cin, int h, int wd, int cout, int k, float scale)
    {
        CheckConv(n, cin, h, wd, cout, k);
        long columns = (long)cin * k * k, pixels = (long)n * h * wd;
        // Split K (see conv.cu) when the gradient has too few tiles to keep two blocks on every
        // multiprocessor and the batch has enough pixels to share out.
        var tiling = TilingFor(cout, columns, splittable: true);
        var (gridX, gridY) = tiling switch
        {
            ProductTiling.Version2 => MmaGrid(MmaBlock(ThreadsPerBlock("conv2d_backward_weight_tf32"), cout, columns), cout, columns),
            ProductTiling.Version3 => WideGrid(cout, columns),
            _ => TileGrid(TileBlock(ThreadsPerBlock("conv2d_backward_weight")), cout, columns),
        };
        long tiles = gridX * gridY, wanted = 2L * Math.Max(1, _driver.Device.Multiprocessors);
        int splits = tiles >= wanted ? 1 : (int)Math.Clamp(Math.Min((wanted + tiles - 1) / tiles, pixels / MinPixelsPerSplit), 1, 64);
        if (splits == 1)
        {
            LaunchProduct(tiling, "conv2d_backward_weight", "conv2d_backward_weight_wide", "conv2d_backward_weight_tf32", cout, columns, ConvArgs(x, gy, gw, n, cin, h, wd, cout, k, scale));
            return;
        }
        long size = cout * columns;
        var partial = Allocate(splits * size);
        try
        {
            LaunchProduct(tiling, "conv2d_backward_weight", "conv2d_backward_weight_wide", "conv2d_backward_weight_tf32", cout, columns, ConvArgs(x, gy, partial, n, cin, h, wd, cout, k, scale), splits);
            SumTo(partial, new Dims4(1, 1, splits, (int)size), gw, new Dims4(1, 1, 1, (int)size));
        }
        finally
        {
            Free(partial);
        }
    }

    // ------------------------------------------------------------------ resample.cu

    public void Upsample2x(DeviceBuffer x, DeviceBuffer y, int planes, int h, int w, float gain) =>
        LaunchElementwise("upsample2x_nearest", 4L * planes * h * w, new KernelArgs().Ptr(x).Ptr(y).Int(planes).Int(h).Int(w).Float(gain));

    public void AvgPool2x(DeviceBuffer x, DeviceBuffer y, int planes, int h, int w, float gain)
    {
        if (h % 2 != 0 || w % 2 != 0) throw new ArgumentException($"avgpool2x: height and width must be even, got {h}x{w}");
        LaunchElementwise("avgpool2x", (long)planes * (h / 2) * (w / 2), new KernelArgs().Ptr(x).Ptr(y).Int(planes).Int(h).Int(w).Float(gain));
    }

    // ------------------------------------------------------------------ channels.cu

    public void CopyChannels(DeviceBuffer src, int srcChannels, int srcStart, DeviceBuffer dst, int dstChannels, int dstStart, int count, int samples, int plane) =>
        LaunchElementwise("copy_channels", (long)count * plane * samples,
            new KernelArgs().Ptr(src).Int(srcChannels).Int(srcStart).Ptr(dst).Int(dstChannels).Int(dstStart).Int(count).Int(samples).Int(plane));

    // ------------------------------------------------------------------ pixelnorm.cu

    public void PixelNormForward(DeviceBuffer x, DeviceBuffer y, int n, int c, int plane, float eps, DeviceBuffer inv = default) =>
        LaunchElementwise("pixelnorm_forward", (long)n * plane, new KernelArgs().Ptr(x).Ptr(y).Int(n).Int(c).Int(plane).Float(eps).Ptr(inv));

    public void PixelNormBackward(DeviceBuffer x, DeviceBuffer gy, DeviceBuffer gx, int n, int c, int plane, float eps) =>
        LaunchElementwise("pixelnorm_backward", (long)n * plane, new KernelArgs().Ptr(x).Ptr(gy).Ptr(gx).Int(n).Int(c).Int(plane).Float(eps));

    /// <summary>The layer's backward per pixel (pixelnorm_leaky_relu_backward), then the bias gradient
    /// as the sum of ga over samples and pixels (sum_to: a pixel's thread cannot add across pixels).</summary>
    public void PixelNormLeakyReluBackward(DeviceBuffer z, DeviceBuffer inv, DeviceBuffer gz, DeviceBuffer ga, DeviceBuffer gb, int n, int c, int plane, float slope)
    {
        LaunchElementwise("pixelnorm_leaky_relu_backward", (long)n * plane, new KernelArgs().Ptr(z).Ptr(inv).Ptr(gz).Ptr(ga).Int(n).Int(c).Int(plane).Float(slope));
        SumTo(ga, new Dims4(n, c, 1, plane), gb, new Dims4(1, c, 1, 1));
    }

    // ------------------------------------------------------------------ mbstd.cu

    private static void CheckGroups(int n, int groupSize, string op)
    {
        if (groupSize <= 0 || n % groupSize != 0)
            throw new ArgumentException($"{op}: batch {n} is not divisible by group size {groupSize}");
    }

    public void MinibatchStdDevForward(DeviceBuffer x, DeviceBuffer y, int n, int c, int plane, int groupSize, float eps)
    {
        CheckGroups(n, groupSize, "minibatch_stddev_forward");
        Launch("minibatch_stddev_forward", GridPerItem(n / groupSize), Block1D("minibatch_stddev_forward"), 0,
            new KernelArgs().Ptr(x).Ptr(y).Int(n).Int(c).Int(plane).Int(groupSize).Float(eps));
    }

    public void MinibatchStdDevBackward(DeviceBuffer x, DeviceBuffer gy, DeviceBuffer gx, int n, int c, int plane, int groupSize, float eps)
    {
        CheckGroups(n, groupSize, "minibatch_stddev_backward");
        Launch("minibatch_stddev_backward", GridPerItem(n / groupSize), Block1D("minibatch_stddev_backward"), 0,
            new KernelArgs().Ptr(x).Ptr(gy).Ptr(gx).Int(n).Int(c).Int(plane).Int(groupSize).Float(eps));
    }

    // ------------------------------------------------------------------ wgan_gp.cu

    public void GradientPenaltyForward(DeviceBuffer g, DeviceBuffer norm, DeviceBuffer penalty, int samples, int inner, float target) =>
        Launch("gradient_penalty_forward", GridPerItem(samples), Block1D("gradient_penalty_forward"), 0,
            new KernelArgs().Ptr(g).Ptr(norm).Ptr(penalty).Int(samples).Int(inner).Float(target));

    public void GradientPenaltyBackward(DeviceBuffer g, DeviceBuffer norm, DeviceBuffer gpenalty, DeviceBuffer gg, int samples, int inner, float target) =>
        LaunchElementwise("gradient_penalty_backward", (long)samples * inner,
            new KernelArgs().Ptr(g).Ptr(norm).Ptr(gpenalty).Ptr(gg).Int(samples).Int(inner).Float(target));

    // ------------------------------------------------------------------ optim.cu

    public void AdamStep(DeviceBuffer step, DeviceBuffer skip)
    {
        Check(step, 1, nameof(AdamStep));
        Launch("adam_step", new Dim3(1), new Dim3(LaunchLimits.WarpSize), 0, new KernelArgs().Ptr(step).Ptr(skip));
    }

    public void AdamUpdate(DeviceBuffer p, DeviceBuffer g, DeviceBuffer m, DeviceBuffer v, long n, float lr, float beta1, float beta2, float eps, DeviceBuffer step, DeviceBuffer skip,
        DeviceBuffer nonFiniteCount = default) =>
        LaunchElementwise("adam_update", n, new KernelArgs().Ptr(p).Ptr(g).Ptr(m).Ptr(v).Long(n).Float(lr).Float(beta1).Float(beta2).Float(eps).Ptr(step).Ptr(skip).Ptr(nonFiniteCount));

    public void EmaUpdate(DeviceBuffer ema, DeviceBuffer p, long n, float beta, DeviceBuffer skip, DeviceBuffer nonFiniteCount = default) =>
        LaunchElementwise("ema_update", n, new KernelArgs().Ptr(ema).Ptr(p).Long(n).Float(beta).Ptr(skip).Ptr(nonFiniteCount));

    public void CountNonFinite(DeviceBuffer x, long n, DeviceBuffer count)
    {
        Check(count, 2, nameof(CountNonFinite));
        LaunchElementwise("count_nonfinite", n, new KernelArgs().Ptr(x).Long(n).Ptr(count));
    }
}
