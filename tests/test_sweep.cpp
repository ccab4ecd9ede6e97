#include <gtest/gtest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <tuple>

#include <nlohmann/json.hpp>

#include "cli/sweep_progress.hpp"
#include "cli_util.hpp"
#include "fixtures.hpp"
#include "engine_workers.hpp"
#include "test_util.hpp"
#include "lrlab/data.hpp"
#include "lrlab/device.hpp"
#include "lrlab/error.hpp"
#include "lrlab/io.hpp"
#include "lrlab/rng.hpp"
#include "lrlab/sweep.hpp"
#include "lrlab/train_engine.hpp"

using namespace lrlab;
using lrlab::testing::expect_same_runs;
using lrlab::testing::run_cli;
using lrlab::testing::slurp;
using lrlab::testing::small_sweep;
using lrlab::testing::temp_path;
using lrlab::testing::throws_error_containing;

namespace {

// One configuration of small_sweep's model: Adam at 1e-2 under `schedule`.
SweepOptions one_config_sweep(int64_t epochs, const std::string& schedule) {
  SweepOptions o = small_sweep();
  o.base.epochs = epochs;
  o.lrs = {1e-2};
  o.schedules = {schedule};
  o.optimizers = {"adam()"};
  return o;
}

// The worker pool of sweeps and range tests: every index runs once, and of several failures the
// lowest index's is reported, whatever the timing.
TEST(EngineWorkers, ParallelForRunsAllAndReportsTheLowestFailure) {
  for (int64_t workers : {1, 3, 8}) {
    std::vector<std::atomic<int>> seen(200);
    EXPECT_THROW(
        {
          try {
            detail::parallel_for(200, workers, [&](int64_t i) {
              ++seen[i];
              if (i == 150 || i == 37 || i == 90) throw Error("failed at " + std::to_string(i));
            });
          } catch (const Error& e) {
            EXPECT_STREQ(e.what(), "failed at 37") << workers << " workers";
            throw;
          }
        },
        Error);
    for (int64_t i = 0; i < 200; ++i) EXPECT_EQ(seen[i].load(), 1) << "index " << i;
  }
}

TEST(Sweep, DivergenceRule) {
  // Non-finite losses diverge at once, even in the first epoch.
  EXPECT_TRUE(sweep_diverged({NAN}, NAN, 1.0, 4));
  EXPECT_TRUE(sweep_diverged({2.0, INFINITY}, NAN, 1.0, 4));
  EXPECT_TRUE(sweep_diverged({2.0, 1.0}, NAN, NAN, 4));
  // A first epoch has only the untrained model's loss to compare with.
  EXPECT_FALSE(sweep_diverged({1e6}, NAN, 1.0, 4));
  EXPECT_TRUE(sweep_diverged({1e6}, 2.3, 1000.0, 4));  // Adam at lr 10: finite, but far worse than chance
  EXPECT_FALSE(sweep_diverged({20.0}, 2.3, 0.9, 4));   // early spikes, but the epoch ends well
  EXPECT_TRUE(sweep_diverged({2.3, 0.5, 0.6}, 2.3, 9.3, 4));
  // Growth past 4x the best earlier epoch and above the first epoch's loss.
  EXPECT_TRUE(sweep_diverged({2.3, 0.5, 2.31}, NAN, 1.0, 4));
  EXPECT_FALSE(sweep_diverged({2.3, 0.5, 1.9}, NAN, 1.0, 4));   // below 4x the best
  // A loss near zero that wobbles by a large factor but stays below the first epoch's is training.
  EXPECT_FALSE(sweep_diverged({2.3, 1e-4, 0.01}, NAN, 1.0, 4));
  EXPECT_FALSE(sweep_diverged({2.3, 0.5, 2.2}, NAN, 1.0, 4));
  // The factor is the caller's.
  EXPECT_TRUE(sweep_diverged({1.0, 0.5, 1.2}, NAN, 1.0, 2));
  EXPECT_FALSE(sweep_diverged({1.0, 0.5, 1.2}, NAN, 1.0, 3));
  EXPECT_THROW(sweep_diverged({}, NAN, 1.0, 4), Error);
}

TEST(SweepRates, ParsesListsAndLogRanges) {
  // The decades come out as the numbers a user would type (not 0.0009999999999999998), so that
  // results.json and the report show them so.
  EXPECT_EQ(parse_rates("1e-4:1e-1:4"), (std::vector<double>{1e-4, 1e-3, 1e-2, 1e-1}));
  EXPECT_EQ(parse_rates("1e-3:1:7")[2], 1e-2);
  EXPECT_EQ(parse_rates("0.01,0.1"), (std::vector<double>{0.01, 0.1}));
  EXPECT_EQ(parse_rates("0.5:0.5:1"), (std::vector<double>{0.5}));
  for (const char* bad : {"1e-4:1e-1", "1e-4:1e-1:0", "1e-1:1e-4:3", "a:b:3", "1e-4:1e-1:3:4", "-1", "0.1,,0.2", "",
                          "1e-3:1e-1:2.5"})
    EXPECT_THROW(parse_rates(bad), Error) << bad;
}

TEST(SweepGrid, RefusesAGridTooLargeToTrack) {
  SweepOptions o = small_sweep();
  o.lrs = parse_rates("1e-4:1e-1:1001");
  o.seeds = 1000;  // 1001 x 2 x 2 x 1000 configurations
  EXPECT_TRUE(throws_error_containing([&] { sweep_grid(o); }, "4.004e+06 configurations; at most 1e+06"));
}

TEST(SweepGrid, EnumeratesEveryCombinationWithStableIds) {
  SweepOptions o = small_sweep();
  o.seeds = 2;
  std::vector<SweepConfig> g = sweep_grid(o);
  ASSERT_EQ(g.size(), 3u * 2 * 2 * 2);
  for (size_t i = 0; i < g.size(); ++i) EXPECT_EQ(g[i].id, static_cast<int64_t>(i));
  EXPECT_EQ(g[0].seed_index, 0);
  EXPECT_EQ(g.back().seed_index, 1);
  EXPECT_EQ(g[1].lr, 1e-2);
  SweepOptions empty = o;
  empty.lrs.clear();
  EXPECT_THROW(sweep_grid(empty), Error);
  SweepOptions bad_spec = o;
  bad_spec.schedules.push_back("cosin(steps=3)");
  EXPECT_THROW(sweep_grid(bad_spec), Error);
}

// A repeated rate, schedule or optimizer would train its configurations twice over; the same value
// written another way ("1e-3" and "0.001", keys in another order, an optimizer's defaults spelled
// out) is still a repeat.
TEST(SweepGrid, RefusesValuesListedTwice) {
  SweepOptions o = small_sweep();
  EXPECT_NO_THROW(validate_sweep(o));
  struct Case {
    std::function<void(SweepOptions&)> change;
    std::string error;
  };
  for (const Case& c : std::vector<Case>{
           {[](SweepOptions& x) { x.lrs = {1e-3, 1e-2, 0.001}; }, "--lr: '0.001' is listed twice"},
           {[](SweepOptions& x) {
              x.lrs = parse_rates("1e-3:1e-1:3");
              x.lrs.push_back(0.1);
            },
            "--lr: '0.1' is listed twice"},
           {[](SweepOptions& x) { x.schedules.push_back("constant"); }, "--schedule: 'constant' is listed twice"},
           {[](SweepOptions& x) { x.schedules.push_back(" step( gamma=.5, every=1ep )"); },
            "--schedule: ' step( gamma=.5, every=1ep )' is the same as 'step(every=1ep,gamma=0.5)'"},
           {[](SweepOptions& x) { x.optimizers.push_back("adam()"); }, "--optimizer: 'adam()' is listed twice"},
           {[](SweepOptions& x) { x.optimizers.push_back("adam(beta1=0.9)"); },
            "--optimizer: 'adam(beta1=0.9)' is the same as 'adam()'"},
       }) {
    SweepOptions x = o;
    c.change(x);
    EXPECT_TRUE(throws_error_containing([&] { validate_sweep(x); }, c.error));
  }
  // Values that differ are a grid.
  o.schedules = {"step(every=1ep,gamma=0.5)", "step(every=2ep,gamma=0.5)", "step(every=1ep,gamma=0.25)"};
  o.optimizers = {"adam()", "adam(beta2=0.99)", "adamw()"};
  EXPECT_NO_THROW(validate_sweep(o));
}

TEST(SweepGrid, RefusesNegativeWorkers) {
  SweepOptions o = small_sweep();
  o.workers = 0;  // automatic
  EXPECT_NO_THROW(validate_sweep(o));
  o.workers = -1;
  EXPECT_TRUE(throws_error_containing([&] { validate_sweep(o); }, "--workers must be 0 (automatic) or more (got -1)"));
}

// A resumed sweep keeps the runs the earlier one finished, as they are, and trains the others
// (unfinished or missing) from the start: the whole grid as one uninterrupted sweep trains it.
TEST(Sweep, ResumeKeepsFinishedRunsAndTrainsTheRest) {
  const SweepOptions o = small_sweep();
  const SweepResult whole = run_sweep(o);
  SweepResult earlier = whole;
  earlier.interrupted = true;
  earlier.source = "earlier.json";
  SweepRun& unfinished = earlier.runs[1];
  for (auto* curve : {&unfinished.train_loss, &unfinished.val_loss, &unfinished.val_accuracy, &unfinished.lr})
    curve->resize(1);
  earlier.runs[7].val_loss.back() = 123.0;  // kept, not trained again
  earlier.runs.erase(earlier.runs.begin() + 4);
  SweepResult resumed = run_sweep(o, {}, nullptr, {earlier});
  EXPECT_FALSE(resumed.interrupted);
  ASSERT_EQ(resumed.runs.size(), whole.runs.size());
  EXPECT_EQ(resumed.runs[7].val_loss.back(), 123.0);
  resumed.runs[7] = whole.runs[7];
  expect_same_runs(whole, resumed, 1e-5);
  EXPECT_EQ(resumed.runs[4].val_loss.size(), 3u);

  // A shard resumes its own share of the earlier results.
  SweepOptions shard = o;
  shard.shard_index = 1;
  shard.shard_count = 2;
  const SweepResult half = run_sweep(shard, {}, nullptr, {earlier});
  ASSERT_EQ(half.runs.size(), 6u);
  EXPECT_EQ(half.runs[3].config.id, 7);
  EXPECT_EQ(half.runs[3].val_loss.back(), 123.0);

  // Of several inputs (an interrupted run's shares, and a later run's), an unfinished record gives
  // way to a finished one; two finished ones must agree.
  SweepResult later = whole;
  later.source = "later.json";
  later.runs.resize(3);
  later.runs[1].val_loss.back() = 321.0;
  const SweepResult both = run_sweep(o, {}, nullptr, {earlier, later});
  EXPECT_EQ(both.runs[1].val_loss.back(), 321.0) << "the finished record of run 1, not a retrained one";
  later.runs[1] = earlier.runs[1];
  later.runs[2].val_loss.back() += 1.0;
  EXPECT_TRUE(throws_error_containing([&] { run_sweep(o, {}, nullptr, {earlier, later}); },
                                      "configuration 2 finished in 'earlier.json' and in 'later.json' with other "
                                      "results"));

  // Another sweep's results are refused by name, saying what differs; so is successive halving.
  SweepOptions other = o;
  other.base.epochs = 2;
  EXPECT_TRUE(throws_error_containing([&] { run_sweep(other, {}, nullptr, {earlier}); },
                                      "'earlier.json' are another sweep's than these options describe: its options "
                                      "differ: epochs 3 (2 in these options)"));
  SweepOptions halving = o;
  halving.halving = 2;
  EXPECT_TRUE(throws_error_containing([&] { run_sweep(halving, {}, nullptr, {earlier}); }, kNoHalvingResume));
}

TEST(Sweep, PackedStreamsAndSequentialAgree) {
  SweepOptions o = small_sweep();
  o.mode = "sequential";
  SweepResult seq = run_sweep(o);
  o.mode = "streams";
  SweepResult streams = run_sweep(o);
  o.mode = "packed";
  SweepResult packed = run_sweep(o);
  o.mode = "auto";
  // Engines of their own on the CPU; one packed engine, one launch for all, on the GPU.
  EXPECT_EQ(run_sweep(o).mode, o.base.device == "cpu" ? "streams" : "packed");
  // On the CPU bit for bit: a replica's GEMMs are the same whatever the mode, the packing and the
  // threads (MlpCpu::kRowsPerSlice).
  expect_same_runs(seq, streams, o.base.device == "cpu" ? 0 : 1e-6);
  // On the GPU cuBLAS picks other kernels (other summation orders) for the packed replicas' wide and
  // strided-batched GEMMs than for one model's: a difference of the kind between CPU and GPU.
  expect_same_runs(seq, packed, o.base.device == "cpu" ? 0 : 1e-3);
  // The sweep learned something: the best configuration beats chance clearly.
  EXPECT_GT(packed.runs[rank_runs(packed.runs)[0]].best_val_accuracy, 0.8);
}

// A configuration of a sweep trains as `lrlab train` trains it: on the CPU bit for bit, though train
// gives its one model two threads and the sweep gives each of its two configurations one.
TEST(Sweep, AConfigurationTrainsAsTrainDoes) {
  TrainOptions t = lrlab::testing::small_spirals(2000, {128, 128});  // enough arithmetic for 2 threads
  t.batch = 2 * MlpCpu::kRowsPerSlice;
  t.epochs = 2;
  t.lr = 3e-3f;
  t.optimizer = "adam()";
  TrainReport alone;
  {
    lrlab::testing::OmpThreads two(2);
    alone = train(t);
  }
  SweepOptions o;
  o.base = t;
  o.lrs = {3e-3, 1e-2};
  o.schedules = {t.schedule};
  o.optimizers = {t.optimizer};
  o.mode = "streams";
  o.workers = 2;
  const SweepResult r = run_sweep(o);
  ASSERT_EQ(r.runs[0].config.lr, 3e-3);
  ASSERT_EQ(r.runs[0].val_loss.size(), alone.epochs.size());
  for (size_t e = 0; e < alone.epochs.size(); ++e)
    EXPECT_NEAR(r.runs[0].val_loss[e], alone.epochs[e].val_loss,
                t.device == "cpu" ? 0 : 1e-4 * std::abs(alone.epochs[e].val_loss))
        << "epoch " << e + 1;
}

// A packed group larger than max_packed (past kMaxReplicas, one engine's limit, a grid of 70,000
// rates failed) is split over several engines, and trains as one engine would.
TEST(Sweep, PackedGroupsSplitOverEnginesTrainTheSame) {
  SweepOptions o = small_sweep();
  o.mode = "packed";
  o.halving = 2;
  const SweepResult whole = run_sweep(o);
  o.max_packed = 4;  // each optimizer's 6 configurations: engines of 4 and 2
  const SweepResult split = run_sweep(o);
  EXPECT_EQ(whole.engines, 2);
  EXPECT_EQ(split.engines, 4);
  expect_same_runs(whole, split, o.base.device == "cpu" ? 0 : 1e-3);
  for (size_t i = 0; i < whole.runs.size(); ++i) EXPECT_EQ(whole.runs[i].halted, split.runs[i].halted) << i;
  o.max_packed = kMaxReplicas + 1;
  EXPECT_THROW(validate_sweep(o), Error);
}

TEST(Sweep, ADivergingConfigIsMarkedAndDoesNotStopTheOthers) {
  SweepOptions o = small_sweep();
  o.lrs = {1e-2, 1e3};
  o.schedules = {"constant"};
  o.optimizers = {"sgd()"};
  o.base.epochs = 3;
  SweepResult r = run_sweep(o);
  ASSERT_EQ(r.runs.size(), 2u);
  EXPECT_FALSE(r.runs[0].diverged);
  EXPECT_EQ(r.runs[0].val_loss.size(), 3u);
  EXPECT_TRUE(r.runs[1].diverged);
  EXPECT_GE(r.runs[1].diverged_epoch, 1);
  EXPECT_EQ(rank_runs(r.runs).back(), 1u);
  // The final-loss plot has no loss for it, only a cross; the report says where divergence starts.
  EXPECT_NE(sweep_report_html(r).find("<p>sgd() diverged: constant at lr 1e+03</p>"), std::string::npos);
}

// A rate that blows the loss up without making it infinite (Adam at 10: huge weights, huge logits)
// is divergence too: judged against the untrained model's loss, from the first epoch on.
TEST(Sweep, AFiniteBlowUpIsDivergence) {
  SweepOptions o = small_sweep();
  o.lrs = {1e-2, 10};
  o.schedules = {"constant"};
  o.optimizers = {"adam()"};
  SweepResult r = run_sweep(o);
  ASSERT_EQ(r.runs.size(), 2u);
  EXPECT_FALSE(r.runs[0].diverged);
  EXPECT_TRUE(r.runs[1].diverged);
  EXPECT_EQ(r.runs[1].diverged_epoch, 1);
  EXPECT_TRUE(std::isfinite(r.runs[1].train_loss[0])) << "the blow-up this test is about stays finite";
}

TEST(Sweep, SuccessiveHalvingKeepsTheBest) {
  SweepOptions o = small_sweep();
  o.base.epochs = 4;
  o.halving = 2;  // rungs after epochs 1 and 2: 12 -> 6 -> 3
  SweepResult r = run_sweep(o);
  int full = 0, halted = 0;
  for (const SweepRun& x : r.runs) {
    if (x.diverged) continue;
    if (x.halted) ++halted;
    else if (x.val_loss.size() == 4) ++full;
  }
  EXPECT_EQ(full + halted + [&] { int d = 0; for (auto& x : r.runs) d += x.diverged; return d; }(), 12);
  EXPECT_LE(full, 3);
  EXPECT_GE(full, 1);
  // A survivor's rung-2 loss is no worse than any run halted at rung 2.
  for (const SweepRun& s : r.runs)
    if (!s.halted && !s.diverged)
      for (const SweepRun& h : r.runs)
        if (h.halted && h.val_loss.size() == 2) EXPECT_LE(s.val_loss[1], h.val_loss[1]);
}

TEST(Sweep, SeedsRepeatWithDifferentDataOrders) {
  SweepOptions o = small_sweep();
  o.lrs = {1e-2};
  o.schedules = {"constant"};
  o.optimizers = {"adam()"};
  o.seeds = 3;
  SweepResult r = run_sweep(o);
  ASSERT_EQ(r.runs.size(), 3u);
  EXPECT_NE(r.runs[0].val_loss.back(), r.runs[1].val_loss.back());
  std::string table = sweep_table(r);
  EXPECT_NE(table.find("+-"), std::string::npos) << table;
}

// Halving ranks a grid entry by its mean over the data orders and keeps or drops its seeds
// together, so that the spread over seeds compares the same epochs.
TEST(Sweep, HalvingKeepsAnEntrysSeedsTogether) {
  SweepOptions o = small_sweep();
  o.base.epochs = 3;
  o.halving = 2;
  o.seeds = 2;
  SweepResult r = run_sweep(o);
  const size_t per_seed = r.runs.size() / 2;
  ASSERT_EQ(per_seed, 12u);
  int halted = 0;
  for (size_t i = 0; i < per_seed; ++i) {
    const SweepRun &a = r.runs[i], &b = r.runs[i + per_seed];
    ASSERT_EQ(a.config.id % per_seed, b.config.id % per_seed);
    if (a.diverged || b.diverged) continue;
    EXPECT_EQ(a.halted, b.halted) << "entry " << i;
    EXPECT_EQ(a.val_loss.size(), b.val_loss.size()) << "entry " << i;
    halted += a.halted;
  }
  EXPECT_GT(halted, 0);
}

// Halving keeps the best ceil(n / eta) entries at each rung, so a rung never halts every survivor:
// with 3 entries, eta 2 and 4 epochs (rungs after epochs 1 and 2), 3 -> 2 -> 1.
TEST(Sweep, HalvingRoundsTheSurvivorsUp) {
  SweepOptions o = small_sweep();
  o.lrs = {1e-3, 3e-3, 1e-2};
  o.schedules = {"constant"};
  o.optimizers = {"adam()"};
  o.base.epochs = 4;
  o.halving = 2;
  SweepResult r = run_sweep(o);
  std::vector<size_t> epochs_run;
  for (const SweepRun& x : r.runs) {
    ASSERT_FALSE(x.diverged);
    epochs_run.push_back(x.val_loss.size());
  }
  std::sort(epochs_run.begin(), epochs_run.end());
  EXPECT_EQ(epochs_run, (std::vector<size_t>{1, 2, 4}));
}

// Rungs fall where Hyperband's do, epochs / eta^k rounded down: 6 epochs at eta 2 halt runs after
// epochs 1 and 3 (not 1, 2 and 3), 10 at eta 3 after 1 and 3. 33 at eta 2.2 after 15, 6, 3 and 1
// (9 runs: 5 go on after epoch 1, 3 after 3, 2 after 6, 1 after 15); 33 / 2.2 is 15 exactly, though
// in doubles it comes out a hair below. Fewer epochs than eta have no rung: an error, not a sweep
// that silently halves nothing.
TEST(Sweep, HalvingRungsFallWhereHyperbandsDo) {
  for (const auto& [epochs, eta, expected] :
       {std::tuple<int64_t, double, std::set<size_t>>{6, 2.0, {1, 3, 6}}, {10, 3.0, {1, 3, 10}},
        {33, 2.2, {1, 3, 6, 15, 33}}}) {
    SweepOptions o = small_sweep();
    o.base.synthetic_samples = 300;
    o.lrs = {1e-3, 2e-3, 3e-3, 5e-3, 7e-3, 1e-2, 2e-2, 3e-2, 5e-2};
    o.schedules = {"constant"};
    o.optimizers = {"adam()"};
    o.base.epochs = epochs;
    o.halving = eta;
    std::set<size_t> ends;
    for (const SweepRun& x : run_sweep(o).runs) {
      ASSERT_FALSE(x.diverged);
      ends.insert(x.val_loss.size());
    }
    EXPECT_EQ(ends, expected) << epochs << " epochs, eta " << eta;
  }
  SweepOptions o = small_sweep();
  o.base.epochs = 2;
  o.halving = 3;
  EXPECT_TRUE(throws_error_containing([&] { validate_sweep(o); }, "--halving 3 halts nothing in 2 epoch(s)"));
  o.base.epochs = 3;
  EXPECT_NO_THROW(validate_sweep(o));
}

// The spread over data orders is of runs that trained to the end: an entry halted at a rung has no
// final loss to average, and says so, in the table and under the report's final-loss plot.
TEST(Sweep, HaltedEntriesHaveNoFinalLossInTheSpread) {
  SweepOptions o = small_sweep();
  o.schedules = {"constant"};
  o.optimizers = {"adam()"};
  o.lrs = {1e-3, 1e-2, 3e-2, 1e-1};
  o.base.epochs = 2;
  o.halving = 2;
  o.seeds = 2;
  const SweepResult r = run_sweep(o);
  const std::string table = sweep_table(r);
  int halted_lines = 0;
  for (size_t at = table.find("halted by successive halving (2 runs"); at != std::string::npos;
       at = table.find("halted by successive halving (2 runs", at + 1))
    ++halted_lines;
  EXPECT_EQ(halted_lines, 2) << table;  // 4 entries, eta 2: 2 kept
  EXPECT_NE(sweep_report_html(r).find("adam(): 2 configurations halted by successive halving"), std::string::npos);
}

// Seed index k of --seeds is data order seed+k and initial weights seed+k: the run equals an engine
// trained alone so.
TEST(Sweep, EachSeedIsItsOwnDataOrderAndInitialWeights) {
  SweepOptions o = small_sweep();
  o.lrs = {1e-2};
  o.schedules = {"constant"};
  o.optimizers = {"adam()"};
  o.base.epochs = 1;
  o.base.seed = 4;
  o.seeds = 2;
  o.mode = "sequential";
  const DataSplits data = load_data(o.base.data, data_options(o.base, o.base.seed));
  const SweepResult r = run_sweep_on(o, data);
  ASSERT_EQ(r.runs.size(), 2u);
  for (int64_t k = 0; k < 2; ++k) {
    EngineConfig ec;
    ec.model = model_for(o.base, data.train);
    ec.optimizer = "adam()";
    ec.replicas = {ReplicaSpec{1e-2f, "constant", 4 + static_cast<uint64_t>(k)}};
    ec.batch = o.base.batch;
    ec.epochs = 1;
    ec.data_seed = 4 + static_cast<uint64_t>(k);
    ec.device = parse_device(o.base.device);
    TrainEngine eng(ec, data);
    eng.begin_epoch(0);
    eng.run(eng.steps_per_epoch());
    const double want = eng.evaluate(Split::Val).loss[0];
    EXPECT_NEAR(r.runs[k].val_loss[0], want, 1e-5 * want) << "seed index " << k;
  }
}

// The summary is read off each run's curves, and the rate of an epoch is its last step's.
TEST(Sweep, SummaryAndRatesFollowTheCurves) {
  SweepOptions o = small_sweep();
  o.lrs = {3e-3, 3e-2};
  o.schedules = {"exp(gamma=0.9)"};  // a new rate every step
  o.optimizers = {"adam()"};
  SweepResult r = run_sweep(o);
  const int64_t spe = r.steps_per_epoch;
  ASSERT_GT(spe, 1);
  for (const SweepRun& x : r.runs) {
    ASSERT_FALSE(x.diverged);
    ASSERT_EQ(x.val_loss.size(), 3u);
    const size_t best = std::min_element(x.val_loss.begin(), x.val_loss.end()) - x.val_loss.begin();
    EXPECT_EQ(x.best_epoch, static_cast<int64_t>(best) + 1);
    EXPECT_EQ(x.best_val_loss, x.val_loss[best]);
    EXPECT_EQ(x.final_val_loss, x.val_loss.back());
    EXPECT_EQ(x.best_val_accuracy, *std::max_element(x.val_accuracy.begin(), x.val_accuracy.end()));
    EXPECT_EQ(x.final_val_accuracy, x.val_accuracy.back());
    for (int64_t e = 0; e < 3; ++e) {
      const double want = x.config.lr * std::pow(0.9, static_cast<double>((e + 1) * spe - 1));
      EXPECT_NEAR(x.lr[e], want, 1e-5 * want) << e;
    }
  }
}

// The spread over data orders is of --seeds, not of the grid's other entries.
TEST(SweepReport, SpreadIsOverSeedsOnly) {
  SweepOptions o = small_sweep();
  o.base.epochs = 1;
  o.lrs = {1e-2, 2e-2};
  o.schedules = {"constant"};
  o.optimizers = {"adam()"};
  std::string table = sweep_table(run_sweep(o));
  EXPECT_EQ(table.find("over data orders"), std::string::npos) << table;
  o.seeds = 2;
  table = sweep_table(run_sweep(o));
  const size_t at = table.find("over data orders");
  ASSERT_NE(at, std::string::npos) << table;
  size_t lines = 0;
  for (size_t p = table.find("(2 runs", at); p != std::string::npos; p = table.find("(2 runs", p + 1)) ++lines;
  EXPECT_EQ(lines, 2u) << table;
}

// Metrics that do not exist (regression's accuracy) or epochs that never ran (an interrupted sweep)
// read as '-' and "unfinished", never as "nan" or "ok".
TEST(SweepReport, MissingMetricsAndUnfinishedRuns) {
  SweepOptions o = small_sweep();
  o.base.data = "sine";
  o.base.epochs = 2;
  o.lrs = {1e-3, 1e-2};
  o.schedules = {"constant"};
  o.optimizers = {"adam()"};
  o.seeds = 2;
  SweepResult r = run_sweep(o);
  std::string table = sweep_table(r);
  EXPECT_EQ(table.find("nan"), std::string::npos) << table;
  EXPECT_EQ(sweep_report_html(r).find("nan"), std::string::npos);
  r.interrupted = true;
  r.runs[0].val_loss.pop_back();
  table = sweep_table(r);
  EXPECT_NE(table.find("unfinished@1"), std::string::npos) << table;
}

// A finished run of one epoch, built by hand for the report's tests.
SweepRun hand_run(int64_t id, int64_t seed_index, double loss, double accuracy) {
  SweepRun x;
  x.config = {id, 1e-2, "constant", "adam()", seed_index};
  x.train_loss = {2 * loss};
  x.val_loss = {loss};
  x.val_accuracy = {accuracy};
  x.lr = {1e-2};
  x.final_val_loss = x.best_val_loss = loss;
  x.final_val_accuracy = x.best_val_accuracy = accuracy;
  x.best_epoch = 1;
  x.lr_curve = {1e-2f};
  return x;
}

SweepResult hand_result(std::vector<SweepRun> runs, int64_t seeds) {
  SweepResult r;
  r.epochs = 1;
  r.steps_per_epoch = 1;
  r.grid_size = static_cast<int64_t>(runs.size());
  r.options_json = "{\"seeds\":" + std::to_string(seeds) + "}";
  r.device = "cpu";
  r.runs = std::move(runs);
  return r;
}

// The spread over data orders is the sample standard deviation (n - 1), as numpy's std(ddof=1) and
// PyTorch's std give it: losses 1, 2, 3 are 2 +- 1; accuracies 50, 60, 70% are 60 +- 10%. A diverged
// seed has no final loss: it is counted apart, not averaged in.
TEST(SweepReport, SpreadIsTheSampleStandardDeviationOfFinishedSeeds) {
  SweepResult r = hand_result({hand_run(0, 0, 1.0, 0.5), hand_run(1, 1, 2.0, 0.6), hand_run(2, 2, 3.0, 0.7)}, 3);
  std::string table = sweep_table(r);
  EXPECT_NE(table.find("loss 2.0000 +- 1.0000  acc 60.00% +- 10.00%  (3 runs, 0 diverged)"), std::string::npos)
      << table;
  r.runs[2].diverged = true;
  r.runs[2].diverged_epoch = 1;
  r.runs[2].final_val_loss = r.runs[2].best_val_loss = NAN;
  table = sweep_table(r);
  EXPECT_NE(table.find("loss 1.5000 +- 0.7071  acc 55.00% +- 7.07%  (2 runs, 1 diverged)"), std::string::npos)
      << table;
}

// Among halted runs, one that survived more rungs ranks above one halted earlier, whatever their
// losses: it beat the other at the rungs both reached.
TEST(SweepReport, HaltedLaterRanksAboveHaltedEarlier) {
  SweepRun finished = hand_run(0, 0, 3.0, 0.2);
  SweepRun early = hand_run(1, 0, 1.0, 0.6);
  early.halted = true;
  SweepRun later = hand_run(2, 0, 2.0, 0.4);
  later.halted = true;
  later.train_loss.push_back(2.0);
  later.val_loss.push_back(1.5);
  later.val_accuracy.push_back(0.5);
  later.lr.push_back(1e-2);
  later.best_val_loss = 1.5;
  EXPECT_EQ(rank_runs({finished, early, later}), (std::vector<size_t>{0, 2, 1}));
}

// A run of `optimizer` and `schedule` at `lr`, finished with best validation loss `loss`.
SweepRun rated_run(int64_t id, const std::string& optimizer, const std::string& schedule, double lr, double loss) {
  SweepRun x = hand_run(id, 0, loss, 1 - loss);
  x.config.optimizer = optimizer;
  x.config.schedule = schedule;
  x.config.lr = x.lr[0] = lr;
  return x;
}

// The sweep's answer to "which rate": the best run of each optimizer, and a warning where that rate
// is an end of the rates tried, since the best may then lie beyond the grid.
TEST(SweepReport, BestPerOptimizerFlagsRatesAtTheEndOfTheGrid) {
  std::vector<SweepRun> runs = {
      rated_run(0, "adam()", "constant", 1e-3, 0.9), rated_run(1, "adam()", "constant", 1e-2, 0.5),
      rated_run(2, "adam()", "constant", 1e-1, 0.3),  // adam's best: the largest rate tried
      rated_run(3, "sgd()", "constant", 1e-3, 0.4), rated_run(4, "sgd()", "constant", 1e-2, 0.2),
      rated_run(5, "sgd()", "constant", 1e-1, 0.6),  // sgd's best is inside, and ranks first overall
      rated_run(6, "sgd()", "constant", 3e-2, 0.1),  // lower still, but diverged
      rated_run(7, "rmsprop()", "constant", 1e-3, 0.7), rated_run(8, "rmsprop()", "constant", 1e-2, 0.8),
      rated_run(9, "rmsprop()", "cosine(steps=1ep)", 1e-2, 0.35),  // smallest rate of ITS schedule
      rated_run(10, "rmsprop()", "cosine(steps=1ep)", 1e-1, 0.95),
      rated_run(11, "adagrad()", "constant", 1e-2, 0.45),  // one rate only: no end to speak of
      rated_run(12, "adam()", "constant", 3e-2, 0.05),     // lower, but dropped by halving
  };
  runs[6].diverged = true;
  runs[6].diverged_epoch = 1;
  runs[12].halted = true;
  SweepResult r = hand_result(runs, 1);
  const std::vector<SweepBest> best = best_per_optimizer(r);
  ASSERT_EQ(best.size(), 4u);
  // In the order the optimizers come, not in rank order.
  EXPECT_EQ(best[0].run, 2u);
  EXPECT_EQ(best[0].edge, 1);
  EXPECT_EQ(best[1].run, 4u);
  EXPECT_EQ(best[1].edge, 0);
  EXPECT_EQ(best[2].run, 9u);
  EXPECT_EQ(best[2].edge, -1);
  EXPECT_EQ(best[3].run, 11u);
  EXPECT_EQ(best[3].edge, 0);

  const std::string table = sweep_table(r);
  const size_t at = table.find("best per optimizer");
  ASSERT_NE(at, std::string::npos) << table;
  const std::string section = table.substr(at, table.find("\n\n", at) - at);
  for (const char* line : {"0.1  val loss 0.3000 (epoch 1), best acc 70.00%  <- the largest rate tried: extend --lr upward",
                           "0.01  val loss 0.3500 (epoch 1), best acc 65.00%  <- the smallest rate tried: extend --lr downward"})
    EXPECT_NE(section.find(line), std::string::npos) << line << "\n" << section;
  EXPECT_EQ(std::count(section.begin(), section.end(), '<'), 2) << section;

  const std::string html = sweep_report_html(r);
  ASSERT_NE(html.find("<h2>Best per optimizer</h2>"), std::string::npos);
  EXPECT_LT(html.find("<h2>Best per optimizer</h2>"), html.find("<h2>Ranking</h2>"));
  EXPECT_NE(html.find("the smallest rate tried"), std::string::npos);

  const nlohmann::json doc = nlohmann::json::parse(sweep_results_json(r));
  ASSERT_EQ(doc["best_per_optimizer"].size(), 4u);
  EXPECT_EQ(doc["best_per_optimizer"][0]["id"], 2);
  EXPECT_EQ(doc["best_per_optimizer"][0]["rate_in_grid"], "largest");
  EXPECT_EQ(doc["best_per_optimizer"][1]["rate_in_grid"], "inside");
  EXPECT_EQ(doc["best_per_optimizer"][2]["rate_in_grid"], "smallest");
  EXPECT_EQ(doc["best_per_optimizer"][2]["schedule"], "cosine(steps=1ep)");

  // Nothing finished, nothing to recommend: no section.
  for (SweepRun& x : r.runs) x.diverged = true;
  EXPECT_TRUE(best_per_optimizer(r).empty());
  EXPECT_EQ(sweep_table(r).find("best per optimizer"), std::string::npos);
  EXPECT_EQ(sweep_report_html(r).find("Best per optimizer"), std::string::npos);
}

// With several data orders, one lucky order does not make the answer: an entry is judged by its
// mean over them, and one that diverged under any of them is not recommended.
TEST(SweepReport, BestPerOptimizerAveragesOverDataOrders) {
  // Three grid entries (rates 1e-3, 1e-2, 1e-1) over two data orders: ids 0-2 and 3-5.
  std::vector<SweepRun> runs = {
      rated_run(0, "adam()", "constant", 1e-3, 0.20), rated_run(1, "adam()", "constant", 1e-2, 0.30),
      rated_run(2, "adam()", "constant", 1e-1, 0.05), rated_run(3, "adam()", "constant", 1e-3, 0.60),
      rated_run(4, "adam()", "constant", 1e-2, 0.35), rated_run(5, "adam()", "constant", 1e-1, 0.10),
  };
  for (size_t i = 3; i < 6; ++i) runs[i].config.seed_index = 1;
  runs[5].diverged = true;  // 1e-1 diverged under the second order
  SweepResult r = hand_result(runs, 2);
  const std::vector<SweepBest> best = best_per_optimizer(r);
  ASSERT_EQ(best.size(), 1u);
  EXPECT_EQ(best[0].run, 1u);  // 1e-2: mean 0.325, against 0.4 for 1e-3
  EXPECT_EQ(best[0].edge, 0);
  EXPECT_DOUBLE_EQ(best[0].best_val_loss, 0.325);
  EXPECT_DOUBLE_EQ(best[0].best_val_accuracy, 0.675);
  EXPECT_EQ(best[0].data_orders, 2);
  const std::string table = sweep_table(r);
  EXPECT_NE(table.find("0.01  val loss 0.3250 (mean of 2 data orders), best acc 67.50%\n"), std::string::npos) << table;
  const nlohmann::json doc = nlohmann::json::parse(sweep_results_json(r));
  EXPECT_EQ(doc["best_per_optimizer"][0]["data_orders"], 2);
  EXPECT_DOUBLE_EQ(doc["best_per_optimizer"][0]["best_val_loss"].get<double>(), 0.325);
}

// Which entries the data orders cannot tell from the best. Each order is one draw (data order and
// initial weights) shared by every entry, so entries are compared order by order: 1e-2 is worse by
// 0.02 under every order and is told apart, though its spread overlaps the best's completely; 1e-1
// is worse on average by as much, but better under one order and far worse under another: noise.
// 1 and 3 sit on either side of the test's threshold (t = 2.40 and 4.36 against 2.92, the 95%
// quantile at 2 degrees of freedom): a wrong standard deviation or degree of freedom moves one of
// them across.
TEST(SweepReport, BestNamesTheEntriesWithinTheNoiseOfTheDataOrders) {
  const double rates[5] = {1e-3, 1e-2, 1e-1, 1, 3};
  const double losses[5][3] = {{0.30, 0.40, 0.35},   {0.32, 0.42, 0.37},   {0.25, 0.50, 0.36},
                               {0.31, 0.42, 0.395}, {0.32, 0.43, 0.395}};  // [rate][order]
  std::vector<SweepRun> runs;
  for (int order = 0; order < 3; ++order)
    for (int k = 0; k < 5; ++k) {
      runs.push_back(rated_run(5 * order + k, "adam()", "constant", rates[k], losses[k][order]));
      runs.back().config.seed_index = order;
    }
  SweepResult r = hand_result(runs, 3);
  std::vector<SweepBest> best = best_per_optimizer(r);
  ASSERT_EQ(best.size(), 1u);
  EXPECT_EQ(best[0].run, 0u);
  ASSERT_EQ(best[0].within_noise.size(), 2u);
  EXPECT_EQ(best[0].within_noise[0].run, 2u);
  EXPECT_DOUBLE_EQ(best[0].within_noise[0].best_val_loss, 0.37);
  EXPECT_EQ(best[0].within_noise[1].run, 3u);
  std::string table = sweep_table(r);
  EXPECT_NE(table.find("not told apart from it by the data orders: constant at 0.1 (0.3700), constant at 1 (0.3750)\n"),
            std::string::npos)
      << table;
  EXPECT_EQ(table.find("one data order"), std::string::npos) << table;
  // The ranking has a row per configuration and data order, and says which order each is.
  EXPECT_EQ(table.rfind("rank    id  order  optimizer", 0), 0u) << table;
  EXPECT_TRUE(std::regex_search(table, std::regex(R"(\n +\d+ +12 +2  adam\(\) )"))) << table;
  EXPECT_NE(sweep_report_html(r).find("<td>12</td><td>2</td><td class=l>adam()</td>"), std::string::npos);
  const nlohmann::json doc = nlohmann::json::parse(sweep_results_json(r));
  ASSERT_EQ(doc["best_per_optimizer"][0]["within_noise"].size(), 2u);
  EXPECT_EQ(doc["best_per_optimizer"][0]["within_noise"][0]["id"], 2);
  EXPECT_EQ(doc["best_per_schedule"][0]["within_noise"].size(), 2u);
  EXPECT_NE(sweep_report_html(r).find("constant at 0.1 (0.3700)"), std::string::npos);

  // The same difference under every order is no noise, however small.
  for (int order = 0; order < 3; ++order) r.runs[5 * order + 2].best_val_loss = losses[0][order] + 1e-4;
  ASSERT_EQ(best_per_optimizer(r)[0].within_noise.size(), 1u);
  EXPECT_EQ(best_per_optimizer(r)[0].within_noise[0].run, 3u);

  // One data order tells nothing about its noise: no entry is named, and the output says why.
  runs.resize(5);
  r = hand_result(runs, 1);
  best = best_per_optimizer(r);
  ASSERT_EQ(best.size(), 1u);
  EXPECT_TRUE(best[0].within_noise.empty());
  table = sweep_table(r);
  EXPECT_NE(table.find("with one data order the sweep cannot tell real differences"), std::string::npos) << table;
  EXPECT_NE(sweep_report_html(r).find("with one data order"), std::string::npos);
}

// Rivals come from the best's own group: its optimizer, and for best_per_schedule its schedule. An
// exact tie is a rival, and the earlier entry stays the best. Two data orders.
TEST(SweepReport, EntriesNotToldApartStayInTheirGroup) {
  struct Entry {
    const char *optimizer, *schedule;
    double lr, loss[2];
  };
  const Entry grid[] = {{"adam()", "constant", 1e-3, {0.30, 0.40}}, {"adam()", "constant", 1e-2, {0.31, 0.45}},
                        {"adam()", "step(every=1,gamma=0.5)", 1e-3, {0.305, 0.39}},
                        {"sgd()", "constant", 1e-3, {0.30, 0.39}}, {"sgd()", "constant", 1e-2, {0.30, 0.39}}};
  std::vector<SweepRun> runs;
  for (int order = 0; order < 2; ++order)
    for (int k = 0; k < 5; ++k) {
      runs.push_back(rated_run(5 * order + k, grid[k].optimizer, grid[k].schedule, grid[k].lr, grid[k].loss[order]));
      runs.back().config.seed_index = order;
    }
  const SweepResult r = hand_result(runs, 2);
  auto ids = [&r](const SweepBest& b) {
    std::vector<int64_t> out;
    for (const SweepRival& v : b.within_noise) out.push_back(r.runs[v.run].config.id);
    return out;
  };
  const std::vector<SweepBest> per_optimizer = best_per_optimizer(r);
  ASSERT_EQ(per_optimizer.size(), 2u);
  EXPECT_EQ(per_optimizer[0].run, 2u);  // adam with step: mean 0.3475
  EXPECT_EQ(ids(per_optimizer[0]), (std::vector<int64_t>{0, 1}));
  EXPECT_EQ(per_optimizer[1].run, 3u);  // sgd: a tie, the earlier entry
  EXPECT_EQ(ids(per_optimizer[1]), (std::vector<int64_t>{4}));
  const std::vector<SweepBest> per_schedule = best_per_schedule(r);
  ASSERT_EQ(per_schedule.size(), 3u);
  EXPECT_EQ(per_schedule[0].run, 0u);  // adam, constant: 1e-2 is its only rival
  EXPECT_EQ(ids(per_schedule[0]), (std::vector<int64_t>{1}));
  EXPECT_EQ(per_schedule[1].run, 2u);  // adam, step: alone in its group
  EXPECT_TRUE(per_schedule[1].within_noise.empty());
  EXPECT_EQ(ids(per_schedule[2]), (std::vector<int64_t>{4}));

  // The matrix marks each optimizer's best cell '*' and a cell not told apart from it '~'.
  const std::string table = sweep_table(r);
  EXPECT_NE(table.find("*: the optimizer's best;\n~: a cell the data orders do not tell apart from that best):\n"), std::string::npos)
      << table;
  EXPECT_TRUE(std::regex_search(table, std::regex(R"(\n  constant +0\.001< 0\.3500 ~ +0\.001< 0\.3450 \*\n)")))
      << table;
  EXPECT_TRUE(std::regex_search(table, std::regex(R"(\n  step\(every=1,gamma=0\.5\) +0\.001  0\.3475 \* +-\n)")))
      << table;
  EXPECT_NE(sweep_report_html(r).find("<td>  0.001&lt; 0.3500 ~</td>"), std::string::npos);

  // Where a shard's gaps leave one optimizer a single data order, its row says it cannot tell.
  SweepResult gaps = r;
  gaps.runs.erase(gaps.runs.begin() + 8, gaps.runs.end());  // sgd's second order is missing
  EXPECT_TRUE(best_per_optimizer(gaps)[1].within_noise.empty());
  EXPECT_NE(sweep_table(gaps).find("compared on one data order (the others missing)"), std::string::npos)
      << sweep_table(gaps);
  EXPECT_NE(sweep_report_html(gaps).find("cannot tell: compared on one data order"), std::string::npos);
}

// The one-sided 95% quantiles of Student's t, against published tables.
TEST(SweepReport, StudentTQuantiles) {
  const std::pair<int64_t, double> known[] = {{1, 6.314}, {2, 2.920}, {5, 2.015}, {10, 1.812}, {30, 1.697},
                                              {31, 1.696}, {40, 1.684}, {60, 1.671}, {120, 1.658}};
  for (auto [dof, t] : known) EXPECT_NEAR(student_t_95(dof), t, 1e-3) << dof;
  EXPECT_NEAR(student_t_95(1000000), 1.6449, 1e-4);
  for (int64_t dof = 1; dof < 200; ++dof) EXPECT_GT(student_t_95(dof), student_t_95(dof + 1)) << dof;
  EXPECT_TRUE(throws_error_containing([] { student_t_95(0); }, "at least 1"));
}

// Schedules compared fairly: each at its own best rate, per optimizer, as a matrix.
TEST(SweepReport, BestRatePerScheduleIsAMatrixOfSchedulesByOptimizers) {
  std::vector<SweepRun> runs;
  int64_t id = 0;
  const double loss[2][2][3] = {{{0.9, 0.5, 0.3}, {0.4, 0.45, 0.35}}, {{0.7, 0.8, 0.9}, {0.65, 0.6, 0.7}}};
  for (const char* opt : {"adam()", "sgd()"})
    for (const char* sched : {"constant", "cosine(steps=1ep)"})
      for (int k = 0; k < 3; ++k) {
        const int o = std::string(opt) == "sgd()", c = std::string(sched) != "constant";
        runs.push_back(rated_run(id++, opt, sched, std::pow(10.0, k - 3), loss[o][c][k]));
      }
  for (size_t i : {size_t{5}, size_t{6}, size_t{7}, size_t{8}}) runs[i].diverged = true;  // adam cosine 0.1; all of sgd constant
  SweepResult r = hand_result(runs, 1);
  r.options_json = R"({"seeds":1,"lrs":[0.001,0.01,0.1]})";
  const std::vector<SweepBest> best = best_per_schedule(r);
  ASSERT_EQ(best.size(), 3u);
  EXPECT_EQ(best[0].run, 2u);  // adam, constant: 0.1, the largest rate
  EXPECT_EQ(best[0].edge, 1);
  EXPECT_EQ(best[1].run, 3u);  // adam, cosine: 0.001 (0.1 was lower, but diverged)
  EXPECT_EQ(best[1].edge, -1);
  EXPECT_EQ(best[2].run, 10u);  // sgd, cosine: 0.01; sgd, constant has no finished run
  EXPECT_EQ(best[2].edge, 0);

  const std::string table = sweep_table(r);
  const size_t at = table.find("best rate per schedule");
  ASSERT_NE(at, std::string::npos) << table;
  std::istringstream lines(table.substr(at));
  std::string header, constant, cosine;
  std::getline(lines, header);  // the title and its key, on two lines
  std::getline(lines, header);
  std::getline(lines, header);
  std::getline(lines, constant);
  std::getline(lines, cosine);
  EXPECT_NE(header.find("adam()"), std::string::npos);
  EXPECT_LT(header.find("adam()"), header.find("sgd()"));
  EXPECT_EQ(constant.rfind("  constant", 0), 0u) << constant;
  EXPECT_NE(constant.find("    0.1> 0.3000 *"), std::string::npos) << constant;
  EXPECT_EQ(constant.back(), '-') << constant;
  EXPECT_NE(cosine.find("  0.001< 0.4000   "), std::string::npos) << cosine;
  EXPECT_NE(cosine.find("   0.01  0.6000 *"), std::string::npos) << cosine;
  EXPECT_EQ(table.find("~: a cell"), std::string::npos) << "one data order";

  const std::string html = sweep_report_html(r);
  EXPECT_NE(html.find("<h2>Best rate per schedule</h2>"), std::string::npos);
  EXPECT_NE(html.find("<td>    0.1&gt; 0.3000 *</td>"), std::string::npos);
  EXPECT_NE(html.find("<td>  0.001&lt; 0.4000</td>"), std::string::npos) << "not adam's best; one data order: no '~'";
  const nlohmann::json doc = nlohmann::json::parse(sweep_results_json(r));
  ASSERT_EQ(doc["best_per_schedule"].size(), 3u);
  EXPECT_EQ(doc["best_per_schedule"][1]["schedule"], "cosine(steps=1ep)");
  EXPECT_EQ(doc["best_per_schedule"][1]["rate_in_grid"], "smallest");

  EXPECT_EQ(table.rfind("rank    id  optimizer", 0), 0u) << "one data order: no order column\n" << table;
  EXPECT_EQ(html.find("<th>data order</th>"), std::string::npos);

  // One schedule: the matrix would repeat the best per optimizer, and is left out.
  SweepResult one = hand_result({runs[0], runs[1], runs[2]}, 1);
  EXPECT_EQ(sweep_table(one).find("best rate per schedule"), std::string::npos);
  EXPECT_EQ(sweep_report_html(one).find("Best rate per schedule"), std::string::npos);
}

// Gaps in the data orders (runs an interrupted sweep never started, or a shard's missing runs):
// entries are compared over the orders all of them finished, not one lucky order against a mean.
TEST(SweepReport, BestPerOptimizerComparesOverTheDataOrdersAllEntriesFinished) {
  std::vector<SweepRun> runs = {rated_run(0, "adam()", "constant", 1e-3, 0.40),
                                rated_run(1, "adam()", "constant", 1e-2, 0.20),
                                rated_run(2, "adam()", "constant", 1e-3, 0.42),
                                rated_run(3, "adam()", "constant", 1e-2, 0.20)};
  runs[2].config.seed_index = runs[3].config.seed_index = 1;
  // Interrupted before order 1 of 1e-2 began: no epoch, no loss.
  runs[3].train_loss = runs[3].val_loss = runs[3].val_accuracy = runs[3].lr = {};
  runs[3].final_val_loss = runs[3].best_val_loss = runs[3].final_val_accuracy = runs[3].best_val_accuracy = NAN;
  runs[3].best_epoch = 0;
  SweepResult r = hand_result(runs, 2);
  r.interrupted = true;
  std::vector<SweepBest> best = best_per_optimizer(r);
  ASSERT_EQ(best.size(), 1u);
  EXPECT_EQ(best[0].run, 1u) << "order 0: 0.20 at 1e-2 against 0.40 at 1e-3";
  EXPECT_DOUBLE_EQ(best[0].best_val_loss, 0.20);
  EXPECT_EQ(best[0].data_orders, 1);
  const std::string table = sweep_table(r);
  EXPECT_NE(table.find("best per optimizer (lowest best validation loss; the sweep was interrupted):"), std::string::npos)
      << table;
  EXPECT_NE(table.find("val loss 0.2000 (1 of 2 data orders)"), std::string::npos) << table;

  // The same run missing altogether (a merge without one shard) gives the same answer.
  r.runs.pop_back();
  r.interrupted = false;
  best = best_per_optimizer(r);
  ASSERT_EQ(best.size(), 1u);
  EXPECT_EQ(best[0].run, 1u);
  EXPECT_EQ(best[0].data_orders, 1);
}

// Both answers compare an optimizer's entries over the same data orders, so the best of an
// optimizer is the best of its schedules' cells, and a merge that lacks a shard says so.
TEST(SweepReport, BestPerScheduleAgreesWithBestPerOptimizerOverGaps) {
  // One rate, schedules S1 and S2, two data orders; S1's second order is missing (ids 0-1: order 0).
  SweepRun s1 = rated_run(0, "adam()", "S1", 1e-2, 0.30), s2 = rated_run(1, "adam()", "S2", 1e-2, 0.29),
           s2b = rated_run(3, "adam()", "S2", 1e-2, 0.35);
  s2b.config.seed_index = 1;
  SweepResult r = hand_result({s1, s2, s2b}, 2);
  r.grid_size = 4;
  const std::vector<SweepBest> per_optimizer = best_per_optimizer(r), per_schedule = best_per_schedule(r);
  ASSERT_EQ(per_optimizer.size(), 1u);
  ASSERT_EQ(per_schedule.size(), 2u);
  EXPECT_EQ(per_optimizer[0].run, 1u);
  EXPECT_DOUBLE_EQ(per_optimizer[0].best_val_loss, 0.29);
  EXPECT_DOUBLE_EQ(per_schedule[0].best_val_loss, 0.30);
  EXPECT_DOUBLE_EQ(per_schedule[1].best_val_loss, 0.29) << "S2 over order 0 only, as S1";
  EXPECT_EQ(per_schedule[1].data_orders, 1);
  EXPECT_EQ(per_optimizer[0].only_rate, true);
  EXPECT_EQ(nlohmann::json::parse(sweep_results_json(r))["best_per_optimizer"][0]["rate_in_grid"], "only");
  EXPECT_NE(sweep_table(r).find("(lowest best validation loss; 3 of the grid's 4 configurations)"), std::string::npos)
      << sweep_table(r);
}

// Where an optimizer's entries share no data order (a shard of a sweep with seeds), they are
// compared on the order most of them finished; one lucky order of another entry does not win.
TEST(SweepReport, EntriesSharingNoDataOrderAreComparedOnTheMostFinishedOne) {
  // Three rates over three orders (ids 0-2, 3-5, 6-8); shard 0/2 holds ids 0, 2, 4, 6, 8.
  SweepRun a0 = rated_run(0, "adam()", "constant", 1e-3, 0.20), c0 = rated_run(2, "adam()", "constant", 1e-1, 0.30),
           b1 = rated_run(4, "adam()", "constant", 1e-2, 0.10), a2 = rated_run(6, "adam()", "constant", 1e-3, 0.40),
           c2 = rated_run(8, "adam()", "constant", 1e-1, 0.25);
  b1.config.seed_index = 1;
  a2.config.seed_index = c2.config.seed_index = 2;
  SweepResult r = hand_result({a0, c0, b1, a2, c2}, 3);
  r.grid_size = 9;
  r.shard_count = 2;
  const std::vector<SweepBest> best = best_per_optimizer(r);
  ASSERT_EQ(best.size(), 1u);
  EXPECT_EQ(best[0].run, 0u) << "order 0: 0.20 at 1e-3 against 0.30 at 1e-1; 1e-2 has only order 1";
  EXPECT_EQ(best[0].data_orders, 1);
}

// An optimizer none of whose configurations finished is named, not silently left out; a halted or
// diverged cell of the matrix is a '-' in the rates' column.
TEST(SweepReport, OptimizersWithNothingFinishedAreNamed) {
  std::vector<SweepRun> runs = {rated_run(0, "adam()", "A", 1e-2, 0.2), rated_run(1, "adam()", "B", 1e-2, 0.3),
                                rated_run(2, "sgd()", "A", 1e-2, 0.1), rated_run(3, "sgd()", "B", 1e-2, 0.1)};
  runs[1].halted = runs[2].halted = true;
  runs[3].diverged = true;
  SweepResult r = hand_result(runs, 1);
  const std::string table = sweep_table(r);
  EXPECT_NE(table.find("  sgd()                  no configuration finished: every one diverged or was halted\n"),
            std::string::npos) << table;
  EXPECT_TRUE(std::regex_search(table, std::regex("\n  B +- +-\n"))) << table;
  EXPECT_NE(sweep_report_html(r).find("no configuration finished"), std::string::npos);
}

// A shard holds some of the grid's rates: whether the best is at an end is a question about the
// grid, which the options give, not about the rates the shard happens to hold.
TEST(SweepReport, EdgesOfAShardAreTheGridsEdges) {
  SweepResult r = hand_result({rated_run(0, "adam()", "constant", 1e-3, 0.5), rated_run(3, "adam()", "constant", 1, 0.3)}, 1);
  r.grid_size = 5;
  r.shard_index = 0;
  r.shard_count = 3;
  r.options_json = R"({"seeds":1,"lrs":[0.001,0.01,0.1,1,10]})";
  std::vector<SweepBest> best = best_per_optimizer(r);
  ASSERT_EQ(best.size(), 1u);
  EXPECT_EQ(best[0].run, 1u);
  EXPECT_EQ(best[0].edge, 0) << "10 was tried, by another shard";
  EXPECT_NE(sweep_table(r).find("(lowest best validation loss; shard 0/3 of the grid)"), std::string::npos);
  EXPECT_NE(sweep_report_html(r).find("<p>Partial results: shard 0/3 of the grid.</p>"), std::string::npos);
  r.options_json = R"({"seeds":1,"lrs":[0.001,0.01,0.1,1]})";
  EXPECT_EQ(best_per_optimizer(r)[0].edge, 1);
}

// The reports find a run's grid entry and data order from its id; a file whose grid size or runs
// disagree with the grid its options describe would mix configurations, and is refused.
TEST(SweepReport, ResultsWhoseRunsDisagreeWithTheGridAreRefused) {
  SweepResult r = hand_result({rated_run(0, "adam()", "constant", 1e-3, 0.5), rated_run(1, "sgd()", "constant", 1e-3, 0.1)}, 1);
  r.options_json = R"J({"epochs":1,"lrs":[0.001],"optimizers":["adam()","sgd()"],"schedules":["constant"],"seeds":1})J";
  EXPECT_NO_THROW(read_sweep_results(sweep_results_json(r), "ok.json"));
  // 2 configurations cannot be 2 optimizers over 2 data orders.
  r.options_json = R"J({"epochs":1,"lrs":[0.001],"optimizers":["adam()","sgd()"],"schedules":["constant"],"seeds":2})J";
  EXPECT_TRUE(throws_error_containing([&] { read_sweep_results(sweep_results_json(r), "r.json"); },
                                      "sweep results 'r.json': field 'grid_size' is 2, but the grid of its options "
                                      "has 4 configurations"));
  // One entry over two orders: run 1 is adam() on order 1.
  r.options_json = R"J({"epochs":1,"lrs":[0.001],"optimizers":["adam()"],"schedules":["constant"],"seeds":2})J";
  EXPECT_TRUE(throws_error_containing([&] { read_sweep_results(sweep_results_json(r), "r.json"); },
                                      "run 1: field 'optimizer' is 'sgd()', but the grid's configuration 1 has 'adam()'"));
  r.runs[1].config.optimizer = "adam()";
  EXPECT_TRUE(throws_error_containing([&] { read_sweep_results(sweep_results_json(r), "r.json"); },
                                      "run 1: field 'seed_index' is 0, but the grid's configuration 1 has 1"));
  r.runs[1].config.seed_index = 1;
  EXPECT_NO_THROW(read_sweep_results(sweep_results_json(r), "ok.json"));
}

// A rate where every run diverged has no final loss: the loss-against-rate panel left it out, so the
// plot's axis stopped short of the grid. It is now a cross on the panel's top edge.
TEST(SweepReport, RatesWhereEveryRunDivergedAreCrossesOnTheLossPlot) {
  // Rates 1e-3, 1e-2, 1e-1 over two data orders: 1e-1 diverged under both, 1e-3 under one.
  std::vector<SweepRun> runs;
  for (int64_t seed = 0; seed < 2; ++seed)
    for (int64_t k = 0; k < 3; ++k) {
      SweepRun x = rated_run(3 * seed + k, "sgd()", "constant", std::pow(10.0, k - 3), 0.5);
      x.config.seed_index = seed;
      runs.push_back(x);
    }
  for (size_t i : {size_t{2}, size_t{5}, size_t{3}}) {
    runs[i].diverged = true;
    runs[i].diverged_epoch = 1;
    runs[i].final_val_loss = runs[i].best_val_loss = NAN;
  }
  const std::string html = sweep_report_html(hand_result(runs, 2));
  const std::regex cross("<path d=\"M([0-9.]+),([0-9.]+) L[^\"]*\" fill=\"none\" stroke=\"#555555\"");
  std::vector<std::pair<double, double>> at;
  for (auto it = std::sregex_iterator(html.begin(), html.end(), cross); it != std::sregex_iterator(); ++it)
    at.push_back({std::stod((*it)[1]) + 4.5, std::stod((*it)[2]) + 4.5});
  ASSERT_EQ(at.size(), 2u) << "one cross, for 1e-1 (1e-3 has a finished run), and its legend entry";
  // The x axis runs from 1e-3 to 1e-1 (72 to 696 px): the cross is at its right end, on the top
  // edge (36 px, under the title).
  EXPECT_NEAR(at[0].first, 696, 0.01);
  EXPECT_NEAR(at[0].second, 36, 0.01);
  EXPECT_NE(html.find(">every run of a schedule diverged</text>"), std::string::npos);
  EXPECT_NE(html.find("<p>sgd() diverged: constant at lr 0.001, 0.1</p>"), std::string::npos);
}

// results.json names the best entry and its rivals by their ids in the grid, which are not their
// places in the file where runs are missing; the rivals come lowest first, whatever their order in
// the grid; and the figures are means over the data orders. Hand computed: a merge that lacks
// rate 1e-3 (ids 0 and 4 of 4 rates x 2 orders).
TEST(SweepReport, JsonAnswersUseGridIdsAndMeansOverDataOrders) {
  const double rates[3] = {1e-2, 3e-2, 1e-1};
  // [rate][order]. Against 1e-2, 3e-2 differs by 0.02 and 0.10 (t = 1.5), 1e-1 by 0.04 and 0.00
  // (t = 1): neither is told apart at 1 degree of freedom (6.314).
  const double losses[3][2] = {{0.30, 0.40}, {0.32, 0.50}, {0.34, 0.40}};
  std::vector<SweepRun> runs;
  for (int order = 0; order < 2; ++order)
    for (int k = 0; k < 3; ++k) {
      runs.push_back(rated_run(4 * order + k + 1, "adam()", "constant", rates[k], losses[k][order]));
      runs.back().config.seed_index = order;
    }
  SweepResult r = hand_result(runs, 2);
  r.grid_size = 8;
  r.options_json = R"({"seeds":2,"lrs":[0.001,0.01,0.03,0.1]})";
  const nlohmann::json best = nlohmann::json::parse(sweep_results_json(r))["best_per_optimizer"];
  ASSERT_EQ(best.size(), 1u);
  EXPECT_EQ(best[0]["id"], 1);
  EXPECT_NEAR(best[0]["best_val_loss"].get<double>(), 0.35, 1e-12);
  EXPECT_NEAR(best[0]["best_val_accuracy"].get<double>(), 0.65, 1e-12);  // rated_run: 1 - loss
  ASSERT_EQ(best[0]["within_noise"].size(), 2u);
  EXPECT_EQ(best[0]["within_noise"][0]["id"], 3);  // 1e-1, mean 0.37
  EXPECT_NEAR(best[0]["within_noise"][0]["best_val_loss"].get<double>(), 0.37, 1e-12);
  EXPECT_EQ(best[0]["within_noise"][1]["id"], 2);  // 3e-2, mean 0.41
  EXPECT_NEAR(best[0]["within_noise"][1]["best_val_loss"].get<double>(), 0.41, 1e-12);
  EXPECT_NE(sweep_table(r).find("constant at 0.1 (0.3700), constant at 0.03 (0.4100)\n"), std::string::npos)
      << sweep_table(r);
}

// The table lists at most four rivals and counts the rest. Six rates, each 0.01 worse on average
// than the one before, with a paired difference of +-0.02 around that: t <= 3 against 6.314.
TEST(SweepReport, RivalsBeyondFourAreCounted) {
  std::vector<SweepRun> runs;
  for (int order = 0; order < 2; ++order)
    for (int k = 0; k < 7; ++k) {
      const double loss = (order ? 0.40 : 0.30) + (k ? 0.01 * k + (order ? -0.02 : 0.02) : 0);
      runs.push_back(rated_run(7 * order + k, "adam()", "constant", 1e-3 * (k + 1), loss));
      runs.back().config.seed_index = order;
    }
  const SweepResult r = hand_result(runs, 2);
  ASSERT_EQ(best_per_optimizer(r)[0].within_noise.size(), 6u);
  const std::string table = sweep_table(r);
  EXPECT_NE(table.find(": constant at 0.002 (0.3600), constant at 0.003 (0.3700), constant at 0.004 (0.3800), "
                       "constant at 0.005 (0.3900) and 2 more\n"),
            std::string::npos)
      << table;
}

// A whole sweep is not partial: no note in the heading, none in the report. A merge that lacks a
// shard is (BestPerScheduleAgreesWithBestPerOptimizerOverGaps).
TEST(SweepReport, AWholeSweepIsNotCalledPartial) {
  const SweepResult r = hand_result({rated_run(0, "adam()", "constant", 1e-3, 0.5),
                                     rated_run(1, "adam()", "constant", 1e-2, 0.4)}, 1);
  EXPECT_NE(sweep_table(r).find("\nbest per optimizer (lowest best validation loss):\n"), std::string::npos)
      << sweep_table(r);
  EXPECT_EQ(sweep_report_html(r).find("Partial results"), std::string::npos);
  // With one data order everywhere, the shared note says why no rivals are named; no row adds that
  // its own comparison rests on one order.
  EXPECT_EQ(sweep_table(r).find("the others missing"), std::string::npos) << sweep_table(r);
}

// Every row of the report's best-per-optimizer table spans the header's columns, the row of an
// optimizer with nothing finished too, with or without the rivals' column.
TEST(SweepReport, BestPerOptimizerRowsSpanTheHeader) {
  for (int64_t seeds : {1, 2}) {
    std::vector<SweepRun> runs;
    for (int64_t order = 0; order < seeds; ++order) {
      runs.push_back(rated_run(2 * order, "adam()", "constant", 1e-2, 0.3 + 0.1 * order));
      runs.push_back(rated_run(2 * order + 1, "sgd()", "constant", 1e-2, 0.2));
      runs.back().diverged = true;
      for (size_t i = runs.size() - 2; i < runs.size(); ++i) runs[i].config.seed_index = order;
    }
    const std::string html = sweep_report_html(hand_result(runs, seeds));
    const size_t begin = html.find("<h2>Best per optimizer</h2>");
    ASSERT_NE(begin, std::string::npos);
    const std::string table = html.substr(begin, html.find("</table>", begin) - begin);
    std::vector<std::string> rows;
    for (size_t at = table.find("<tr>"); at != std::string::npos; at = table.find("<tr>", at + 1))
      rows.push_back(table.substr(at, table.find("</tr>", at) - at));
    ASSERT_EQ(rows.size(), 3u) << table;  // the header, adam, sgd
    auto columns = [](const std::string& row) {
      int n = 0;
      const std::regex cell("<t[hd]( class=l)?( colspan=([0-9]+))?>");
      for (auto it = std::sregex_iterator(row.begin(), row.end(), cell); it != std::sregex_iterator(); ++it)
        n += (*it)[3].matched ? std::stoi((*it)[3]) : 1;
      return n;
    };
    const int header = columns(rows[0]);
    EXPECT_EQ(header, seeds > 1 ? 8 : 7) << rows[0];
    EXPECT_EQ(columns(rows[1]), header) << rows[1];
    EXPECT_NE(rows[2].find("no configuration finished"), std::string::npos) << rows[2];
    EXPECT_EQ(columns(rows[2]), header) << rows[2];
  }
}

// Under the loss-against-rate panels, halted configurations are counted per optimizer: a panel
// without any says nothing of them.
TEST(SweepReport, HaltedConfigurationsAreCountedUnderTheirOwnOptimizer) {
  std::vector<SweepRun> runs = {rated_run(0, "adam()", "constant", 1e-3, 0.5), rated_run(1, "adam()", "constant", 1e-2, 0.4),
                                rated_run(2, "sgd()", "constant", 1e-3, 0.6), rated_run(3, "sgd()", "constant", 1e-2, 0.3)};
  runs[0].halted = true;
  const std::string html = sweep_report_html(hand_result(runs, 1));
  EXPECT_NE(html.find("<p>adam(): 1 configuration halted by successive halving"), std::string::npos);
  EXPECT_EQ(html.find("sgd(): 1 configuration halted"), std::string::npos);
}

// curves.csv: each value under its own header.
TEST(SweepReport, CurvesCsvPutsEachValueUnderItsHeader) {
  SweepRun x = hand_run(0, 0, 0.5, 0.75);
  x.train_loss = {0.25};
  x.lr = {0.125};
  const std::string csv = sweep_curves_csv(hand_result({x}, 1));
  const size_t nl = csv.find('\n');
  ASSERT_NE(nl, std::string::npos);
  auto fields = [](const std::string& line) {
    std::vector<std::string> out;
    size_t start = 0;
    for (size_t comma; (comma = line.find(',', start)) != std::string::npos; start = comma + 1)
      out.push_back(line.substr(start, comma - start));
    out.push_back(line.substr(start));
    return out;
  };
  const std::vector<std::string> head = fields(csv.substr(0, nl));
  const std::vector<std::string> row = fields(csv.substr(nl + 1, csv.find('\n', nl + 1) - nl - 1));
  ASSERT_EQ(head.size(), row.size()) << csv;
  std::map<std::string, std::string> at;
  for (size_t i = 0; i < head.size(); ++i) at[head[i]] = row[i];
  EXPECT_EQ(std::stod(at["train_loss"]), 0.25) << csv;
  EXPECT_EQ(std::stod(at["val_loss"]), 0.5) << csv;
  EXPECT_EQ(std::stod(at["val_accuracy"]), 0.75) << csv;
  EXPECT_EQ(std::stod(at["lr"]), 0.125) << csv;
  EXPECT_EQ(std::stod(at["base_lr"]), 0.01) << csv;
  EXPECT_EQ(at["epoch"], "1") << csv;
}

// Diverged runs' losses are NaN or infinite: spelled nan, inf and -inf on every platform (glibc's
// printf writes a NaN with its sign bit set as "-nan").
TEST(SweepReport, CurvesCsvSpellsNonFiniteValuesPortably) {
  SweepRun x = hand_run(0, 0, -std::nan(""), 0.75);
  x.train_loss = {INFINITY};
  x.val_accuracy = {-INFINITY};
  x.lr = {std::nan("")};
  const std::string csv = sweep_curves_csv(hand_result({x}, 1));
  EXPECT_NE(csv.find(",1,inf,nan,-inf,nan\n"), std::string::npos) << csv;
  EXPECT_EQ(csv.find("-nan"), std::string::npos) << csv;
}

TEST(SweepResults, JsonRoundTripsAndShardsMergeToTheWhole) {
  SweepOptions o = small_sweep();
  SweepResult whole = run_sweep(o);
  std::vector<SweepResult> shards;
  for (int64_t i = 0; i < 3; ++i) {
    SweepOptions s = o;
    s.shard_index = i;
    s.shard_count = 3;
    shards.push_back(read_sweep_results(sweep_results_json(run_sweep(s)), "shard"));
  }
  SweepResult merged = merge_sweeps(shards);
  expect_same_runs(whole, merged, 1e-5);
  SweepResult back = read_sweep_results(sweep_results_json(whole), "x");
  expect_same_runs(whole, back, 0);
  EXPECT_EQ(back.runs[4].lr_curve, whole.runs[4].lr_curve);
  // A shard given twice is taken once; shards that hold one configuration with other results, and
  // foreign sweeps, are refused.
  EXPECT_EQ(merge_sweeps({shards[0], shards[0]}).runs.size(), shards[0].runs.size());
  SweepResult retrained = shards[0];
  retrained.runs[1].val_loss.back() *= 1.0000001;
  EXPECT_TRUE(throws_error_containing([&] { merge_sweeps({shards[0], retrained}); }, " with other results"));
  SweepOptions other = o;
  other.base.epochs = 2;
  other.shard_count = 3;
  EXPECT_THROW(merge_sweeps({shards[0], run_sweep(other)}), Error);
}

TEST(SweepResults, ReaderRefusesForeignOrDamagedFiles) {
  SweepOptions o = small_sweep();
  o.lrs = {1e-2};
  std::string good = sweep_results_json(run_sweep(o));
  EXPECT_NO_THROW(read_sweep_results(good, "x"));
  for (const std::string& bad : {std::string("not json"), std::string("{}"), std::string("[1,2]"),
                                 good.substr(0, good.size() / 2)})
    EXPECT_THROW(read_sweep_results(bad, "x"), Error);
  auto j = nlohmann::json::parse(good);
  j["runs"][0]["id"] = 999;
  EXPECT_THROW(read_sweep_results(j.dump(), "x"), Error);
  j = nlohmann::json::parse(good);
  j["runs"][0]["val_loss"] = "x";
  EXPECT_THROW(read_sweep_results(j.dump(), "x"), Error);
  j = nlohmann::json::parse(good);
  j["runs"][0]["train_loss"].push_back(1.0);
  EXPECT_THROW(read_sweep_results(j.dump(), "x"), Error);
}

// Shards merge only with shards of the same sweep: the same grid size and epochs are not enough.
TEST(SweepResults, MergeRefusesShardsOfAnotherSweep) {
  SweepResult a = hand_result({hand_run(0, 0, 1.0, 0.5), hand_run(1, 0, 2.0, 0.5)}, 1);
  a.options_json = "{\"lrs\":[0.01,0.1]}";
  SweepResult b = a;
  a.runs.pop_back();
  b.runs.erase(b.runs.begin());
  EXPECT_EQ(merge_sweeps({a, b}).runs.size(), 2u);
  b.options_json = "{\"lrs\":[0.001,0.1]}";
  EXPECT_TRUE(throws_error_containing([&] { merge_sweeps({a, b}); },
                                      "input 2 belongs to a different sweep than input 1: its options differ"));
  // The data is told by its contents: a task that read its own copy of it belongs to the sweep.
  a.options_json = "{\"data\":\"idx:/scratch/1\",\"data_crc32\":7,\"lrs\":[0.01,0.1]}";
  b.options_json = "{\"data\":\"idx:/scratch/2\",\"data_crc32\":7,\"lrs\":[0.01,0.1]}";
  EXPECT_EQ(merge_sweeps({a, b}).runs.size(), 2u);
  b.options_json = "{\"data\":\"idx:/scratch/1\",\"data_crc32\":8,\"lrs\":[0.01,0.1]}";
  EXPECT_TRUE(throws_error_containing([&] { merge_sweeps({a, b}); }, "its options differ"));
  b.options_json = "{\"data\":\"idx:/scratch/2\",\"lrs\":[0.01,0.1]}";  // written before the fingerprint
  EXPECT_TRUE(throws_error_containing([&] { merge_sweeps({a, b}); }, "its options differ"));
  b.options_json = "{\"lrs\":[0.001,0.1]}";
  a.options_json = "{\"lrs\":[0.01,0.1]}";
  // Inputs read from files are named by their file.
  a.source = "a/results.json";
  b.source = "b/results.json";
  EXPECT_TRUE(throws_error_containing([&] { merge_sweeps({a, b}); },
                                      "'b/results.json' belongs to a different sweep than 'a/results.json'"));
  b.options_json = a.options_json;
  b.runs = a.runs;
  EXPECT_EQ(merge_sweeps({a, b}).runs.size(), 1u) << "the same run in two files is one run";
  b.runs[0].val_loss[0] = 0.25;
  EXPECT_TRUE(throws_error_containing([&] { merge_sweeps({a, b}); },
                                      "configuration 0 finished in 'a/results.json' and in 'b/results.json' with "
                                      "other results (one of them an earlier run's? keep the one wanted)"));
  // An unfinished record (an interrupted run's) gives way to a finished one, wherever it stands.
  b.runs[0] = a.runs[0];
  b.runs[0].val_loss.clear();
  b.runs[0].train_loss.clear();
  EXPECT_EQ(merge_sweeps({b, a}).runs[0].val_loss, a.runs[0].val_loss);
  EXPECT_EQ(merge_sweeps({a, b}).runs[0].val_loss, a.runs[0].val_loss);
}

// Shards trained on the CPU and on a GPU join into one sweep, each run keeping the device that
// trained it, and the joined results say they hold two devices' numbers.
TEST(SweepResults, MergedRunsKeepTheDeviceThatTrainedThem) {
  SweepOptions o = small_sweep();
  o.shard_count = 2;
  SweepResult a = run_sweep(o);
  o.shard_index = 1;
  SweepResult b = run_sweep(o);
  const std::string here = a.device, other = here == "cpu" ? "cuda" : "cpu";
  EXPECT_EQ(here, o.base.device);
  for (const SweepRun& x : a.runs) EXPECT_EQ(x.device, here);
  EXPECT_EQ(sweep_mixed_devices(merge_sweeps({a, b})), "");
  EXPECT_EQ(merge_sweeps({a, b}).device, here);
  b.device = other;
  for (SweepRun& x : b.runs) x.device = other;
  EXPECT_EQ(merge_sweeps({a, b}).device, "cpu+cuda");
  b.mode = a.mode == "packed" ? "streams" : "packed";
  EXPECT_EQ(merge_sweeps({a, b}).mode, "packed+streams");
  const SweepResult joined = read_sweep_results(sweep_results_json(merge_sweeps({a, b})), "joined");
  EXPECT_EQ(joined.device, "cpu+cuda");
  for (const SweepRun& x : joined.runs) EXPECT_EQ(x.device, x.config.id % 2 == 0 ? here : other) << x.config.id;
  EXPECT_EQ(sweep_mixed_devices(joined), "6 runs on cpu, 6 on cuda");
  const std::string table = sweep_table(joined);
  EXPECT_NE(table.find("ok (cuda)"), std::string::npos) << table;
  EXPECT_NE(table.find("ok (cpu)"), std::string::npos) << table;
  EXPECT_NE(sweep_report_html(joined).find("join runs of more than one device (6 runs on cpu, 6 on cuda)"),
            std::string::npos);
  EXPECT_EQ(sweep_table(a).find("(" + here + ")"), std::string::npos) << "one device needs no name per run";
  // Files written before runs named their device: the file's device trained them all.
  auto old = nlohmann::json::parse(sweep_results_json(b));
  for (auto& run : old["runs"]) run.erase("device");
  for (const SweepRun& x : read_sweep_results(old.dump(), "old").runs) EXPECT_EQ(x.device, other);
  old["device"] = "cpu+cuda";
  EXPECT_TRUE(throws_error_containing([&] { read_sweep_results(old.dump(), "old"); },
                                      "sweep results 'old': run 1: missing field 'device' (the file's runs trained "
                                      "on cpu+cuda)"));
  old = nlohmann::json::parse(sweep_results_json(b));
  // A run names one device, in plain characters (it reaches the report and the terminal as written).
  for (const auto& [bad, shown] : std::vector<std::pair<std::string, std::string>>{
           {"cpu+cuda", "cpu+cuda"}, {"", ""}, {"<img src=x>", "<img src=x>"}, {"cpu\x1b[31m", "cpu\\x1b[31m"}}) {
    old["runs"][0]["device"] = bad;
    EXPECT_TRUE(throws_error_containing([&] { read_sweep_results(old.dump(), "old"); },
                                        "run 1: field 'device' is '" + shown + "', not the name of a device"))
        << shown;
  }
  old = nlohmann::json::parse(sweep_results_json(b));
  for (const char* bad : {"", "cpu+", "+cpu", "cpu++cuda", "gpu 0"}) {
    old["device"] = bad;
    EXPECT_TRUE(throws_error_containing([&] { read_sweep_results(old.dump(), "old"); },
                                        "field 'device' is '" + std::string(bad) + "', not a device's name"))
        << bad;
  }
  SweepResult odd = joined;
  odd.runs[0].device = "<b>";
  EXPECT_NE(sweep_report_html(odd).find("ok (&lt;b&gt;)"), std::string::npos);
  // One configuration finished on two devices with other numbers: the error says where each ran.
  SweepResult elsewhere = a;
  elsewhere.source = "b.json";
  a.source = "a.json";
  for (SweepRun& x : elsewhere.runs) {
    x.device = other;
    x.val_loss.back() *= 1.001;
  }
  EXPECT_TRUE(throws_error_containing([&] { merge_sweeps({a, elsewhere}); },
                                      "configuration 0 finished in 'a.json' (on " + here + ") and in 'b.json' (on " +
                                          other + ") with other results (devices round differently"));
  // A run a resume has queued, not yet trained, holds no numbers of the device it names.
  SweepResult queued = a;
  queued.runs[1].device = other;
  queued.runs[1].val_loss.clear();
  EXPECT_EQ(sweep_devices(queued.runs, "none"), here);
  EXPECT_EQ(sweep_mixed_devices(queued), "");
  // A resume on another device keeps the runs it finished, and their device.
  SweepOptions whole = small_sweep();
  const SweepResult resumed = run_sweep(whole, {}, nullptr, {joined});
  EXPECT_EQ(resumed.device, "cpu+cuda");
  EXPECT_EQ(sweep_mixed_devices(resumed), "6 runs on cpu, 6 on cuda");
}

// A results file is one sweep's as lrlab writes it, or refused by name: merge would otherwise put a
// grid of 2^62 configurations, a rate the grid never had or an epoch past the last into its report.
TEST(SweepResults, ReaderRefusesFilesThatContradictThemselves) {
  SweepOptions o = small_sweep();
  o.base.epochs = 2;
  o.lrs = {1e-2, 1e-1};
  o.schedules = {"constant"};
  const std::string good = sweep_results_json(run_sweep(o));
  EXPECT_NO_THROW(read_sweep_results(good, "f.json"));
  using nlohmann::json;
  struct Case {
    std::function<void(json&)> change;
    std::string error;
  };
  for (const Case& c : std::vector<Case>{
           {[](json& j) { j["grid_size"] = int64_t(1) << 62; }, "field 'grid_size' is 4611686018427387904, but the grid "
                                                                "of its options has 4 configurations"},
           {[](json& j) { j["epochs"] = 3; }, "field 'epochs' is 3, not the options' 2"},
           {[](json& j) { j["steps_per_epoch"] = 0; }, "field 'steps_per_epoch'"},
           {[](json& j) { j["seconds"] = -1; }, "field 'seconds'"},
           {[](json& j) { j["shard"]["count"] = 5; }, "field 'shard' is out of range"},
           {[](json& j) { j["shard"]["count"] = 2; }, "run 1: not a configuration of shard 0/2"},
           {[](json& j) { j["options"]["lrs"] = {0.01, -1}; }, "field 'options': "},
           {[](json& j) { j["options"].erase("schedules"); }, "missing field 'schedules'"},
           {[](json& j) { j["runs"][1]["lr"] = -1; }, "run 1: field 'lr' is -1, but the grid's configuration 1 has 0.1"},
           {[](json& j) { j["runs"][1]["schedule"] = "exp(gamma=0.5)"; }, "run 1: field 'schedule'"},
           {[](json& j) { j["runs"][1]["seed_index"] = 1; }, "run 1: field 'seed_index'"},
           {[](json& j) { j["runs"][1]["best_epoch"] = 1000; },
            "run 1: field 'best_epoch' is 1000, out of range for a run of 2 epochs"},
           {[](json& j) { j["runs"][1]["best_epoch"] = -1; }, "run 1: field 'best_epoch'"},
           {[](json& j) { j["runs"][1]["diverged_epoch"] = 1; }, "run 1: field 'diverged_epoch'"},
           {[](json& j) {
              j["runs"][1]["diverged"] = true;
              j["runs"][1]["diverged_epoch"] = 3;
            },
            "run 1: field 'diverged_epoch' is 3, out of range for a run of 2 epochs"},
           {[](json& j) {
              j["runs"][1]["diverged"] = true;
              j["runs"][1]["halted"] = true;
            },
            "run 1: both diverged and halted"},
           {[](json& j) { j["runs"][1]["val_loss"][0] = -0.5; }, "run 1: field 'val_loss' holds a value out of range"},
           {[](json& j) { j["runs"][1]["train_loss"][1] = -0.5; }, "run 1: field 'train_loss'"},
           {[](json& j) { j["runs"][1]["val_accuracy"][0] = 1.5; }, "run 1: field 'val_accuracy'"},
           {[](json& j) { j["runs"][1]["lr_per_epoch"][0] = nullptr; }, "run 1: field 'lr_per_epoch'"},
           {[](json& j) { j["runs"][1]["best_val_loss"] = -1; }, "run 1: field 'best_val_loss'"},
           {[](json& j) { j["runs"][1]["final_val_accuracy"] = 2; }, "run 1: field 'final_val_accuracy'"},
           {[](json& j) { j["runs"][1]["lr_curve"] = std::vector<float>(kLrCurvePoints + 1, 0.1f); },
            "run 1: field 'lr_curve'"},
           {[](json& j) { j["runs"][1]["lr_curve"][0] = -1; }, "run 1: field 'lr_curve'"},
           // The summary the ranking reads must be the one its curves give.
           {[](json& j) { j["runs"][1]["final_val_loss"] = j["runs"][1]["val_loss"][1].get<double>() + 0.1; },
            "run 1: field 'final_val_loss' is "},
           {[](json& j) { j["runs"][1]["best_epoch"] = 3 - j["runs"][1]["best_epoch"].get<int>(); },
            "run 1: field 'best_epoch' is "},
           {[](json& j) { j["runs"][0]["best_val_accuracy"] = nullptr; },
            "run 0: field 'best_val_accuracy' is null, but its curves give 0."},
           {[](json& j) { j["runs"][0]["best_val_loss"] = j["runs"][0]["best_val_loss"].get<double>() * 2; },
            "run 0: field 'best_val_loss' is "},
           {[](json& j) { j["runs"][0]["final_val_accuracy"] = 0.01; },
            "run 0: field 'final_val_accuracy' is 0.01, but its curves give 0."},
       }) {
    json j = json::parse(good);
    c.change(j);
    EXPECT_TRUE(
        throws_error_containing([&] { read_sweep_results(j.dump(), "f.json"); }, "sweep results 'f.json': " + c.error));
  }
}

// Every per-epoch curve of a run in results.json has one value per epoch run.
TEST(SweepResults, ReaderRefusesCurvesOfUnequalLengths) {
  SweepResult r = hand_result({hand_run(0, 0, 1.0, 0.5)}, 1);
  r.options_json = R"J({"epochs":1,"lrs":[0.01],"optimizers":["adam()"],"schedules":["constant"],"seeds":1})J";
  const std::string good = sweep_results_json(r);
  EXPECT_NO_THROW(read_sweep_results(good, "x"));
  for (const std::string curve : {"train_loss", "val_accuracy", "lr_per_epoch"}) {
    auto j = nlohmann::json::parse(good);
    j["runs"][0][curve].push_back(1.0);
    EXPECT_NE(lrlab::testing::error_of([&] { read_sweep_results(j.dump(), "x"); })
                  .find("run 0: curves of inconsistent lengths: field '" + curve + "' has 2 values, 'val_loss' 1"),
              std::string::npos)
        << curve;
  }
  auto j = nlohmann::json::parse(good);
  for (const char* curve : {"train_loss", "val_loss", "val_accuracy", "lr_per_epoch"}) j["runs"][0][curve].push_back(0.5);
  EXPECT_TRUE(throws_error_containing([&] { read_sweep_results(j.dump(), "x"); },
                                      "run 0: field 'val_loss' has 2 epochs, more than the sweep's 1"));
}

TEST(SweepReport, HtmlIsSelfContained) {
  SweepOptions o = small_sweep();
  std::string html = sweep_report_html(run_sweep(o));
  EXPECT_NE(html.find("<svg"), std::string::npos);
  EXPECT_EQ(html.find("<script"), std::string::npos);
  EXPECT_EQ(html.find("http://"), html.find("http://www.w3.org"));  // only the SVG namespace
  EXPECT_NE(html.find("Final validation loss against base rate"), std::string::npos);
  EXPECT_NE(html.find("Learning-rate curves"), std::string::npos);
}

const char* kSmallCli =
    "--data spirals --samples 900 --hidden 16,16 --epochs 2 --batch 50 --device cpu --quiet "
    "--lr 1e-3:1e-1:3 --schedule constant 'exp(gamma=0.5,every=1ep)' --optimizer 'adam()' 'sgd(momentum=0.9)'";

// Off a terminal, one progress line per epoch: time spent and, but for the last, an estimate left.
TEST(SweepCli, ProgressLinesSayTimeSpentAndLeft) {
  auto r = run_cli("sweep --data spirals --samples 600 --hidden 8 --epochs 2 --batch 50 --device cpu --lr 0.01 0.02");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(std::regex_search(r.err, std::regex("  epoch 1/2, 2 of 2 configurations training, [0-9]+ s, ~[0-9]+ s left\n")))
      << r.err;
  EXPECT_TRUE(std::regex_search(r.err, std::regex("  epoch 2/2, 2 of 2 configurations training, [0-9]+ s\n"))) << r.err;
  EXPECT_NE(r.out.find("; 2 configurations (streams, cpu), 2 epochs, "), std::string::npos) << r.out;
  // One of each is singular.
  auto one = run_cli("sweep --data spirals --samples 600 --hidden 8 --epochs 1 --batch 50 --device cpu --lr 0.01 --quiet");
  ASSERT_EQ(one.status, 0) << one.err;
  EXPECT_EQ(one.err.find("epoch"), std::string::npos) << one.err;
  EXPECT_NE(one.out.find("; 1 configuration (streams, cpu), 1 epoch, "), std::string::npos) << one.out;
  // Once nothing trains, nothing is left to wait for.
  auto diverged = run_cli("sweep --data spirals --samples 600 --hidden 8 --epochs 5 --batch 50 --device cpu --lr 1000 "
                          "--optimizer 'sgd()'");
  ASSERT_EQ(diverged.status, 0) << diverged.err;
  EXPECT_TRUE(std::regex_search(diverged.err, std::regex("  epoch 1/5, 0 of 1 configuration training, [0-9]+ s\n")))
      << diverged.err;
}

// The time left is the epochs to come at the mean pace of those done: 10 s for the first of 4
// epochs leaves 3 x 10 s; 10 s for two of them, 2 x 5 s.
TEST(SweepCli, TimeLeftIsTheEpochsToComeAtTheMeanPace) {
  using lrlab::cli::sweep_progress_timing;
  EXPECT_EQ(sweep_progress_timing(1, 4, 3, 10.0), ", 10 s, ~30 s left");
  EXPECT_EQ(sweep_progress_timing(2, 4, 3, 10.0), ", 10 s, ~10 s left");
  EXPECT_EQ(sweep_progress_timing(3, 4, 1, 10.0), ", 10 s, ~3 s left");
  EXPECT_EQ(sweep_progress_timing(4, 4, 1, 10.0), ", 10 s");
  EXPECT_EQ(sweep_progress_timing(1, 4, 0, 10.0), ", 10 s");
}

TEST(SweepCli, WritesOutputsAndRanks) {
  std::string out = temp_path("sweep_out");
  auto r = run_cli(std::string("sweep ") + kSmallCli + " --out " + out);
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("rank"), std::string::npos);
  EXPECT_NE(r.out.find("report.html"), std::string::npos);
  auto j = nlohmann::json::parse(slurp(out + "/results.json"));
  EXPECT_EQ(j["runs"].size(), 12u);
  EXPECT_EQ(slurp(out + "/curves.csv").rfind("id,optimizer,schedule", 0), 0u);
  // Shards and merge give the same results as the single run.
  std::string s0 = temp_path("shard0"), s1 = temp_path("shard1"), merged = temp_path("merged");
  ASSERT_EQ(run_cli(std::string("sweep ") + kSmallCli + " --shard 0/2 --out " + s0).status, 0);
  ASSERT_EQ(run_cli(std::string("sweep ") + kSmallCli + " --shard 1/2 --out " + s1).status, 0);
  auto m = run_cli("merge " + s0 + " " + s1 + " --out " + merged);
  ASSERT_EQ(m.status, 0) << m.err;
  EXPECT_EQ(m.err.find("warning"), std::string::npos) << m.err;
  auto half = run_cli("merge " + s0 + " --out " + temp_path("merged_half"));
  EXPECT_EQ(half.status, 0) << half.err;
  EXPECT_NE(half.out.find("lrlab merge: 1 results file, 6 of 12 configurations\n"), std::string::npos) << half.out;
  EXPECT_NE(half.err.find("warning: 6 of the sweep's 12 configurations are missing"), std::string::npos) << half.err;
  // A shard that contradicts itself is refused by name, not merged into the report.
  auto bad = nlohmann::json::parse(slurp(shard_path(s0, 0, 2)));
  bad["grid_size"] = int64_t(1) << 62;
  const std::string bad_shard = temp_path("bad_shard.json");
  write_file_atomic(bad_shard, bad.dump());
  auto refused = run_cli("merge " + s1 + " " + bad_shard + " --out " + temp_path("merged_bad"));
  EXPECT_EQ(refused.status, 2);
  EXPECT_EQ(refused.err.rfind("error: sweep results '" + bad_shard + "': field 'grid_size' is 4611686018427387904", 0),
            0u)
      << refused.err;
  // A shard file whose runs were all removed is nothing to merge.
  auto shard = nlohmann::json::parse(slurp(shard_path(s0, 0, 2)));
  shard["runs"] = nlohmann::json::array();
  const std::string empty = temp_path("empty_shard.json");
  write_file_atomic(empty, shard.dump());
  auto none = run_cli("merge " + empty + " --out " + temp_path("merged_none"));
  EXPECT_EQ(none.status, 2);
  EXPECT_EQ(none.err, "error: the inputs hold no configuration results\n");
  // An output folder that cannot be made is reported before anything is printed.
  auto nowhere = run_cli("merge " + s0 + " --out /nonexistent/merged");
  EXPECT_EQ(nowhere.status, 2);
  EXPECT_EQ(nowhere.err.rfind("error: cannot create directory '/nonexistent/merged'", 0), 0u) << nowhere.err;
  EXPECT_EQ(nowhere.out, "");
  // Bit for bit: every configuration trains on one thread, in the whole sweep as in a shard.
  SweepResult whole = read_sweep_results(slurp(out + "/results.json"), "whole");
  SweepResult joined = read_sweep_results(slurp(merged + "/results.json"), "merged");
  expect_same_runs(whole, joined, 0);
}

