#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <sstream>
#include <regex>

#include <nlohmann/json.hpp>

#include "cli_util.hpp"
#include "fixtures.hpp"
#include "test_util.hpp"
#include "lrlab/data.hpp"
#include "lrlab/error.hpp"
#include "lrlab/lr_finder.hpp"
#include "lrlab/rng.hpp"
#include "lrlab/schedule.hpp"
#include "lrlab/train_engine.hpp"

using namespace lrlab;
using lrlab::testing::finder_base;
using lrlab::testing::run_cli;
using lrlab::testing::slurp;
using lrlab::testing::temp_path;
using lrlab::testing::throws_error_containing;

namespace {

DataSplits spirals() {
  DataOptions d;
  d.seed = 5;
  d.synthetic_samples = 1500;
  return load_data("spirals", d);
}

EngineConfig spirals_engine(const DataSplits& data, const std::string& optimizer) {
  EngineConfig ec;
  ec.model.inputs = data.train.dim;
  ec.model.hidden = {16, 16};
  ec.model.outputs = data.train.num_classes;
  ec.optimizer = optimizer;
  ec.replicas = {ReplicaSpec{1e-2f, "constant", 5}};
  ec.batch = 50;
  ec.epochs = 3;
  ec.data_seed = 5;
  return ec;
}

// fastai's `valley`, transcribed loop for loop, with the out-of-range index clamped as ours is.
int64_t fastai_valley(const std::vector<double>& losses) {
  const int64_t n = static_cast<int64_t>(losses.size());
  int64_t max_start = 0, max_end = 0;
  std::vector<int64_t> lds(n, 1);
  for (int64_t i = 1; i < n; ++i)
    for (int64_t j = 0; j < i; ++j) {
      if (losses[i] < losses[j] && lds[i] < lds[j] + 1) lds[i] = lds[j] + 1;
      if (lds[max_end] < lds[i]) {
        max_end = i;
        max_start = max_end - lds[max_end];
      }
    }
  const double sections = static_cast<double>(max_end - max_start) / 3;
  const int64_t idx = max_start + static_cast<int64_t>(sections) + static_cast<int64_t>(sections / 2);
  return std::clamp<int64_t>(idx, 0, n - 1);
}

std::vector<double> log_ramp(size_t n) {
  std::vector<double> lr(n);
  for (size_t i = 0; i < n; ++i) lr[i] = std::pow(10.0, -4.0 + 0.1 * static_cast<double>(i));
  return lr;
}

TEST(LrFinder, RateFollowsTheExponentialAndLinearRamps) {
  const DataSplits data = spirals();
  for (bool linear : {false, true}) {
    TrainEngine eng(spirals_engine(data, "sgd()"), data);
    FinderOptions f;
    f.start = 1e-5;
    f.end = 1e-2;  // too low to diverge: the whole ramp is run
    f.steps = 50;  // over three epochs of 22 minibatches
    f.linear = linear;
    FinderCurve c = run_range_test(eng, f);
    ASSERT_EQ(c.steps_run, 50);
    EXPECT_FALSE(c.stopped_early);
    ASSERT_EQ(c.lr.size(), 50u);
    for (size_t i = 0; i < c.lr.size(); ++i) {
      double frac = static_cast<double>(i) / 49;
      double want = linear ? f.start + (f.end - f.start) * frac : f.start * std::pow(f.end / f.start, frac);
      EXPECT_NEAR(c.lr[i], want, 1e-6 * want) << "step " << i << (linear ? " linear" : " exp");
    }
    EXPECT_EQ(c.lr.size(), c.loss.size());
    EXPECT_EQ(c.lr.size(), c.smoothed.size());
    // The first smoothed value is the first loss (the bias correction undoes the zero start).
    EXPECT_NEAR(c.smoothed[0], c.loss[0], 1e-12);
  }
}

// A ramp from 1e-4 to 1e4 over 120 steps: SGD with momentum blows up well before its end.
FinderOptions ramp_past_blow_up() {
  FinderOptions f;
  f.start = 1e-4;
  f.end = 1e4;
  f.steps = 120;
  return f;
}

TEST(LrFinder, StopsEarlyWhenTheRateBlowsUpAndSuggestsBelowIt) {
  const DataSplits data = spirals();
  TrainEngine eng(spirals_engine(data, "sgd(momentum=0.9)"), data);
  FinderCurve c = run_range_test(eng, ramp_past_blow_up());
  EXPECT_TRUE(c.stopped_early);
  ASSERT_GT(c.steps_run, 20);
  EXPECT_LT(c.steps_run, 120);
  // Every point but the last stayed within 4x the lowest smoothed loss so far (the last one broke
  // that rule, or the loss after it was not finite).
  double lowest = c.smoothed[0];
  for (size_t i = 0; i + 1 < c.smoothed.size(); ++i) {
    lowest = std::min(lowest, c.smoothed[i]);
    EXPECT_LE(c.smoothed[i], 4 * lowest) << i;
  }

  const double blow_up = c.lr.back();
  for (double s : {c.steepest, c.valley}) {
    EXPECT_GE(s, c.lr.front());
    EXPECT_LT(s, blow_up);
  }
  EXPECT_GE(c.min_div10 * 10, c.lr.front());
  EXPECT_LT(c.min_div10, blow_up / 10);
  EXPECT_EQ(c.recommended, "valley");
  EXPECT_EQ(c.suggestion, c.valley);
}

// With a stop factor no loss can reach, only a non-finite loss ends the test, and fastai's window
// then ends where its rules for NaN and infinity put it: after a NaN at the first point from
// planned_steps-5 on (here all points, as the test ends before that), after an infinite loss 4 points
// before the end. Never 5 points before it, as for a test that ended on its stop rule.
TEST(LrFinder, ARunEndedByANonFiniteLossReadsFastaisWindow) {
  // A linear model of a regression: once the rate passes 2 / (the loss's largest curvature), plain
  // SGD multiplies the error by more than 1 at every step, and the growing rate makes that factor
  // grow too, so the loss overflows a few steps later (no unit can die, as a ReLU's can).
  DataOptions d;
  d.seed = 5;
  d.synthetic_samples = 1500;
  const DataSplits data = load_data("sine", d);
  EngineConfig ec = spirals_engine(data, "sgd()");
  ec.model.outputs = data.train.targets_dim;
  ec.model.activation = Activation::Identity;
  ec.model.loss = LossKind::MeanSquaredError;
  TrainEngine eng(ec, data);
  FinderOptions f;
  f.start = 1e-7;  // rate 1 at step 23 of 120, well past the first 12 that fastai's window leaves out
  f.end = 1e30;
  f.steps = 120;
  f.stop_factor = 1e300;
  const FinderCurve c = run_range_test(eng, f);
  ASSERT_TRUE(c.stopped_early);
  const int64_t kept = c.steps_run;
  ASSERT_GT(kept, f.steps / 10 + 7);
  ASSERT_LT(kept, f.steps - 5);
  EXPECT_EQ(c.window_begin, f.steps / 10);
  EXPECT_TRUE(c.window_end == kept || c.window_end == kept - 4) << c.window_end << " of " << kept;
  // The suggestions come from that window.
  const std::vector<double> x(c.lr.begin() + c.window_begin, c.lr.begin() + c.window_end),
      y(c.smoothed.begin() + c.window_begin, c.smoothed.begin() + c.window_end);
  EXPECT_EQ(c.valley, x[valley_index(y)]);
  EXPECT_EQ(c.steepest, x[steepest_index(x, y)]);
  EXPECT_EQ(c.min_div10, x[minimum_index(y)] / 10);
}

// The options are the test's own: beta 0 smooths nothing, and a stop factor of 1.5 stops at the
// first smoothed loss above 1.5 times the lowest before it.
TEST(LrFinder, SmoothingAndStopFollowTheOptions) {
  const DataSplits data = spirals();
  TrainEngine eng(spirals_engine(data, "sgd(momentum=0.9)"), data);
  FinderOptions f = ramp_past_blow_up();
  f.beta = 0;
  f.stop_factor = 1.5;
  FinderCurve c = run_range_test(eng, f);
  ASSERT_GT(c.steps_run, 2);
  EXPECT_EQ(c.smoothed, c.loss);
  double lowest = c.smoothed[0];
  for (size_t i = 0; i + 1 < c.smoothed.size(); ++i) {
    lowest = std::min(lowest, c.smoothed[i]);
    EXPECT_LE(c.smoothed[i], 1.5 * lowest) << i;
  }
  EXPECT_TRUE(c.stopped_early);
  EXPECT_GT(c.smoothed.back(), 1.5 * lowest);
}

TEST(LrFinder, SuggestionRulesPickTheExpectedPoints) {
  // Flat, a steep fall around index 5, then a rise: the steepest central slope is at 5,
  // (2 - 4.9) / 0.2 = -14.5 against -11 at 6.
  const std::vector<double> fall = {5, 5, 5, 5, 4.9, 4, 2, 1.8, 1.7, 1.6, 1.7, 3, 6};
  EXPECT_EQ(steepest_index(log_ramp(fall.size()), fall), 5);
  EXPECT_EQ(minimum_index(fall), 9);

  // The longest descending run is 4, 3.5, ..., 1.0, 0.5 (indices 1..7 and 9, length 8, ending at
  // 9); fastai starts it one before its first point (9 - 8 = 1) and goes 8/3 + 8/6 -> 2 + 1 in.
  const std::vector<double> valley = {3, 4, 3.5, 3.0, 2.5, 2.0, 1.5, 1.0, 2.0, 0.5};
  EXPECT_EQ(valley_index(valley), 4);
  EXPECT_EQ(fastai_valley(valley), 4);

  // Our O(n log n) valley agrees with fastai's double loop on noisy curves, ties included.
  Rng rng(11);
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<double> y(1 + trial % 60);
    for (size_t i = 0; i < y.size(); ++i)
      y[i] = std::round(8 * rng.uniform()) - 0.05 * static_cast<double>(i % 7);
    ASSERT_EQ(valley_index(y), fastai_valley(y)) << "trial " << trial;
  }
}

