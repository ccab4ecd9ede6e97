// Small helpers shared by the tests.
#pragma once

#include <cmath>
#include <string>

#include "lrlab/error.hpp"
#include "lrlab/nn_math.hpp"

namespace lrlab::testing {

// The message of the lrlab::Error `fn` throws, or "" when it throws nothing.
template <typename Fn>
std::string error_of(Fn fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// Each activation in double precision, from its textbook definition (gelu: the exact, erf form).
inline double ref_activation(Activation a, double z) {
  switch (a) {
    case Activation::Relu: return z > 0 ? z : 0;
    case Activation::Gelu: return 0.5 * z * (1 + std::erf(z / std::sqrt(2.0)));
    case Activation::Tanh: return std::tanh(z);
    case Activation::Sigmoid: return 1 / (1 + std::exp(-z));
    case Activation::Identity: return z;
  }
  return NAN;
}

}  // namespace lrlab::testing
