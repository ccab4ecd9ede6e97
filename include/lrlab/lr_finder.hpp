// The learning-rate range test ("LR finder", as in fastai's lr_find and PyTorch Lightning's
// Tuner.lr_find): train for a few minibatches while the rate grows from tiny to huge, record the
// smoothed loss against the rate, and suggest a rate from the curve. The model and optimizer are
// put back afterwards, so training starts from the weights the test started from.
//
// Three suggestions, each read off the smoothed curve with fastai's trimming (the first
// steps/10 and the last 5 points are left out):
//   - valley (recommended, fastai's default): the longest descending stretch of the curve, taken
//     2/3 of the way down;
//   - steepest (Lightning's suggestion): the most negative slope of loss against log10(lr);
//   - min_div10: the rate at the lowest loss, divided by 10.
// A curve that never descends has no valley; then min_div10 is the recommended one.
//
// A curve that leaves fewer than 2 points after the trimming (one that diverged within a few steps)
// gives no suggestion, as Lightning gives None below 2 points (a slope needs two); fastai has no
// check and reads whatever the slice holds, or fails on an empty one. Nor is a rate below the range
// tested recommended: when the valley is missing and minimum/10 lies below the first rate, there is
// no recommendation.
//
// Where lrlab differs from the two (each on purpose):
//   - the ramp reaches both ends: step i of n is start*(end/start)^(i/(n-1)) (fastai's i/n never
//     reaches end; Lightning's skips i = 1);
//   - smoothing and the stop rule are fastai's (Lightning's bias correction runs one step ahead);
//   - steepest is read in fastai's window, [n/10, len-5), not Lightning's [10, len-1);
//   - the optimizer starts fresh (moments and step reset; fastai keeps an existing one's state);
//   - a valley index before the window's start (fastai's idx = -1) is the window's first point,
//     not the largest rate as Python's lrs[-1] gives;
//   - too few points, or only a minimum/10 below the range, give no suggestion (see above).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "lrlab/train.hpp"
#include "lrlab/train_engine.hpp"

