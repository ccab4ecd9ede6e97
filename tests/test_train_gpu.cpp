// The training engine on the GPU against the CPU engine: same data, same seeds, same steps.
// Skipped, with the reason, where no GPU exists.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <memory>
#include <regex>
#include <thread>

#include "gpu.hpp"
#include "test_util.hpp"
#include "lrlab/data.hpp"
#include "lrlab/error.hpp"
#include "lrlab/train.hpp"
#include "lrlab/train_engine.hpp"

using namespace lrlab;

namespace {

EngineConfig engine_config(Device d, int64_t K, bool graphs) {
  EngineConfig c;
  c.model.inputs = 2;
  c.model.hidden = {32, 16};
  c.model.outputs = 3;
  c.optimizer = "adam()";
  c.replicas.clear();
  for (int64_t k = 0; k < K; ++k)
    c.replicas.push_back({static_cast<float>(1e-3 * (k + 1)), k % 2 ? "step(every=1ep,gamma=0.5)" : "constant",
                          static_cast<uint64_t>(k)});
  c.batch = 64;
  c.epochs = 3;
  c.device = d;
  c.graphs = graphs;
  return c;
}

DataSplits spirals() {
  DataOptions o;
  o.synthetic_samples = 1000;  // 720 training samples: a partial last batch of 16
  return load_data("spirals", o);
}

// Regression: the targets' gather and the MSE loss, tanh hidden layers.
EngineConfig sine_config(Device d, int64_t K, bool graphs) {
  EngineConfig c = engine_config(d, K, graphs);
  c.model.inputs = 1;
  c.model.outputs = 1;
  c.model.activation = Activation::Tanh;
  c.model.loss = LossKind::MeanSquaredError;
  c.optimizer = "sgd(momentum=0.9)";
  return c;
}

DataSplits sine() {
  DataOptions o;
  o.synthetic_samples = 1000;
  return load_data("sine", o);
}

double max_rel(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i]) || !std::isfinite(b[i])) return INFINITY;
    num = std::max(num, std::abs(static_cast<double>(a[i]) - b[i]));
    den = std::max(den, std::abs(static_cast<double>(b[i])));
  }
  return num / den;
}

// Every epoch of the configuration (the last one replays the partial batch's graph after the data
// order changed twice), classification with Adam and regression with SGD, one replica and several.
void expect_engines_agree(const EngineConfig& cpu_cfg, const EngineConfig& gpu_cfg, const DataSplits& data) {
  const int64_t K = static_cast<int64_t>(cpu_cfg.replicas.size());
  TrainEngine cpu(cpu_cfg, data);
  TrainEngine gpu(gpu_cfg, data);
  ASSERT_EQ(cpu.params(), gpu.params());  // same initialisation
  for (int64_t epoch = 0; epoch < cpu_cfg.epochs; ++epoch) {
    cpu.begin_epoch(epoch);
    gpu.begin_epoch(epoch);
    std::vector<float> lc = cpu.run(cpu.steps_per_epoch());
    std::vector<float> lg = gpu.run(gpu.steps_per_epoch());
    EXPECT_LT(max_rel(lg, lc), 1e-3) << cpu_cfg.optimizer << " K=" << K << " epoch " << epoch;
  }
  EXPECT_LT(max_rel(gpu.params(), cpu.params()), 1e-3) << cpu_cfg.optimizer << " K=" << K;
  TrainEngine::Eval ec = cpu.evaluate(Split::Val), eg = gpu.evaluate(Split::Val);
  for (int64_t r = 0; r < K; ++r) {
    EXPECT_NEAR(eg.loss[r], ec.loss[r], 1e-3 * std::abs(ec.loss[r])) << cpu_cfg.optimizer;
    if (!std::isnan(ec.accuracy[r])) EXPECT_NEAR(eg.accuracy[r], ec.accuracy[r], 0.01);
  }
  EXPECT_EQ(gpu.optimizer().step_count(0), cpu_cfg.epochs * gpu.steps_per_epoch());
  EXPECT_GT(gpu.graph_launches(), 0);
}

