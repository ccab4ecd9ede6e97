// The CPU backend's parallel loops: items handed out one at a time to the calling thread and to
// helper threads of its own, where the caller never waits for a helper that has not started.
//
// Why not an OpenMP parallel region: a region ends at a barrier that every thread of the team must
// reach. When another process holds one of the cores, the team's thread there runs in the time
// slices the scheduler gives it, and every region waits for its next one. Measured on the 2-core
// development machine with a compiler busy on one core, training the Fashion-MNIST MLP for 2 epochs
// of 100 steps took 9.5 s with a team of two and 2.2 s with one thread. Here the caller takes the
// items a descheduled helper has not claimed, and waits only for items already running.
#pragma once

#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <utility>

namespace lrlab::detail {

// A non-owning reference to a callable taking an item index.
class ItemFn {
 public:
  template <typename F, typename = std::enable_if_t<!std::is_same_v<std::decay_t<F>, ItemFn>>>
  ItemFn(F&& f)  // NOLINT(google-explicit-constructor): passed straight from a lambda
      : obj_(const_cast<void*>(static_cast<const void*>(&f))),
        call_([](void* o, int64_t i) { (*static_cast<std::remove_reference_t<F>*>(o))(i); }) {}
  void operator()(int64_t i) const { call_(obj_, i); }

 private:
  void* obj_;
  void (*call_)(void*, int64_t);
};

// The threads the CPU work of the calling thread may use: OpenMP's count for it, which follows
// OMP_NUM_THREADS, the process's CPU affinity (taskset, a Slurm allocation, mpirun's binding) and
// omp_set_num_threads. The machine's core count would ignore all three: under `mpirun -np 2` on two
// cores, each rank bound to one of them would start a team of two.
inline int64_t cpu_thread_budget() { return std::max(1, omp_get_max_threads()); }

// Runs fn(i) for every i in [0, items) on up to min(threads, items) threads: the calling thread and
// helpers that belong to it (started on first use, kept for the thread's life; a forked child starts
// its own). Which thread runs an item is not fixed, so fn(i) must give the same result on any of
// them; items run in no particular order. Helpers do not share the caller's per-thread state (its
// floating-point environment, say). Every item runs with OpenMP's thread count at 1, on the caller
// too (its own count is restored after): the items are the split, and a GEMM of an OpenMP build of
// OpenBLAS inside one stays on its thread. A call made from inside an item runs its items itself,
// one after another.
// An exception from fn is rethrown here after every claimed item has finished: the first one
// caught. Items claimed after it are skipped, but one claimed at the same moment may still run.
// Helpers that cannot be started (a limit on threads) leave their items to the others.
void parallel_items(int64_t items, int64_t threads, ItemFn fn);

}  // namespace lrlab::detail
