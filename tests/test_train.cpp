#include <gtest/gtest.h>
#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <tuple>

#include <nlohmann/json.hpp>

#include "cli_util.hpp"
#include "test_util.hpp"
#include "lrlab/checkpoint.hpp"
#include "lrlab/data.hpp"
#include "lrlab/device.hpp"
#include "lrlab/error.hpp"
#include "lrlab/io.hpp"
#include "lrlab/rng.hpp"
#include "lrlab/serialize.hpp"
#include "lrlab/train.hpp"
#include "lrlab/train_engine.hpp"

using namespace lrlab;
using lrlab::testing::run_cli;
using lrlab::testing::slurp;
using lrlab::testing::temp_path;
using lrlab::testing::throws_error_containing;

namespace {

TrainOptions small_run() {
  TrainOptions o = lrlab::testing::small_spirals(1500, {24, 24});
  o.lr = 1e-2;
  o.epochs = 4;
  o.seed = 3;
  return o;
}

TEST(Train, LearnsSpirals) {
  TrainOptions o = small_run();
  o.epochs = 8;
  TrainReport r = train(o);
  ASSERT_EQ(r.epochs.size(), 8u);
  EXPECT_LT(r.epochs.back().train_loss, r.epochs.front().train_loss);
  EXPECT_GT(r.test_accuracy, 0.9);
  EXPECT_EQ(r.steps, 8 * ((1500 - 300 - 120 + 49) / 50));
  EXPECT_TRUE(r.events.empty());
}

// Trains `straight` in one run, and again as 2 epochs, saved, then resumed to the end: the same
// weights, optimizer state, log and test loss. The straight run's report goes to `report`.
void expect_resume_bit_identical(TrainOptions straight, TrainReport* report) {
  const std::string ck = temp_path("resume.ckpt");
  straight.save = temp_path("straight.ckpt");
  straight.log_csv = temp_path("straight_log.csv");
  TrainReport a = train(straight);

  TrainOptions first = straight;
  first.epochs = 2;
  first.save = ck;
  first.log_csv = temp_path("resumed_log.csv");
  train(first);
  TrainOptions second = first;
  second.epochs = straight.epochs;
  second.resume = ck;
  second.lr_given = false;
  TrainReport b = train(second);
  EXPECT_TRUE(b.notes.empty()) << b.notes.front();
  // The resumed run's log continues the first part's: together, the straight run's log.
  EXPECT_EQ(slurp(second.log_csv), slurp(straight.log_csv));
  std::remove(second.log_csv.c_str());
  std::remove(straight.log_csv.c_str());
  EXPECT_EQ(b.start_epoch, 2);
  Checkpoint ca = load_checkpoint(straight.save), cb = load_checkpoint(ck);
  EXPECT_EQ(ca.step, cb.step);
  ASSERT_EQ(ca.params.size(), cb.params.size());
  EXPECT_EQ(0, std::memcmp(ca.params.data(), cb.params.data(), ca.params.size() * sizeof(float)));
  EXPECT_EQ(ca.optimizer, cb.optimizer);
  EXPECT_GT(ca.guard.start, 0.0) << "the guard's floor is the run's first loss";
  EXPECT_EQ(ca.guard.start, cb.guard.start) << "and survives a resume";
  EXPECT_EQ(a.test_loss, b.test_loss);
  // The resumed run reports the straight run's events after epoch 2, and no others.
  std::vector<std::string> later;
  for (const TrainEvent& e : a.events)
    if (e.epoch > 2) later.push_back(e.kind + " " + std::to_string(e.step) + " " + e.message);
  std::vector<std::string> resumed;
  for (const TrainEvent& e : b.events) resumed.push_back(e.kind + " " + std::to_string(e.step) + " " + e.message);
  EXPECT_EQ(resumed, later);
  std::remove(ck.c_str());
  std::remove(straight.save.c_str());
  *report = a;
}

TEST(Train, ResumeIsBitIdenticalToAStraightRun) {
  TrainOptions o = small_run();
  o.schedule = "step(every=1ep,gamma=0.7)";
  o.plateau = "plateau(factor=0.5,patience=0)";
  TrainReport r;
  expect_resume_bit_identical(o, &r);
}

// The same with the guard acting in both halves: the rate is 300 times the base in epoch 1 and
// 10^4 times in epoch 4, so the run resumed after epoch 2 diverges, rolls back and retrains as the
// straight one does, from the guard's saved scale and smoothed loss. (Which rates make the guard act
// without stopping the run depends on the trajectory, and so on the initial weights.)
TEST(Train, ResumeIsBitIdenticalWhenTheGuardActs) {
  TrainOptions o = small_run();
  o.lr = 1e-3;
  o.check_every = 5;
  o.guard_threshold = 1.5;
  o.schedule = "constant(value=300,steps=1ep) + constant(steps=2ep) + constant(value=1e4)";
  TrainReport r;
  expect_resume_bit_identical(o, &r);
  EXPECT_FALSE(r.stopped_by_guard);
  std::set<int64_t> epochs_with_events;
  std::string all;
  for (const TrainEvent& e : r.events) {
    epochs_with_events.insert(e.epoch);
    all += "\n" + e.kind + " " + e.message;
  }
  EXPECT_TRUE(epochs_with_events.count(1) && epochs_with_events.count(4)) << all;
}

// A batch larger than the training set trains on the whole set each step (one step per epoch)
// instead of sizing buffers for samples that do not exist.
TEST(Train, BatchLargerThanTheDataIsTheWholeSet) {
  TrainOptions o = small_run();
  o.batch = 100000000;
  o.epochs = 3;
  TrainReport r = train(o);
  EXPECT_EQ(r.steps, 3);
  EXPECT_TRUE(std::isfinite(r.test_loss));
}

DataSplits spirals_without_test() {
  DataOptions d;
  d.synthetic_samples = 530;  // 424 training samples: batches of 50 and a last one of 24
  d.test_fraction = 0;
  d.val_fraction = 0.2;
  d.seed = 3;
  return load_data("spirals", d);
}

EngineConfig frozen_sgd(const DataSplits& data, uint64_t data_seed) {
  EngineConfig ec;
  ec.model = lrlab::testing::make_config(data.train.dim, {8}, data.train.num_classes);
  ec.optimizer = "sgd()";
  ec.replicas = {ReplicaSpec{0.1f, "constant", 7}};
  ec.batch = 50;
  ec.epochs = 3;
  ec.data_seed = data_seed;
  ec.device = parse_device(lrlab::testing::test_device());
  return ec;
}

// With the rate scaled to zero the weights stay put, so each step's loss is the mean loss of its
// minibatch: over an epoch, weighted by the batch sizes, they add up to the loss of the whole
// training set (every sample once, the last partial batch included). The order differs from epoch
// to epoch and from data seed to data seed.
TEST(Train, EachEpochVisitsEverySampleOnceInItsOwnOrder) {
  const DataSplits data = spirals_without_test();
  ASSERT_EQ(data.train.n, 424);
  TrainEngine eng(frozen_sgd(data, 11), data);
  eng.optimizer().set_scale(0.0f);
  const double whole = eng.evaluate(Split::Train).loss[0];
  std::vector<std::vector<float>> epochs;
  for (int64_t e = 0; e < 2; ++e) {
    eng.begin_epoch(e);
    ASSERT_EQ(eng.steps_left_in_epoch(), 9);
    epochs.push_back(eng.run(9));
    double sum = 0;
    for (size_t i = 0; i < 9; ++i) sum += epochs.back()[i] * (i < 8 ? 50.0 : 24.0);
    EXPECT_NEAR(sum / 424, whole, 1e-5 * whole) << "epoch " << e;
  }
  EXPECT_NE(epochs[0], epochs[1]);
  TrainEngine other(frozen_sgd(data, 12), data);
  other.optimizer().set_scale(0.0f);
  ASSERT_EQ(other.params(), eng.params()) << "the same initial weights";
  other.begin_epoch(0);
  EXPECT_NE(other.run(9), epochs[0]) << "another data seed, another order";
}

// Each replica of an engine starts from init_params with its own seed, where the packing puts it
// (on the GPU, drawn there): replicas that share a seed start equal, the others do not.
TEST(Train, EngineReplicasStartFromTheirOwnSeeds) {
  const DataSplits data = spirals_without_test();
  EngineConfig ec = frozen_sgd(data, 11);
  ec.replicas = {ReplicaSpec{0.1f, "constant", 5}, ReplicaSpec{0.2f, "constant", 9}, ReplicaSpec{0.1f, "constant", 5}};
  TrainEngine eng(ec, data);
  const MlpLayout& layout = eng.layout();
  const int64_t P = layout.size();
  const std::vector<float> all = eng.params();
  ASSERT_EQ(static_cast<int64_t>(all.size()), 3 * P);
  const uint64_t seeds[] = {5, 9, 5};
  for (int64_t r = 0; r < 3; ++r) {
    std::vector<float> want(P);
    init_params(layout, want.data(), seeds[r]);
    EXPECT_EQ(std::vector<float>(all.begin() + r * P, all.begin() + (r + 1) * P), want) << "replica " << r;
  }
  EXPECT_NE(std::vector<float>(all.begin(), all.begin() + P), std::vector<float>(all.begin() + P, all.begin() + 2 * P));
}

// unstash() rolls the data back with the weights and the step: the minibatches after the stash
// train again, on the same rows (equal losses, bit for bit, from equal state). A stash from an
// earlier epoch rewinds to the start of the current one.
TEST(Train, UnstashTrainsTheSameMinibatchesAgain) {
  const DataSplits data = spirals_without_test();
  EngineConfig ec = frozen_sgd(data, 11);
  ec.optimizer = "adam()";
  TrainEngine eng(ec, data);
  eng.begin_epoch(0);
  eng.run(3);
  eng.stash();
  const std::vector<float> first = eng.run(4);
  eng.unstash();
  EXPECT_EQ(eng.optimizer().step_count(), 3);
  ASSERT_EQ(eng.steps_left_in_epoch(), 6);
  EXPECT_EQ(eng.run(4), first);
  eng.run(2);
  eng.begin_epoch(1);
  eng.run(2);
  eng.unstash();  // to step 3, stashed in epoch 0: epoch 1 from its start
  EXPECT_EQ(eng.optimizer().step_count(), 3);
  EXPECT_EQ(eng.steps_left_in_epoch(), 9);
  EXPECT_EQ(eng.run(9).size(), 9u);
}

// Validation and test are separate splits: a split with no samples has no loss.
TEST(Train, EvaluateReadsTheSplitAskedFor) {
  const DataSplits data = spirals_without_test();
  ASSERT_EQ(data.test.n, 0);
  TrainEngine eng(frozen_sgd(data, 11), data);
  EXPECT_TRUE(std::isfinite(eng.evaluate(Split::Val).loss[0]));
  EXPECT_TRUE(std::isfinite(eng.evaluate(Split::Val).accuracy[0]));
  EXPECT_TRUE(std::isnan(eng.evaluate(Split::Test).loss[0]));
}

// The checkpoint of small_run() after `epochs`, in a temporary file of that name.
std::string saved_run(const std::string& name, int64_t epochs) {
  TrainOptions o = small_run();
  o.epochs = epochs;
  o.save = temp_path(name);
  train(o);
  return o.save;
}

TEST(Train, ResumeWithANewRateFineTunes) {
  const std::string ck = saved_run("ft.ckpt", 2);
  TrainOptions ft = small_run();
  ft.epochs = 3;
  ft.resume = ck;
  ft.lr = 1e-4;
  ft.lr_given = true;
  ft.log_csv = temp_path("ft.csv");
  ft.seed = small_run().seed + 1;
  std::remove(ft.log_csv.c_str());
  TrainReport r = train(ft);
  ASSERT_EQ(r.epochs.size(), 1u);
  // What the run did differently from what was asked is said: the checkpoint's seed is kept, and
  // a log the first part did not write starts at the resumed step.
  ASSERT_EQ(r.notes.size(), 2u);
  EXPECT_EQ(r.notes[0], "resuming with the checkpoint's seed 3; the seed 4 asked for applies to new runs only");
  EXPECT_NE(r.notes[1].find("restarts at step"), std::string::npos) << r.notes[1];
  EXPECT_NEAR(r.epochs[0].lr, 1e-4, 1e-10);
  std::string log = slurp(ft.log_csv);
  EXPECT_EQ(log.rfind("step,epoch,lr,loss\n", 0), 0u);
  // The last row is a step of epoch 3, at the new rate.
  std::string last = log.substr(log.rfind('\n', log.size() - 2) + 1);
  long long step = 0, epoch = 0;
  double lr = 0, loss = 0;
  ASSERT_EQ(std::sscanf(last.c_str(), "%lld,%lld,%lf,%lf", &step, &epoch, &lr, &loss), 4) << last;
  EXPECT_EQ(epoch, 3);
  EXPECT_NEAR(lr, 1e-4, 1e-9);
  std::remove(ck.c_str());
  std::remove(ft.log_csv.c_str());
}

// A model far beyond the memory is refused with a message before it is allocated, not killed by
// the kernel when its pages are touched (a process that allocated 800 GB would not get to throw).
TEST(Train, AModelBeyondTheMemoryIsRefusedBeforeItIsAllocated) {
  TrainOptions o = small_run();
  o.hidden = {1 << 24};
  o.batch = 1 << 16;
  o.synthetic_samples = 1 << 17;  // a training split larger than the batch, which stays 65536
  const std::string message = lrlab::testing::error_of([&] { train(o); });
  EXPECT_NE(message.find(" parameters at batch 65536 needs at least "), std::string::npos) << message;
  const std::string where = parse_device(o.device) == Device::CUDA ? "GPU" : "host";  // the emulated GPU too
  EXPECT_NE(message.find("GB of " + where + " memory, and "), std::string::npos) << message;
}

TEST(Train, ResumeRefusesADifferentModel) {
  const std::string ck = saved_run("model.ckpt", 1);
  TrainOptions other = small_run();
  other.hidden = {16};
  other.resume = ck;
  EXPECT_THROW(train(other), Error);
  std::remove(ck.c_str());
}

// The step count means minibatches of one size cut from one split: another --batch would renumber
// the epochs and the schedule's position, another split would validate on samples already trained on.
TEST(Train, ResumeRefusesAnotherBatchSizeOrSplit) {
  const std::string ck = saved_run("split.ckpt", 1);
  const Checkpoint saved = load_checkpoint(ck);
  EXPECT_EQ(saved.batch, small_run().batch);
  EXPECT_GT(saved.train_samples, 0);
  EXPECT_GT(saved.val_samples, 0);
  auto resumed = [&](auto change) {
    TrainOptions r = small_run();
    r.epochs = 2;
    r.resume = ck;
    change(r);
    return lrlab::testing::error_of([&] { train(r); });
  };
  EXPECT_NE(resumed([](TrainOptions& r) { r.batch *= 2; }).find("was trained with minibatches of"), std::string::npos);
  for (auto change : {+[](TrainOptions& r) { r.val_fraction = 0.3; }, +[](TrainOptions& r) { r.limit_train = 300; },
                      +[](TrainOptions& r) { r.synthetic_samples = 1200; }})
    EXPECT_NE(resumed(change).find("was trained on a split of"), std::string::npos);
  EXPECT_EQ(resumed([](TrainOptions&) {}), "");
  std::remove(ck.c_str());
}

// A resumed run keeps the plateau rule's cuts: every evaluation after the first is a bad one
// (threshold 0.99), so the rate halves after epochs 2, 3, ...; epochs 3 and 4 run at lr/2 and lr/4
// whether or not the run was interrupted after epoch 2.
TEST(Train, ResumeKeepsThePlateauCuts) {
  TrainOptions first = small_run();
  first.plateau = "plateau(factor=0.5,patience=0,threshold=0.99)";
  first.epochs = 2;
  first.save = temp_path("plateau_resume.ckpt");
  train(first);
  TrainOptions second = first;
  second.epochs = 4;
  second.resume = first.save;
  second.lr_given = false;
  second.save.clear();
  TrainReport r = train(second);
  ASSERT_EQ(r.epochs.size(), 2u);
  EXPECT_NEAR(r.epochs[0].lr, first.lr / 2, 1e-6 * first.lr);
  EXPECT_NEAR(r.epochs[1].lr, first.lr / 4, 1e-6 * first.lr);
  std::remove(first.save.c_str());
}

// Resuming without a new rate (lr_given false) keeps the checkpoint's, whatever o.lr holds.
TEST(Train, ResumeWithoutANewRateKeepsTheCheckpoints) {
  TrainOptions first = small_run();
  first.epochs = 1;
  first.save = temp_path("keep_rate.ckpt");
  train(first);
  TrainOptions second = first;
  second.epochs = 2;
  second.resume = first.save;
  second.lr = 0.5;
  second.lr_given = false;
  second.save.clear();
  TrainReport r = train(second);
  ASSERT_EQ(r.epochs.size(), 1u);
  EXPECT_NEAR(r.epochs[0].lr, first.lr, 1e-6 * first.lr);
  std::remove(first.save.c_str());
}

TEST(Train, GuardRecoversFromAHugeRate) {
  TrainOptions o = small_run();
  o.lr = 50.0;  // Adam at 50 diverges at once
  o.epochs = 6;
  o.check_every = 5;
  TrainReport r = train(o);
  ASSERT_FALSE(r.stopped_by_guard);
  int guard_events = 0;
  for (const TrainEvent& e : r.events) guard_events += e.kind == "guard";
  EXPECT_GE(guard_events, 3);
  EXPECT_TRUE(std::isfinite(r.test_loss));
  EXPECT_GT(r.test_accuracy, 0.6) << "the guard should end with a useful model";
  EXPECT_LT(r.epochs.back().lr, 50.0 / 4);
}

// After each event the undone steps train again: every epoch trains all its steps, the step count
// (the schedule's position) ends at epochs x steps per epoch, and the log lists the undone steps
// a second time, each under the epoch it trained in.
TEST(Train, GuardTrainsTheUndoneStepsAgain) {
  TrainOptions o = small_run();
  o.lr = 50.0;
  o.epochs = 3;
  o.check_every = 5;
  o.log_csv = temp_path("guard_log.csv");
  TrainReport r = train(o);
  ASSERT_FALSE(r.stopped_by_guard);
  const int64_t spe = 22;
  // An event names the step after its chunk; chunks start every check_every steps of an epoch (the
  // last one shorter), so the step each event rolled back to is the chunk's first.
  std::vector<int64_t> restarts;
  int64_t undone = 0;
  for (const TrainEvent& e : r.events) {
    if (e.kind != "guard") continue;
    const int64_t epoch_start = (e.step - 1) / spe * spe;
    restarts.push_back(epoch_start + (e.step - 1 - epoch_start) / o.check_every * o.check_every);
    undone += e.step - restarts.back();
  }
  ASSERT_GE(restarts.size(), 2u);
  EXPECT_EQ(r.steps, o.epochs * spe);

  std::istringstream log(slurp(o.log_csv));
  std::remove(o.log_csv.c_str());
  std::string line;
  std::getline(log, line);
  ASSERT_EQ(line, "step,epoch,lr,loss");
  std::vector<int64_t> steps, back_to;
  while (std::getline(log, line)) {
    long long step = 0, epoch = 0;
    ASSERT_EQ(std::sscanf(line.c_str(), "%lld,%lld,", &step, &epoch), 2) << line;
    EXPECT_EQ(epoch, step / spe + 1) << line;
    if (!steps.empty() && step <= steps.back()) back_to.push_back(step);
    steps.push_back(step);
  }
  EXPECT_EQ(back_to, restarts);
  EXPECT_EQ(static_cast<int64_t>(steps.size()), o.epochs * spe + undone);
  EXPECT_EQ(steps.back(), o.epochs * spe - 1);
}

// An epoch's training loss is the mean over its steps of the loss each step kept: a step the guard
// undid counts once, with the loss of the run that stood.
TEST(Train, EpochLossIsTheMeanOfTheStepsItKept) {
  TrainOptions o = small_run();
  o.lr = 50.0;
  o.epochs = 3;
  o.check_every = 5;
  TrainReport r = train(o);
  ASSERT_FALSE(r.stopped_by_guard);
  ASSERT_FALSE(r.events.empty()) << "the guard is to act in this run";
  const int64_t spe = 22;
  std::map<int64_t, double> kept;  // the last loss logged for each step is the one that stood
  for (size_t i = 0; i < r.step_index.size(); ++i) kept[r.step_index[i]] = r.step_loss[i];
  ASSERT_EQ(static_cast<int64_t>(kept.size()), o.epochs * spe);
  ASSERT_EQ(r.epochs.size(), static_cast<size_t>(o.epochs));
  for (int64_t e = 0; e < o.epochs; ++e) {
    double sum = 0;
    for (int64_t s = e * spe; s < (e + 1) * spe; ++s) sum += kept.at(s);
    const double mean = sum / spe;
    EXPECT_NEAR(r.epochs[e].train_loss, mean, 1e-12 * std::abs(mean)) << "epoch " << e + 1;
  }
}

TEST(Train, GuardOffLetsTheRunDiverge) {
  TrainOptions o = small_run();
  o.lr = 50.0;
  o.epochs = 2;
  o.guard = false;
  TrainReport r = train(o);
  EXPECT_TRUE(r.events.empty());
  EXPECT_FALSE(r.test_accuracy > 0.6);
  // A huge loss is still a number; a rate of 1e30 makes it NaN or infinite.
  for (double lr : {50.0, 1e30}) {
    o.lr = lr;
    r = train(o);
    const auto first = std::find_if(r.step_loss.begin(), r.step_loss.end(), [](float l) { return !std::isfinite(l); });
    EXPECT_EQ(r.nonfinite_step, first == r.step_loss.end() ? -1 : first - r.step_loss.begin()) << lr;
    if (lr > 1e6) EXPECT_GE(r.nonfinite_step, 0);
  }
}

TEST(Train, GuardStopsAfterTooManyEvents) {
  TrainOptions o = small_run();
  o.lr = 1e6;
  o.guard_max_events = 2;
  o.check_every = 5;
  TrainReport r = train(o);
  EXPECT_TRUE(r.stopped_by_guard);
  ASSERT_FALSE(r.events.empty());
  EXPECT_EQ(r.events.back().kind, "stop");
}

// The guard's rule, applied by hand to the losses the run reports: the smoothed loss (the
// bias-corrected moving average, beta 0.98) above the threshold times its best, after the first
// step. With a check every step the first event names the step after the first such loss.
TEST(Train, GuardFiresAtTheFirstLossPastItsThreshold) {
  TrainOptions o = small_run();
  o.lr = 0.3;
  o.epochs = 1;
  o.check_every = 1;
  o.guard_threshold = 1.5;
  TrainReport r = train(o);
  ASSERT_FALSE(r.events.empty());
  double avg = 0, best = 0, start = 0;
  size_t first = r.step_loss.size();
  for (size_t i = 0; i < r.step_loss.size() && first == r.step_loss.size(); ++i) {
    if (!std::isfinite(r.step_loss[i])) {
      first = i;
      break;
    }
    avg = 0.98 * avg + 0.02 * r.step_loss[i];
    const double smoothed = avg / (1 - std::pow(0.98, static_cast<double>(i + 1)));
    if (i == 0) start = best = smoothed;
    if (i > 0 && smoothed > 1.5 * best && smoothed > 0.01 * start) first = i;
    best = std::min(best, smoothed);
  }
  ASSERT_LT(first, r.step_loss.size());
  EXPECT_EQ(r.events[0].kind, "guard");
  EXPECT_EQ(r.events[0].step, r.step_index[first] + 1);
}

// Each event multiplies the rate by the guard's factor, and the run stops at exactly the event
// limit.
TEST(Train, GuardEventsCutByTheFactorAndStopAtTheLimit) {
  TrainOptions o = small_run();
  o.lr = 1e6;
  o.check_every = 5;
  o.guard_factor = 0.25;
  o.guard_max_events = 3;
  TrainReport r = train(o);
  EXPECT_TRUE(r.stopped_by_guard);
  std::vector<double> scales;
  for (const TrainEvent& e : r.events)
    if (e.kind == "guard") scales.push_back(e.scale);
  EXPECT_EQ(scales, (std::vector<double>{0.25, 0.0625, 0.015625}));
  ASSERT_FALSE(r.events.empty());
  EXPECT_EQ(r.events.back().kind, "stop");
}

TEST(Train, PlateauLowersTheScale) {
  TrainOptions o = small_run();
  o.epochs = 6;
  o.lr = 3e-2;
  // Patience 0 with a huge threshold: every evaluation counts as "no improvement".
  o.plateau = "plateau(factor=0.5,patience=0,threshold=0.99)";
  TrainReport r = train(o);
  int cuts = 0;
  for (const TrainEvent& e : r.events) cuts += e.kind == "plateau";
  EXPECT_GE(cuts, 4);
  EXPECT_LT(r.epochs.back().lr, r.epochs.front().lr / 4);

  // With a floor the cut is smaller than the factor; the message says the cut made.
  o.plateau = "plateau(factor=0.5,patience=0,threshold=0.99,min_scale=0.75)";
  TrainReport floored = train(o);
  std::vector<std::string> messages;
  for (const TrainEvent& e : floored.events)
    if (e.kind == "plateau") messages.push_back(e.message);
  ASSERT_EQ(messages.size(), 1u);
  EXPECT_NE(messages[0].find("rate x0.75 ->"), std::string::npos) << messages[0];

  // Cuts of 1e-20 without a floor take the scale below fp32's range by the third: the optimizer is
  // not frozen for it (a frozen one stops counting steps), the run takes all its steps.
  o.plateau = "plateau(factor=1e-20,patience=0,threshold=0.99,eps=0)";
  TrainReport underflow = train(o);
  cuts = 0;
  for (const TrainEvent& e : underflow.events) cuts += e.kind == "plateau";
  EXPECT_GE(cuts, 3);
  EXPECT_EQ(underflow.steps, r.steps);
}

// An epoch's rate is its last step's: with a halving every epoch, lr, lr/2, lr/4.
TEST(Train, EpochRateIsTheRateOfItsLastStep) {
  TrainOptions o = small_run();
  o.epochs = 3;
  o.schedule = "step(every=1ep,gamma=0.5)";
  TrainReport r = train(o);
  ASSERT_EQ(r.epochs.size(), 3u);
  for (size_t e = 0; e < 3; ++e) EXPECT_NEAR(r.epochs[e].lr, o.lr * std::pow(0.5, e), 1e-6 * o.lr) << e;
}

// Reduce-on-plateau watches the validation loss: with no threshold and no cut, its best is the
// lowest validation loss of the run, as PyTorch's ReduceLROnPlateau keeps it.
TEST(Train, PlateauWatchesTheValidationLoss) {
  TrainOptions o = small_run();
  o.plateau = "plateau(patience=100,threshold=0)";
  o.save = temp_path("plateau.ckpt");
  TrainReport r = train(o);
  double lowest = INFINITY, lowest_train = INFINITY;
  for (const EpochRecord& e : r.epochs) lowest = std::min(lowest, e.val_loss), lowest_train = std::min(lowest_train, e.train_loss);
  ASSERT_NE(lowest, lowest_train);
  Checkpoint c = load_checkpoint(o.save);
  ASSERT_TRUE(c.has_plateau);
  EXPECT_EQ(c.plateau.best, lowest);
  EXPECT_EQ(c.plateau.evaluations, 4);
  std::remove(o.save.c_str());
}

TEST(Train, RegressionOnSine) {
  TrainOptions o = small_run();
  o.data = "sine";
  o.hidden = {32};
  o.activation = "tanh";
  o.epochs = 10;
  TrainReport r = train(o);
  EXPECT_TRUE(std::isnan(r.test_accuracy));
  EXPECT_LT(r.test_loss, 0.1);
}

TEST(Train, JsonReportHasTheDocumentedFields) {
  TrainOptions o = small_run();
  o.epochs = 2;
  o.json_out = temp_path("r.json");
  o.plot_svg = temp_path("r.svg");
  train(o);
  auto j = nlohmann::json::parse(slurp(o.json_out));
  EXPECT_EQ(j["epochs"].size(), 2u);
  EXPECT_TRUE(j["test"]["accuracy"].is_number());
  EXPECT_TRUE(j["test"]["loss"].is_number());
  EXPECT_EQ(j["device"], o.device);
  EXPECT_TRUE(j["events"].is_array());
  EXPECT_TRUE(j["seconds"].is_number());
  EXPECT_EQ(j["config"]["optimizer"], "adam()");
  for (const char* k : {"train_loss", "val_loss", "val_accuracy", "lr", "samples_per_s"})
    EXPECT_TRUE(j["epochs"][0].contains(k)) << k;
  // Every option that changes the run, so that it can be repeated from the report alone.
  for (const char* k : {"val_fraction", "limit_train", "samples", "bias_decay", "guard_factor", "guard_threshold",
                        "guard_max_events", "check_every"})
    EXPECT_TRUE(j["config"].contains(k)) << k;
  EXPECT_EQ(j["samples"]["train"].get<int64_t>() + j["samples"]["val"].get<int64_t>(), 1500 * 8 / 10);
  EXPECT_TRUE(j["notes"].is_array());
  std::string svg = slurp(o.plot_svg);
  EXPECT_EQ(svg.rfind("<svg", 0), 0u);
  EXPECT_NE(svg.find("Learning rate"), std::string::npos);
  std::remove(o.json_out.c_str());
  std::remove(o.plot_svg.c_str());
}

TEST(Checkpoint, RefusesCorruptOrTruncatedFiles) {
  Checkpoint c;
  c.model = "{}";
  c.params = {1.0f, 2.0f, 3.0f};
  c.optimizer = "xyz";
  c.epochs_done = 2;
  std::string bytes = encode_checkpoint(c);
  Checkpoint back = decode_checkpoint(bytes, "x");
  EXPECT_EQ(back.params, c.params);
  EXPECT_EQ(back.epochs_done, 2);
  for (size_t cut : {size_t(0), size_t(7), size_t(20), bytes.size() - 1})
    EXPECT_THROW(decode_checkpoint(bytes.substr(0, cut), "x"), Error) << cut;
  std::string flipped = bytes;
  flipped[flipped.size() - 5] ^= 0x40;
  EXPECT_TRUE(throws_error_containing([&] { decode_checkpoint(flipped, "ck.bin"); }, "checkpoint 'ck.bin': checksum mismatch"));
  std::string magic = bytes;
  magic[0] = 'X';
  EXPECT_THROW(decode_checkpoint(magic, "x"), Error);
  // A valid checksum over values no run writes: a guard that raised the rate.
  Checkpoint raised = c;
  raised.guard.scale = 1e30;
  EXPECT_THROW(decode_checkpoint(encode_checkpoint(raised), "x"), Error);
}

// The header's version is outside the checksum: a version this lrlab does not know is refused by
// number, and so are weights that are not finite (no run saves them).
TEST(Checkpoint, RefusesUnknownVersionsAndNonFiniteWeights) {
  Checkpoint c;
  c.model = "{}";
  c.params = {1.0f, 2.0f};
  const std::string bytes = encode_checkpoint(c);
  for (uint32_t version : {1u, kCheckpointVersion + 1}) {
    std::string other = bytes;
    std::memcpy(&other[8], &version, sizeof version);  // after the 8-byte magic
    EXPECT_NE(lrlab::testing::error_of([&] { decode_checkpoint(other, "v.ckpt"); })
                  .find("version " + std::to_string(version) + " is not supported"),
              std::string::npos)
        << version;
  }
  c.params[1] = NAN;
  EXPECT_NE(lrlab::testing::error_of([&] { decode_checkpoint(encode_checkpoint(c), "nan.ckpt"); })
                .find("non-finite weights"),
            std::string::npos);
}

// A checkpoint as an older version wrote it. Version 3: version 4's bytes without the batch size
// and the split's sizes at the end. Version 2: also without the guard's first loss, the last field
// of the guard's record (model, epochs, step, seed, weights and optimizer state precede it).
std::string encode_old(const Checkpoint& c, uint32_t version) {
  constexpr size_t kHeader = 8 + 4 + 8 + 4;  // magic, version, payload length, CRC-32
  std::string payload = encode_checkpoint(c).substr(kHeader);
  payload.resize(payload.size() - 4 * sizeof(int64_t));
  const size_t start = 8 + c.model.size() + 3 * 8 + 8 + c.params.size() * sizeof(float) + 8 + c.optimizer.size() +
                       offsetof(GuardState, start);
  if (version == 2) payload.erase(start, sizeof(double));
  ByteWriter file;
  file.put_bytes("LRLABCKP", 8);
  file.put<uint32_t>(version);
  file.put<uint64_t>(payload.size());
  file.put(static_cast<uint32_t>(crc32(crc32(0L, Z_NULL, 0), reinterpret_cast<const Bytef*>(payload.data()),
                                       static_cast<uInt>(payload.size()))));
  file.put_bytes(payload.data(), payload.size());
  return file.take();
}

// Files written before the guard recorded the run's first loss (version 2) or the batch size and
// split (version 3) still load and resume; the resumed run's guard has no floor (its first loss is
// unknown), rather than a wrong one.
TEST(Checkpoint, ReadsAndResumesVersion2And3Files) {
  Checkpoint c;
  c.model = "{\"model\":1}";
  c.epochs_done = 3;
  c.step = 120;
  c.data_seed = 7;
  c.params = {1.0f, -2.0f};
  c.optimizer = "opt";
  c.guard.scale = 0.25;
  c.guard.events = 2;
  c.guard.loss.add(1.5);
  c.guard.start = 9.0;  // not in a version 2 file
  c.has_plateau = true;
  c.plateau.scale = 0.5;
  c.batch = 64;  // not in a version 2 or 3 file
  c.train_samples = 1000;
  Checkpoint back = decode_checkpoint(encode_old(c, 2), "v2.ckpt");
  EXPECT_EQ(back.model, c.model);
  EXPECT_EQ(back.epochs_done, 3);
  EXPECT_EQ(back.step, 120);
  EXPECT_EQ(back.data_seed, 7u);
  EXPECT_EQ(back.params, c.params);
  EXPECT_EQ(back.optimizer, "opt");
  EXPECT_EQ(back.guard.scale, 0.25);
  EXPECT_EQ(back.guard.events, 2);
  EXPECT_EQ(back.guard.loss.count, 1);
  EXPECT_EQ(back.guard.start, 0.0);
  EXPECT_TRUE(back.has_plateau);
  EXPECT_EQ(back.plateau.scale, 0.5);
  EXPECT_EQ(back.batch, 0);
  EXPECT_EQ(back.train_samples, 0);
  const Checkpoint v3 = decode_checkpoint(encode_old(c, 3), "v3.ckpt");
  EXPECT_EQ(v3.guard.start, 9.0);
  EXPECT_EQ(v3.plateau.scale, 0.5);
  EXPECT_EQ(v3.batch, 0);
  const Checkpoint v4 = decode_checkpoint(encode_checkpoint(c), "v4.ckpt");
  EXPECT_EQ(v4.batch, 64);
  EXPECT_EQ(v4.train_samples, 1000);

  TrainOptions first = small_run();
  first.epochs = 1;
  first.save = temp_path("v3.ckpt");
  train(first);
  const std::string v2 = temp_path("v2.ckpt");
  write_file_atomic(v2, encode_old(load_checkpoint(first.save), 2));
  TrainOptions second = small_run();
  second.epochs = 2;
  second.batch = first.batch / 2;  // not recorded before version 4, so not checked
  second.resume = v2;
  second.save = temp_path("resumed.ckpt");
  second.lr_given = false;
  train(second);
  EXPECT_EQ(load_checkpoint(second.save).guard.start, 0.0);
  for (const std::string& f : {first.save, v2, second.save}) std::remove(f.c_str());
}

// Without the data set, every command that names it says where it looked and how to get it.
TEST(TrainCli, MissingFashionMnistSaysWhereItLookedAndHowToInstallIt) {
  const std::string dir = temp_path("no-fashion-mnist");
  ASSERT_EQ(::mkdir(dir.c_str(), 0700), 0);
  for (const std::string& args : {"train --data fashion-mnist --epochs 1", "sweep --data fashion-mnist --lr 1e-3",
                                  "find-lr --data fashion-mnist"}) {
    auto r = lrlab::testing::run_program("env LRLAB_FASHION_MNIST_DIR=" + dir + " " + LRLAB_CLI_PATH, args + " --device cpu");
    EXPECT_EQ(r.status, 2) << args << r.err;
    EXPECT_EQ(r.err, "error: Fashion-MNIST not found: no " + dir +
                         "/train-images-idx3-ubyte[.gz] (install dataset-fashion-mnist or set LRLAB_FASHION_MNIST_DIR)\n")
        << args;
  }
  ::rmdir(dir.c_str());
}

TEST(TrainCli, BadInputGivesErrorAndStatus2) {
  struct Case {
    std::string args, fragment;
  };
  const std::string bad_csv = temp_path("bad.csv");
  {
    std::ofstream f(bad_csv);
    f << "label,a,b\n1,0.5,0.25\n0,0.1\n";
  }
  const std::string bad_ck = temp_path("bad.ckpt");
  {
    std::ofstream f(bad_ck);
    f << "not a checkpoint at all, but long enough";
  }
  for (const Case& c : std::vector<Case>{
           {"train --data nosuch --device cpu", "nosuch"},
           {"train --data spirals --optimizer 'adamm()' --device cpu", "unknown optimizer"},
           {"train --data spirals --schedule 'step(every=2,gama=2)' --device cpu", "unknown key 'gama'"},
           {"train --data spirals --lr -1 --device cpu", "--lr"},
           {"train --data spirals --hidden 12,x --device cpu", "--hidden"},
           {"train --data csv:" + bad_csv + " --device cpu", bad_csv},
           {"train --data spirals --resume " + bad_ck + " --device cpu", "checkpoint"},
           {"train --data spirals --activation swish --device cpu", "swish"},
           {"train --data spirals --epochs 0 --device cpu", "epochs"},
           {"trian --data spirals", "unknown command 'trian' (expected "},
           {"", "give a command: "},
           {"train --data spirals --device cpu --save /nonexistent/run.ckpt", "cannot write '/nonexistent/run.ckpt'"},
           {"train --data spirals --device cpu --json /tmp", "cannot write '/tmp'"},
           {"find-lr --data spirals --device cpu --plot /nonexistent/lr.svg", "cannot write '/nonexistent/lr.svg'"},
           {"train --data spirals --device cpu --guard-max-events 0", "event limit must be at least 1"},
           {"train --data spirals --device cpu --seed -1", "'-1' is not a whole number from 0 to"},
           {"train --data spirals --device cpu --seed 18446744073709551616", "is not a whole number"},
           {"find-lr --data spirals --device cpu --seed 1e3", "'1e3' is not a whole number"},
           {"sweep --data spirals --device cpu --seed x", "'x' is not a whole number"},
           {"train --data spirals --device cpu --config=", "--config needs a file name"},
           {"train --data CSV:x --device cpu", "unknown data source 'CSV:'"},
           {"--bogus", "'--bogus' comes before the command: give the command first"},
           {"--config c.toml train", "'--config' comes before the command"},
           {"train --data spirals --device cpu --val-fraction ''", "--val-fraction: empty value; give a number"},
           // What CLI11 alone says as "Could not convert", or converts to something else.
           {"train --data spirals --device cpu --epochs abc", "--epochs: 'abc' is not a whole number"},
           {"train --data spirals --device cpu --batch 1.5", "--batch: '1.5' is not a whole number"},
           {"train --data spirals --device cpu --epochs 99999999999999999999",
            "--epochs: '99999999999999999999' is out of range"},
           {"train --data spirals --device cpu --guard-factor x", "--guard-factor: 'x' is not a number"},
           {"train --data spirals --device cpu --guard-factor 1e5000", "--guard-factor: '1e5000' is out of range"},
           {"train --data spirals --device cpu --val-fraction 1e-400", "--val-fraction: '1e-400' is out of range"},
           {"sweep --data spirals --device cpu --lr 1e-3 --seeds x", "--seeds: 'x' is not a whole number"},
           {"train --data spirals --device cpu --epochs=", "--epochs: empty value; give a number"},
           {"schedule constant --steps ''", "--steps: empty value; give a number"},
           {"train --data spirals --device cpu --config /tmp", "cannot read config file '/tmp': it is a folder"},
           {"train --data spirals --samples 200000 --device cpu --hidden 16777216 --batch 65536",
            "GB of host memory, and "},
           {"train --data spirals --device cpu --epochs 010", "--epochs: '010' has a leading zero, which would be "
                                                              "read as an octal number: write 10"},
           {"train --data spirals --device cpu --seed 0042", "--seed: '0042' has a leading zero"},
           {"schedule constant --steps=012", "--steps: '012' has a leading zero"},
       }) {
    auto r = run_cli(c.args);
    EXPECT_EQ(r.status, 2) << c.args << "\n" << r.err;
    EXPECT_EQ(r.err.rfind("error: ", 0), 0u) << c.args << "\n" << r.err;
    EXPECT_NE(r.err.find(c.fragment), std::string::npos) << c.args << "\n" << r.err;
  }
  std::remove(bad_csv.c_str());
  std::remove(bad_ck.c_str());
}

// A checkpoint belongs to its architecture and to its data, told by the data's contents: the same
// samples read from another path (a job's own scratch copy) or spelled another way resume; other
// samples of the same shape do not.
TEST(TrainCli, ResumeTellsTheDataByItsContentsNotItsName) {
  const std::string a = temp_path("resume_a.csv"), b = temp_path("resume_b.csv"), c = temp_path("resume_c.csv");
  const std::string ck = temp_path("resume_data.ckpt");
  {
    std::ofstream fa(a), fb(b), fc(c);
    Rng rng(4);
    for (int i = 0; i < 300; ++i) {
      const double x = rng.normal(), y = rng.normal();
      fa << (x + y > 0) << "," << x << "," << y << "\n";
      fb << (x + y > 0) << "," << x << "," << y << "\n";
      fc << (x + y > 0) << "," << x << "," << y + (i == 17 ? 1e-3 : 0.0) << "\n";  // one value moved
    }
  }
  const std::string common = " --hidden 4 --device cpu --quiet --save " + ck;
  auto first = run_cli("train --data csv:" + a + " --epochs 1" + common);
  ASSERT_EQ(first.status, 0) << first.err;
  const std::string saved = slurp(ck);
  auto moved = run_cli("train --data csv:" + b + " --epochs 2 --resume " + ck + common);
  EXPECT_EQ(moved.status, 0) << moved.err;
  write_file_atomic(ck, saved);
  auto other = run_cli("train --data csv:" + c + " --epochs 2 --resume " + ck + common);
  EXPECT_EQ(other.status, 2);
  EXPECT_NE(other.err.find("error: checkpoint '" + ck + "' was trained on other data than --data 'csv:" + c +
                           "' gives (its --data was 'csv:" + a + "'); resume it on the data it was trained on"),
            std::string::npos) << other.err;
  // Other data of another size: the split's sizes differ first, and the message names the data too.
  const std::string shorter = temp_path("resume_short.csv");
  write_file_atomic(shorter, slurp(a).substr(0, slurp(a).find('\n', slurp(a).size() / 2) + 1));
  auto resized = run_cli("train --data csv:" + shorter + " --epochs 2 --resume " + ck + common);
  EXPECT_EQ(resized.status, 2);
  EXPECT_NE(resized.err.find("(resume with the --val-fraction, --limit-train and --samples it was trained with, on "
                             "its data: --data 'csv:" + a + "')"), std::string::npos) << resized.err;
  std::remove(shorter.c_str());
  // A batch larger than the training set is cut to it, and the message says so.
  auto larger = run_cli("train --data csv:" + a + " --epochs 2 --batch 500 --resume " + ck + common);
  EXPECT_EQ(larger.status, 2);
  EXPECT_NE(larger.err.find("was trained with minibatches of 128; resume it with the same --batch (got 216, --batch "
                            "500 cut to the training samples)"), std::string::npos) << larger.err;
  auto wider = run_cli("train --data csv:" + a + " --epochs 2 --resume " + ck + common + " --hidden 5");
  EXPECT_EQ(wider.status, 2);
  EXPECT_NE(wider.err.find("holds a different model ({\"activation\":\"relu\",\"hidden\":[4]"), std::string::npos)
      << wider.err;

  // A built-in set, spelled with and without its parentheses; another draw of it is other data.
  auto spirals = run_cli("train --data 'spirals()' --samples 300 --epochs 1" + common);
  ASSERT_EQ(spirals.status, 0) << spirals.err;
  const std::string spirals_saved = slurp(ck);
  EXPECT_EQ(run_cli("train --data spirals --samples 300 --epochs 2 --resume " + ck + common).status, 0);
  write_file_atomic(ck, spirals_saved);
  auto noisier = run_cli("train --data 'spirals(noise=0.3)' --samples 300 --epochs 2 --resume " + ck + common);
  EXPECT_EQ(noisier.status, 2);
  EXPECT_NE(noisier.err.find("was trained on other data than --data 'spirals(noise=0.3)' gives (its --data was "
                             "'spirals()')"), std::string::npos) << noisier.err;

  // A checkpoint from before the fingerprint is told by its source as written.
  Checkpoint old = decode_checkpoint(spirals_saved, ck);
  nlohmann::json model = nlohmann::json::parse(old.model);
  ASSERT_TRUE(model.contains("data_crc32")) << old.model;
  model.erase("data_crc32");
  old.model = model.dump();
  write_file_atomic(ck, encode_checkpoint(old));
  auto respelled = run_cli("train --data spirals --samples 300 --epochs 2 --resume " + ck + common);
  EXPECT_EQ(respelled.status, 2);
  EXPECT_NE(respelled.err.find("(its --data was 'spirals()')"), std::string::npos) << respelled.err;
  write_file_atomic(ck, encode_checkpoint(old));
  EXPECT_EQ(run_cli("train --data 'spirals()' --samples 300 --epochs 2 --resume " + ck + common).status, 0);
  for (const std::string& f : {a, b, c, ck}) std::remove(f.c_str());
}

// Regression has no accuracy: the epoch table says so with '-', not "nan%".
TEST(TrainCli, RegressionPrintsNoAccuracy) {
  auto r = run_cli("train --data sine --samples 400 --hidden 8 --epochs 2 --device cpu --quiet");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out.find("nan"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("  -  "), std::string::npos) << r.out;
}

TEST(TrainCli, DivergenceStopIsExitStatus3) {
  auto r = run_cli("train --data spirals --samples 600 --hidden 8 --epochs 2 --lr 1e6 --guard-max-events 2 "
                   "--check-every 3 --device cpu --quiet");
  EXPECT_EQ(r.status, 3) << r.out << r.err;
  EXPECT_NE(r.out.find("[guard]"), std::string::npos) << r.out;
  EXPECT_NE(r.err.find("error: training diverged 2 times"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("checkpoint"), std::string::npos) << "no --save, no checkpoint to speak of: " << r.err;
}

// The stop counts the guard's events only (plateau's are events too), and names the checkpoint
// kept only when an epoch ended and wrote one.
TEST(TrainCli, DivergenceStopCountsGuardEventsAndNamesTheCheckpointKept) {
  const std::string ck = temp_path("kept.ckpt");
  std::remove(ck.c_str());
  // Epochs 1 and 2 train (the plateau rule cuts after each); the rate then jumps a millionfold.
  auto r = run_cli("train --data spirals --samples 2000 --hidden 16 --epochs 6 --device cpu --quiet "
                   "--plateau 'plateau(mode=max,patience=0,factor=0.9)' --schedule "
                   "'constant(value=1,steps=2ep)+constant(value=1e6)' --guard-max-events 2 --check-every 5 --save " +
                   ck);
  EXPECT_EQ(r.status, 3) << r.out << r.err;
  EXPECT_NE(r.out.find("[plateau]"), std::string::npos) << r.out;
  EXPECT_NE(r.err.find("error: training diverged 2 times and was stopped; '" + ck +
                       "' keeps the checkpoint of epoch 2"),
            std::string::npos)
      << r.err;
  EXPECT_EQ(load_checkpoint(ck).epochs_done, 2);
  std::remove(ck.c_str());
  auto fresh = run_cli("train --data spirals --samples 600 --hidden 8 --epochs 1 --lr 1e30 --guard-max-events 1 "
                       "--check-every 3 --device cpu --quiet --save " + ck);
  EXPECT_EQ(fresh.status, 3) << fresh.err;
  EXPECT_NE(fresh.err.find("error: training diverged 1 time and was stopped\n"), std::string::npos) << fresh.err;
  std::ifstream none(ck);
  EXPECT_FALSE(none.good()) << "no epoch ended, so no checkpoint was written";
}

// --guard off: no event, however the loss goes; a loss that turns NaN is still an error at the end,
// naming the step, and never an exit status of 0.
TEST(TrainCli, GuardOffTurnsTheGuardOff) {
  const std::string log = temp_path("guard_off.csv");
  auto r = run_cli("train --data spirals --samples 600 --hidden 8 --epochs 1 --lr 1e30 --guard off --check-every 3 "
                   "--device cpu --quiet --log " + log);
  EXPECT_EQ(r.status, 3) << r.err;
  EXPECT_EQ(r.out.find("[guard]"), std::string::npos) << r.out;
  EXPECT_NE(r.err.find("error: the training loss was first NaN or infinite at step "), std::string::npos) << r.err;
  EXPECT_EQ(r.out.find("-nan"), std::string::npos) << r.out;
  const std::string rows = slurp(log);
  EXPECT_NE(rows.find(",nan\n"), std::string::npos) << rows;
  EXPECT_EQ(rows.find("-nan"), std::string::npos) << rows;
  std::remove(log.c_str());
}

// Two outputs on one file would keep only the last written; a log over the checkpoint being
// resumed would destroy it. --save may name the --resume file.
TEST(TrainCli, OutputsMustBeDistinctFiles) {
  const std::string ck = temp_path("distinct.ckpt"), other = temp_path("distinct.json");
  const std::string run = "train --data spirals --samples 300 --hidden 4 --device cpu --quiet ";
  ASSERT_EQ(run_cli(run + "--epochs 1 --save " + ck).status, 0);
  const std::string before = slurp(ck);
  const std::string dotted = ck.substr(0, ck.rfind('/')) + "/./" + ck.substr(ck.rfind('/') + 1);
  for (const std::string& args : {"--epochs 2 --resume " + ck + " --log " + ck, "--epochs 2 --resume " + ck +
                                      " --json " + dotted, "--epochs 1 --json " + other + " --plot " + other,
                                  "--epochs 1 --save " + other + " --log " + other}) {
    auto r = run_cli(run + args);
    EXPECT_EQ(r.status, 2) << args << "\n" << r.err;
    EXPECT_NE(r.err.find("both name '"), std::string::npos) << args << "\n" << r.err;
  }
  EXPECT_EQ(slurp(ck), before);
  // Refused before the range test of --lr find runs, not after it.
  auto find = run_cli(run + "--epochs 1 --lr find --json " + other + " --plot " + other);
  EXPECT_EQ(find.status, 2) << find.err;
  EXPECT_EQ(find.out.find("find-lr"), std::string::npos) << find.out;
  EXPECT_EQ(run_cli(run + "--epochs 2 --resume " + ck + " --save " + ck).status, 0);
  EXPECT_EQ(load_checkpoint(ck).epochs_done, 2);
  std::remove(ck.c_str());
  std::remove(other.c_str());
}

// Resuming without --lr continues at the checkpoint's rate, not at --lr's default.
TEST(TrainCli, ResumeWithoutLrKeepsTheCheckpointsRate) {
  const std::string ck = temp_path("cli_rate.ckpt"), json = temp_path("cli_rate.json");
  const std::string run = "train --data blobs --samples 300 --hidden 4 --device cpu --quiet ";
  ASSERT_EQ(run_cli(run + "--epochs 1 --lr 0.02 --save " + ck).status, 0);
  auto r = run_cli(run + "--epochs 2 --resume " + ck + " --json " + json);
  ASSERT_EQ(r.status, 0) << r.err;
  auto j = nlohmann::json::parse(slurp(json));
  ASSERT_EQ(j["epochs"].size(), 1u);
  EXPECT_NEAR(j["epochs"][0]["lr"].get<double>(), 0.02, 1e-8);
  std::remove(ck.c_str());
  std::remove(json.c_str());
}

TEST(TrainCli, LrFindTrainsWithTheSuggestion) {
  auto r = run_cli("train --data spirals --samples 1500 --hidden 24,24 --epochs 3 --batch 50 --lr find --device cpu --quiet");
  ASSERT_EQ(r.status, 0) << r.err;
  const size_t at = r.out.find("suggests lr ");
  ASSERT_NE(at, std::string::npos) << r.out;
  const double lr = std::atof(r.out.c_str() + at + 12);
  EXPECT_GT(lr, 1e-7);
  EXPECT_LT(lr, 10.0);
  EXPECT_NE(r.out.find("test: loss"), std::string::npos);
}

// Epochs whose every step the guard undid, and splits with no samples, show '-', never "nan".
TEST(TrainCli, EmptySplitsPrintADash) {
  const std::string csv = temp_path("two_rows.csv");
  {
    std::ofstream f(csv);
    f << "0,0.5,0.25\n1,0.1,0.3\n";
  }
  auto r = run_cli("train --data csv:" + csv + " --hidden 4 --epochs 2 --device cpu --quiet "
                   "--plateau 'plateau(patience=0)'");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out.find("nan"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("note: no validation samples; reduce-on-plateau watches the training loss"),
            std::string::npos) << r.out;
  EXPECT_NE(r.out.find("test: no test samples"), std::string::npos) << r.out;
  std::remove(csv.c_str());
}

// A regression fitted almost exactly has a loss that swings by large factors around a tiny best:
// not a divergence.
TEST(TrainCli, GuardIgnoresSwingsOfALossNearZero) {
  const std::string csv = temp_path("linear.csv");
  {
    std::ofstream f(csv);
    Rng rng(11);
    for (int i = 0; i < 5000; ++i) {
      double x = rng.normal();
      f << x << "," << 0.8 * x + 0.1 << "\n";
    }
  }
  auto r = run_cli("train --data csv:" + csv + ":regression --epochs 60 --lr 1e-2 --hidden 16 --batch 32 "
                   "--device cpu --quiet");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out.find("[guard]"), std::string::npos) << r.out;
  const size_t at = r.out.find("test: loss ");
  ASSERT_NE(at, std::string::npos) << r.out;
  EXPECT_LT(std::atof(r.out.c_str() + at + 11), 1e-4) << r.out;
  std::remove(csv.c_str());
}

// Output sent to a stream: stdout redirected to a file keeps what was printed before (the file is
// appended to, not replaced), and a pipe receives the log once, not once per epoch.
TEST(TrainCli, StreamsAreWrittenOnceInPlace) {
  auto r = run_cli("train --data blobs --samples 300 --hidden 4 --epochs 3 --device cpu --quiet --json /dev/stdout");
  ASSERT_EQ(r.status, 0) << r.err;
  const size_t header = r.out.find("lrlab train:"), json = r.out.find("\"config\""), test = r.out.find("test: loss");
  EXPECT_NE(header, std::string::npos) << r.out;
  EXPECT_NE(json, std::string::npos) << r.out;
  EXPECT_NE(test, std::string::npos) << r.out;
  EXPECT_LT(header, json);

  const std::string fifo = temp_path("log.fifo");
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  // Opened for reading first, without blocking, so that the run's writes find a reader; the small
  // log fits in the pipe's buffer.
  const int rd = open(fifo.c_str(), O_RDONLY | O_NONBLOCK);
  ASSERT_GE(rd, 0);
  auto p = run_cli("train --data blobs --samples 300 --hidden 4 --epochs 3 --device cpu --quiet --log " + fifo);
  std::string log;
  char buf[4096];
  for (ssize_t n; (n = read(rd, buf, sizeof buf)) > 0;) log.append(buf, static_cast<size_t>(n));
  close(rd);
  std::remove(fifo.c_str());
  ASSERT_EQ(p.status, 0) << p.err;
  EXPECT_EQ(log.find("step,epoch,lr,loss"), 0u) << log;
  EXPECT_EQ(log.rfind("step,epoch,lr,loss"), 0u) << "the log was sent more than once";
  EXPECT_GT(std::count(log.begin(), log.end(), '\n'), 3);
}

TEST(TrainCli, ConfigFileSetsOptions) {
  const std::string cfg = temp_path("train.toml");
  {
    std::ofstream f(cfg);
    f << "data = \"blobs\"\nhidden = \"16\"\nepochs = 2\nlr = \"0.01\"\ndevice = \"cpu\"\nsamples = 800\n";
  }
  auto r = run_cli("train --config " + cfg + " --quiet");
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("blobs"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("test: loss"), std::string::npos) << r.out;

  // A list, as TOML writes it and as INI does, is the comma-separated value of the command line.
  const std::string json = temp_path("train_cfg.json");
  for (const std::string& hidden : {"[12, 6]", "12,6"}) {
    {
      std::ofstream f(cfg);
      f << "data = \"blobs\"\nhidden = " << hidden << "\nepochs = 1\ndevice = \"cpu\"\nsamples = 400\n";
    }
    auto l = run_cli("train --config " + cfg + " --quiet --json " + json);
    ASSERT_EQ(l.status, 0) << hidden << ": " << l.err;
    EXPECT_EQ(nlohmann::json::parse(slurp(json))["config"]["hidden"], nlohmann::json({12, 6})) << hidden;
    EXPECT_EQ(nlohmann::json::parse(slurp(json))["config"]["bias_decay"], true);
  }

  // Sections: the command's own applies, another command's is skipped, a misspelt one is refused.
  {
    std::ofstream f(cfg);
    f << "data = \"blobs\"\ndevice = \"cpu\"\nsamples = 400\n[train]\nepochs = 2\nno-bias-decay = true\n[sweep]\nepochs = 1\nseeds = 3\n";
  }
  auto s = run_cli("train --config " + cfg + " --quiet --json " + json);
  ASSERT_EQ(s.status, 0) << s.err;
  EXPECT_EQ(nlohmann::json::parse(slurp(json))["config"]["epochs"], 2) << slurp(json);
  EXPECT_EQ(nlohmann::json::parse(slurp(json))["config"]["bias_decay"], false) << slurp(json);
  {
    std::ofstream f(cfg);
    f << "data = \"blobs\"\n[trian]\nepochs = 2\n";
  }
  auto bad = run_cli("train --config " + cfg + " --quiet");
  EXPECT_EQ(bad.status, 2) << bad.err;
  EXPECT_EQ(bad.err.rfind("error: config file '" + cfg + "': section [trian] is not a command of lrlab", 0), 0u)
      << bad.err;
  // A switch is true or false, not anything else read as false; a key set twice is refused rather
  // than failing as a list; the same key in two sections is two settings.
  for (const auto& [text, message] : std::vector<std::pair<std::string, std::string>>{
           {"data = \"blobs\"\nquiet = maybe\n", "'quiet' is a switch: true or false (got 'maybe')"},
           {"data = \"blobs\"\nepochs = 2\nepochs = 3\n", "'epochs' is set twice"},
           {"[train]\nepochs = 2\nepochs = 3\n", "'epochs' is set twice in section [train]"}}) {
    {
      std::ofstream f(cfg);
      f << text;
    }
    auto r2 = run_cli("train --config " + cfg + " --device cpu");
    EXPECT_EQ(r2.status, 2) << text << r2.err;
    EXPECT_NE(r2.err.find(message), std::string::npos) << text << r2.err;
  }
  {
    std::ofstream f(cfg);
    f << "data = \"blobs\"\ndevice = \"cpu\"\nsamples = 400\nquiet = off\n[train]\nepochs = 1\n[sweep]\nepochs = 3\n";
  }
  EXPECT_EQ(run_cli("train --config " + cfg).status, 0);
  // An empty text on the command line is that option's "none": it clears the file's setting. An
  // empty number is refused (CLI11 would read 0).
  {
    std::ofstream f(cfg);
    f << "data = \"blobs\"\ndevice = \"cpu\"\nsamples = 400\nepochs = 1\nplateau = \"plateau(patience=0)\"\n";
  }
  ASSERT_EQ(run_cli("train --config " + cfg + " --quiet --plateau '' --json " + json).status, 0);
  EXPECT_EQ(nlohmann::json::parse(slurp(json))["config"]["plateau"], "");
  {
    std::ofstream f(cfg);
    f << "data = \"blobs\"\nepochs = \"\"\n";
  }
  auto empty = run_cli("train --config " + cfg + " --device cpu");
  EXPECT_EQ(empty.status, 2);
  EXPECT_NE(empty.err.find("error: config file '" + cfg + "': --epochs: empty value; give a number"), std::string::npos)
      << empty.err;
  std::remove(json.c_str());
  std::remove(cfg.c_str());
}

// The JSON report lists every event as the terminal shows it: the guard's, its stop, plateau's.
TEST(TrainCli, JsonReportListsTheEvents) {
  const std::string json = temp_path("events.json");
  auto g = run_cli("train --data spirals --samples 600 --hidden 8 --epochs 2 --lr 1e6 --guard-max-events 2 "
                   "--check-every 3 --device cpu --quiet --json " + json);
  ASSERT_EQ(g.status, 3) << g.err;
  nlohmann::json doc = nlohmann::json::parse(slurp(json));
  const nlohmann::json& events = doc["events"];
  ASSERT_EQ(events.size(), 3u) << events.dump(1);
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(events[i]["kind"], "guard");
    EXPECT_EQ(events[i]["epoch"], 1);
    EXPECT_EQ(events[i]["step"], 3) << "the check after steps 1-3 saw it";
    EXPECT_DOUBLE_EQ(events[i]["scale"].get<double>(), i == 0 ? 0.5 : 0.25);
    EXPECT_NE(g.out.find("[guard] epoch 1 step 3: " + events[i]["message"].get<std::string>()), std::string::npos)
        << g.out;
  }
  EXPECT_EQ(events[2]["kind"], "stop");
  EXPECT_EQ(events[2]["step"], 3) << "where the guard gave up, as its last event";
  EXPECT_NE(g.out.find("[stop] epoch 1 step 3: stopped after 2 divergence events"), std::string::npos) << g.out;
  EXPECT_EQ(doc["stopped_by_guard"], true);

