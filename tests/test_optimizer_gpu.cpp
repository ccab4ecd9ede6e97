// The CUDA optimizer against the CPU path on fresh random data. Skipped, with the reason, where no
// GPU exists.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "gpu.hpp"
#include "lrlab/cuda_check.hpp"
#include "lrlab/optimizer.hpp"
#include "lrlab/rng.hpp"

using namespace lrlab;

namespace {

template <typename T>
struct DeviceArray {
  T* ptr = nullptr;
  size_t n = 0;
  explicit DeviceArray(size_t count) : n(count) { LRLAB_CUDA_CHECK(cudaMalloc(&ptr, n * sizeof(T))); }
  ~DeviceArray() { cudaFree(ptr); }
  void upload(const std::vector<T>& v) {
    LRLAB_CUDA_CHECK(cudaMemcpy(ptr, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
    // A copy from pageable memory may return before it lands; later work runs on other streams.
    LRLAB_CUDA_CHECK(cudaDeviceSynchronize());
  }
  std::vector<T> download() const {
    std::vector<T> v(n);
    LRLAB_CUDA_CHECK(cudaMemcpy(v.data(), ptr, n * sizeof(T), cudaMemcpyDeviceToHost));
    return v;
  }
  void poison() { LRLAB_CUDA_CHECK(cudaMemset(ptr, 0xFF, n * sizeof(T))); }  // NaN for floats
};

std::vector<float> random_vector(size_t n, Rng& rng) {
  std::vector<float> v(n);
  for (float& x : v) x = static_cast<float>(rng.normal());
  return v;
}

double max_rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isnan(a[i]) != std::isnan(b[i])) return INFINITY;
    num = std::max(num, std::abs(static_cast<double>(a[i]) - b[i]));
    den = std::max(den, std::abs(static_cast<double>(b[i])));
  }
  return den > 0 ? num / den : num;
}

class OptimizerGpuParity : public ::testing::TestWithParam<const char*> {};

TEST_P(OptimizerGpuParity, MatchesCpuPath) {
  LRLAB_REQUIRE_GPU();
  const char* spec = GetParam();
  // Sizes that cover the vector path, tails, group boundaries off quads, one replica (unpadded, and
  // the whole-grid norm reduction) and several (padded, the segmented reduction).
  for (int64_t K : {int64_t(1), int64_t(3)})
  for (int64_t n : {int64_t(1), int64_t(1023), int64_t(100003)}) {
    const int64_t ld = K == 1 ? n : (n + 3) / 4 * 4;
    Rng rng(static_cast<uint64_t>(n) * 31 + 1);
    std::vector<float> p = random_vector(K * ld, rng);
    OptimizerSetup setup;
    setup.replicas = K;
    setup.replica_stride = ld;
    if (n > 10) setup.groups = {{0, n / 3 + 1, 1.0f, -1.0f}, {n / 3 + 1, n, 0.3f, 0.0f}};
    Optimizer cpu(spec, Device::CPU, n, setup);
    Optimizer gpu(spec, Device::CUDA, n, setup);
    std::vector<float> table = {1.0f, 0.7f, 0.5f, 0.2f};
    for (int64_t r = 0; r < K; ++r) {
      cpu.set_lr(1e-2f * (r + 1), r);
      gpu.set_lr(1e-2f * (r + 1), r);
    }
    cpu.set_schedule(table, K - 1);
    gpu.set_schedule(table, K - 1);
    DeviceArray<float> dp(K * ld), dg(K * ld);
    DeviceArray<uint16_t> dbf(K * ld);
    dp.upload(p);
    dbf.poison();
    std::vector<uint16_t> bf(K * ld, 0);
    for (int step = 0; step < 6; ++step) {
      std::vector<float> g = random_vector(K * ld, rng);
      dg.upload(g);
      cpu.step(p.data(), g.data(), bf.data());
      gpu.step(dp.ptr, dg.ptr, dbf.ptr);
    }
    LRLAB_CUDA_CHECK(cudaDeviceSynchronize());
    std::vector<float> gp = dp.download();
    EXPECT_LT(max_rel_diff(gp, p), 2e-6) << spec << " n=" << n;
    for (int k = 0; k < cpu.num_state_buffers(); ++k)
      EXPECT_LT(max_rel_diff(gpu.state_buffer(k), cpu.state_buffer(k)), 2e-6) << spec << " state " << k;
    std::vector<uint16_t> gbf = dbf.download();
    for (int64_t r = 0; r < K; ++r)
      for (int64_t i = 0; i < n; ++i)
        ASSERT_LE(std::abs(int(gbf[r * ld + i]) - int(bf[r * ld + i])), 1) << i;
    for (int64_t r = 0; r < K; ++r) EXPECT_EQ(gpu.step_count(r), 6);
  }
}

