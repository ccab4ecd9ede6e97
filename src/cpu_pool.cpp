#include "cpu_pool.hpp"

#include <omp.h>
#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

#include "lrlab/error.hpp"

namespace lrlab::detail {
namespace {

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// How long an idle helper watches for the next job before it sleeps. The CPU backend's jobs come
// a few per training step, tens to hundreds of microseconds apart; waking a sleeping thread costs
// about as much as a short job.
constexpr auto kHelperSpin = std::chrono::microseconds(200);

// Forks of this process so far, counted in the child. A pool made before the last fork belongs to
// the parent: its helpers are not in this process, and a helper may have held its lock at the fork.
// (A process id cannot tell: a grandchild can be given its grandparent's.)
std::atomic<uint64_t> g_forks{0};

// Set on a thread while it runs items: a call from inside an item must not start a job on the pool
// that is running it. Trivially destructible, so still readable while the thread's pool is destroyed.
thread_local bool t_in_items = false;
thread_local bool t_pool_gone = false;

// OpenMP's thread count for this thread at 1 for a scope, then back.
class OmpThreadsOne {
 public:
  OmpThreadsOne() : saved_(omp_get_max_threads()) {
    if (saved_ != 1) omp_set_num_threads(1);
  }
  ~OmpThreadsOne() {
    if (saved_ != 1) omp_set_num_threads(saved_);
  }
  OmpThreadsOne(const OmpThreadsOne&) = delete;
  OmpThreadsOne& operator=(const OmpThreadsOne&) = delete;

 private:
  int saved_;
};

void run_serially(int64_t items, const ItemFn& fn) {
  const bool outer = !t_in_items;
  t_in_items = true;
  try {
    for (int64_t i = 0; i < items; ++i) fn(i);
  } catch (...) {
    t_in_items = !outer;
    throw;
  }
  t_in_items = !outer;
}

// One calling thread's helpers and the job they share. A job's items are claimed through `ticket_`,
// which holds the job's generation next to the next unclaimed item, so a helper still holding an
// earlier job can never claim an item of a later one.
class Pool {
 public:
  Pool() : forks_(g_forks.load()) {}
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;

  ~Pool() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    wake_.notify_all();
    for (std::thread& t : helpers_) t.join();
  }

  // False in a process forked after the pool was made.
  bool usable() const { return forks_ == g_forks.load(); }

