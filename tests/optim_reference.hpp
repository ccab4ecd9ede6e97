// A float64 reference of docs/OPTIMIZERS.md, written from the spec independently of update_rules.hpp,
// so that a mistake in the shared rules cannot hide behind the same mistake in the reference. With
// `keras`, Keras's rules as keras/src/optimizers/*.py write them (update_step, and the base
// optimizer's _apply_weight_decay before it), in their order of operations.
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

#include "lrlab/update_rules.hpp"

namespace lrlab::testing {

struct RefOptimizer {
  OptimizerHyper h;
  std::vector<double> p, s0, s1, s2;
  long t = 0;

  RefOptimizer(const OptimizerHyper& hyper, const std::vector<float>& init) : h(hyper) {
    p.assign(init.begin(), init.end());
    double a0 = h.kind == OptimKind::Adagrad ? h.initial_accumulator : 0.0;
    s0.assign(p.size(), a0);
    s1.assign(p.size(), 0.0);
    s2.assign(p.size(), 0.0);
  }

  // lr_of, wd_of: each element's rate (base x schedule x scale x group multiplier) and decay.
  void step(const std::vector<float>& grad, const std::vector<double>& lr_of,
            const std::vector<double>& wd_of, double grad_coef = 1.0) {
    ++t;
    const double b1 = h.beta1, b2 = h.beta2, eps = h.eps, mom = h.momentum;
    const double bc1 = 1 - std::pow(b1, t), bc2 = 1 - std::pow(b2, t);  // Adam's bias corrections
    for (size_t i = 0; i < p.size(); ++i) {
      double g = grad[i] * grad_coef;
      if (h.maximize) g = -g;
      double wd = wd_of[i];
      double lr = lr_of[i];
      if (h.keras) {
        keras_step(i, g, lr, wd);
        continue;
      }
      switch (h.kind) {
        case OptimKind::SGD: {
          if (wd != 0) g += wd * p[i];
          if (mom != 0) {
            s0[i] = t == 1 ? g : mom * s0[i] + (1 - h.dampening) * g;
            g = h.nesterov ? g + mom * s0[i] : s0[i];
          }
          p[i] -= lr * g;
          break;
        }
        case OptimKind::Adam:
        case OptimKind::AdamW: {
          if (h.kind == OptimKind::AdamW) p[i] *= 1 - lr * wd;
          else if (wd != 0) g += wd * p[i];
          s0[i] = b1 * s0[i] + (1 - b1) * g;
          s1[i] = b2 * s1[i] + (1 - b2) * g * g;
          double vv = s1[i];
          if (h.amsgrad) vv = s2[i] = std::max(s2[i], s1[i]);
          p[i] -= (lr / bc1) * s0[i] / (std::sqrt(vv) / std::sqrt(bc2) + eps);
          break;
        }
        case OptimKind::RMSprop: {
          if (wd != 0) g += wd * p[i];
          s0[i] = h.alpha * s0[i] + (1 - h.alpha) * g * g;
          double avg;
          if (h.centered) {
            s2[i] = h.alpha * s2[i] + (1 - h.alpha) * g;
            avg = std::sqrt(s0[i] - s2[i] * s2[i]) + eps;
          } else {
            avg = std::sqrt(s0[i]) + eps;
          }
          if (mom > 0) {
            s1[i] = mom * s1[i] + g / avg;
            p[i] -= lr * s1[i];
          } else {
            p[i] -= lr * g / avg;
          }
          break;
        }
        case OptimKind::Adagrad: {
          if (wd != 0) g += wd * p[i];
          double clr = lr / (1 + (t - 1) * h.lr_decay);
          s0[i] += g * g;
          p[i] -= clr * g / (std::sqrt(s0[i]) + h.eps);
          break;
        }
      }
    }
  }

  // Keras: the buffers are named as there. s0: momentum (SGD), m (Adam), velocity (RMSprop),
  // accumulator (Adagrad); s1: v (Adam), momentum (RMSprop); s2: v_hat (Adam), average_grad (RMSprop).
  void keras_step(size_t i, double g, double lr, double wd) {
    if (wd != 0) p[i] = p[i] - p[i] * wd * lr;
    const double eps = h.eps, mom = h.momentum;
    switch (h.kind) {
      case OptimKind::SGD:
        if (mom != 0) {
          double& m = s0[i];  // Keras keeps -buf: m = momentum * m - lr * g
          m = mom * m - lr * g;
          p[i] += h.nesterov ? mom * m - lr * g : m;
        } else {
          p[i] -= lr * g;
        }
        break;
      case OptimKind::Adam:
      case OptimKind::AdamW: {
        const double alpha = lr * std::sqrt(1 - std::pow(double(h.beta2), t)) / (1 - std::pow(double(h.beta1), t));
        s0[i] += (g - s0[i]) * (1 - h.beta1);
        s1[i] += (g * g - s1[i]) * (1 - h.beta2);
        double v = s1[i];
        if (h.amsgrad) v = s2[i] = std::max(s2[i], s1[i]);
        p[i] -= s0[i] * alpha / (std::sqrt(v) + eps);
        break;
      }
      case OptimKind::RMSprop: {
        const double rho = h.alpha;
        s0[i] = rho * s0[i] + (1 - rho) * g * g;
        double denominator;
        if (h.centered) {
          s2[i] = rho * s2[i] + (1 - rho) * g;
          denominator = s0[i] - s2[i] * s2[i] + eps;
        } else {
          denominator = s0[i] + eps;
        }
        const double increment = lr * g / std::sqrt(denominator);
        if (mom > 0) {
          s1[i] = mom * s1[i] + increment;
          p[i] -= s1[i];
        } else {
          p[i] -= increment;
        }
        break;
      }
      case OptimKind::Adagrad:
        s0[i] += g * g;
        p[i] -= lr * g / std::sqrt(s0[i] + eps);
        break;
    }
  }
};

// max |a - b| / max |b|: the max-norm relative error of a trajectory against the reference.
inline double maxnorm_rel_error(const float* a, const std::vector<double>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < b.size(); ++i) {
    num = std::max(num, std::abs(a[i] - b[i]));
    den = std::max(den, std::abs(b[i]));
  }
  return num / den;
}

}  // namespace lrlab::testing