// The tasks of a job array may all write to one folder: each shard keeps its own file there, which
// `merge DIR` finds, again after a merge has written the report beside them.
TEST(SweepCli, ShardsShareAFolderThatMergeJoins) {
  const std::string out = temp_path("shards_one_folder"), whole = temp_path("shards_whole");
  std::filesystem::remove_all(out);
  ASSERT_EQ(run_cli(std::string("sweep ") + kSmallCli + " --out " + whole).status, 0);
  for (int i : {0, 1}) {
    auto r = run_cli(std::string("sweep ") + kSmallCli + " --shard " + std::to_string(i) + "/2 --out " + out);
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_NE(r.out.find("shard " + std::to_string(i) + "/2: " + shard_path(out, i, 2) +
                         " (when every shard is done: lrlab merge " + out + " --out " + out + ")"),
              std::string::npos) << r.out;
  }
  EXPECT_FALSE(std::filesystem::exists(out + "/results.json")) << "a shard writes no report of its own";
  for (int pass = 0; pass < 2; ++pass) {  // the second merge finds the shards beside the first's report
    auto m = run_cli("merge " + out + " --out " + out);
    ASSERT_EQ(m.status, 0) << m.err;
    EXPECT_NE(m.out.find(pass == 0 ? "lrlab merge: 2 results files, 12 of 12 configurations"
                                   : "lrlab merge: 3 results files, 12 of 12 configurations"),
              std::string::npos) << m.out;
    expect_same_runs(read_sweep_results(slurp(whole + "/results.json"), "whole"),
                     read_sweep_results(slurp(out + "/results.json"), "merged"), 0);
  }
  // A merged results.json beside the shares it came from is the same runs, taken once; a share of
  // an earlier, other run of one configuration is refused, not taken over the report's.
  auto shard0 = nlohmann::json::parse(slurp(shard_path(out, 0, 2)));
  shard0["runs"][0]["val_loss"][0] = shard0["runs"][0]["val_loss"][0].get<double>() * 1.5;
  write_file_atomic(share_path(out, 0), shard0.dump());
  auto stale = run_cli("merge " + out + " --out " + out);
  EXPECT_EQ(stale.status, 2);
  EXPECT_NE(stale.err.find("configuration 0 finished in '" + out + "/rank-0.json' and in '" + out +
                           "/results.json' with other results"), std::string::npos) << stale.err;
  expect_same_runs(read_sweep_results(slurp(whole + "/results.json"), "whole"),
                   read_sweep_results(slurp(out + "/results.json"), "kept"), 0);
  // An interrupted mpirun's shares are found the same way.
  const std::string ranks = temp_path("shards_rank_files");
  std::filesystem::create_directories(ranks);
  write_file_atomic(share_path(ranks, 0), slurp(shard_path(out, 0, 2)));
  auto half = run_cli("merge " + ranks + " --out " + ranks);
  EXPECT_EQ(half.status, 0) << half.err;
  EXPECT_NE(half.out.find("lrlab merge: 1 results file, 6 of 12 configurations"), std::string::npos) << half.out;
  // A folder of something else says what it lacks.
  const std::string empty = temp_path("shards_none");
  std::filesystem::create_directories(empty);
  write_file_atomic(empty + "/shard-notes.json", "{}");
  auto none = run_cli("merge " + empty + " --out " + empty);
  EXPECT_EQ(none.status, 2);
  EXPECT_EQ(none.err, "error: '" + empty + "' holds no sweep results (results.json, shard-I-of-N.json or rank-N.json)\n");
  for (const std::string& d : {out, whole, ranks, empty}) std::filesystem::remove_all(d);
}

