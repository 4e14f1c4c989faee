// simt.cpp: runs a CUDA grid on the CPU with CUDA's execution model.
//
// Blocks. A grid's blocks are independent (CUDA promises no order between them), so they are
// spread over a small pool of OS threads: one per hardware thread (SIMT_THREADS overrides it),
// the calling thread included. Each OS thread takes the next block index from an atomic counter
// until none is left; the launch returns when every block is done, so launches are synchronous.
//
// Threads of a block. The threads of one block run on the OS thread that took the block, as
// cooperatively scheduled fibers. A thread runs until it waits: at __syncthreads(), or at a warp
// collective (a shuffle, a vote, __syncwarp, mma.sync) that other lanes of its warp have not
// reached yet. Waiting saves its registers and switches back to the block's scheduler
// (run_block), which runs another thread. So every thread reaches a barrier before any thread
// passes it, with no locks, and `__shared__` can be a `static thread_local`: the fibers of a block
// share their OS thread's copy. The switch itself is a few instructions of assembly on x86-64
// (callee-saved registers, the stack pointer, the SSE and x87 control words); elsewhere glibc's
// ucontext is used, which is correct but makes a system call per switch (it saves the signal
// mask).
//
// Runners. Most threads never wait, and a fiber per thread would be wasted work for them. So a
// fiber is a "runner": it takes the next thread that has not started, runs it as a plain function
// call, and when that thread returns takes the next one. Only a thread that waits keeps its
// runner's stack: it resumes there later, and when it returns, that runner goes on with the next
// thread not yet started. Meanwhile the scheduler starts a new runner, on another stack, for the
// threads still to start. A block without barriers or collectives thus runs on one fiber as a
// loop of calls; one with a __syncthreads needs a stack per thread; one with warp collectives only
// needs about a warp's worth, since ready threads resume before new ones start.
//
// The scheduler's loop: resume a thread that is ready (its barrier or collective completed); else
// start a runner for the threads not started; else every thread waits or has finished. If all
// wait at __syncthreads, the barrier opens and they all become ready; if all have finished, the
// block is done. Anything else would hang on a GPU (a barrier some threads skip, a collective one
// of its lanes never reaches), and here fails the launch with a message naming the block, and the
// warp and the lanes.
//
// Warp collectives. The 32 lanes of warp w are the threads with linear ids 32w .. 32w + 31. A
// lane posts a request on its own stack (op, mask, its value) and checks the lanes of its mask:
// one waiting at a different collective whose mask overlaps is a mismatch (fails the launch).
// If lanes of the mask are still missing, it waits; the last lane to arrive computes every lane's
// result into that lane's request (a shuffle reads the other requests' values; mma.sync gathers
// all fragments, multiplies, and scatters D) and makes the others ready. A lane reads its result
// only from its own request, so a lane that races ahead to the next collective cannot overwrite
// a value another lane has yet to read; no second phase is needed.
//
// Asynchronous copies (cp.async). A copy is recorded in its thread's list with the number of
// the group it will belong to, and its destination is filled with a quiet NaN at once; the data
// is written when that thread waits for the group (wait_group n completes all but the newest n
// committed groups). A kernel that forgets the wait, or reads another thread's copy before the
// __syncthreads that follows that thread's wait, reads NaN.
//
// Schedule orders. Which ready thread runs first is CUDA's business, and a kernel with a race
// (reading shared memory another thread writes, without a barrier between) may pass in one order
// and fail in another. RAWGAN_SIMT_ORDER=forward (the default), reverse or random (seeded by
// RAWGAN_SIMT_SEED, default 1, and the block index), or simt_launch_config::schedule, sets the
// order in which a block's threads start, resume after a barrier, and resume after a warp
// collective (in reverse and random orders the lane that completes a collective waits its turn
// too). Running a kernel's tests in all three orders makes such races show.
//
// Fiber stacks are reused: each worker thread keeps a pool of them, grown to the most its blocks
// have needed at once, and the calling thread uses one more pool shared by all callers (launches
// take turns, one grid at a time). A stack is 128 KiB with a guard page below it, so a kernel that
// overflows its stack (a big per-thread local array) crashes at once instead of corrupting its
// neighbour. Stacks are mapped without reserving memory: only the pages a kernel touches (one or
// two per CUDA thread) become resident.
// System headers first: simt.h makes every later declaration hidden (see there).
#include <algorithm>
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
constexpr unsigned kPendingCopyWord = 0x7fc0deadu;   // a cp.async not yet waited for: a quiet NaN ("dead" in a hex dump)
constexpr uint64_t kUndefinedLane = ~uint64_t(0);    // what a shuffle reads from a lane outside its mask

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

