// Learning-rate schedules: a spec such as "warmup(steps=500) + cosine(steps=20ep, min=0.01)"
// compiled into a multiplier m(t) >= 0 on the base learning rate, and into the float table the
// fused update kernels read (see docs/SCHEDULES.md for every name, key and formula).
//
// Segments joined by '+' run one after another, each starting at its own local step 0. Past the
// end of the last segment:
//   - poly, cosine, linear, warmup, onecycle and range hold the value their formula ends on
//     (poly's end unless cycle=true, cosine's min, linear's to, 1 after warmup, onecycle's final
//     value, range's end);
//   - any other segment given a `steps` length holds its value at its last step (steps-1);
//     without a length it follows its formula for ever.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace lrlab {

// Larger tables are refused before allocating (512 MiB of floats).
constexpr int64_t kMaxTableSteps = int64_t(1) << 27;

// Throws lrlab::Error, naming `what` ("--lr"), unless `lr` is a base rate the fp32 kernels can hold:
// positive, finite, and neither 0 nor inf once rounded to fp32 (1e-300 and 1e39 are not).
void check_base_rate(double lr, const char* what);

class Schedule {
 public:
  // The constant schedule, m(t) = 1.
  Schedule();
  // Copied, also where a move is asked for (no move operations): a moved-from value stays whole
  // rather than half-empty and crashing later, and its parts are small.
  Schedule(const Schedule&) = default;
  Schedule& operator=(const Schedule&) = default;

  // Parses and validates; a whole steps_per_epoch > 0 enables 'ep' values (x ep is x * steps_per_epoch
  // rounded to the nearest whole step). Throws lrlab::Error naming the offending token and its
  // 1-based position.
  static Schedule parse(const std::string& spec, double steps_per_epoch = 0);

  // m(t) for the global step t >= 0, in double. base_lr (> 0) only matters for 'range', whose
  // values are absolute learning rates. Throws lrlab::Error if m(t) is not finite (e.g. exp with
  // gamma > 1 far enough out).
  double multiplier(int64_t t, double base_lr) const;

  // table[t] = m(t) for t < steps, steps in [1, kMaxTableSteps].
  std::vector<float> table(int64_t steps, double base_lr) const;

  const std::string& spec() const { return spec_; }
  bool needs_base_lr() const { return needs_base_lr_; }

 private:
  struct Segment {
    std::string name;
    size_t pos = 0;        // 1-based column of the name in the spec
    int64_t start = 0;     // global step at which the segment begins
    int64_t length = 0;    // 0 when it has none (only the last segment may lack one)
    int64_t hold_from = -1;  // local step whose value holds from then on; -1: none
    std::function<double(int64_t t, double base_lr)> m;  // local multiplier
  };

  struct Empty {};
  explicit Schedule(Empty) {}

  const Segment& segment_at(int64_t t) const;
  double checked(const Segment& seg, int64_t local, double base_lr, int64_t t) const;

  std::string spec_;
  std::vector<Segment> segments_;
  bool needs_base_lr_ = false;
};

}  // namespace lrlab
