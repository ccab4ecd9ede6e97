// lrlab's device emulator: runs the CUDA backend's host code and kernels on the CPU, so that the GPU
// tests exercise them on a machine with no GPU. Kernels run block after block on the calling host
// thread, each thread of a block a fiber that yields at barriers (__syncthreads, warp shuffles,
// cub::BlockReduce). Streams queue their work and run it only when the host waits for it (or while
// they capture a graph, record it). What it checks and what it cannot: README.md beside this file.
#include <cblas.h>
#include <signal.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#else
#define ASAN_POISON_MEMORY_REGION(p, n) ((void)(p), (void)(n))
#define ASAN_UNPOISON_MEMORY_REGION(p, n) ((void)(p), (void)(n))
#endif
#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
extern "C" {  // ThreadSanitizer's dynamic annotations
void AnnotateIgnoreReadsBegin(const char* file, int line);
void AnnotateIgnoreReadsEnd(const char* file, int line);
void AnnotateIgnoreWritesBegin(const char* file, int line);
void AnnotateIgnoreWritesEnd(const char* file, int line);
}
#endif

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "cublas_v2.h"
#include "cuda_runtime.h"

__thread uint3 threadIdx;
__thread uint3 blockIdx;
__thread dim3 blockDim;
__thread dim3 gridDim;

namespace lrlab_emu {

struct Stream;

// A piece of work queued on a stream, and the work of other streams it must wait for: the legacy
// stream's implicit synchronisation with blocking streams, taken when the work is submitted.
struct Item {
  std::function<void()> work;
  std::vector<std::pair<std::shared_ptr<Stream>, uint64_t>> after;  // (stream, items of it done first)
};

struct Stream {
  unsigned flags = 0;
  std::atomic<bool> capturing{false};
  std::atomic<bool> invalidated{false};  // other threads' calls may invalidate a capture
  cudaStreamCaptureMode mode = cudaStreamCaptureModeGlobal;
  std::thread::id capturer;
  std::mutex record;  // relaxed captures may be fed from several threads
  std::vector<std::function<void()>> captured;

  // The queue. Work runs in order, on whichever host thread first needs it done; `running` keeps a
  // second thread from starting the next item before the current one has finished.
  std::mutex queue;
  std::condition_variable finished;
  std::deque<Item> pending;
  std::atomic<uint64_t> submitted{0};
  uint64_t done = 0;
  bool running = false;
};

// A graph's work is shared with the launches still queued when the graph is destroyed.
struct Graph {
  std::shared_ptr<const std::vector<std::function<void()>>> work;
};

// One cudaEventRecord: where it was queued (or nothing, when captured) and whether the stream has
// reached it. Owned by the event and by the queued record, so that an event destroyed or recorded
// again before an earlier record ran leaves that record its own.
struct EventMark {
  std::shared_ptr<Stream> stream;
  uint64_t item = 0;
  std::atomic<bool> reached{false};
  std::chrono::steady_clock::time_point at;
};

struct Event {
  std::shared_ptr<EventMark> mark = std::make_shared<EventMark>();  // the latest record
};

struct Blas {
  cudaStream_t stream = nullptr;
  bool workspace = false;  // one set by cublasSetWorkspace since the last cublasSetStream
};

namespace {

thread_local cudaError_t tl_last_error = cudaSuccess;
thread_local Counters tl_counters;
thread_local int tl_failing_instantiations = 0;  // fail_graph_instantiations()
thread_local int tl_capture_items_left = -1;     // fail_capture_at(); -1: none
// What a failed instantiation leaves in *exec: no graph's handle.
const cudaGraphExec_t kNotAGraph = reinterpret_cast<cudaGraphExec_t>(alignof(std::max_align_t));

cudaError_t fail(cudaError_t err) {
  tl_last_error = err;
  return err;
}

// CUDA_VISIBLE_DEVICES as the CUDA runtime reads it, for the one emulated device: empty, or a list
// whose first entry is a number other than 0 ("-1", "1,2"), leaves no device, and every call that
// needs one fails with cudaErrorNoDevice. A first entry that is not a number (a GPU-... or MIG-...
// UUID, as Slurm may set) is taken to name the emulated device. An emulator build runs the CPU
// path's tests with it empty (tests/CMakeLists.txt), and pins it to 0 for the GPU tests. Read at each
// call, unlike the runtime (once, at start-up), so that a test can hide the device in a child
// process it forks.
bool device_hidden() {
  const char* v = std::getenv("CUDA_VISIBLE_DEVICES");
  if (!v) return false;
  if (!*v) return true;
  char* end = nullptr;
  const long first = std::strtol(v, &end, 10);
  const bool numeric = end != v && (*end == '\0' || *end == ',');
  return numeric && first != 0;
}
#define LRLAB_EMU_NEEDS_DEVICE() \
  do {                           \
    if (device_hidden()) return fail(cudaErrorNoDevice); \
  } while (0)

int64_t env_int(const char* name, int64_t fallback) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  const long long x = std::strtoll(v, &end, 10);
  if (*end || x <= 0) {
    std::fprintf(stderr, "lrlab device emulator: %s=%s is not a positive integer\n", name, v);
    std::abort();
  }
  return x;
}

// The emulated GPU: a few multiprocessors, so that code sizing its grids by them sees several; and
// a memory small enough for tests that fill it.
int emulated_sms() {
  static const int sms = static_cast<int>(env_int("LRLAB_EMULATOR_SMS", 4));
  return sms;
}
size_t emulated_memory() {
  static const size_t bytes = static_cast<size_t>(env_int("LRLAB_EMULATOR_MEMORY_MIB", 1024)) << 20;
  return bytes;
}

// ---- Device memory: every allocation is recorded, so that copies and GEMMs can check their ranges.
std::mutex mem_mutex;
std::map<uintptr_t, size_t> allocations;  // begin -> bytes
size_t allocated = 0;

// New device memory holds whatever was there before; the emulator fills it with NaNs so that code
// reading memory it never wrote fails its tests instead of reading zeros. Huge allocations (tests
// that fill the device) are left untouched.
constexpr size_t kPoisonLimit = size_t{256} << 20;

// Device memory lives in one reserved range of address space that is inaccessible except while
// device work runs (or the emulator fills new memory), so host code that reads or writes through a
// device pointer faults here as on a GPU. Allocations are taken from the top of what was ever used
// for as long as the range lasts, so freed memory is not handed out again soon (ASan reports a kernel
// using it); each is followed by an inaccessible red zone that ASan watches.
constexpr size_t kAlign = 256;
constexpr size_t kRedzone = 4096;

constexpr size_t round_up(size_t bytes, size_t align) { return (bytes + align - 1) / align * align; }

struct Arena {
  char* base = nullptr;
  size_t span = 0;
  size_t top = 0;                        // offsets below were handed out at least once
  std::map<size_t, size_t> free_blocks;  // offset -> bytes, below top, coalesced
};

struct sigaction previous_segv;

Arena& arena();

// A fault inside the range is host code touching device memory. The handler says so and hands the
// signal back to whoever handled it before (AddressSanitizer prints the stack), then the access
// faults again, unless another thread opened the range for device work in between: then the access
// goes through, but the message is out, and the test scripts fail on it.
void on_segv(int, siginfo_t* info, void*) {
  const Arena& a = arena();
  const auto at = reinterpret_cast<uintptr_t>(info->si_addr), base = reinterpret_cast<uintptr_t>(a.base);
  if (at >= base && at - base < a.span) {
    static const char msg[] =
        "lrlab device emulator: host code touched device memory (through a device pointer; that faults on a "
        "GPU too)\n";
    (void)!write(STDERR_FILENO, msg, sizeof msg - 1);
  }
  sigaction(SIGSEGV, &previous_segv, nullptr);
}

Arena& arena() {
  static Arena a = [] {
    Arena r;
    for (size_t times : {16, 2}) {
      r.span = times * emulated_memory();
      void* p = mmap(nullptr, r.span, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      if (p != MAP_FAILED) {
        r.base = static_cast<char*>(p);
        break;
      }
    }
    if (!r.base) fault("cannot reserve address space for the emulated device's memory");
    struct sigaction act {};
    act.sa_sigaction = on_segv;
    act.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&act.sa_mask);
    sigaction(SIGSEGV, &act, &previous_segv);
    return r;
  }();
  return a;
}

// Under mem_mutex: the offset of `bytes` of the range, or nullopt.
std::optional<size_t> arena_take(Arena& a, size_t bytes) {
  if (a.span - a.top >= bytes) {
    a.top += bytes;
    return a.top - bytes;
  }
  for (auto it = a.free_blocks.begin(); it != a.free_blocks.end(); ++it) {
    if (it->second < bytes) continue;
    const size_t at = it->first, left = it->second - bytes;
    a.free_blocks.erase(it);
    if (left) a.free_blocks.emplace(at + bytes, left);
    return at;
  }
  return std::nullopt;
}

// Under mem_mutex.
void arena_give(Arena& a, size_t at, size_t bytes) {
  auto next = a.free_blocks.lower_bound(at);
  if (next != a.free_blocks.end() && next->first == at + bytes) {
    bytes += next->second;
    next = a.free_blocks.erase(next);
  }
  if (next != a.free_blocks.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second == at) {
      prev->second += bytes;
      return;
    }
  }
  a.free_blocks.emplace(at, bytes);
}

