// Small helpers shared by the tests.
#pragma once

#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "lrlab/error.hpp"
#include "lrlab/nn_math.hpp"
#include "lrlab/train.hpp"

#if defined(__has_feature)
#if __has_feature(thread_sanitizer)  // clang's spelling of GCC's __SANITIZE_THREAD__
#define LRLAB_TEST_UNDER_TSAN 1
#endif
#endif

namespace lrlab::testing {

// Whether this build runs under ThreadSanitizer (the device emulator's --thread build).
#if defined(__SANITIZE_THREAD__) || defined(LRLAB_TEST_UNDER_TSAN)
inline constexpr bool kUnderThreadSanitizer = true;
#else
inline constexpr bool kUnderThreadSanitizer = false;
#endif

// The message of the lrlab::Error `fn` throws, or "" when it throws nothing.
template <typename Fn>
std::string error_of(Fn fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// Passes when `fn` throws an lrlab::Error whose message contains `part`; otherwise the failure says
// what was thrown, or that nothing was.
template <typename Fn>
::testing::AssertionResult throws_error_containing(Fn fn, const std::string& part) {
  try {
    fn();
  } catch (const Error& e) {
    if (std::string(e.what()).find(part) != std::string::npos) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure() << "'" << part << "' not in: " << e.what();
  }
  return ::testing::AssertionFailure() << "no lrlab::Error thrown; expected one mentioning '" << part << "'";
}

inline MlpConfig make_config(int64_t in, std::vector<int64_t> hidden, int64_t out,
                             Activation act = Activation::Relu,
                             LossKind loss = LossKind::SoftmaxCrossEntropy) {
  MlpConfig c;
  c.inputs = in;
  c.hidden = std::move(hidden);
  c.outputs = out;
  c.activation = act;
  c.loss = loss;
  return c;
}

// Each activation in double precision, from its textbook definition (gelu: the exact, erf form).
inline double ref_activation(Activation a, double z) {
  switch (a) {
    case Activation::Relu: return z > 0 ? z : 0;
    case Activation::Gelu: return 0.5 * z * (1 + std::erf(z / std::sqrt(2.0)));
    case Activation::Tanh: return std::tanh(z);
    case Activation::Sigmoid: return 1 / (1 + std::exp(-z));
    case Activation::Identity: return z;
  }
  return NAN;
}

// The device of the tests that train (Train.*, Sweep.*, LrFinder.*; LRLAB_DEVICE_TESTS in
// tests/CMakeLists.txt): the CPU, unless LRLAB_TEST_DEVICE names another. The device emulator's
// build and gpu_check.sh run them again with LRLAB_TEST_DEVICE=cuda, so that resuming, the guard,
// plateau, halving and the reports are checked on the CUDA path too.
inline std::string test_device() {
  const char* d = std::getenv("LRLAB_TEST_DEVICE");
  return d && *d ? d : "cpu";
}

// A training run small enough for a unit test: the built-in spirals, batch 50, on test_device().
inline TrainOptions small_spirals(int64_t samples, std::vector<int64_t> hidden) {
  TrainOptions o;
  o.data = "spirals";
  o.synthetic_samples = samples;
  o.hidden = std::move(hidden);
  o.batch = 50;
  o.device = test_device();
  return o;
}

// Sets the calling thread's OpenMP count for a scope: the CPU paths take it as the threads they use.
class OmpThreads {
 public:
  explicit OmpThreads(int n) : saved_(omp_get_max_threads()) { omp_set_num_threads(n); }
  ~OmpThreads() { omp_set_num_threads(saved_); }
  OmpThreads(const OmpThreads&) = delete;
  OmpThreads& operator=(const OmpThreads&) = delete;

 private:
  int saved_;
};

}  // namespace lrlab::testing
