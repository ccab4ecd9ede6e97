// The CPU backend's parallel loops (src/cpu_pool.hpp), and how many threads the CPU work takes.
// CpuPool.* also runs under ThreadSanitizer (scripts/test_emulated_gpu.sh --thread), which sees the
// pool's synchronisation.
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <chrono>
#include <cstdlib>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include <omp.h>

#include "cli/mpi_session.hpp"
#include "cpu_pool.hpp"
#include "engine_workers.hpp"
#include "lrlab/error.hpp"
#include "test_util.hpp"

namespace {

using lrlab::detail::parallel_items;

// Each item exactly once, its result visible to the caller on return, for any number of threads
// against items: fewer, as many, more; and the calls that follow reuse the same helpers.
TEST(CpuPool, EveryItemRunsOnceAndItsWritesAreSeen) {
  for (int64_t threads : {1, 2, 3, 8})
    for (int64_t items : {0, 1, 2, 3, 7, 64, 1000}) {
      for (int round = 0; round < 3; ++round) {
        std::vector<int64_t> value(static_cast<size_t>(items), -1);
        std::vector<std::atomic<int>> runs(static_cast<size_t>(items));
        parallel_items(items, threads, [&](int64_t i) {
          runs[static_cast<size_t>(i)].fetch_add(1);
          value[static_cast<size_t>(i)] = i * i + round;  // plain writes, read by the caller
        });
        for (int64_t i = 0; i < items; ++i) {
          ASSERT_EQ(runs[static_cast<size_t>(i)].load(), 1) << threads << " threads, " << items << " items, item " << i;
          ASSERT_EQ(value[static_cast<size_t>(i)], i * i + round);
        }
      }
    }
}

// Two items on two threads that wait (up to `patience`) until both run at once: true when they
// met, which only a helper running one of them beside the caller makes possible.
bool two_threads_met(std::chrono::seconds patience) {
  std::atomic<int> inside{0}, left{0};
  std::atomic<bool> met{false};
  parallel_items(2, 2, [&](int64_t) {
    inside.fetch_add(1);
    const auto until = std::chrono::steady_clock::now() + patience;
    while (inside.load() < 2 && std::chrono::steady_clock::now() < until) std::this_thread::yield();
    // Both entered and neither has left: one thread running the two items in turn never sees that.
    if (inside.load() == 2 && left.load() == 0) met = true;
    left.fetch_add(1);
  });
  return met;
}

// Helpers take part.
TEST(CpuPool, HelpersRunItemsBesideTheCaller) {
  EXPECT_TRUE(two_threads_met(std::chrono::seconds(20))) << "no helper ran an item while the caller ran the other";
}

// A call from inside an item (on the caller or on a helper) runs its items itself: it must not
// start a job on the pool that is running the outer one.
TEST(CpuPool, ACallFromAnItemRunsItsItemsItself) {
  for (int round = 0; round < 20; ++round) {
    std::vector<std::atomic<int>> inner(8 * 6);
    std::atomic<int> outer{0};
    parallel_items(8, 3, [&](int64_t i) {
      parallel_items(6, 3, [&](int64_t j) { inner[static_cast<size_t>(i * 6 + j)].fetch_add(1); });
      outer.fetch_add(1);
    });
    ASSERT_EQ(outer.load(), 8) << "round " << round;
    for (size_t k = 0; k < inner.size(); ++k) ASSERT_EQ(inner[k].load(), 1) << "round " << round << ", item " << k;
  }
}

// Items run with OpenMP's thread count at 1 (an OpenMP build of OpenBLAS would otherwise split each
// GEMM again, over threads the pool already uses), and the caller gets its own count back.
TEST(CpuPool, ItemsRunWithOneOpenMpThread) {
  lrlab::testing::OmpThreads three(3);
  for (int64_t threads : {1, 3}) {
    std::vector<int> seen(12, 0);
    parallel_items(12, threads, [&](int64_t i) { seen[static_cast<size_t>(i)] = omp_get_max_threads(); });
    for (int v : seen) EXPECT_EQ(v, 1) << threads << " threads";
    EXPECT_EQ(omp_get_max_threads(), 3);
  }
}

// The first exception comes back to the caller, after every item that had started has finished:
// nothing runs once parallel_items has returned.
TEST(CpuPool, AnExceptionComesBackAfterTheRunningItemsEnd) {
  for (int64_t threads : {1, 2, 4}) {
    std::atomic<int> finished{0};
    bool thrown = false;
    try {
      parallel_items(40, threads, [&](int64_t i) {
        if (i == 3) throw std::runtime_error("item 3 failed");
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
        finished.fetch_add(1);
      });
    } catch (const std::runtime_error& e) {
      thrown = std::string(e.what()) == "item 3 failed";
    }
    EXPECT_TRUE(thrown) << threads << " threads";
    const int at_return = finished.load();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    EXPECT_EQ(finished.load(), at_return) << "an item ran after parallel_items returned (" << threads << " threads)";
    EXPECT_LT(at_return, 39) << "items not yet claimed when item 3 failed are skipped";
    // The pool is usable again.
    std::atomic<int> after{0};
    parallel_items(10, threads, [&](int64_t) { after.fetch_add(1); });
    EXPECT_EQ(after.load(), 10);
  }
  EXPECT_TRUE(lrlab::testing::throws_error_containing([] { parallel_items(-1, 2, [](int64_t) {}); },
                                                      "outside [0, 2^31)"));
}

// A call asking for fewer threads than an earlier one runs on no more than it asked for: helpers
// the earlier call started sit out (a sweep worker given one core's share must not spread over all).
TEST(CpuPool, ACallRunsOnNoMoreThreadsThanItAsksFor) {
  parallel_items(32, 6, [](int64_t) { std::this_thread::sleep_for(std::chrono::microseconds(200)); });
  for (int round = 0; round < 5; ++round) {
    std::mutex mutex;
    std::set<std::thread::id> ran_on;
    parallel_items(48, 2, [&](int64_t) {
      {
        std::lock_guard<std::mutex> lock(mutex);
        ran_on.insert(std::this_thread::get_id());
      }
      std::this_thread::sleep_for(std::chrono::microseconds(500));
    });
    EXPECT_LE(ran_on.size(), 2u) << "round " << round;
  }
}

// With two items failing, the exception that comes back is the first one thrown, though the other
// item, already running, throws later.
TEST(CpuPool, TheFirstExceptionThrownComesBack) {
  for (int round = 0; round < 10; ++round) {
    std::atomic<bool> second_started{false}, first_thrown{false};
    std::string caught;
    try {
      parallel_items(2, 2, [&](int64_t i) {
        const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(2);
        if (i == 0) {
          // Both items running at once, when a helper has taken one (else item 1 is never claimed).
          while (!second_started.load() && std::chrono::steady_clock::now() < until) std::this_thread::yield();
          first_thrown = true;
          throw std::runtime_error("first");
        }
        second_started = true;
        while (!first_thrown.load() && std::chrono::steady_clock::now() < until) std::this_thread::yield();
        // Long enough for the first to be caught and kept even on a loaded machine (under TSan, say).
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        throw std::runtime_error("second");
      });
    } catch (const std::runtime_error& e) {
      caught = e.what();
    }
    EXPECT_EQ(caught, "first") << "round " << round;
  }
}

// A call returns once every item has ended, the last one too when a helper runs it: here a helper's
// items take far longer than the caller's.
TEST(CpuPool, EveryItemHasEndedWhenTheCallReturns) {
  const std::thread::id caller = std::this_thread::get_id();
  for (int round = 0; round < 10; ++round) {
    std::vector<std::atomic<bool>> ended(16);
    parallel_items(16, 2, [&](int64_t i) {
      const bool on_caller = std::this_thread::get_id() == caller;
      std::this_thread::sleep_for(std::chrono::milliseconds(on_caller ? 1 : 30));
      ended[static_cast<size_t>(i)] = true;
    });
    for (size_t i = 0; i < ended.size(); ++i) ASSERT_TRUE(ended[i].load()) << "round " << round << ", item " << i;
  }
}

// A forked child holds the parent's pool but none of its threads, and perhaps a lock a helper held
// at the fork: it leaves that pool alone, starts its own, and ends normally instead of joining
// threads it does not have.
TEST(CpuPool, AForkedChildRunsJobsAndExits) {
  if (lrlab::testing::kUnderThreadSanitizer)
    GTEST_SKIP() << "ThreadSanitizer ends a forked child that starts threads (die_after_fork)";
  // The parent's helper exists and has run an item, so it is past its start-up when the fork comes.
  // (A fork while it was still starting hung the child's own thread start once under ASan, whose
  // thread registry the starting thread held: the hazard of any fork beside a starting thread.)
  ASSERT_TRUE(two_threads_met(std::chrono::seconds(20)));
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // Only a helper of the child's own can make the two items meet.
    const bool met = two_threads_met(std::chrono::seconds(10));
    std::atomic<int> n{0};
    parallel_items(16, 2, [&](int64_t) { n.fetch_add(1); });
    std::exit(met && n.load() == 16 ? 0 : 1);  // runs this thread's destructors, the pool's among them
  }
  int status = 0;
  pid_t done = 0;
  for (int i = 0; i < 3000 && (done = waitpid(child, &status, WNOHANG)) == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  if (done == 0) {
    kill(child, SIGKILL);
    waitpid(child, &status, 0);
    FAIL() << "the forked child hung";
  }
  ASSERT_TRUE(WIFEXITED(status)) << "the forked child ended by signal " << (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

// Sweep workers and range tests share the calling thread's OpenMP budget, which follows
// OMP_NUM_THREADS, the process's CPU affinity and omp_set_num_threads, not the machine's core count.
TEST(CpuThreads, WorkersShareTheCallersBudget) {
  using lrlab::detail::WorkerSetup;
  lrlab::testing::OmpThreads four(4);
  EXPECT_EQ(lrlab::detail::cpu_thread_budget(), 4);
  EXPECT_EQ(WorkerSetup(lrlab::Device::CPU, 1).threads_per_worker(), 4);
  EXPECT_EQ(WorkerSetup(lrlab::Device::CPU, 2).threads_per_worker(), 2);
  EXPECT_EQ(WorkerSetup(lrlab::Device::CPU, 3).threads_per_worker(), 1);
  EXPECT_EQ(WorkerSetup(lrlab::Device::CPU, 64).threads_per_worker(), 1);
  const WorkerSetup two(lrlab::Device::CPU, 2);
  int seen = 0;
  std::thread([&] {
    two.apply();  // a worker thread starts with OpenMP's default, not the caller's setting
    seen = omp_get_max_threads();
  }).join();
  EXPECT_EQ(seen, 2);
  lrlab::testing::OmpThreads one(1);
  EXPECT_EQ(WorkerSetup(lrlab::Device::CPU, 2).threads_per_worker(), 1);
}

// Ranks of `mpirun` on one node: a rank mpirun bound to one core keeps that core; unbound ranks
// share the node's cores instead of each starting a team of all of them.
TEST(CpuThreads, MpiRanksShareTheirNode) {
  using lrlab::cli::cpu_threads_per_rank;
  EXPECT_EQ(cpu_threads_per_rank(1, 16, 4), 1);    // bound to a core
  EXPECT_EQ(cpu_threads_per_rank(16, 16, 4), 4);   // unbound
  EXPECT_EQ(cpu_threads_per_rank(8, 16, 2), 8);    // bound to a socket of 8
  EXPECT_EQ(cpu_threads_per_rank(16, 16, 1), 16);  // alone on the node
  EXPECT_EQ(cpu_threads_per_rank(2, 2, 4), 1);     // more ranks than cores
  EXPECT_EQ(cpu_threads_per_rank(3, 16, 0), 3);
}

// Ranks on one GPU are told by its UUID: ranks that each see their own GPU as device 0 (a launcher's
// CUDA_VISIBLE_DEVICES) share nothing.
TEST(MpiRanks, SharedGpusAreToldByTheirUuid) {
  using lrlab::cli::shared_gpu_warning;
  EXPECT_EQ(shared_gpu_warning({"GPU-a", "GPU-b", "GPU-c", ""}), "");
  EXPECT_EQ(shared_gpu_warning({"", "", ""}), "");  // CPU ranks
  EXPECT_EQ(shared_gpu_warning({"GPU-b", "GPU-a", "GPU-b", "GPU-a"}),
            "ranks 0 and 2 share GPU-b; ranks 1 and 3 share GPU-a (one rank per GPU trains fastest)");
  std::vector<std::string> eight(8, "GPU-x");
  eight[5] = "";
  EXPECT_EQ(shared_gpu_warning(eight), "ranks 0-4 and 6-7 share GPU-x (one rank per GPU trains fastest)");
  std::vector<std::string> pairs;
  for (int g = 0; g < 5; ++g) pairs.insert(pairs.end(), 2, "GPU-" + std::to_string(g));
  EXPECT_EQ(shared_gpu_warning(pairs), "ranks 0-1 share GPU-0; ranks 2-3 share GPU-1; ranks 4-5 share GPU-2; and 2 "
                                       "more GPUs (one rank per GPU trains fastest)");
}

}  // namespace
