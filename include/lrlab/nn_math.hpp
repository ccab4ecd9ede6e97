// The per-element and per-row math of an MLP: initial weights, activations with their derivatives
// and the losses with their gradients. The CPU loops and the CUDA kernels both call these, so each formula lives
// here once. The C math functions (expf, erff, ...) are used on purpose: they exist on the host
// and, under nvcc, on the device.
#pragma once

#include <math.h>

#include <cstdint>
#include <type_traits>

#include "lrlab/hd.hpp"
#include "lrlab/rng.hpp"

namespace lrlab {

enum class Activation { Relu, Gelu, Tanh, Sigmoid, Identity };
enum class LossKind { SoftmaxCrossEntropy, MeanSquaredError };

// One struct per activation, so a loop or kernel templated on it has no branch per element.
// derivative() takes the pre-activation z, as the exact GELU needs it.
template <Activation A>
struct ActivationFn;

template <>
struct ActivationFn<Activation::Relu> {
  static LRLAB_HD float forward(float z) { return z > 0.0f ? z : 0.0f; }
  // 0 at z == 0, as PyTorch.
  static LRLAB_HD float derivative(float z) { return z > 0.0f ? 1.0f : 0.0f; }
};

// Exact GELU, z * Phi(z), PyTorch's default (approximate='none').
template <>
struct ActivationFn<Activation::Gelu> {
  static LRLAB_HD float cdf(float z) { return 0.5f * (1.0f + erff(z * 0.70710678118654752f)); }
  static LRLAB_HD float forward(float z) { return z * cdf(z); }
  static LRLAB_HD float derivative(float z) {
    const float pdf = 0.39894228040143268f * expf(-0.5f * z * z);
    return cdf(z) + z * pdf;
  }
};

template <>
struct ActivationFn<Activation::Tanh> {
  static LRLAB_HD float forward(float z) { return tanhf(z); }
  static LRLAB_HD float derivative(float z) {
    const float t = tanhf(z);
    return 1.0f - t * t;
  }
};

template <>
struct ActivationFn<Activation::Sigmoid> {
  // exp of a non-positive argument cannot overflow, so both tails stay finite.
  static LRLAB_HD float forward(float z) {
    const float e = expf(-fabsf(z));
    const float s = 1.0f / (1.0f + e);
    return z >= 0.0f ? s : e * s;
  }
  static LRLAB_HD float derivative(float z) {
    const float s = forward(z);
    return s * (1.0f - s);
  }
};

template <>
struct ActivationFn<Activation::Identity> {
  static LRLAB_HD float forward(float z) { return z; }
  static LRLAB_HD float derivative(float) { return 1.0f; }
};

// Runtime-selected versions, for code that is not in a hot loop.
LRLAB_HD float activation_forward(Activation a, float z) {
  switch (a) {
    case Activation::Relu: return ActivationFn<Activation::Relu>::forward(z);
    case Activation::Gelu: return ActivationFn<Activation::Gelu>::forward(z);
    case Activation::Tanh: return ActivationFn<Activation::Tanh>::forward(z);
    case Activation::Sigmoid: return ActivationFn<Activation::Sigmoid>::forward(z);
    case Activation::Identity: break;
  }
  return ActivationFn<Activation::Identity>::forward(z);
}

LRLAB_HD float activation_derivative(Activation a, float z) {
  switch (a) {
    case Activation::Relu: return ActivationFn<Activation::Relu>::derivative(z);
    case Activation::Gelu: return ActivationFn<Activation::Gelu>::derivative(z);
    case Activation::Tanh: return ActivationFn<Activation::Tanh>::derivative(z);
    case Activation::Sigmoid: return ActivationFn<Activation::Sigmoid>::derivative(z);
    case Activation::Identity: break;
  }
  return ActivationFn<Activation::Identity>::derivative(z);
}

// Calls f(std::integral_constant<Activation, A>{}) for the runtime value a, so host code picks a
// loop or kernel instantiation once, outside the loop.
template <typename F>
void dispatch_activation(Activation a, F&& f) {
  switch (a) {
    case Activation::Relu: f(std::integral_constant<Activation, Activation::Relu>{}); return;
    case Activation::Gelu: f(std::integral_constant<Activation, Activation::Gelu>{}); return;
    case Activation::Tanh: f(std::integral_constant<Activation, Activation::Tanh>{}); return;
    case Activation::Sigmoid: f(std::integral_constant<Activation, Activation::Sigmoid>{}); return;
    case Activation::Identity: f(std::integral_constant<Activation, Activation::Identity>{}); return;
  }
}

LRLAB_HD bool label_in_range(int32_t label, int64_t classes) {
  return label >= 0 && static_cast<int64_t>(label) < classes;
}

// Cross-entropy of softmax(z) against `label` for one row of n logits; the label must be in range.
// Subtracting the row maximum keeps exp() from overflowing for large logits. With grad non-null,
// writes grad[i] = scale * (softmax(z)_i - [i == label]) (scale is 1/batch for a mean loss).
LRLAB_HD float softmax_cross_entropy(const float* z, int64_t n, int32_t label, float scale,
                                     float* grad) {
  float m = z[0];
  for (int64_t i = 1; i < n; ++i) m = fmaxf(m, z[i]);
  float sum = 0.0f;
  if (grad) {
    for (int64_t i = 0; i < n; ++i) {
      const float e = expf(z[i] - m);
      grad[i] = e;
      sum += e;
    }
    const float g = scale / sum;
    for (int64_t i = 0; i < n; ++i) grad[i] *= g;
    grad[label] -= scale;
  } else {
    for (int64_t i = 0; i < n; ++i) sum += expf(z[i] - m);
  }
  return (m - z[label]) + logf(sum);
}

// Mean over the row's n outputs of (o - y)^2, so averaging rows gives PyTorch's MSELoss(mean).
// With grad non-null, writes grad[i] = scale * 2 (o_i - y_i) / n.
LRLAB_HD float mean_squared_error(const float* o, const float* y, int64_t n, float scale,
                                  float* grad) {
  const float g = 2.0f * scale / static_cast<float>(n);
  float sum = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    const float d = o[i] - y[i];
    sum += d * d;
    if (grad) grad[i] = g * d;
  }
  return sum / static_cast<float>(n);
}

// Index of the largest of n values; the first one on ties.
LRLAB_HD int64_t argmax(const float* z, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i)
    if (z[i] > z[best]) best = i;
  return best;
}

// Initial weight i of a layer whose generator starts in state `start` (rng_stream_start(seed,
// layer)): uniform on [-limit, limit) before the rounding to float, from draw i's top 53 bits. The
// steps before the one product are exact, and a product is rounded the same way everywhere, so the
// host and the GPU give the same float for every seed, as any two machines do. There is no add for
// a compiler to fuse with the product: an added term would need __dmul_rn/__dadd_rn on the device,
// since kernels/mlp_cuda.cu is compiled with nvcc's default --fmad=true. (A normal draw needs log
// and cos, whose last bits differ between libm and the GPU, and cost 25 times as much on the CPU.)
LRLAB_HD float init_weight(uint64_t start, int64_t i, double limit) {
  const int64_t centred = static_cast<int64_t>(rng_draw_at(start, static_cast<uint64_t>(i)) >> 11) - (int64_t{1} << 52);
  return static_cast<float>(limit * (static_cast<double>(centred) * 0x1p-52));
}

}  // namespace lrlab