// While an object of this class lives on some thread, the range is accessible to all threads; the
// count is of threads, so that device work nested in device work does not call mprotect again.
std::mutex access_mutex;
int access_holders = 0;
thread_local int tl_access_depth = 0;

class DeviceAccess {
 public:
  DeviceAccess() {
    if (tl_access_depth++ == 0) change(+1);
  }
  ~DeviceAccess() {
    if (--tl_access_depth == 0) change(-1);
  }
  DeviceAccess(const DeviceAccess&) = delete;
  DeviceAccess& operator=(const DeviceAccess&) = delete;

 private:
  static void change(int by) {
    std::lock_guard<std::mutex> lock(access_mutex);
    const bool was_open = access_holders > 0;
    access_holders += by;
    if (was_open == (access_holders > 0)) return;
    const Arena& a = arena();
    if (mprotect(a.base, a.span, access_holders > 0 ? PROT_READ | PROT_WRITE : PROT_NONE) != 0)
      fault("cannot change the protection of the emulated device's memory");
  }
};

bool in_allocation(const void* p, size_t bytes) {
  const auto at = reinterpret_cast<uintptr_t>(p);
  std::lock_guard<std::mutex> lock(mem_mutex);
  auto it = allocations.upper_bound(at);
  if (it == allocations.begin()) return false;
  --it;
  return at >= it->first && at + bytes <= it->first + it->second && at + bytes >= at;
}

// Host memory never lies in the device's range; a range there that is no live allocation is freed
// or never allocated device memory, not host memory.
bool touches_device(const void* p, size_t bytes) {
  const Arena& a = arena();
  const auto at = reinterpret_cast<uintptr_t>(p), base = reinterpret_cast<uintptr_t>(a.base);
  return at < base + a.span && at + bytes > base;
}

// ---- Streams and capture.
const std::shared_ptr<Stream> legacy_stream = std::make_shared<Stream>();
std::mutex capture_mutex;
std::vector<Stream*> active_captures;

// Streams are owned by this map while they live, and by the queued work that waits for them after.
std::mutex streams_mutex;
std::map<const Stream*, std::shared_ptr<Stream>> live_streams;

// A destroyed stream's handle is dangling; using it is a fault rather than whatever it would do on
// a GPU.
std::shared_ptr<Stream> owner(cudaStream_t s) {
  if (!s) return legacy_stream;
  std::lock_guard<std::mutex> lock(streams_mutex);
  auto it = live_streams.find(s);
  if (it == live_streams.end()) fault("use of a stream that was never created or is destroyed");
  return it->second;
}
Stream* resolve(cudaStream_t s) { return s ? owner(s).get() : legacy_stream.get(); }

bool eager() {
  static const bool on = env_int("LRLAB_EMULATOR_EAGER", 0) > 0;
  return on;
}

// Runs the stream's queued work until `upto` of its items have finished, first the work of other
// streams that each item waits for. An item waits only for work submitted before it, so two host
// threads draining streams that wait for each other cannot deadlock.
void drain(Stream& s, uint64_t upto) {
  std::optional<DeviceAccess> access;  // opened at the first item this call runs
  std::unique_lock<std::mutex> lock(s.queue);
  while (s.done < upto) {
    if (s.running) {
      s.finished.wait(lock);
      continue;
    }
    Item item = std::move(s.pending.front());
    s.pending.pop_front();
    s.running = true;
    lock.unlock();
    if (!access) access.emplace();
    for (const auto& [other, n] : item.after) drain(*other, n);
    item.work();
    item = Item{};
    lock.lock();
    s.running = false;
    ++s.done;
    s.finished.notify_all();
  }
}

// The host waits for everything submitted to the stream so far.
cudaError_t wait_for(Stream& s) {
  ++tl_counters.host_waits;
  drain(s, s.submitted);
  return cudaSuccess;
}

// The host waits for every stream.
cudaError_t wait_for_device() {
  ++tl_counters.host_waits;
  std::vector<std::shared_ptr<Stream>> all{legacy_stream};
  {
    std::lock_guard<std::mutex> lock(streams_mutex);
    for (const auto& entry : live_streams) all.push_back(entry.second);
  }
  for (const auto& s : all) drain(*s, s->submitted);
  return cudaSuccess;
}

// CUDA forbids calls that could synchronise with a stream being captured: from the capturing thread
// (unless it captures in relaxed mode), and from any thread while a global-mode capture runs. Such
// a call fails and invalidates the capture.
bool capture_forbids() {
  std::lock_guard<std::mutex> lock(capture_mutex);
  const auto me = std::this_thread::get_id();
  bool forbid = false;
  for (Stream* s : active_captures) {
    const bool mine = s->capturer == me && s->mode != cudaStreamCaptureModeRelaxed;
    const bool global = s->mode == cudaStreamCaptureModeGlobal;
    if (mine || global) {
      s->invalidated = true;
      forbid = true;
    }
  }
  return forbid;
}

// ---- Kernels.
enum class FiberState { Ready, AtBlockBarrier, AtWarpBarrier, Done };

#if defined(__SANITIZE_ADDRESS__)
constexpr size_t kFiberStack = size_t{256} << 10;
#else
constexpr size_t kFiberStack = size_t{64} << 10;
#endif

// Switching between a block's threads. On x86-64 a switch saves the callee-saved registers on the
// current stack and moves to the other one: glibc's swapcontext also saves the signal mask with a
// system call, which made barrier-heavy tests many times slower (and ASan clears a whole stack's
// shadow at each). AddressSanitizer is told about each switch, so that it keeps checking stacks.
#if defined(__x86_64__)
extern "C" void lrlab_emu_switch(void** save_sp, void* to_sp);
asm(R"(
  .text
  .globl lrlab_emu_switch
  .type lrlab_emu_switch, @function
lrlab_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size lrlab_emu_switch, .-lrlab_emu_switch
)");