// An MPI rank names its GPU by UUID to find ranks that share one (shared_gpu_warning).
TEST(DeviceGpu, UuidIsNvidiaSmisFormOfTheDevicesOwn) {
  LRLAB_REQUIRE_GPU();
  const std::string uuid = gpu_uuid(current_gpu());
  EXPECT_TRUE(std::regex_match(uuid, std::regex("GPU-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")))
      << uuid;
  EXPECT_NE(uuid, "GPU-00000000-0000-0000-0000-000000000000");
  EXPECT_EQ(gpu_uuid(current_gpu()), uuid);
  EXPECT_THROW(gpu_uuid(-1), CudaError);
}

TEST(TrainEngineGpu, MatchesTheCpuEngine) {
  LRLAB_REQUIRE_GPU();
  DataSplits data = spirals();
  for (int64_t K : {int64_t(1), int64_t(4)})
    expect_engines_agree(engine_config(Device::CPU, K, false), engine_config(Device::CUDA, K, true), data);
}

TEST(TrainEngineGpu, RegressionMatchesTheCpuEngine) {
  LRLAB_REQUIRE_GPU();
  DataSplits data = sine();
  for (int64_t K : {int64_t(1), int64_t(3)})
    expect_engines_agree(sine_config(Device::CPU, K, false), sine_config(Device::CUDA, K, true), data);
}

TEST(TrainEngineGpu, GraphReplayEqualsEagerSteps) {
  LRLAB_REQUIRE_GPU();
  DataSplits data = spirals();
  TrainEngine eager(engine_config(Device::CUDA, 3, false), data);
  TrainEngine graphed(engine_config(Device::CUDA, 3, true), data);
  for (int64_t epoch = 0; epoch < 3; ++epoch) {
    eager.begin_epoch(epoch);
    graphed.begin_epoch(epoch);
    EXPECT_EQ(eager.run(eager.steps_per_epoch()), graphed.run(graphed.steps_per_epoch()));
  }
  EXPECT_EQ(eager.params(), graphed.params());
  EXPECT_EQ(eager.graph_launches(), 0);
  // Each batch shape runs eagerly once and is captured at its second step; the rest are replays.
  EXPECT_EQ(graphed.graph_launches(), 3 * graphed.steps_per_epoch() - 2);
}

// Engines on their own streams reading one upload of the data train exactly as engines with their
// own copies, even while they run at once; shared data from other DataSplits is refused.
TEST(TrainEngineGpu, SharedDeviceDataEqualsOwnCopies) {
  LRLAB_REQUIRE_GPU();
  DataSplits data = spirals();
  std::shared_ptr<const DeviceData> shared = upload_to_device(data);
  TrainEngine own(engine_config(Device::CUDA, 2, true), data);
  TrainEngine a(engine_config(Device::CUDA, 2, true), data, shared);
  TrainEngine b(engine_config(Device::CUDA, 2, true), data, shared);
  EXPECT_EQ(a.device_data(), shared);
  EXPECT_EQ(b.device_data(), shared);
  EXPECT_NE(own.device_data(), shared);
  EXPECT_NE(own.device_data(), nullptr);
  shared.reset();  // the engines keep it alive
  for (int64_t epoch = 0; epoch < 2; ++epoch) {
    own.begin_epoch(epoch);
    a.begin_epoch(epoch);
    b.begin_epoch(epoch);
    const std::vector<float> want = own.run(own.steps_per_epoch());
    std::vector<float> la, lb;
    std::thread other([&] { lb = b.run(b.steps_per_epoch()); });
    la = a.run(a.steps_per_epoch());
    other.join();
    EXPECT_EQ(la, want) << "epoch " << epoch;
    EXPECT_EQ(lb, want) << "epoch " << epoch;
  }
  EXPECT_EQ(a.params(), own.params());
  EXPECT_EQ(a.evaluate(Split::Test).loss, own.evaluate(Split::Test).loss);

  DataSplits other_data = spirals();
  EXPECT_THROW(TrainEngine(engine_config(Device::CUDA, 1, true), other_data, upload_to_device(data)), Error);
}

