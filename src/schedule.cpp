#include "lrlab/schedule.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "lrlab/error.hpp"
#include "lrlab/spec.hpp"

namespace lrlab {

void check_base_rate(double lr, const char* what) {
  LRLAB_REQUIRE(std::isfinite(lr) && lr > 0, what, " must be positive and finite (got ", lr, ")");
  const float f = static_cast<float>(lr);
  LRLAB_REQUIRE(std::isfinite(f) && f >= std::numeric_limits<float>::min(), what, " ", lr,
                " is outside fp32's range of normal numbers [1.2e-38, 3.4e38]");
}

namespace {

constexpr double kPi = 3.14159265358979323846;

using Multiplier = std::function<double(int64_t t, double base_lr)>;

struct Built {
  Multiplier m;
  bool own_hold = false;  // the formula itself says what happens past its steps
  bool uses_base_lr = false;
};

// `steps` is the segment's length as read by Schedule::parse, 0 when the spec gives none.
using Builder = Built (*)(spec::ArgReader& r, int64_t steps);

int64_t need_steps(spec::ArgReader& r, int64_t steps) {
  // The key is absent when steps == 0 (a given 0 was already refused), so this throws the usual
  // "needs the key 'steps'" message.
  return steps > 0 ? steps : r.required_steps("steps");
}

int64_t positive_steps(spec::ArgReader& r, const std::string& key, int64_t v) {
  if (v <= 0) r.fail_value(key, "must be at least 1");
  return v;
}

double positive(spec::ArgReader& r, const std::string& key, double v) {
  if (!(v > 0)) r.fail_value(key, "must be positive");
  return v;
}

// floor(t / every) and t / every for t >= 0, every >= 1.
double periods(int64_t t, int64_t every, bool staircase) {
  return staircase ? static_cast<double>(t / every) : static_cast<double>(t) / static_cast<double>(every);
}

double cosine_between(double lo, double hi, double frac) {
  return lo + (hi - lo) * (1 + std::cos(kPi * frac)) / 2;
}

Built constant(spec::ArgReader& r, int64_t) {
  double value = r.number("value", 1);
  return {[value](int64_t, double) { return value; }};
}

// PyTorch StepLR.
Built step(spec::ArgReader& r, int64_t) {
  int64_t every = positive_steps(r, "every", r.required_steps("every"));
  double gamma = r.number("gamma", 0.1);
  return {[=](int64_t t, double) { return std::pow(gamma, static_cast<double>(t / every)); }};
}

// PyTorch MultiStepLR: gamma to the number of milestones <= t. As there, the milestones may come in
// any order, and one given twice applies gamma twice.
Built multistep(spec::ArgReader& r, int64_t) {
  std::vector<int64_t> at = r.required_steps_list("at");
  std::sort(at.begin(), at.end());
  double gamma = r.number("gamma", 0.1);
  return {[=](int64_t t, double) {
    auto passed = std::upper_bound(at.begin(), at.end(), t) - at.begin();
    return std::pow(gamma, static_cast<double>(passed));
  }};
}

// PyTorch ExponentialLR (every=1); Keras ExponentialDecay.
Built exponential(spec::ArgReader& r, int64_t) {
  double gamma = r.required_number("gamma");
  int64_t every = positive_steps(r, "every", r.steps("every", 1));
  bool staircase = r.boolean("staircase", false);
  return {[=](int64_t t, double) { return std::pow(gamma, periods(t, every, staircase)); }};
}

// Keras PolynomialDecay (end as a fraction of the base); PyTorch PolynomialLR when end=0.
Built poly(spec::ArgReader& r, int64_t steps) {
  int64_t n = need_steps(r, steps);
  double power = r.number("power", 1);
  double end = r.number("end", 0);
  bool cycle = r.boolean("cycle", false);
  return {[=](int64_t t, double) {
            double frac;
            if (cycle) {
              int64_t cycles = std::max<int64_t>(1, t / n + (t % n != 0));
              frac = static_cast<double>(t) / (static_cast<double>(n) * static_cast<double>(cycles));
            } else {
              frac = static_cast<double>(std::min(t, n)) / static_cast<double>(n);
            }
            return (1 - end) * std::pow(1 - frac, power) + end;
          },
          true};
}

// Keras InverseTimeDecay.
Built invtime(spec::ArgReader& r, int64_t) {
  double rate = r.required_number("rate");
  int64_t every = positive_steps(r, "every", r.steps("every", 1));
  bool staircase = r.boolean("staircase", false);
  return {[=](int64_t t, double) { return 1 / (1 + rate * periods(t, every, staircase)); }};
}

// PyTorch CosineAnnealingLR up to steps, then held at min.
Built cosine(spec::ArgReader& r, int64_t steps) {
  int64_t n = need_steps(r, steps);
  double lo = r.number("min", 0);
  return {[=](int64_t t, double) {
            return cosine_between(lo, 1, static_cast<double>(std::min(t, n)) / static_cast<double>(n));
          },
          true};
}

// PyTorch CosineAnnealingWarmRestarts (SGDR): period i lasts period * mult^i steps.
Built restarts(spec::ArgReader& r, int64_t) {
  double period = static_cast<double>(positive_steps(r, "period", r.required_steps("period")));
  double mult = r.number("mult", 1);
  if (!(mult >= 1)) r.fail_value("mult", "must be at least 1");
  double lo = r.number("min", 0);
  return {[=](int64_t t, double) {
    double x = static_cast<double>(t);
    if (mult == 1) return cosine_between(lo, 1, std::fmod(x, period) / period);
    // Closed form as in PyTorch (restart n begins at period*(mult^n-1)/(mult-1)), then nudged
    // by one restart either way in case rounding put t on the wrong side of a boundary. A boundary
    // that is a whole step computes a hair off it with a mult such as 1.1 (63.00000000000001 for
    // period 30): within a billionth of the period's length (less than a step for any period
    // shorter than 10^9 steps), t is at the boundary, where the new period begins.
    auto begin = [&](double n) { return period * (std::pow(mult, n) - 1) / (mult - 1); };
    double n = std::floor(std::log(x / period * (mult - 1) + 1) / std::log(mult));
    const double tol = 1e-9 * period * std::pow(mult, n);
    if (x < begin(n) - tol) n -= 1;
    if (x >= begin(n + 1) - tol) n += 1;
    const double into = std::max(0.0, x - begin(n));
    return cosine_between(lo, 1, into / (period * std::pow(mult, n)));
  }};
}

// PyTorch LinearLR with start_factor=from, end_factor=to, total_iters=steps.
Built linear(spec::ArgReader& r, int64_t steps) {
  double from = r.number("from", 1);
  double to = r.required_number("to");
  int64_t n = need_steps(r, steps);
  return {[=](int64_t t, double) {
            return from + (to - from) * static_cast<double>(std::min(t, n)) / static_cast<double>(n);
          },
          true};
}

Built warmup(spec::ArgReader& r, int64_t steps) {
  int64_t n = need_steps(r, steps);
  double from = r.number("from", 0);
  return {[=](int64_t t, double) {
            return from + (1 - from) * static_cast<double>(std::min(t, n)) / static_cast<double>(n);
          },
          true};
}

// PyTorch OneCycleLR with max_lr = 1 (the base learning rate), including three_phase and
// anneal_strategy; its phase end steps are pct*steps-1 (and 2*pct*steps-2), then steps-1.
Built onecycle(spec::ArgReader& r, int64_t steps) {
  int64_t n = need_steps(r, steps);
  double pct = r.number("pct", 0.3);
  if (!(pct >= 0 && pct <= 1)) r.fail_value("pct", "must be between 0 and 1");
  double div = positive(r, "div", r.number("div", 25));
  double final_div = positive(r, "final_div", r.number("final_div", 1e4));
  bool cos = r.word("anneal", "cos", {"cos", "linear"}) == "cos";
  bool three_phase = r.boolean("three_phase", false);

  struct Phase {
    double end_step, from, to;
  };
  double total = static_cast<double>(n);
  double initial = 1 / div, lowest = initial / final_div;
  std::vector<Phase> phases;
  phases.push_back({pct * total - 1, initial, 1});
  if (three_phase) {
    phases.push_back({2 * pct * total - 2, 1, initial});
    phases.push_back({total - 1, initial, lowest});
  } else {
    phases.push_back({total - 1, 1, lowest});
  }
  // As in PyTorch, a step falls in the first phase whose end it has not passed (the last takes the
  // rest), and a phase that ends before it begins is never chosen: with pct*steps < 1 the warm-up is
  // skipped, with 2*pct*steps - 2 beyond steps - 1 the third phase. A step can land only in a phase
  // of positive length, but for one case: pct*steps = 1 ends the first phase at step 0, where it
  // begins, and PyTorch divides by zero there.
  if (phases[0].end_step == 0)
    r.fail_value("pct", "pct*steps = 1 gives onecycle's first phase no length (0/0 at step 0, as in PyTorch)");
  return {[=](int64_t t, double) {
            double x = static_cast<double>(std::min(t, n - 1));
            double start = 0;
            for (size_t i = 0; i < phases.size(); ++i) {
              const Phase& p = phases[i];
              if (x <= p.end_step || i + 1 == phases.size()) {
                double frac = (x - start) / (p.end_step - start);
                return cos ? cosine_between(p.to, p.from, frac) : p.from + (p.to - p.from) * frac;
              }
              start = p.end_step;
            }
            return lowest;  // not reached: the last phase always answers
          },
          true};
}

// Transformer ("Noam") schedule normalised to peak 1 at t+1 = warmup.
Built invsqrt(spec::ArgReader& r, int64_t) {
  double w = static_cast<double>(positive_steps(r, "warmup", r.required_steps("warmup")));
  return {[=](int64_t t, double) {
    double s = static_cast<double>(t) + 1;
    return std::min(s / w, std::sqrt(w / s));
  }};
}

// LR range test: an absolute learning rate from start to end over steps, divided by the base.
Built range(spec::ArgReader& r, int64_t steps) {
  double start = positive(r, "start", r.required_number("start"));
  double end = positive(r, "end", r.required_number("end"));
  int64_t n = need_steps(r, steps);
  if (n < 2) r.fail_value("steps", "a range needs at least 2 steps");
  bool geometric = r.word("mode", "exp", {"exp", "linear"}) == "exp";
  return {[=](int64_t t, double base_lr) {
            double frac = static_cast<double>(std::min(t, n - 1)) / static_cast<double>(n - 1);
            double lr = geometric ? start * std::pow(end / start, frac) : start + (end - start) * frac;
            return lr / base_lr;
          },
          true, true};
}

const std::vector<std::pair<std::string, Builder>>& builders() {
  static const std::vector<std::pair<std::string, Builder>> all = {
      {"constant", constant}, {"step", step},         {"multistep", multistep}, {"exp", exponential},
      {"poly", poly},         {"invtime", invtime},   {"cosine", cosine},       {"restarts", restarts},
      {"linear", linear},     {"warmup", warmup},     {"onecycle", onecycle},   {"invsqrt", invsqrt},
      {"range", range}};
  return all;
}

Builder find_builder(const spec::Segment& seg) {
  std::string names;
  for (const auto& [name, builder] : builders()) {
    if (name == seg.name) return builder;
    names += (names.empty() ? "" : ", ") + name;
  }
  LRLAB_FAIL("unknown schedule '", seg.name, "' at position ", seg.pos, " (known: ", names, ")");
}

void require_base_lr(double base_lr) {
  LRLAB_REQUIRE(std::isfinite(base_lr) && base_lr > 0,
                "a 'range' schedule needs a positive base learning rate, got ", base_lr);
}

}  // namespace

Schedule::Schedule() : Schedule(parse("constant")) {}

Schedule Schedule::parse(const std::string& text, double steps_per_epoch) {
  LRLAB_REQUIRE(std::isfinite(steps_per_epoch) && steps_per_epoch >= 0 && steps_per_epoch == std::floor(steps_per_epoch),
                "steps per epoch must be a whole number (0: not known), got ", steps_per_epoch);
  Schedule s{Empty{}};
  s.spec_ = text;
  std::vector<spec::Segment> parsed = spec::parse(text, "schedule");
  int64_t start = 0;
  for (size_t i = 0; i < parsed.size(); ++i) {
    const spec::Segment& seg = parsed[i];
    Builder builder = find_builder(seg);
    spec::ArgReader r(seg, "schedule", steps_per_epoch);
    int64_t length = r.has("steps") ? positive_steps(r, "steps", r.steps("steps", 0)) : 0;
    Built built = builder(r, length);
    r.finish();
    if (length == 0 && i + 1 < parsed.size())
      LRLAB_FAIL("schedule '", seg.name, "' at position ", seg.pos,
                 " needs a 'steps' length because another segment follows it");
    Segment out;
    out.name = seg.name;
    out.pos = seg.pos;
    out.start = start;
    out.length = length;
    out.hold_from = (!built.own_hold && length > 0) ? length - 1 : -1;
    out.m = std::move(built.m);
    s.needs_base_lr_ = s.needs_base_lr_ || built.uses_base_lr;
    s.segments_.push_back(std::move(out));
    LRLAB_REQUIRE(start <= std::numeric_limits<int64_t>::max() - length,
                  "schedule '", seg.name, "' at position ", seg.pos, ": the segments are too long in total");
    start += length;
  }
  return s;
}

const Schedule::Segment& Schedule::segment_at(int64_t t) const {
  size_t i = segments_.size() - 1;
  while (i > 0 && segments_[i].start > t) --i;
  return segments_[i];
}

double Schedule::checked(const Segment& seg, int64_t local, double base_lr, int64_t t) const {
  if (seg.hold_from >= 0 && local > seg.hold_from) local = seg.hold_from;
  double m = seg.m(local, base_lr);
  LRLAB_REQUIRE(std::isfinite(m), "schedule '", seg.name, "' at position ", seg.pos,
                " gives a non-finite multiplier (", m, ") at step ", t);
  return m;
}

double Schedule::multiplier(int64_t t, double base_lr) const {
  LRLAB_REQUIRE(t >= 0, "a schedule step must not be negative, got ", t);
  if (needs_base_lr_) require_base_lr(base_lr);
  const Segment& seg = segment_at(t);
  return checked(seg, t - seg.start, base_lr, t);
}

std::vector<float> Schedule::table(int64_t steps, double base_lr) const {
  LRLAB_REQUIRE(steps >= 1 && steps <= kMaxTableSteps, "a schedule table needs between 1 and ",
                kMaxTableSteps, " steps, got ", steps);
  if (needs_base_lr_) require_base_lr(base_lr);
  std::vector<float> out(static_cast<size_t>(steps));
  for (const Segment& seg : segments_) {
    if (seg.start >= steps) break;
    int64_t end = (&seg == &segments_.back()) ? steps : std::min(steps, seg.start + seg.length);
    for (int64_t t = seg.start; t < end; ++t) {
      float v = static_cast<float>(checked(seg, t - seg.start, base_lr, t));
      LRLAB_REQUIRE(std::isfinite(v), "schedule '", seg.name, "' at position ", seg.pos,
                    " gives a multiplier too large for a float table at step ", t);
      out[static_cast<size_t>(t)] = v;
    }
  }
  return out;
}

}  // namespace lrlab