TEST(LrFinder, SuggestionsSkipTheTrimmedEnds) {
  // 100 points: a steep fall in the first ten (trimmed, as fastai does), a gentle one in the
  // middle, a deep minimum in the last five (trimmed too).
  std::vector<double> lr = log_ramp(100), y(100, 3.0);
  y[0] = 10, y[1] = 9, y[2] = 4;
  for (size_t i = 40; i < 100; ++i) y[i] = 3.0 - 0.02 * static_cast<double>(std::min<size_t>(i, 60) - 40);
  for (size_t i = 61; i < 95; ++i) y[i] = 2.6 + 0.03 * static_cast<double>(i - 60);
  y[97] = 0.1;
  Suggestions s = suggest(lr, y, 100);
  EXPECT_TRUE(s.has_valley);
  EXPECT_EQ(s.minimum, 60);
  EXPECT_DOUBLE_EQ(s.min_div10_lr, lr[60] / 10);
  EXPECT_GE(s.steepest, 40);
  EXPECT_LE(s.steepest, 60);
  EXPECT_GE(s.valley, 10);
  EXPECT_LE(s.valley, 60);
  EXPECT_DOUBLE_EQ(s.valley_lr, lr[s.valley]);

  // A curve that only rises has no valley: min/10 is recommended.
  std::vector<double> rising(100);
  for (size_t i = 0; i < 100; ++i) rising[i] = 1 + 0.01 * static_cast<double>(i);
  Suggestions r = suggest(lr, rising, 100);
  EXPECT_FALSE(r.has_valley);
  EXPECT_EQ(r.minimum, 10);
  EXPECT_DOUBLE_EQ(r.min_div10_lr, lr[10] / 10);

  // Too short to trim: no rule is applied (the whole curve was read once, so that 1e-4 came out
  // of a 3-point test of 1e-3 to 1e-1).
  Suggestions shortc = suggest({1e-3, 1e-2, 1e-1}, {2.0, 1.0, 5.0}, 100);
  EXPECT_FALSE(shortc.enough_points);
  EXPECT_FALSE(shortc.has_valley);
  EXPECT_EQ(shortc.minimum, -1);
  EXPECT_TRUE(std::isnan(shortc.min_div10_lr) && std::isnan(shortc.valley_lr) && std::isnan(shortc.steepest_lr));
  EXPECT_EQ(shortc.window_begin, 3);  // clipped to the curve: [3, 3), empty
  EXPECT_EQ(shortc.window_end, 3);

  // With no points trimmed at the end, the deep minimum at 97 is read.
  EXPECT_EQ(suggest(lr, y, 100, 0).minimum, 97);
  EXPECT_EQ(suggest(lr, y, 100, 2).minimum, 97);
  EXPECT_EQ(suggest(lr, y, 100, 3).minimum, 60);
}