// Shards record their data by its contents: tasks that each read their own copy of the data (a job's
// scratch directory) are one sweep; a shard of other data is not.
TEST(SweepCli, ShardsOfCopiesOfTheDataAreOneSweep) {
  const std::string a = temp_path("sweep_copy_a.csv"), b = temp_path("sweep_copy_b.csv"),
                    c = temp_path("sweep_copy_c.csv"), out = temp_path("sweep_copies");
  std::filesystem::remove_all(out);
  {
    std::ofstream fa(a), fb(b), fc(c);
    Rng rng(9);
    for (int i = 0; i < 300; ++i) {
      const double x = rng.normal(), y = rng.normal();
      fa << (x > y) << "," << x << "," << y << "\n";
      fb << (x > y) << "," << x << "," << y << "\n";
      fc << (x > y) << "," << x << "," << y + (i == 5 ? 1e-3 : 0.0) << "\n";
    }
  }
  const std::string common = " --hidden 4 --epochs 1 --device cpu --quiet --lr 0.01 0.1 --out " + out;
  ASSERT_EQ(run_cli("sweep --data csv:" + a + " --shard 0/2" + common).status, 0);
  ASSERT_EQ(run_cli("sweep --data csv:" + b + " --shard 1/2" + common).status, 0);
  auto m = run_cli("merge " + out + " --out " + out);
  ASSERT_EQ(m.status, 0) << m.err;
  EXPECT_NE(m.out.find("2 results files, 2 of 2 configurations"), std::string::npos) << m.out;
  ASSERT_EQ(run_cli("sweep --data csv:" + c + " --shard 1/2" + common).status, 0);
  std::filesystem::remove(out + "/results.json");
  auto other = run_cli("merge " + out + " --out " + out);
  EXPECT_EQ(other.status, 2);
  EXPECT_NE(other.err.find("belongs to a different sweep than '" + shard_path(out, 0, 2) + "': its options differ"),
            std::string::npos) << other.err;
  for (const std::string& f : {a, b, c}) std::remove(f.c_str());
  std::filesystem::remove_all(out);
}