struct Context {
  void* sp = nullptr;
  // A fresh context on [stack, stack + size) that starts in entry(), which must never return.
  void make(char* stack, size_t size, void (*entry)()) {
    auto top = reinterpret_cast<uintptr_t>(stack + size) & ~uintptr_t{15};
    auto* slot = reinterpret_cast<void**>(top - 16);
    slot[0] = reinterpret_cast<void*>(entry);  // where the first switch "returns" to
    slot[1] = nullptr;                         // entry's own (never used) return address
    sp = slot - 6;                             // the six callee-saved registers, zero
    std::memset(sp, 0, 6 * sizeof(void*));
  }
  static void swap(Context& from, const Context& to) { lrlab_emu_switch(&from.sp, to.sp); }
};
#else
struct Context {
  ucontext_t uc;
  void make(char* stack, size_t size, void (*entry)()) {
    getcontext(&uc);
    uc.uc_stack.ss_sp = stack;
    uc.uc_stack.ss_size = size;
    uc.uc_link = nullptr;
    makecontext(&uc, entry, 0);
  }
  static void swap(Context& from, const Context& to) { swapcontext(&from.uc, &to.uc); }
};
#endif

#if defined(__SANITIZE_ADDRESS__)
void start_switch(void** fake_stack, const void* bottom, size_t size) {
  __sanitizer_start_switch_fiber(fake_stack, bottom, size);
}
void finish_switch(void* fake_stack, const void** bottom, size_t* size) {
  __sanitizer_finish_switch_fiber(fake_stack, bottom, size);
}
#else
void start_switch(void**, const void*, size_t) {}
void finish_switch(void*, const void**, size_t*) {}
#endif

// A device thread's stack, with an inaccessible page below it: an overflow faults at once instead
// of overwriting the heap.
class FiberStack {
 public:
  FiberStack() {
    void* p = mmap(nullptr, kGuard + kFiberStack, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    if (p == MAP_FAILED || mprotect(p, kGuard, PROT_NONE) != 0) fault("cannot map a device thread's stack");
    base_ = static_cast<char*>(p);
  }
  // A worker is never unwound (it waits in fiber_entry's loop until its thread ends), so ASan's
  // marks for its frames are cleared here, or they would flag the next mapping at these addresses.
  ~FiberStack() {
    ASAN_UNPOISON_MEMORY_REGION(bottom(), kFiberStack);
    munmap(base_, kGuard + kFiberStack);
  }
  FiberStack(const FiberStack&) = delete;
  FiberStack& operator=(const FiberStack&) = delete;
  char* bottom() const { return base_ + kGuard; }

 private:
  static constexpr size_t kGuard = 4096;
  char* base_ = nullptr;
};

// ---- ThreadSanitizer. In a build with -fsanitize=thread every warp is a thread of its own to
// ThreadSanitizer (a TSan fiber that the warp's lanes share), and only what orders warps on a GPU
// orders them there: the launch (after the host's work that precedes it), __syncthreads within a
// block, and the end of the kernel (before what follows it). Two warps touching the same memory, one
// of them writing, with none of those between them, are a reported data race, however the
// emulator's scheduling happened to order them. Blocks take one of two sets of TSan fibers (see
// run_grid), so races between blocks show too. A TSan fiber per lane would find races inside a warp as well, but costs TSan about a
// megabyte each: the sweeps' dozen host threads would need gigabytes.
#if defined(__SANITIZE_THREAD__)
void tsan_release(const void* at) { __tsan_release(const_cast<void*>(at)); }
void tsan_acquire(const void* at) { __tsan_acquire(const_cast<void*>(at)); }
void tsan_switch_to(void* fiber) { __tsan_switch_to_fiber(fiber, __tsan_switch_to_fiber_no_sync); }
void* tsan_current() { return __tsan_get_current_fiber(); }
void* tsan_new_fiber() { return __tsan_create_fiber(0); }
void tsan_delete_fiber(void* fiber) { __tsan_destroy_fiber(fiber); }
// The emulator's own bookkeeping (fiber states, the shuffle slots, the block's variables) is shared
// by the device threads of a block with nothing ordering them for ThreadSanitizer; it is hidden from
// it, on the thread or fiber that touches it.
class Unwatched {
 public:
  Unwatched() {
    AnnotateIgnoreReadsBegin(__FILE__, __LINE__);
    AnnotateIgnoreWritesBegin(__FILE__, __LINE__);
  }
  ~Unwatched() {
    AnnotateIgnoreWritesEnd(__FILE__, __LINE__);
    AnnotateIgnoreReadsEnd(__FILE__, __LINE__);
  }
  Unwatched(const Unwatched&) = delete;
  Unwatched& operator=(const Unwatched&) = delete;
};
#else
void tsan_release(const void*) {}
void tsan_acquire(const void*) {}
void tsan_switch_to(void*) {}
void* tsan_current() { return nullptr; }
void* tsan_new_fiber() { return nullptr; }
void tsan_delete_fiber(void*) {}
class Unwatched {
 public:
  Unwatched() {}
};
#endif

// A device thread of the running block.
struct Fiber {
  uint3 idx;
  FiberState state;
  unsigned barriers = 0;  // __syncthreads passed in this block
};

// What runs a device thread: a fiber that loops in fiber_entry, running the kernel once for each
// block it is given. It is made once and reused, so that neither its stack nor ThreadSanitizer's
// record of its calls grows with the blocks it runs.
struct Worker {
  Context ctx;
  FiberStack stack;
  void* fake_stack = nullptr;  // ASan's, while the worker is switched out
};

struct BlockRun {
  Context scheduler;
  const void* scheduler_bottom = nullptr;  // the host thread's stack, for ASan
  size_t scheduler_size = 0;
  void* scheduler_fake_stack = nullptr;
  std::vector<Fiber> fibers;
  // Two sets of workers, and of TSan fibers (one a warp), taken by alternate blocks.
  std::vector<std::unique_ptr<Worker>> workers[2];
  std::vector<void*> tsan_warps[2];
  int set = 0;
  void* host_fiber = nullptr;          // the TSan fiber of the host thread running the block
  const char* launch_sync = nullptr;   // [0] released at launch, [1] by every finished device thread
  std::unique_ptr<char[]> block_sync;  // the block's barriers, alternating between two addresses
  std::vector<uint64_t> shuffle;  // one slot per thread
  struct Shared {
    const void* key;
    void* data;
  };
  std::vector<Shared> shared;  // the block's shared-memory variables
  size_t shared_bytes = 0;
  const std::function<void()>* body = nullptr;
  int current = -1;

  Worker& worker() { return *workers[set][static_cast<size_t>(current)]; }