// A fiber's stack, with a guard page below it, and the registers saved while its thread waits.
struct Stack
{
    Context context;
    char* mapping = nullptr;    // guard page + stack

    Stack()
    {
        size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
        void* p = mmap(nullptr, page + kStackBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
        if (p == MAP_FAILED) throw std::bad_alloc();
        mapping = static_cast<char*>(p);
        mprotect(mapping, page, PROT_NONE);   // the stack grows down into this page: overflow faults at once
    }
    ~Stack() { munmap(mapping, static_cast<size_t>(sysconf(_SC_PAGESIZE)) + kStackBytes); }
    Stack(const Stack&) = delete;
    Stack& operator=(const Stack&) = delete;

    char* low() const { return mapping + sysconf(_SC_PAGESIZE); }
};

// Only waiting is recorded: a thread that never waits costs no bookkeeping at all. So Running
// also stands for "not started" and "finished"; when nothing can run, a started thread that is
// not waiting has finished.
enum class Status : uint8_t
{
    Running,
    Ready,       // its barrier or collective completed; waiting in the ready queue to resume
    AtBarrier,
    AtWarp,      // waiting at a warp collective for other lanes
};

struct PendingCopy
{
    void* destination;
    const void* source;
    unsigned bytes;
    unsigned group;   // the number of commits before it was issued: the group it belongs to
};

// One CUDA thread of the block being run: what the scheduler needs while it waits.
struct CudaThread
{
    Status status = Status::Running;
    uint3 index{};                           // saved when it waits
    Stack* stack = nullptr;                  // the runner's stack it runs on: saved when it waits
    simt::warp_request* request = nullptr;   // its latest warp collective (on its own stack)
    unsigned long long copiesBlock = 0;      // the block (ThreadState::blockSerial) the copies are of
    std::vector<PendingCopy> copies;         // cp.async issued and not yet waited for
    unsigned commits = 0;                    // cp.async groups committed so far
};

enum class Order : unsigned { Forward = 1, Reverse = 2, Random = 3 };

// Thread ids waiting to resume, first in first out. A thread is in it at most once, so a ring of
// one slot per thread never overflows.
struct ReadyQueue
{
    std::vector<unsigned> ring;
    size_t head = 0, count = 0;

