// simt.cpp: runs a CUDA grid on the CPU with CUDA's execution model.
//
// Blocks. A grid's blocks are independent (CUDA promises no order between them), so they are
// spread over a small pool of OS threads: one per hardware thread (SIMT_THREADS overrides it),
// the calling thread included. Each OS thread takes the next block index from an atomic counter
// until none is left; the launch returns when every block is done, so launches are synchronous.
//
// Threads of a block. The threads of one block run on the OS thread that took the block, as
// cooperatively scheduled fibers: each CUDA thread has its own stack, and __syncthreads() saves
// the fiber's registers and switches back to the block's scheduler, which runs the next thread up
// to the same barrier. Once every thread has arrived, a new round resumes them all. So every
// thread reaches a barrier before any thread passes it, with no locks, and `__shared__` can be a
// `static thread_local`: the fibers of a block share their OS thread's copy. The switch itself
// is a few instructions of assembly on x86-64 (callee-saved registers, the stack pointer, the
// SSE and x87 control words); elsewhere glibc's ucontext is used, which is correct but makes a
// system call per switch (it saves the signal mask).
//
// Most kernels never reach a barrier, and for them fibers are wasted work. So thread 0 of each
// block runs in a fiber first: if it finishes without reaching a barrier, the block's other
// threads run as plain function calls, one after another. A barrier that some threads of a block
// reach and others skip is undefined behaviour in CUDA (it hangs or corrupts); here it is caught
// and the launch fails with a message naming the block.
//
// Fiber stacks are reused: each worker thread keeps a pool of them, grown to the largest block
// it has run, and the calling thread uses one more pool shared by all callers (launches take
// turns, one grid at a time). A stack is 128 KiB with a guard page below it, so a kernel that
// overflows its stack (a big per-thread local array) crashes at once instead of corrupting its
// neighbour. Stacks are mapped without reserving memory: only the pages a kernel touches (one or
// two per CUDA thread) become resident.
// System headers first: simt.h makes every later declaration hidden (see there).
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <sys/mman.h>
#include <unistd.h>

#if defined(__x86_64__) && !defined(SIMT_USE_UCONTEXT)
#define SIMT_ASM_FIBERS 1
#else
#define SIMT_ASM_FIBERS 0
#include <ucontext.h>
#endif

#include "simt.h"

__thread simt_builtin_variables simt_builtins;

namespace
{
constexpr size_t kStackBytes = 128 * 1024;   // per CUDA thread; kernels keep big arrays in shared memory
constexpr unsigned kMaxThreadsPerBlock = 1024;
constexpr unsigned kMaxSharedBytes = 48 * 1024;

thread_local std::string t_last_error;

// ------------------------------------------------------------------ context switching

#if SIMT_ASM_FIBERS
// simt_switch_context(save, load): pushes the callee-saved registers and the MXCSR / x87
// control words on the current stack, stores the stack pointer in *save, loads `load` as the
// stack pointer and pops the same frame from it. A new fiber's stack is prepared to look like
// such a frame whose return address is the fiber's entry function.
extern "C" void simt_switch_context(void** save, void* load);
asm(R"(
    .text
    .p2align 4
    .globl simt_switch_context
    .hidden simt_switch_context
    .type simt_switch_context, @function
simt_switch_context:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size simt_switch_context, .-simt_switch_context
)");

struct Context
{
    void* sp = nullptr;
};

void context_switch(Context& from, Context& to) { simt_switch_context(&from.sp, to.sp); }

void context_prepare(Context& c, char* stackLow, size_t bytes, void (*entry)())
{
    uintptr_t top = (reinterpret_cast<uintptr_t>(stackLow) + bytes) & ~uintptr_t(15);
    uint64_t* s = reinterpret_cast<uint64_t*>(top);
    *--s = 0;                                       // return address of `entry`: it never returns
    *--s = reinterpret_cast<uint64_t>(entry);       // popped by `ret`: entry runs with rsp = 8 mod 16
    for (int i = 0; i < 6; i++) *--s = 0;           // rbp rbx r12 r13 r14 r15
    uint32_t mxcsr;
    uint16_t fpcw;
    asm volatile("stmxcsr %0" : "=m"(mxcsr));
    asm volatile("fnstcw %0" : "=m"(fpcw));
    *--s = uint64_t(mxcsr) | (uint64_t(fpcw) << 32);  // the current thread's rounding and exceptions
    c.sp = s;
}
#else
struct Context
{
    ucontext_t uc;
};

void context_switch(Context& from, Context& to) { swapcontext(&from.uc, &to.uc); }

void context_prepare(Context& c, char* stackLow, size_t bytes, void (*entry)())
{
    getcontext(&c.uc);
    c.uc.uc_stack.ss_sp = stackLow;
    c.uc.uc_stack.ss_size = bytes;
    c.uc.uc_link = nullptr;
    makecontext(&c.uc, entry, 0);
}
#endif

// ------------------------------------------------------------------ one OS thread's state

enum class FiberState { Running, AtBarrier, Done };

struct Fiber
{
    Context context;
    char* mapping = nullptr;    // guard page + stack
    uint3 index{};
    FiberState state = FiberState::Running;