// The training loop on the GPU follows the CPU's: per-epoch losses, plateau events at the same
// epochs with the same scales, and a checkpoint written on the GPU resumes on the CPU.
TEST(TrainGpu, LoopAndCheckpointMatchTheCpu) {
  LRLAB_REQUIRE_GPU();
  TrainOptions o = lrlab::testing::small_spirals(1500, {24, 24});
  o.lr = 1e-2;
  o.epochs = 6;
  o.seed = 3;
  o.schedule = "step(every=2ep,gamma=0.7)";
  o.plateau = "plateau(factor=0.5,patience=0)";
  const TrainReport cpu = train(o);

  const std::string ck = ::testing::TempDir() + "lrlab_gpu_to_cpu.ckpt";
  TrainOptions first = o;
  first.device = "cuda";
  first.epochs = 3;
  first.save = ck;
  const TrainReport gpu = train(first);
  ASSERT_EQ(gpu.epochs.size(), 3u);
  for (size_t e = 0; e < gpu.epochs.size(); ++e) {
    EXPECT_NEAR(gpu.epochs[e].train_loss, cpu.epochs[e].train_loss, 1e-3 * cpu.epochs[e].train_loss) << e;
    EXPECT_NEAR(gpu.epochs[e].val_loss, cpu.epochs[e].val_loss, 1e-3 * cpu.epochs[e].val_loss) << e;
    EXPECT_EQ(gpu.epochs[e].lr, cpu.epochs[e].lr) << e;
  }
  auto plateaus = [](const TrainReport& r, int64_t up_to_epoch) {
    std::vector<std::pair<int64_t, double>> out;
    for (const TrainEvent& ev : r.events)
      if (ev.kind == "plateau" && ev.epoch <= up_to_epoch) out.emplace_back(ev.epoch, ev.scale);
    return out;
  };
  EXPECT_EQ(plateaus(gpu, 3), plateaus(cpu, 3));

  TrainOptions second = o;
  second.resume = ck;
  second.lr_given = false;
  const TrainReport resumed = train(second);
  EXPECT_EQ(resumed.start_epoch, 3);
  EXPECT_NEAR(resumed.test_loss, cpu.test_loss, 2e-3 * cpu.test_loss);
  EXPECT_NEAR(resumed.test_accuracy, cpu.test_accuracy, 0.01);
  std::remove(ck.c_str());
}

TEST(TrainEngineGpu, GuardRestoresOnTheGpu) {
  LRLAB_REQUIRE_GPU();
  TrainOptions o = lrlab::testing::small_spirals(1500, {24, 24});
  o.lr = 50.0;
  o.epochs = 6;
  o.check_every = 5;
  o.device = "cuda";
  TrainReport r = train(o);
  EXPECT_FALSE(r.stopped_by_guard);
  EXPECT_FALSE(r.events.empty());
  EXPECT_GT(r.test_accuracy, 0.6);
}

// Regression with several targets per sample: the gather copies each sample's whole target row.
DataSplits multi_target() {
  auto make = [](int64_t n, uint64_t seed) {
    Dataset d;
    d.n = n;
    d.dim = 2;
    d.targets_dim = 3;
    uint64_t s = seed;
    auto next = [&s] {
      s = s * 6364136223846793005ULL + 1442695040888963407ULL;
      return static_cast<float>((s >> 40) & 0xFFFF) / 32768.0f - 1.0f;
    };
    for (int64_t i = 0; i < n; ++i) {
      const float a = next(), b = next();
      d.x.insert(d.x.end(), {a, b});
      d.y.insert(d.y.end(), {a + b, a * b, std::sin(3.0f * a) - b});
    }
    return d;
  };
  DataSplits s;
  s.train = make(150, 1);  // a partial last batch of 22
  s.val = make(40, 2);
  s.test = make(10, 3);
  return s;
}

