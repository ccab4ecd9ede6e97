#include "lrlab/plateau.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

#include "lrlab/error.hpp"
#include "lrlab/spec.hpp"

namespace lrlab {
namespace {

void validate(const PlateauOptions& o) {
  LRLAB_REQUIRE(o.factor > 0 && o.factor < 1, "plateau: factor must be between 0 and 1 (exclusive), got ",
                o.factor);
  LRLAB_REQUIRE(o.patience >= 0, "plateau: patience must not be negative, got ", o.patience);
  LRLAB_REQUIRE(o.cooldown >= 0, "plateau: cooldown must not be negative, got ", o.cooldown);
  LRLAB_REQUIRE(std::isfinite(o.threshold) && o.threshold >= 0,
                "plateau: threshold must be a finite number >= 0, got ", o.threshold);
  LRLAB_REQUIRE(o.min_scale >= 0 && o.min_scale <= 1, "plateau: min_scale must be between 0 and 1, got ",
                o.min_scale);
  LRLAB_REQUIRE(std::isfinite(o.eps) && o.eps >= 0, "plateau: eps must be a finite number >= 0, got ", o.eps);
}

}  // namespace

PlateauOptions parse_plateau(const std::string& text) {
  std::vector<spec::Segment> segs = spec::parse(text, "reduce-on-plateau");
  const spec::Segment& seg = segs.front();
  LRLAB_REQUIRE(seg.name == "plateau", "unknown rule '", seg.name, "' at position ", seg.pos,
                " (expected 'plateau')");
  LRLAB_REQUIRE(segs.size() == 1, "a plateau rule is a single segment; unexpected '", segs[1].name,
                "' at position ", segs[1].pos);
  spec::ArgReader r(seg, "rule");
  PlateauOptions o;
  o.maximize = r.word("mode", "min", {"min", "max"}) == "max";
  o.factor = r.number("factor", o.factor);
  if (!(o.factor > 0 && o.factor < 1)) r.fail_value("factor", "must be between 0 and 1 (exclusive)");
  o.patience = r.steps("patience", o.patience);
  o.threshold = r.number("threshold", o.threshold);
  o.relative = r.word("threshold_mode", "rel", {"rel", "abs"}) == "rel";
  o.cooldown = r.steps("cooldown", o.cooldown);
  o.min_scale = r.number("min_scale", o.min_scale);
  if (o.min_scale > 1) r.fail_value("min_scale", "must not exceed 1");
  o.eps = r.number("eps", o.eps);
  r.finish();
  validate(o);
  return o;
}

ReduceOnPlateau::ReduceOnPlateau(PlateauOptions options) : options_(options) {
  validate(options_);
  state_.best = options_.maximize ? -std::numeric_limits<double>::infinity()
                                  : std::numeric_limits<double>::infinity();
}

bool ReduceOnPlateau::improves(double metric) const {
  const PlateauOptions& o = options_;
  double best = state_.best;
  // Written as PyTorch's is_better; every comparison with NaN is false, so NaN never improves.
  if (!o.maximize) return o.relative ? metric < best * (1 - o.threshold) : metric < best - o.threshold;
  return o.relative ? metric > best * (1 + o.threshold) : metric > best + o.threshold;
}

bool ReduceOnPlateau::step(double metric, double rate) {
  LRLAB_REQUIRE(std::isfinite(rate) && rate >= 0, "reduce-on-plateau: the rate must be finite and non-negative (got ",
                rate, ")");
  PlateauState& s = state_;
  ++s.evaluations;
  if (improves(metric)) {
    s.best = metric;
    s.bad_evaluations = 0;
  } else {
    ++s.bad_evaluations;
  }
  if (s.cooldown_left > 0) {
    --s.cooldown_left;
    s.bad_evaluations = 0;
  }
  if (s.bad_evaluations <= options_.patience) return false;
  s.cooldown_left = options_.cooldown;
  s.bad_evaluations = 0;
  double lowered = std::max(s.scale * options_.factor, options_.min_scale);
  if ((s.scale - lowered) * rate <= options_.eps) return false;
  s.scale = lowered;
  return true;
}

void ReduceOnPlateau::restore(const PlateauState& state) {
  LRLAB_REQUIRE(state.scale >= 0 && state.scale <= 1, "plateau state: scale must be between 0 and 1, got ",
                state.scale);
  LRLAB_REQUIRE(!std::isnan(state.best), "plateau state: best metric is NaN");
  LRLAB_REQUIRE(state.bad_evaluations >= 0 && state.cooldown_left >= 0 && state.evaluations >= 0,
                "plateau state: negative counters");
  state_ = state;
}

}  // namespace lrlab
