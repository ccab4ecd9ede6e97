// The library's promises to a trainer who builds its inputs by hand, moves its objects around or
// passes extreme sizes: an lrlab::Error with one clear line, never a crash, undefined behaviour or a
// silent NaN. Each case here once crashed or misbehaved.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "lrlab/checkpoint.hpp"
#include "lrlab/data.hpp"
#include "lrlab/device.hpp"
#include "lrlab/device_buffer.hpp"
#include "lrlab/error.hpp"
#include "lrlab/lr_finder.hpp"
#include "lrlab/mlp.hpp"
#include "lrlab/optimizer.hpp"
#include "lrlab/packing.hpp"
#include "lrlab/plateau.hpp"
#include "lrlab/plot.hpp"
#include "lrlab/schedule.hpp"
#include "lrlab/sweep.hpp"
#include "lrlab/train.hpp"
#include "lrlab/train_engine.hpp"
#include "test_util.hpp"

using namespace lrlab;
using lrlab::testing::error_of;
using lrlab::testing::throws_error_containing;

namespace {

DataSplits small_blobs() {
  DataOptions d;
  d.synthetic_samples = 300;
  return load_data("blobs", d);
}

EngineConfig engine_for(const DataSplits& data) {
  EngineConfig c;
  c.model.inputs = data.train.dim;
  c.model.hidden = {8};
  c.model.outputs = data.train.num_classes;
  c.replicas = {ReplicaSpec{1e-2f, "constant", 1}};
  c.batch = 32;
  c.epochs = 1;
  c.device = Device::CPU;
  return c;
}

// Engines read their data in place: a temporary would be gone by the first step (it compiled, and
// run() then read freed memory).
static_assert(!std::is_constructible_v<TrainEngine, EngineConfig, DataSplits&&>);
static_assert(std::is_constructible_v<TrainEngine, EngineConfig, const DataSplits&>);

// Data built by hand is checked against what its fields say: before, a missing label array
// crashed run(), a short x trained on memory past its end, and a validation split of another width
// was evaluated silently.
TEST(EngineContracts, HandBuiltDataIsCheckedBeforeTraining) {
  const DataSplits good = small_blobs();
  {
    TrainEngine engine(engine_for(good), good);
    engine.begin_epoch(0);
    EXPECT_EQ(engine.run(1).size(), 1u);
  }
  auto refused = [&](auto change) {
    DataSplits d = good;
    change(d);
    return !error_of([&] { TrainEngine engine(engine_for(good), d); }).empty();
  };
  EXPECT_TRUE(refused([](DataSplits& d) { d.train.labels.clear(); }));
  EXPECT_TRUE(refused([](DataSplits& d) { d.train.x.resize(4); }));
  EXPECT_TRUE(refused([](DataSplits& d) { d.train.labels[7] = 99; }));
  EXPECT_TRUE(refused([](DataSplits& d) { d.train.labels[7] = -1; }));
  EXPECT_TRUE(refused([](DataSplits& d) { d.train.y.assign(d.train.n, 0.0f); }));
  EXPECT_TRUE(refused([](DataSplits& d) {
    d.val.dim = 1;
    d.val.x.resize(d.val.n);
  }));
  EXPECT_TRUE(refused([](DataSplits& d) { d.test.num_classes = 7; }));
  EXPECT_FALSE(refused([](DataSplits& d) { d.val = Dataset{}; }));  // no validation split at all
}

// epochs x steps per epoch wrapped around int64 (undefined behaviour) into a small table.
TEST(EngineContracts, EpochsThatOverflowTheStepCountAreRefused) {
  const DataSplits data = small_blobs();
  EngineConfig c = engine_for(data);
  const int64_t spe = (data.train.n + c.batch - 1) / c.batch;
  ASSERT_EQ(spe, 7);  // the wrap below is worked out for 7 steps per epoch
  // 7 x 2635249153387078803 = 2^64 + 5: the product wrapped to a table of 5 steps.
  c.epochs = 2635249153387078803;
  EXPECT_TRUE(throws_error_containing([&] { TrainEngine engine(c, data); }, "epochs"));
  c.epochs = 2;
  TrainEngine engine(c, data);
  EXPECT_THROW(engine.table(1), Error);  // was std::out_of_range
  EXPECT_EQ(static_cast<int64_t>(engine.table(0).size()), engine.total_steps());
}

// The range test divided by zero (SIGFPE) when the batch was so large that rounding it up
// overflowed; a batch beyond the data set is the whole set, as training takes it.
TEST(LrFinderContracts, AHugeBatchIsTheWholeDataSet) {
  TrainOptions base = lrlab::testing::small_spirals(300, {8});
  base.batch = std::numeric_limits<int64_t>::max();
  FinderOptions f;
  f.steps = 20;
  const std::vector<FinderCurve> curves = find_lr(base, {"adam()"}, f);
  ASSERT_EQ(curves.size(), 1u);
  EXPECT_GT(curves[0].steps_run, 0);
}

// Values are copied where a move is asked for: the moved-from object keeps its value. Before, a
// moved-from Schedule gave a table of zeros (training at rate 0) and crashed in multiplier(), and
// moved-from layouts and packings crashed when used.
TEST(ValueContracts, MovedFromValuesStayWhole) {
  Schedule a = Schedule::parse("step(every=2,gamma=0.5)");
  const std::vector<float> table = a.table(6, 1.0);
  Schedule b = std::move(a);
  EXPECT_EQ(a.table(6, 1.0), table);  // NOLINT(bugprone-use-after-move): the point of the test
  EXPECT_DOUBLE_EQ(a.multiplier(3, 1.0), 0.5);
  EXPECT_EQ(b.table(6, 1.0), table);

  MlpConfig cfg;
  cfg.inputs = 3;
  cfg.hidden = {4};
  cfg.outputs = 2;
  MlpLayout layout(cfg);
  MlpLayout moved = std::move(layout);
  EXPECT_EQ(layout.size(), moved.size());  // NOLINT(bugprone-use-after-move)
  EXPECT_EQ(mlp_packing(layout, 2).span(), mlp_packing(moved, 2).span());

  ReplicaPacking p(10, 2);
  ReplicaPacking q = std::move(p);
  EXPECT_EQ(p.index(1, 3), q.index(1, 3));  // NOLINT(bugprone-use-after-move)
}

// Sizes whose products overflowed, or allocated terabytes, before any check.
TEST(ValueContracts, ExtremeSizesAreErrorsNotAllocations) {
  EXPECT_THROW(ReplicaPacking(1, int64_t{1} << 40), Error);  // was std::bad_alloc
  MlpConfig cfg;
  cfg.inputs = 3;
  cfg.hidden = {4};
  cfg.outputs = 2;
  const MlpLayout layout(cfg);
  EXPECT_THROW(mlp_packing(layout, int64_t{1} << 40), Error);  // std::bad_alloc before
  EXPECT_THROW(MlpCpu(layout, 1, int64_t{1} << 60), Error);    // was std::length_error
  EXPECT_THROW(MlpCpu(layout, 65535, int64_t{1} << 30), Error);
  MlpCpu fine(layout, 2, 16);
  EXPECT_EQ(fine.packing().replicas(), 2);
  // Sizes under those limits but over the memory: refused with their size, before allocating (it
  // was std::bad_alloc, or an allocation the kernel grants and kills the process for using).
  EXPECT_TRUE(lrlab::testing::throws_error_containing(
      [&] { MlpCpu(layout, 1, std::numeric_limits<int>::max()); },
      "an MLP workspace of 1 replicas x batch 2147483647 needs at least"));
  EXPECT_TRUE(lrlab::testing::throws_error_containing(
      [] { Optimizer("adam()", Device::CPU, int64_t{1} << 40); },
      "the optimizer's state (2 buffers of 1099511627776 floats) needs at least 8.8e+03 GB of host memory"));
}

// Without a usable GPU, whatever takes Device::CUDA says so in lrlab's words: before, the training
// engine and the CUDA MLP failed in their first CUDA call ("CUDA error cudaErrorInsufficientDriver
// ... in cudaMemGetInfo"), and available_memory threw where it promises nothing.
TEST(DeviceContracts, CudaWithoutAGpuIsOneClearError) {
  std::string why;
  if (cuda_available(&why)) GTEST_SKIP() << "a GPU is usable here; this checks the machines without one";
  EXPECT_FALSE(available_memory(Device::CUDA).has_value());
  EXPECT_TRUE(lrlab::testing::throws_error_containing([] { Optimizer("adam()", Device::CUDA, 16); },
                                                      "CUDA optimizer requested but " + why));
  const DataSplits data = small_blobs();
  EngineConfig c = engine_for(data);
  c.device = Device::CUDA;
  EXPECT_TRUE(lrlab::testing::throws_error_containing([&] { TrainEngine engine(c, data); },
                                                      "CUDA training requested but " + why));
  MlpConfig cfg;
  cfg.inputs = 3;
  cfg.hidden = {4};
  cfg.outputs = 2;
  EXPECT_TRUE(lrlab::testing::throws_error_containing([&] { MlpCuda(MlpLayout(cfg), 1, 8, nullptr); },
                                                      "a CUDA MLP (MlpCuda) requested but " + why));
  EXPECT_TRUE(lrlab::testing::throws_error_containing([&] { upload_to_device(data); },
                                                      "an upload of the data to the GPU requested but " + why));
}

// A device buffer never copies past its end, and a size whose bytes overflow is refused before
// cudaMalloc sees a wrapped size. Neither check needs a GPU.
TEST(ValueContracts, DeviceBufferChecksRanges) {
  DeviceBuffer<float> empty;
  float x = 1.0f;
  // Checked before any CUDA call: the message is the range check's, not a CUDA error's.
  EXPECT_TRUE(throws_error_containing([&] { empty.upload(&x, 1, nullptr); }, "runs past"));
  EXPECT_TRUE(throws_error_containing([&] { empty.download(&x, 1, nullptr, 0); }, "runs past"));
  EXPECT_TRUE(throws_error_containing([&] { empty.upload(&x, 0, nullptr, 1); }, "runs past"));
  EXPECT_NO_THROW(empty.upload(&x, 0, nullptr));
  EXPECT_TRUE(throws_error_containing([] { DeviceBuffer<double>(std::numeric_limits<size_t>::max() / 4); },
                                      "address space"));
}

// Spreads that make the generated values overflow fp32: every feature was inf and the
// standardisation NaN, silently.
TEST(DataContracts, SyntheticSpreadsThatOverflowAreRefused) {
  DataOptions d;
  d.synthetic_samples = 100;
  EXPECT_THROW(load_data("blobs(spread=1e39)", d), Error);
  EXPECT_THROW(load_data("sine(noise=1e39)", d), Error);
  const DataSplits ok = load_data("blobs(spread=1e6)", d);
  for (float v : ok.train.x) ASSERT_TRUE(std::isfinite(v));
}

// Base rates that fp32 cannot hold were accepted as doubles and became 0 or inf in the engines,
// after the data had been loaded.
TEST(RateContracts, BaseRatesOutsideFp32AreRefusedUpFront) {
  EXPECT_THROW(check_base_rate(1e-300, "--lr"), Error);
  EXPECT_THROW(check_base_rate(1e39, "--lr"), Error);
  EXPECT_NO_THROW(check_base_rate(1e-30, "--lr"));
  SweepOptions o;
  o.base = lrlab::testing::small_spirals(300, {8});
  o.schedules = {"constant"};
  o.optimizers = {"adam()"};
  o.lrs = {1e-3, 1e39};
  EXPECT_THROW(validate_sweep(o), Error);
  // Before the data is read: a data file that does not exist is not what it reports.
  TrainOptions t = lrlab::testing::small_spirals(300, {8});
  t.data = "csv:/nonexistent/lrlab-test.csv";
  t.lr = 1e-300;
  EXPECT_TRUE(throws_error_containing([&] { train(t); }, "fp32"));
  o.base.data = t.data;
  EXPECT_TRUE(throws_error_containing([&] { validate_sweep(o); }, "fp32"));
}

// A NaN rate made every evaluation cut the scale; a negative one never did.
TEST(RateContracts, PlateauRefusesABadRate) {
  ReduceOnPlateau p(PlateauOptions{});
  EXPECT_THROW(p.step(1.0, std::numeric_limits<double>::quiet_NaN()), Error);
  EXPECT_THROW(p.step(1.0, -1.0), Error);
  EXPECT_FALSE(p.step(1.0, 1e-3));
}

// A checkpoint whose guard smoothing factor is 1 (or NaN) passed its checksum check and made the
// smoothed loss NaN after resuming.
TEST(CheckpointContracts, TheGuardsSmoothingFactorIsChecked) {
  Checkpoint c;
  c.params = {1.0f, 2.0f};
  for (double beta : {1.0, -0.5, std::numeric_limits<double>::quiet_NaN()}) {
    c.guard.loss.beta = beta;
    EXPECT_THROW(decode_checkpoint(encode_checkpoint(c), "x"), Error) << beta;
  }
  c.guard.loss.beta = 0.98;
  EXPECT_EQ(decode_checkpoint(encode_checkpoint(c), "x").guard.loss.beta, 0.98);
}

// Rows with long specs were cut at 512 bytes, newline included, so rows ran together.
TEST(ReportContracts, CurvesCsvKeepsRowsWithLongSpecs) {
  std::string milestones;
  for (int at = 10; at <= 1200; at += 10) milestones += (milestones.empty() ? "" : ";") + std::to_string(at);
  SweepResult r;
  SweepRun run;
  run.config.optimizer = "adam()";
  run.config.schedule = "multistep(at=" + milestones + ",gamma=0.9)";
  ASSERT_GT(run.config.schedule.size(), 500u);
  run.config.lr = 1e-3;
  run.train_loss = run.val_loss = run.val_accuracy = run.lr = {0.5, 0.4, 0.3};
  r.runs = {run};
  const std::string csv = sweep_curves_csv(r);
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 4);  // header and three epochs
  EXPECT_NE(csv.find(run.config.schedule + "\",0.001,0,3,"), std::string::npos);
  EXPECT_NE(sweep_table(r).find(run.config.schedule), std::string::npos);
}