// fastai's window after a non-finite loss, which lrlab's curve does not hold: fastai runs on past a
// NaN (it never exceeds the stop threshold) to its planned steps, trims the last 5 of those, and
// cuts at the NaN; an infinite loss stops its test, recorded as the last point, one of the 5 trimmed.
TEST(LrFinder, TrimsAsFastaiAfterANonFiniteLoss) {
  const double nan = std::nan(""), inf = INFINITY;
  EXPECT_EQ(fastai_trim_end(100, 100, 0.0), 5);   // ran its course
  EXPECT_EQ(fastai_trim_end(40, 100, 0.0), 5);    // stopped at 4x its minimum: that point is kept
  EXPECT_EQ(fastai_trim_end(40, 100, nan), 0);    // every point before the NaN
  EXPECT_EQ(fastai_trim_end(95, 100, nan), 0);
  EXPECT_EQ(fastai_trim_end(97, 100, nan), 2);    // but none from num_it - 5 on
  EXPECT_EQ(fastai_trim_end(40, 100, inf), 4);
}

// fastai's window starts at num_it / 10, a tenth of the steps planned, not of those run: a test
// planned over 200 steps that stopped after 50 still skips its first 20 points. The window needs
// two points; with fewer there are no suggestions (100 planned: 10 skipped at the start, 5 at the
// end, so 17 points are the fewest that give any).
TEST(LrFinder, TrimmingCountsThePlannedStepsAndNeedsTwoPoints) {
  std::vector<double> lr = log_ramp(50), y(50);
  for (size_t i = 0; i < 50; ++i) y[i] = 3.0 - 0.01 * static_cast<double>(i);  // falling
  y[12] = 0.5;                                                                  // but lowest at 12
  EXPECT_EQ(suggest(lr, y, 50).minimum, 12);  // skips 5
  EXPECT_EQ(suggest(lr, y, 200).minimum, 44);  // skips 20; 44 is the last before the 5 trimmed

  for (size_t n : {16, 17}) {
    std::vector<double> shortc(n, 2.0);
    shortc[3] = 1.0;   // lowest of all, among the points the start trim skips
    shortc[11] = 1.5;  // lowest of [10, 12), the window of 17 points
    const Suggestions s = suggest(log_ramp(n), shortc, 100);
    EXPECT_EQ(s.enough_points, n == 17) << n << " points";
    EXPECT_EQ(s.minimum, n == 17 ? 11 : -1) << n << " points";
    EXPECT_EQ(s.window_end - s.window_begin, n == 17 ? 2 : 1) << n << " points";
  }
}