  // With patience 0 the rule acts after one epoch without improvement, and says so in the singular.
  auto p = run_cli("train --data spirals --samples 600 --hidden 8 --epochs 3 --device cpu --quiet "
                   "--plateau 'plateau(mode=max,patience=0,factor=0.5)' --json " + json);
  ASSERT_EQ(p.status, 0) << p.err;
  doc = nlohmann::json::parse(slurp(json));
  ASSERT_EQ(doc["events"].size(), 2u) << doc["events"].dump(1);
  for (const nlohmann::json& e : doc["events"]) {
    EXPECT_EQ(e["kind"], "plateau");
    EXPECT_EQ(e["message"].get<std::string>().rfind("validation loss has not improved for 1 epoch: rate x0.5", 0), 0u)
        << e.dump();
  }
  EXPECT_DOUBLE_EQ(doc["events"][1]["scale"].get<double>(), 0.25);
  std::remove(json.c_str());
}

// A resumed run's --log continues the earlier run's rows only when the file holds them; another
// file restarts at the resumed step, and the run says so (on the terminal and in the report).
TEST(TrainCli, ResumeWithAnotherRunsLogRestartsItAndSaysSo) {
  const std::string ck = temp_path("relog.ckpt"), log = temp_path("relog.csv"), other = temp_path("other.csv"),
                    json = temp_path("relog.json");
  const std::string run = "train --data spirals --samples 300 --hidden 4 --device cpu --quiet ";
  ASSERT_EQ(run_cli(run + "--epochs 1 --save " + ck + " --log " + log).status, 0);
  {
    std::ofstream f(other);
    f << "step,epoch,lr,loss\n5,1,0.001,0.5\n";
  }
  auto r = run_cli(run + "--epochs 2 --resume " + ck + " --log " + other + " --json " + json);
  ASSERT_EQ(r.status, 0) << r.err;
  const std::string note = "--log '" + other + "' does not hold this run's steps 0-1; it restarts at step 2";
  EXPECT_NE(r.out.find("note: " + note), std::string::npos) << r.out;
  EXPECT_EQ(nlohmann::json::parse(slurp(json))["notes"], nlohmann::json::array({note}));
  const std::string rows = slurp(other);
  EXPECT_EQ(rows.rfind("step,epoch,lr,loss\n2,2,", 0), 0u) << rows;
  // The run's own log continues: steps 0-1, then 2-3.
  auto own = run_cli(run + "--epochs 2 --resume " + ck + " --log " + log + " --json " + json);
  ASSERT_EQ(own.status, 0) << own.err;
  EXPECT_EQ(own.out.find("note:"), std::string::npos) << own.out;
  const std::string continued = slurp(log);
  EXPECT_EQ(std::count(continued.begin(), continued.end(), '\n'), 5) << continued;
  EXPECT_NE(continued.find("\n0,1,"), std::string::npos) << continued;
  EXPECT_NE(continued.find("\n3,2,"), std::string::npos) << continued;
  for (const std::string& f : {ck, log, other, json}) std::remove(f.c_str());
}