  BlockRun() = default;
  BlockRun(const BlockRun&) = delete;
  BlockRun& operator=(const BlockRun&) = delete;
  ~BlockRun() {
    for (auto& fibers_of_set : tsan_warps)
      for (void* f : fibers_of_set) tsan_delete_fiber(f);
  }
};

thread_local BlockRun* tl_run = nullptr;  // set while a block runs as fibers on this thread

// From a worker back to the scheduler. (No Unwatched stays open across the switch: a worker parked
// with one open would end its thread with ThreadSanitizer's ignores on.)
void to_scheduler(BlockRun& r) {
  Worker* w = nullptr;
  void* host = nullptr;
  {
    const Unwatched unwatched;
    w = &r.worker();
    host = r.host_fiber;
    start_switch(&w->fake_stack, r.scheduler_bottom, r.scheduler_size);
  }
  tsan_switch_to(host);
  Context::swap(w->ctx, r.scheduler);
  const Unwatched unwatched;
  finish_switch(w->fake_stack, &r.scheduler_bottom, &r.scheduler_size);
}

[[noreturn]] void fiber_entry() {
  {
    const Unwatched unwatched;
    finish_switch(nullptr, &tl_run->scheduler_bottom, &tl_run->scheduler_size);
  }
  for (;;) {
    const std::function<void()>* body = nullptr;
    const char* sync = nullptr;
    {
      const Unwatched unwatched;
      body = tl_run->body;
      sync = tl_run->launch_sync;
    }
    tsan_acquire(sync);
    (*body)();
    tsan_release(sync + 1);
    {
      const Unwatched unwatched;
      tl_run->fibers[static_cast<size_t>(tl_run->current)].state = FiberState::Done;
    }
    to_scheduler(*tl_run);  // until another block needs this worker
  }
}

void wait_at(FiberState barrier) {
  BlockRun* r = tl_run;
  // What a block's threads did before a __syncthreads is ordered before what any of them does after
  // it. Successive barriers alternate between two addresses, so that a thread leaving one barrier
  // does not also acquire what faster threads did after it. A warp shuffle orders nothing.
  const char* sync = nullptr;
  {
    const Unwatched unwatched;
    if (!r || r->current < 0) fault("a barrier outside a kernel");
    Fiber& f = r->fibers[static_cast<size_t>(r->current)];
    f.state = barrier;
    if (barrier == FiberState::AtBlockBarrier) sync = &r->block_sync[++f.barriers % 2];
  }
  if (sync) tsan_release(sync);
  to_scheduler(*r);
  if (sync) tsan_acquire(sync);
}

// Static shared memory a block may use on the devices lrlab targets.
constexpr size_t kSharedLimit = size_t{48} << 10;

void free_shared(BlockRun& r) {
  for (const BlockRun::Shared& v : r.shared) std::free(v.data);
  r.shared.clear();
  r.shared_bytes = 0;
}

void run_block_fibers(BlockRun& r, const dim3& block, const void* kernel, bool reverse, int set) {
  struct FreeShared {
    BlockRun& r;
    ~FreeShared() { free_shared(r); }
  } free_at_end{r};
  const size_t n = static_cast<size_t>(block.x) * block.y * block.z;
  r.fibers.resize(n);
  r.shuffle.assign(n, 0);
  r.set = set;
  r.host_fiber = tsan_current();
  r.block_sync.reset(new char[2]);  // new addresses: nothing of the previous block's barriers
  auto& workers = r.workers[set];
  for (size_t i = 0; i < n; ++i) {
    Fiber& f = r.fibers[i];
    f.idx = {static_cast<unsigned>(i % block.x), static_cast<unsigned>(i / block.x % block.y),
             static_cast<unsigned>(i / (block.x * block.y))};
    f.state = FiberState::Ready;
    f.barriers = 0;
  }
  // The threads released by a barrier resume in the opposite order each time, so that code that
  // relies on some thread getting ahead of another (a missing barrier) sees both outcomes.
  for (;;) {
    for (size_t j = 0; j < n; ++j) {
      const size_t i = reverse ? n - 1 - j : j;
      if (r.fibers[i].state != FiberState::Ready) continue;
      r.current = static_cast<int>(i);
      threadIdx = r.fibers[i].idx;
      Worker& w = *workers[i];
      start_switch(&r.scheduler_fake_stack, w.stack.bottom(), kFiberStack);
      tsan_switch_to(r.tsan_warps[set][i / 32]);
      Context::swap(r.scheduler, w.ctx);
      finish_switch(r.scheduler_fake_stack, nullptr, nullptr);
    }
    r.current = -1;
    bool released = false, all_done = true;
    // A warp's shuffle completes when every lane of it that has not exited has reached it; a lane
    // that exited cannot take part in a full-mask shuffle.
    for (size_t w = 0; w < n; w += 32) {
      const size_t end = std::min(n, w + 32);
      size_t waiting = 0, done = 0;
      for (size_t i = w; i < end; ++i) {
        waiting += r.fibers[i].state == FiberState::AtWarpBarrier;
        done += r.fibers[i].state == FiberState::Done;
      }
      if (waiting == 0) continue;
      if (done > 0) fault("a warp shuffle with a full mask after some lanes of the warp exited", kernel);
      if (waiting == end - w) {
        for (size_t i = w; i < end; ++i) r.fibers[i].state = FiberState::Ready;
        released = true;
      }
    }
    size_t at_block = 0, live = 0;
    for (const Fiber& f : r.fibers) {
      if (f.state != FiberState::Done) ++live, all_done = false;
      at_block += f.state == FiberState::AtBlockBarrier;
    }
    if (all_done) return;
    // CUDA requires every thread of the block to reach a __syncthreads; one that returned early
    // leaves the others waiting on hardware that happens to count it, or hanging.
    if (at_block > 0 && at_block == live && live < n)
      fault("a __syncthreads that threads which already returned do not reach", kernel);
    if (!released && at_block == live) {
      for (Fiber& f : r.fibers)
        if (f.state == FiberState::AtBlockBarrier) f.state = FiberState::Ready;
      released = true;
    }
    reverse = !reverse;
    if (!released)
      fault("the threads of a block wait at different barriers (a __syncthreads or shuffle not reached by all)",
            kernel);
  }
}

std::string kernel_name(const void* kernel) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%p", kernel);
  return buf;
}

void blas_check_operand(const float* p, int rows, int cols, int ld, long long stride, int count, const char* what) {
  if (rows == 0 || cols == 0 || count == 0) return;
  const size_t span = (static_cast<size_t>(count - 1) * static_cast<size_t>(stride) +
                       static_cast<size_t>(cols - 1) * static_cast<size_t>(ld) + static_cast<size_t>(rows)) *
                      sizeof(float);
  if (!in_allocation(p, span)) {
    std::string msg = std::string("cuBLAS operand ") + what + " reaches outside its device allocation";
    fault(msg.c_str());
  }
}

}  // namespace

[[noreturn]] void fault(const char* what, const void* kernel) {
  std::fprintf(stderr, "lrlab device emulator: %s%s%s\n", what, kernel ? " (kernel at " : "",
               kernel ? (kernel_name(kernel) + ")").c_str() : "");
  std::fflush(stderr);
  std::abort();
}

bool is_device_range(const void* p, size_t bytes) { return p && in_allocation(p, bytes); }

void check_kernel_pointer(const void* p, size_t argument) {
  if (!p || in_allocation(p, 0)) return;
  const std::string msg = "kernel argument " + std::to_string(argument) + " is not device memory";
  fault(msg.c_str());
}