INSTANTIATE_TEST_SUITE_P(AllRules, OptimizerGpuParity,
                         ::testing::Values("sgd()", "sgd(momentum=0.9,nesterov=true,wd=0.01)",
                                           "adam()", "adam(amsgrad=true,wd=0.1)", "adamw()",
                                           "rmsprop(momentum=0.9,centered=true)", "rmsprop()",
                                           "adagrad(lr_decay=0.01,initial_accumulator=0.1)",
                                           "adam(clip=0.5)", "sgd(maximize=true,clip=2)"));

TEST(OptimizerGpu, GraphReplayEqualsEagerSteps) {
  LRLAB_REQUIRE_GPU();
  const int64_t n = 50001;
  Rng rng(21);
  std::vector<float> p = random_vector(n, rng), g = random_vector(n, rng);
  cudaStream_t stream;
  LRLAB_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  OptimizerSetup setup;
  setup.stream = stream;
  Optimizer eager("adam(clip=1.0)", Device::CUDA, n, setup);
  Optimizer graphed("adam(clip=1.0)", Device::CUDA, n, setup);
  std::vector<float> table = {1.0f, 0.5f, 0.25f, 0.125f, 0.0625f};
  eager.set_schedule(table);
  graphed.set_schedule(table);
  DeviceArray<float> p1(n), p2(n), dg(n);
  p1.upload(p);
  p2.upload(p);
  dg.upload(g);
  cudaGraph_t graph;
  LRLAB_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
  graphed.step(p2.ptr, dg.ptr);
  LRLAB_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
  cudaGraphExec_t exec;
  LRLAB_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  for (int i = 0; i < 7; ++i) {
    eager.step(p1.ptr, dg.ptr);
    LRLAB_CUDA_CHECK(cudaGraphLaunch(exec, stream));
  }
  // A manual change between replays reaches the captured step.
  eager.set_lr(1e-4f);
  graphed.set_lr(1e-4f);
  eager.step(p1.ptr, dg.ptr);
  LRLAB_CUDA_CHECK(cudaGraphLaunch(exec, stream));
  LRLAB_CUDA_CHECK(cudaStreamSynchronize(stream));
  EXPECT_EQ(p1.download(), p2.download());
  EXPECT_EQ(graphed.step_count(), 8);
  EXPECT_EQ(eager.state_buffer(1), graphed.state_buffer(1));
  LRLAB_CUDA_CHECK(cudaGraphExecDestroy(exec));
  LRLAB_CUDA_CHECK(cudaGraphDestroy(graph));
  LRLAB_CUDA_CHECK(cudaStreamDestroy(stream));
}

TEST(OptimizerGpu, NonFiniteGradientSkipsOnDevice) {
  LRLAB_REQUIRE_GPU();
  const int64_t n = 4099;
  Rng rng(5);
  std::vector<float> p = random_vector(n, rng), g = random_vector(n, rng);
  Optimizer opt("adam()", Device::CUDA, n);
  opt.set_grad_scale(65536.0f);
  DeviceArray<float> dp(n), dg(n);
  dp.upload(p);
  g[4098] = std::numeric_limits<float>::quiet_NaN();
  dg.upload(g);
  opt.step(dp.ptr, dg.ptr);
  EXPECT_EQ(dp.download(), p);
  EXPECT_EQ(opt.step_count(), 0);
  EXPECT_EQ(opt.replica_state().skipped, 1);
}

TEST(OptimizerGpu, UnstashRollsBackOnTheDevice) {
  LRLAB_REQUIRE_GPU();
  const int64_t n = 3001;
  Rng rng(4);
  std::vector<float> p = random_vector(n, rng), g = random_vector(n, rng);
  Optimizer opt("rmsprop(momentum=0.9,centered=true)", Device::CUDA, n);
  DeviceArray<float> dp(n), dg(n);
  dp.upload(p);
  dg.upload(g);
  opt.step(dp.ptr, dg.ptr);
  opt.stash();
  const std::vector<float> buf = opt.state_buffer(1);
  for (int i = 0; i < 3; ++i) opt.step(dp.ptr, dg.ptr);
  opt.unstash();
  EXPECT_EQ(opt.step_count(), 1);
  EXPECT_EQ(opt.state_buffer(1), buf);
}

TEST(OptimizerGpu, SaveOnGpuLoadOnCpu) {
  LRLAB_REQUIRE_GPU();
  const int64_t n = 1000;
  Rng rng(8);
  std::vector<float> p = random_vector(n, rng), g = random_vector(n, rng);
  Optimizer gpu("rmsprop(momentum=0.5)", Device::CUDA, n);
  DeviceArray<float> dp(n), dg(n);
  dp.upload(p);
  dg.upload(g);
  for (int i = 0; i < 3; ++i) gpu.step(dp.ptr, dg.ptr);
  Optimizer cpu("rmsprop(momentum=0.5)", Device::CPU, n);
  cpu.load(gpu.save());
  EXPECT_EQ(cpu.step_count(), 3);
  EXPECT_EQ(cpu.state_buffer(1), gpu.state_buffer(1));
}

}  // namespace
