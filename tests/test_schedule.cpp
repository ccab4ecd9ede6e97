// Schedules against closed forms written out here (and values worked by hand from the PyTorch and
// Keras documentation), composition, epochs, holding, validation, and the `lrlab schedule` command.
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "lrlab/error.hpp"
#include "test_util.hpp"
#include "lrlab/schedule.hpp"

namespace lrlab {
namespace {

const double kPi = std::acos(-1.0);

double m(const std::string& spec, int64_t t, double spe = 0, double base = 1) {
  return Schedule::parse(spec, spe).multiplier(t, base);
}

using lrlab::testing::error_of;

std::string parse_error(const std::string& spec, double spe = 0) {
  return error_of([&] { Schedule::parse(spec, spe); });
}

#define EXPECT_ERROR_HAS(msg, part) EXPECT_NE((msg).find(part), std::string::npos) << "message: " << (msg)

TEST(ScheduleFormulas, Constant) {
  EXPECT_EQ(m("constant", 0), 1);
  EXPECT_EQ(m("constant", 12345), 1);
  EXPECT_EQ(m("constant(value=0.25)", 7), 0.25);
}

TEST(ScheduleFormulas, StepLikePyTorchStepLR) {
  for (int64_t t : {0, 1, 9, 10, 19, 20, 35})
    EXPECT_DOUBLE_EQ(m("step(every=10, gamma=0.5)", t), std::pow(0.5, t / 10)) << t;
  EXPECT_DOUBLE_EQ(m("step(every=3)", 7), 0.01);  // default gamma 0.1
}

TEST(ScheduleFormulas, MultistepCountsMilestonesReached) {
  const std::string s = "multistep(at=3;5;9, gamma=0.5)";
  const double expected[] = {1, 1, 1, 0.5, 0.5, 0.25, 0.25, 0.25, 0.25, 0.125, 0.125};
  for (int64_t t = 0; t < 11; ++t) EXPECT_DOUBLE_EQ(m(s, t), expected[t]) << t;
  // As PyTorch's Counter of milestones: any order, a repeated milestone applies gamma twice, and
  // spaces are allowed around the list's separators.
  for (int64_t t = 0; t < 11; ++t) EXPECT_DOUBLE_EQ(m("multistep(at=9 ; 3; 5, gamma=0.5)", t), expected[t]) << t;
  EXPECT_DOUBLE_EQ(m("multistep(at=4;4, gamma=0.5)", 3), 1.0);
  EXPECT_DOUBLE_EQ(m("multistep(at=4;4, gamma=0.5)", 4), 0.25);
}

TEST(ScheduleFormulas, ExpContinuousAndStaircase) {
  for (int64_t t : {0, 1, 7, 100}) EXPECT_DOUBLE_EQ(m("exp(gamma=0.9)", t), std::pow(0.9, t)) << t;
  // Keras ExponentialDecay(decay_steps=1000, decay_rate=0.96).
  for (int64_t t : {0, 500, 999, 1000, 2500}) {
    EXPECT_DOUBLE_EQ(m("exp(gamma=0.96, every=1000)", t), std::pow(0.96, t / 1000.0)) << t;
    EXPECT_DOUBLE_EQ(m("exp(gamma=0.96, every=1000, staircase=true)", t), std::pow(0.96, t / 1000)) << t;
  }
}

TEST(ScheduleFormulas, PolyLikeKerasAndPyTorch) {
  // PyTorch PolynomialLR(total_iters=10, power=2): (1 - min(t,10)/10)^2.
  for (int64_t t : {0, 3, 9, 10, 15})
    EXPECT_DOUBLE_EQ(m("poly(steps=10, power=2)", t), std::pow(1 - std::min<double>(t, 10) / 10, 2)) << t;
  // Keras PolynomialDecay with end 0.1 of the base: held at the end past steps.
  for (int64_t t : {0, 4, 10, 11, 40})
    EXPECT_DOUBLE_EQ(m("poly(steps=10, end=0.1)", t), 0.9 * (1 - std::min<double>(t, 10) / 10) + 0.1) << t;
  // With cycle, the horizon grows to the next multiple of steps: t=15 decays over 20 steps.
  EXPECT_DOUBLE_EQ(m("poly(steps=10, end=0.1, cycle=true)", 0), 1.0);
  EXPECT_DOUBLE_EQ(m("poly(steps=10, end=0.1, cycle=true)", 10), 0.1);
  EXPECT_DOUBLE_EQ(m("poly(steps=10, end=0.1, cycle=true)", 15), 0.9 * (1 - 15.0 / 20) + 0.1);
  EXPECT_DOUBLE_EQ(m("poly(steps=10, end=0.1, cycle=true)", 21), 0.9 * (1 - 21.0 / 30) + 0.1);
}

TEST(ScheduleFormulas, InverseTimeLikeKeras) {
  for (int64_t t : {0, 1, 5, 10, 25}) {
    EXPECT_DOUBLE_EQ(m("invtime(rate=0.5, every=10)", t), 1 / (1 + 0.5 * t / 10.0)) << t;
    EXPECT_DOUBLE_EQ(m("invtime(rate=0.5, every=10, staircase=true)", t), 1 / (1 + 0.5 * (t / 10))) << t;
  }
}

TEST(ScheduleFormulas, CosineHeldAtMinPastSteps) {
  for (int64_t t : {0, 1, 50, 99, 100, 150}) {
    double tt = std::min<double>(t, 100);
    EXPECT_NEAR(m("cosine(steps=100, min=0.1)", t), 0.1 + 0.9 * (1 + std::cos(kPi * tt / 100)) / 2, 1e-15) << t;
  }
  EXPECT_NEAR(m("cosine(steps=100)", 50), 0.5, 1e-15);
}

TEST(ScheduleFormulas, RestartsMatchPyTorchWarmRestartsWithTMult2) {
  // CosineAnnealingWarmRestarts(T_0=10, T_mult=2, eta_min=0): restarts at 0, 10, 30, 70.
  const std::string s = "restarts(period=10, mult=2)";
  EXPECT_DOUBLE_EQ(m(s, 0), 1);
  EXPECT_NEAR(m(s, 5), 0.5, 1e-15);
  EXPECT_NEAR(m(s, 9), (1 + std::cos(kPi * 9 / 10)) / 2, 1e-15);
  EXPECT_DOUBLE_EQ(m(s, 10), 1);
  EXPECT_NEAR(m(s, 20), 0.5, 1e-15);
  EXPECT_NEAR(m(s, 29), (1 + std::cos(kPi * 19 / 20)) / 2, 1e-15);
  EXPECT_DOUBLE_EQ(m(s, 30), 1);
  EXPECT_NEAR(m(s, 50), 0.5, 1e-15);
  EXPECT_DOUBLE_EQ(m(s, 70), 1);
  EXPECT_DOUBLE_EQ(m(s, 150), 1);  // 70 + 80
  // T_mult=1 with eta_min: every period alike.
  for (int64_t t : {0, 3, 7, 8, 13, 800}) {
    double cur = static_cast<double>(t % 8);
    EXPECT_NEAR(m("restarts(period=8, min=0.2)", t), 0.2 + 0.8 * (1 + std::cos(kPi * cur / 8)) / 2, 1e-15) << t;
  }
}

// With mult=10 the restarts begin at 0, 1, 11, 111, 1111: log(1000)/log(10) rounds to just below 3,
// which would put step 111 at the end of the previous period (multiplier min) instead of at a
// restart. (PyTorch 1.13's closed form has exactly this slip: 0.0 at epoch 111.)
TEST(ScheduleFormulas, RestartsBeginExactlyWhereRoundingSlips) {
  const std::string s = "restarts(period=1, mult=10)";
  EXPECT_DOUBLE_EQ(m(s, 11), 1);
  EXPECT_NEAR(m(s, 110), (1 + std::cos(kPi * 99 / 100)) / 2, 1e-15);
  EXPECT_DOUBLE_EQ(m(s, 111), 1);
  EXPECT_NEAR(m(s, 112), (1 + std::cos(kPi * 1 / 1000)) / 2, 1e-15);
  EXPECT_DOUBLE_EQ(m(s, 111111), 1);
  EXPECT_DOUBLE_EQ(m("restarts(period=2, mult=3)", 242), 1);  // restarts at 0, 2, 8, 26, 80, 242
}

// A mult PyTorch does not allow (it needs a whole T_mult): periods 30, 33, 36.3, so restarts at 0,
// 30, 63 and 99.3. The boundary at 63 computes as 63.00000000000001, which put step 63 at the end
// of the second period (multiplier min) instead of at the third's start.
TEST(ScheduleFormulas, RestartsWithAFractionalMultBeginOnTheirWholeSteps) {
  const std::string s = "restarts(period=30, mult=1.1, min=0.1)";
  auto at = [](double into, double length) { return 0.1 + 0.9 * (1 + std::cos(kPi * into / length)) / 2; };
  EXPECT_DOUBLE_EQ(m(s, 30), 1);
  EXPECT_NEAR(m(s, 62), at(32, 33), 1e-12);
  EXPECT_DOUBLE_EQ(m(s, 63), 1);
  EXPECT_NEAR(m(s, 64), at(1, 36.3), 1e-12);
  EXPECT_NEAR(m(s, 99), at(36, 36.3), 1e-12);  // the fourth period begins at 99.3
  EXPECT_NEAR(m(s, 100), at(100 - 99.3, 39.93), 1e-12);
  // Far out, with a mult near 1, a period lasts a small share of the steps before it: near step
  // 10^12 a period of about 10^9 steps. Five steps before a restart are still the old period's end.
  const std::string slow = "restarts(period=1000, mult=1.001)";
  const long double q = 1.001L;
  const int64_t n = static_cast<int64_t>(std::ceil(std::log(1e12L / 1e6L + 1) / std::log(q)));
  const long double boundary = 1e6L * (std::pow(q, static_cast<long double>(n)) - 1);
  ASSERT_GT(boundary, 1e12L);
  EXPECT_LT(m(slow, static_cast<int64_t>(std::floor(boundary)) - 5), 1e-6);
  EXPECT_GT(m(slow, static_cast<int64_t>(std::ceil(boundary)) + 5), 1 - 1e-6);
}

TEST(ScheduleFormulas, LinearAndWarmup) {
  // PyTorch LinearLR(start_factor=0.25, end_factor=1, total_iters=4).
  const double linear[] = {0.25, 0.4375, 0.625, 0.8125, 1, 1};
  for (int64_t t = 0; t < 6; ++t) EXPECT_DOUBLE_EQ(m("linear(from=0.25, to=1, steps=4)", t), linear[t]) << t;
  EXPECT_DOUBLE_EQ(m("linear(to=0, steps=10)", 3), 0.7);
  EXPECT_DOUBLE_EQ(m("warmup(steps=4)", 0), 0);
  EXPECT_DOUBLE_EQ(m("warmup(steps=4)", 1), 0.25);
  EXPECT_DOUBLE_EQ(m("warmup(steps=4, from=0.2)", 2), 0.6);
  EXPECT_DOUBLE_EQ(m("warmup(steps=4)", 4), 1);
  EXPECT_DOUBLE_EQ(m("warmup(steps=4)", 40), 1);
}

TEST(ScheduleFormulas, OneCycleAtPyTorchPhaseBoundaries) {
  // OneCycleLR(max_lr=1, total_steps=100): initial 1/25, final 1/25/1e4; phase ends 29 and 99.
  const std::string s = "onecycle(steps=100)";
  EXPECT_NEAR(m(s, 0), 0.04, 1e-15);
  EXPECT_NEAR(m(s, 29), 1, 1e-15);
  EXPECT_NEAR(m(s, 64), (1 + 4e-6) / 2, 1e-12);  // halfway through the cosine down
  EXPECT_NEAR(m(s, 99), 4e-6, 1e-15);
  EXPECT_NEAR(m(s, 500), 4e-6, 1e-15);  // held past the end
  EXPECT_NEAR(m(s, 10), 1 + (0.04 - 1) / 2 * (std::cos(kPi * 10 / 29) + 1), 1e-14);
  // anneal_strategy='linear'.
  EXPECT_NEAR(m("onecycle(steps=100, anneal=linear)", 1), 0.04 + 0.96 / 29, 1e-14);
  EXPECT_NEAR(m("onecycle(steps=100, anneal=linear)", 50), 1 + (4e-6 - 1) * 21 / 70, 1e-14);
  // three_phase: 0 -> 29 up, 29 -> 58 back to the initial value, then down to the final value at 99.
  const std::string t3 = "onecycle(steps=100, three_phase=true, div=10, final_div=100)";
  EXPECT_NEAR(m(t3, 0), 0.1, 1e-15);
  EXPECT_NEAR(m(t3, 29), 1, 1e-15);
  EXPECT_NEAR(m(t3, 58), 0.1, 1e-15);
  EXPECT_NEAR(m(t3, 99), 0.001, 1e-15);
  EXPECT_NEAR(m(t3, 44), 0.1 + 0.9 * (1 + std::cos(kPi * 15 / 29)) / 2, 1e-14);
}

// PyTorch's phase choice where phases end before they begin: OneCycleLR(total_steps=3) ends the
// warm-up at 0.3*3 - 1 = -0.1, so step 0 is already 0.1 steps into the descent from -0.1 to 2; with
// pct=0.6 and three phases the ends are 59, 118 and 99, so no step reaches the third phase.
TEST(ScheduleFormulas, OneCycleDegeneratePhasesAsInPyTorch) {
  const double initial = 0.04, lowest = 0.04 / 1e4;
  auto cos_between = [](double from, double to, double frac) { return to + (from - to) * (1 + std::cos(kPi * frac)) / 2; };
  EXPECT_NEAR(m("onecycle(steps=3)", 0), cos_between(1, lowest, 0.1 / 2.1), 1e-14);
  EXPECT_NEAR(m("onecycle(steps=3)", 2), lowest, 1e-15);
  EXPECT_NEAR(m("onecycle(steps=100, pct=0)", 0), cos_between(1, lowest, 1.0 / 100), 1e-14);
  EXPECT_NEAR(m("onecycle(steps=100, pct=1)", 99), 1, 1e-15);
  EXPECT_NEAR(m("onecycle(steps=100, pct=1)", 0), initial, 1e-15);
  const std::string t3 = "onecycle(steps=100, pct=0.6, three_phase=true)";
  EXPECT_NEAR(m(t3, 59), 1, 1e-15);
  EXPECT_NEAR(m(t3, 99), cos_between(1, initial, 40.0 / 59), 1e-14);
}

TEST(ScheduleFormulas, InverseSquareRootPeaksAtWarmup) {
  for (int64_t t : {0, 3, 99, 100, 399}) {
    double s = t + 1.0;
    EXPECT_DOUBLE_EQ(m("invsqrt(warmup=100)", t), std::min(s / 100, std::sqrt(100 / s))) << t;
  }
  EXPECT_DOUBLE_EQ(m("invsqrt(warmup=100)", 99), 1);
}

TEST(ScheduleFormulas, RangeIsAnAbsoluteRamp) {
  Schedule r = Schedule::parse("range(start=1e-6, end=1, steps=7)");
  EXPECT_TRUE(r.needs_base_lr());
  EXPECT_FALSE(Schedule::parse("cosine(steps=3)").needs_base_lr());
  for (int64_t t = 0; t < 7; ++t) EXPECT_NEAR(r.multiplier(t, 0.01) * 0.01, std::pow(10.0, -6 + t), 1e-15 * std::pow(10.0, t));
  EXPECT_NEAR(r.multiplier(50, 0.01), 100, 1e-12);  // held at end/base
  Schedule lin = Schedule::parse("range(start=0.1, end=0.5, steps=5, mode=linear)");
  EXPECT_NEAR(lin.multiplier(2, 2), 0.3 / 2, 1e-15);
  EXPECT_ERROR_HAS(error_of([&] { r.multiplier(0, 0); }), "positive base learning rate");
  EXPECT_ERROR_HAS(error_of([&] { r.table(3, -1); }), "positive base learning rate");
}

TEST(ScheduleCompose, SegmentsStartAtLocalZero) {
  const std::string s = "constant(value=2, steps=3) + linear(to=0, steps=4) + constant(value=0.5)";
  const double expected[] = {2, 2, 2, 1, 0.75, 0.5, 0.25, 0.5, 0.5};
  for (int64_t t = 0; t < 9; ++t) EXPECT_DOUBLE_EQ(m(s, t), expected[t]) << t;
  // Warmup then cosine: the cosine's local step 0 is global step 5.
  const std::string wc = "warmup(steps=5) + cosine(steps=10, min=0.1)";
  EXPECT_DOUBLE_EQ(m(wc, 4), 0.8);
  EXPECT_DOUBLE_EQ(m(wc, 5), 1);
  EXPECT_NEAR(m(wc, 10), 0.1 + 0.9 * 0.5, 1e-15);
  EXPECT_NEAR(m(wc, 100), 0.1, 1e-15);
  // A segment with a length may precede another even when the length is not its formula's.
  EXPECT_DOUBLE_EQ(m("step(every=10, steps=30) + cosine(steps=5)", 29), 0.01);
  EXPECT_DOUBLE_EQ(m("step(every=10, steps=30) + cosine(steps=5)", 30), 1);
}

TEST(ScheduleCompose, LastSegmentHoldsItsLastValue) {
  // Past its length a plain segment keeps its value at step length-1 ...
  EXPECT_DOUBLE_EQ(m("step(every=2, steps=5)", 4), 0.01);
  EXPECT_DOUBLE_EQ(m("step(every=2, steps=5)", 6), 0.01);
  EXPECT_DOUBLE_EQ(m("step(every=2, steps=5)", 1000), 0.01);
  // ... without a length it follows its formula.
  EXPECT_NEAR(m("step(every=2)", 6), 0.001, 1e-18);
  // The table holds the same values as multiplier() and its last entry is what the device holds.
  Schedule s = Schedule::parse("warmup(steps=3) + exp(gamma=0.5, steps=4)");
  std::vector<float> table = s.table(12, 1);
  ASSERT_EQ(table.size(), 12u);
  for (int64_t t = 0; t < 12; ++t) EXPECT_EQ(table[t], static_cast<float>(s.multiplier(t, 1))) << t;
  EXPECT_FLOAT_EQ(table[6], 0.125f);
  EXPECT_FLOAT_EQ(table[11], 0.125f);
}

TEST(ScheduleEpochs, EpValuesUseStepsPerEpoch) {
  // The Keras step-decay example: 0.5^floor(epoch/10) with 50 steps per epoch.
  for (int64_t t : {0, 499, 500, 999, 1000})
    EXPECT_DOUBLE_EQ(m("step(every=10ep, gamma=0.5)", t, 50), std::pow(0.5, t / 500)) << t;
  EXPECT_DOUBLE_EQ(m("warmup(steps=0.5ep) + constant(value=0.3)", 9, 20), 0.9);
  EXPECT_DOUBLE_EQ(m("warmup(steps=0.5ep) + constant(value=0.3)", 10, 20), 0.3);
  EXPECT_ERROR_HAS(parse_error("step(every=10ep)"), "steps per epoch");
  EXPECT_ERROR_HAS(parse_error("step(every=1)", -1), "steps per epoch");
  // An epoch is a whole number of steps; a fraction of one rounds to the nearest step.
  EXPECT_ERROR_HAS(parse_error("step(every=1)", 7.8125), "whole number");
  EXPECT_DOUBLE_EQ(m("step(every=0.5ep, gamma=0.5)", 3, 7), 1);    // 3.5 -> every 4 steps
  EXPECT_DOUBLE_EQ(m("step(every=0.5ep, gamma=0.5)", 4, 7), 0.5);
  // 'ep' is a token of its own: spaces may stand before it, in lists too.
  for (const char* spec : {"step(every = 2 ep, gamma=0.5)", "step(every=2 ep , gamma=0.5)",
                           "multistep(at=2 ep ; 4ep, gamma=0.5)", "multistep(at = 2ep;4 ep,gamma=0.5)"})
    for (int64_t t : {0, 19, 20, 39, 40})
      EXPECT_DOUBLE_EQ(m(spec, t, 10), std::pow(0.5, t / 20 < 2 ? t / 20 : 2)) << spec << " at " << t;
  EXPECT_ERROR_HAS(parse_error("step(every=2 epoch)", 10), "expected ')'");
  // Every element of a longer list, not the first and last alone.
  for (int64_t t : {9, 10, 19, 20, 29, 30})
    EXPECT_DOUBLE_EQ(m("multistep(at=1 ep; 2 ep ;3 ep, gamma=0.5)", t, 10), std::pow(0.5, t / 10)) << t;
  // A word that only begins with 'ep', or a value that is not a number, takes no unit: the error
  // is at the word after the space, where the value ended.
  EXPECT_ERROR_HAS(parse_error("step(every=2 epoch)", 10), "found 'e' at position 14");
  EXPECT_ERROR_HAS(parse_error("step(every=2 ep_x)", 10), "found 'e' at position 14");
  EXPECT_ERROR_HAS(parse_error("onecycle(steps=10, anneal=cos ep)", 10), "found 'e' at position 31");
  EXPECT_ERROR_HAS(parse_error("exp(gamma=0.5 ep)", 10), "not a number");
}

TEST(ScheduleErrors, NamesTheTokenAndPosition) {
  EXPECT_ERROR_HAS(parse_error("cosin(steps=3)"), "unknown schedule 'cosin' at position 1");
  EXPECT_ERROR_HAS(parse_error("warmup(steps=3) + cosin"), "unknown schedule 'cosin' at position 19");
  EXPECT_ERROR_HAS(parse_error("step(gama=0.5, every=2)"), "unknown key 'gama' at position 6 for schedule 'step'");
  EXPECT_ERROR_HAS(parse_error("step(gamma=0.5)"), "schedule 'step' at position 1 needs the key 'every'");
  // The keys given are listed, so that a misspelt required key shows.
  EXPECT_ERROR_HAS(parse_error("step(evry=10, gamma=0.5)"), "needs the key 'every' (given: evry at position 6, gamma at position 15)");
  // Whatever the spec holds, the message is one line: a newline is shown escaped, a character
  // outside ASCII whole.
  EXPECT_ERROR_HAS(parse_error("step(every=3\n"), "in 'step(every=3\\n'");
  EXPECT_ERROR_HAS(parse_error("step(every=3)\xc3\xa9"), "found '\xc3\xa9'");
  EXPECT_ERROR_HAS(parse_error("step(every=10) + cosine(steps=5)"),
                   "schedule 'step' at position 1 needs a 'steps' length");
  EXPECT_ERROR_HAS(parse_error("step(every=3"), "at position 13");
}

TEST(ScheduleErrors, RejectsInvalidValues) {
  struct Case {
    const char* spec;
    const char* part;
  };
  const Case cases[] = {
      {"step(every=0)", "every=0 at position 12: must be at least 1"},
      {"step(every=2, gamma=-0.5)", "gamma=-0.5 at position 21: must not be negative"},
      {"step(every=2.5)", "whole number"},
      {"constant(value=1e999)", "not a finite number"},
      {"constant(value=nan)", "not a"},
      {"cosine(steps=0x10)", "not a number of steps"},
      {"constant(value=0x1p3)", "not a decimal number"},
      {"multistep(gamma=0.5)", "needs the key 'at'"},
      {"exp(every=2)", "needs the key 'gamma'"},
      {"exp(gamma=0.9, every=0)", "every=0"},
      {"exp(gamma=0.9, staircase=yes)", "expected true or false"},
      {"poly(power=2)", "needs the key 'steps'"},
      {"poly(steps=0)", "steps=0 at position 12: must be at least 1"},
      {"invtime(rate=1, every=0)", "every=0"},
      {"cosine(min=0.1)", "needs the key 'steps'"},
      {"restarts(period=0)", "period=0"},
      {"restarts(period=5, mult=0.5)", "mult=0.5 at position 25: must be at least 1"},
      {"linear(steps=5)", "needs the key 'to'"},
      {"warmup(steps=0)", "must be at least 1"},
      {"onecycle(steps=100, pct=-0.1)", "pct=-0.1"},
      {"onecycle(steps=100, pct=1.5)", "pct=1.5"},
      {"onecycle(steps=10, pct=0.1)", "pct*steps = 1"},
      {"onecycle(steps=4, pct=0.25, three_phase=true)", "pct*steps = 1"},
      {"onecycle(steps=100, div=0)", "div=0"},
      {"onecycle(steps=100, anneal=cosine)", "expected one of cos, linear"},
      {"invsqrt(warmup=0)", "warmup=0"},
      {"range(start=0, end=1, steps=10)", "start=0"},
      {"range(start=1e-5, end=0, steps=10)", "end=0"},
      {"range(start=1e-5, end=1, steps=1)", "at least 2 steps"},
      {"range(start=1e-5, end=1, steps=10, mode=log)", "expected one of exp, linear"},
      {"constant(steps=0)", "must be at least 1"},
      {"constant(steps=0.001ep)", "must be at least 1"},
  };
  for (const Case& c : cases) {
    std::string msg = parse_error(c.spec, 100);
    EXPECT_NE(msg.find(c.part), std::string::npos) << c.spec << " gave: '" << msg << "'";
  }
}

TEST(ScheduleErrors, NonFiniteValuesAndTableLimits) {
  Schedule grow = Schedule::parse("exp(gamma=2)");
  EXPECT_DOUBLE_EQ(grow.multiplier(200, 1), std::ldexp(1.0, 200));
  EXPECT_ERROR_HAS(error_of([&] { grow.multiplier(5000, 1); }), "non-finite multiplier");
  EXPECT_ERROR_HAS(error_of([&] { grow.table(200, 1); }), "too large for a float table at step 128");
  Schedule c = Schedule::parse("constant");
  EXPECT_ERROR_HAS(error_of([&] { c.table(0, 1); }), "between 1 and");
  EXPECT_ERROR_HAS(error_of([&] { c.table(kMaxTableSteps + 1, 1); }), "between 1 and");
  EXPECT_ERROR_HAS(error_of([&] { c.multiplier(-1, 1); }), "must not be negative");
  EXPECT_EQ(c.table(1, 1).size(), 1u);
  EXPECT_EQ(c.spec(), "constant");
  Schedule fallback;  // default-constructed: constant 1
  EXPECT_EQ(fallback.multiplier(1000, 1), 1);
}

// A base rate must be a normal fp32 number: a subnormal such as 1e-40 is positive and finite once
// rounded, yet outside [1.2e-38, 3.4e38] and loses its precision in the kernels' products.
TEST(ScheduleErrors, BaseRateMustBeANormalFloat) {
  EXPECT_ERROR_HAS(error_of([] { check_base_rate(1e-40, "--lr"); }), "--lr 1e-40 is outside fp32's range");
  EXPECT_EQ(error_of([] { check_base_rate(1.2e-38, "--lr"); }), "");
}

// ---- the `lrlab schedule` command ----

struct CliResult {
  int status = -1;
  std::string out, err;
};

std::string temp_dir() {
  char tmpl[] = "/tmp/lrlab_schedule_test_XXXXXX";
  const char* dir = mkdtemp(tmpl);
  if (!dir) throw std::runtime_error("mkdtemp failed");
  return dir;
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// `args` is appended to the command line as is; quote specs with single quotes.
CliResult run_cli(const std::string& args) {
  static const std::string dir = temp_dir();
  std::string err_path = dir + "/stderr.txt";
  std::string cmd = std::string("'") + LRLAB_CLI_PATH + "' schedule " + args + " 2>'" + err_path + "'";
  CliResult r;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  int status = pclose(p);
  r.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.err = slurp(err_path);
  return r;
}

std::vector<std::string> lines(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

TEST(ScheduleCli, CsvHeaderRowsAndRoundTripDigits) {
  const std::string spec = "warmup(steps=3) + cosine(steps=2ep, min=0.01)";
  CliResult r = run_cli("'" + spec + "' --lr 0.3 --steps 40 --steps-per-epoch 10");
  ASSERT_EQ(r.status, 0) << r.err;
  std::vector<std::string> rows = lines(r.out);
  ASSERT_EQ(rows.size(), 41u);
  EXPECT_EQ(rows[0], "step,lr");
  // The rows show base * the float table entry the device reads.
  std::vector<float> table = Schedule::parse(spec, 10).table(40, 0.3);
  for (int64_t t = 0; t < 40; ++t) {
    const std::string& row = rows[t + 1];
    size_t comma = row.find(',');
    ASSERT_NE(comma, std::string::npos) << row;
    EXPECT_EQ(std::stoll(row.substr(0, comma)), t);
    float printed = std::strtof(row.c_str() + comma + 1, nullptr);
    EXPECT_EQ(printed, static_cast<float>(0.3 * table[t])) << row;
  }
}

TEST(ScheduleCli, DefaultsAreHundredStepsAtBaseOne) {
  CliResult r = run_cli("'step(every=50, gamma=0.5)'");
  ASSERT_EQ(r.status, 0) << r.err;
  std::vector<std::string> rows = lines(r.out);
  ASSERT_EQ(rows.size(), 101u);
  EXPECT_EQ(rows[1], "0,1");
  EXPECT_EQ(rows[100], "99,0.5");
  // The default 1 step per epoch makes 'ep' usable.
  CliResult ep = run_cli("'step(every=2ep)' --steps 3");
  ASSERT_EQ(ep.status, 0) << ep.err;
  EXPECT_EQ(lines(ep.out).back(), "2,0.100000001");
}

TEST(ScheduleCli, TableAndSvgFormats) {
  CliResult table = run_cli("'exp(gamma=0.5)' --format table --steps 4 --lr 2");
  ASSERT_EQ(table.status, 0) << table.err;
  std::vector<std::string> rows = lines(table.out);
  ASSERT_EQ(rows.size(), 5u);
  EXPECT_NE(rows[0].find("step"), std::string::npos);
  EXPECT_NE(rows[0].find("lr"), std::string::npos);
  EXPECT_NE(rows[4].find("0.25"), std::string::npos);  // 2 * 0.5^3
  for (const std::string& row : rows) EXPECT_EQ(row.size(), rows[0].size()) << "aligned columns";

  CliResult svg = run_cli("'onecycle(steps=50)' --format svg --steps 60");
  ASSERT_EQ(svg.status, 0) << svg.err;
  EXPECT_EQ(svg.out.rfind("<svg", 0), 0u);
  EXPECT_NE(svg.out.find("<polyline"), std::string::npos);
  EXPECT_NE(svg.out.find("</svg>"), std::string::npos);
}

TEST(ScheduleCli, OutWritesTheSameBytesToAFile) {
  std::string dir = temp_dir();
  std::string path = dir + "/lr.csv";
  CliResult to_file = run_cli("'cosine(steps=10)' --steps 12 --out '" + path + "'");
  ASSERT_EQ(to_file.status, 0) << to_file.err;
  EXPECT_TRUE(to_file.out.empty());
  EXPECT_EQ(slurp(path), run_cli("'cosine(steps=10)' --steps 12").out);
  std::remove(path.c_str());
  rmdir(dir.c_str());
}

// --steps 0: the header and no rows (the spec is still checked); a table and an svg need steps.
TEST(ScheduleCli, ZeroStepsPrintTheHeaderOnly) {
  CliResult r = run_cli("'cosine(steps=10)' --steps 0");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "step,lr\n");
  const std::string table = run_cli("'cosine(steps=10)' --steps 0 --format table").out;
  EXPECT_EQ(std::count(table.begin(), table.end(), '\n'), 1) << table;
  EXPECT_EQ(table.rfind("step", 0), 0u) << table;
  EXPECT_EQ(run_cli("'cosin(steps=10)' --steps 0").status, 2);
}

// A fraction of a step per epoch is refused by the option's own check, which names it.
TEST(ScheduleCli, FractionalStepsPerEpochNameTheOption) {
  CliResult r = run_cli("'constant' --steps-per-epoch 7.5");
  EXPECT_EQ(r.status, 2);
  EXPECT_EQ(r.err, "error: --steps-per-epoch: '7.5' is not a whole number\n");
  r = run_cli("'constant' --steps-per-epoch 0");
  EXPECT_EQ(r.status, 2);
  EXPECT_EQ(r.err, "error: --steps-per-epoch must be a whole number of steps, at least 1, got 0\n");
  // The help names the type it takes.
  EXPECT_NE(run_cli("--help").out.find("--steps-per-epoch INT"), std::string::npos);
}

// --lr is checked as train and sweep check it: a rate fp32 rounds to 0 (or to a subnormal) printed
// rows of 0. --steps one past int64_t is out of range, not the largest int64_t.
TEST(ScheduleCli, RateAndStepsOutsideTheirRangesAreRefused) {
  CliResult tiny = run_cli("'constant' --lr 1e-50 --steps 2");
  EXPECT_EQ(tiny.status, 2);
  EXPECT_EQ(tiny.out, "");
  EXPECT_EQ(tiny.err, error_of([] { check_base_rate(1e-50, "--lr"); }).insert(0, "error: ") + "\n");
  CliResult huge = run_cli("'constant' --steps 9223372036854775808");
  EXPECT_EQ(huge.status, 2);
  EXPECT_NE(huge.err.find("9223372036854775808 not in range 0 to " + std::to_string(kMaxTableSteps)),
            std::string::npos) << huge.err;
  // A value that is no whole number is told as such, not as one outside the range.
  for (const char* steps : {"abc", "1e3", "2.5"}) {
    CliResult bad = run_cli(std::string("'constant' --steps ") + steps);
    EXPECT_EQ(bad.status, 2);
    EXPECT_EQ(bad.err, std::string("error: --steps: '") + steps + "' is not a whole number\n");
  }
}

// gamma=-0 reads as 0: no -0 in the CSV or the table.
TEST(ScheduleCli, MinusZeroPrintsAsZeroEverywhere) {
  for (const char* format : {"csv", "table"}) {
    CliResult r = run_cli(std::string("'step(every=2,gamma=-0)' --steps 4 --format ") + format);
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(r.out.find("-0"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find(format == std::string("csv") ? "\n3,0\n" : " 0\n"), std::string::npos) << r.out;
  }
}

TEST(ScheduleCli, BadInputExitsTwoWithOneErrorLine) {
  const char* bad[] = {"'cosin(steps=3)'", "'step(every=10) + cosine(steps=5)'", "'step(every=3'",
                       "'constant' --steps -1", "'constant' --lr -1", "'constant' --format png",
                       "'constant' --steps 0 --format svg", "'constant' --steps-per-epoch 7.8125",
                       "'constant' --steps-per-epoch 0", "'range(start=1,end=2,steps=5)' --lr 0",
                       "'exp(gamma=2)' --steps 200", "'constant' --lr 1e300", "'constant' --out /nonexistent-dir/x.csv",
                       "'constant' --lr 1e-50", "'constant' --steps 9223372036854775808"};
  for (const char* args : bad) {
    CliResult r = run_cli(args);
    EXPECT_EQ(r.status, 2) << args;
    std::vector<std::string> err = lines(r.err);
    ASSERT_EQ(err.size(), 1u) << args << ": " << r.err;
    EXPECT_EQ(err[0].rfind("error:", 0), 0u) << args << ": " << err[0];
  }
  CliResult r = run_cli("'cosin(steps=3)'");
  EXPECT_NE(r.err.find("unknown schedule 'cosin' at position 1"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace lrlab