namespace {

// Queues work on the stream (or records it, while the stream captures). `counter` counts it for
// counters(); `index`, when given, receives how many items of the stream must finish for it to be done.
cudaError_t enqueue(cudaStream_t stream, std::function<void()> work, long long Counters::*counter,
                    uint64_t* index = nullptr) {
  LRLAB_EMU_NEEDS_DEVICE();
  const std::shared_ptr<Stream> s = owner(stream);
  if (s->capturing) {
    if (tl_capture_items_left >= 0 && tl_capture_items_left-- == 0) s->invalidated = true;
    // After a capture is invalidated, the stream refuses work until the capture ends.
    if (s->invalidated) return fail(cudaErrorStreamCaptureInvalidated);
    std::lock_guard<std::mutex> lock(s->record);
    s->captured.push_back(std::move(work));
    return cudaSuccess;
  }
  Item item{std::move(work), {}};
  if (s == legacy_stream) {
    // The legacy stream synchronises with every blocking stream: work for it while a blocking
    // stream captures would join the capture implicitly, which CUDA refuses (and invalidates the
    // capture).
    {
      std::lock_guard<std::mutex> lock(capture_mutex);
      bool implicit = false;
      for (Stream* c : active_captures)
        if (!(c->flags & cudaStreamNonBlocking)) {
          c->invalidated = true;
          implicit = true;
        }
      if (implicit) return fail(cudaErrorStreamCaptureImplicit);
    }
    // It starts after the work already submitted to blocking streams...
    std::lock_guard<std::mutex> lock(streams_mutex);
    for (const auto& entry : live_streams)
      if (!(entry.second->flags & cudaStreamNonBlocking))
        item.after.emplace_back(entry.second, entry.second->submitted);
  } else if (!(s->flags & cudaStreamNonBlocking)) {
    // ... and work for a blocking stream starts after the legacy stream's.
    item.after.emplace_back(legacy_stream, legacy_stream->submitted);
  }
  ++(tl_counters.*counter);
  uint64_t n = 0;
  {
    std::lock_guard<std::mutex> lock(s->queue);
    s->pending.push_back(std::move(item));
    n = ++s->submitted;
  }
  if (index) *index = n;
  if (eager()) drain(*s, n);
  return cudaSuccess;
}

}  // namespace

cudaError_t submit(cudaStream_t stream, std::function<void()> work) {
  return enqueue(stream, std::move(work), &Counters::direct_work);
}

void invalidate_capture(cudaStream_t stream) {
  Stream* s = resolve(stream);
  if (s->capturing) s->invalidated = true;
}

Counters counters() { return tl_counters; }

void fail_graph_instantiations(int count) { tl_failing_instantiations = count; }

void fail_capture_at(int item) { tl_capture_items_left = item; }

bool check_launch(dim3 grid, dim3 block) {
  const unsigned long long threads = static_cast<unsigned long long>(block.x) * block.y * block.z;
  const bool ok = grid.x >= 1 && grid.y >= 1 && grid.z >= 1 && grid.x <= 2147483647u && grid.y <= 65535 &&
                  grid.z <= 65535 && block.x >= 1 && block.y >= 1 && block.z >= 1 && block.x <= 1024 &&
                  block.y <= 1024 && block.z <= 64 && threads <= 1024;
  if (!ok) fail(cudaErrorInvalidConfiguration);
  return ok;
}

void run_grid(const void* kernel, dim3 grid, dim3 block, const std::function<void()>& thread) {
  // Every block runs its threads as fibers, whether or not the kernel synchronises them: a kernel
  // cannot be told not to. Successive launches take the blocks in opposite orders, and each block
  // starts its threads in an order of its own, so that code relying on one block or thread running
  // before another meets both orders.
  const Unwatched unwatched;
  thread_local unsigned long long launches = 0;
  const bool backwards = launches++ % 2 == 1;
  gridDim = grid;
  blockDim = block;
  thread_local BlockRun run;
  // New addresses for each launch: the device threads start after what the host thread did before
  // (which includes what the stream ran before), and the host continues after all of them.
  const std::unique_ptr<char[]> launch_sync(new char[2]);
  run.launch_sync = launch_sync.get();
  tsan_release(run.launch_sync);
  // Which blocks share a set of fibers (and so look ordered to TSan) changes from launch to launch:
  // the set is bit `bit` of the block's place in the run, `bit` cycling through the bits that tell
  // the blocks apart. Any two blocks of a kernel launched that many times are apart in some launch.
  const unsigned long long blocks = static_cast<unsigned long long>(grid.x) * grid.y * grid.z;
  unsigned bits = 1;
  while (bits < 63 && (1ull << bits) < blocks) ++bits;
  const unsigned bit = static_cast<unsigned>(launches % bits);
  // TSan fibers are made before any block runs: a new one starts after what its creator did, and
  // one made between blocks would look ordered after the blocks before it.
  const size_t threads = static_cast<size_t>(block.x) * block.y * block.z;
  for (int set = 0; set < 2; ++set) {
    auto& workers = run.workers[set];
    while (workers.size() < threads) {
      workers.push_back(std::make_unique<Worker>());
      workers.back()->ctx.make(workers.back()->stack.bottom(), kFiberStack, fiber_entry);
    }
    while (run.tsan_warps[set].size() < (threads + 31) / 32) run.tsan_warps[set].push_back(tsan_new_fiber());
  }
  for (unsigned long long j = 0; j < blocks; ++j) {
    const unsigned long long b = backwards ? blocks - 1 - j : j;
    blockIdx = {static_cast<unsigned>(b % grid.x), static_cast<unsigned>(b / grid.x % grid.y),
                static_cast<unsigned>(b / (static_cast<unsigned long long>(grid.x) * grid.y))};
    run.body = &thread;
    BlockRun* outer = tl_run;
    tl_run = &run;
    run_block_fibers(run, block, kernel, (b + launches) % 2 == 1, static_cast<int>((j >> bit) & 1));
    tl_run = outer;
  }
  tsan_acquire(run.launch_sync + 1);
}

void* shared_storage(const void* key, size_t bytes, size_t align) {
  const Unwatched unwatched;  // the storage's NaN fill is no thread's write
  BlockRun* r = tl_run;
  if (!r || r->current < 0) fault("shared memory used outside a kernel");
  for (const BlockRun::Shared& v : r->shared)
    if (v.key == key) return v.data;
  align = std::max<size_t>(align, 16);
  r->shared_bytes += round_up(bytes, align);
  if (r->shared_bytes > kSharedLimit) fault("a block's static shared memory exceeds 48 KiB");
  void* p = nullptr;  // exactly the bytes of the variable, so that ASan reports any access past them
  if (posix_memalign(&p, align, bytes) != 0) fault("cannot allocate a block's shared memory");
  std::memset(p, 0xFF, bytes);
  r->shared.push_back({key, p});
  return p;
}

void warp_shuffle_down(void* value, size_t size, unsigned delta, unsigned mask) {
  if (mask != 0xffffffffu) fault("a warp shuffle with a partial mask (the emulator models full warps only)");
  BlockRun* r = tl_run;
  if (!r || r->current < 0) fault("a warp shuffle outside a kernel");
  const size_t me = static_cast<size_t>(r->current);
  uint64_t mine = 0, theirs = 0;
  std::memcpy(&mine, value, size);  // the fiber's own value: watched as the kernel's
  {
    const Unwatched unwatched;
    r->shuffle[me] = mine;
  }
  wait_at(FiberState::AtWarpBarrier);
  const size_t lane = me % 32, n = r->fibers.size();
  const bool from_other = lane + delta < 32 && me + delta < n;
  if (from_other) {
    const Unwatched unwatched;
    theirs = r->shuffle[me + delta];
  }
  if (from_other) std::memcpy(value, &theirs, size);
  wait_at(FiberState::AtWarpBarrier);  // no lane overwrites its slot before all have read
}

}  // namespace lrlab_emu

using namespace lrlab_emu;

void __syncthreads() { lrlab_emu::wait_at(lrlab_emu::FiberState::AtBlockBarrier); }