// The fewest steps a test may plan are those that leave two points after fastai's trimming when
// every step is run: one fewer is refused, and a test of exactly that many suggests from two.
TEST(LrFinder, TheFewestStepsLeaveTwoPointsToSuggestFrom) {
  EXPECT_EQ(kMinFinderSteps - kMinFinderSteps / kFinderSkipStartDivisor - kFinderSkipEnd, kFinderMinPoints);
  FinderOptions f;
  f.start = 1e-4;
  f.end = 1e-2;  // too low to diverge
  f.steps = kMinFinderSteps - 1;
  const std::string refused = lrlab::testing::error_of([&] { validate_finder_options(f); });
  EXPECT_NE(refused.find("between " + std::to_string(kMinFinderSteps) + " and"), std::string::npos) << refused;
  EXPECT_NE(refused.find(finder_window_rule()), std::string::npos) << refused;
  f.steps = kMinFinderSteps;
  const DataSplits data = spirals();
  TrainEngine eng(spirals_engine(data, "sgd()"), data);
  f.require_suggestion = false;
  const FinderCurve c = run_range_test(eng, f);
  ASSERT_EQ(c.steps_run, kMinFinderSteps);
  EXPECT_EQ(c.window_end - c.window_begin, kFinderMinPoints);
  EXPECT_TRUE(std::isfinite(c.steepest) && std::isfinite(c.valley) && std::isfinite(c.min_div10));
}

// A ramp that starts past where the loss blows up records a point or two: the test made no
// suggestion then, not one outside the ramp (1e+19 here, from a 1-point "curve"). By default that
// is an error, which `train --lr find` reports; find-lr asks for the curve with the reason instead.
TEST(LrFinder, ACurveThatDivergesAtOnceSuggestsNothing) {
  const DataSplits data = spirals();
  TrainEngine eng(spirals_engine(data, "sgd()"), data);
  FinderOptions f;
  f.start = 1e20;
  f.end = 1e30;
  EXPECT_TRUE(throws_error_containing([&] { run_range_test(eng, f); }, "the range test of sgd() suggests no rate"));
  f.require_suggestion = false;
  const FinderCurve c = run_range_test(eng, f);
  ASSERT_TRUE(c.stopped_early);
  ASSERT_LT(c.steps_run, f.steps / kFinderSkipStartDivisor + kFinderSkipEnd + kFinderMinPoints);
  EXPECT_TRUE(std::isnan(c.suggestion));
  EXPECT_TRUE(std::isnan(c.valley) && std::isnan(c.steepest) && std::isnan(c.min_div10));
  EXPECT_EQ(c.recommended, "");
  EXPECT_NE(c.no_suggestion.find("start the ramp lower"), std::string::npos) << c.no_suggestion;
  EXPECT_LE(c.window_begin, c.window_end);
  EXPECT_LE(c.window_end, c.steps_run);

  // The JSON has nulls where there is no rate, and the reason.
  const nlohmann::json doc = nlohmann::json::parse(finder_json({c}))["curves"][0];
  EXPECT_TRUE(doc["suggestion"].is_null());
  EXPECT_TRUE(doc["recommended"].is_null());
  EXPECT_TRUE(doc["suggestions"]["valley"].is_null());
  EXPECT_EQ(doc["no_suggestion"], c.no_suggestion);
  // The plot draws the curve without markers at rates that do not exist.
  EXPECT_EQ(finder_svg({c}).find("valley"), std::string::npos);

  // What `lrlab train --lr find` calls.
  TrainOptions base = finder_base();
  FinderOptions defaults;
  defaults.start = 1e20;
  defaults.end = 1e30;
  EXPECT_TRUE(throws_error_containing([&] { find_lr(base, {"sgd()"}, defaults); }, "suggests no rate"));
}

// Gradient ascent on the whole training set raises the loss from the first step: no valley, and
// the minimum sits at the window's first point, within a decade of the start, so minimum/10 is a
// rate below the ramp. It is shown, but not recommended.
TEST(LrFinder, MinimumOverTenBelowTheRampIsNotRecommended) {
  const DataSplits data = spirals();
  EngineConfig ec = spirals_engine(data, "sgd(maximize=true)");
  ec.batch = data.train.n;
  ec.epochs = 60;
  TrainEngine eng(ec, data);
  FinderOptions f;
  f.start = 1e-3;
  f.end = 1e-1;  // the first tenth of the ramp spans 0.2 of a decade
  f.steps = 50;
  f.require_suggestion = false;
  const FinderCurve c = run_range_test(eng, f);
  ASSERT_EQ(c.steps_run, 50);
  for (size_t i = 1; i < c.smoothed.size(); ++i) ASSERT_GT(c.smoothed[i], c.smoothed[i - 1]) << i;
  EXPECT_LT(c.min_div10, c.lr.front());
  EXPECT_EQ(c.recommended, "");
  EXPECT_TRUE(std::isnan(c.suggestion));
  EXPECT_NE(c.no_suggestion.find("below the range tested"), std::string::npos) << c.no_suggestion;
}

// The progress callback hears every curve's steps as they run, from each curve's own thread.
TEST(LrFinder, ProgressCountsEachCurvesSteps) {
  FinderOptions f;
  f.steps = 40;
  f.end = 1e-2;  // too low to diverge: each test runs its 40 steps
  std::mutex m;
  std::vector<std::vector<int64_t>> heard(2);
  find_lr(finder_base(), {"adam()", "sgd()"}, f, [&](size_t curve, int64_t done) {
    std::lock_guard<std::mutex> lock(m);
    heard.at(curve).push_back(done);
  });
  for (const std::vector<int64_t>& h : heard) {
    ASSERT_FALSE(h.empty());
    EXPECT_TRUE(std::is_sorted(h.begin(), h.end()));
    EXPECT_GT(h.front(), 0);
    EXPECT_EQ(h.back(), f.steps);
  }
}