TEST(TrainEngineGpu, MultiTargetRegressionMatchesTheCpuEngine) {
  LRLAB_REQUIRE_GPU();
  const DataSplits data = multi_target();
  for (int64_t K : {int64_t(1), int64_t(2)}) {
    EngineConfig cpu = sine_config(Device::CPU, K, false), gpu = sine_config(Device::CUDA, K, true);
    for (EngineConfig* c : {&cpu, &gpu}) {
      c->model.inputs = 2;
      c->model.outputs = 3;
    }
    expect_engines_agree(cpu, gpu, data);
  }
}

// An epoch run a few steps at a time (as the training loop's guard checks run it) returns each
// call's own losses, and trains as the CPU engine does.
TEST(TrainEngineGpu, PartialRunsReturnTheirOwnLosses) {
  LRLAB_REQUIRE_GPU();
  const DataSplits data = spirals();
  TrainEngine cpu(engine_config(Device::CPU, 2, false), data);
  TrainEngine gpu(engine_config(Device::CUDA, 2, true), data);
  for (int64_t epoch = 0; epoch < 2; ++epoch) {
    cpu.begin_epoch(epoch);
    gpu.begin_epoch(epoch);
    for (int64_t steps : {int64_t(1), int64_t(3), int64_t(4), cpu.steps_per_epoch() - 8}) {
      const std::vector<float> lc = cpu.run(steps), lg = gpu.run(steps);
      ASSERT_EQ(lg.size(), lc.size());
      EXPECT_LT(max_rel(lg, lc), 1e-3) << "epoch " << epoch << ", " << steps << " steps";
    }
    EXPECT_EQ(gpu.steps_left_in_epoch(), 0);
  }
  EXPECT_LT(max_rel(gpu.params(), cpu.params()), 1e-3);
}

// unstash() rewinds the data on the device as on the host: the steps after the stash train again
// on the same minibatches, as the CPU engine's do.
TEST(TrainEngineGpu, UnstashRewindsAsTheCpuEngineDoes) {
  LRLAB_REQUIRE_GPU();
  const DataSplits data = spirals();
  TrainEngine cpu(engine_config(Device::CPU, 2, false), data);
  TrainEngine gpu(engine_config(Device::CUDA, 2, true), data);
  for (TrainEngine* e : {&cpu, &gpu}) {
    e->begin_epoch(0);
    e->run(3);
    e->stash();
    e->run(5);
    e->unstash();
  }
  EXPECT_EQ(gpu.steps_left_in_epoch(), cpu.steps_left_in_epoch());
  const std::vector<float> lc = cpu.run(4), lg = gpu.run(4);
  EXPECT_LT(max_rel(lg, lc), 1e-3);
  EXPECT_LT(max_rel(gpu.params(), cpu.params()), 1e-3);
}

// Where a GPU can be used, "auto" picks it, as "cuda" and "gpu" name it.
TEST(DeviceGpu, AutoPicksTheGpu) {
  LRLAB_REQUIRE_GPU();
  EXPECT_EQ(parse_device("auto"), Device::CUDA);
  EXPECT_EQ(parse_device("cuda"), Device::CUDA);
  EXPECT_EQ(parse_device("gpu"), Device::CUDA);
  EXPECT_EQ(parse_device("cpu"), Device::CPU);
}