// The ranked table's spec columns had fixed widths: one longer spec pushed its row's figures out of
// line with the header's and every other row's.
TEST(ReportContracts, TableFiguresStayAlignedUnderLongSpecs) {
  SweepResult r;
  SweepRun run;
  run.train_loss = run.val_loss = {0.5, 0.25};
  run.val_accuracy = {0.5, 0.75};
  run.final_val_loss = run.best_val_loss = 0.25;
  run.final_val_accuracy = run.best_val_accuracy = 0.75;
  run.best_epoch = 2;
  run.config.lr = 1e-3;
  run.config.optimizer = "adam(beta1=0.85,beta2=0.995,amsgrad=true)";
  run.config.schedule = "warmup(steps=20)+cosine(steps=2ep,min=0.01)";
  r.runs.push_back(run);
  run.config.id = 1;
  run.config.optimizer = "sgd()";
  run.config.schedule = "constant";
  r.runs.push_back(run);
  std::istringstream table(sweep_table(r));
  std::string header, line;
  ASSERT_TRUE(std::getline(table, header));
  const size_t end = header.find("final val") + std::string("final val").size();
  int rows = 0;
  while (std::getline(table, line) && !line.empty()) {
    ++rows;
    EXPECT_EQ(line.find("0.2500"), end - 6) << header << "\n" << line;
  }
  EXPECT_EQ(rows, 2);
}