// A suggestion beyond the ramp's ends (minimum/10 below its first rate; a hand-built rate past its
// last) is marked at the end's loss, level with where the curve stops.
TEST(LrFinder, PlotMarksBeyondTheRampAtItsEnds) {
  FinderCurve c;
  c.optimizer = "adam()";
  for (int i = 0; i < 20; ++i) {
    c.lr.push_back(1e-4 * std::pow(10.0, i / 10.0));
    c.smoothed.push_back(1 + 0.1 * i);  // rising: the two ends are at different heights
  }
  c.steepest = c.lr[5];
  c.valley = 3 * c.lr.back();
  c.min_div10 = c.lr.front() / 10;
  c.recommended = "min_div10";
  const std::string svg = finder_svg({c});
  const size_t line = svg.find("<polyline fill=\"none\" stroke=\"#4e79a7\"");
  ASSERT_NE(line, std::string::npos);
  const size_t begin = svg.find("points=\"", line) + 8;
  const std::string points = svg.substr(begin, svg.find('"', begin) - begin);
  const double first_y = std::stod(points.substr(points.find(',') + 1));
  const std::string last = points.substr(points.rfind(' ') + 1);
  const double last_y = std::stod(last.substr(last.find(',') + 1));
  ASSERT_GT(first_y, last_y + 100) << points;
  std::smatch m;
  // The first circle and the first diamond are the plot's (the legend's come after).
  ASSERT_TRUE(std::regex_search(svg, m, std::regex("<circle cx=\"[0-9.]+\" cy=\"([0-9.]+)\" r=\"4.50\"")));
  EXPECT_NEAR(std::stod(m[1]), first_y, 0.011);
  ASSERT_TRUE(std::regex_search(svg, m, std::regex("<polygon points=\"[0-9.]+,([0-9.]+) [0-9.]+,[0-9.]+ [0-9.]+,[0-9.]+ [0-9.]+,[0-9.]+\"")));
  EXPECT_NEAR(std::stod(m[1]) + 4.5, last_y, 0.011);  // a diamond's first corner is 4.5 px above its centre
}

TEST(LrFinder, RestoresTheModelSoTrainingStartsFromTheSameWeights) {
  const DataSplits data = spirals();
  TrainEngine used(spirals_engine(data, "adam()"), data);
  TrainEngine fresh(spirals_engine(data, "adam()"), data);
  const std::vector<float> p0 = used.params();
  const std::string opt0 = used.optimizer().save();
  FinderOptions f;
  f.steps = 60;
  FinderCurve c = run_range_test(used, f);
  EXPECT_GT(c.steps_run, 0);
  EXPECT_EQ(used.params(), p0);
  EXPECT_EQ(used.optimizer().save(), opt0);
  EXPECT_EQ(used.optimizer().step_count(), 0);

  used.begin_epoch(0);
  fresh.begin_epoch(0);
  std::vector<float> la = used.run(10), lb = fresh.run(10);
  EXPECT_EQ(la, lb);
  std::vector<float> pa = used.params(), pb = fresh.params();
  ASSERT_EQ(pa.size(), pb.size());
  EXPECT_EQ(0, std::memcmp(pa.data(), pb.data(), pa.size() * sizeof(float)));
}

// A range test stopped from outside (its progress callback throws, as a cancelled one would) still
// puts the weights and the optimizer back before the exception goes on.
TEST(LrFinder, RestoresTheModelWhenStoppedByAnException) {
  const DataSplits data = spirals();
  TrainEngine eng(spirals_engine(data, "adam()"), data);
  const std::vector<float> p0 = eng.params();
  const std::string opt0 = eng.optimizer().save();
  FinderOptions f;
  f.steps = 60;
  int64_t heard = 0;
  EXPECT_THROW(run_range_test(eng, f,
                              [&](int64_t done) {
                                heard = done;
                                if (done >= 20) throw std::runtime_error("cancelled");
                              }),
               std::runtime_error);
  EXPECT_GE(heard, 20) << "steps ran before the stop";
  EXPECT_EQ(eng.params(), p0);
  EXPECT_EQ(eng.optimizer().save(), opt0);
  EXPECT_EQ(eng.optimizer().step_count(), 0);
}

// The test starts from the engine's weights with a fresh optimizer: after some training, its curve
// is that of a new engine given the trained weights.
TEST(LrFinder, StartsWithAFreshOptimizerFromTheCurrentWeights) {
  const DataSplits data = spirals();
  TrainEngine trained(spirals_engine(data, "adam()"), data);
  trained.begin_epoch(0);
  trained.run(10);
  TrainEngine fresh(spirals_engine(data, "adam()"), data);
  fresh.set_params(trained.params());
  FinderOptions f;
  f.steps = 40;
  f.end = 1;
  const FinderCurve a = run_range_test(trained, f), b = run_range_test(fresh, f);
  EXPECT_EQ(a.loss, b.loss);
}

