// The sweep on the GPU against the CPU: packed replicas and engines on parallel streams.
#include <gtest/gtest.h>

#include <string>

#include "fixtures.hpp"
#include "gpu.hpp"
#include "lrlab/sweep.hpp"

using namespace lrlab;
using lrlab::testing::expect_same_runs;
using lrlab::testing::small_sweep;

namespace {

// On the GPU, packed replicas (compacted by halving, one of them diverging) and engines on parallel
// streams train as the CPU does.
TEST(SweepGpu, PackedAndStreamsMatchTheCpu) {
  LRLAB_REQUIRE_GPU();
  SweepOptions o = small_sweep();
  o.lrs = {1e-3, 3e-3, 1e-2, 1e3};  // moderate rates (rounding differences stay small) and one that diverges
  o.base.epochs = 4;
  o.halving = 2;
  o.base.device = "cpu";
  const SweepResult cpu = run_sweep(o);
  o.base.device = "cuda";
  o.mode = "packed";
  const SweepResult packed = run_sweep(o);
  o.mode = "streams";
  o.workers = 4;
  const SweepResult streams = run_sweep(o);
  expect_same_runs(cpu, packed, 1e-3);
  // Other cuBLAS kernels for packed and single GEMMs: rounding of the same kind as CPU against GPU.
  expect_same_runs(packed, streams, 1e-3);
  for (size_t i = 0; i < cpu.runs.size(); ++i) {
    EXPECT_EQ(packed.runs[i].halted, cpu.runs[i].halted) << "run " << i;
    EXPECT_EQ(streams.runs[i].halted, cpu.runs[i].halted) << "run " << i;
  }
}

}  // namespace
