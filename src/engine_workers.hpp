// Host threads that run training engines side by side: the sweep's lanes and the range tests of
// several optimizers.
#pragma once

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "cpu_pool.hpp"
#include "lrlab/device.hpp"

namespace lrlab::detail {

// Runs fn(i) for every i in [0, n) on up to `workers` threads (on the calling thread when that is
// one), even after some have thrown; then rethrows the exception of the lowest i that threw, so the
// error reported does not depend on timing.
inline void parallel_for(int64_t n, int64_t workers, const std::function<void(int64_t)>& fn) {
  workers = std::max<int64_t>(1, std::min(workers, n));
  std::atomic<int64_t> next{0};
  std::exception_ptr error;
  int64_t error_index = n;
  std::mutex error_mutex;
  auto work = [&] {
    for (int64_t i = next++; i < n; i = next++) {
      try {
        fn(i);
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (i < error_index) {
          error = std::current_exception();
          error_index = i;
        }
      }
    }
  };
  if (workers == 1) {
    work();
  } else {
    std::vector<std::thread> threads;
    try {
      for (int64_t w = 0; w < workers; ++w) threads.emplace_back(work);
    } catch (...) {
      // No more threads to be had (a process limit): those started do all the work; with none,
      // the caller hears why.
      if (threads.empty()) throw;
    }
    for (std::thread& t : threads) t.join();
  }
  if (error) std::rethrow_exception(error);
}

// What a worker thread sets before it touches an engine. On the GPU: the GPU of the thread that
// built the engines, since new threads start on GPU 0 (an MPI rank picks its local GPU on its main
// thread). On the CPU: its share of the calling thread's budget, as its OpenMP count, which the CPU
// backend reads as the threads it may use.
class WorkerSetup {
 public:
  WorkerSetup(Device device, int64_t workers)
      : device_(device),
        gpu_(device == Device::CUDA ? current_gpu() : 0),
        omp_threads_(static_cast<int>(std::max<int64_t>(1, cpu_thread_budget() / std::max<int64_t>(1, workers)))) {}

  int threads_per_worker() const { return omp_threads_; }

  void apply() const {
    if (device_ == Device::CUDA) use_gpu(gpu_);
    else omp_set_num_threads(omp_threads_);
  }

 private:
  Device device_;
  int gpu_;
  int omp_threads_;
};

}  // namespace lrlab::detail
