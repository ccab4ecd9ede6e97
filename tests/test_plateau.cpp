// Reduce-on-plateau with PyTorch ReduceLROnPlateau semantics, step by step.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "lrlab/error.hpp"
#include "test_util.hpp"
#include "lrlab/plateau.hpp"

namespace lrlab {
namespace {

using lrlab::testing::error_of;

// The evaluations (1-based) at which the rule cut the scale.
std::vector<int> cuts(ReduceOnPlateau& rule, const std::vector<double>& metrics) {
  std::vector<int> out;
  for (size_t i = 0; i < metrics.size(); ++i)
    if (rule.step(metrics[i], 1.0)) out.push_back(static_cast<int>(i) + 1);
  return out;
}

PlateauOptions with(int64_t patience, double factor = 0.5) {
  PlateauOptions o;
  o.patience = patience;
  o.factor = factor;
  return o;
}

TEST(PlateauRule, CutsAfterPatiencePlusOneBadEvaluations) {
  ReduceOnPlateau rule(with(2));
  // First value sets the best; then 3 evaluations without improvement cut, and counting restarts.
  EXPECT_EQ(cuts(rule, {1, 1, 1, 1, 1, 1, 1}), (std::vector<int>{4, 7}));
  EXPECT_DOUBLE_EQ(rule.scale(), 0.25);
}

TEST(PlateauRule, ImprovementResetsTheCount) {
  ReduceOnPlateau rule(with(2));
  EXPECT_TRUE(cuts(rule, {1, 1, 1, 0.5, 0.6, 0.6, 0.4, 0.4, 0.4}).empty());
  EXPECT_TRUE(rule.step(0.4, 1.0));
  EXPECT_DOUBLE_EQ(rule.scale(), 0.5);
}

TEST(PlateauRule, DefaultsMatchPyTorch) {
  PlateauOptions o;
  EXPECT_FALSE(o.maximize);
  EXPECT_DOUBLE_EQ(o.factor, 0.1);
  EXPECT_EQ(o.patience, 10);
  EXPECT_DOUBLE_EQ(o.threshold, 1e-4);
  EXPECT_TRUE(o.relative);
  EXPECT_EQ(o.cooldown, 0);
  EXPECT_DOUBLE_EQ(o.min_scale, 0);
  EXPECT_DOUBLE_EQ(o.eps, 1e-8);
  ReduceOnPlateau rule(o);
  std::vector<double> flat(12, 3.0);
  EXPECT_EQ(cuts(rule, flat), (std::vector<int>{12}));
  EXPECT_DOUBLE_EQ(rule.scale(), 0.1);
}

TEST(PlateauRule, CooldownSuspendsCounting) {
  PlateauOptions o = with(0, 0.1);
  o.cooldown = 2;
  ReduceOnPlateau rule(o);
  // Cut at 2; evaluations 3 and 4 are cooldown; 5 is bad again and cuts.
  EXPECT_EQ(cuts(rule, {1, 1, 1, 1, 1, 1, 1, 1}), (std::vector<int>{2, 5, 8}));
  EXPECT_NEAR(rule.scale(), 1e-3, 1e-15);
}

TEST(PlateauRule, RelativeAndAbsoluteThresholds) {
  PlateauOptions rel = with(0);
  rel.threshold = 0.5;
  ReduceOnPlateau r(rel);
  r.step(10, 1.0);
  EXPECT_TRUE(r.step(9, 1.0));   // rel: needs < 10 * (1 - 0.5) = 5
  EXPECT_FALSE(r.step(4, 1.0));  // 4 < 5 improves
  EXPECT_DOUBLE_EQ(r.state().best, 4);

  PlateauOptions abs = rel;
  abs.relative = false;
  ReduceOnPlateau a(abs);
  a.step(10, 1.0);
  EXPECT_FALSE(a.step(9, 1.0));    // abs: needs < 10 - 0.5
  EXPECT_TRUE(a.step(8.75, 1.0));  // 8.75 is not below 9 - 0.5
  EXPECT_DOUBLE_EQ(a.state().best, 9);
}

TEST(PlateauRule, MinScaleFloorsAndStopsCutting) {
  PlateauOptions o = with(0, 0.1);
  o.min_scale = 0.05;
  ReduceOnPlateau rule(o);
  EXPECT_EQ(cuts(rule, {1, 1, 1, 1, 1}), (std::vector<int>{2, 3}));
  EXPECT_DOUBLE_EQ(rule.scale(), 0.05);
}

// PyTorch skips a cut that would lower the learning rate by eps (1e-8) or less: the rate, not the
// scale. From lr 1e-3 that stops at lr 1e-8 (scale 1e-5); from lr 1 at scale 1e-8.
TEST(PlateauRule, EpsComparesRatesNotScales) {
  auto cuts_at_rate = [](double rate) {
    ReduceOnPlateau rule(with(0, 0.1));
    int n = 0;
    for (int i = 0; i < 20; ++i) n += rule.step(1.0, rate);
    return std::make_pair(n, rule.scale());
  };
  auto [small_cuts, small_scale] = cuts_at_rate(1e-3);
  EXPECT_EQ(small_cuts, 5);
  EXPECT_NEAR(small_scale, 1e-5, 1e-18);
  auto [unit_cuts, unit_scale] = cuts_at_rate(1.0);
  EXPECT_EQ(unit_cuts, 8);
  EXPECT_NEAR(unit_scale, 1e-8, 1e-21);
}

TEST(PlateauRule, ModeMaxWantsLargerMetrics) {
  PlateauOptions o = with(1);
  o.maximize = true;
  ReduceOnPlateau rule(o);
  EXPECT_TRUE(cuts(rule, {0.1, 0.2, 0.3, 0.4, 0.4}).empty());
  EXPECT_TRUE(rule.step(0.35, 1.0));
  EXPECT_DOUBLE_EQ(rule.scale(), 0.5);
}

TEST(PlateauRule, NanNeverImproves) {
  ReduceOnPlateau rule(with(1));
  const double nan = std::numeric_limits<double>::quiet_NaN();
  EXPECT_EQ(cuts(rule, {1, nan, nan, nan, 0.5}), (std::vector<int>{3}));
  EXPECT_DOUBLE_EQ(rule.state().best, 0.5);
  ReduceOnPlateau first_nan(with(0));
  EXPECT_TRUE(first_nan.step(nan, 1.0));
}

TEST(PlateauRule, StateRestoresExactly) {
  PlateauOptions o = with(2);
  o.cooldown = 1;
  ReduceOnPlateau a(o);
  cuts(a, {5, 4, 4, 4, 4, 4});
  ReduceOnPlateau b(o);
  b.restore(a.state());
  const std::vector<double> rest = {4, 4, 3, 3, 3, 3, 3, 3};
  EXPECT_EQ(cuts(a, rest), cuts(b, rest));
  EXPECT_DOUBLE_EQ(a.scale(), b.scale());
  EXPECT_EQ(a.state().evaluations, b.state().evaluations);

  PlateauState bad = a.state();
  bad.scale = 2;
  EXPECT_NE(error_of([&] { b.restore(bad); }).find("scale"), std::string::npos);
  bad = a.state();
  bad.cooldown_left = -1;
  EXPECT_NE(error_of([&] { b.restore(bad); }).find("negative"), std::string::npos);
}

// mode=max with threshold_mode=abs (PyTorch is_better: a > best + threshold): a rise smaller than the
// threshold is no improvement.
TEST(PlateauRule, ModeMaxAbsoluteThreshold) {
  PlateauOptions o = with(0);
  o.maximize = true;
  o.relative = false;
  o.threshold = 0.5;
  ReduceOnPlateau rule(o);
  EXPECT_FALSE(rule.step(1.0, 1.0));
  EXPECT_TRUE(rule.step(1.25, 1.0));   // needs > 1.5
  EXPECT_DOUBLE_EQ(rule.state().best, 1.0);
  EXPECT_FALSE(rule.step(1.75, 1.0));  // 1.75 > 1.5 improves
  EXPECT_DOUBLE_EQ(rule.state().best, 1.75);
}

// PyTorch changes the rate only if old_lr - new_lr > eps: with eps = 0 a cut at min_scale, which
// lowers nothing, is no cut, and step() must not report one.
TEST(PlateauRule, ACutThatLowersNothingIsNotReported) {
  PlateauOptions o = with(0, 0.5);
  o.min_scale = 0.5;
  o.eps = 0;
  ReduceOnPlateau rule(o);
  EXPECT_EQ(cuts(rule, {1, 1, 1, 1}), (std::vector<int>{2}));
  EXPECT_DOUBLE_EQ(rule.scale(), 0.5);
}

TEST(PlateauRule, RestoreRefusesANaNBest) {
  ReduceOnPlateau rule(with(2));
  PlateauState bad = rule.state();
  bad.best = std::numeric_limits<double>::quiet_NaN();
  EXPECT_NE(error_of([&] { rule.restore(bad); }).find("best metric is NaN"), std::string::npos);
  EXPECT_TRUE(std::isinf(rule.state().best));  // unchanged
}

TEST(PlateauSpec, ParsesKeys) {
  PlateauOptions o = parse_plateau(
      "plateau(mode=max, factor=0.5, patience=2, threshold=0.01, threshold_mode=abs, cooldown=3, "
      "min_scale=0.01, eps=0)");
  EXPECT_TRUE(o.maximize);
  EXPECT_DOUBLE_EQ(o.factor, 0.5);
  EXPECT_EQ(o.patience, 2);
  EXPECT_DOUBLE_EQ(o.threshold, 0.01);
  EXPECT_FALSE(o.relative);
  EXPECT_EQ(o.cooldown, 3);
  EXPECT_DOUBLE_EQ(o.min_scale, 0.01);
  EXPECT_DOUBLE_EQ(o.eps, 0);
  PlateauOptions d = parse_plateau("plateau");
  EXPECT_EQ(d.patience, 10);
  EXPECT_DOUBLE_EQ(d.factor, 0.1);
}

TEST(PlateauSpec, RejectsBadSpecs) {
  auto err = [](const std::string& s) { return error_of([&] { parse_plateau(s); }); };
  EXPECT_NE(err("plateu").find("unknown rule 'plateu' at position 1"), std::string::npos);
  EXPECT_NE(err("plateau(factr=0.5)").find("unknown key 'factr' at position 9"), std::string::npos);
  EXPECT_NE(err("plateau(factor=1)").find("factor=1 at position 16"), std::string::npos);
  EXPECT_NE(err("plateau(factor=0)").find("factor=0"), std::string::npos);
  EXPECT_NE(err("plateau(mode=mid)").find("expected one of min, max"), std::string::npos);
  EXPECT_NE(err("plateau(patience=1.5)").find("patience=1.5"), std::string::npos);
  EXPECT_NE(err("plateau(patience=-1)").find("must not be negative"), std::string::npos);
  EXPECT_NE(err("plateau(min_scale=2)").find("min_scale=2"), std::string::npos);
  EXPECT_NE(err("plateau + plateau").find("at position 11"), std::string::npos);
  EXPECT_NE(err("plateau(factor=0.5").find("expected ')'"), std::string::npos);
  PlateauOptions o;
  o.factor = 1.5;
  EXPECT_NE(error_of([&] { ReduceOnPlateau r(o); }).find("factor"), std::string::npos);
}

}  // namespace
}  // namespace lrlab