// ---- Runtime API.
cudaError_t cudaGetDeviceCount(int* count) {
  if (!count) return fail(cudaErrorInvalidValue);
  *count = 0;
  LRLAB_EMU_NEEDS_DEVICE();
  *count = 1;
  return cudaSuccess;
}
// The emulated device behaves as CUDA 12.4 on a driver that supports it.
cudaError_t cudaDriverGetVersion(int* version) {
  if (!version) return fail(cudaErrorInvalidValue);
  *version = 12040;
  return cudaSuccess;
}
cudaError_t cudaRuntimeGetVersion(int* version) {
  if (!version) return fail(cudaErrorInvalidValue);
  *version = 12040;
  return cudaSuccess;
}
cudaError_t cudaGetDevice(int* device) {
  if (!device) return fail(cudaErrorInvalidValue);
  LRLAB_EMU_NEEDS_DEVICE();
  *device = 0;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) {
  LRLAB_EMU_NEEDS_DEVICE();
  return device == 0 ? cudaSuccess : fail(cudaErrorInvalidDevice);
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
  if (!prop) return fail(cudaErrorInvalidValue);
  LRLAB_EMU_NEEDS_DEVICE();
  if (device != 0) return fail(cudaErrorInvalidDevice);
  *prop = cudaDeviceProp{};
  std::snprintf(prop->name, sizeof prop->name, "lrlab device emulator");
  prop->totalGlobalMem = emulated_memory();
  prop->multiProcessorCount = emulated_sms();
  prop->major = 9;
  prop->minor = 0;
  prop->l2CacheSize = 4 << 20;
  prop->warpSize = 32;
  prop->maxThreadsPerBlock = 1024;
  const char uuid[] = "lrlab emulator 0";  // 16 bytes, as a real device's are nonzero
  std::memcpy(prop->uuid.bytes, uuid, sizeof prop->uuid.bytes);
  return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  if (!value) return fail(cudaErrorInvalidValue);
  LRLAB_EMU_NEEDS_DEVICE();
  if (device != 0) return fail(cudaErrorInvalidDevice);
  switch (attr) {
    case cudaDevAttrMultiProcessorCount: *value = emulated_sms(); return cudaSuccess;
    case cudaDevAttrL2CacheSize: *value = 4 << 20; return cudaSuccess;
  }
  return fail(cudaErrorInvalidValue);
}
cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* blocks, const void* kernel, int block_size,
                                                         size_t dynamic_shared_bytes) {
  if (!blocks || !kernel) return fail(cudaErrorInvalidValue);
  LRLAB_EMU_NEEDS_DEVICE();
  if (block_size < 1 || block_size > 1024 || dynamic_shared_bytes > 0) return fail(cudaErrorInvalidValue);
  // No registers to count: a multiprocessor holds 2048 threads, as a kernel of at most 32
  // registers per thread would have it.
  *blocks = 2048 / block_size;
  return cudaSuccess;
}
cudaError_t cudaGetLastError() {
  const cudaError_t e = tl_last_error;
  tl_last_error = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError() { return tl_last_error; }

const char* cudaGetErrorName(cudaError_t err) {
  switch (err) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInsufficientDriver: return "cudaErrorInsufficientDriver";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorNotReady: return "cudaErrorNotReady";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    case cudaErrorIllegalState: return "cudaErrorIllegalState";
    case cudaErrorStreamCaptureUnsupported: return "cudaErrorStreamCaptureUnsupported";
    case cudaErrorStreamCaptureInvalidated: return "cudaErrorStreamCaptureInvalidated";
    case cudaErrorStreamCaptureWrongThread: return "cudaErrorStreamCaptureWrongThread";
    case cudaErrorStreamCaptureImplicit: return "cudaErrorStreamCaptureImplicit";
  }
  return "cudaErrorUnknown";
}
const char* cudaGetErrorString(cudaError_t err) {
  switch (err) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInsufficientDriver: return "CUDA driver version is insufficient for CUDA runtime version";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorNotReady: return "device not ready";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    case cudaErrorIllegalState: return "operation not permitted in the current state";
    case cudaErrorStreamCaptureUnsupported: return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureInvalidated: return "operation failed due to a previous error during capture";
    case cudaErrorStreamCaptureWrongThread: return "attempt to terminate a thread-local capture sequence from another thread";
    case cudaErrorStreamCaptureImplicit: return "operation would make the legacy stream depend on a capturing blocking stream";
  }
  return "unknown error";
}

cudaError_t cudaMalloc(void** ptr, size_t bytes) {
  if (!ptr) return fail(cudaErrorInvalidValue);
  *ptr = nullptr;
  LRLAB_EMU_NEEDS_DEVICE();
  if (capture_forbids()) return fail(cudaErrorStreamCaptureUnsupported);
  if (bytes == 0) return cudaSuccess;
  Arena& a = arena();
  const size_t rounded = round_up(bytes, kAlign);
  char* p = nullptr;
  {
    std::lock_guard<std::mutex> lock(mem_mutex);
    if (rounded > emulated_memory() - allocated) return fail(cudaErrorMemoryAllocation);
    const std::optional<size_t> at = arena_take(a, rounded + kRedzone);
    if (!at) return fail(cudaErrorMemoryAllocation);
    allocated += rounded;
    p = a.base + *at;
    // Exactly the bytes asked for are addressable, so that ASan reports any access past them.
    ASAN_UNPOISON_MEMORY_REGION(p, bytes);
    ASAN_POISON_MEMORY_REGION(p + bytes, rounded + kRedzone - bytes);
    allocations[reinterpret_cast<uintptr_t>(p)] = bytes;
  }
  if (bytes <= kPoisonLimit) {
    const DeviceAccess access;
    std::memset(p, 0xFF, bytes);
  }
  *ptr = p;
  return cudaSuccess;
}

cudaError_t cudaFree(void* ptr) {
  LRLAB_EMU_NEEDS_DEVICE();
  if (capture_forbids()) return fail(cudaErrorStreamCaptureUnsupported);
  if (!ptr) return cudaSuccess;
  wait_for_device();  // freeing synchronises the device, so no queued work still uses the memory
  Arena& a = arena();
  std::lock_guard<std::mutex> lock(mem_mutex);
  auto it = allocations.find(reinterpret_cast<uintptr_t>(ptr));
  if (it == allocations.end()) return fail(cudaErrorInvalidValue);
  const size_t rounded = round_up(it->second, kAlign), span = rounded + kRedzone;
  allocated -= rounded;
  allocations.erase(it);
  char* p = static_cast<char*>(ptr);
  ASAN_POISON_MEMORY_REGION(p, span);
  // Give large blocks' pages back to the system; the next use of them starts from zeros.
  const uintptr_t page = 4096, first = (reinterpret_cast<uintptr_t>(p) + page - 1) / page * page,
                  last = (reinterpret_cast<uintptr_t>(p) + span) / page * page;
  if (last > first + (size_t{1} << 20)) madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
  arena_give(a, static_cast<size_t>(p - a.base), span);
  return cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  if (!free_bytes || !total_bytes) return fail(cudaErrorInvalidValue);
  LRLAB_EMU_NEEDS_DEVICE();
  std::lock_guard<std::mutex> lock(mem_mutex);
  *total_bytes = emulated_memory();
  *free_bytes = emulated_memory() - allocated;
  return cudaSuccess;
}

