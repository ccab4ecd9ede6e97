// The optimizer update rules, each written once and used by both the CPU loop
// (src/optimizer_cpu.cpp) and the fused CUDA kernel (kernels/optimizer_cuda.cu).
//
// A step has two parts:
//  1. prepare_step(), once per replica: reads the replica's step counter, schedule table and scales,
//     decides whether the step is skipped (non-finite gradients, or a frozen replica), advances the
//     counter and computes the per-step scalars (effective rate, bias corrections, gradient
//     coefficient).
//  2. update_element<Kind>(), once per parameter: the rule of docs/OPTIMIZERS.md (PyTorch's definitions,
//     or Keras's with `keras`).
// Both run on the device in the CUDA path, so a CUDA graph replays a whole step with no host work.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "lrlab/hd.hpp"

namespace lrlab {

enum class OptimKind : int32_t { SGD = 0, Adam = 1, AdamW = 2, RMSprop = 3, Adagrad = 4 };

// Hyperparameters shared by every replica and group of one optimizer. Plain data: passed by value
// to kernels.
struct OptimizerHyper {
  OptimKind kind = OptimKind::Adam;
  float beta1 = 0.9f, beta2 = 0.999f;      // Adam, AdamW
  float eps = 1e-8f;                       // Adam, AdamW, RMSprop, Adagrad
  float weight_decay = 0.0f;               // default for groups that do not set their own
  float momentum = 0.0f, dampening = 0.0f; // SGD, RMSprop (momentum)
  float alpha = 0.99f;                     // RMSprop smoothing
  float lr_decay = 0.0f;                   // Adagrad
  float initial_accumulator = 0.0f;        // Adagrad
  float max_grad_norm = 0.0f;              // global-norm clipping per replica; 0 = off
  int32_t nesterov = 0, centered = 0, amsgrad = 0, maximize = 0;
  int32_t check_finite = 0;                // skip steps whose gradients hold inf/NaN
  // Keras's forms of the rules: epsilon inside the square root (RMSprop, Adagrad) or outside the bias
  // correction (Adam), the rate inside the momentum buffer (SGD, RMSprop), weight decay decoupled for
  // every kind. Last, so that a state saved before it existed holds a prefix of this struct.
  int32_t keras = 0;
};

// Why ReplicaState::skipped is set. A dynamic loss scale lowers itself on the first only.
constexpr int32_t kSkippedNonFinite = 1;  // inf or NaN gradients (the finite check, or `clip`)
constexpr int32_t kSkippedFrozen = 2;     // scale 0: the replica is frozen

// Per-replica state, in device memory on the CUDA path. The first block is set by the host (or by
// dynamic rules), the second is written by prepare_step() each step and read by the update.
struct ReplicaState {
  int64_t step = 0;              // completed steps; skipped steps do not count
  const float* table = nullptr;  // schedule multipliers; nullptr means a constant 1
  int64_t table_len = 0;
  float base_lr = 1e-3f;
  float scale = 1.0f;            // lowered by reduce-on-plateau and the divergence guard
  float inv_grad_scale = 1.0f;   // 1 / loss scale: gradients arrive scaled (mixed precision)
  int32_t skipped = 0;           // the last step was skipped: kSkippedNonFinite or kSkippedFrozen
  int64_t skipped_total = 0;
  // Written by prepare_step():
  float lr = 0.0f;               // base_lr * table[min(step, T-1)] * scale, before group multipliers
  float grad_coef = 1.0f;        // unscale x clip coefficient, applied to every gradient
  // Adam's step is lr / adam_step_div * m / (sqrt(v) / adam_denom_div + eps). PyTorch's: 1 - beta1^t
  // and sqrt(1 - beta2^t). Keras's (its epsilon outside the correction): (1 - beta1^t) / sqrt(1 -
  // beta2^t) and 1, which divides exactly.
  float adam_step_div = 1.0f;
  float adam_denom_div = 1.0f;
  float clr_factor = 1.0f;       // Adagrad: 1 / (1 + (t-1) lr_decay)
  int64_t t = 0;                 // this step's count (first step 1)
};

// grad_sq: the sum of squares of this replica's raw gradients when the optimizer needs gradient
// statistics (clipping or the finite check), else ignored.
LRLAB_HD void prepare_step(ReplicaState& s, const OptimizerHyper& h, bool have_stats, double grad_sq) {
  // A scale of 0 freezes the replica (a sweep's diverged configuration): an update at rate 0 would
  // still move the moments, and under Keras's momentum forms the weights too, by the buffer.
  if (s.scale == 0.0f) {
    s.skipped = kSkippedFrozen;
    return;
  }
  double coef = s.inv_grad_scale;
  if (have_stats) {
    double sq = grad_sq * coef * coef;
    // An overflowing or NaN sum means some gradient is inf or NaN (the sum is kept in double, so
    // finite fp32 gradients cannot overflow it).
    if (!(sq <= 1.0e300)) {
      s.skipped = kSkippedNonFinite;
      s.skipped_total += 1;
      return;
    }
    if (h.max_grad_norm > 0.0f) {
      double norm = sqrt(sq);
      double clip = h.max_grad_norm / (norm + 1e-6);  // torch.nn.utils.clip_grad_norm_
      if (clip < 1.0) coef *= clip;
    }
  }
  s.skipped = 0;
  int64_t idx = s.step;
  s.t = s.step + 1;
  s.step = s.t;
  float m = 1.0f;
  if (s.table && s.table_len > 0) m = s.table[idx < s.table_len ? idx : s.table_len - 1];
  s.lr = s.base_lr * m * s.scale;
  s.grad_coef = static_cast<float>(coef);
  double t = static_cast<double>(s.t);
  const double bc1 = 1.0 - pow(static_cast<double>(h.beta1), t);
  const double bc2_sqrt = sqrt(1.0 - pow(static_cast<double>(h.beta2), t));
  s.adam_step_div = static_cast<float>(h.keras ? bc1 / bc2_sqrt : bc1);
  s.adam_denom_div = h.keras ? 1.0f : static_cast<float>(bc2_sqrt);
  s.clr_factor = static_cast<float>(1.0 / (1.0 + (t - 1.0) * h.lr_decay));
}

// Which state buffers (s0, s1, s2) a configuration keeps per parameter.
LRLAB_HD int state_buffers(const OptimizerHyper& h) {
  switch (h.kind) {
    case OptimKind::SGD: return h.momentum != 0.0f ? 1 : 0;                  // buf
    case OptimKind::Adam:
    case OptimKind::AdamW: return h.amsgrad ? 3 : 2;                         // m, v, vmax
    case OptimKind::RMSprop: return 1 + (h.momentum > 0.0f) + (h.centered != 0);  // v, buf, ga
    case OptimKind::Adagrad: return 1;                                      // sum
  }
  return 0;
}

// max without fmaxf's NaN rules, which keep GCC from vectorising the CPU loop.
LRLAB_HD float max_of(float a, float b) { return a > b ? a : b; }

// RMSprop's and Adagrad's denominator: Keras adds epsilon inside the square root, PyTorch after it.
template <bool KERAS>
LRLAB_HD float root_plus_eps(float x, float eps) {
  if constexpr (KERAS) return sqrtf(x + eps);
  else return sqrtf(x) + eps;
}

// The rules. `lr` is this step's rate for the parameter's group (ReplicaState::lr x group
// multiplier), `wd` the group's weight decay; `g` the raw gradient. KERAS is OptimizerHyper::keras,
// a template argument so that PyTorch's rules, the default, carry no trace of Keras's (the kernels'
// registers decide how many blocks fit).
template <OptimKind K, bool KERAS>
LRLAB_HD void update_element(const OptimizerHyper& h, const ReplicaState& s, float lr, float wd,
                             float& p, float g, float& s0, float& s1, float& s2) {
  g *= s.grad_coef;
  if (h.maximize) g = -g;
  // PyTorch's L2 term joins the gradient; AdamW and every Keras optimizer shrink the weight instead.
  if constexpr (K == OptimKind::AdamW || KERAS) {
    if (K == OptimKind::AdamW || wd != 0.0f) p *= 1.0f - lr * wd;
  } else {
    if (wd != 0.0f) g += wd * p;
  }
  if constexpr (K == OptimKind::SGD) {
    // Keras's buffer is made of steps, the rate already in them; PyTorch's rate comes after it.
    float step_lr = lr;
    if (h.momentum != 0.0f) {
      float& buf = s0;
      if constexpr (KERAS) {
        g *= lr;
        step_lr = 1.0f;
      }
      // PyTorch starts the buffer from the first step's gradient (so set_step(0) restarts it);
      // Keras's is a variable that starts at zero and is never reset.
      buf = (!KERAS && s.t == 1) ? g : h.momentum * buf + (1.0f - h.dampening) * g;
      g = h.nesterov ? g + h.momentum * buf : buf;
    }
    p -= step_lr * g;
  } else if constexpr (K == OptimKind::Adam || K == OptimKind::AdamW) {
    // Keras's epsilon outside the bias correction is in prepare_step's divisors.
    float& m = s0;
    float& v = s1;
    m = h.beta1 * m + (1.0f - h.beta1) * g;
    v = h.beta2 * v + (1.0f - h.beta2) * g * g;
    float vv = v;
    if (h.amsgrad) {
      s2 = max_of(s2, v);
      vv = s2;
    }
    float step_size = lr / s.adam_step_div;
    float denom = sqrtf(vv) / s.adam_denom_div + h.eps;
    p -= step_size * (m / denom);
  } else if constexpr (K == OptimKind::RMSprop) {
    float& v = s0;
    v = h.alpha * v + (1.0f - h.alpha) * g * g;
    float avg;
    if (h.centered) {
      // The average gradient lives in s2 with momentum (s1 holds the buffer), else in s1. Selected by
      // value, not by reference, so the CPU loop stays vectorisable.
      const bool with_momentum = h.momentum > 0.0f;
      float ga = with_momentum ? s2 : s1;
      ga = h.alpha * ga + (1.0f - h.alpha) * g;
      if (with_momentum) s2 = ga;
      else s1 = ga;
      // v >= ga^2 in exact arithmetic; rounding can leave a tiny negative, which would be a NaN.
      avg = root_plus_eps<KERAS>(max_of(v - ga * ga, 0.0f), h.eps);
    } else {
      avg = root_plus_eps<KERAS>(v, h.eps);
    }
    if (h.momentum > 0.0f) {
      float& buf = s1;
      if constexpr (KERAS) {  // the rate inside the buffer, as for SGD
        buf = h.momentum * buf + lr * (g / avg);
        p -= buf;
      } else {
        buf = h.momentum * buf + g / avg;
        p -= lr * buf;
      }
    } else {
      p -= lr * (g / avg);
    }
  } else if constexpr (K == OptimKind::Adagrad) {
    float clr = lr * s.clr_factor;
    s0 += g * g;
    p -= clr * (g / root_plus_eps<KERAS>(s0, h.eps));
  }
}

// fp32 -> bf16 with round-to-nearest-even (NaN kept quiet), the low half of the copy written in the
// same pass as the update.
LRLAB_HD uint16_t float_to_bf16(float f) {
  uint32_t u;
#if defined(__CUDA_ARCH__)
  u = __float_as_uint(f);
#else
  std::memcpy(&u, &f, sizeof u);
#endif
  if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu)) return static_cast<uint16_t>((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

LRLAB_HD float bf16_to_float(uint16_t b) {
  uint32_t u = static_cast<uint32_t>(b) << 16;
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
#endif
}

}  // namespace lrlab