    void reset(size_t capacity)
    {
        if (ring.size() < capacity) ring.resize(capacity);
        head = count = 0;
    }
    bool empty() const { return count == 0; }
    void push(unsigned i) { ring[(head + count++) % ring.size()] = i; }
    unsigned pop()
    {
        unsigned i = ring[head];
        head = (head + 1) % ring.size();
        count--;
        return i;
    }
};

// splitmix64: a small, good generator; the random order needs nothing more.
uint64_t next_random(uint64_t& s)
{
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

template <typename T>
void shuffle_in_place(T* v, size_t n, uint64_t& s)
{
    for (size_t i = n; i > 1; i--) std::swap(v[i - 1], v[next_random(s) % i]);
}

struct Job;

struct ThreadState
{
    std::vector<std::unique_ptr<Stack>> stacks;   // every stack this OS thread has mapped
    std::vector<Stack*> freeStacks;               // those no thread is on
    bool stacksAbandoned = false;                 // a failed block left threads parked on stacks
    std::vector<CudaThread> threads;              // the block's threads, by linear id
    ReadyQueue ready;
    Context scheduler;
    Stack* starting = nullptr;                    // the stack a new runner starts on
    Stack* running = nullptr;                     // the stack of the thread running now
    int current = -1;                             // the thread running now; -1 in the scheduler
    unsigned long long blockSerial = 0;           // counts the blocks this OS thread has run
    unsigned n = 0;                               // threads per block
    unsigned started = 0, finished = 0, atBarrier = 0, atWarp = 0;
    bool flat = true;                             // a one-dimensional block: threadIdx.x is the linear id
    uint3 nextIndex{};                            // forward order: threadIdx of the next thread to start
    Order order = Order::Forward;
    uint64_t random = 0;                          // random order: the generator's state
    std::vector<unsigned> permutation;            // random order: start order, then each barrier's
    Job* job = nullptr;
    simt::thread_body body = nullptr;
    const void* bound = nullptr;
    unsigned char* dynamicShared = nullptr;
    size_t dynamicCapacity = 0;

    ~ThreadState() { std::free(dynamicShared); }

    CudaThread& me() { return threads[static_cast<size_t>(current)]; }

    Stack* acquireStack()
    {
        if (freeStacks.empty())
        {
            stacks.push_back(std::make_unique<Stack>());
            return stacks.back().get();
        }
        Stack* s = freeStacks.back();
        freeStacks.pop_back();
        return s;
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
    Order order;
    uint64_t seed;
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

std::string hex(unsigned v)
{
    char text[16];
    snprintf(text, sizeof text, "0x%08x", v);
    return text;
}

// "0-15, 17, 20-31": the lanes of a mask.
std::string lane_list(unsigned mask)
{
    std::string s;
    for (unsigned l = 0; l < 32; l++)
    {
        if (!(mask >> l & 1)) continue;
        unsigned end = l;
        while (end + 1 < 32 && (mask >> (end + 1) & 1)) end++;
        if (!s.empty()) s += ", ";
        s += end == l ? std::to_string(l) : std::to_string(l) + "-" + std::to_string(end);
        l = end;
    }
    return s;
}

std::string lanes_word(unsigned mask) { return (__builtin_popcount(mask) == 1 ? "lane " : "lanes ") + lane_list(mask); }

const char* name_of(simt::collective op)
{
    switch (op)
    {
    case simt::collective::shfl_idx: return "__shfl_sync";
    case simt::collective::shfl_up: return "__shfl_up_sync";
    case simt::collective::shfl_down: return "__shfl_down_sync";
    case simt::collective::shfl_xor: return "__shfl_xor_sync";
    case simt::collective::ballot: return "__ballot_sync";
    case simt::collective::any: return "__any_sync";
    case simt::collective::all: return "__all_sync";
    case simt::collective::syncwarp: return "__syncwarp";
    case simt::collective::mma_m16n8k8_tf32: return "mma.sync.m16n8k8 (tf32)";
    case simt::collective::mma_m16n8k16_bf16: return "mma.sync.m16n8k16 (bf16)";
    }
    return "a warp collective";
}

std::string describe(const simt::warp_request& r) { return std::string(name_of(r.op)) + "(mask " + hex(r.mask) + ")"; }

std::string warp_of(unsigned thread) { return "warp " + std::to_string(thread / 32) + " of block " + describe(blockIdx); }

// ------------------------------------------------------------------ running a block's threads

// Starts the next thread: makes it current and sets its threadIdx. The block's shape and order
// are passed in because the caller keeps them in registers across the kernel calls.
inline void start_next(ThreadState& ts, Order order, bool flat)
{
    const unsigned position = ts.started++;
    const unsigned i = order == Order::Forward ? position : order == Order::Reverse ? ts.n - 1 - position : ts.permutation[position];
    ts.current = static_cast<int>(i);
    if (flat)
    {
        threadIdx = uint3{i, 0, 0};
    }
    else if (order == Order::Forward)
    {
        // Threads start in linear order: step the index instead of dividing.
        threadIdx = ts.nextIndex;
        if (++ts.nextIndex.x == blockDim.x)
        {
            ts.nextIndex.x = 0;
            if (++ts.nextIndex.y == blockDim.y)
            {
                ts.nextIndex.y = 0;
                ++ts.nextIndex.z;
            }
        }
    }
    else
    {
        threadIdx = unflatten(i, blockDim);
    }
}

// Called by a thread that cannot go on: records why the launch fails and switches to the
// scheduler for good (it abandons the block; the stack is reset before it is used again).
[[noreturn]] void fail_here(ThreadState& ts, const std::string& message)
{
    ts.job->fail(message);
    for (;;) context_switch(ts.running->context, ts.scheduler);
}

// A runner: runs threads not yet started, one after another, as plain calls (see the top).
[[noreturn]] void runner_entry()
{
    ThreadState& ts = state();
    Stack* const stack = ts.starting;
    const Order order = ts.order;
    const bool flat = ts.flat;
    const unsigned n = ts.n;
    const simt::thread_body body = ts.body;
    const void* const bound = ts.bound;
    while (ts.ready.empty() && ts.started < n)
    {
        start_next(ts, order, flat);
        bool outOfMemory = false;
        try
        {
            body(bound);
        }
        catch (const std::bad_alloc&)
        {
            outOfMemory = true;   // leave the handler before switching stacks: it is per OS thread
        }
        if (outOfMemory) fail_here(ts, "the emulator ran out of memory in thread " + describe(threadIdx) + " of block " + describe(blockIdx));
        // (The thread may have waited and been resumed meanwhile, on this same stack.)
        ts.finished++;
    }
    // Threads are ready to resume, or none is left to start: give the scheduler the turn.
    ts.freeStacks.push_back(stack);
    context_switch(stack->context, ts.scheduler);
    __builtin_unreachable();   // a free stack is prepared afresh before it runs again
}

// The calling thread waits (its status says at what): back to the scheduler, which resumes it
// when it is ready.
void wait_here(ThreadState& ts)
{
    CudaThread& t = ts.me();
    t.index = threadIdx;
    t.stack = ts.running;
    context_switch(t.stack->context, ts.scheduler);
}

void resume(ThreadState& ts, unsigned i)
{
    CudaThread& t = ts.threads[i];
    t.status = Status::Running;
    ts.current = static_cast<int>(i);
    ts.running = t.stack;
    threadIdx = t.index;
    context_switch(ts.scheduler, t.stack->context);
    ts.current = -1;
}

void start_runner(ThreadState& ts)
{
    Stack* s = ts.acquireStack();
    ts.starting = ts.running = s;
    context_prepare(s->context, s->low(), kStackBytes, &runner_entry);
    context_switch(ts.scheduler, s->context);
    ts.current = -1;
}

// Makes threads ready in the launch's order: ascending, descending or shuffled.
void make_ready(ThreadState& ts, unsigned* ids, unsigned count)
{
    if (ts.order == Order::Reverse) std::reverse(ids, ids + count);
    if (ts.order == Order::Random) shuffle_in_place(ids, count, ts.random);
    for (unsigned k = 0; k < count; k++)
    {
        ts.threads[ids[k]].status = Status::Ready;
        ts.ready.push(ids[k]);
    }
}

// Every thread of the block waits at __syncthreads(): all become ready. False if not so.
bool open_barrier(ThreadState& ts)
{
    if (ts.atBarrier != ts.n) return false;
    ts.atBarrier = 0;
    ts.permutation.resize(ts.n);
    for (unsigned i = 0; i < ts.n; i++) ts.permutation[i] = i;
    make_ready(ts, ts.permutation.data(), ts.n);
    return true;
}

// Nothing can run, and not every thread has finished: say why the block would hang on a GPU.
std::string why_stuck(const ThreadState& ts)
{
    if (ts.atWarp == 0)
        return "__syncthreads() was reached by " + std::to_string(ts.atBarrier) + " of the " + std::to_string(ts.n) +
               " threads of block " + describe(blockIdx) + "; the other " + std::to_string(ts.finished) +
               " finished without it (a barrier in divergent code hangs on a GPU)";
    unsigned i = 0;
    while (ts.threads[i].status != Status::AtWarp) i++;
    const simt::warp_request& r = *ts.threads[i].request;
    const unsigned base = i - i % 32;
    unsigned arrived = 0, finished = 0, atBarrier = 0;
    for (unsigned l = 0; l < 32; l++)
    {
        if (!(r.mask >> l & 1)) continue;
        Status s = ts.threads[base + l].status;   // every thread has started; one not waiting has finished
        (s == Status::AtWarp ? arrived : s == Status::AtBarrier ? atBarrier : finished) |= 1u << l;
    }
    std::string message = describe(r) + " in " + warp_of(i) + " was reached by " + lanes_word(arrived) + ";";
    if (finished) message += " " + lanes_word(finished) + " finished without it;";
    if (atBarrier) message += " " + lanes_word(atBarrier) + " wait at __syncthreads() instead;";
    return message + " (a warp collective that a lane of its mask never reaches hangs on a GPU)";
}

void run_block(ThreadState& ts, Job& job, unsigned long long linear)
{
    blockIdx = unflatten(linear, job.grid);
    // CUDA leaves shared memory uninitialised; filling it with NaN bytes makes a kernel that
    // reads before it writes fail its tests here too.
    if (job.sharedBytes > 0) memset(ts.dynamicShared, 0xff, job.sharedBytes);

    const unsigned n = job.threadsPerBlock;
    ts.n = n;
    ts.started = ts.finished = ts.atBarrier = ts.atWarp = 0;
    ts.flat = job.block.y == 1 && job.block.z == 1;
    ts.nextIndex = uint3{0, 0, 0};
    ts.order = job.order;
    ts.blockSerial++;
    if (ts.threads.size() < n) ts.threads.resize(n);
    ts.ready.reset(n);
    if (ts.stacksAbandoned)
    {
        // A failed block left threads waiting: forget them (a block that completes leaves every
        // thread Running, and every stack free).
        for (CudaThread& t : ts.threads) t.status = Status::Running;
        ts.freeStacks.clear();
        for (auto& s : ts.stacks) ts.freeStacks.push_back(s.get());
        ts.stacksAbandoned = false;
    }
    if (ts.order == Order::Random)
    {
        ts.random = job.seed ^ (linear * 0xd1342543de82ef95ull);
        ts.permutation.resize(n);
        for (unsigned i = 0; i < n; i++) ts.permutation[i] = i;
        shuffle_in_place(ts.permutation.data(), n, ts.random);
    }

    for (;;)
    {
        if (job.failed.load(std::memory_order_relaxed))
        {
            ts.stacksAbandoned = true;
            return;
        }
        if (!ts.ready.empty())
            resume(ts, ts.ready.pop());
        else if (ts.started < n)
            start_runner(ts);
        else if (ts.finished == n)
            return;
        else if (!open_barrier(ts))
        {
            job.fail(why_stuck(ts));
            ts.stacksAbandoned = true;   // the waiting threads are left where they are
            return;
        }
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
        ts.stacksAbandoned = true;
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
    if (c.schedule > 3)
        return "schedule " + std::to_string(c.schedule) + " is not 0 (the default), 1 (forward), 2 (reverse) or 3 (random)";
    if (c.shared_bytes > kMaxSharedBytes)
        return "dynamic shared memory of " + std::to_string(c.shared_bytes) + " bytes exceeds the " + std::to_string(kMaxSharedBytes) + "-byte limit";
    return {};
}

// ------------------------------------------------------------------ warp collectives: the results

// shfl.sync as the PTX ISA defines it, with c = ((32 - width) << 8) | clamp, as CUDA's
// __shfl*_sync pass it: the warp is cut into segments of `width` lanes; idx reads lane b of the
// caller's segment, up reads lane - b and down lane + b when that stays in the segment (else
// the caller's own value), xor reads lane ^ b unless that lies beyond the segment's end. Each
// lane gives its own b and width; only b's low 5 bits count. A source lane outside the mask is
// undefined on a GPU; here it reads all one bits.
void complete_shuffle(simt::warp_request* const (&lane)[32], const simt::warp_request& r)
{
    for (int l = 0; l < 32; l++)
    {
        if (lane[l] == nullptr) continue;
        const int width = lane[l]->width, b = lane[l]->b & 31;
        const int first = l & ~(width - 1), last = first + width - 1;
        int j;
        switch (r.op)
        {
        case simt::collective::shfl_idx: j = first | (b & (width - 1)); break;
        case simt::collective::shfl_up: j = l - b >= first ? l - b : l; break;
        case simt::collective::shfl_down: j = l + b <= last ? l + b : l; break;
        default: j = (l ^ b) <= last ? l ^ b : l; break;
        }
        lane[l]->result = lane[j] != nullptr ? lane[j]->value : kUndefinedLane;
    }
}

void complete_vote(simt::warp_request* const (&lane)[32], const simt::warp_request& r)
{
    unsigned ballot = 0;
    for (unsigned l = 0; l < 32; l++)
        if (lane[l] != nullptr && lane[l]->value != 0) ballot |= 1u << l;
    const unsigned result = r.op == simt::collective::ballot ? ballot : r.op == simt::collective::any ? ballot != 0 : ballot == r.mask;
    for (unsigned l = 0; l < 32; l++)
        if (lane[l] != nullptr) lane[l]->result = result;
}

// ------------------------------------------------------------------ mma.sync: the fragment layouts

// What a lane hands to mma.sync: its registers of A, B and C.
struct MmaFragments
{
    unsigned a[4];
    unsigned b[2];
    float c[4];
};

// Both shapes' accumulators, from the PTX ISA (9.7.14.5.7 "Matrix Fragments for mma.m16n8k8",
// 9.7.14.5.8 "... for mma.m16n8k16 with floating point type"): with groupID g = lane >> 2 and
// threadID_in_group t = lane % 4, lane holds
//     c0 = C[g][2t]   c1 = C[g][2t+1]   c2 = C[g+8][2t]   c3 = C[g+8][2t+1]
// and D in the same places. A is M x K row by row (.row), B is K x N column by column (.col).
template <int K>
struct MmaTile
{
    float a[16][K], b[K][8], c[16][8];

    void gather_c(const MmaFragments& f, int g, int t)
    {
        c[g][2 * t] = f.c[0];
        c[g][2 * t + 1] = f.c[1];
        c[g + 8][2 * t] = f.c[2];
        c[g + 8][2 * t + 1] = f.c[3];
    }

    // D = A B + C in fp32: each product is exact (a tf32 or bf16 significand has at most 11
    // bits, so a product fits in fp32's 24) and is added to C in order k = 0, 1, ... with fp32
    // rounding. The hardware's order of accumulation is unspecified; results can differ from a
    // GPU's in the last bits of D, never in which elements meet.
    void multiply_and_scatter(simt::warp_request* const (&lane)[32])
    {
        for (int l = 0; l < 32; l++)
        {
            const int g = l >> 2, t = l & 3;
            float d[4];
            const int rows[4] = {g, g, g + 8, g + 8}, cols[4] = {2 * t, 2 * t + 1, 2 * t, 2 * t + 1};
            for (int e = 0; e < 4; e++)
            {
                float sum = c[rows[e]][cols[e]];
                for (int k = 0; k < K; k++) sum += a[rows[e]][k] * b[k][cols[e]];
                d[e] = sum;
            }
            memcpy(lane[l]->out, d, sizeof d);
        }
    }
};

float as_float(unsigned u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

// mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32, PTX ISA 9.7.14.5.7, .tf32:
//     a0 = A[g][t]   a1 = A[g+8][t]   a2 = A[g][t+4]   a3 = A[g+8][t+4]       (A is 16 x 8)
//     b0 = B[t][g]   b1 = B[t+4][g]                                          (B is 8 x 8)
// Each register holds an fp32 bit pattern; its value is rounded to tf32 as cvt.rna.tf32.f32 does
// (a no-op for what f32_to_tf32 returned).
void complete_mma_tf32(simt::warp_request* const (&lane)[32])
{
    MmaTile<8> m;
    for (int l = 0; l < 32; l++)
    {
        const MmaFragments& f = *static_cast<const MmaFragments*>(lane[l]->in);
        const int g = l >> 2, t = l & 3;
        auto tf32 = [](unsigned u) { return as_float(simt::cvt_rna_tf32(as_float(u))); };
        m.a[g][t] = tf32(f.a[0]);
        m.a[g + 8][t] = tf32(f.a[1]);
        m.a[g][t + 4] = tf32(f.a[2]);
        m.a[g + 8][t + 4] = tf32(f.a[3]);
        m.b[t][g] = tf32(f.b[0]);
        m.b[t + 4][g] = tf32(f.b[1]);
        m.gather_c(f, g, t);
    }
    m.multiply_and_scatter(lane);
}

// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32, PTX ISA 9.7.14.5.8, .bf16: each 32-bit
// register holds two bfloat16, the lower-numbered element in the low half. Elements a0..a7 and
// b0..b3 are, in register order (A is 16 x 16, B is 16 x 8):
//     a0,a1 = A[g][2t], A[g][2t+1]        a2,a3 = A[g+8][2t], A[g+8][2t+1]
//     a4,a5 = A[g][2t+8], A[g][2t+9]      a6,a7 = A[g+8][2t+8], A[g+8][2t+9]
//     b0,b1 = B[2t][g], B[2t+1][g]        b2,b3 = B[2t+8][g], B[2t+9][g]
void complete_mma_bf16(simt::warp_request* const (&lane)[32])
{
    MmaTile<16> m;
    auto low = [](unsigned u) { return as_float(u << 16); };
    auto high = [](unsigned u) { return as_float(u & 0xffff0000u); };
    for (int l = 0; l < 32; l++)
    {
        const MmaFragments& f = *static_cast<const MmaFragments*>(lane[l]->in);
        const int g = l >> 2, t = l & 3;
        for (int half = 0; half < 2; half++)   // columns 2t.. and 2t+8..
        {
            const int col = 2 * t + 8 * half;
            m.a[g][col] = low(f.a[2 * half]);
            m.a[g][col + 1] = high(f.a[2 * half]);
            m.a[g + 8][col] = low(f.a[2 * half + 1]);
            m.a[g + 8][col + 1] = high(f.a[2 * half + 1]);
            m.b[col][g] = low(f.b[half]);
            m.b[col + 1][g] = high(f.b[half]);
        }
        m.gather_c(f, g, t);
    }
    m.multiply_and_scatter(lane);
}
} // namespace

// ------------------------------------------------------------------ warp collectives: the rendezvous

void simt::warp_collective(warp_request& r)
{
    ThreadState& ts = state();
    const unsigned me = static_cast<unsigned>(ts.current);
    const unsigned lane = me % 32, base = me - lane;
    const unsigned lanes = std::min(32u, ts.n - base);   // the last warp of a block may be partial
    const unsigned existing = lanes == 32 ? 0xffffffffu : (1u << lanes) - 1;
    const bool mma = r.op == collective::mma_m16n8k8_tf32 || r.op == collective::mma_m16n8k16_bf16;
    const bool shuffle = r.op == collective::shfl_idx || r.op == collective::shfl_up || r.op == collective::shfl_down || r.op == collective::shfl_xor;

    // Misuse that a GPU leaves undefined (or hangs on) fails the launch.
    if (mma && lanes != 32)
        fail_here(ts, std::string(name_of(r.op)) + " in " + warp_of(me) + " needs all 32 lanes, but that warp of a block of " +
                          std::to_string(ts.n) + " threads has only " + std::to_string(lanes));
    if (!(r.mask >> lane & 1))
        fail_here(ts, describe(r) + " in lane " + std::to_string(lane) + " of " + warp_of(me) + ": the mask leaves out the calling lane");
    if (r.mask & ~existing)
        fail_here(ts, describe(r) + " in " + warp_of(me) + " names " + lanes_word(r.mask & ~existing) + ", but that warp of a block of " +
                          std::to_string(ts.n) + " threads has only " + std::to_string(lanes) + " lanes (its full mask is " + hex(existing) + ")");
    if (shuffle && (r.width < 1 || r.width > 32 || (r.width & (r.width - 1)) != 0))
        fail_here(ts, describe(r) + " in " + warp_of(me) + ": width " + std::to_string(r.width) + " is not a power of two from 1 to 32");

    // Which lanes of the mask wait here already? A lane waiting at a collective whose mask
    // overlaps this one, but is another collective, can never meet this one.
    unsigned arrived = 1u << lane;
    for (unsigned l = 0; l < lanes; l++)
    {
        const CudaThread& other = ts.threads[base + l];
        if (l == lane || other.status != Status::AtWarp || (other.request->mask & r.mask) == 0) continue;
        const warp_request& o = *other.request;
        if (o.mask != r.mask || o.op != r.op)
        {
            unsigned conflicting = 0;
            for (unsigned k = 0; k < lanes; k++)
            {
                const CudaThread& c = ts.threads[base + k];
                if (c.status == Status::AtWarp && c.request->op == o.op && c.request->mask == o.mask) conflicting |= 1u << k;
            }
            fail_here(ts, "lane " + std::to_string(lane) + " of " + warp_of(me) + " reached " + describe(r) + " while " + lanes_word(conflicting) +
                              " wait at " + describe(o) + " (every lane named in a mask must reach the same collective with the same mask)");
        }
        arrived |= 1u << l;
    }

    CudaThread& self = ts.me();
    self.request = &r;
    if (arrived != r.mask)
    {
        self.status = Status::AtWarp;
        ts.atWarp++;
        wait_here(ts);
        return;   // the last lane to arrive has written r.result (or r.out)
    }

    // Every lane is here: compute every lane's result, then wake the others.
    warp_request* requests[32] = {};
    for (unsigned l = 0; l < 32; l++)
        if (r.mask >> l & 1) requests[l] = ts.threads[base + l].request;
    switch (r.op)
    {
    case collective::ballot:
    case collective::any:
    case collective::all: complete_vote(requests, r); break;
    case collective::syncwarp: break;
    case collective::mma_m16n8k8_tf32: complete_mma_tf32(requests); break;
    case collective::mma_m16n8k16_bf16: complete_mma_bf16(requests); break;
    default: complete_shuffle(requests, r); break;
    }
    unsigned wake[32], count = 0;
    for (unsigned l = 0; l < 32; l++)
        if ((r.mask >> l & 1) && (l != lane || ts.order != Order::Forward)) wake[count++] = base + l;
    for (unsigned k = 0; k < count; k++)
        if (wake[k] != me) ts.atWarp--;
    make_ready(ts, wake, count);
    // In forward order this lane simply goes on; in the other orders it queues with the others.
    if (ts.order != Order::Forward) wait_here(ts);
}

// Both shapes hand the warp's fragments to the same rendezvous; only the product differs.
static void mma_through_warp(simt::collective op, float d[4], const unsigned a[4], const unsigned b[2], const float c[4])
{
    MmaFragments in;
    memcpy(in.a, a, sizeof in.a);
    memcpy(in.b, b, sizeof in.b);
    memcpy(in.c, c, sizeof in.c);
    float out[4];
    simt::warp_request r{};
    r.op = op;
    r.mask = 0xffffffffu;
    r.in = &in;
    r.out = out;
    simt::warp_collective(r);
    memcpy(d, out, sizeof out);
}

void simt::mma_m16n8k8_tf32(float d[4], const unsigned a[4], const unsigned b[2], const float c[4])
{
    mma_through_warp(collective::mma_m16n8k8_tf32, d, a, b, c);
}

void simt::mma_m16n8k16_bf16(float d[4], const unsigned a[4], const unsigned b[2], const float c[4])
{
    mma_through_warp(collective::mma_m16n8k16_bf16, d, a, b, c);
}

// ------------------------------------------------------------------ cp.async

namespace
{
// The calling thread's copies. Those a thread left pending when it ended are dropped (their data
// never arrives) the first time the same thread id of a later block issues, commits or waits.
CudaThread& copying_thread(ThreadState& ts)
{
    CudaThread& t = ts.me();
    if (t.copiesBlock != ts.blockSerial)
    {
        t.copies.clear();
        t.commits = 0;
        t.copiesBlock = ts.blockSerial;
    }
    return t;
}
} // namespace

void simt::cp_async(void* shared, const void* global, unsigned bytes)
{
    ThreadState& ts = state();
    if (reinterpret_cast<uintptr_t>(shared) % bytes != 0 || reinterpret_cast<uintptr_t>(global) % bytes != 0)
        fail_here(ts, "cp.async of " + std::to_string(bytes) + " bytes in thread " + describe(threadIdx) + " of block " + describe(blockIdx) +
                          " needs both addresses aligned to " + std::to_string(bytes) + " bytes");
    CudaThread& t = copying_thread(ts);
    t.copies.push_back(PendingCopy{shared, global, bytes, t.commits});
    for (unsigned o = 0; o < bytes; o += 4) memcpy(static_cast<char*>(shared) + o, &kPendingCopyWord, 4);
}

void simt::cp_async_commit() { copying_thread(state()).commits++; }

void simt::cp_async_wait(unsigned newestPending)
{
    // Groups 0 .. commits - 1 are committed; all but the newest `newestPending` of them complete
    // now, in issue order. Copies issued since the last commit belong to no group yet and stay.
    CudaThread& t = copying_thread(state());
    size_t kept = 0;
    for (const PendingCopy& c : t.copies)
    {
        if (c.group + newestPending < t.commits)
            memcpy(c.destination, c.source, c.bytes);
        else
            t.copies[kept++] = c;
    }
    t.copies.resize(kept);
}

// ------------------------------------------------------------------ barriers, shared memory, errors

void simt_barrier()
{
    ThreadState& ts = state();
    ts.me().status = Status::AtBarrier;
    ts.atBarrier++;
    wait_here(ts);
}

unsigned char* simt_dynamic_shared() { return state().dynamicShared; }

extern "C" const char* simt_last_error(void) { return t_last_error.c_str(); }

namespace
{
// RAWGAN_SIMT_ORDER and RAWGAN_SIMT_SEED, read once: the schedule of launches that ask for the
// default (simt_launch_config::schedule = 0).
struct DefaultSchedule
{
    Order order = Order::Forward;
    uint64_t seed = 1;
    std::string error;
};

const DefaultSchedule& default_schedule()
{
    static const DefaultSchedule d = [] {
        DefaultSchedule s;
        if (const char* order = std::getenv("RAWGAN_SIMT_ORDER"); order != nullptr && *order != '\0')
        {
            std::string o = order;
            if (o == "forward") s.order = Order::Forward;
            else if (o == "reverse") s.order = Order::Reverse;
            else if (o == "random") s.order = Order::Random;
            else s.error = "RAWGAN_SIMT_ORDER=" + o + " is not one of forward, reverse, random";
        }
        if (const char* seed = std::getenv("RAWGAN_SIMT_SEED"); seed != nullptr && *seed != '\0')
            s.seed = std::strtoull(seed, nullptr, 10);
        return s;
    }();
    return d;
}
} // namespace

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
    const DefaultSchedule& schedule = default_schedule();
    if (config->schedule == 0 && !schedule.error.empty()) return fail(kernel, schedule.error.c_str());
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
        job.order = config->schedule == 0 ? schedule.order : static_cast<Order>(config->schedule);
        job.seed = config->seed != 0 ? config->seed : schedule.seed;

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