namespace {

// The runtime refuses a copy whose kind contradicts where its pointers lie, or that runs past the
// end of a device allocation.
bool copy_ok(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  auto side_ok = [&](const void* p, bool device) {
    return device ? in_allocation(p, bytes) : !touches_device(p, bytes);
  };
  switch (kind) {
    case cudaMemcpyHostToHost: return side_ok(dst, false) && side_ok(src, false);
    case cudaMemcpyHostToDevice: return side_ok(dst, true) && side_ok(src, false);
    case cudaMemcpyDeviceToHost: return side_ok(dst, false) && side_ok(src, true);
    case cudaMemcpyDeviceToDevice: return side_ok(dst, true) && side_ok(src, true);
    case cudaMemcpyDefault:
      return (in_allocation(dst, bytes) || !touches_device(dst, bytes)) &&
             (in_allocation(src, bytes) || !touches_device(src, bytes));
  }
  return false;
}

}  // namespace

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t stream) {
  LRLAB_EMU_NEEDS_DEVICE();
  if (bytes == 0) return cudaSuccess;
  if (!dst || !src || !copy_ok(dst, src, bytes, kind)) return fail(cudaErrorInvalidValue);
  Stream* s = resolve(stream);
  const bool from_host = !in_allocation(src, bytes), to_host = !in_allocation(dst, bytes);
  // All host memory here is pageable: a graph cannot hold a copy to or from it, and the copy would
  // have to synchronise, so CUDA refuses it during capture.
  if ((from_host || to_host) && s->capturing) {
    s->invalidated = true;
    return fail(cudaErrorStreamCaptureUnsupported);
  }
  std::function<void()> work;
  if (from_host) {
    // Pageable memory is staged when the call is made: the caller may reuse it at once, and the
    // device writes what it held then.
    auto staged = std::make_shared<std::vector<unsigned char>>(static_cast<const unsigned char*>(src),
                                                               static_cast<const unsigned char*>(src) + bytes);
    work = [=]() { std::memcpy(dst, staged->data(), bytes); };
  } else {
    work = [=]() { std::memmove(dst, src, bytes); };
  }
  const cudaError_t err = submit(stream, std::move(work));
  // A copy to pageable host memory returns when it is done: the host waits for the stream.
  if (err != cudaSuccess || !to_host) return err;
  return wait_for(*s);
}

cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  LRLAB_EMU_NEEDS_DEVICE();
  if (capture_forbids()) return fail(cudaErrorStreamCaptureUnsupported);
  // From pageable host memory the copy waits for the legacy stream first (and returns once its source
  // is staged); device to device it does not wait at all; to the host it waits (in cudaMemcpyAsync).
  if (in_allocation(dst, bytes) && !in_allocation(src, bytes)) wait_for(*legacy_stream);
  return cudaMemcpyAsync(dst, src, bytes, kind, nullptr);
}

cudaError_t cudaMemsetAsync(void* ptr, int value, size_t bytes, cudaStream_t stream) {
  LRLAB_EMU_NEEDS_DEVICE();
  if (bytes == 0) return cudaSuccess;
  if (!in_allocation(ptr, bytes)) return fail(cudaErrorInvalidValue);
  return submit(stream, [=]() { std::memset(ptr, value, bytes); });
}

cudaError_t cudaMemset(void* ptr, int value, size_t bytes) {
  if (capture_forbids()) return fail(cudaErrorStreamCaptureUnsupported);
  return cudaMemsetAsync(ptr, value, bytes, nullptr);
}

cudaError_t cudaDeviceSynchronize() {
  LRLAB_EMU_NEEDS_DEVICE();
  // It would wait for every stream, a capturing one included: refused in every capture mode.
  {
    std::lock_guard<std::mutex> lock(capture_mutex);
    for (Stream* s : active_captures) s->invalidated = true;
    if (!active_captures.empty()) return fail(cudaErrorStreamCaptureUnsupported);
  }
  return wait_for_device();
}

cudaError_t cudaStreamCreate(cudaStream_t* stream) { return cudaStreamCreateWithFlags(stream, cudaStreamDefault); }
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned flags) {
  if (!stream) return fail(cudaErrorInvalidValue);
  LRLAB_EMU_NEEDS_DEVICE();
  auto s = std::make_shared<Stream>();
  s->flags = flags;
  *stream = s.get();
  std::lock_guard<std::mutex> lock(streams_mutex);
  live_streams.emplace(s.get(), std::move(s));
  return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  LRLAB_EMU_NEEDS_DEVICE();
  if (!stream) return fail(cudaErrorInvalidResourceHandle);
  const std::shared_ptr<Stream> s = owner(stream);
  if (s->capturing) return fail(cudaErrorIllegalState);
  // CUDA returns at once and finishes the stream's work on its own; finishing it now is one of the
  // orders that allows. It stays among the live streams until then, so that a device-wide wait on
  // another thread (cudaFree) still waits for it.
  drain(*s, s->submitted);
  std::lock_guard<std::mutex> lock(streams_mutex);
  live_streams.erase(stream);
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  LRLAB_EMU_NEEDS_DEVICE();
  Stream* s = resolve(stream);
  if (s->capturing) {
    s->invalidated = true;
    return fail(cudaErrorStreamCaptureUnsupported);
  }
  return capture_forbids() ? fail(cudaErrorStreamCaptureUnsupported) : wait_for(*s);
}

cudaError_t cudaStreamBeginCapture(cudaStream_t stream, cudaStreamCaptureMode mode) {
  LRLAB_EMU_NEEDS_DEVICE();
  if (!stream) return fail(cudaErrorStreamCaptureUnsupported);  // the legacy stream cannot capture
  if (resolve(stream)->capturing) return fail(cudaErrorIllegalState);
  {
    std::lock_guard<std::mutex> lock(stream->record);
    stream->invalidated = false;
    stream->mode = mode;
    stream->capturer = std::this_thread::get_id();
    stream->captured.clear();
  }
  stream->capturing = true;  // last: other threads' work is recorded from here on
  std::lock_guard<std::mutex> lock(capture_mutex);
  active_captures.push_back(stream);
  return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t* graph) {
  LRLAB_EMU_NEEDS_DEVICE();
  if (!stream || !graph) return fail(cudaErrorInvalidValue);
  if (!resolve(stream)->capturing) return fail(cudaErrorIllegalState);
  if (stream->mode != cudaStreamCaptureModeRelaxed && stream->capturer != std::this_thread::get_id())
    return fail(cudaErrorStreamCaptureWrongThread);
  {
    std::lock_guard<std::mutex> lock(capture_mutex);
    active_captures.erase(std::find(active_captures.begin(), active_captures.end(), stream));
  }
  stream->capturing = false;
  *graph = nullptr;
  std::vector<std::function<void()>> work;
  {
    std::lock_guard<std::mutex> lock(stream->record);
    work = std::move(stream->captured);
    stream->captured.clear();
  }
  if (stream->invalidated) return fail(cudaErrorStreamCaptureInvalidated);
  *graph = new Graph{std::make_shared<const std::vector<std::function<void()>>>(std::move(work))};
  return cudaSuccess;
}