// The results of kSmallCli's sweep, in `whole`, as an interruption would leave them: configuration 1
// after one of its two epochs, configuration 4 not started.
nlohmann::json interrupted_small_sweep(const std::string& whole) {
  auto interrupted = nlohmann::json::parse(slurp(whole + "/results.json"));
  interrupted["interrupted"] = true;
  for (const char* curve : {"train_loss", "val_loss", "val_accuracy", "lr_per_epoch"})
    interrupted["runs"][1][curve].erase(1);
  nlohmann::json& cut = interrupted["runs"][1];
  cut["best_epoch"] = 1;
  cut["best_val_loss"] = cut["final_val_loss"] = cut["val_loss"][0];
  cut["best_val_accuracy"] = cut["final_val_accuracy"] = cut["val_accuracy"][0];
  interrupted["runs"].erase(4);
  return interrupted;
}

// `--resume` continues the sweep in --out: what it finished is kept, the rest trained, and the
// folder ends as an uninterrupted sweep leaves it.
TEST(SweepCli, ResumeFinishesAnInterruptedSweep) {
  const std::string whole = temp_path("resume_whole"), out = temp_path("resume_out");
  std::filesystem::remove_all(out);
  ASSERT_EQ(run_cli(std::string("sweep ") + kSmallCli + " --out " + whole).status, 0);
  const nlohmann::json interrupted = interrupted_small_sweep(whole);
  make_writable_dir(out);
  write_file_atomic(out + "/results.json", interrupted.dump());
  write_file_atomic(out + "/rank-9.json", "{}");  // named as a share, and none: a sweep leaves it there
  auto r = run_cli(std::string("sweep ") + kSmallCli + " --resume --out " + out);
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.err.find("warning: --resume: '" + out + "/rank-9.json' is left out: sweep results '" + out +
                       "/rank-9.json'"), std::string::npos) << r.err;
  EXPECT_EQ(slurp(out + "/rank-9.json"), "{}");
  EXPECT_NE(r.err.find("resuming '" + out + "': 10 of 12 configurations finished there; training the other 2"),
            std::string::npos) << r.err;
  const SweepResult expected = read_sweep_results(slurp(whole + "/results.json"), "whole");
  const SweepResult resumed = read_sweep_results(slurp(out + "/results.json"), "resumed");
  EXPECT_FALSE(resumed.interrupted);
  expect_same_runs(expected, resumed, 0);  // each configuration trains on one thread either way
  auto again = run_cli(std::string("sweep ") + kSmallCli + " --resume --out " + out);
  EXPECT_NE(again.err.find("resuming '" + out + "': all 12 configurations finished there"), std::string::npos)
      << again.err;
  auto other = run_cli(std::string("sweep ") + kSmallCli + " --epochs 3 --resume --out " + out);
  EXPECT_EQ(other.status, 2);
  EXPECT_NE(other.err.find("error: '" + out + "/results.json' are another sweep's than these options describe: its "
                           "options differ: epochs 2 (3 in these options)"), std::string::npos) << other.err;
  auto nowhere = run_cli(std::string("sweep ") + kSmallCli + " --resume");
  EXPECT_EQ(nowhere.err, "error: --resume continues the sweep whose results are in --out: give --out\n");
  const std::string fresh = temp_path("resume_fresh");
  std::filesystem::remove_all(fresh);
  auto empty = run_cli(std::string("sweep ") + kSmallCli + " --resume --out " + fresh);
  EXPECT_EQ(empty.status, 0) << empty.err;
  EXPECT_NE(empty.err.find("note: --resume: '" + fresh + "' holds no results of an earlier run"), std::string::npos);
  for (const std::string& d : {whole, out, fresh}) std::filesystem::remove_all(d);
}