// A legend entry longer than the legend box ran past the picture's right edge: it is cut at a
// character boundary, and the whole name is the entry's tooltip.
TEST(ReportContracts, LongLegendNamesAreCutWithTheNameAsTooltip) {
  Series a, b;
  a.x = b.x = {0, 1};
  a.y = b.y = {1, 2};
  a.name = "short";
  b.name = std::string(58, 'x') + "\xc3\xa9\xc3\xa9 and more";  // the cut falls inside a 2-byte character
  const std::string svg = svg_line_plot({a, b}, PlotOptions{});
  EXPECT_NE(svg.find(">short</text>"), std::string::npos);
  EXPECT_NE(svg.find("<title>" + b.name + "</title>" + std::string(58, 'x') + "\xe2\x80\xa6</text>"), std::string::npos)
      << svg;
}

// Bytes that are not UTF-8 made a report or plot invalid XML.
TEST(ReportContracts, XmlEscapeKeepsTheFileWellFormed) {
  EXPECT_EQ(xml_escape("a<b & \"c\""), "a&lt;b &amp; &quot;c&quot;");
  EXPECT_EQ(xml_escape("caf\xc3\xa9"), "caf\xc3\xa9");  // UTF-8 passes
  EXPECT_EQ(xml_escape("x\xff\xc3y\x01"), "x??y?");      // a stray byte, a cut sequence, a control
  // U+FFFE and U+FFFF are no XML characters; U+FFFD is.
  EXPECT_EQ(xml_escape("\xef\xbf\xbf|\xef\xbf\xbe|\xef\xbf\xbd"), "?|?|\xef\xbf\xbd");
}

}  // namespace