// The finder's rollback: a snapshot puts weights and optimizer back, and one taken from an engine
// of another shape is refused instead of overrunning the parameters.
TEST(LrFinder, SnapshotRestoresAndRefusesAnotherShape) {
  const DataSplits data = spirals();
  TrainEngine eng(spirals_engine(data, "adam()"), data);
  const TrainEngine::Snapshot s = eng.snapshot();
  eng.begin_epoch(0);
  eng.run(5);
  ASSERT_NE(eng.params(), s.params);
  eng.restore(s);
  EXPECT_EQ(eng.params(), s.params);
  EXPECT_EQ(eng.optimizer().step_count(), 0);

  EngineConfig two = spirals_engine(data, "adam()");
  two.replicas.push_back(two.replicas[0]);
  TrainEngine pair(two, data);
  const std::vector<float> before = pair.params();
  EXPECT_THROW(pair.restore(s), Error);
  TrainEngine::Snapshot short_params = pair.snapshot();
  short_params.params.resize(s.params.size());
  EXPECT_THROW(pair.restore(short_params), Error);
  EXPECT_EQ(pair.params(), before);
}

TEST(LrFinder, OneCurvePerOptimizer) {
  FinderOptions f;
  f.steps = 80;
  std::vector<FinderCurve> curves = find_lr(finder_base(), {"adam()", "sgd(momentum=0.9)", "rmsprop()"}, f);
  ASSERT_EQ(curves.size(), 3u);
  EXPECT_EQ(curves[0].optimizer, "adam()");
  EXPECT_EQ(curves[1].optimizer, "sgd(momentum=0.9)");
  EXPECT_EQ(curves[2].optimizer, "rmsprop()");
  for (const FinderCurve& c : curves) {
    EXPECT_GT(c.steps_run, 10) << c.optimizer;
    EXPECT_GT(c.suggestion, 0) << c.optimizer;
  }
  EXPECT_NE(curves[0].loss, curves[1].loss);
  // Every curve starts from the same weights and data order: at a rate of 1e-7 the first losses agree.
  EXPECT_NEAR(curves[0].loss[0], curves[1].loss[0], 1e-5);

  // The same test next to other neighbours gives the same curve: the runs do not disturb each
  // other. (Three tests again, so each gets the same share of threads and so the same GEMM
  // rounding as before.)
  std::vector<FinderCurve> again = find_lr(finder_base(), {"rmsprop()", "sgd(momentum=0.9)", "adagrad()"}, f);
  EXPECT_EQ(again[1].loss, curves[1].loss);
}

TEST(LrFinder, BadOptionsThrow) {
  const TrainOptions base = finder_base();
  auto with = [](auto change) {
    FinderOptions f;
    change(f);
    return f;
  };
  EXPECT_THROW(find_lr(base, {"adam()"}, with([](FinderOptions& f) { f.start = 0; })), Error);
  EXPECT_THROW(find_lr(base, {"adam()"}, with([](FinderOptions& f) { f.start = std::nan(""); })), Error);
  EXPECT_THROW(find_lr(base, {"adam()"}, with([](FinderOptions& f) { f.end = 1e-8; })), Error);
  EXPECT_THROW(find_lr(base, {"adam()"}, with([](FinderOptions& f) { f.end = INFINITY; })), Error);
  EXPECT_THROW(find_lr(base, {"adam()"}, with([](FinderOptions& f) { f.end = 1e39; })), Error);
  EXPECT_THROW(find_lr(base, {"adam()"}, with([](FinderOptions& f) { f.start = 1e-40; })), Error);
  EXPECT_THROW(find_lr(base, {"adam()"}, with([](FinderOptions& f) { f.steps = 1; })), Error);
  EXPECT_THROW(find_lr(base, {"adam()"}, with([](FinderOptions& f) { f.steps = kMaxTableSteps + 1; })), Error);
  EXPECT_THROW(find_lr(base, {"adam()"}, with([](FinderOptions& f) { f.beta = 1; })), Error);
  EXPECT_THROW(find_lr(base, {"adam()"}, with([](FinderOptions& f) { f.stop_factor = 1; })), Error);
  EXPECT_THROW(find_lr(base, {}, FinderOptions{}), Error);
  EXPECT_THROW(find_lr(base, {"adam()", "nosuch()"}, FinderOptions{}), Error);
  EXPECT_THROW(find_lr(base, {"adam(beta1=2)"}, FinderOptions{}), Error);
  TrainOptions bad_batch = base;
  bad_batch.batch = 0;
  EXPECT_THROW(find_lr(bad_batch, {"adam()"}, FinderOptions{}), Error);
  EXPECT_TRUE(throws_error_containing(
      [&] { find_lr(base, {"adam()"}, with([](FinderOptions& f) { f.end = 1e-8; })); }, "end rate"));
  const DataSplits data = spirals();
  EngineConfig two = spirals_engine(data, "adam()");
  two.replicas.push_back(two.replicas[0]);
  TrainEngine eng(two, data);
  EXPECT_THROW(run_range_test(eng, FinderOptions{}), Error);
}

