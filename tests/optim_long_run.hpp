// The 1000-step run of every optimizer against the float64 reference (optim_reference.hpp), shared
// by the CPU path's test (OptimizerReference, test_optimizer.cpp) and the GPU's
// (OptimizerReferenceGpu, test_optimizer_gpu.cpp): the problem, the variants and their tolerances
// are written here once. benchmarks/torch_reference_error.py runs the same problem in PyTorch.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <ostream>
#include <string>
#include <vector>

#include "lrlab/device.hpp"
#include "lrlab/optimizer.hpp"
#include "lrlab/rng.hpp"
#include "optim_reference.hpp"

namespace lrlab::testing {

struct LongRunVariant {
  const char* spec;
  float lr;
  double tol;  // max-norm relative error against float64 after 1000 steps; PyTorch's own fp32 on
               // this problem: 1.0e-6 to 2.1e-6, centered RMSprop 1.1e-5
               // (benchmarks/torch_reference_error.py)
};

inline void PrintTo(const LongRunVariant& v, std::ostream* os) { *os << v.spec; }

inline const std::vector<LongRunVariant> kLongRunVariants = {
    {"sgd()", 0.05f, 5e-6},
    {"sgd(momentum=0.9)", 0.01f, 5e-6},
    {"sgd(momentum=0.9,nesterov=true,wd=0.01)", 0.01f, 5e-6},
    {"sgd(momentum=0.5,dampening=0.3,maximize=false)", 0.02f, 5e-6},
    {"adam()", 1e-2f, 5e-6},
    {"adam(amsgrad=true)", 1e-2f, 5e-6},
    {"adam(wd=0.05,beta1=0.8,beta2=0.99,eps=1e-6)", 1e-2f, 5e-6},
    {"adamw()", 1e-2f, 5e-6},
    {"adamw(wd=0.1,amsgrad=true)", 1e-2f, 5e-6},
    {"rmsprop()", 1e-3f, 5e-6},
    {"rmsprop(momentum=0.9)", 1e-3f, 5e-6},
    {"rmsprop(centered=true)", 1e-3f, 1e-5},
    {"rmsprop(momentum=0.9,centered=true,wd=0.01)", 1e-3f, 1e-5},
    {"adagrad()", 0.1f, 5e-6},
    {"adagrad(lr_decay=0.01,initial_accumulator=0.1,wd=0.01)", 0.1f, 5e-6},
    // Keras's forms. The rate falls 0.1% a step, so a rate inside the momentum buffer (Keras) and
    // outside it (PyTorch) part by far more than the tolerance.
    {"sgd(keras=true,momentum=0.9)", 0.01f, 5e-6},
    {"sgd(keras=true,momentum=0.9,nesterov=true,wd=0.01)", 0.01f, 5e-6},
    {"adam(keras=true)", 1e-2f, 5e-6},
    {"adam(keras=true,amsgrad=true,wd=0.05,eps=1e-3)", 1e-2f, 5e-6},
    {"adamw(keras=true,beta2=0.99)", 1e-2f, 5e-6},
    {"rmsprop(keras=true,eps=1e-2)", 1e-3f, 5e-6},
    {"rmsprop(keras=true,momentum=0.9,centered=true,wd=0.01)", 1e-3f, 1e-5},
    // A large epsilon, inside the root against outside it, in the centered denominator.
    {"rmsprop(keras=true,centered=true,eps=0.5)", 1e-3f, 1e-5},
    {"adagrad(keras=true,wd=0.01,eps=0.5)", 0.1f, 5e-6},
};

// The problem's size: not a multiple of 4, so the vector paths have tails.
inline constexpr size_t kLongRunParams = 1031;
inline constexpr int kLongRunSteps = 1000;

// Runs variant v on `device` for 1000 steps alongside the float64 reference and checks that the
// fp32 weights stay within v.tol of it. Three groups: the base rate with the spec's decay, half the
// rate with it (a decoupled decay must take the group's rate), half the rate without decay (like
// biases); a decaying schedule table, gradients of a noisy quadratic around a random target
// (moments, decay and momentum all matter over a long run), taken at the optimizer's own weights.
// step(opt, p, g) applies one step to the weights p, held on the host between steps (a device path
// keeps its copy and writes it back into p).
template <typename StepFn>
void expect_tracks_float64(const LongRunVariant& v, Device device, StepFn step) {
  const size_t n = kLongRunParams;
  const int64_t half_rate = 400, no_decay = 700;
  Rng rng(42);
  auto normal = [&rng](size_t count) {
    std::vector<float> x(count);
    for (float& e : x) e = static_cast<float>(rng.normal());
    return x;
  };
  std::vector<float> p = normal(n);
  const std::vector<float> p0 = p, target = normal(n);
  OptimizerSetup setup;
  setup.lr = v.lr;
  setup.groups = {{0, half_rate, 1.0f, -1.0f},
                  {half_rate, no_decay, 0.5f, -1.0f},
                  {no_decay, static_cast<int64_t>(n), 0.5f, 0.0f}};
  Optimizer opt(v.spec, device, static_cast<int64_t>(n), setup);
  RefOptimizer ref(opt.hyper(), p);
  std::vector<double> wd(n), lr(n);
  for (size_t i = 0; i < n; ++i) wd[i] = static_cast<int64_t>(i) < no_decay ? opt.hyper().weight_decay : 0.0;
  std::vector<float> table(kLongRunSteps);
  for (size_t t = 0; t < table.size(); ++t) table[t] = std::pow(0.999f, static_cast<float>(t));
  opt.set_schedule(table);
  std::vector<float> g(n);
  for (int s = 0; s < kLongRunSteps; ++s) {
    for (size_t i = 0; i < n; ++i) g[i] = (p[i] - target[i]) + static_cast<float>(0.5 * rng.normal());
    EXPECT_FLOAT_EQ(opt.next_lr(), v.lr * table[s]);
    step(opt, p, g);
    for (size_t i = 0; i < n; ++i)
      lr[i] = static_cast<double>(v.lr * table[s]) * (static_cast<int64_t>(i) < half_rate ? 1.0 : 0.5);
    ref.step(g, lr, wd);
  }
  EXPECT_EQ(opt.step_count(), kLongRunSteps);
  const double err = maxnorm_rel_error(p.data(), ref.p);
  EXPECT_LT(err, v.tol);
  ::testing::Test::RecordProperty("maxnorm_rel_error", std::to_string(err));
  std::printf("[ error    ] %-4s %-50s %.2e\n", device == Device::CPU ? "cpu" : "cuda", v.spec, err);
  // The run must have moved the parameters: a rule that does nothing would also "track".
  double moved = 0;
  for (size_t i = 0; i < n; ++i) moved = std::max(moved, std::abs(static_cast<double>(p[i]) - p0[i]));
  EXPECT_GT(moved, 0.05);
}

}  // namespace lrlab::testing
