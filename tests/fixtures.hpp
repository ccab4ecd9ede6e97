// The small problems that a suite's CPU tests and its GPU tests (in a file of their own, built
// without the rest for the ThreadSanitizer run) both train.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "lrlab/sweep.hpp"
#include "lrlab/train.hpp"
#include "test_util.hpp"

namespace lrlab::testing {

// 12 configurations (3 rates, 2 schedules, 2 optimizers) of a 16-16 MLP on 900 spirals, 3 epochs.
inline SweepOptions small_sweep() {
  SweepOptions o;
  o.base = small_spirals(900, {16, 16});
  o.base.epochs = 3;
  o.lrs = {1e-3, 1e-2, 1e-1};
  o.schedules = {"constant", "step(every=1ep,gamma=0.5)"};
  o.optimizers = {"adam()", "rmsprop()"};
  return o;
}

// The same runs, with validation losses within `tol` (relative, at least absolute): a diverged
// run's losses are chaos, so of those only whether and when it diverged is compared.
inline void expect_same_runs(const SweepResult& a, const SweepResult& b, double tol) {
  ASSERT_EQ(a.runs.size(), b.runs.size());
  for (size_t i = 0; i < a.runs.size(); ++i) {
    ASSERT_EQ(a.runs[i].config.id, b.runs[i].config.id);
    ASSERT_EQ(a.runs[i].val_loss.size(), b.runs[i].val_loss.size()) << i;
    EXPECT_EQ(a.runs[i].diverged, b.runs[i].diverged) << "run " << i;
    EXPECT_EQ(a.runs[i].diverged_epoch, b.runs[i].diverged_epoch) << "run " << i;
    if (a.runs[i].diverged || b.runs[i].diverged) continue;
    for (size_t e = 0; e < a.runs[i].val_loss.size(); ++e)
      EXPECT_NEAR(a.runs[i].val_loss[e], b.runs[i].val_loss[e], tol * std::max(1.0, std::abs(a.runs[i].val_loss[e])))
          << "run " << i << " epoch " << e;
  }
}

// The range tests' model: a 16-16 MLP on 1500 spirals, seed 5.
inline TrainOptions finder_base() {
  TrainOptions o = small_spirals(1500, {16, 16});
  o.seed = 5;
  return o;
}

}  // namespace lrlab::testing