// Suggestions were short grey-to-purple ticks in colours of their own, hard to tell apart and to
// match with their curve. Each is now a marker on its curve, in the curve's colour: a shape per
// rule, the recommended one filled.
TEST(LrFinder, PlotMarksSuggestionsOnTheirCurves) {
  std::vector<FinderCurve> curves(2);
  for (size_t c = 0; c < curves.size(); ++c) {
    curves[c].optimizer = c == 0 ? "adam()" : "sgd()";
    for (int i = 0; i < 50; ++i) {
      curves[c].lr.push_back(1e-6 * std::pow(10.0, i / 10.0));
      curves[c].smoothed.push_back(2.0 + c + std::cos(i / 10.0));
    }
    curves[c].steepest = curves[c].lr[10];
    curves[c].valley = curves[c].lr[20];
    // Minimum/10 is rarely a rate the ramp stepped on: halfway (in log) between steps 30 and 31.
    curves[c].min_div10 = std::sqrt(curves[c].lr[30] * curves[c].lr[31]);
    curves[c].recommended = c == 0 ? "valley" : "min_div10";
  }
  const std::string svg = finder_svg(curves);
  const std::string colour[] = {"#4e79a7", "#f28e2b"};  // the plot's first two colours: the curves'
  for (size_t c = 0; c < 2; ++c) {
    const std::string paint = "stroke=\"" + colour[c] + "\" stroke-width=\"1.5\"/>";
    auto count = [&](const std::string& what) {
      size_t n = 0;
      for (size_t at = svg.find(what); at != std::string::npos; at = svg.find(what, at + 1)) ++n;
      return n;
    };
    // Three markers on the plot and three in the legend, one of each three filled.
    EXPECT_EQ(count(" fill=\"white\" " + paint), 4u) << curves[c].optimizer;
    EXPECT_EQ(count(" fill=\"" + colour[c] + "\" " + paint), 2u) << curves[c].optimizer;
  }
  // Each marker sits on its curve: the valley of curve 0 at its rate and loss, filled (a diamond).
  const double x = 72 + (std::log10(curves[0].valley) + 6) / 5 * (720 - 96);
  char at[64];
  std::snprintf(at, sizeof at, "%.2f,", x);
  const size_t diamond = svg.find("<polygon points=\"" + std::string(at));
  ASSERT_NE(diamond, std::string::npos) << at << "\n" << svg;
  const std::string filled = " fill=\"#4e79a7\"";
  EXPECT_EQ(svg.substr(svg.find(" fill=", diamond), filled.size()), filled);
  EXPECT_NE(svg.find("adam() valley 0.0001 *"), std::string::npos);
  EXPECT_NE(svg.find("sgd() min_div10 0.00112 *"), std::string::npos);

  // Curve 0's minimum/10 circle (hollow) sits halfway between the curve's 31st and 32nd points: on
  // the line, not at the height of the next step.
  const size_t line = svg.find("<polyline fill=\"none\" stroke=\"#4e79a7\"");
  ASSERT_NE(line, std::string::npos);
  std::istringstream points(svg.substr(svg.find("points=\"", line) + 8));
  std::vector<std::pair<double, double>> xy;
  double px, py;
  char comma;
  while (xy.size() < 50 && points >> px >> comma >> py) xy.push_back({px, py});
  ASSERT_EQ(xy.size(), 50u);
  const std::regex circle("<circle cx=\"([0-9.]+)\" cy=\"([0-9.]+)\" r=\"4.50\" fill=\"white\" stroke=\"#4e79a7\"");
  std::smatch m;
  ASSERT_TRUE(std::regex_search(svg, m, circle));
  EXPECT_NEAR(std::stod(m[1]), (xy[30].first + xy[31].first) / 2, 0.011);
  EXPECT_NEAR(std::stod(m[2]), (xy[30].second + xy[31].second) / 2, 0.011);
}

TEST(LrFinder, CliPrintsSuggestionsAndWritesJsonAndSvg) {
  const std::string json_path = temp_path("finder.json"), svg_path = temp_path("finder.svg");
  auto r = run_cli("find-lr --data spirals --samples 1500 --hidden 16,16 --batch 50 --device cpu --steps 80 "
                   "--optimizer 'adam()' 'sgd(momentum=0.9)' --json " + json_path + " --plot " + svg_path);
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  for (const char* word : {"adam()", "sgd(momentum=0.9)", "valley", "steepest", "minimum/10", "<- recommended"})
    EXPECT_NE(r.out.find(word), std::string::npos) << word << "\n" << r.out;

  nlohmann::json doc = nlohmann::json::parse(slurp(json_path));
  ASSERT_EQ(doc["curves"].size(), 2u);
  for (const auto& c : doc["curves"]) {
    const std::string rec = c["recommended"];
    EXPECT_EQ(c["suggestion"].get<double>(), c["suggestions"][rec].get<double>());
    EXPECT_EQ(c["lr"].size(), c["steps_run"].get<size_t>());
    EXPECT_EQ(c["smoothed"].size(), c["lr"].size());
    ASSERT_EQ(c["window"].size(), 2u);
    EXPECT_EQ(c["window"][0].get<int64_t>(), 8);  // a tenth of the 80 planned steps
    EXPECT_LT(c["window"][0].get<int64_t>(), c["window"][1].get<int64_t>());
    EXPECT_LE(c["window"][1].get<int64_t>(), c["steps_run"].get<int64_t>());
    EXPECT_LT(c["suggestions"]["valley"].get<double>(), c["lr"].back().get<double>());
  }
  const std::string svg = slurp(svg_path);
  EXPECT_EQ(svg.rfind("<svg", 0), 0u);
  EXPECT_NE(svg.find("sgd(momentum=0.9) steepest"), std::string::npos);
  // The recommended mark is labelled with the rate the JSON gives, and a star.
  char label[96];
  std::snprintf(label, sizeof label, "adam() valley %.3g *", doc["curves"][0]["suggestions"]["valley"].get<double>());
  if (doc["curves"][0]["recommended"] == "valley") EXPECT_NE(svg.find(label), std::string::npos) << label;
  EXPECT_NE(svg.find("<polyline"), std::string::npos);
  std::remove(json_path.c_str());
  std::remove(svg_path.c_str());

  for (const char* bad : {"--optimizer 'nosuch()'", "--start 1 --end 0.5", "--steps 1", "--steps 6", "--mode cubic",
                          "--start abc", "--steps 9223372036854775808"}) {
    auto e = run_cli(std::string("find-lr --data spirals --samples 600 --hidden 8 --device cpu ") + bad);
    EXPECT_EQ(e.status, 2) << bad << "\n" << e.out << e.err;
    EXPECT_EQ(e.err.rfind("error:", 0), 0u) << bad << "\n" << e.err;
  }
}