// Under mpirun a rank that has finished keeps its whole share on disk while it waits for the others:
// mpirun may end every rank while rank 0 joins the results. Rank 1's one configuration diverges in
// its first epochs; rank 0 trains two for 100 epochs, so rank 1 waits long.
TEST(SweepCli, MpiRankSavesItsLastEpochBeforeTheRanksMeet) {
  if (!LRLAB_CLI_HAS_MPI) GTEST_SKIP() << "lrlab was built without MPI (Open MPI not found at configure time)";
  if (std::system("command -v mpirun >/dev/null 2>&1") != 0) GTEST_SKIP() << "mpirun not installed";
  const std::string out = temp_path("mpi_last_epoch");
  std::filesystem::remove_all(out);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    const int null = open("/dev/null", O_WRONLY);
    dup2(null, 1);
    dup2(null, 2);
    execlp("mpirun", "mpirun", "--allow-run-as-root", "--oversubscribe", "-np", "2", LRLAB_CLI_PATH, "sweep", "--data",
           "spirals", "--samples", "20000", "--hidden", "32,32", "--epochs", "100", "--device", "cpu", "--quiet",
           "--lr", "1e-3", "10", "2e-3", "--out", out.c_str(), (char*)nullptr);
    _exit(127);
  }
  bool whole_share = false;  // rank 1's share records the divergence that ended its one run
  for (int i = 0; i < 6000 && !whole_share; ++i) {
    usleep(10000);
    std::ifstream f(out + "/rank-1.json");
    if (!f) continue;
    const nlohmann::json share = nlohmann::json::parse(f, nullptr, false);
    whole_share = share.is_object() && share.contains("runs") && share["runs"].size() == 1 &&
                  share["runs"][0]["diverged"] == true;
    if (std::ifstream(out + "/results.json").good()) break;  // joined: the shares are gone
  }
  int status = 0;
  waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_TRUE(whole_share) << "rank 1's share on disk never held the end of its run";
  std::filesystem::remove_all(out);
}

