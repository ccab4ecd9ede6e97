// Reduce-on-plateau: lowers a scale factor on the learning rate when a monitored metric stops
// improving. PyTorch ReduceLROnPlateau semantics: the scale is cut after patience+1 evaluations
// without improvement (Keras cuts after patience), then `cooldown` evaluations pass before
// counting again. Parsed from a spec such as "plateau(factor=0.5, patience=2)".
#pragma once

#include <cstdint>
#include <string>

namespace lrlab {

struct PlateauOptions {
  bool maximize = false;      // mode=min|max
  double factor = 0.1;        // new scale = max(scale * factor, min_scale), 0 < factor < 1
  int64_t patience = 10;
  double threshold = 1e-4;
  bool relative = true;       // threshold_mode=rel|abs
  int64_t cooldown = 0;
  double min_scale = 0;
  double eps = 1e-8;          // cuts that lower the rate by no more than this are skipped, as in PyTorch
};

// Keys: mode, factor, patience, threshold, threshold_mode, cooldown, min_scale, eps. Throws
// lrlab::Error naming the offending token and its position.
PlateauOptions parse_plateau(const std::string& spec);

// Everything a checkpoint needs to resume the rule exactly where it was.
struct PlateauState {
  double scale = 1;
  double best = 0;            // best metric so far; +inf (min) or -inf (max) before any
  int64_t bad_evaluations = 0;
  int64_t cooldown_left = 0;
  int64_t evaluations = 0;
};

class ReduceOnPlateau {
 public:
  explicit ReduceOnPlateau(PlateauOptions options);

  // Records one evaluation of the metric; returns true when it cut the scale. NaN never counts as
  // an improvement. `rate` is the learning rate the scale multiplies (base rate, schedule, other
  // scales): PyTorch skips a cut that lowers the rate itself by eps or less, not the scale.
  bool step(double metric, double rate);
  double scale() const { return state_.scale; }
  const PlateauOptions& options() const { return options_; }

  PlateauState state() const { return state_; }
  // Throws lrlab::Error if the state could not have come from this rule (e.g. scale outside [0, 1]).
  void restore(const PlateauState& state);

 private:
  bool improves(double metric) const;

  PlateauOptions options_;
  PlateauState state_;
};

}  // namespace lrlab
