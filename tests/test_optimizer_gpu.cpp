// The CUDA optimizer against the CPU path on fresh random data, and against the float64 reference
// over 1000 steps. Skipped, with the reason, where no GPU exists.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "gpu.hpp"
#include "lrlab/cuda_check.hpp"
#include "lrlab/optimizer.hpp"
#include "lrlab/rng.hpp"
#include "optim_long_run.hpp"
#include "optimizer_kernels.hpp"
#include "test_util.hpp"

using namespace lrlab;

namespace {

template <typename T>
struct DeviceArray {
  T* ptr = nullptr;
  size_t n = 0;
  explicit DeviceArray(size_t count) : n(count) { LRLAB_CUDA_CHECK(cudaMalloc(&ptr, n * sizeof(T))); }
  ~DeviceArray() { cudaFree(ptr); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  void upload(const std::vector<T>& v, size_t offset = 0) {
    LRLAB_CUDA_CHECK(cudaMemcpy(ptr + offset, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
    // A copy from pageable memory may return before it lands; later work runs on other streams.
    LRLAB_CUDA_CHECK(cudaDeviceSynchronize());
  }
  std::vector<T> download(size_t offset = 0) const {
    LRLAB_CUDA_CHECK(cudaDeviceSynchronize());
    std::vector<T> v(n - offset);
    LRLAB_CUDA_CHECK(cudaMemcpy(v.data(), ptr + offset, v.size() * sizeof(T), cudaMemcpyDeviceToHost));
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
    if (std::isnan(a[i])) continue;
    num = std::max(num, std::abs(static_cast<double>(a[i]) - b[i]));
    den = std::max(den, std::abs(static_cast<double>(b[i])));
  }
  return den > 0 ? num / den : num;
}

// The same optimizer on both paths over the same parameters. The device buffers start `offset`
// floats into their allocations (an offset that is not a multiple of 4 turns the vector path off).
struct Twin {
  int64_t n, K, ld, size, offset;  // size: floats the buffers hold
  Optimizer cpu, gpu;
  std::vector<float> p;
  DeviceArray<float> dp, dg;
  DeviceArray<uint16_t> dbf;

  Twin(const std::string& spec, int64_t n_, OptimizerSetup setup, Rng& rng, int64_t offset_ = 0)
      : n(n_),
        K(setup.replicas),
        ld(setup.replica_stride ? setup.replica_stride : n_),
        size(setup.blocks.empty() ? K * ld : ReplicaPacking(n_, K, setup.blocks).span()),
        offset(offset_),
        cpu(spec, Device::CPU, n_, setup),
        gpu(spec, Device::CUDA, n_, setup),
        p(random_vector(size, rng)),
        dp(size + offset_),
        dg(size + offset_),
        dbf(size + offset_) {
    dp.poison();
    dbf.poison();
    dp.upload(p, offset);
  }
  // Both paths take the gradients g; the GPU also writes its bf16 copy.
  void step(const std::vector<float>& g) {
    dg.upload(g, offset);
    cpu.step(p.data(), g.data());
    gpu.step(dp.ptr + offset, dg.ptr + offset, dbf.ptr + offset);
  }
  void expect_equal(const std::string& what) {
    EXPECT_LT(max_rel_diff(dp.download(offset), p), 2e-6) << what;
    for (int k = 0; k < cpu.num_state_buffers(); ++k)
      EXPECT_LT(max_rel_diff(gpu.state_buffer(k), cpu.state_buffer(k)), 2e-6) << what << " state " << k;
    for (int64_t r = 0; r < K; ++r) {
      const ReplicaState c = cpu.replica_state(r), g = gpu.replica_state(r);
      EXPECT_EQ(g.step, c.step) << what << " replica " << r;
      EXPECT_EQ(g.skipped, c.skipped) << what << " replica " << r;
      EXPECT_EQ(g.skipped_total, c.skipped_total) << what << " replica " << r;
      EXPECT_EQ(g.base_lr, c.base_lr) << what << " replica " << r;
      EXPECT_EQ(g.scale, c.scale) << what << " replica " << r;
      EXPECT_EQ(g.inv_grad_scale, c.inv_grad_scale) << what << " replica " << r;
    }
  }
};

// K replicas, `ld` floats apart.
OptimizerSetup replicas(int64_t K, int64_t ld) {
  OptimizerSetup setup;
  setup.replicas = K;
  setup.replica_stride = ld;
  return setup;
}

struct Shape {
  int64_t K, n, ld, offset;
  bool gaps;  // parameters outside every group, which must stay untouched
};

class OptimizerGpuParity : public ::testing::TestWithParam<const char*> {};

TEST_P(OptimizerGpuParity, MatchesCpuPath) {
  LRLAB_REQUIRE_GPU();
  const char* spec = GetParam();
  // The vector path and its tails, group boundaries off quads, one replica (the whole-grid norm
  // reduction) and several (the segmented one), padding between replicas with a stride that is not
  // a multiple of 4, a misaligned buffer, and gaps between groups.
  const Shape shapes[] = {{1, 1, 1, 0, false},      {1, 1023, 1023, 0, false}, {1, 100003, 100003, 0, false},
                          {3, 1, 4, 0, false},      {3, 1023, 1024, 0, false}, {3, 100003, 100004, 0, false},
                          {3, 1023, 1029, 0, true}, {1, 4099, 4099, 1, true},  {2, 4099, 4100, 2, false}};
  for (const Shape& sh : shapes) {
    const std::string what = std::string(spec) + " K=" + std::to_string(sh.K) + " n=" + std::to_string(sh.n) +
                             " ld=" + std::to_string(sh.ld) + " offset=" + std::to_string(sh.offset);
    Rng rng(static_cast<uint64_t>(sh.n) * 31 + sh.ld + sh.offset);
    OptimizerSetup setup = replicas(sh.K, sh.ld);
    if (sh.gaps) setup.groups = {{1, sh.n / 3 + 1, 1.0f, -1.0f}, {sh.n / 3 + 5, sh.n - 2, 0.3f, 0.0f}};
    else if (sh.n > 10) setup.groups = {{0, sh.n / 3 + 1, 1.0f, -1.0f}, {sh.n / 3 + 1, sh.n, 0.3f, 0.0f}};
    Twin t(spec, sh.n, setup, rng, sh.offset);
    for (int64_t r = 0; r < sh.K; ++r) {
      t.cpu.set_lr(1e-2f * (r + 1), r);
      t.gpu.set_lr(1e-2f * (r + 1), r);
    }
    const std::vector<float> table = {1.0f, 0.7f, 0.5f, 0.2f};
    t.cpu.set_schedule(table, sh.K - 1);
    t.gpu.set_schedule(table, sh.K - 1);
    // Six steps run past the table's end. Under TSan, which looks for threads writing one another's
    // elements within a launch, two do: with six, these tests took a third of its time.
    const int steps = lrlab::testing::kUnderThreadSanitizer ? 2 : 6;
    for (int step = 0; step < steps; ++step) t.step(random_vector(sh.K * sh.ld, rng));
    t.expect_equal(what);
    for (int64_t r = 0; r < sh.K; ++r) EXPECT_EQ(t.gpu.step_count(r), steps) << what;
    // The bf16 copy is the final weights rounded, written where the weights are and nowhere else:
    // the padding between replicas, the gaps and the space before the buffer keep their poison.
    const std::vector<float> gp = t.dp.download();
    const std::vector<uint16_t> gbf = t.dbf.download();
    for (size_t j = 0; j < gbf.size(); ++j) {
      const int64_t at = static_cast<int64_t>(j) - sh.offset, i = at % sh.ld;
      bool updated = at >= 0 && i < sh.n;
      if (updated && sh.gaps) updated = (i >= 1 && i < sh.n / 3 + 1) || (i >= sh.n / 3 + 5 && i < sh.n - 2);
      if (updated) {
        ASSERT_EQ(gbf[j], float_to_bf16(gp[j])) << what << " at " << j;
      } else {
        ASSERT_EQ(gbf[j], 0xFFFF) << what << " bf16 written outside the parameters at " << j;
        ASSERT_TRUE(std::isnan(gp[j]) || at >= 0) << what << " weight written before the buffer at " << j;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllRules, OptimizerGpuParity,
                         ::testing::Values("sgd()", "sgd(momentum=0.9,nesterov=true,wd=0.01)",
                                           "adam()", "adam(amsgrad=true,wd=0.1)", "adamw()",
                                           "rmsprop(momentum=0.9,centered=true)", "rmsprop()",
                                           "adagrad(lr_decay=0.01,initial_accumulator=0.1)",
                                           "adam(clip=0.5)", "sgd(maximize=true,clip=2)",
                                           "adamw(check_finite=true)", "sgd(keras=true,momentum=0.9,wd=0.01)",
                                           "adam(keras=true,wd=0.1)", "rmsprop(keras=true,momentum=0.9,centered=true)",
                                           "adagrad(keras=true)"));

// The update kernel takes one quad or two an iteration (detail::kDefaultUpdateUnroll picks; the
// benchmark times the other), each built for every optimizer's count of state buffers. Both must
// write the same bits everywhere: in the pairs' fast path, where one quad of a pair falls back to
// single quads (a group or block edge, a misaligned buffer), at the end of the grid-stride loop
// where the second quad of a pair is past the end, and over several loop turns. The sizes that
// take the loop around are measured in the two-quad grid of the device at hand (an H200's holds
// about 800 thousand floats, the emulator's 65 thousand): 2.5 turns for one replica, 1.5 for
// each of three, plus an odd tail.
TEST(OptimizerGpu, OneAndTwoQuadsAnIterationWriteTheSameBits) {
  LRLAB_REQUIRE_GPU();
  struct Case {
    int64_t K, n, ld, offset;
    std::vector<ReplicaBlock> blocks;
  };
  int dev = 0, sms = 0;
  LRLAB_CUDA_CHECK(cudaGetDevice(&dev));
  LRLAB_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  std::vector<const char*> specs = {"adam(wd=0.01)", "adamw(amsgrad=true)", "sgd()", "sgd(momentum=0.9)", "rmsprop()",
                                    "rmsprop(momentum=0.9)", "rmsprop(momentum=0.9,centered=true)", "adagrad()",
                                    "sgd(keras=true,momentum=0.9)", "rmsprop(keras=true,momentum=0.9)"};
  // Under TSan, which looks for threads writing one another's elements, not for wrong bits: the
  // forms share their indexing, so three (the most states, and Keras's) stand for all. It was the
  // longest test there, 60 s.
  if (lrlab::testing::kUnderThreadSanitizer) {
    specs = {"adam(wd=0.01)", "rmsprop(momentum=0.9,centered=true)", "sgd(keras=true,momentum=0.9)"};
  }
  for (const char* spec : specs) {
    Optimizer probe(spec, Device::CUDA, 1);
    detail::OptimizerAccess::set_update_unroll(probe, 2);
    const int64_t resident = detail::OptimizerAccess::update_blocks_per_sm(probe) * sms;
    // Floats one turn of the two-quad grid covers in each of K replicas: its blocks (split among the
    // replicas), 256 threads a block, two quads of 4 floats a thread.
    auto turn = [&](int64_t K) { return std::max<int64_t>(1, resident / K) * 256 * 2 * 4; };
    const int64_t n1 = 2 * turn(1) + turn(1) / 2 + 3, n3 = turn(3) + turn(3) / 2 + 3;
    const Case cases[] = {
        {1, 7, 7, 0, {}},
        {1, n1, n1, 0, {}},
        {3, n3, n3 + 1, 0, {}},
        {2, 4099, 4099, 1, {}},
        {3, 1001, 0, 0, {{0, 602, 1, 1012}, {602, 1001, 606, 1012}}},
        // Aligned blocks, so pairs take the vector path with their two quads in different blocks.
        {2, 40000, 0, 0, {{0, 20000, 0, 20000}, {20000, 40000, 40000, 20000}}},
    };
    for (const Case& c : cases) {
      const std::string what = std::string(spec) + " K=" + std::to_string(c.K) + " n=" + std::to_string(c.n) +
                               " offset=" + std::to_string(c.offset);
      OptimizerSetup setup;
      setup.replicas = c.K;
      setup.replica_stride = c.ld;
      setup.blocks = c.blocks;
      if (c.n > 10) setup.groups = {{1, c.n / 3 + 1, 1.0f, -1.0f}, {c.n / 3 + 5, c.n - 2, 0.3f, 0.0f}};
      const int64_t span =
          (c.blocks.empty() ? ReplicaPacking(c.n, c.K, c.ld) : ReplicaPacking(c.n, c.K, c.blocks)).span();
      Optimizer one(spec, Device::CUDA, c.n, setup), two(spec, Device::CUDA, c.n, setup);
      detail::OptimizerAccess::set_update_unroll(one, 1);
      detail::OptimizerAccess::set_update_unroll(two, 2);
      ASSERT_EQ(detail::OptimizerAccess::update_unroll(two), 2);
      ASSERT_GE(detail::OptimizerAccess::update_blocks_per_sm(one), 1);
      Optimizer cpu(spec, Device::CPU, c.n, setup);
      Rng rng(static_cast<uint64_t>(c.n) + 17);
      const std::vector<float> p0 = random_vector(static_cast<size_t>(span), rng);
      std::vector<float> pc = p0;
      DeviceArray<float> p1(span + c.offset), p2(span + c.offset), g(span + c.offset);
      DeviceArray<uint16_t> b1(span + c.offset), b2(span + c.offset);
      for (auto* b : {&b1, &b2}) b->poison();
      p1.upload(p0, c.offset);
      p2.upload(p0, c.offset);
      for (int step = 0; step < 3; ++step) {
        const std::vector<float> gh = random_vector(static_cast<size_t>(span), rng);
        g.upload(gh, c.offset);
        cpu.step(pc.data(), gh.data());
        one.step(p1.ptr + c.offset, g.ptr + c.offset, b1.ptr + c.offset);
        two.step(p2.ptr + c.offset, g.ptr + c.offset, b2.ptr + c.offset);
      }
      const std::vector<float> w1 = p1.download(c.offset), w2 = p2.download(c.offset);
      ASSERT_EQ(w1.size(), w2.size());
      int64_t moved = 0;
      for (size_t j = 0; j < w1.size(); ++j) {
        ASSERT_EQ(std::memcmp(&w1[j], &w2[j], sizeof(float)), 0) << what << " weight " << j;
        moved += w1[j] != p0[j];
      }
      EXPECT_GT(moved, 0) << what;
      EXPECT_LT(max_rel_diff(w2, pc), 2e-6) << what << " against the CPU path";
      EXPECT_EQ(b1.download(), b2.download()) << what;
      for (int k = 0; k < one.num_state_buffers(); ++k) {
        const std::vector<float> s1 = one.state_buffer(k), s2 = two.state_buffer(k);
        ASSERT_EQ(s1.size(), s2.size());
        EXPECT_EQ(std::memcmp(s1.data(), s2.data(), s1.size() * sizeof(float)), 0) << what << " state " << k;
      }
    }
  }
}

TEST(OptimizerGpu, UpdateUnrollIsOneOrTwoOnTheGpuOnly) {
  Optimizer cpu("adam()", Device::CPU, 16);
  EXPECT_THROW(detail::OptimizerAccess::set_update_unroll(cpu, 2), Error);
  EXPECT_EQ(detail::OptimizerAccess::update_blocks_per_sm(cpu), 0);
  LRLAB_REQUIRE_GPU();
  Optimizer gpu("adam()", Device::CUDA, 16);
  EXPECT_EQ(detail::OptimizerAccess::update_unroll(gpu), detail::kDefaultUpdateUnroll);
  for (int bad : {0, 3, -1}) EXPECT_THROW(detail::OptimizerAccess::set_update_unroll(gpu, bad), Error) << bad;
  EXPECT_EQ(detail::OptimizerAccess::update_unroll(gpu), detail::kDefaultUpdateUnroll);
  // A graph keeps the kernel it recorded; changing it afterwards would leave graph and optimizer
  // disagreeing about the grid.
  const TestStream owned;
  OptimizerSetup setup;
  setup.stream = owned.get();
  Optimizer graphed("adam()", Device::CUDA, 16, setup);
  DeviceArray<float> p(16), g(16);
  cudaGraph_t graph;
  LRLAB_CUDA_CHECK(cudaStreamBeginCapture(owned.get(), cudaStreamCaptureModeGlobal));
  graphed.step(p.ptr, g.ptr);
  LRLAB_CUDA_CHECK(cudaStreamEndCapture(owned.get(), &graph));
  LRLAB_CUDA_CHECK(cudaGraphDestroy(graph));
  EXPECT_THROW(detail::OptimizerAccess::set_update_unroll(graphed, 2), Error);
}

// The GPU counterpart of OptimizerReference (test_optimizer.cpp): the same 1000 steps, data and
// tolerances against float64 (tests/optim_long_run.hpp), with the weights and the optimizer's state
// on the device throughout. Each step's gradients are taken at the device's weights, copied back.
class OptimizerReferenceGpu : public ::testing::TestWithParam<lrlab::testing::LongRunVariant> {};

TEST_P(OptimizerReferenceGpu, ThousandStepsTrackFloat64) {
  LRLAB_REQUIRE_GPU();
  DeviceArray<float> dp(lrlab::testing::kLongRunParams), dg(lrlab::testing::kLongRunParams);
  bool on_device = false;
  lrlab::testing::expect_tracks_float64(
      GetParam(), Device::CUDA, [&](Optimizer& opt, std::vector<float>& p, const std::vector<float>& g) {
        if (!on_device) dp.upload(p);  // the starting weights; from then on the device's are the weights
        on_device = true;
        dg.upload(g);
        opt.step(dp.ptr, dg.ptr);
        p = dp.download();
      });
}

INSTANTIATE_TEST_SUITE_P(AllRules, OptimizerReferenceGpu, ::testing::ValuesIn(lrlab::testing::kLongRunVariants));

// Replicas in blocks rather than back to back: the MLP's packing (a tensor of all replicas first,
// on the vector path), and a misaligned one with gaps and a block edge inside a quad. A group edge
// falls inside a quad; clipping sums every block of a replica; replica 1 skips a step.
TEST(OptimizerGpu, PackedBlocksMatchCpuPath) {
  LRLAB_REQUIRE_GPU();
  const int64_t K = 3;
  struct Case {
    int64_t n;
    std::vector<ReplicaBlock> blocks;
  };
  const Case cases[] = {
      {1000, {{0, 600, 0, 600}, {600, 1000, 3 * 600, 400}}},
      {1001, {{0, 602, 1, 1012}, {602, 1001, 606, 1012}}},
  };
  for (const Case& c : cases) {
    for (const char* spec : {"adam(clip=0.5,check_finite=true)", "rmsprop(momentum=0.9)"}) {
      const std::string what = std::string(spec) + " n=" + std::to_string(c.n);
      Rng rng(static_cast<uint64_t>(c.n));
      OptimizerSetup setup;
      setup.replicas = K;
      setup.blocks = c.blocks;
      setup.groups = {{0, 501, 1.0f, -1.0f}, {501, c.n, 0.3f, 0.0f}};
      Twin t(spec, c.n, setup, rng);
      for (int64_t r = 0; r < K; ++r) {
        t.cpu.set_lr(1e-2f * (r + 1), r);
        t.gpu.set_lr(1e-2f * (r + 1), r);
      }
      const ReplicaPacking pk(c.n, K, c.blocks);
      for (int step = 0; step < 5; ++step) {
        std::vector<float> g = random_vector(t.size, rng);
        if (step == 2) g[pk.index(1, 700)] = std::numeric_limits<float>::quiet_NaN();
        t.step(g);
      }
      t.expect_equal(what);
      EXPECT_EQ(t.gpu.step_count(0), 5) << what;
      if (std::string(spec).find("check_finite") != std::string::npos)
        EXPECT_EQ(t.gpu.step_count(1), 4) << what;
      // One replica moves out and back: its moments are gathered and scattered by block.
      t.gpu.load_replica(2, t.gpu.save_replica(0));
      t.cpu.load_replica(2, t.cpu.save_replica(0));
      t.expect_equal(what + " after load_replica");
    }
  }
}

// A captured step reads everything that changes between steps from device memory: the gradients
// (and the clipping norm computed from them), the counter, the schedule, a manual rate and the
// decision to skip a step whose gradients are not finite.
TEST(OptimizerGpu, GraphReplayEqualsEagerSteps) {
  LRLAB_REQUIRE_GPU();
  const int64_t n = 50001, kSteps = 8;
  Rng rng(21);
  std::vector<float> p = random_vector(n, rng);
  const TestStream owned;
  const cudaStream_t stream = owned.get();
  OptimizerSetup setup;
  setup.stream = stream;
  const char* spec = "adam(clip=1.0,check_finite=true)";
  Optimizer eager(spec, Device::CUDA, n, setup);
  Optimizer graphed(spec, Device::CUDA, n, setup);
  std::vector<float> table = {1.0f, 0.5f, 0.25f, 0.125f, 0.0625f};
  eager.set_schedule(table);
  graphed.set_schedule(table);
  DeviceArray<float> p1(n), p2(n), dg(n), pool(kSteps * n);
  p1.upload(p);
  p2.upload(p);
  for (int64_t i = 0; i < kSteps; ++i) {
    std::vector<float> g = random_vector(n, rng);
    // Norms far above the clip (about 224 times i + 1) and, every third step, below it (about 0.02).
    const float scale = i % 3 == 1 ? 1e-4f : static_cast<float>(i + 1);
    for (float& v : g) v *= scale;
    if (i == 3) g[n / 2] = std::numeric_limits<float>::infinity();
    pool.upload(g, i * n);
  }
  auto feed = [&](int64_t i) {
    LRLAB_CUDA_CHECK(cudaMemcpyAsync(dg.ptr, pool.ptr + i * n, n * sizeof(float), cudaMemcpyDeviceToDevice, stream));
  };
  cudaGraph_t graph;
  LRLAB_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
  graphed.step(p2.ptr, dg.ptr);
  LRLAB_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
  cudaGraphExec_t exec;
  LRLAB_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  for (int64_t i = 0; i < kSteps; ++i) {
    if (i == kSteps - 1) {  // a manual change between replays reaches the captured step
      eager.set_lr(1e-4f);
      graphed.set_lr(1e-4f);
    }
    feed(i);
    eager.step(p1.ptr, dg.ptr);
    LRLAB_CUDA_CHECK(cudaGraphLaunch(exec, stream));
  }
  LRLAB_CUDA_CHECK(cudaStreamSynchronize(stream));
  EXPECT_EQ(p1.download(), p2.download());
  EXPECT_EQ(graphed.step_count(), kSteps - 1);  // the step with an inf was skipped
  EXPECT_EQ(graphed.replica_state().skipped_total, 1);
  EXPECT_EQ(eager.state_buffer(1), graphed.state_buffer(1));
  LRLAB_CUDA_CHECK(cudaGraphExecDestroy(exec));
  LRLAB_CUDA_CHECK(cudaGraphDestroy(graph));
}

// A step captured without gradient statistics has no finite check in its graph: a gradient scale
// set afterwards would be ignored by every replay, so it is refused. Before any capture, or when
// the captured step already reads the statistics (check_finite), the scale is accepted.
TEST(OptimizerGpu, GradScaleAfterCapturingAStepWithoutStatisticsIsRefused) {
  LRLAB_REQUIRE_GPU();
  const int64_t n = 1000;
  Rng rng(23);
  const TestStream owned;
  const cudaStream_t stream = owned.get();
  OptimizerSetup setup;
  setup.stream = stream;
  DeviceArray<float> dp(n), dg(n);
  dp.upload(random_vector(n, rng));
  dg.upload(random_vector(n, rng));
  auto capture_one_step = [&](Optimizer& opt) {
    cudaGraph_t graph;
    LRLAB_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
    opt.step(dp.ptr, dg.ptr);
    LRLAB_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
    LRLAB_CUDA_CHECK(cudaGraphDestroy(graph));
  };

  Optimizer eager_only("adam()", Device::CUDA, n, setup);
  eager_only.step(dp.ptr, dg.ptr);
  EXPECT_NO_THROW(eager_only.set_grad_scale(128.0f));

  Optimizer plain("adam()", Device::CUDA, n, setup);
  capture_one_step(plain);
  EXPECT_TRUE(lrlab::testing::throws_error_containing([&] { plain.set_grad_scale(128.0f); }, "before capturing"));

  Optimizer checked("adam(check_finite=true)", Device::CUDA, n, setup);
  capture_one_step(checked);
  EXPECT_NO_THROW(checked.set_grad_scale(128.0f));
  LRLAB_CUDA_CHECK(cudaStreamSynchronize(stream));
}

// With a loss scale, a replica whose gradients are not finite skips its whole step (weights,
// moments, counter) while the others update; NaN in the padding between replicas is not a gradient.
TEST(OptimizerGpu, NonFiniteGradientSkipsOnlyItsReplica) {
  LRLAB_REQUIRE_GPU();
  const int64_t n = 4099, ld = 4104, K = 3;
  Rng rng(5);
  Twin t("adam()", n, replicas(K, ld), rng);
  t.cpu.set_grad_scale(65536.0f);
  t.gpu.set_grad_scale(65536.0f);
  for (int step = 0; step < 4; ++step) {
    std::vector<float> g = random_vector(K * ld, rng);
    for (float& v : g) v *= 65536.0f;
    for (int64_t r = 0; r < K; ++r)
      for (int64_t i = n; i < ld; ++i) g[r * ld + i] = std::numeric_limits<float>::quiet_NaN();
    if (step == 1) g[ld + n - 1] = std::numeric_limits<float>::quiet_NaN();
    const std::vector<float> before = t.dp.download();
    t.step(g);
    if (step == 1) {
      const std::vector<float> after = t.dp.download();
      EXPECT_TRUE(std::equal(after.begin() + ld, after.begin() + 2 * ld, before.begin() + ld));
      EXPECT_EQ(t.gpu.replica_state(1).skipped, 1);
      EXPECT_EQ(t.gpu.replica_state(0).skipped, 0);
    }
  }
  t.expect_equal("non-finite");
  EXPECT_EQ(t.gpu.step_count(0), 4);
  EXPECT_EQ(t.gpu.step_count(1), 3);
  EXPECT_EQ(t.gpu.replica_state(1).skipped_total, 1);
}

// A replica at scale 0 is frozen on the GPU as on the CPU: its weights, moments, bf16 copy and count
// stay, where an update at rate 0 would move Adam's moments and Keras's momentum weights. Its NaN
// gradients (a diverged run's) are not counted as skipped steps, on the device either.
TEST(OptimizerGpu, ScaleZeroFreezesOnlyItsReplica) {
  LRLAB_REQUIRE_GPU();
  const int64_t n = 4099, ld = 4104, K = 3;
  for (const char* spec : {"adam()", "sgd(keras=true,momentum=0.9)", "rmsprop(keras=true,momentum=0.9,centered=true)",
                           "adamw(check_finite=true,clip=1)"}) {
    Rng rng(29);
    Twin t(spec, n, replicas(K, ld), rng);
    t.step(random_vector(K * ld, rng));
    t.cpu.set_scale(0.0f, 1);
    t.gpu.set_scale(0.0f, 1);
    auto frozen_part = [&] {
      std::vector<std::vector<float>> parts = {t.dp.download()};
      for (int k = 0; k < t.gpu.num_state_buffers(); ++k) parts.push_back(t.gpu.state_buffer(k));
      for (std::vector<float>& v : parts) v = std::vector<float>(v.begin() + ld, v.begin() + ld + n);
      return parts;
    };
    const std::vector<std::vector<float>> before = frozen_part();
    const std::vector<uint16_t> bf_before = t.dbf.download();
    for (int step = 0; step < 3; ++step) {
      std::vector<float> g = random_vector(K * ld, rng);
      std::fill(g.begin() + ld, g.begin() + 2 * ld, std::numeric_limits<float>::quiet_NaN());
      t.step(g);
    }
    EXPECT_EQ(frozen_part(), before) << spec;
    const std::vector<uint16_t> bf_after = t.dbf.download();
    EXPECT_TRUE(std::equal(bf_after.begin() + ld, bf_after.begin() + ld + n, bf_before.begin() + ld)) << spec;
    EXPECT_EQ(t.gpu.step_count(1), 1) << spec;
    EXPECT_EQ(t.gpu.step_count(0), 4) << spec;
    EXPECT_EQ(t.gpu.replica_state(1).skipped, kSkippedFrozen) << spec;
    EXPECT_EQ(t.gpu.replica_state(1).skipped_total, 0) << spec;
    t.expect_equal(std::string(spec) + " frozen");
    // Thawed, it trains on from where it stopped, as on the CPU.
    t.cpu.set_scale(1.0f, 1);
    t.gpu.set_scale(1.0f, 1);
    t.step(random_vector(K * ld, rng));
    EXPECT_EQ(t.gpu.step_count(1), 2) << spec;
    EXPECT_NE(frozen_part()[0], before[0]) << spec;
    t.expect_equal(std::string(spec) + " thawed");
  }
}

// The host-side controls act on the GPU as on the CPU: scale, step, grad scale, schedule swap,
// resetting a replica, moving a replica's state between optimizers, and a whole saved state.
TEST(OptimizerGpu, ControlsMatchCpuPath) {
  LRLAB_REQUIRE_GPU();
  const int64_t n = 2053, ld = 2056, K = 3;
  Rng rng(17);
  const OptimizerSetup setup = replicas(K, ld);
  for (const char* spec : {"adam(amsgrad=true)", "rmsprop(momentum=0.9,centered=true)",
                           "adagrad(initial_accumulator=0.2)"}) {
    Twin t(spec, n, setup, rng);
    auto steps = [&](int count) {
      for (int i = 0; i < count; ++i) t.step(random_vector(K * ld, rng));
    };
    steps(2);
    for (Optimizer* o : {&t.cpu, &t.gpu}) {
      o->set_scale(0.5f, 1);
      o->set_step(7, 2);
      o->set_schedule({1.0f, 0.9f, 0.8f, 0.7f, 0.6f, 0.5f, 0.4f, 0.3f, 0.2f}, -1);
      o->set_grad_scale(4.0f);
    }
    steps(2);
    t.expect_equal(std::string(spec) + " after setters");
    // A shorter table reuses the device memory of the last one, a longer one replaces it.
    std::vector<float> longer(20);
    for (size_t i = 0; i < longer.size(); ++i) longer[i] = 1.0f / (1.0f + i);
    for (Optimizer* o : {&t.cpu, &t.gpu}) {
      o->set_schedule({0.5f, 0.25f}, 0);
      o->set_schedule(longer, 2);
    }
    steps(2);
    t.expect_equal(std::string(spec) + " after swapping tables");
    EXPECT_EQ(t.gpu.next_lr(0), t.cpu.next_lr(0)) << spec;
    EXPECT_EQ(t.gpu.next_lr(2), t.cpu.next_lr(2)) << spec;
    for (Optimizer* o : {&t.cpu, &t.gpu}) o->reset_replica(0);
    steps(1);
    t.expect_equal(std::string(spec) + " after reset_replica");
    // Replica 2 saved on the CPU moves into replica 1 on both paths, and replica 0 saved on the
    // GPU into replica 0 on both.
    const std::string moved = t.cpu.save_replica(2);
    t.gpu.load_replica(1, moved);
    t.cpu.load_replica(1, moved);
    EXPECT_EQ(t.gpu.save_replica(1), t.cpu.save_replica(1)) << spec;
    const std::string back = t.gpu.save_replica(0);
    t.cpu.load_replica(0, back);
    t.gpu.load_replica(0, back);
    EXPECT_EQ(t.cpu.save_replica(0), back) << spec;
    steps(1);
    t.expect_equal(std::string(spec) + " after load_replica");
    // A whole state saved on one path loads on the other.
    const std::string whole = t.gpu.save();
    t.cpu.load(whole);
    EXPECT_EQ(t.cpu.save(), whole) << spec;
    steps(1);
    t.expect_equal(std::string(spec) + " after load");
  }
}

TEST(OptimizerGpu, PerReplicaRatesAndTablesAtConstruction) {
  LRLAB_REQUIRE_GPU();
  const int64_t n = 2053, ld = 2056, K = 3;
  Rng rng(23);
  OptimizerSetup setup = replicas(K, ld);
  setup.lrs = {1e-2f, 2e-2f, 3e-2f};
  setup.tables = {{1.0f, 0.5f, 0.25f}, {}, {0.5f, 2.0f}};
  Twin t("adam()", n, setup, rng);
  for (int i = 0; i < 3; ++i) t.step(random_vector(K * ld, rng));
  t.expect_equal("per-replica rates and tables");
  for (int64_t r = 0; r < K; ++r) EXPECT_EQ(t.gpu.next_lr(r), t.cpu.next_lr(r)) << "replica " << r;
  EXPECT_FLOAT_EQ(t.gpu.next_lr(0), 0.25f * 1e-2f);
  EXPECT_FLOAT_EQ(t.gpu.next_lr(2), 2.0f * 3e-2f);
  EXPECT_EQ(t.gpu.save(), t.cpu.save());
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

// One replica in one block that does not start at the buffer's first float: the whole-grid norm
// reduction sums that block's gradients, not the floats before it (NaN here, which the finite check
// would take for a non-finite gradient, and which would also change the clipping norm).
TEST(OptimizerGpu, SingleOffsetBlockReducesItsOwnGradients) {
  LRLAB_REQUIRE_GPU();
  const int64_t n = 4099, offset = 8;
  Rng rng(41);
  OptimizerSetup setup;
  setup.blocks = {{0, n, offset, n}};
  Twin t("adam(clip=0.5,check_finite=true)", n, setup, rng);
  for (int step = 0; step < 4; ++step) {
    std::vector<float> g = random_vector(t.size, rng);
    for (int64_t i = 0; i < offset; ++i) g[i] = std::numeric_limits<float>::quiet_NaN();
    for (int64_t i = offset; i < offset + 8; ++i) g[i] *= 100.0f;  // the norm's largest part
    t.step(g);
  }
  t.expect_equal("single offset block");
  EXPECT_EQ(t.gpu.step_count(), 4);
}

// A bf16 copy 2, 4 or 6 bytes off an 8-byte boundary while the weights and gradients are 16-byte
// aligned: its 8-byte vector store would be misaligned, so the update goes element-wise, and the
// copy is still the weights rounded, with nothing written before or after it.
TEST(OptimizerGpu, MisalignedBf16CopyMatchesCpuPath) {
  LRLAB_REQUIRE_GPU();
  const int64_t n = 1029;
  for (int64_t shift : {1, 2, 3}) {
    const std::string what = "bf16 shift " + std::to_string(shift);
    Rng rng(static_cast<uint64_t>(43 + shift));
    Twin t("adam()", n, OptimizerSetup{}, rng);
    DeviceArray<uint16_t> bf(n + 4);
    bf.poison();
    for (int step = 0; step < 3; ++step) {
      const std::vector<float> g = random_vector(n, rng);
      t.dg.upload(g);
      t.cpu.step(t.p.data(), g.data());
      t.gpu.step(t.dp.ptr, t.dg.ptr, bf.ptr + shift);
    }
    t.expect_equal(what);
    const std::vector<float> gp = t.dp.download();
    const std::vector<uint16_t> gbf = bf.download();
    for (int64_t j = 0; j < n + 4; ++j) {
      if (j >= shift && j < shift + n) {
        ASSERT_EQ(gbf[j], float_to_bf16(gp[j - shift])) << what << " at " << j;
      } else {
        ASSERT_EQ(gbf[j], 0xFFFF) << what << " bf16 written outside the copy at " << j;
      }
    }
  }
}

// Resetting a replica other than the first puts that replica's moments (and only its) back to their
// initial values on the device, whether the replicas' copies lie end to end or with gaps between.
TEST(OptimizerGpu, ResetReplicaResetsThatReplica) {
  LRLAB_REQUIRE_GPU();
  const int64_t n = 1029, K = 3;
  for (int64_t ld : {n, n + 7}) {
    for (const char* spec : {"adagrad(initial_accumulator=0.2)", "adam(amsgrad=true)"}) {
      const std::string what = std::string(spec) + " ld=" + std::to_string(ld);
      Rng rng(static_cast<uint64_t>(ld));
      Twin t(spec, n, replicas(K, ld), rng);
      for (int i = 0; i < 3; ++i) t.step(random_vector(t.size, rng));
      for (Optimizer* o : {&t.cpu, &t.gpu}) o->reset_replica(1);
      t.expect_equal(what + " after reset_replica(1)");
      t.step(random_vector(t.size, rng));
      for (Optimizer* o : {&t.cpu, &t.gpu}) o->reset_replica(2);
      t.step(random_vector(t.size, rng));
      t.expect_equal(what + " after reset_replica(2)");
      EXPECT_EQ(t.gpu.step_count(1), 2) << what;
      EXPECT_EQ(t.gpu.step_count(2), 1) << what;
    }
  }
}

// A whole state saved on the CPU loads into the GPU optimizer: counters, tables and moments reach
// device memory, and the next steps match the CPU's.
TEST(OptimizerGpu, LoadOnGpuMatchesCpuPath) {
  LRLAB_REQUIRE_GPU();
  const int64_t n = 2053, ld = 2056, K = 3;
  Rng rng(23);
  for (const char* spec : {"adam(amsgrad=true)", "rmsprop(momentum=0.9,centered=true)"}) {
    Twin t(spec, n, replicas(K, ld), rng);
    for (int i = 0; i < 2; ++i) t.step(random_vector(t.size, rng));
    // The CPU runs ahead with other settings; its state then replaces the GPU's.
    t.cpu.set_schedule({1.0f, 0.8f, 0.6f, 0.4f, 0.2f}, 1);
    t.cpu.set_scale(0.5f, 2);
    for (int i = 0; i < 2; ++i) {
      const std::vector<float> g = random_vector(t.size, rng);
      t.cpu.step(t.p.data(), g.data());
    }
    t.dp.upload(t.p);
    t.gpu.load(t.cpu.save());
    t.expect_equal(std::string(spec) + " after load");
    for (int i = 0; i < 2; ++i) t.step(random_vector(t.size, rng));
    t.expect_equal(std::string(spec) + " steps after load");
    EXPECT_EQ(t.gpu.step_count(2), t.cpu.step_count(2)) << spec;
  }
}

// unstash() keeps the schedule installed after the stash (as a range test swaps its ramp back): the
// device state must not point at the table that was replaced, whose memory is freed.
TEST(OptimizerGpu, UnstashKeepsTheCurrentTable) {
  LRLAB_REQUIRE_GPU();
  const int64_t n = 1030, K = 2;
  Rng rng(29);
  Twin t("adam()", n, replicas(K, n), rng);
  for (Optimizer* o : {&t.cpu, &t.gpu}) o->set_schedule({1.0f, 0.5f}, -1);
  t.step(random_vector(t.size, rng));
  for (Optimizer* o : {&t.cpu, &t.gpu}) o->stash();
  t.step(random_vector(t.size, rng));
  std::vector<float> longer(16);
  for (size_t i = 0; i < longer.size(); ++i) longer[i] = 0.1f * static_cast<float>(i + 1);
  for (Optimizer* o : {&t.cpu, &t.gpu}) {
    o->set_schedule(longer, -1);  // longer: new device memory, the old table freed
    o->unstash();
  }
  EXPECT_EQ(t.gpu.next_lr(0), t.cpu.next_lr(0));
  for (int i = 0; i < 3; ++i) t.step(random_vector(t.size, rng));
  // Only the moments and counters roll back; the parameters went on.
  t.expect_equal("after unstash");
  EXPECT_EQ(t.gpu.step_count(1), 4);
}

// New tables for several replicas take all their device memory before any replica changes: running
// out part way leaves every replica with its old table. It fills the device, so ctest runs it alone
// (tests/CMakeLists.txt) and gpu_check.sh keeps it out of the sanitizer runs.
TEST(OptimizerOutOfMemoryGpu, TablesForAllReplicasOrNone) {
  LRLAB_REQUIRE_GPU();
  const int64_t K = 3, n = 64;
  OptimizerSetup setup;
  setup.replicas = K;
  setup.lr = 1e-3f;
  Optimizer opt("sgd()", Device::CUDA, n, setup);
  opt.set_schedule({0.5f});
  const size_t table_floats = size_t{16} << 20;  // 64 MiB per table
  const size_t table_bytes = table_floats * sizeof(float);
  // Room for one new table and a half: the second does not fit.
  const size_t keep = 3 * table_bytes / 2;
  size_t free_bytes = 0, total_bytes = 0;
  LRLAB_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  ASSERT_GT(free_bytes, keep);
  struct Ballast {
    std::vector<void*> blocks;
    ~Ballast() {
      for (void* p : blocks) cudaFree(p);
    }
  } ballast;
  // In blocks of at most 1 GiB, halved when one does not fit: what cudaMemGetInfo reports free is
  // not always allocatable in one piece (a GPU of 141 GB, the driver's reserve, page granularity).
  for (size_t block = size_t{1} << 30; block >= (size_t{2} << 20);) {
    LRLAB_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
    if (free_bytes <= keep + (size_t{2} << 20)) break;
    void* p = nullptr;
    if (cudaMalloc(&p, std::min(block, free_bytes - keep)) == cudaSuccess) {
      ballast.blocks.push_back(p);
    } else {
      (void)cudaGetLastError();  // a failed allocation must not fail the next launch's check
      block /= 2;
    }
  }
  LRLAB_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  ASSERT_GE(free_bytes, table_bytes + (size_t{8} << 20)) << "the ballast left too little for one table";
  ASSERT_LT(free_bytes, 2 * table_bytes) << "the ballast left room for two tables";
  const std::vector<float> big(table_floats, 0.25f);
  EXPECT_THROW(opt.set_schedule(big), Error);
  for (int64_t r = 0; r < K; ++r) EXPECT_FLOAT_EQ(opt.next_lr(r), 0.5e-3f) << "replica " << r;
  // A whole state with such tables fails the same way and changes nothing.
  Optimizer cpu("sgd()", Device::CPU, n, setup);
  cpu.set_schedule(big);
  cpu.set_step(7);
  EXPECT_THROW(opt.load(cpu.save()), Error);
  for (int64_t r = 0; r < K; ++r) {
    EXPECT_FLOAT_EQ(opt.next_lr(r), 0.5e-3f) << "replica " << r;
    EXPECT_EQ(opt.step_count(r), 0) << "replica " << r;
  }
}

}  // namespace