// Under mpirun, from the share an interrupted mpirun left: the ranks read it before anything in the
// folder changes, and it is gone once results.json holds its runs.
TEST(SweepCli, MpiRanksResumeAnInterruptedSweep) {
  if (!LRLAB_CLI_HAS_MPI) GTEST_SKIP() << "lrlab was built without MPI (Open MPI not found at configure time)";
  if (std::system("command -v mpirun >/dev/null 2>&1") != 0) GTEST_SKIP() << "mpirun not installed";
  const std::string whole = temp_path("mpi_resume_whole"), ranks = temp_path("mpi_resume_ranks");
  ASSERT_EQ(run_cli(std::string("sweep ") + kSmallCli + " --out " + whole).status, 0);
  std::filesystem::remove_all(ranks);
  make_writable_dir(ranks);
  write_file_atomic(share_path(ranks, 3), interrupted_small_sweep(whole).dump());
  const std::string err = ranks + ".err";
  std::string progress = kSmallCli;
  progress.erase(progress.find("--quiet "), 8);
  const std::string cmd = "mpirun --allow-run-as-root --oversubscribe -np 2 " + std::string(LRLAB_CLI_PATH) +
                          " sweep " + progress + " --resume --out " + ranks + " >/dev/null 2>" + err;
  ASSERT_EQ(std::system(cmd.c_str()), 0) << slurp(err);
  // Rank 0's progress is its own share's: once that is done, it says why nothing more shows.
  EXPECT_NE(slurp(err).find("rank 0 has finished its share; waiting for the other rank\n"), std::string::npos)
      << slurp(err);
  std::filesystem::remove(err);
  expect_same_runs(read_sweep_results(slurp(whole + "/results.json"), "whole"),
                   read_sweep_results(slurp(ranks + "/results.json"), "mpi"), 0);
  EXPECT_FALSE(std::filesystem::exists(share_path(ranks, 3))) << "the share resumed from is in results.json now";
  for (const std::string& d : {whole, ranks}) std::filesystem::remove_all(d);
}

// Slurm job arrays: without --shard, SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT pick the shard.
TEST(SweepCli, SlurmArrayVariablesPickTheShard) {
  const std::string out = temp_path("slurm_shard");
  setenv("SLURM_ARRAY_TASK_ID", "1", 1);
  setenv("SLURM_ARRAY_TASK_COUNT", "2", 1);
  auto r = run_cli(std::string("sweep ") + kSmallCli + " --out " + out);
  unsetenv("SLURM_ARRAY_TASK_ID");
  unsetenv("SLURM_ARRAY_TASK_COUNT");
  ASSERT_EQ(r.status, 0) << r.err;
  SweepResult s = read_sweep_results(slurp(shard_path(out, 1, 2)), "slurm");
  EXPECT_EQ(s.shard_index, 1);
  EXPECT_EQ(s.shard_count, 2);
  ASSERT_EQ(s.runs.size(), 6u);
  for (const SweepRun& x : s.runs) EXPECT_EQ(x.config.id % 2, 1) << x.config.id;
}

