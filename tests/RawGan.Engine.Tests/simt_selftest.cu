// simt_selftest.cu: small kernels that each exercise one feature of RawGan's CPU emulator
// (kernels/simt) on its own. EmulatorSelfTests.cs builds this file with the emulator and checks
// what every kernel wrote. It also compiles with NVRTC, like any kernel file.

// Every block reverses its own segment of x through static shared memory: thread t writes
// element t, and after the barrier reads element (blockDim - 1 - t), written by another thread.
// Without a working barrier in every block (not only the first), the reads see stale values.
extern "C" __global__ void reverse_static_shared(const float* x, float* y, int n)
{
    __shared__ float tile[1024];
    int t = threadIdx.x;
    int i = blockIdx.x * blockDim.x + t;
    tile[t] = i < n ? x[i] : -1.0f;
    __syncthreads();
    if (i < n) y[i] = tile[blockDim.x - 1 - t];
}

// The same through dynamic shared memory, whose size (blockDim.x floats) the launch gives.
extern "C" __global__ void reverse_dynamic_shared(const float* x, float* y, int n)
{
#if defined(__CUDACC__)
    extern __shared__ float tile[];
#else
    SIMT_DYNAMIC_SHARED(float, tile);
#endif
    int t = threadIdx.x;
    int i = blockIdx.x * blockDim.x + t;
    tile[t] = i < n ? x[i] : -1.0f;
    __syncthreads();
    if (i < n) y[i] = tile[blockDim.x - 1 - t];
}

// Many barriers in a row: an inclusive prefix sum per block (Hillis-Steele), double-buffered so
// each step reads only what the previous step finished writing.
extern "C" __global__ void block_prefix_sum(const int* x, int* y)
{
    __shared__ int buffer[2][1024];
    int t = threadIdx.x;
    int base = blockIdx.x * blockDim.x;
    int in = 0;
    buffer[in][t] = x[base + t];
    __syncthreads();
    for (int offset = 1; offset < (int)blockDim.x; offset *= 2)
    {
        int v = buffer[in][t];
        if (t >= offset) v += buffer[in][t - offset];
        buffer[1 - in][t] = v;
        in = 1 - in;
        __syncthreads();
    }
    y[base + t] = buffer[in][t];
}

// Atomics under contention: every thread of every block adds to the same counters.
extern "C" __global__ void atomic_contention(unsigned int* counter, float* sum, unsigned long long* wide, int repeats)
{
    for (int r = 0; r < repeats; r++)
    {
        atomicAdd(counter, 1u);
        atomicAdd(sum, 1.0f);
        atomicAdd(wide, 3ull);
    }
}

// Built-in variables for any grid and block shape: each thread writes its coordinates at its
// global linear index (x fastest, then y, then z; blocks in the same order).
extern "C" __global__ void write_coordinates(int* out)
{
    unsigned threads = blockDim.x * blockDim.y * blockDim.z;
    unsigned block = (blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
    unsigned thread = (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
    unsigned id = block * threads + thread;
    int* o = out + 7 * id;
    o[0] = (int)id;
    o[1] = (int)threadIdx.x; o[2] = (int)threadIdx.y; o[3] = (int)threadIdx.z;
    o[4] = (int)blockIdx.x; o[5] = (int)blockIdx.y; o[6] = (int)blockIdx.z;
}

// threadIdx must stay right for each thread across barriers in a 3-D block: write, barrier,
// then read back a neighbour's value by 3-D coordinates.
extern "C" __global__ void neighbour_3d(int* out)
{
    __shared__ int cell[8][8][8];
    unsigned x = threadIdx.x, y = threadIdx.y, z = threadIdx.z;
    cell[z][y][x] = (int)(100 * z + 10 * y + x);
    __syncthreads();
    unsigned nx = (x + 1) % blockDim.x, ny = (y + 1) % blockDim.y, nz = (z + 1) % blockDim.z;
    unsigned id = (z * blockDim.y + y) * blockDim.x + x;
    out[blockIdx.x * blockDim.x * blockDim.y * blockDim.z + id] = cell[nz][ny][nx];
}

// Misuse: half the threads of each block (thread 0 among those that wait) skip the barrier. On a
// GPU this hangs or corrupts; the emulator must fail the launch instead.
extern "C" __global__ void divergent_barrier(int* out)
{
    if (threadIdx.x % 2 == 0)
    {
        __syncthreads();
    }
    out[threadIdx.x] = 1;
}

// Misuse the other way round: thread 0 skips the barrier that the others reach.
extern "C" __global__ void barrier_skipped_by_thread_zero(int* out)
{
    if (threadIdx.x != 0)
    {
        __syncthreads();
    }
    out[threadIdx.x] = 1;
}