    Fiber()
    {
        size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
        void* p = mmap(nullptr, page + kStackBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
        if (p == MAP_FAILED) throw std::bad_alloc();
        mapping = static_cast<char*>(p);
        mprotect(mapping, page, PROT_NONE);   // the stack grows down into this page: overflow faults at once
    }
    ~Fiber() { munmap(mapping, static_cast<size_t>(sysconf(_SC_PAGESIZE)) + kStackBytes); }
    Fiber(const Fiber&) = delete;
    Fiber& operator=(const Fiber&) = delete;

    char* stack() const { return mapping + sysconf(_SC_PAGESIZE); }
};

struct Job;

struct ThreadState
{
    std::vector<std::unique_ptr<Fiber>> fibers;   // the pool, reused block after block
    Context scheduler;
    int current = -1;                             // fiber running now; -1 outside fibers
    unsigned arrived = 0, finished = 0;           // of the block's fibers, this round
    unsigned blockThreads = 0;
    Job* job = nullptr;
    simt::thread_body body = nullptr;
    const void* bound = nullptr;
    unsigned char* dynamicShared = nullptr;
    size_t dynamicCapacity = 0;

    ~ThreadState() { std::free(dynamicShared); }

    void ensureFibers(unsigned n)
    {
        while (fibers.size() < n) fibers.push_back(std::make_unique<Fiber>());
    }

    void ensureDynamicShared(size_t bytes)
    {
        if (bytes <= dynamicCapacity) return;
        size_t rounded = (bytes + 63) & ~size_t(63);
        void* p = std::aligned_alloc(64, rounded);
        if (p == nullptr) throw std::bad_alloc();
        std::free(dynamicShared);
        dynamicShared = static_cast<unsigned char*>(p);
        dynamicCapacity = rounded;
    }
};

// The state of the block runner on this OS thread, set while it runs blocks of a launch: a
// worker's own, or, on the calling thread, the one state reserved for callers (launches take
// turns, so one is enough however many threads launch kernels).
__thread ThreadState* t_state = nullptr;

ThreadState& state() { return *t_state; }

// ------------------------------------------------------------------ a launch

struct Job
{
    const char* kernel;
    simt::thread_body body;
    const void* bound;
    uint3 grid, block;
    unsigned sharedBytes;
    unsigned threadsPerBlock;
    unsigned long long totalBlocks;
    std::atomic<unsigned long long> next{0};
    std::atomic<bool> failed{false};
    std::mutex errorMutex;
    std::string error;

