// The shared activation and loss formulas, against closed forms in double precision and against
// finite differences of themselves.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "lrlab/nn_math.hpp"
#include "test_util.hpp"

namespace lrlab {
namespace {

const Activation kAll[] = {Activation::Relu, Activation::Gelu, Activation::Tanh,
                           Activation::Sigmoid, Activation::Identity};

double ref_forward(Activation a, double z) { return lrlab::testing::ref_activation(a, z); }

double ref_derivative(Activation a, double z) {
  const double pi = 3.14159265358979323846;
  switch (a) {
    case Activation::Relu: return z > 0 ? 1 : 0;
    case Activation::Gelu:
      return 0.5 * (1 + std::erf(z / std::sqrt(2.0))) + z * std::exp(-z * z / 2) / std::sqrt(2 * pi);
    case Activation::Tanh: return 1 / (std::cosh(z) * std::cosh(z));
    case Activation::Sigmoid: {
      const double s = 1 / (1 + std::exp(-z));
      return s * (1 - s);
    }
    case Activation::Identity: return 1;
  }
  return NAN;
}

// Points avoid 0, where ReLU has a kink and finite differences straddle it.
std::vector<float> sample_points() {
  std::vector<float> p;
  for (float z = -6.05f; z < 6.1f; z += 0.1f) p.push_back(z);
  for (float z : {-20.3f, -9.7f, 9.7f, 20.3f}) p.push_back(z);
  return p;
}

TEST(NnMathActivation, ForwardMatchesClosedForms) {
  for (Activation a : kAll) {
    for (float z : sample_points()) {
      const double want = ref_forward(a, z);
      EXPECT_NEAR(activation_forward(a, z), want, 2e-6 * std::max(1.0, std::fabs(want)))
          << "activation " << static_cast<int>(a) << " at z=" << z;
    }
  }
}

TEST(NnMathActivation, DerivativeMatchesClosedForms) {
  for (Activation a : kAll) {
    for (float z : sample_points()) {
      EXPECT_NEAR(activation_derivative(a, z), ref_derivative(a, z), 2e-6)
          << "activation " << static_cast<int>(a) << " at z=" << z;
    }
  }
}

TEST(NnMathActivation, DerivativeMatchesFiniteDifferences) {
  // Central differences of the float forward: truncation ~h^2, rounding ~eps/h.
  const float h = 1e-2f;
  for (Activation a : kAll) {
    for (float z : sample_points()) {
      const double fd = (static_cast<double>(activation_forward(a, z + h)) -
                         static_cast<double>(activation_forward(a, z - h))) /
                        (2.0 * h);
      EXPECT_NEAR(activation_derivative(a, z), fd, 1e-3)
          << "activation " << static_cast<int>(a) << " at z=" << z;
    }
  }
}

TEST(NnMathActivation, TemplatedAndRuntimeFormsAgree) {
  for (float z : sample_points()) {
    EXPECT_EQ(ActivationFn<Activation::Gelu>::forward(z), activation_forward(Activation::Gelu, z));
    EXPECT_EQ(ActivationFn<Activation::Sigmoid>::derivative(z),
              activation_derivative(Activation::Sigmoid, z));
  }
  for (Activation a : kAll) {
    Activation seen = a == Activation::Relu ? Activation::Tanh : Activation::Relu;
    dispatch_activation(a, [&](auto tag) { seen = decltype(tag)::value; });
    EXPECT_EQ(seen, a);
  }
}

TEST(NnMathActivation, SaturatedInputsStayFinite) {
  for (Activation a : {Activation::Gelu, Activation::Tanh, Activation::Sigmoid}) {
    for (float z : {-1e4f, -100.0f, 100.0f, 1e4f}) {
      EXPECT_TRUE(std::isfinite(activation_forward(a, z))) << static_cast<int>(a) << " " << z;
      EXPECT_TRUE(std::isfinite(activation_derivative(a, z))) << static_cast<int>(a) << " " << z;
    }
  }
  EXPECT_EQ(activation_forward(Activation::Sigmoid, 1e4f), 1.0f);
  EXPECT_GE(activation_forward(Activation::Sigmoid, -1e4f), 0.0f);
  EXPECT_GT(activation_forward(Activation::Sigmoid, -80.0f), 0.0f);  // e^-80 is a normal float
  EXPECT_EQ(activation_forward(Activation::Gelu, 50.0f), 50.0f);
  EXPECT_EQ(activation_derivative(Activation::Relu, 0.0f), 0.0f);
}

double ref_cross_entropy(const std::vector<float>& z, int label) {
  double m = z[0];
  for (float v : z) m = std::max(m, static_cast<double>(v));
  double s = 0;
  for (float v : z) s += std::exp(v - m);
  return m + std::log(s) - z[label];
}

TEST(NnMathSoftmaxCrossEntropy, LossAndGradientMatchReference) {
  const std::vector<float> z{0.3f, -1.2f, 2.5f, 0.0f, 1.1f};
  const float scale = 0.25f;
  for (int label = 0; label < 5; ++label) {
    std::vector<float> g(5, NAN);
    const float loss = softmax_cross_entropy(z.data(), 5, label, scale, g.data());
    EXPECT_NEAR(loss, ref_cross_entropy(z, label), 1e-6);
    EXPECT_EQ(loss, softmax_cross_entropy(z.data(), 5, label, scale, nullptr));
    const double lse = ref_cross_entropy(z, label) + z[label];
    double sum = 0;
    for (int i = 0; i < 5; ++i) {
      const double want = scale * (std::exp(z[i] - lse) - (i == label ? 1.0 : 0.0));
      EXPECT_NEAR(g[i], want, 1e-7);
      sum += g[i];
    }
    EXPECT_NEAR(sum, 0.0, 1e-7);
  }
}

TEST(NnMathSoftmaxCrossEntropy, GradientMatchesFiniteDifferences) {
  std::vector<float> z{0.7f, -0.4f, 1.9f, -2.2f};
  std::vector<float> g(4);
  softmax_cross_entropy(z.data(), 4, 2, 1.0f, g.data());
  for (int i = 0; i < 4; ++i) {
    std::vector<float> zp = z, zm = z;
    const float h = 1e-2f;
    zp[i] += h;
    zm[i] -= h;
    const double fd = (ref_cross_entropy(zp, 2) - ref_cross_entropy(zm, 2)) / (2 * h);
    EXPECT_NEAR(g[i], fd, 1e-4) << "logit " << i;
  }
}

TEST(NnMathSoftmaxCrossEntropy, StableForLargeLogits) {
  // Naively, exp(1000) overflows to inf and the loss becomes NaN.
  const std::vector<float> big{1000.0f, 1001.0f, 999.0f};
  const std::vector<float> small{0.0f, 1.0f, -1.0f};
  std::vector<float> gb(3), gs(3);
  const float lb = softmax_cross_entropy(big.data(), 3, 0, 1.0f, gb.data());
  const float ls = softmax_cross_entropy(small.data(), 3, 0, 1.0f, gs.data());
  EXPECT_NEAR(lb, ls, 1e-5);
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(gb[i], gs[i], 1e-6);

  // A confidently wrong prediction: the loss is the logit gap, finite and exact.
  const std::vector<float> apart{1e4f, -1e4f};
  std::vector<float> ga(2);
  EXPECT_FLOAT_EQ(softmax_cross_entropy(apart.data(), 2, 1, 1.0f, ga.data()), 2e4f);
  EXPECT_FLOAT_EQ(ga[0], 1.0f);
  EXPECT_FLOAT_EQ(ga[1], -1.0f);
  EXPECT_EQ(softmax_cross_entropy(apart.data(), 2, 0, 1.0f, nullptr), 0.0f);
}

// The row maximum runs over every logit, the last included: with a large last logit, exp() of the
// others against anything smaller would overflow to inf.
TEST(NnMathSoftmaxCrossEntropy, LargestLogitLastIsStable) {
  const std::vector<float> z{0.0f, 100.0f};
  std::vector<float> g(2);
  const float loss = softmax_cross_entropy(z.data(), 2, 0, 1.0f, g.data());
  EXPECT_NEAR(loss, ref_cross_entropy(z, 0), 1e-4);  // 100 + log(1 + e^-100)
  EXPECT_NEAR(g[0], -1.0, 1e-6);
  EXPECT_NEAR(g[1], 1.0, 1e-6);
  EXPECT_NEAR(softmax_cross_entropy(z.data(), 2, 1, 1.0f, nullptr), 0.0, 1e-6);
}

TEST(NnMathMeanSquaredError, LossAndGradient) {
  const std::vector<float> o{1.0f, -2.0f, 0.5f};
  const std::vector<float> y{0.0f, 1.0f, 0.5f};
  std::vector<float> g(3, NAN);
  const float scale = 0.5f;
  EXPECT_FLOAT_EQ(mean_squared_error(o.data(), y.data(), 3, scale, g.data()), (1.0f + 9.0f) / 3.0f);
  for (int i = 0; i < 3; ++i) {
    EXPECT_FLOAT_EQ(g[i], scale * 2.0f * (o[i] - y[i]) / 3.0f);
    // Finite differences of the (quadratic) row loss, times the scale.
    std::vector<float> op = o, om = o;
    op[i] += 0.125f;
    om[i] -= 0.125f;
    const double fd = (mean_squared_error(op.data(), y.data(), 3, 0, nullptr) -
                       mean_squared_error(om.data(), y.data(), 3, 0, nullptr)) /
                      0.25;
    EXPECT_NEAR(g[i], scale * fd, 1e-5);
  }
}

TEST(NnMathArgmax, FirstOfTies) {
  const std::vector<float> z{0.1f, 3.0f, -1.0f, 3.0f};
  EXPECT_EQ(argmax(z.data(), 4), 1);
  EXPECT_EQ(argmax(z.data(), 1), 0);
  EXPECT_TRUE(label_in_range(0, 4));
  EXPECT_TRUE(label_in_range(3, 4));
  EXPECT_FALSE(label_in_range(4, 4));
  EXPECT_FALSE(label_in_range(-1, 4));
}

}  // namespace
}  // namespace lrlab