#if defined(LRLAB_DEVICE_EMULATOR)
// Once both batch shapes have their graphs, an epoch is one graph launch per step and nothing else:
// the minibatch index and the step stay on the device, and the host waits for the device only to
// fetch the epoch's losses at the end, however many steps it ran. Only the device emulator counts
// what the host asks of the device.
TEST(TrainEngineGpu, StepsNeitherWaitNorUpload) {
  LRLAB_REQUIRE_GPU();
  DataSplits data = spirals();
  TrainEngine gpu(engine_config(Device::CUDA, 2, true), data);
  for (int64_t epoch = 0; epoch < 2; ++epoch) {
    gpu.begin_epoch(epoch);
    gpu.run(gpu.steps_per_epoch());
  }
  gpu.begin_epoch(2);
  const lrlab_emu::Counters before = lrlab_emu::counters();
  const std::vector<float> losses = gpu.run(gpu.steps_per_epoch());
  const lrlab_emu::Counters after = lrlab_emu::counters();
  EXPECT_EQ(after.graph_launches - before.graph_launches, gpu.steps_per_epoch());
  EXPECT_EQ(after.direct_work - before.direct_work, 1);  // the losses' download
  EXPECT_LE(after.host_waits - before.host_waits, 2);    // the same download, and its synchronisation
  for (float l : losses) EXPECT_TRUE(std::isfinite(l));
}

// A graph whose instantiation fails is not kept: the error reaches the caller, and the next run()
// captures again and trains as an engine that never failed (CUDA leaves the handle of a failed
// instantiation unspecified; the emulator leaves one that faults when launched).
TEST(TrainEngineGpu, AFailedGraphInstantiationIsNotLaunchedLater) {
  LRLAB_REQUIRE_GPU();
  DataSplits data = spirals();
  TrainEngine failed(engine_config(Device::CUDA, 2, true), data), plain(engine_config(Device::CUDA, 2, true), data);
  failed.begin_epoch(0);
  plain.begin_epoch(0);
  std::vector<float> a = failed.run(1), b = plain.run(1);  // the eager first step of the shape
  lrlab_emu::fail_graph_instantiations(1);
  EXPECT_THROW(failed.run(1), CudaError);
  lrlab_emu::fail_graph_instantiations(0);
  failed.begin_epoch(0);  // the step that failed was never enqueued as a graph: train the epoch again
  plain.begin_epoch(0);
  a = failed.run(failed.steps_per_epoch());
  b = plain.run(plain.steps_per_epoch());
  EXPECT_EQ(a, b);
}

// A capture that fails part-way (a kernel launch, a GEMM, the optimizer's or the loss record's work)
// throws, ends the capture and leaves the stream usable; nothing it recorded ever runs, so the
// engine then trains as one that never failed, capturing the step again.
TEST(TrainEngineGpu, AFailedCaptureLeavesTheEngineTrainingAsOneThatNeverFailed) {
  LRLAB_REQUIRE_GPU();
  DataSplits data = spirals();
  for (const int item : {0, 1, 7, 14, 19}) {
    SCOPED_TRACE("the capture fails at its piece of work " + std::to_string(item));
    TrainEngine failed(engine_config(Device::CUDA, 2, true), data), plain(engine_config(Device::CUDA, 2, true), data);
    failed.begin_epoch(0);
    plain.begin_epoch(0);
    std::vector<float> a = failed.run(1), b = plain.run(1);  // the eager first step of the shape
    lrlab_emu::fail_capture_at(item);
    EXPECT_THROW(failed.run(1), CudaError);
    lrlab_emu::fail_capture_at(-1);
    EXPECT_EQ(failed.optimizer().step_count(), plain.optimizer().step_count());
    failed.begin_epoch(0);
    plain.begin_epoch(0);
    a = failed.run(failed.steps_per_epoch());
    b = plain.run(plain.steps_per_epoch());
    EXPECT_EQ(a, b);
    EXPECT_EQ(failed.params(), plain.params());
    EXPECT_GT(failed.graph_launches(), 0) << "the step was captured again";
  }
}
#endif

}  // namespace