  void run(int64_t items, int64_t threads, ItemFn fn) {
    const int helpers = start_helpers(static_cast<int>(std::min<int64_t>(threads - 1, items - 1)));
    uint32_t gen;
    bool sleeping;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      gen = ++gen_;
      items_ = items;
      fn_ = &fn;
      wanted_ = helpers;
      error_ = nullptr;
      failed_.store(false, std::memory_order_relaxed);
      done_.store(0, std::memory_order_relaxed);
      ticket_.store(static_cast<uint64_t>(gen) << 32, std::memory_order_release);
      sleeping = sleepers_ > 0;
    }
    if (sleeping) wake_.notify_all();
    work(gen, items, fn);
    // Only items a helper has claimed are left, each already running.
    for (int spins = 0; done_.load(std::memory_order_acquire) < items;) {
      if (spins < 4096) {
        ++spins;
        cpu_relax();
      } else {
        std::this_thread::yield();
      }
    }
    // failed_ is set before its item counts as done, so the acquire above has seen it: the lock is
    // only taken after a failure.
    if (failed_.load(std::memory_order_relaxed)) {
      std::exception_ptr error;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        error = std::exchange(error_, nullptr);
      }
      std::rethrow_exception(error);
    }
  }

 private:
  // Starts helpers up to n; returns how many there are, fewer where the system refuses a thread.
  int start_helpers(int n) {
    while (static_cast<int>(helpers_.size()) < n) {
      const int index = static_cast<int>(helpers_.size());
      try {
        helpers_.emplace_back([this, index] { helper_main(index); });
      } catch (const std::system_error&) {
        break;
      }
    }
    return std::min(n, static_cast<int>(helpers_.size()));
  }

  // Claims and runs items of job `gen` until none is left.
  void work(uint32_t gen, int64_t items, const ItemFn& fn) {
    const OmpThreadsOne one;
    t_in_items = true;
    uint64_t t = ticket_.load(std::memory_order_acquire);
    while ((t >> 32) == gen && static_cast<int64_t>(t & 0xffffffffu) < items) {
      if (!ticket_.compare_exchange_weak(t, t + 1, std::memory_order_acq_rel, std::memory_order_acquire)) continue;
      if (!failed_.load(std::memory_order_relaxed)) {
        try {
          fn(static_cast<int64_t>(t & 0xffffffffu));
        } catch (...) {
          std::lock_guard<std::mutex> lock(mutex_);
          if (!error_) error_ = std::current_exception();
          failed_.store(true, std::memory_order_relaxed);
        }
      }
      done_.fetch_add(1, std::memory_order_acq_rel);
      t = ticket_.load(std::memory_order_acquire);
    }
    t_in_items = false;
  }

  void helper_main(int index) {
    uint32_t seen = 0;
    bool mine = true;
    for (;;) {
      // Watch for a new job for a while, then sleep until one comes. A helper the last job did not
      // ask for (the caller wants fewer threads than it once did) sleeps at once.
      const auto until = std::chrono::steady_clock::now() + kHelperSpin;
      for (int spins = 0; mine && static_cast<uint32_t>(ticket_.load(std::memory_order_acquire) >> 32) == seen;
           spins = (spins + 1) & 255) {
        cpu_relax();
        if (spins == 255 && std::chrono::steady_clock::now() > until) break;
      }
      uint32_t gen;
      int64_t items;
      const ItemFn* fn;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        ++sleepers_;
        wake_.wait(lock, [&] { return stop_ || gen_ != seen; });
        --sleepers_;
        if (stop_) return;
        gen = gen_;
        items = items_;
        fn = fn_;
        mine = index < wanted_;
      }
      seen = gen;
      // A claim succeeds only while the job is unfinished, so its caller, and `fn`, are still there.
      if (mine) work(gen, items, *fn);
    }
  }

  const uint64_t forks_;
  std::vector<std::thread> helpers_;
  std::atomic<uint64_t> ticket_{0};  // generation << 32 | next unclaimed item
  std::atomic<int64_t> done_{0};     // items of the current job finished (or skipped after an error)
  std::atomic<bool> failed_{false};
  std::mutex mutex_;
  std::condition_variable wake_;
  // The current job, written by the caller under mutex_.
  uint32_t gen_ = 0;
  int64_t items_ = 0;
  const ItemFn* fn_ = nullptr;
  int wanted_ = 0;  // helpers that take part (the pool may hold more, from an earlier call)
  std::exception_ptr error_;
  int sleepers_ = 0;
  bool stop_ = false;
};

// Owns the calling thread's pool. A pool inherited through a fork is left alone: its helpers, and
// the waiters on its condition variable, exist only in the parent, so neither joining them nor
// destroying it would end. It is kept where leak checkers see it.
struct Holder {
  Pool* pool = nullptr;

  Pool& get() {
    if (pool && !pool->usable()) orphan();
    if (!pool) pool = new Pool;
    return *pool;
  }
  void orphan() {
    static auto* orphans = new std::vector<Pool*>;
    orphans->push_back(pool);
    pool = nullptr;
  }
  ~Holder() {
    t_pool_gone = true;  // a later destructor of this thread that calls parallel_items runs serially
    if (pool && pool->usable()) delete pool;
    else if (pool) orphan();
    pool = nullptr;
  }
};

}  // namespace

void parallel_items(int64_t items, int64_t threads, ItemFn fn) {
  LRLAB_REQUIRE(items >= 0 && items <= 0x7fffffff, "parallel_items: ", items, " items is outside [0, 2^31)");
  static const bool fork_counted = [] {
    pthread_atfork(nullptr, nullptr, [] { g_forks.fetch_add(1); });
    return true;
  }();
  (void)fork_counted;
  if (threads <= 1 || items <= 1 || t_in_items || t_pool_gone) {
    const OmpThreadsOne one;
    run_serially(items, fn);
    return;
  }
  thread_local Holder holder;
  holder.get().run(items, threads, fn);
}

}  // namespace lrlab::detail
