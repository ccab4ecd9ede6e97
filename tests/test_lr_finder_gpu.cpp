// Range tests on the GPU against the CPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "fixtures.hpp"
#include "gpu.hpp"
#include "lrlab/lr_finder.hpp"

using namespace lrlab;
using lrlab::testing::finder_base;

namespace {

// Range tests of four optimizers at once on the GPU, each on its own stream (one stops early and
// restores while others still capture graphs), repeated for different interleavings: every curve
// follows the CPU's, and the same test gives the same curve each time.
TEST(LrFinderGpu, ConcurrentTestsMatchTheCpu) {
  LRLAB_REQUIRE_GPU();
  FinderOptions f;
  f.steps = 120;  // more than an epoch of spirals: the partial last batch's graph is captured too
  TrainOptions base = finder_base();
  base.device = "cpu";
  const std::vector<std::string> opts = {"adam()", "sgd(momentum=0.9)", "rmsprop()", "adagrad()"};
  const std::vector<FinderCurve> cpu = find_lr(base, opts, f);
  base.device = "cuda";
  std::vector<FinderCurve> first;
  for (int rep = 0; rep < kInterleavingRuns; ++rep) {
    const std::vector<FinderCurve> gpu = find_lr(base, opts, f);
    ASSERT_EQ(gpu.size(), opts.size());
    for (size_t i = 0; i < opts.size(); ++i) {
      EXPECT_EQ(gpu[i].stopped_early, cpu[i].stopped_early) << opts[i];
      const size_t common = std::min(gpu[i].loss.size(), cpu[i].loss.size());
      ASSERT_GT(common, 10u) << opts[i];
      for (size_t k = 0; k < std::min<size_t>(common, 40); ++k)
        EXPECT_NEAR(gpu[i].loss[k], cpu[i].loss[k], 1e-3 * std::max(1.0, std::abs(cpu[i].loss[k])))
            << opts[i] << " step " << k;
    }
    if (rep == 0) first = gpu;
    for (size_t i = 0; i < opts.size(); ++i) EXPECT_EQ(gpu[i].loss, first[i].loss) << opts[i] << " rep " << rep;
  }
}

}  // namespace
