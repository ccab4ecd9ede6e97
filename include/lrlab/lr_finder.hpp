// The learning-rate range test ("LR finder", as in fastai's lr_find and PyTorch Lightning's
// Tuner.lr_find): train for a few minibatches while the rate grows from tiny to huge, record the
// smoothed loss against the rate, and suggest a rate from the curve. The model and optimizer are
// put back afterwards, so training starts from the weights the test started from.
//
// Three suggestions, each read off the smoothed curve with fastai's trimming (the first
// steps/10 and the last 5 points are left out, when enough remain):
//   - valley (recommended, fastai's default): the longest descending stretch of the curve, taken
//     2/3 of the way down;
//   - steepest (Lightning's suggestion): the most negative slope of loss against log10(lr);
//   - min_div10: the rate at the lowest loss, divided by 10.
// A curve that never descends has no valley; then min_div10 is the recommended one.
//
// Where lrlab differs from the two (each on purpose):
//   - the ramp reaches both ends: step i of n is start*(end/start)^(i/(n-1)) (fastai's i/n never
//     reaches end; Lightning's skips i = 1);
//   - smoothing and the stop rule are fastai's (Lightning's bias correction runs one step ahead);
//   - steepest is read in fastai's window, [n/10, len-5), not Lightning's [10, len-1);
//   - the optimizer starts fresh (moments and step reset; fastai keeps an existing one's state);
//   - a valley index before the window's start (fastai's idx = -1) is the window's first point,
//     not the largest rate as Python's lrs[-1] gives.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "lrlab/train.hpp"
#include "lrlab/train_engine.hpp"

namespace lrlab {

struct FinderOptions {
  double start = 1e-7, end = 10;
  int64_t steps = 100;
  bool linear = false;  // false: exponential ramp
  double beta = 0.98;   // loss smoothing
  double stop_factor = 4;  // stop once the smoothed loss exceeds this multiple of its minimum
};

struct FinderCurve {
  std::string optimizer;
  std::vector<double> lr, loss, smoothed;  // one entry per step run (all finite)
  double steepest = 0, valley = 0, min_div10 = 0;
  std::string recommended = "valley";      // "valley" or "min_div10"
  double suggestion = 0;                   // the recommended rate
  bool stopped_early = false;              // diverged before the last planned step
  int64_t steps_run = 0;
  // The points the suggestions read, [window_begin, window_end): fastai's window, which depends on
  // how the test ended (see fastai_trim_end).
  int64_t window_begin = 0, window_end = 0;
};

// Throws lrlab::Error unless start > 0, end > start (both finite), 2 <= steps <= kMaxTableSteps,
// 0 <= beta < 1 and stop_factor > 1.
void validate_finder_options(const FinderOptions& options);

// The schedule spec of the ramp, e.g. "range(start=1e-07,end=10,steps=100,mode=exp)".
std::string finder_schedule(const FinderOptions& options);

// Runs one range test on `engine` (one replica), from the engine's current weights, over
// consecutive epochs' minibatches starting at epoch 0. The weights and the optimizer state
// (moments, step counter, rate, schedule) are restored afterwards; the data position is not:
// call begin_epoch() before training on. Throws lrlab::Error if the first loss is not finite.
FinderCurve run_range_test(TrainEngine& engine, const FinderOptions& options);

// One range test per optimizer spec, each with its own engine built from `base` (data, model,
// batch, seed, device; base.optimizer, lr and schedule are ignored), on data loaded once.
// Throws lrlab::Error for bad options or specs before any training.
std::vector<FinderCurve> find_lr(const TrainOptions& base, const std::vector<std::string>& optimizers,
                                 const FinderOptions& options);

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
  int64_t steepest = 0, valley = 0, minimum = 0;  // indices into the whole curve
  double steepest_lr = 0, valley_lr = 0, min_div10_lr = 0;
  bool has_valley = true;  // false: the trimmed curve never decreases
  int64_t window_begin = 0, window_end = 0;  // the points read, [begin, end)
};
// Applies fastai's trimming for a test planned over `planned_steps` (the first planned_steps/10
// points and the last `trim_end`; the whole curve when too few would remain), then the three rules.
Suggestions suggest(const std::vector<double>& lr, const std::vector<double>& smoothed, int64_t planned_steps,
                    int64_t trim_end = 5);
// How many points fastai's window leaves out at the end of a curve of `kept` finite points that
// ended with the loss `ended_by`, which the curve does not hold (finite: it did not end with one):
// 5; after a NaN, only the points from planned_steps-5 on; after an infinite loss, the 4 before it.
int64_t fastai_trim_end(int64_t kept, int64_t planned_steps, double ended_by);

}  // namespace lrlab
