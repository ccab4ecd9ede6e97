// The bias-corrected exponential moving average of a training loss (fastai's lr_find smoothing) and
// the best value it has reached. The LR finder's stop rule and the divergence guard read the same
// number, so they agree on what "the loss blew up" means.
#pragma once

#include <cmath>
#include <cstdint>

namespace lrlab {

struct SmoothedLoss {
  double beta = 0.98;
  double average = 0.0;  // the raw (biased) moving average
  int64_t count = 0;
  double best = 0.0;     // lowest value() so far

  // Adds one loss and returns the smoothed value.
  double add(double loss) {
    count += 1;
    average = beta * average + (1 - beta) * loss;
    const double v = value();
    if (count == 1 || v < best) best = v;
    return v;
  }
  double value() const { return count ? average / (1 - std::pow(beta, static_cast<double>(count))) : 0.0; }
};

}  // namespace lrlab
