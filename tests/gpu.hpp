// GPU tests run where a CUDA device exists and report themselves skipped, with the reason, elsewhere.
// LRLAB_EXPECT_GPU=1 (set by benchmarks/gpu_check.sh) turns a skip into a failure, so a machine whose
// driver cannot run this CUDA version does not pass its GPU tests vacuously.
#pragma once

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "lrlab/cuda_check.hpp"
#include "lrlab/device.hpp"
#include "test_util.hpp"

#define LRLAB_REQUIRE_GPU()                                                         \
  do {                                                                              \
    std::string lrlab_why_;                                                         \
    if (!::lrlab::cuda_available(&lrlab_why_)) {                                    \
      const char* lrlab_expect_ = std::getenv("LRLAB_EXPECT_GPU");                  \
      if (lrlab_expect_ && std::string(lrlab_expect_) == "1")                       \
        FAIL() << "LRLAB_EXPECT_GPU=1 but " << lrlab_why_;                          \
      GTEST_SKIP() << lrlab_why_;                                                   \
    }                                                                               \
  } while (0)

// How often a test repeats a run of concurrent streams, for different interleavings. Under
// ThreadSanitizer (the device emulator's --thread build) a race is reported from the first run that
// makes the racing accesses, in whichever order they come, so two runs (the second compared with
// the first) do there what five do elsewhere, at under half the cost of the slowest test there.
inline constexpr int kInterleavingRuns = lrlab::testing::kUnderThreadSanitizer ? 2 : 5;

// A stream of a test's own. Declare it before everything that uses it: it is destroyed after them
// (an optimizer or MLP synchronises its stream when destroyed).
class TestStream {
 public:
  TestStream() { LRLAB_CUDA_CHECK(cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking)); }
  ~TestStream() { cudaStreamDestroy(s_); }
  TestStream(const TestStream&) = delete;
  TestStream& operator=(const TestStream&) = delete;
  cudaStream_t get() const { return s_; }
  void sync() const { LRLAB_CUDA_CHECK(cudaStreamSynchronize(s_)); }

 private:
  cudaStream_t s_ = nullptr;
};