cudaError_t cudaStreamIsCapturing(cudaStream_t stream, cudaStreamCaptureStatus* status) {
  LRLAB_EMU_NEEDS_DEVICE();
  if (!status) return fail(cudaErrorInvalidValue);
  Stream* s = resolve(stream);
  *status = !s->capturing ? cudaStreamCaptureStatusNone
                          : s->invalidated ? cudaStreamCaptureStatusInvalidated : cudaStreamCaptureStatusActive;
  return cudaSuccess;
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long) {
  LRLAB_EMU_NEEDS_DEVICE();
  if (!exec || !graph) return fail(cudaErrorInvalidValue);
  if (lrlab_emu::tl_failing_instantiations > 0) {
    --lrlab_emu::tl_failing_instantiations;
    *exec = lrlab_emu::kNotAGraph;
    return fail(cudaErrorMemoryAllocation);
  }
  *exec = new Graph{graph->work};
  return cudaSuccess;
}
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream) {
  LRLAB_EMU_NEEDS_DEVICE();
  if (!exec) return fail(cudaErrorInvalidValue);
  if (exec == lrlab_emu::kNotAGraph) lrlab_emu::fault("cudaGraphLaunch of the handle a failed cudaGraphInstantiate left");
  auto work = exec->work;
  return enqueue(
      stream,
      [work]() {
        for (const auto& w : *work) w();
      },
      &Counters::graph_launches);
}
cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
  LRLAB_EMU_NEEDS_DEVICE();
  delete graph;
  return cudaSuccess;
}
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
  LRLAB_EMU_NEEDS_DEVICE();
  delete exec;
  return cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t* event) {
  if (!event) return fail(cudaErrorInvalidValue);
  LRLAB_EMU_NEEDS_DEVICE();
  *event = new Event;
  return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t event) {
  LRLAB_EMU_NEEDS_DEVICE();
  delete event;  // a record still queued keeps its mark
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
  LRLAB_EMU_NEEDS_DEVICE();
  if (!event) return fail(cudaErrorInvalidResourceHandle);
  const std::shared_ptr<Stream> s = owner(stream);
  auto mark = std::make_shared<EventMark>();
  uint64_t index = 0;
  const cudaError_t err = enqueue(
      stream,
      [mark]() {
        mark->at = std::chrono::steady_clock::now();
        mark->reached = true;
      },
      &Counters::direct_work, &index);
  if (err != cudaSuccess) return err;
  if (index) {  // queued rather than captured
    mark->stream = s;
    mark->item = index;
  }
  event->mark = std::move(mark);
  return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t event) {
  LRLAB_EMU_NEEDS_DEVICE();
  if (!event) return fail(cudaErrorInvalidResourceHandle);
  if (capture_forbids()) return fail(cudaErrorStreamCaptureUnsupported);
  ++tl_counters.host_waits;
  const std::shared_ptr<EventMark> mark = event->mark;
  if (mark->stream) drain(*mark->stream, mark->item);
  return cudaSuccess;
}
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  LRLAB_EMU_NEEDS_DEVICE();
  if (!ms || !start || !end) return fail(cudaErrorInvalidValue);
  const EventMark &a = *start->mark, &b = *end->mark;
  if (!a.reached || !b.reached) return fail(cudaErrorNotReady);
  *ms = std::chrono::duration<float, std::milli>(b.at - a.at).count();
  return cudaSuccess;
}

// ---- cuBLAS.
cublasStatus_t cublasCreate(cublasHandle_t* handle) {
  if (!handle) return CUBLAS_STATUS_INVALID_VALUE;
  if (device_hidden()) return CUBLAS_STATUS_NOT_INITIALIZED;
  *handle = new Blas;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDestroy(cublasHandle_t handle) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream(cublasHandle_t handle, cudaStream_t stream) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  handle->stream = stream;
  handle->workspace = false;  // as cuBLAS does: back to its own pool
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetWorkspace(cublasHandle_t handle, void* workspace, size_t bytes) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (bytes && !is_device_range(workspace, bytes)) return CUBLAS_STATUS_INVALID_VALUE;
  handle->workspace = bytes > 0;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetPointerMode(cublasHandle_t handle, cublasPointerMode_t mode) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  // Scalars are read on the host; device-side scalars are not emulated.
  return mode == CUBLAS_POINTER_MODE_HOST ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_INVALID_VALUE;
}
cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t) {
  // TF32 is not emulated: GEMMs stay in fp32.
  return handle ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_NOT_INITIALIZED;
}
const char* cublasGetStatusName(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
  }
  return "CUBLAS_STATUS_UNKNOWN";
}
const char* cublasGetStatusString(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS: return "success";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "the library was not initialized";
    case CUBLAS_STATUS_ALLOC_FAILED: return "the resource allocation failed";
    case CUBLAS_STATUS_INVALID_VALUE: return "an invalid numeric value was used as an argument";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "the GPU program failed to execute";
  }
  return "unknown status";
}

cublasStatus_t cublasSgemmStridedBatched(cublasHandle_t handle, cublasOperation_t transa,
                                         cublasOperation_t transb, int m, int n, int k, const float* alpha,
                                         const float* A, int lda, long long strideA, const float* B, int ldb,
                                         long long strideB, const float* beta, float* C, int ldc,
                                         long long strideC, int batchCount) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  const int a_rows = transa == CUBLAS_OP_N ? m : k, b_rows = transb == CUBLAS_OP_N ? k : n;
  // cuBLAS's own argument checks.
  if (m < 0 || n < 0 || k < 0 || batchCount < 0 || lda < std::max(1, a_rows) || ldb < std::max(1, b_rows) ||
      ldc < std::max(1, m) || !alpha || !beta)
    return CUBLAS_STATUS_INVALID_VALUE;
  if (m == 0 || n == 0 || batchCount == 0) return CUBLAS_STATUS_SUCCESS;
  if (k > 0) {
    blas_check_operand(A, a_rows, transa == CUBLAS_OP_N ? k : m, lda, strideA, batchCount, "A");
    blas_check_operand(B, b_rows, transb == CUBLAS_OP_N ? n : k, ldb, strideB, batchCount, "B");
  }
  blas_check_operand(C, m, n, ldc, strideC, batchCount, "C");
  // cuBLAS computes the batch entries concurrently: their outputs must not overlap.
  if (batchCount > 1 && static_cast<unsigned long long>(strideC < 0 ? -strideC : strideC) <
                            static_cast<unsigned long long>(ldc) * (n - 1) + m)
    fault("cublasSgemmStridedBatched: the outputs of its batch entries overlap");
  // Without a workspace of its own, a handle allocates from cuBLAS's pool, which a graph being
  // captured cannot do safely; lrlab gives every handle one (after cublasSetStream, which resets it).
  if (resolve(handle->stream)->capturing && !handle->workspace)
    fault("a cuBLAS GEMM captured into a graph by a handle without a workspace of its own");
  const float al = *alpha, be = *beta;
  const CBLAS_TRANSPOSE ta = transa == CUBLAS_OP_N ? CblasNoTrans : CblasTrans;
  const CBLAS_TRANSPOSE tb = transb == CUBLAS_OP_N ? CblasNoTrans : CblasTrans;
  const cudaError_t err = submit(handle->stream, [=]() {
    for (int i = 0; i < batchCount; ++i)
      cblas_sgemm(CblasColMajor, ta, tb, m, n, k, al, A + i * strideA, lda, B + i * strideB, ldb, be,
                  C + i * strideC, ldc);
  });
  return err == cudaSuccess ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_EXECUTION_FAILED;
}

cublasStatus_t cublasSgemm(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m,
                           int n, int k, const float* alpha, const float* A, int lda, const float* B, int ldb,
                           const float* beta, float* C, int ldc) {
  return cublasSgemmStridedBatched(handle, transa, transb, m, n, k, alpha, A, lda, 0, B, ldb, 0, beta, C, ldc, 0,
                                   1);
}