    void fail(const std::string& message)
    {
        std::lock_guard<std::mutex> lock(errorMutex);
        if (!failed.load()) error = message;
        failed.store(true);
    }
};

uint3 unflatten(unsigned long long i, const uint3& d)
{
    uint3 r;
    r.x = static_cast<unsigned>(i % d.x);
    i /= d.x;
    r.y = static_cast<unsigned>(i % d.y);
    r.z = static_cast<unsigned>(i / d.y);
    return r;
}

std::string describe(const uint3& v) { return "(" + std::to_string(v.x) + ", " + std::to_string(v.y) + ", " + std::to_string(v.z) + ")"; }

[[noreturn]] void fiber_entry()
{
    ThreadState& ts = state();
    ts.body(ts.bound);
    Fiber& f = *ts.fibers[static_cast<size_t>(ts.current)];
    f.state = FiberState::Done;
    ts.finished++;
    context_switch(f.context, ts.scheduler);
    __builtin_unreachable();
}

// Runs fiber i until it reaches a barrier or finishes.
void resume(ThreadState& ts, unsigned i)
{
    Fiber& f = *ts.fibers[i];
    ts.current = static_cast<int>(i);
    threadIdx = f.index;
    f.state = FiberState::Running;
    context_switch(ts.scheduler, f.context);
    ts.current = -1;
}

void start(ThreadState& ts, unsigned i)
{
    Fiber& f = *ts.fibers[i];
    f.index = unflatten(i, blockDim);
    context_prepare(f.context, f.stack(), kStackBytes, &fiber_entry);
    resume(ts, i);
}

void run_block(ThreadState& ts, Job& job, unsigned long long linear)
{
    blockIdx = unflatten(linear, job.grid);
    // CUDA leaves shared memory uninitialised; filling it with NaN bytes makes a kernel that
    // reads before it writes fail its tests here too.
    if (job.sharedBytes > 0) memset(ts.dynamicShared, 0xff, job.sharedBytes);

    const unsigned n = job.threadsPerBlock;
    ts.arrived = ts.finished = 0;
    ts.ensureFibers(1);
    start(ts, 0);
    if (ts.fibers[0]->state == FiberState::Done)
    {
        // Thread 0 never waited: run the others as plain calls. A barrier reached now is one
        // that thread 0 skipped, which __syncthreads() reports.
        const uint3 d = job.block;
        uint3 t{0, 0, 0};
        for (unsigned i = 1; i < n; i++)
        {
            if (++t.x == d.x)
            {
                t.x = 0;
                if (++t.y == d.y)
                {
                    t.y = 0;
                    ++t.z;
                }
            }
            threadIdx = t;
            ts.body(ts.bound);
        }
        return;
    }

    // Thread 0 is waiting at a barrier: every thread of the block becomes a fiber.
    ts.ensureFibers(n);
    for (unsigned i = 1; i < n; i++) start(ts, i);
    for (;;)
    {
        if (ts.finished == n) return;
        if (ts.arrived != n)
        {
            job.fail(std::string("__syncthreads() was reached by ") + std::to_string(ts.arrived) + " of the " + std::to_string(n) +
                     " threads of block " + describe(blockIdx) + "; the other " + std::to_string(ts.finished) +
                     " finished without it (a barrier in divergent code hangs on a GPU)");
            return;   // the waiting fibers are abandoned; their stacks are reset on next use
        }
        ts.arrived = 0;
        for (unsigned i = 0; i < n; i++) resume(ts, i);
    }
}

// Takes blocks of the job until none is left, or (if `until` is given) until that time has
// passed; returns false if it stopped early with blocks left.
bool run_blocks(Job& job, ThreadState& ts, const std::chrono::steady_clock::time_point* until = nullptr)
{
    t_state = &ts;
    ts.job = &job;
    ts.body = job.body;
    ts.bound = job.bound;
    ts.blockThreads = job.threadsPerBlock;
    blockDim = job.block;
    gridDim = job.grid;
    bool finished = true;
    try
    {
        ts.ensureDynamicShared(job.sharedBytes);
        while (!job.failed.load(std::memory_order_relaxed))
        {
            if (until != nullptr && std::chrono::steady_clock::now() >= *until)
            {
                finished = job.next.load(std::memory_order_relaxed) >= job.totalBlocks;
                break;
            }
            unsigned long long b = job.next.fetch_add(1, std::memory_order_relaxed);
            if (b >= job.totalBlocks) break;
            run_block(ts, job, b);
        }
    }
    catch (const std::exception& e)
    {
        job.fail(std::string("the emulator ran out of resources: ") + e.what());
    }
    ts.job = nullptr;
    t_state = nullptr;
    return finished;
}

// ------------------------------------------------------------------ the pool of OS threads

class Pool
{
    static constexpr std::chrono::microseconds kAloneFor{50};

public:
    Pool()
    {
        unsigned n = std::thread::hardware_concurrency();
        if (const char* env = std::getenv("SIMT_THREADS"))
        {
            long v = std::strtol(env, nullptr, 10);
            if (v >= 1 && v <= 256) n = static_cast<unsigned>(v);
        }
        if (n == 0) n = 1;
        for (unsigned i = 1; i < n; i++) workers_.emplace_back([this] { work(); });   // the caller is the n-th
    }

    ~Pool()
    {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            stopping_ = true;
        }
        wake_.notify_all();
        for (auto& t : workers_) t.join();
    }

    // Runs every block of the job; the caller must hold the launch mutex. The calling thread starts alone: waking a sleeping thread
    // costs tens of microseconds, more than most small launches take. Only a launch still
    // running after kAloneFor gets the other threads.
    void run(Job& job)
    {
        if (workers_.empty() || job.totalBlocks == 1)
        {
            run_blocks(job, callerState_);
            return;
        }
        auto until = std::chrono::steady_clock::now() + kAloneFor;
        if (run_blocks(job, callerState_, &until)) return;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            job_ = &job;
            active_ = static_cast<unsigned>(workers_.size());
            generation_++;
        }
        wake_.notify_all();
        run_blocks(job, callerState_);
        std::unique_lock<std::mutex> lock(mutex_);
        done_.wait(lock, [this] { return active_ == 0; });
        job_ = nullptr;
    }

private:
    void work()
    {
        ThreadState own;
        unsigned long long seen = 0;
        for (;;)
        {
            Job* job;
            {
                std::unique_lock<std::mutex> lock(mutex_);
                wake_.wait(lock, [&] { return stopping_ || generation_ != seen; });
                if (stopping_) return;
                seen = generation_;
                job = job_;
            }
            run_blocks(*job, own);
            {
                std::lock_guard<std::mutex> lock(mutex_);
                if (--active_ == 0) done_.notify_all();
            }
        }
    }