// A job array numbered from 1, or in steps, makes the same shards as one numbered from 0: the task's
// place among the array's indices. An array whose indices are not evenly spaced is refused.
TEST(SweepCli, SlurmArraysNumberedFromOneOrInStepsCoverEveryShard) {
  const char* vars[] = {"SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN",
                        "SLURM_ARRAY_TASK_MAX", "SLURM_ARRAY_TASK_STEP"};
  struct Case {
    std::vector<const char*> values;  // as vars; nullptr: unset
    int64_t shard;                    // -1: refused with `error`
    std::string error;
  };
  const std::vector<Case> cases = {
      {{"8", "8", "1", "8", "1"}, 7, ""},         // --array=1-8
      {{"1", "8", "1", "8", "1"}, 0, ""},
      {{"14", "8", "0", "14", "2"}, 7, ""},       // --array=0-14:2
      {{"5", "3", "5", nullptr, nullptr}, 0, ""},  // no MAX, no STEP: steps of 1
      {{"6", "3", "4", "6", nullptr}, 2, ""},
      // A list, 3,6,9,12 or 0,2,3,6, gives no step: only STEP tells whether its indices are even.
      {{"9", "4", "3", "12", nullptr}, -1,
       "error: the job array's 4 indices from SLURM_ARRAY_TASK_MIN 3 to SLURM_ARRAY_TASK_MAX 12 are not 1 apart"},
      {{"2", "4", "0", "6", nullptr}, -1, "are not 1 apart"},
      // One task of an 8-task array submitted again (--array=3).
      {{"3", "1", "3", "3", "1"}, -1,
       "error: SLURM_ARRAY_TASK_COUNT is 1: a job array of one task (task 3 of a larger array submitted again?) "
       "does not tell the shard; give --shard INDEX/COUNT"},
      {{"3", "4", "1", "9", "1"}, -1, "are not 1 apart: number its tasks as a range (--array=0-3), or give each "
                                      "task its --shard INDEX/COUNT"},
      {{"4", "4", "0", "14", "2"}, -1, "error: the job array's 4 indices"},
      {{"3", "8", "0", "14", "2"}, -1,
       "error: SLURM_ARRAY_TASK_ID 3 is not an index of a job array from SLURM_ARRAY_TASK_MIN 0 in steps of 2"},
      {{"0", "8", "1", nullptr, nullptr}, -1, "is not an index of a job array from SLURM_ARRAY_TASK_MIN 1"},
      {{"9", "8", "1", nullptr, nullptr}, -1,
       "error: SLURM_ARRAY_TASK_ID 9 is out of range for SLURM_ARRAY_TASK_COUNT 8 (task 8 of an array from index 1"},
      {{"1", "8", "1", nullptr, "0"}, -1, "error: SLURM_ARRAY_TASK_STEP: malformed '0'"},
      {{"1", "8", "one", nullptr, nullptr}, -1, "error: SLURM_ARRAY_TASK_MIN: malformed 'one'"},
  };
  for (const Case& c : cases) {
    for (size_t v = 0; v < 5; ++v)
      if (c.values[v]) setenv(vars[v], c.values[v], 1);
    const std::string out = temp_path("slurm_steps");
    auto r = run_cli("sweep --data spirals --samples 300 --hidden 4 --epochs 1 --device cpu --quiet "
                     "--lr 0.01:0.1:8 --out " + out);
    for (const char* var : vars) unsetenv(var);
    const std::string label = std::string(c.values[0]) + " of " + c.values[1];
    if (c.shard < 0) {
      EXPECT_EQ(r.status, 2) << label;
      EXPECT_NE(r.err.find(c.error), std::string::npos) << label << ": " << r.err;
      continue;
    }
    ASSERT_EQ(r.status, 0) << label << ": " << r.err;
    const SweepResult s = read_sweep_results(slurp(shard_path(out, c.shard, std::stoll(c.values[1]))), "slurm");
    EXPECT_EQ(s.shard_index, c.shard) << label;
    EXPECT_EQ(s.shard_count, std::stoll(c.values[1])) << label;
    std::filesystem::remove_all(out);
  }
}

// Malformed Slurm variables are named: the user set them, not --shard.
TEST(SweepCli, MalformedSlurmVariablesAreNamed) {
  struct Case {
    const char *id, *count, *error;
  };
  for (const Case& c : {Case{"x", "2", "error: SLURM_ARRAY_TASK_ID: malformed 'x'"},
                        Case{"1", "two", "error: SLURM_ARRAY_TASK_COUNT: malformed 'two'"},
                        Case{"2", "2", "error: SLURM_ARRAY_TASK_ID 2 is out of range for SLURM_ARRAY_TASK_COUNT 2"},
                        Case{"18446744073709551617", "2",
                             "error: SLURM_ARRAY_TASK_ID: 18446744073709551617 is out of range"}}) {
    setenv("SLURM_ARRAY_TASK_ID", c.id, 1);
    setenv("SLURM_ARRAY_TASK_COUNT", c.count, 1);
    auto r = run_cli("sweep --data spirals --device cpu --lr 0.1 0.2 0.3");
    unsetenv("SLURM_ARRAY_TASK_ID");
    unsetenv("SLURM_ARRAY_TASK_COUNT");
    EXPECT_EQ(r.status, 2) << c.id << "/" << c.count;
    EXPECT_EQ(r.err.rfind(c.error, 0), 0u) << r.err;
    EXPECT_EQ(r.err.find("--shard"), std::string::npos) << r.err;
  }
}

// --no-bias-decay, as train has it: a sweep's configuration trains as `lrlab train --no-bias-decay`
// trains it, and results.json keeps the option, so that merge joins only shards that agree on it.
TEST(SweepCli, NoBiasDecayReproducesTrain) {
  const std::string common = "--data spirals --samples 600 --hidden 8 --epochs 2 --batch 50 --device cpu --quiet "
                             "--optimizer 'adamw(wd=0.5)'";
  const std::string trained = temp_path("no_bias_decay_train.json");
  auto t = run_cli("train " + common + " --lr 0.01 --no-bias-decay --json " + trained);
  ASSERT_EQ(t.status, 0) << t.err;
  std::string with = temp_path("bias_decay"), without = temp_path("no_bias_decay");
  ASSERT_EQ(run_cli("sweep " + common + " --lr 0.01 0.03 --out " + with).status, 0);
  auto r = run_cli("sweep " + common + " --lr 0.01 0.03 --no-bias-decay --out " + without);
  ASSERT_EQ(r.status, 0) << r.err;
  const auto train_json = nlohmann::json::parse(slurp(trained));
  const SweepResult a = read_sweep_results(slurp(with + "/results.json"), "with");
  const SweepResult b = read_sweep_results(slurp(without + "/results.json"), "without");
  EXPECT_TRUE(nlohmann::json::parse(a.options_json)["bias_decay"].get<bool>());
  EXPECT_FALSE(nlohmann::json::parse(b.options_json)["bias_decay"].get<bool>());
  ASSERT_EQ(b.runs[0].val_loss.size(), 2u);
  for (size_t e = 0; e < 2; ++e) {
    const double want = train_json["epochs"][e]["val_loss"].get<double>();
    EXPECT_NEAR(b.runs[0].val_loss[e], want, 1e-6 * want) << "epoch " << e + 1;
    EXPECT_NE(a.runs[0].val_loss[e], want) << "epoch " << e + 1;  // the biases decayed
  }
  // Shards of the two sweeps are of different sweeps.
  std::string s0 = temp_path("no_bias_decay_shard0"), s1 = temp_path("bias_decay_shard1");
  ASSERT_EQ(run_cli("sweep " + common + " --lr 0.01 0.03 --no-bias-decay --shard 0/2 --out " + s0).status, 0);
  ASSERT_EQ(run_cli("sweep " + common + " --lr 0.01 0.03 --shard 1/2 --out " + s1).status, 0);
  auto m = run_cli("merge " + s0 + " " + s1 + " --out " + temp_path("bias_decay_merged"));
  EXPECT_EQ(m.status, 2);
  EXPECT_NE(m.err.find("belongs to a different sweep"), std::string::npos) << m.err;
}

// The rank shares an MPI run keeps in --out are its own business: a run without mpirun leaves every
// rank-*.json there alone, a share of an interrupted mpirun (for `lrlab merge OUT/rank-*.json`) and a
// user's file alike.
TEST(SweepCli, OneProcessLeavesRankFilesAlone) {
  const std::string out = temp_path("rank_files");
  ASSERT_EQ(run_cli(std::string("sweep ") + kSmallCli + " --shard 1/2 --out " + out).status, 0);
  const std::string share = slurp(shard_path(out, 1, 2));
  write_file_atomic(out + "/rank-1.json", share);
  write_file_atomic(out + "/rank-notes.json", "{\"mine\": true}");
  auto r = run_cli(std::string("sweep ") + kSmallCli + " --shard 0/2 --out " + out);
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(slurp(out + "/rank-1.json"), share);
  EXPECT_EQ(slurp(out + "/rank-notes.json"), "{\"mine\": true}");
}

// What an MPI sweep clears from its folder before training: the shares an earlier sweep left, and
// nothing else.
TEST(SweepResults, RemoveStaleSharesTakesOnlySweepShares) {
  const SweepOptions o = one_config_sweep(1, "constant");
  const std::string out = temp_path("stale_shares");
  write_sweep_outputs(run_sweep(o), out);
  const std::string results = slurp(out + "/results.json");
  EXPECT_EQ(share_path(out, 7), out + "/rank-7.json");
  write_file_atomic(share_path(out, 7), results);
  write_file_atomic(share_path(out, 12), results);
  write_file_atomic(share_path(out, 8), "{}");
  for (const std::string& name : {"rank-notes.json", "rank-.json", "rank-7.json.bak"})
    write_file_atomic(out + "/" + name, results);
  remove_stale_shares(out);
  auto present = [&](const std::string& path) { return std::ifstream(path).good(); };
  EXPECT_FALSE(present(share_path(out, 7)));
  EXPECT_FALSE(present(share_path(out, 12)));
  EXPECT_TRUE(present(share_path(out, 8))) << "not sweep results";
  for (const std::string& name : {"rank-notes.json", "rank-.json", "rank-7.json.bak", "results.json"})
    EXPECT_TRUE(present(out + "/" + name)) << name;
  EXPECT_NO_THROW(remove_stale_shares(out + "/missing"));
}

TEST(SweepCli, BadInputGivesErrorAndStatus2) {
  std::string foreign = temp_path("foreign.json");
  write_file_atomic(foreign, "{\"format\": \"something else\"}");
  std::string empty_list = temp_path("empty_list.toml");
  write_file_atomic(empty_list, "lr = []\nepochs = 1\ndata = \"spirals\"\n");
  struct Case {
    std::string args, fragment;
  };
  for (const Case& c : std::vector<Case>{
           {"sweep --data spirals --device cpu --lr 1e-4:1e-1", "malformed range"},
           {"sweep --data spirals --device cpu --lr 0.1 --shard 3/2", "out of range"},
           {"sweep --data spirals --device cpu --lr 0.1 --shard 0/5", "more shards"},
           {"sweep --data spirals --device cpu --lr 0.1 --shard x", "--shard"},
           {"sweep --data spirals --device cpu --lr 0.1 --shard ''", "--shard: malformed ''"},
           {"sweep --data spirals --device cpu --lr 0.1 --shard 1/18446744073709551617",
            "--shard: 18446744073709551617 is out of range"},
           {"sweep --data spirals --device cpu --lr 0.1 --shard -1/2", "--shard: malformed '-1/2'"},
           {"sweep --data spirals --device cpu --lr 0.1 0.2 --workers -1", "--workers must be 0 (automatic) or more"},
           {"sweep --data spirals --device cpu --lr 1e-3 0.001", "--lr: '0.001' is listed twice"},
           {"sweep --data spirals --device cpu --lr 0.1 --optimizer 'adam()' 'adam()'",
            "--optimizer: 'adam()' is listed twice"},
           {"sweep --data spirals --device cpu --lr 0.1 --schedule constant 'constant()'",
            "--schedule: 'constant()' is the same as 'constant'"},
           {"sweep --data spirals --device cpu --lr 0.1 --optimizer 'adamx()'", "unknown optimizer"},
           {"sweep --data spirals --device cpu --lr 0.1 --halving 1", "halving"},
           {"sweep --data spirals --device cpu --lr 0.1 --halving inf", "halving must be a finite number"},
           {"sweep --data spirals --device cpu --optimizer --lr 1e-2", "--optimizer needs a value (found the option --lr)"},
           {"sweep --device cpu --config " + empty_list, "'lr' has no value"},
           {"sweep --data spirals --device cpu --lr 0.1 --val-fraction 0", "validation split"},
           {"sweep --data spirals --device cpu --lr 0.1 --out /nonexistent/sweep", "cannot create directory '/nonexistent/sweep'"},
           {"merge " + foreign + " --out " + temp_path("m"), "not an lrlab sweep results file"},
           {"merge /nonexistent/dir --out " + temp_path("m"), "nonexistent"},
       }) {
    auto r = run_cli(c.args);
    EXPECT_EQ(r.status, 2) << c.args << "\n" << r.err;
    EXPECT_EQ(r.err.rfind("error: ", 0), 0u) << c.args << "\n" << r.err;
    EXPECT_NE(r.err.find(c.fragment), std::string::npos) << c.args << "\n" << r.err;
  }
}

TEST(SweepCli, TwoMpiRanksEqualOneProcess) {
  if (!LRLAB_CLI_HAS_MPI) GTEST_SKIP() << "lrlab was built without MPI (Open MPI not found at configure time)";
  if (std::system("command -v mpirun >/dev/null 2>&1") != 0) GTEST_SKIP() << "mpirun not installed";
  std::string one = temp_path("mpi_one"), two = temp_path("mpi_two");
  ASSERT_EQ(run_cli(std::string("sweep ") + kSmallCli + " --out " + one).status, 0);
  // A share an earlier sweep with more ranks left in the folder would be merged with this one's;
  // files that are not shares stay.
  make_writable_dir(two);
  write_file_atomic(two + "/rank-7.json", slurp(one + "/results.json"));
  write_file_atomic(two + "/rank-8.json", "{}");
  write_file_atomic(two + "/rank-notes.json", slurp(one + "/results.json"));
  std::string cmd = "mpirun --allow-run-as-root --oversubscribe -np 2 " + std::string(LRLAB_CLI_PATH) + " sweep " +
                    kSmallCli + " --out " + two + " >/dev/null 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  // Bit for bit: each configuration trains on one thread in either run (the model is too small to
  // split), and its numbers depend on nothing else.
  expect_same_runs(read_sweep_results(slurp(one + "/results.json"), "one"),
                   read_sweep_results(slurp(two + "/results.json"), "two"), 0);
  EXPECT_FALSE(std::ifstream(two + "/rank-0.json").good()) << "the ranks' shares are removed once joined";
  EXPECT_FALSE(std::ifstream(two + "/rank-1.json").good());
  EXPECT_FALSE(std::ifstream(two + "/rank-7.json").good());
  EXPECT_EQ(slurp(two + "/rank-8.json"), "{}");
  EXPECT_EQ(slurp(two + "/rank-notes.json"), slurp(one + "/results.json"));
  std::string three = temp_path("mpi_many");
  // Every rank reaches the same verdict on its options, data, device and output folder before
  // training; it is said once, by rank 0, and every rank ends with status 2.
  for (const std::string& args :
       {std::string("--data spirals --lr 0.1"), std::string("--data spirals --lr 0.1 0.2 0.3 --out /nonexistent/sweep"),
        std::string("--data spirals --lr 0.1 0.2 0.3 --batch 0"),
        std::string("--data spirals --lr 0.1 0.2 0.3 --epochs x"),
        std::string("--data csv:/nonexistent.csv --lr 0.1 0.2 0.3")}) {
    cmd = "mpirun --allow-run-as-root --oversubscribe -np 3 " + std::string(LRLAB_CLI_PATH) +
          " sweep --device cpu --quiet " + args + " >/dev/null 2>" + three + ".err";
    EXPECT_NE(std::system(cmd.c_str()), 0) << args;
    const std::string err = slurp(three + ".err");
    EXPECT_NE(err.find("error: "), std::string::npos) << args << "\n" << err;
    EXPECT_EQ(err.find("error: "), err.rfind("error: ")) << args << "\n" << err;
    EXPECT_EQ(err.find("MPI_ABORT"), std::string::npos) << args << "\n" << err;
  }
  EXPECT_NE(slurp(three + ".err").find("nonexistent.csv"), std::string::npos);
}

// A rank that refuses its command line while rank 0 accepts its own (a config file one node cannot
// read) waits for rank 0 to speak, then, still alive, says why itself.
TEST(SweepCli, ARankRefusedAloneSaysWhy) {
  if (!LRLAB_CLI_HAS_MPI) GTEST_SKIP() << "lrlab was built without MPI (Open MPI not found at configure time)";
  if (std::system("command -v mpirun >/dev/null 2>&1") != 0) GTEST_SKIP() << "mpirun not installed";
  const std::string err = temp_path("mpi_alone") + ".err";
  const std::string lrlab = LRLAB_CLI_PATH;
  const std::string cmd = "mpirun --allow-run-as-root --oversubscribe -np 1 " + lrlab +
                          " sweep --device cpu --quiet --data spirals --lr 0.1 0.2 : -np 1 " + lrlab +
                          " sweep --device cpu --quiet --data spirals --lr 0.1 0.2 --epochs x >/dev/null 2>" + err;
  EXPECT_NE(std::system(cmd.c_str()), 0);
  EXPECT_NE(slurp(err).find("error: rank 1: "), std::string::npos) << slurp(err);
}

TEST(SweepCli, InterruptWritesFinishedResults) {
  // Ctrl-C, and SIGTERM, as a batch system's time limit sends it: the shell's status for each.
  for (int sig : {SIGINT, SIGTERM}) {
    SCOPED_TRACE(sig == SIGINT ? "SIGINT" : "SIGTERM");
    std::string out = temp_path(sig == SIGINT ? "interrupted" : "terminated");
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      std::string o = out;
      execl(LRLAB_CLI_PATH, LRLAB_CLI_PATH, "sweep", "--data", "spirals", "--samples", "20000", "--hidden", "64,64",
            "--epochs", "1000", "--device", "cpu", "--quiet", "--lr", "0.01", "--out", o.c_str(), (char*)nullptr);
      _exit(127);
    }
    // Wait until the first epoch is done (the progress is not printed with --quiet, so poll time).
    sleep(3);
    kill(pid, sig);
    int status = 0;
    waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 128 + sig);
    auto j = nlohmann::json::parse(slurp(out + "/results.json"));
    EXPECT_TRUE(j["interrupted"].get<bool>());
    EXPECT_GE(j["runs"][0]["val_loss"].size(), 1u);
    EXPECT_LT(j["runs"][0]["val_loss"].size(), 1000u);
  }
}