namespace lrlab {

// fastai's trimming: the suggestions leave out the first planned_steps / kFinderSkipStartDivisor
// points and the last kFinderSkipEnd, and need kFinderMinPoints of those left.
constexpr int64_t kFinderSkipStartDivisor = 10;
constexpr int64_t kFinderSkipEnd = 5;
constexpr int64_t kFinderMinPoints = 2;
// The fewest steps a test may plan: fewer leave too few points even when every step is run (7).
constexpr int64_t kMinFinderSteps = [] {
  int64_t n = 1;
  while (n - n / kFinderSkipStartDivisor - kFinderSkipEnd < kFinderMinPoints) ++n;
  return n;
}();

struct FinderOptions {
  double start = 1e-7, end = 10;
  int64_t steps = 100;
  bool linear = false;  // false: exponential ramp
  double beta = 0.98;   // loss smoothing
  double stop_factor = 4;  // stop once the smoothed loss exceeds this multiple of its minimum
  // A curve with no suggestion throws lrlab::Error, as a caller that trains with the suggestion
  // needs; false returns it with the suggestion NaN and FinderCurve::no_suggestion saying why.
  bool require_suggestion = true;
};

struct FinderCurve {
  std::string optimizer;
  std::vector<double> lr, loss, smoothed;  // one entry per step run (all finite)
  double steepest = 0, valley = 0, min_div10 = 0;  // NaN: the curve has too few points for the rules
  std::string recommended = "valley";      // "valley", "min_div10" or "" (no suggestion)
  double suggestion = 0;                   // the recommended rate; NaN when there is none
  std::string no_suggestion;               // why there is none ("" when there is one)
  bool stopped_early = false;              // diverged before the last planned step
  int64_t steps_run = 0;
  // The points the suggestions read, [window_begin, window_end): fastai's window, which depends on
  // how the test ended (see fastai_trim_end).
  int64_t window_begin = 0, window_end = 0;
};

// Throws lrlab::Error unless start > 0, end > start (both finite), kMinFinderSteps <= steps <=
// kMaxTableSteps, 0 <= beta < 1 and stop_factor > 1.
void validate_finder_options(const FinderOptions& options);

// Why a test needs kMinFinderSteps steps, for messages and help: "the suggestions need 2 points ...".
std::string finder_window_rule();

// The schedule spec of the ramp, e.g. "range(start=1e-07,end=10,steps=100,mode=exp)".
std::string finder_schedule(const FinderOptions& options);

// Runs one range test on `engine` (one replica), from the engine's current weights, over
// consecutive epochs' minibatches starting at epoch 0. The weights and the optimizer state
// (moments, step counter, rate, schedule) are restored afterwards; the data position is not:
// call begin_epoch() before training on. Throws lrlab::Error if the first loss is not finite, or
// if the curve gives no suggestion and options.require_suggestion is set. `progress`, when given,
// hears the number of steps run so far every few steps.
FinderCurve run_range_test(TrainEngine& engine, const FinderOptions& options,
                           const std::function<void(int64_t steps_done)>& progress = {});

// Which curve (an index into the optimizers) has run how many steps; called from the curve's own
// thread, so tests of several optimizers call it concurrently.
using FinderProgress = std::function<void(size_t curve, int64_t steps_done)>;

// One range test per optimizer spec, each with its own engine built from `base` (data, model,
// batch, seed, device, tf32, bias_decay; base.optimizer, lr and schedule are ignored), on data
// loaded once. Throws lrlab::Error for bad options or specs before any training.
std::vector<FinderCurve> find_lr(const TrainOptions& base, const std::vector<std::string>& optimizers,
                                 const FinderOptions& options, const FinderProgress& progress = {});

// The document `lrlab find-lr --json` writes.
std::string finder_json(const std::vector<FinderCurve>& curves);
// Smoothed loss against the rate on a log axis, each suggestion a marker on its curve (a shape per
// rule, the recommended one filled).
std::string finder_svg(const std::vector<FinderCurve>& curves);

// The suggestion rules, on a smoothed curve (indices into the vectors given; none empty).
// fastai's valley: the end of the longest strictly decreasing subsequence and its length give a
// stretch [start, end]; the suggestion sits 1/3 + 1/6 of its length past the start.
int64_t valley_index(const std::vector<double>& smoothed);
// The most negative central difference of smoothed against log10(lr) (one-sided at the ends).
int64_t steepest_index(const std::vector<double>& lr, const std::vector<double>& smoothed);
int64_t minimum_index(const std::vector<double>& smoothed);

struct Suggestions {
  bool enough_points = false;  // kFinderMinPoints or more in the window: the rules were applied
  int64_t steepest = -1, valley = -1, minimum = -1;  // indices into the whole curve; -1: none
  double steepest_lr = 0, valley_lr = 0, min_div10_lr = 0;  // NaN: none
  bool has_valley = false;  // false: the trimmed curve never decreases (or was too short)
  int64_t window_begin = 0, window_end = 0;  // the points read, [begin, end)
};
// Applies fastai's trimming for a test planned over `planned_steps` (the first planned_steps/10
// points and the last `trim_end`), then the three rules, when kFinderMinPoints or more remain.
Suggestions suggest(const std::vector<double>& lr, const std::vector<double>& smoothed, int64_t planned_steps,
                    int64_t trim_end = 5);
// How many points fastai's window leaves out at the end of a curve of `kept` finite points that
// ended with the loss `ended_by`, which the curve does not hold (finite: it did not end with one):
// 5; after a NaN, only the points from planned_steps-5 on; after an infinite loss, the 4 before it.
int64_t fastai_trim_end(int64_t kept, int64_t planned_steps, double ended_by);

}  // namespace lrlab