    ThreadState callerState_;   // used by whichever thread holds the launch mutex
    std::vector<std::thread> workers_;
    std::mutex mutex_;
    std::condition_variable wake_, done_;
    Job* job_ = nullptr;
    unsigned long long generation_ = 0;
    unsigned active_ = 0;
    bool stopping_ = false;
};

std::mutex& launch_mutex()
{
    static std::mutex m;
    return m;
}

Pool& pool()
{
    static Pool p;
    return p;
}

std::string describe(const unsigned (&v)[3]) { return "(" + std::to_string(v[0]) + ", " + std::to_string(v[1]) + ", " + std::to_string(v[2]) + ")"; }

// The launch checks cuLaunchKernel makes, with CUDA's limits for compute capability 7.0 to 9.0.
std::string validate(const simt_launch_config& c)
{
    for (int i = 0; i < 3; i++)
        if (c.grid[i] == 0 || c.block[i] == 0)
            return "grid " + describe(c.grid) + " or block " + describe(c.block) + " has a zero dimension";
    if (c.block[0] > 1024 || c.block[1] > 1024 || c.block[2] > 64)
        return "block " + describe(c.block) + " exceeds the per-axis limits (1024, 1024, 64)";
    unsigned long long threads = 1ull * c.block[0] * c.block[1] * c.block[2];
    if (threads > kMaxThreadsPerBlock)
        return "block " + describe(c.block) + " has " + std::to_string(threads) + " threads; the limit is " + std::to_string(kMaxThreadsPerBlock);
    if (c.grid[0] > 2147483647u || c.grid[1] > 65535 || c.grid[2] > 65535)
        return "grid " + describe(c.grid) + " exceeds the limits (2^31 - 1, 65535, 65535)";
    if (c.shared_bytes > kMaxSharedBytes)
        return "dynamic shared memory of " + std::to_string(c.shared_bytes) + " bytes exceeds the " + std::to_string(kMaxSharedBytes) + "-byte limit";
    return {};
}
} // namespace

void simt_barrier()
{
    ThreadState& ts = state();
    if (ts.current < 0)
    {
        // Not in a fiber: thread 0 of this block finished without reaching this barrier.
        if (ts.blockThreads > 1 && ts.job != nullptr)
            ts.job->fail("__syncthreads() was reached by thread " + describe(threadIdx) + " of block " + describe(blockIdx) +
                         " but not by thread (0, 0, 0), which finished without it (a barrier in divergent code hangs on a GPU)");
        return;
    }
    Fiber& f = *ts.fibers[static_cast<size_t>(ts.current)];
    f.state = FiberState::AtBarrier;
    ts.arrived++;
    context_switch(f.context, ts.scheduler);
}

unsigned char* simt_dynamic_shared() { return state().dynamicShared; }

extern "C" const char* simt_last_error(void) { return t_last_error.c_str(); }

namespace simt
{
int fail(const char* kernel, const char* message)
{
    t_last_error = std::string(kernel) + ": " + message;
    return 1;
}

int launch(const char* kernel, thread_body body, const void* bound, const simt_launch_config* config)
{
    t_last_error.clear();
    if (config == nullptr) return fail(kernel, "launch configuration is null");
    std::string invalid = validate(*config);
    if (!invalid.empty()) return fail(kernel, invalid.c_str());
    try
    {
        Job job;
        job.kernel = kernel;
        job.body = body;
        job.bound = bound;
        job.grid = uint3{config->grid[0], config->grid[1], config->grid[2]};
        job.block = uint3{config->block[0], config->block[1], config->block[2]};
        job.sharedBytes = config->shared_bytes;
        job.threadsPerBlock = config->block[0] * config->block[1] * config->block[2];
        job.totalBlocks = 1ull * config->grid[0] * config->grid[1] * config->grid[2];

        // One grid at a time (as on CUDA's default stream); launches from other threads wait.
        std::lock_guard<std::mutex> lock(launch_mutex());
        pool().run(job);
        if (job.failed.load()) return fail(kernel, job.error.c_str());
        return 0;
    }
    catch (const std::exception& e)
    {
        return fail(kernel, e.what());
    }
}
} // namespace simt