// mpirun answers Ctrl-C by ending every rank within a second, perhaps before rank 0 could join their
// results; each rank's share of what finished is on disk, and merge joins them.
TEST(SweepCli, InterruptedMpiRanksLeaveTheirShares) {
  if (!LRLAB_CLI_HAS_MPI) GTEST_SKIP() << "lrlab was built without MPI (Open MPI not found at configure time)";
  if (std::system("command -v mpirun >/dev/null 2>&1") != 0) GTEST_SKIP() << "mpirun not installed";
  const std::string out = temp_path("mpi_interrupted");
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    setsid();  // its own process group, as a terminal's Ctrl-C reaches a foreground job
    const int null = open("/dev/null", O_WRONLY);
    dup2(null, 1);
    dup2(null, 2);
    execlp("mpirun", "mpirun", "--allow-run-as-root", "--oversubscribe", "-np", "2", LRLAB_CLI_PATH, "sweep", "--data",
           "spirals", "--samples", "20000", "--hidden", "64,64", "--epochs", "1000", "--device", "cpu", "--quiet",
           "--lr", "0.01", "0.001", "--out", out.c_str(), (char*)nullptr);
    _exit(127);
  }
  bool both = false;
  for (int i = 0; i < 600 && !both; ++i) {
    usleep(100000);
    both = std::ifstream(out + "/rank-0.json").good() && std::ifstream(out + "/rank-1.json").good();
  }
  kill(-pid, SIGINT);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(both) << "the ranks wrote no shares within 60 s";
  const std::string merged = temp_path("mpi_interrupted_merged");
  // The ranks may still have joined their results before mpirun ended them: then the folder holds
  // results.json and no shares. merge reads whichever is there.
  auto m = run_cli("merge " + out + " --out " + merged);
  ASSERT_EQ(m.status, 0) << m.err;
  SweepResult r = read_sweep_results(slurp(merged + "/results.json"), "merged");
  EXPECT_TRUE(r.interrupted);
  ASSERT_EQ(r.runs.size(), 2u);
  for (const SweepRun& run : r.runs) {
    EXPECT_GE(run.val_loss.size(), 1u);
    EXPECT_LT(run.val_loss.size(), 1000u);
  }
}

// The reader's and merge's edge rules, each test written against a mutation of the rule that no
// other test caught (RELIABILITY.md, tenth session).
std::string two_rate_results() {
  SweepOptions o = small_sweep();
  o.base.epochs = 2;
  o.lrs = {1e-2, 1e-1};
  o.schedules = {"constant"};
  return sweep_results_json(run_sweep(o));
}

TEST(SweepReaderEdges, IdsShardsAndStridesAtTheirLimits) {
  using nlohmann::json;
  const std::string good = two_rate_results();
  for (const auto& [change, error] : std::vector<std::pair<std::function<void(json&)>, std::string>>{
           {[](json& j) { j["runs"][0]["id"] = j["grid_size"]; }, "run id 4 is out of range or repeated"},
           {[](json& j) { j["runs"][1] = j["runs"][0]; }, "run id 0 is out of range or repeated"},
           {[](json& j) { j["shard"] = {{"index", 1}, {"count", 1}}; }, "field 'shard' is out of range (1/1"},
           {[](json& j) {
              j["runs"][1]["diverged"] = true;
              j["runs"][1]["diverged_epoch"] = 0;
            },
            "run 1: field 'diverged_epoch' is 0"},
           {[](json& j) { j["runs"][1]["lr_curve_stride"] = 0; }, "run 1: field 'lr_curve_stride' is 0, not positive"}}) {
    json j = json::parse(good);
    change(j);
    EXPECT_TRUE(throws_error_containing([&] { read_sweep_results(j.dump(), "f"); }, error)) << error;
  }
  // The device a file says is its runs': a header that disagrees is corrected.
  json j = json::parse(good);
  const std::string runs_device = j["runs"][0]["device"];
  j["device"] = runs_device == "cpu" ? "cuda" : "cpu";
  EXPECT_EQ(read_sweep_results(j.dump(), "f").device, runs_device);
}

// A rate that reaches 0 (cosine to its end) is a rate: the sweep's own file reads back.
TEST(SweepReaderEdges, ARateOfZeroReadsBack) {
  const SweepResult r = run_sweep(one_config_sweep(2, "cosine(steps=1ep)"));
  ASSERT_EQ(r.runs[0].lr.back(), 0.0);
  EXPECT_NO_THROW(read_sweep_results(sweep_results_json(r), "zero"));
}

// A sweep stopped before any epoch trained keeps its device through a write, a read and a merge.
TEST(SweepReaderEdges, AResultWithNoTrainedRunKeepsItsDevice) {
  SweepOptions o = small_sweep();
  volatile int stop = 1;
  const SweepResult r = run_sweep(o, {}, &stop);
  ASSERT_TRUE(r.interrupted);
  const SweepResult back = read_sweep_results(sweep_results_json(r), "none");
  EXPECT_EQ(back.device, o.base.device);
  EXPECT_EQ(merge_sweeps({back}).device, o.base.device);
}

TEST(SweepReaderEdges, FolderInputsAreNamedAsSweepsNameThem) {
  const std::string d = temp_path("input_names");
  std::filesystem::remove_all(d);
  std::filesystem::create_directories(d);
  for (const char* n : {"shard-x-of-2.json", "shard--of-2.json", "shard-1-of-2.json"}) write_file_atomic(d + "/" + n, "{}");
  EXPECT_EQ(merge_inputs_in(d), std::vector<std::string>{d + "/shard-1-of-2.json"});
  // A job array's shard files are no mpirun's stale shares.
  write_sweep_outputs(run_sweep(one_config_sweep(1, "constant")), d);
  write_file_atomic(shard_path(d, 0, 1), slurp(d + "/results.json"));
  remove_stale_shares(d);
  EXPECT_TRUE(std::ifstream(shard_path(d, 0, 1)).good());
  std::filesystem::remove_all(d);
}

SweepRun curve_run(int64_t id, std::vector<double> losses, double accuracy = 0.5) {
  SweepRun x = hand_run(id, 0, 1.0, accuracy);
  x.train_loss = x.val_loss = losses;
  x.val_accuracy.assign(losses.size(), accuracy);
  x.lr.assign(losses.size(), 1e-2);
  x.device = "cpu";
  summarize_sweep_run(x);
  return x;
}

SweepResult merge_input(std::vector<SweepRun> runs, int64_t epochs, const std::string& source) {
  SweepResult r = hand_result(std::move(runs), 1);
  r.epochs = epochs;
  r.grid_size = 4;
  r.mode = "streams";
  r.source = source;
  return r;
}

TEST(SweepMergeRules, RecordsOfOneConfigurationFromSeveralInputs) {
  // Finished records that differ only in accuracy are two results.
  EXPECT_TRUE(throws_error_containing(
      [] { merge_sweeps({merge_input({curve_run(0, {1.0})}, 1, "a"), merge_input({curve_run(0, {1.0}, 0.6)}, 1, "b")}); },
      " with other results"));
  // Of two unfinished records, the longer is kept, whichever comes first.
  const SweepResult one = merge_input({curve_run(0, {1.0})}, 3, "a.json"),
                    two = merge_input({curve_run(0, {1.0, 0.9})}, 3, "b.json");
  EXPECT_EQ(merge_sweeps({one, two}).runs[0].val_loss.size(), 2u);
  EXPECT_EQ(merge_sweeps({two, one}).runs[0].val_loss.size(), 2u);
  // A conflict names the two finished records, not the unfinished one they replaced.
  const SweepResult a = merge_input({curve_run(0, {1.0})}, 2, "a.json"),
                    b = merge_input({curve_run(0, {1.0, 0.9})}, 2, "b.json"),
                    c = merge_input({curve_run(0, {1.0, 0.8})}, 2, "c.json");
  EXPECT_TRUE(throws_error_containing([&] { merge_sweeps({a, b, c}); },
                                      "configuration 0 finished in 'b.json' and in 'c.json'"));
  // Inputs ran side by side: the longest is the sweep's time. Finished runs make a finished merge,
  // whatever an input that held an earlier record says.
  SweepResult slow = merge_input({curve_run(1, {1.0, 0.9})}, 2, "d.json");
  SweepResult cut = a;
  cut.seconds = 10;
  cut.interrupted = true;
  slow.seconds = 20;
  const SweepResult joined = merge_sweeps({cut, b, slow});
  EXPECT_EQ(joined.seconds, 20);
  EXPECT_FALSE(joined.interrupted);
  // Of equal losses the first epoch is the best.
  EXPECT_EQ(curve_run(0, {0.5, 0.5}).best_epoch, 1);
}

// A resumed sweep's time includes the earlier run's, in its results and in each partial write.
TEST(SweepMergeRules, AResumeCountsTheEarlierRunsTime) {
  const SweepOptions o = small_sweep();
  SweepResult earlier = run_sweep(o);
  earlier.seconds = 1000;
  for (auto* c : {&earlier.runs[1].train_loss, &earlier.runs[1].val_loss, &earlier.runs[1].val_accuracy,
                  &earlier.runs[1].lr})
    c->resize(1);
  summarize_sweep_run(earlier.runs[1]);
  double partial_seconds = -1;
  SweepObserver obs;
  obs.on_partial = [&](const SweepResult& p) { partial_seconds = p.seconds; };
  const SweepResult r = run_sweep(o, obs, nullptr, {earlier});
  EXPECT_GE(r.seconds, 1000);
  EXPECT_GE(partial_seconds, 1000);
}

TEST(SweepCli, ResumeRefusesADamagedResultsFileAndKeepsIt) {
  const std::string d = temp_path("damaged");
  std::filesystem::remove_all(d);
  std::filesystem::create_directories(d);
  write_file_atomic(d + "/results.json", "{}");
  auto r = run_cli(std::string("sweep ") + kSmallCli + " --resume --out " + d);
  EXPECT_EQ(r.status, 2) << r.err;
  EXPECT_NE(r.err.find("not an lrlab sweep results file"), std::string::npos) << r.err;
  EXPECT_EQ(slurp(d + "/results.json"), "{}");
  std::filesystem::remove_all(d);
}

TEST(SweepCli, AShardsResumeAndAMergeCountTheirOwnConfigurations) {
  const std::string d = temp_path("shard_resume"), m = temp_path("one_missing");
  std::filesystem::remove_all(d);
  ASSERT_EQ(run_cli(std::string("sweep ") + kSmallCli + " --shard 1/5 --out " + d).status, 0);
  auto r = run_cli(std::string("sweep ") + kSmallCli + " --shard 1/5 --resume --out " + d);
  EXPECT_NE(r.err.find("all 3 configurations finished there"), std::string::npos) << r.err;
  std::filesystem::remove_all(d);
  ASSERT_EQ(run_cli(std::string("sweep ") + kSmallCli + " --out " + d).status, 0);
  auto j = nlohmann::json::parse(slurp(d + "/results.json"));
  j["runs"].erase(4);
  write_file_atomic(d + "/results.json", j.dump());
  r = run_cli("merge " + d + " --out " + m);
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.err.find("warning: 1 of the sweep's 12 configurations is missing"), std::string::npos) << r.err;
  for (const std::string& f : {d, m}) std::filesystem::remove_all(f);
}

TEST(SweepCli, ShardTextAndSlurmCountAreCheckedWithTheirOwnMessages) {
  auto r = run_cli("sweep --data spirals --device cpu --lr 0.1 0.2 --shard /2");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("--shard: malformed '/2'"), std::string::npos) << r.err;
  r = run_cli("sweep --data spirals --device cpu --lr 0.1 0.2 --shard 2/2");
  EXPECT_NE(r.err.find("--shard: index 2 is out of range for 2 shards (0 to 1)"), std::string::npos) << r.err;
  setenv("SLURM_ARRAY_TASK_ID", "0", 1);
  setenv("SLURM_ARRAY_TASK_COUNT", "0", 1);
  r = run_cli("sweep --data spirals --device cpu --lr 0.1 0.2 0.3");
  unsetenv("SLURM_ARRAY_TASK_ID");
  unsetenv("SLURM_ARRAY_TASK_COUNT");
  EXPECT_EQ(r.err.rfind("error: SLURM_ARRAY_TASK_COUNT: malformed '0'", 0), 0u) << r.err;
}

// The data's fingerprint holds its shape: all-zero files of other widths are other data. A file
// edited in place is other data too, at the same path.
TEST(SweepCli, TheDataIsToldByItsShapeAndByItsValues) {
  const std::string a = temp_path("z3.csv"), b = temp_path("z2.csv"), c = temp_path("inplace.csv"),
                    ck = temp_path("inplace.ckpt");
  {
    std::ofstream fa(a), fb(b);
    for (int i = 0; i < 100; ++i) fa << "0,0,0\n";
    for (int i = 0; i < 150; ++i) fb << "0,0\n";
  }
  DataOptions d;
  EXPECT_NE(load_data("csv:" + a, d).fingerprint, load_data("csv:" + b, d).fingerprint);
  auto write = [&](double v) {
    std::ofstream f(c);
    for (int i = 0; i < 300; ++i) f << (i % 2) << "," << i * 0.01 << "," << (i == 17 ? v : 0.5) << "\n";
  };
  write(0.5);
  const std::string common = " --hidden 4 --device cpu --quiet --save " + ck;
  ASSERT_EQ(run_cli("train --data csv:" + c + " --epochs 1" + common).status, 0);
  write(0.7);
  auto r = run_cli("train --data csv:" + c + " --epochs 2 --resume " + ck + common);
  EXPECT_EQ(r.status, 2) << r.err;
  EXPECT_NE(r.err.find("was trained on other data"), std::string::npos) << r.err;
}

// Config lines CLI11 reads otherwise: a ';' after a tab, a blank section header.
TEST(SweepCli, ConfigLinesReadAsWritten) {
  const std::string cfg = temp_path("lines.toml");
  write_file_atomic(cfg, "log = out.csv\t; per-step losses\n");
  auto r = run_cli("train --config " + cfg + " --device cpu --data blobs --samples 200");
  EXPECT_NE(r.err.find("a ';' after the value of 'log'"), std::string::npos) << r.err;
  write_file_atomic(cfg, "[]\nepochs = 1\n");  // under 3 characters: CLI11 skips the line
  r = run_cli("train --config " + cfg + " --device cpu --data blobs --samples 200 --quiet");
  EXPECT_EQ(r.status, 0) << r.err;
  write_file_atomic(cfg, "[ ]\nepochs = 1\n");
  r = run_cli("train --config " + cfg + " --device cpu --data blobs --samples 200 --quiet");
  EXPECT_NE(r.err.find("is not a section header"), std::string::npos) << r.err;
}

// merge says where it joins two devices' runs, and the table marks each run's.
TEST(SweepCli, MergeWarnsWhereShardsRanOnTwoDevices) {
  const std::string d = temp_path("two_devices"), m = temp_path("two_devices_merged");
  std::filesystem::remove_all(d);
  for (const char* shard : {"0/2", "1/2"})
    ASSERT_EQ(run_cli(std::string("sweep ") + kSmallCli + " --shard " + shard + " --out " + d).status, 0);
  auto j = nlohmann::json::parse(slurp(shard_path(d, 1, 2)));
  j["device"] = "cuda";
  for (auto& run : j["runs"]) run["device"] = "cuda";
  write_file_atomic(shard_path(d, 1, 2), j.dump());
  auto r = run_cli("merge " + d + " --out " + m);
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.err.find("warning: these results join runs of more than one device (6 runs on cpu, 6 on cuda)"),
            std::string::npos) << r.err;
  EXPECT_NE(r.out.find("ok (cuda)"), std::string::npos) << r.out;
  EXPECT_EQ(read_sweep_results(slurp(m + "/results.json"), "merged").device, "cpu+cuda");
  for (const std::string& f : {d, m}) std::filesystem::remove_all(f);
}

// Under mpirun: a resume with other options is refused before the shares it would read are
// touched; rank 0 counts every rank's finished configurations, and names the ranks it waits for.
TEST(SweepCli, MpiResumeRefusedKeepsTheSharesAndCountsAllRanks) {
  if (!LRLAB_CLI_HAS_MPI) GTEST_SKIP() << "lrlab was built without MPI (Open MPI not found at configure time)";
  if (std::system("command -v mpirun >/dev/null 2>&1") != 0) GTEST_SKIP() << "mpirun not installed";
  const std::string whole = temp_path("mpi_keep_whole"), ranks = temp_path("mpi_keep_ranks"), err = ranks + ".err";
  ASSERT_EQ(run_cli(std::string("sweep ") + kSmallCli + " --out " + whole).status, 0);
  std::filesystem::remove_all(ranks);
  make_writable_dir(ranks);
  write_file_atomic(share_path(ranks, 3), interrupted_small_sweep(whole).dump());
  std::string progress = kSmallCli;
  progress.erase(progress.find("--quiet "), 8);
  const std::string mpirun = "mpirun --allow-run-as-root --oversubscribe -np ";
  const std::string cli = " " + std::string(LRLAB_CLI_PATH) + " sweep " + progress;
  EXPECT_NE(std::system((mpirun + "2" + cli + " --epochs 3 --resume --out " + ranks + " >/dev/null 2>" + err).c_str()), 0);
  EXPECT_TRUE(std::ifstream(share_path(ranks, 3)).good()) << slurp(err);
  ASSERT_EQ(std::system((mpirun + "3" + cli + " --resume --out " + ranks + " >/dev/null 2>" + err).c_str()), 0)
      << slurp(err);
  EXPECT_NE(slurp(err).find("10 of 12 configurations finished there; training the other 2"), std::string::npos)
      << slurp(err);
  EXPECT_NE(slurp(err).find("waiting for the other 2 ranks"), std::string::npos) << slurp(err);
  for (const std::string& d : {whole, ranks, err}) std::filesystem::remove_all(d);
}

}  // namespace