// --steps below the minimum says what the minimum is and why; one past int64_t is out of range,
// not read as the largest int64_t.
TEST(LrFinder, CliStepsNamesTheMinimumAndTheLimit) {
  const auto few = run_cli("find-lr --data spirals --samples 600 --hidden 8 --device cpu --steps " +
                           std::to_string(kMinFinderSteps - 1));
  EXPECT_EQ(few.status, 2);
  EXPECT_NE(few.err.find("not in range " + std::to_string(kMinFinderSteps) + " to"), std::string::npos) << few.err;
  EXPECT_NE(few.err.find(finder_window_rule()), std::string::npos) << few.err;
  const auto huge = run_cli("find-lr --data spirals --device cpu --steps 9223372036854775808");
  EXPECT_EQ(huge.status, 2);
  EXPECT_NE(huge.err.find("9223372036854775808 not in range"), std::string::npos) << huge.err;
  const auto word = run_cli("find-lr --data spirals --device cpu --steps 1e3");
  EXPECT_EQ(word.status, 2);
  EXPECT_EQ(word.err, "error: --steps: '1e3' is not a whole number\n");
  const auto help = run_cli("find-lr --help");
  EXPECT_NE(help.out.find(finder_window_rule()), std::string::npos) << help.out;
}

// A test that diverges at once is reported, with a warning that says why there is no rate and what
// to change, and nulls in the JSON; other curves keep theirs.
TEST(LrFinder, CliWarnsWhenACurveHasNoSuggestion) {
  const std::string json_path = temp_path("finder_none.json");
  auto r = run_cli("find-lr --data spirals --samples 600 --hidden 8 --batch 50 --device cpu --start 1e20 --end 1e30 "
                   "--optimizer 'sgd()' --json " + json_path);
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  EXPECT_EQ(r.err.rfind("warning: sgd(): no rate suggested: ", 0), 0u) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_NE(r.err.find("start the ramp lower"), std::string::npos) << r.err;
  EXPECT_EQ(r.out.find("recommended"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("e+19"), std::string::npos) << r.out;
  const nlohmann::json doc = nlohmann::json::parse(slurp(json_path));
  EXPECT_TRUE(doc["curves"][0]["suggestion"].is_null());
  std::remove(json_path.c_str());
}

// --quiet, --tf32 and --no-bias-decay are train's: the last reaches the engine (with weight decay
// the curve changes once biases move), the others are accepted (no progress line off a terminal;
// TF32 is a GPU setting).
TEST(LrFinder, CliTakesTrainsQuietTf32AndNoBiasDecay) {
  auto losses = [](const std::string& extra) {
    const std::string json_path = temp_path("finder_flags.json");
    auto r = run_cli("find-lr --data spirals --samples 600 --hidden 8 --batch 50 --device cpu --steps 30 "
                     "--end 0.1 --optimizer 'sgd(momentum=0.9,wd=0.5)' --json " + json_path + " " + extra);
    EXPECT_EQ(r.status, 0) << extra << "\n" << r.out << r.err;
    const nlohmann::json doc = nlohmann::json::parse(slurp(json_path));
    std::remove(json_path.c_str());
    return doc["curves"][0]["loss"].get<std::vector<double>>();
  };
  const std::vector<double> plain = losses("--quiet --tf32"), no_bias_decay = losses("--no-bias-decay");
  EXPECT_EQ(plain.size(), 30u);
  EXPECT_NE(plain, no_bias_decay);
}

// --mode linear ramps the rate by equal steps.
TEST(LrFinder, CliLinearModeRampsLinearly) {
  const std::string json_path = temp_path("finder_linear.json");
  auto r = run_cli("find-lr --data spirals --samples 600 --hidden 8 --batch 50 --device cpu --steps 20 "
                   "--start 0.001 --end 0.02 --mode linear --json " + json_path);
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  nlohmann::json doc = nlohmann::json::parse(slurp(json_path));
  const auto& lr = doc["curves"][0]["lr"];
  ASSERT_EQ(lr.size(), 20u);
  for (size_t i = 0; i < 20; ++i) EXPECT_NEAR(lr[i].get<double>(), 0.001 + 0.001 * static_cast<double>(i), 1e-8) << i;
  std::remove(json_path.c_str());
}

}  // namespace