// What CLI11 2.1 would read as something else is refused with its line: an unclosed list took the
// rest of the file ("epochs = [1," trained), a comment on a list's later line became a value, a '#'
// inside quotes cut the value ("run#1.csv" wrote '"run'), text after a closing quote was dropped,
// and "[train" was an option. What it reads as written still reads.
TEST(TrainCli, MalformedConfigFileIsRefusedWithItsLine) {
  const std::string cfg = temp_path("malformed.toml"), json = temp_path("malformed.json");
  auto write = [&cfg](const std::string& text) {
    std::ofstream f(cfg);
    f << text;
  };
  const std::string at = "error: config file '" + cfg + "', line ";
  for (const auto& [text, message] : std::vector<std::pair<std::string, std::string>>{
           {"epochs = [1,\n", "1: the list of 'epochs' is never closed"},
           {"data = \"blobs\"\nhidden = [\n  12,\n  6\n]\n", "2: 'hidden = [' alone is not read as a list"},
           {"hidden = [12,\n  6] # widths\n", "2: a comment after the ']' closing the list of 'hidden' on a later line"},
           {"hidden = [12,\n6,\nschedule = \"constant\"\n", "3: the list of 'hidden' from line 1 is still open here"},
           {"epochs = \"1\n", "1: the string of 'epochs' has no closing \""},
           {"data = 'blobs\n", "1: the string of 'data' has no closing '"},
           {"data = \"\"\"blobs\"\"\"\n", "1: the value of 'data' is in triple quotes, which are not read"},
           {"hidden = [64\n32]\n", "2: this line and the one before it would be read as one item of the list of 'hidden'"},
           {"data = \"blobs\"x\n", "1: 'x' right after the closing quote in the value of 'data' is not read as written"},
           {"hidden = [\"64\" , \"32\"]\n", "1: a space between a closing quote and its comma in the value of 'hidden'"},
           {"log = \"run#1.csv\"\n", "1: a '#' in the value of 'log' starts a comment even inside quotes"},
           {"log = `run#1.csv`\n", "1: a '#' in the value of 'log' starts a comment even inside quotes"},
           {"log = out.csv ; per-step losses\n", "1: a ';' after the value of 'log' is not read as a comment"},
           {"epochs = 1;\n", "1: a ';' after the value of 'epochs' is not read as a comment"},
           {"plot = ;\n", "1: a ';' after the value of 'plot' is not read as a comment"},
           {"\nschedule = multistep(at=1;2);\n", "2: a ';' after the value of 'schedule' is not read as a comment"},
           {"tf32 # a=b\n", "1: the '=' comes after a '#', so the key would be read with the comment"},
           {"plot = `p.svg`\n", "1: the value of 'plot' would keep its backticks"},
           {"plot = \"a\\\"b.svg\"\n", "1: the value of 'plot' would keep the backslash of its \\\""},
           {"\n[train\nepochs = 1\n", "2: '[train' is not a section header"},
           {"[train] # the training options\n", "1: '[train] # the training options' is not a section header"}}) {
    write(text);
    auto r = run_cli("train --config " + cfg + " --device cpu --data blobs --samples 200");
    EXPECT_EQ(r.status, 2) << text << r.err;
    EXPECT_EQ(r.err.rfind(at + message, 0), 0u) << text << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
  write("# lrlab's options\r\n; an INI comment\r\ndata = 'blobs'   # a comment after a value\r\nhidden = 12, 6\r\n"
        "device = \"cpu\"\r\nsamples = 300\r\n[train]\r\nschedule = step(every=2,gamma=0.5)\r\n"
        "optimizer = \"sgd(momentum=0.9, nesterov=true)\"\r\nepochs = 1\r\n");
  auto ok = run_cli("train --config " + cfg + " --quiet --json " + json);
  ASSERT_EQ(ok.status, 0) << ok.err;
  nlohmann::json c = nlohmann::json::parse(slurp(json))["config"];
  EXPECT_EQ(c["hidden"], nlohmann::json({12, 6})) << c.dump();
  EXPECT_EQ(c["schedule"], "step(every=2,gamma=0.5)") << c.dump();
  EXPECT_EQ(c["optimizer"], "sgd(momentum=0.9, nesterov=true)") << c.dump();
  // CLI11's other forms: a list continued on the next lines, dotted and quoted keys, [[section]],
  // words split at spaces (numbers make a list, anything else is one value as written).
  for (const auto& [text, key, value] : std::vector<std::tuple<std::string, std::string, nlohmann::json>>{
           {"hidden = [12, # widths\n  6]\n", "hidden", {12, 6}},
           {"hidden = 12 6\n", "hidden", {12, 6}},
           {"[[train]]\nhidden = 8\n", "hidden", {8}},
           {"train.hidden = 8\n", "hidden", {8}},
           {"\"hidden\" = \"8\"\n", "hidden", {8}},
           {"schedule = warmup(steps=5) + cosine(steps=10)\n", "schedule", "warmup(steps=5) + cosine(steps=10)"},
           {"[DEFAULT]\nschedule = warmup(steps=5) + cosine(steps=10)\n", "schedule", "warmup(steps=5) + cosine(steps=10)"},
           {"[\"train\"]\nhidden = [ \"64\", \"32\" ]\n", "hidden", {64, 32}},
           {"batch = 16 # it's #1\n", "batch", 16},
           {"schedule = multistep(at=1;2)\n", "schedule", "multistep(at=1;2)"},  // a spec's list
           // The command's own section wins over the top of the file, wherever each stands.
           {"[train]\nbatch = 32\n[default]\nbatch = 64\n", "batch", 32},
           {"train.batch = 32\nbatch = 64\n", "batch", 32}}) {
    write(text);
    auto r = run_cli("train --config " + cfg + " --device cpu --data blobs --samples 200 --epochs 1 --quiet --json " + json);
    ASSERT_EQ(r.status, 0) << text << r.err;
    EXPECT_EQ(nlohmann::json::parse(slurp(json))["config"][key], value) << text;
  }
  // Refused when CLI11 has read the file: a key set twice (both lines named), a subsection (CLI11
  // drops it), a switch given a list, a byte-order mark.
  for (const auto& [text, message] : std::vector<std::pair<std::string, std::string>>{
           {"batch = 32\n[default]\nbatch = 16\n", "'batch' is set twice (lines 1 and 3); keep one"},
           {"[train]\n[train.extra]\nhidden = 8\n", "section [train.extra] is not a command of lrlab: there are no subsections"},
           {"tf32 = false true\n", "'tf32' is a switch: give it one value, true or false"},
           {"help\n", "'help' is not an option of 'lrlab train'"},
           {"batch = abc\n", "--batch: 'abc' is not a whole number"},
           {"\xEF\xBB\xBF" "batch = 16\n", "starts with a byte-order mark"}}) {
    write(text);
    auto r = run_cli("train --config " + cfg + " --device cpu --data blobs --samples 200");
    EXPECT_EQ(r.status, 2) << text << r.err;
    EXPECT_EQ(r.err.rfind("error: config file '" + cfg + "'", 0), 0u) << text << r.err;
    EXPECT_NE(r.err.find(message), std::string::npos) << text << r.err;
  }
  // A bare key is a switch set to true; for any other option it is a value left out.
  write("quiet\n");
  EXPECT_EQ(run_cli("train --config " + cfg + " --device cpu --data blobs --samples 200 --epochs 1").status, 0);
  write("epochs\n");
  auto bare = run_cli("train --config " + cfg + " --device cpu --data blobs --samples 200");
  EXPECT_EQ(bare.status, 2);
  EXPECT_EQ(bare.err, "error: config file '" + cfg + "': 'epochs' is not a switch: give it a value (epochs = ...)\n");
  // A list's items lose the spaces CLI11 keeps around them; quoted items may hold '=' on a list's
  // later lines.
  write("lr = [1e-3 , 1e-2]\n");
  auto sweep = run_cli("sweep --config " + cfg + " --device cpu --data spirals --hidden 4 --samples 300 --epochs 1");
  ASSERT_EQ(sweep.status, 0) << sweep.err;
  EXPECT_NE(sweep.out.find("2 configurations"), std::string::npos) << sweep.out;
  write("lr = 1e-3\nschedule = [\"constant\",\n  \"step(every=1,gamma=0.5)\"]\n");
  sweep = run_cli("sweep --config " + cfg + " --device cpu --data spirals --hidden 4 --samples 300 --epochs 1");
  ASSERT_EQ(sweep.status, 0) << sweep.err;
  EXPECT_NE(sweep.out.find("step(every=1,gamma=0.5)"), std::string::npos) << sweep.out;
  // In a list option, the pieces of a spec CLI11 split at its commas, spaces or '+' go back together.
  write("lr = 1e-3\n[sweep]\noptimizer = [sgd(momentum=0.9, nesterov=true),\n  adam(beta2=0.99)]\n"
        "schedule = warmup(steps=5) + cosine(steps=10)\n");
  sweep = run_cli("sweep --config " + cfg + " --device cpu --data spirals --hidden 4 --samples 300 --epochs 1");
  ASSERT_EQ(sweep.status, 0) << sweep.err;
  EXPECT_NE(sweep.out.find("2 configurations"), std::string::npos) << sweep.out;
  EXPECT_NE(sweep.out.find("sgd(momentum=0.9,nesterov=true)"), std::string::npos) << sweep.out;
  EXPECT_NE(sweep.out.find("warmup(steps=5) + cosine(steps=10)"), std::string::npos) << sweep.out;
  // A name too long to look up is a file that cannot be read, not a crash.
  auto too_long = run_cli("train --config " + std::string(300, 'a'));
  EXPECT_EQ(too_long.status, 2);
  EXPECT_EQ(too_long.err.rfind("error: cannot read config file 'aaa", 0), 0u) << too_long.err;
  std::remove(json.c_str());
  std::remove(cfg.c_str());
}

// A repeated option takes its last value (an override appended to a command line), as argparse's do.
TEST(TrainCli, ARepeatedOptionTakesItsLastValue) {
  const std::string json = temp_path("repeated.json");
  auto r = run_cli("train --data spirals --samples 300 --hidden 4 --device cpu --quiet --epochs 1 --lr 0.1 --epochs 2 "
                   "--lr 0.02 --json " + json);
  ASSERT_EQ(r.status, 0) << r.err;
  const auto j = nlohmann::json::parse(slurp(json));
  EXPECT_EQ(j["epochs"].size(), 2u);
  EXPECT_DOUBLE_EQ(j["config"]["lr"].get<double>(), 0.02);
  std::remove(json.c_str());
}

// The per-epoch table with stdout and stderr not terminals (run_cli sends them to files): a header
// naming every column, then one plain line per epoch with train loss, validation loss and accuracy,
// the rate of the epoch's last step and samples/s; no progress line, no ETA, no carriage return.
TEST(TrainCli, EpochLinesCarryEveryFieldAndNoProgressOffATerminal) {
  // Three epochs of a step schedule halving the rate each epoch: 0.04, 0.02, 0.01. No --quiet: what
  // keeps the progress line away is that neither stream is a terminal.
  auto r = run_cli("train --data spirals --samples 600 --hidden 8 --epochs 3 --batch 20 --lr 0.04 "
                   "--schedule 'step(every=1ep,gamma=0.5)' --check-every 4 --device cpu");
  ASSERT_EQ(r.status, 0) << r.err;
  const std::regex header(R"(^epoch +train loss +val loss +val acc +lr +samples/s +time$)");
  // epoch, train loss, val loss, val acc (a percentage), lr, samples/s, seconds.
  const std::regex row(R"(^ *(\d+) +(\S+) +(\S+) +(\S+)% +(\S+) +(\S+) +(\S+)s$)");
  auto number = [](const std::string& s) {
    char* end = nullptr;
    const double v = std::strtod(s.c_str(), &end);
    return end == s.c_str() + s.size() && !s.empty() ? v : std::nan("");
  };
  std::istringstream lines(r.out);
  std::string line;
  bool saw_header = false;
  int rows = 0;
  while (std::getline(lines, line)) {
    if (std::regex_match(line, header)) {
      EXPECT_EQ(rows, 0) << "the header comes before the epochs:\n" << r.out;
      saw_header = true;
      continue;
    }
    std::smatch m;
    if (!std::regex_match(line, m, row)) continue;
    ++rows;
    EXPECT_EQ(std::stoi(m.str(1)), rows) << line;
    const double train_loss = number(m[2]), val_loss = number(m[3]), acc = number(m[4]), lr = number(m[5]),
                 samples_per_s = number(m[6]), seconds = number(m[7]);
    EXPECT_TRUE(std::isfinite(train_loss) && train_loss > 0) << "train loss: " << line;
    EXPECT_TRUE(std::isfinite(val_loss) && val_loss > 0) << "validation loss: " << line;
    EXPECT_TRUE(acc >= 0 && acc <= 100) << "validation accuracy: " << line;
    EXPECT_NEAR(lr, 0.04 * std::pow(0.5, rows - 1), 1e-9) << "the rate of epoch " << rows << ": " << line;
    EXPECT_TRUE(std::isfinite(samples_per_s) && samples_per_s > 0) << "samples/s: " << line;
    EXPECT_TRUE(seconds >= 0) << "time: " << line;
  }
  EXPECT_TRUE(saw_header) << r.out;
  EXPECT_EQ(rows, 3) << "epoch lines with all seven fields (epoch, train loss, val loss, val acc, lr, samples/s, "
                         "time):\n" << r.out;
  for (const std::string* s : {&r.out, &r.err}) {
    EXPECT_EQ(s->find('\r'), std::string::npos) << *s;
    EXPECT_EQ(s->find('\x1b'), std::string::npos) << *s;
    EXPECT_EQ(s->find("ETA"), std::string::npos) << *s;
    EXPECT_EQ(s->find('#'), std::string::npos) << *s;
  }
}

// Runs lrlab with `args` on a pseudo-terminal (its stdin, stdout and stderr): everything it writes,
// its exit status, and whether it had to be killed after `timeout_s`.
struct PtyRun {
  int status = -1;
  bool timed_out = false;
  std::string out;
};

PtyRun run_cli_on_a_terminal(const std::vector<std::string>& args, double timeout_s) {
  std::vector<std::string> words{LRLAB_CLI_PATH};
  words.insert(words.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& w : words) argv.push_back(&w[0]);
  argv.push_back(nullptr);
  struct winsize ws {};
  ws.ws_row = 24;
  ws.ws_col = 120;
  PtyRun r;
  int master = -1;
  const pid_t pid = forkpty(&master, nullptr, nullptr, &ws);
  if (pid < 0) {
    r.out = std::string("forkpty: ") + std::strerror(errno);
    return r;
  }
  if (pid == 0) {
    execv(argv[0], argv.data());
    _exit(127);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  bool reaped = false;
  int st = 0;
  char buf[4096];
  for (;;) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      r.timed_out = true;
      kill(pid, SIGKILL);
      break;
    }
    pollfd p{master, POLLIN, 0};
    const int k = poll(&p, 1, static_cast<int>(std::min<int64_t>(left.count(), 200)));
    if (k < 0 && errno == EINTR) continue;
    if (k < 0) break;
    if (k == 0) {
      // Nothing to read: if the child is gone (and a process it left behind holds the terminal
      // open), take what is left and stop.
      if (waitpid(pid, &st, WNOHANG) == pid) {
        reaped = true;
        for (ssize_t n; poll(&p, 1, 0) > 0 && (n = read(master, buf, sizeof buf)) > 0;)
          r.out.append(buf, static_cast<size_t>(n));
        break;
      }
      continue;
    }
    const ssize_t n = read(master, buf, sizeof buf);
    if (n > 0) {
      r.out.append(buf, static_cast<size_t>(n));
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else {
      break;  // EIO: every descriptor of the terminal's other side is closed
    }
  }
  close(master);
  if (!reaped) waitpid(pid, &st, 0);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

// On a terminal the run draws a live progress line on stderr after each --check-every window: the
// epoch, a bar, the share of the epoch done, the window's loss and the ETA of the whole run, redrawn
// in place with a carriage return and cleared before each epoch's line of the table.
TEST(TrainCli, ProgressLineWithEtaOnATerminal) {
  // 432 training samples in batches of 20: 22 steps an epoch, a progress line every 4 steps, six
  // an epoch.
  auto r = run_cli_on_a_terminal({"train", "--data", "spirals", "--samples", "600", "--hidden", "8", "--epochs", "2",
                                  "--batch", "20", "--check-every", "4", "--device", "cpu"},
                                 30);
  ASSERT_FALSE(r.timed_out) << "killed after 30 s:\n" << r.out;
  ASSERT_EQ(r.status, 0) << r.out;
  const std::regex progress(R"(\r  epoch (\d+) \[([# ]{24})\] +(\d+)%  loss (\S+)  ETA (\d+)s)");
  int lines = 0, last_epoch = 0, last_percent = -1;
  for (auto it = std::sregex_iterator(r.out.begin(), r.out.end(), progress); it != std::sregex_iterator(); ++it) {
    const std::smatch& m = *it;
    ++lines;
    const int epoch = std::stoi(m.str(1)), percent = std::stoi(m.str(3));
    EXPECT_TRUE(epoch == last_epoch || epoch == last_epoch + 1) << m[0];
    if (epoch != last_epoch) last_percent = -1;
    EXPECT_GT(percent, last_percent) << m[0];
    EXPECT_LE(percent, 100) << m[0];
    const std::string bar = m[2];
    EXPECT_EQ(std::min<size_t>(bar.find(' '), 24), static_cast<size_t>(std::count(bar.begin(), bar.end(), '#')))
        << "the bar fills from the left: " << m[0];
    EXPECT_TRUE(std::isfinite(std::atof(m.str(4).c_str()))) << m[0];
    last_epoch = epoch;
    last_percent = percent;
    if (epoch == 2 && percent == 100) EXPECT_EQ(m.str(5), "0") << "nothing left at the end: " << m[0];
  }
  ASSERT_GE(lines, 2 * 6) << "too few progress lines with an ETA (six an epoch):\n" << r.out;
  EXPECT_EQ(last_epoch, 2) << r.out;
  EXPECT_EQ(last_percent, 100) << r.out;
  // The progress line is wiped (a carriage return, 80 blanks, a carriage return) right before each
  // epoch's row of the table, so the rows start on clean lines.
  const std::regex cleared_row(R"(\r {80}\r +(\d+) +\S+ +\S+ +\S+% +\S+ +\S+ +\S+s\r?\n)");
  int rows = 0;
  for (auto it = std::sregex_iterator(r.out.begin(), r.out.end(), cleared_row); it != std::sregex_iterator(); ++it)
    EXPECT_EQ(std::stoi(it->str(1)), ++rows) << it->str(0);
  EXPECT_EQ(rows, 2) << "epoch lines, each right after the progress line is cleared:\n" << r.out;
  EXPECT_NE(r.out.find("test: loss"), std::string::npos) << r.out;
}

}  // namespace
