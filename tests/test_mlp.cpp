// The MLP: parameter layout, initialisation, the CPU backend against a naive double-precision
// reference and finite differences, and the CUDA backend against the CPU one.
#include <cuda_runtime.h>
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <numeric>
#include <vector>

#include "gpu.hpp"
#include "lrlab/cuda_check.hpp"
#include "lrlab/error.hpp"
#include "lrlab/blas_env.hpp"
#include "lrlab/mlp.hpp"
#include "test_util.hpp"
#include "lrlab/rng.hpp"

namespace lrlab {
namespace {

const Activation kActivations[] = {Activation::Relu, Activation::Gelu, Activation::Tanh,
                                   Activation::Sigmoid, Activation::Identity};
const LossKind kLosses[] = {LossKind::SoftmaxCrossEntropy, LossKind::MeanSquaredError};

using testing::make_config;

std::vector<float> random_floats(int64_t n, uint64_t seed, double lo = -1.0, double hi = 1.0) {
  Rng rng(seed);
  std::vector<float> v(n);
  for (float& f : v) f = static_cast<float>(rng.uniform(lo, hi));
  return v;
}

std::vector<int32_t> random_labels(int64_t n, int64_t classes, uint64_t seed) {
  Rng rng(seed);
  std::vector<int32_t> v(n);
  for (int32_t& l : v) l = static_cast<int32_t>(rng.below(classes));
  return v;
}

// All replicas' parameters, packed as the backends take them (mlp_packing); replica k initialised
// from seed + k.
std::vector<float> replica_params(const MlpLayout& layout, int64_t replicas, uint64_t seed) {
  const ReplicaPacking packing = mlp_packing(layout, replicas);
  std::vector<uint64_t> seeds;
  for (int64_t k = 0; k < replicas; ++k) seeds.push_back(seed + static_cast<uint64_t>(k));
  std::vector<float> packed(static_cast<size_t>(packing.span()));
  init_params(layout, packing, seeds, packed.data());
  return packed;
}

int64_t replicas_in(const MlpLayout& layout, const std::vector<float>& packed) {
  return static_cast<int64_t>(packed.size()) / layout.size();
}

// Replica k's parameters (or gradients), in layout order.
std::vector<float> replica_of(const MlpLayout& layout, const std::vector<float>& packed, int64_t k) {
  std::vector<float> one(layout.size());
  mlp_packing(layout, replicas_in(layout, packed)).gather(packed.data(), k, one.data());
  return one;
}

// Biases are zero after init; random ones make the tests see them.
void randomise_biases(const MlpLayout& layout, std::vector<float>& p, uint64_t seed) {
  Rng rng(seed);
  const ReplicaPacking pk = mlp_packing(layout, replicas_in(layout, p));
  for (int64_t k = 0; k < pk.replicas(); ++k)
    for (const ParamRange& r : layout.bias_ranges())
      for (int64_t i = r.begin; i < r.end; ++i) p[pk.index(k, i)] = static_cast<float>(rng.uniform(-0.5, 0.5));
}

// ---- naive double-precision reference -------------------------------------------------------

using lrlab::testing::OmpThreads;
using lrlab::testing::ref_activation;
using lrlab::testing::throws_error_containing;

// Outputs [batch x outputs] of one replica.
std::vector<double> ref_forward(const MlpLayout& layout, const std::vector<double>& p,
                                const std::vector<float>& x, int64_t batch) {
  std::vector<double> act(x.begin(), x.begin() + batch * layout.config().inputs);
  const auto& layers = layout.layers();
  for (size_t l = 0; l < layers.size(); ++l) {
    const LayerView& v = layers[l];
    std::vector<double> next(batch * v.out);
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t o = 0; o < v.out; ++o) {
        double s = p[v.b_offset + o];
        for (int64_t i = 0; i < v.in; ++i) s += p[v.w_offset + o * v.in + i] * act[b * v.in + i];
        next[b * v.out + o] =
            l + 1 == layers.size() ? s : ref_activation(layout.config().activation, s);
      }
    }
    act = std::move(next);
  }
  return act;
}

double ref_loss(const MlpLayout& layout, const std::vector<double>& p, const std::vector<float>& x,
                const std::vector<int32_t>& labels, const std::vector<float>& y, int64_t batch) {
  const std::vector<double> out = ref_forward(layout, p, x, batch);
  const int64_t c = layout.config().outputs;
  double total = 0;
  for (int64_t b = 0; b < batch; ++b) {
    const double* o = out.data() + b * c;
    if (layout.config().loss == LossKind::SoftmaxCrossEntropy) {
      const double m = *std::max_element(o, o + c);
      double s = 0;
      for (int64_t j = 0; j < c; ++j) s += std::exp(o[j] - m);
      total += m + std::log(s) - o[labels[b]];
    } else {
      for (int64_t j = 0; j < c; ++j) total += (o[j] - y[b * c + j]) * (o[j] - y[b * c + j]) / c;
    }
  }
  return total / batch;
}

std::vector<double> to_double(const float* p, int64_t n) { return std::vector<double>(p, p + n); }

// ---- layout, names, init -------------------------------------------------------------------

TEST(MlpLayout, OffsetsAreAlignedAndCoverEachFloatOnce) {
  const MlpLayout layout(make_config(5, {3, 7}, 2, Activation::Relu, LossKind::SoftmaxCrossEntropy));
  ASSERT_EQ(layout.layers().size(), 3u);
  const int64_t dims[4] = {5, 3, 7, 2};
  for (size_t l = 0; l < 3; ++l) {
    const LayerView& v = layout.layers()[l];
    EXPECT_EQ(v.in, dims[l]);
    EXPECT_EQ(v.out, dims[l + 1]);
    EXPECT_EQ(v.w_offset % 4, 0);
    EXPECT_EQ(v.b_offset % 4, 0);
  }
  EXPECT_EQ(layout.size() % 4, 0);
  // W0 at 0 (15 floats), b0 at 16, W1 at 20 (21), b1 at 44, W2 at 52 (14), b2 at 68, size 72.
  EXPECT_EQ(layout.layers()[1].w_offset, 20);
  EXPECT_EQ(layout.layers()[2].b_offset, 68);
  EXPECT_EQ(layout.size(), 72);

  std::vector<int> owners(layout.size(), 0);
  auto mark = [&](const std::vector<ParamRange>& ranges) {
    for (const ParamRange& r : ranges) {
      ASSERT_LE(0, r.begin);
      ASSERT_LE(r.begin, r.end);
      ASSERT_LE(r.end, layout.size());
      for (int64_t i = r.begin; i < r.end; ++i) ++owners[i];
    }
  };
  mark(layout.weight_ranges());
  mark(layout.bias_ranges());
  mark(layout.padding_ranges());
  for (int64_t i = 0; i < layout.size(); ++i) EXPECT_EQ(owners[i], 1) << "float " << i;
  EXPECT_EQ(layout.weight_ranges()[1].end - layout.weight_ranges()[1].begin, 21);
}

TEST(MlpLayout, NoHiddenLayersIsLinearModel) {
  const MlpLayout layout(make_config(8, {}, 4, Activation::Tanh, LossKind::MeanSquaredError));
  ASSERT_EQ(layout.layers().size(), 1u);
  EXPECT_EQ(layout.size(), 36);
  EXPECT_TRUE(layout.padding_ranges().empty());
}

TEST(MlpLayout, RejectsBadConfigs) {
  const auto ce = LossKind::SoftmaxCrossEntropy;
  EXPECT_THROW(MlpLayout(make_config(0, {4}, 3, Activation::Relu, ce)), Error);
  EXPECT_THROW(MlpLayout(make_config(4, {4, 0}, 3, Activation::Relu, ce)), Error);
  EXPECT_THROW(MlpLayout(make_config(4, {-2}, 3, Activation::Relu, ce)), Error);
  EXPECT_THROW(MlpLayout(make_config(4, {4}, 0, Activation::Relu, LossKind::MeanSquaredError)),
               Error);
  EXPECT_THROW(MlpLayout(make_config(4, {4}, 1, Activation::Relu, ce)), Error);
  EXPECT_NO_THROW(MlpLayout(make_config(4, {4}, 1, Activation::Relu, LossKind::MeanSquaredError)));
  EXPECT_THROW(MlpLayout(make_config(1 << 20, {1 << 12}, 2, Activation::Relu, ce)), Error);
  const MlpLayout ok(make_config(4, {4}, 3, Activation::Relu, ce));
  EXPECT_THROW(MlpCpu(ok, 0, 8), Error);
  EXPECT_THROW(MlpCpu(ok, 2, 0), Error);
}

TEST(MlpNames, ParseActivationAndLoss) {
  for (Activation a : kActivations) EXPECT_EQ(parse_activation(activation_name(a)), a);
  EXPECT_EQ(parse_loss("cross_entropy"), LossKind::SoftmaxCrossEntropy);
  EXPECT_EQ(parse_loss("ce"), LossKind::SoftmaxCrossEntropy);
  EXPECT_EQ(parse_loss(loss_name(LossKind::MeanSquaredError)), LossKind::MeanSquaredError);
  EXPECT_TRUE(throws_error_containing([] { parse_activation("swish"); }, "swish"));
  EXPECT_THROW(parse_activation("ReLU"), Error);
  EXPECT_THROW(parse_loss("hinge"), Error);
}

// Sample mean and variance of one weight matrix.
std::pair<double, double> weight_stats(const float* w, int64_t n) {
  double s = 0, s2 = 0;
  for (int64_t i = 0; i < n; ++i) {
    s += w[i];
    s2 += static_cast<double>(w[i]) * w[i];
  }
  const double mean = s / n;
  return {mean, s2 / n - mean * mean};
}

TEST(MlpInit, HeAndXavierVariances) {
  for (Activation act : kActivations) {
    const MlpLayout layout(make_config(784, {256, 128}, 10, act, LossKind::SoftmaxCrossEntropy));
    std::vector<float> p(layout.size(), NAN);
    init_params(layout, p.data(), 42);
    const bool rectifier = act == Activation::Relu || act == Activation::Gelu;
    for (const LayerView& v : layout.layers()) {
      const int64_t n = v.in * v.out;
      const auto [mean, var] = weight_stats(p.data() + v.w_offset, n);
      // The linear output layer gets Glorot even in a rectifier network.
      const bool he = rectifier && v.out != 10;
      const double want = he ? 2.0 / v.in : 2.0 / (v.in + v.out);
      // Relative standard error of a variance from n uniform samples is sqrt(0.8/n) (<= 0.08
      // here); 5 standard errors for the smallest (128 x 10) layer.
      const double tol = 5 * std::sqrt(0.8 / n);
      EXPECT_NEAR(var / want, 1.0, tol) << activation_name(act) << " layer " << v.in << "x" << v.out;
      EXPECT_NEAR(mean, 0.0, 5 * std::sqrt(want / n));
      // Uniform on [-a, a) with a^2 / 3 the variance: nothing beyond a, and the largest of many
      // draws close to it (a normal distribution of that variance would pass a by 1.7x).
      const double a = std::sqrt(3 * want);
      float largest = 0.0f;
      for (int64_t i = 0; i < n; ++i) largest = std::max(largest, std::fabs(p[v.w_offset + i]));
      EXPECT_LE(largest, static_cast<float>(a));
      EXPECT_GT(largest, a * (1 - 20.0 / n)) << "layer " << v.in << "x" << v.out;
    }
    for (const ParamRange& r : layout.bias_ranges())
      for (int64_t i = r.begin; i < r.end; ++i) EXPECT_EQ(p[i], 0.0f);
    for (const ParamRange& r : layout.padding_ranges())
      for (int64_t i = r.begin; i < r.end; ++i) EXPECT_EQ(p[i], 0.0f);
  }
  // An explicit choice overrides the activation's default.
  const MlpLayout layout(make_config(512, {}, 512, Activation::Tanh, LossKind::MeanSquaredError));
  std::vector<float> p(layout.size());
  init_params(layout, p.data(), 7, Init::He);
  EXPECT_NEAR(weight_stats(p.data(), 512 * 512).second / (2.0 / 512), 1.0, 0.02);
}

TEST(MlpInit, EachWeightIsADrawOfItsLayersGenerator) {
  // init_weight reads draw i directly (the GPU's way); it must be the i-th draw the sequential
  // generator makes, mapped to [-a, a) in double.
  const MlpLayout layout(make_config(30, {20}, 10, Activation::Relu, LossKind::SoftmaxCrossEntropy));
  std::vector<float> p(layout.size());
  const uint64_t seed = 99;
  init_params(layout, p.data(), seed);
  for (size_t l = 0; l < layout.layers().size(); ++l) {
    const LayerView& v = layout.layers()[l];
    const double a = std::sqrt(3 * (l == 0 ? 2.0 / v.in : 2.0 / (v.in + v.out)));
    Rng rng(seed, l);
    for (int64_t i = 0; i < v.in * v.out; ++i)
      ASSERT_EQ(p[v.w_offset + i], static_cast<float>(a * (2 * rng.uniform() - 1))) << "layer " << l << " weight " << i;
  }
}

TEST(MlpInit, PackedReplicasGetTheirOwnSeedsNumbers) {
  const MlpLayout layout(make_config(13, {37, 9}, 5, Activation::Relu, LossKind::SoftmaxCrossEntropy));
  const std::vector<uint64_t> seeds = {4, 17, 4, 1000};
  const ReplicaPacking packing = mlp_packing(layout, 4);
  std::vector<float> packed(packing.span(), NAN);
  init_params(layout, packing, seeds, packed.data());
  std::vector<float> alone(layout.size()), got(layout.size());
  for (int64_t r = 0; r < 4; ++r) {
    init_params(layout, alone.data(), seeds[r]);
    packing.gather(packed.data(), r, got.data());
    EXPECT_EQ(got, alone) << "replica " << r;
  }
  // The packing leaves no float unused here; every one was written.
  for (float v : packed) ASSERT_FALSE(std::isnan(v));
  EXPECT_NE(packed.front(), packed[packing.index(1, 0)]);

  EXPECT_TRUE(throws_error_containing([&] { init_params(layout, packing, {1, 2}, packed.data()); },
                                      "2 seeds for 4 replicas"));
  const MlpLayout other(make_config(14, {37, 9}, 5, Activation::Relu, LossKind::SoftmaxCrossEntropy));
  EXPECT_TRUE(throws_error_containing([&] { init_params(other, packing, seeds, packed.data()); },
                                      "the packing holds replicas of"));
}

TEST(MlpInit, RectifierNetworksGetGlorotOnTheirLinearOutputLayer) {
  // Square layers, where He (2/in) and Glorot (2/(in+out)) differ by a factor of two.
  const MlpLayout layout(make_config(512, {512}, 512, Activation::Relu, LossKind::MeanSquaredError));
  std::vector<float> p(layout.size());
  init_params(layout, p.data(), 5);
  const LayerView& hidden = layout.layers()[0];
  const LayerView& out = layout.layers()[1];
  EXPECT_NEAR(weight_stats(p.data() + hidden.w_offset, 512 * 512).second * 512 / 2.0, 1.0, 0.05);
  EXPECT_NEAR(weight_stats(p.data() + out.w_offset, 512 * 512).second * 1024 / 2.0, 1.0, 0.05);
}

TEST(MlpInit, DeterministicBySeed) {
  const MlpLayout layout(make_config(30, {20}, 10, Activation::Relu, LossKind::SoftmaxCrossEntropy));
  std::vector<float> a(layout.size()), b(layout.size()), c(layout.size());
  init_params(layout, a.data(), 123);
  init_params(layout, b.data(), 123);
  init_params(layout, c.data(), 124);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
}

// ---- CPU backend ---------------------------------------------------------------------------

TEST(MlpCpu, ForwardMatchesDoubleReference) {
  for (Activation act : kActivations) {
    const MlpLayout layout(make_config(13, {17, 9}, 5, act, LossKind::SoftmaxCrossEntropy));
    const int64_t K = 2, batch = 6;
    std::vector<float> p = replica_params(layout, K, 11);
    randomise_biases(layout, p, 12);
    const std::vector<float> x = random_floats(batch * 13, 13, -2, 2);
    MlpCpu mlp(layout, K, 8);
    std::vector<float> out(K * batch * 5, NAN);
    mlp.forward(p.data(), x.data(), batch, out.data());
    for (int64_t k = 0; k < K; ++k) {
      const std::vector<float> pk = replica_of(layout, p, k);
      const auto want = ref_forward(layout, to_double(pk.data(), layout.size()), x, batch);
      for (int64_t i = 0; i < batch * 5; ++i)
        EXPECT_NEAR(out[k * batch * 5 + i], want[i], 1e-5 * std::max(1.0, std::fabs(want[i])))
            << activation_name(act) << " replica " << k << " element " << i;
    }
  }
}

TEST(MlpCpu, GradientsMatchFiniteDifferences) {
  for (LossKind loss : kLosses) {
    for (Activation act : kActivations) {
      const MlpLayout layout(make_config(3, {5, 4}, 3, act, loss));
      const int64_t batch = 4;
      std::vector<float> p(layout.size());
      init_params(layout, p.data(), 5);
      randomise_biases(layout, p, 6);
      const std::vector<float> x = random_floats(batch * 3, 7, -2, 2);
      const std::vector<int32_t> labels = random_labels(batch, 3, 8);
      const std::vector<float> y = random_floats(batch * 3, 9);

      MlpCpu mlp(layout, 1, batch);
      std::vector<float> grads(layout.size(), NAN);
      float loss_value = NAN;
      mlp.forward_backward(p.data(), x.data(), labels.data(), y.data(), batch, grads.data(),
                           &loss_value);

      std::vector<double> pd = to_double(p.data(), layout.size());
      EXPECT_NEAR(loss_value, ref_loss(layout, pd, x, labels, y, batch), 1e-5)
          << activation_name(act) << " " << loss_name(loss);
      const double h = 1e-5;
      auto check = [&](const std::vector<ParamRange>& ranges) {
        for (const ParamRange& r : ranges) {
          for (int64_t i = r.begin; i < r.end; ++i) {
            const double keep = pd[i];
            pd[i] = keep + h;
            const double up = ref_loss(layout, pd, x, labels, y, batch);
            pd[i] = keep - h;
            const double down = ref_loss(layout, pd, x, labels, y, batch);
            pd[i] = keep;
            const double fd = (up - down) / (2 * h);
            EXPECT_NEAR(grads[i], fd, 1e-4 + 1e-3 * std::fabs(fd))
                << activation_name(act) << " " << loss_name(loss) << " param " << i;
          }
        }
      };
      check(layout.weight_ranges());
      check(layout.bias_ranges());
      for (const ParamRange& r : layout.padding_ranges())
        for (int64_t i = r.begin; i < r.end; ++i) EXPECT_EQ(grads[i], 0.0f);
    }
  }
}

TEST(MlpCpu, ReplicasMatchSeparateRuns) {
  // A packed replica and a lone model take the same GEMMs, so they agree exactly.
  for (LossKind loss : kLosses) {
    const MlpLayout layout(make_config(11, {9, 6}, 4, Activation::Gelu, loss));
    const int64_t K = 3, batch = 5;
    std::vector<float> p = replica_params(layout, K, 100);
    randomise_biases(layout, p, 101);
    const std::vector<float> x = random_floats(batch * 11, 102);
    const std::vector<int32_t> labels = random_labels(batch, 4, 103);
    const std::vector<float> y = random_floats(batch * 4, 104);

    MlpCpu packed(layout, K, 7);
    std::vector<float> grads(K * layout.size(), NAN), losses(K, NAN), out(K * batch * 4);
    packed.forward_backward(p.data(), x.data(), labels.data(), y.data(), batch, grads.data(),
                            losses.data());
    packed.forward(p.data(), x.data(), batch, out.data());

    MlpCpu single(layout, 1, 7);
    for (int64_t k = 0; k < K; ++k) {
      std::vector<float> g(layout.size(), NAN), o(batch * 4);
      float l = NAN;
      const std::vector<float> pk = replica_of(layout, p, k);
      single.forward_backward(pk.data(), x.data(), labels.data(), y.data(), batch, g.data(), &l);
      single.forward(pk.data(), x.data(), batch, o.data());
      EXPECT_FLOAT_EQ(losses[k], l);
      const std::vector<float> gk = replica_of(layout, grads, k);
      for (int64_t i = 0; i < layout.size(); ++i)
        EXPECT_FLOAT_EQ(gk[i], g[i]) << "replica " << k << " param " << i;
      for (int64_t i = 0; i < batch * 4; ++i) EXPECT_FLOAT_EQ(out[k * batch * 4 + i], o[i]);
    }
  }
}

// The backend cuts each replica's minibatch into parts of kRowsPerSlice rows (and its output units
// into as many parts) and hands the parts to its threads. The number of threads decides only who
// computes which part, so every count gives the one-thread result bit for bit: more threads than
// parts, than replicas, than units of the last layer, and uneven parts included. (A model this small
// would run on one thread by default: set_min_flops_per_thread(0) splits it anyway.)
TEST(MlpCpu, ThreadSplitsGiveTheOneThreadResult) {
  const MlpLayout layout(make_config(19, {23, 7}, 3, Activation::Tanh, LossKind::SoftmaxCrossEntropy));
  const int64_t max_batch = 2 * MlpCpu::kRowsPerSlice + 5;
  for (int64_t K : {1, 2, 3}) {
    for (int64_t batch : {int64_t{1}, int64_t{9}, max_batch}) {
      std::vector<float> p = replica_params(layout, K, 300 + K);
      randomise_biases(layout, p, 301);
      const std::vector<float> x = random_floats(batch * 19, 302);
      const std::vector<int32_t> labels = random_labels(batch, 3, 303);
      auto run = [&](int threads, std::vector<float>& grads, std::vector<float>& losses,
                     std::vector<float>& out) {
        OmpThreads team(threads);
        MlpCpu mlp(layout, K, max_batch);
        mlp.set_min_flops_per_thread(0);
        ASSERT_EQ(omp_get_max_threads(), threads) << "building the backend changed the team size";
        grads.assign(K * layout.size(), NAN);
        losses.assign(K, NAN);
        out.assign(K * batch * 3, NAN);
        mlp.forward_backward(p.data(), x.data(), labels.data(), nullptr, batch, grads.data(),
                             losses.data());
        mlp.forward(p.data(), x.data(), batch, out.data());
      };
      std::vector<float> g1, l1, o1;
      run(1, g1, l1, o1);
      for (int threads : {2, 3, 4, 7}) {
        std::vector<float> g, l, o;
        run(threads, g, l, o);
        const std::string where = "K=" + std::to_string(K) + " batch=" + std::to_string(batch) +
                                  " threads=" + std::to_string(threads);
        EXPECT_EQ(l, l1) << where;
        EXPECT_EQ(g, g1) << where;
        EXPECT_EQ(o, o1) << where;
      }
    }
  }
}

TEST(MlpCpu, EvaluateCountsCorrectPredictions) {
  // Identity layers: replica 0 predicts the hot input unit, replica 1 the next one (a rotation),
  // so the right answers are known without running the network.
  const MlpLayout layout(make_config(3, {3}, 3, Activation::Identity, LossKind::SoftmaxCrossEntropy));
  std::vector<float> p(2 * layout.size(), 0.0f);
  const ReplicaPacking pk = mlp_packing(layout, 2);
  const LayerView l0 = layout.layers()[0], l1 = layout.layers()[1];
  for (int i = 0; i < 3; ++i) {
    p[pk.index(0, l0.w_offset + i * 3 + i)] = 1.0f;
    p[pk.index(0, l1.w_offset + i * 3 + i)] = 1.0f;
    p[pk.index(1, l0.w_offset + i * 3 + i)] = 1.0f;
    p[pk.index(1, l1.w_offset + ((i + 1) % 3) * 3 + i)] = 1.0f;
  }
  const int64_t n = 10;
  std::vector<float> x(n * 3, 0.0f);
  std::vector<int32_t> labels(n);
  Rng rng(5);
  double hits[2] = {0, 0}, loss_sum[2] = {0, 0};
  for (int64_t i = 0; i < n; ++i) {
    const int hot = static_cast<int>(rng.below(3));
    x[i * 3 + hot] = 1.0f;
    // 7 of 10 labels agree with replica 0, the other 3 with replica 1.
    labels[i] = static_cast<int32_t>(i < 7 ? hot : (hot + 1) % 3);
    const int predicted[2] = {hot, (hot + 1) % 3};
    for (int k = 0; k < 2; ++k) {
      hits[k] += labels[i] == predicted[k];
      // Logits are one-hot at the prediction.
      loss_sum[k] += std::log(std::exp(1.0) + 2.0) - (labels[i] == predicted[k] ? 1.0 : 0.0);
    }
  }
  MlpCpu mlp(layout, 2, 4);  // chunks of 4, 4 and 2
  double loss[2], acc[2];
  mlp.evaluate(p.data(), x.data(), labels.data(), nullptr, n, loss, acc);
  for (int k = 0; k < 2; ++k) {
    EXPECT_DOUBLE_EQ(acc[k], hits[k] / n) << "replica " << k;
    EXPECT_NEAR(loss[k], loss_sum[k] / n, 1e-6) << "replica " << k;
  }
  EXPECT_DOUBLE_EQ(acc[0], 0.7);
  EXPECT_DOUBLE_EQ(acc[1], 0.3);
}

TEST(MlpCpu, EvaluateLossMatchesReferenceAcrossChunks) {
  for (LossKind loss : kLosses) {
    const MlpLayout layout(make_config(6, {8}, 3, Activation::Sigmoid, loss));
    const int64_t n = 23;
    std::vector<float> p = replica_params(layout, 2, 40);
    randomise_biases(layout, p, 41);
    const std::vector<float> x = random_floats(n * 6, 42);
    const std::vector<int32_t> labels = random_labels(n, 3, 43);
    const std::vector<float> y = random_floats(n * 3, 44);
    MlpCpu mlp(layout, 2, 5);
    double l[2], acc[2];
    mlp.evaluate(p.data(), x.data(), labels.data(), y.data(), n, l, acc);
    for (int k = 0; k < 2; ++k) {
      const std::vector<float> pk = replica_of(layout, p, k);
      const auto pd = to_double(pk.data(), layout.size());
      EXPECT_NEAR(l[k], ref_loss(layout, pd, x, labels, y, n), 1e-5);
      if (loss == LossKind::MeanSquaredError) {
        EXPECT_TRUE(std::isnan(acc[k]));
      } else {
        const auto out = ref_forward(layout, pd, x, n);
        double hits = 0;
        for (int64_t i = 0; i < n; ++i)
          hits += std::max_element(&out[i * 3], &out[i * 3] + 3) - &out[i * 3] == labels[i];
        EXPECT_DOUBLE_EQ(acc[k], hits / n);
      }
    }
  }
}

TEST(MlpCpu, RejectsBadInput) {
  const MlpLayout layout(make_config(4, {5}, 3, Activation::Relu, LossKind::SoftmaxCrossEntropy));
  MlpCpu mlp(layout, 1, 4);
  std::vector<float> p(layout.size(), 0.1f), x(4 * 4, 0.5f), g(layout.size()), out(12);
  std::vector<int32_t> labels{0, 1, 2, 1};
  float loss = 0;
  EXPECT_THROW(mlp.forward_backward(p.data(), x.data(), labels.data(), nullptr, 0, g.data(), &loss),
               Error);
  EXPECT_THROW(mlp.forward_backward(p.data(), x.data(), labels.data(), nullptr, 5, g.data(), &loss),
               Error);
  EXPECT_THROW(mlp.forward_backward(p.data(), x.data(), nullptr, nullptr, 4, g.data(), &loss),
               Error);
  labels[2] = 3;
  EXPECT_THROW(mlp.forward_backward(p.data(), x.data(), labels.data(), nullptr, 4, g.data(), &loss),
               Error);
  labels[2] = -1;
  double l, a;
  EXPECT_THROW(mlp.evaluate(p.data(), x.data(), labels.data(), nullptr, 4, &l, &a), Error);
  EXPECT_THROW(mlp.evaluate(p.data(), x.data(), labels.data(), nullptr, 0, &l, &a), Error);
  EXPECT_THROW(mlp.forward(p.data(), x.data(), 9, out.data()), Error);

  const MlpLayout reg(make_config(4, {5}, 3, Activation::Relu, LossKind::MeanSquaredError));
  MlpCpu mse(reg, 1, 4);
  EXPECT_THROW(mse.forward_backward(p.data(), x.data(), labels.data(), nullptr, 4, g.data(), &loss),
               Error);
}

TEST(MlpCpu, GradientDescentLearnsSeparableBlobs) {
  const MlpLayout layout(make_config(2, {16}, 2, Activation::Tanh, LossKind::SoftmaxCrossEntropy));
  const int64_t n = 64;
  std::vector<float> x(n * 2);
  std::vector<int32_t> labels(n);
  Rng rng(9);
  for (int64_t i = 0; i < n; ++i) {
    labels[i] = static_cast<int32_t>(i % 2);
    const double c = labels[i] ? 1.5 : -1.5;
    x[i * 2] = static_cast<float>(c + 0.5 * rng.normal());
    x[i * 2 + 1] = static_cast<float>(-c + 0.5 * rng.normal());
  }
  std::vector<float> p(layout.size()), g(layout.size());
  init_params(layout, p.data(), 3);
  MlpCpu mlp(layout, 1, n);
  float first = NAN, last = NAN;
  for (int step = 0; step < 100; ++step) {
    mlp.forward_backward(p.data(), x.data(), labels.data(), nullptr, n, g.data(), &last);
    if (step == 0) first = last;
    for (int64_t i = 0; i < layout.size(); ++i) p[i] -= 0.5f * g[i];
  }
  EXPECT_LT(last, 0.2f * first);
  double loss, acc;
  mlp.evaluate(p.data(), x.data(), labels.data(), nullptr, n, &loss, &acc);
  EXPECT_GE(acc, 0.95);
}

TEST(MlpCpu, NamesTheBlasKernels) { EXPECT_FALSE(blas_core_name().empty()); }

// The tests run the GEMM kernels the lrlab command runs (tests/main.cpp): where OpenBLAS fell back
// to generic ones on a CPU that has better, the test process was re-executed with them.
TEST(MlpCpu, TestsRunTheTunedBlasKernels) {
  if (std::getenv("LRLAB_NO_BLAS_TUNE")) GTEST_SKIP() << "LRLAB_NO_BLAS_TUNE is set: OpenBLAS keeps its own choice";
  EXPECT_EQ(blas_core_override(), "") << "OpenBLAS runs " << blas_core_name();
}

// ---- CUDA backend --------------------------------------------------------------------------

template <typename T>
class DeviceArray {
 public:
  explicit DeviceArray(size_t n) : n_(n) { LRLAB_CUDA_CHECK(cudaMalloc(&p_, n * sizeof(T))); }
  explicit DeviceArray(const std::vector<T>& v) : DeviceArray(v.size()) { upload(v); }
  ~DeviceArray() { cudaFree(p_); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  T* get() const { return p_; }
  void upload(const std::vector<T>& v) {
    ASSERT_EQ(v.size(), n_);
    LRLAB_CUDA_CHECK(cudaMemcpy(p_, v.data(), n_ * sizeof(T), cudaMemcpyHostToDevice));
    // The MLP runs on a non-blocking stream, which does not wait for the legacy default stream.
    LRLAB_CUDA_CHECK(cudaDeviceSynchronize());
  }
  std::vector<T> download() const {
    std::vector<T> v(n_);
    LRLAB_CUDA_CHECK(cudaDeviceSynchronize());
    LRLAB_CUDA_CHECK(cudaMemcpy(v.data(), p_, n_ * sizeof(T), cudaMemcpyDeviceToHost));
    return v;
  }
  // All-ones bytes are a NaN float: any output the GPU fails to write shows up.
  void poison() {
    LRLAB_CUDA_CHECK(cudaDeviceSynchronize());
    LRLAB_CUDA_CHECK(cudaMemset(p_, 0xFF, n_ * sizeof(T)));
    LRLAB_CUDA_CHECK(cudaDeviceSynchronize());
  }

 private:
  T* p_ = nullptr;
  size_t n_;
};


void expect_close(const std::vector<float>& got, const std::vector<float>& want, double rel,
                  double abs, const std::string& what) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i)
    ASSERT_NEAR(got[i], want[i], abs + rel * std::fabs(want[i])) << what << " element " << i;
}

struct Minibatch {
  std::vector<float> x, y;
  std::vector<int32_t> labels;
};

Minibatch random_minibatch(const MlpConfig& c, int64_t batch, uint64_t seed) {
  return {random_floats(batch * c.inputs, seed, -2, 2), random_floats(batch * c.outputs, seed + 1),
          random_labels(batch, c.outputs, seed + 2)};
}

// One forward-backward pass of K replicas over a minibatch, on the CPU path and on the GPU path; the
// GPU's outputs are poisoned first, so a float no kernel writes reads NaN.
struct BothPaths {
  std::vector<float> cpu_grads, cpu_loss, gpu_grads, gpu_loss;
};

BothPaths forward_backward_both(const MlpLayout& layout, int64_t K, const std::vector<float>& p,
                                const Minibatch& mb, int64_t batch, const TestStream& stream,
                                bool allow_tf32 = false) {
  BothPaths r;
  r.cpu_grads.resize(K * layout.size());
  r.cpu_loss.resize(K);
  MlpCpu cpu(layout, K, batch);
  cpu.forward_backward(p.data(), mb.x.data(), mb.labels.data(), mb.y.data(), batch, r.cpu_grads.data(),
                       r.cpu_loss.data());
  MlpCuda gpu(layout, K, batch, stream.get(), allow_tf32);
  DeviceArray<float> dp(p), dx(mb.x), dy(mb.y), dgrads(K * layout.size()), dloss(K);
  DeviceArray<int32_t> dl(mb.labels);
  dgrads.poison();
  dloss.poison();
  gpu.forward_backward(dp.get(), dx.get(), dl.get(), dy.get(), batch, dgrads.get(), dloss.get());
  stream.sync();
  r.gpu_grads = dgrads.download();
  r.gpu_loss = dloss.download();
  return r;
}

TEST(MlpCuda, MatchesCpu) {
  LRLAB_REQUIRE_GPU();
  TestStream stream;
  // The first layer as one wide GEMM (12 x 36 weights: the replicas' matrices adjoin), as a
  // strided-batched one (13 x 37: padding between them), and a network without hidden layers.
  struct Shape {
    int64_t in;
    std::vector<int64_t> hidden;
  };
  const Shape shapes[] = {{12, {36, 9}}, {13, {37, 9}}, {13, {}}};
  for (const Shape& shape : shapes) {
    for (LossKind loss : kLosses) {
      for (Activation act : kActivations) {
        const MlpLayout layout(make_config(shape.in, shape.hidden, 5, act, loss));
        const std::string what = std::string(activation_name(act)) + " " + loss_name(loss) + " in=" +
                                 std::to_string(shape.in) + " layers=" + std::to_string(layout.layers().size());
        // A batch over 32 rows, so that every lane of the bias-gradient reductions has rows to add.
        const int64_t K = 3, max_batch = 48, batch = 45, n = 100;
        std::vector<float> p = replica_params(layout, K, 60);
        randomise_biases(layout, p, 61);
        MlpCpu cpu(layout, K, max_batch);
        MlpCuda gpu(layout, K, max_batch, stream.get());
        DeviceArray<float> dp(p), dgrads(K * layout.size()), dloss(K), dout(K * batch * 5);
        for (uint64_t trial = 0; trial < 2; ++trial) {
          const Minibatch mb = random_minibatch(layout.config(), batch, 70 + 10 * trial);
          DeviceArray<float> dx(mb.x), dy(mb.y);
          DeviceArray<int32_t> dl(mb.labels);
          std::vector<float> grads(K * layout.size()), losses(K), out(K * batch * 5);
          cpu.forward_backward(p.data(), mb.x.data(), mb.labels.data(), mb.y.data(), batch,
                               grads.data(), losses.data());
          cpu.forward(p.data(), mb.x.data(), batch, out.data());

          dgrads.poison();
          dloss.poison();
          dout.poison();
          gpu.forward_backward(dp.get(), dx.get(), dl.get(), dy.get(), batch, dgrads.get(),
                               dloss.get());
          gpu.forward(dp.get(), dx.get(), batch, dout.get());
          stream.sync();
          expect_close(dout.download(), out, 1e-5, 1e-5, what + " forward");
          expect_close(dloss.download(), losses, 1e-5, 1e-6, what + " loss");
          // Padding is compared too: the CPU writes exact zeros there.
          expect_close(dgrads.download(), grads, 1e-4, 1e-6, what + " grads");
        }
        // Evaluation over several chunks, with a short last one.
        const Minibatch all = random_minibatch(layout.config(), n, 90);
        DeviceArray<float> dx(all.x), dy(all.y);
        DeviceArray<int32_t> dl(all.labels);
        double cl[K], ca[K], gl[K], ga[K];
        cpu.evaluate(p.data(), all.x.data(), all.labels.data(), all.y.data(), n, cl, ca);
        gpu.evaluate(dp.get(), dx.get(), dl.get(), dy.get(), n, gl, ga);
        for (int64_t k = 0; k < K; ++k) {
          EXPECT_NEAR(gl[k], cl[k], 1e-5 * std::max(1.0, cl[k])) << what;
          if (loss == LossKind::SoftmaxCrossEntropy)
            EXPECT_DOUBLE_EQ(ga[k], ca[k]) << what;
          else
            EXPECT_TRUE(std::isnan(ga[k])) << what;
        }
      }
    }
  }
}

// Above the first layer each bias gradient block reduces 32 columns; MatchesCpu's layers there are
// at most 9 wide, so only a layer wider than 32 (70: three blocks, the last one partial) and an
// output layer of 37 give the blocks after the first any columns to write.
TEST(MlpCuda, BiasGradientsOfLayersWiderThan32ColumnsMatchCpu) {
  LRLAB_REQUIRE_GPU();
  TestStream stream;
  for (LossKind loss : kLosses) {
    const MlpLayout layout(make_config(6, {10, 70}, 37, Activation::Tanh, loss));
    const int64_t K = 2, batch = 40;
    std::vector<float> p = replica_params(layout, K, 80);
    randomise_biases(layout, p, 81);
    const Minibatch mb = random_minibatch(layout.config(), batch, 82);
    const BothPaths r = forward_backward_both(layout, K, p, mb, batch, stream);
    expect_close(r.gpu_grads, r.cpu_grads, 1e-4, 1e-6, loss_name(loss));
  }
}

// The first layer's bias-gradient pass also zeroes the alignment padding after each replica's
// weights and bias, in the warp of the replica's unit 0. With a single unit that warp is the only
// one a replica has: 13 weights leave 3 floats of padding, and the bias 3 more, which must read as
// the CPU's zeros rather than whatever the buffer held.
TEST(MlpCuda, OneUnitFirstLayerWritesItsGradientPadding) {
  LRLAB_REQUIRE_GPU();
  TestStream stream;
  const MlpLayout layout(make_config(13, {1, 6}, 3, Activation::Relu, LossKind::SoftmaxCrossEntropy));
  const int64_t K = 3, batch = 20;
  std::vector<float> p = replica_params(layout, K, 90);
  randomise_biases(layout, p, 91);
  const Minibatch mb = random_minibatch(layout.config(), batch, 92);
  const BothPaths r = forward_backward_both(layout, K, p, mb, batch, stream);
  expect_close(r.gpu_grads, r.cpu_grads, 1e-4, 1e-6, "grads");
}

// A smooth activation: under relu, TF32's rounding moves pre-activations near 0 across it, and each
// such unit drops or adds a whole sample's term in its weight gradients (on an H200, 1.6% of the
// largest gradient, with the right rounding everywhere else). fp32 against the CPU with relu is
// MatchesCpu's.
TEST(MlpCuda, Tf32StaysClose) {
  LRLAB_REQUIRE_GPU();
  TestStream stream;
  const MlpLayout layout(make_config(64, {128}, 10, Activation::Tanh, LossKind::SoftmaxCrossEntropy));
  const int64_t K = 2, batch = 32;
  std::vector<float> p = replica_params(layout, K, 5);
  const Minibatch mb = random_minibatch(layout.config(), batch, 6);
  const BothPaths r = forward_backward_both(layout, K, p, mb, batch, stream, /*allow_tf32=*/true);
  expect_close(r.gpu_loss, r.cpu_loss, 1e-2, 1e-3, "tf32 loss");
  // TF32 keeps 10 mantissa bits; compare against the largest gradient rather than elementwise.
  float scale = 0;
  for (float v : r.cpu_grads) scale = std::max(scale, std::fabs(v));
  for (size_t i = 0; i < r.gpu_grads.size(); ++i) ASSERT_NEAR(r.gpu_grads[i], r.cpu_grads[i], 1e-2 * scale) << i;
}

TEST(MlpCuda, GraphReplayUsesCurrentBuffers) {
  LRLAB_REQUIRE_GPU();
  TestStream stream;
  const MlpLayout layout(make_config(20, {32, 16}, 6, Activation::Gelu, LossKind::SoftmaxCrossEntropy));
  const int64_t K = 4, batch = 16;
  std::vector<float> p = replica_params(layout, K, 30);
  randomise_biases(layout, p, 31);
  MlpCpu cpu(layout, K, batch);
  MlpCuda gpu(layout, K, batch, stream.get());
  DeviceArray<float> dp(p), dx(batch * 20), dgrads(K * layout.size()), dloss(K);
  DeviceArray<int32_t> dl(batch);

  // Loads lazily loaded kernels before capture.
  const Minibatch warm = random_minibatch(layout.config(), batch, 32);
  dx.upload(warm.x);
  dl.upload(warm.labels);
  gpu.forward_backward(dp.get(), dx.get(), dl.get(), nullptr, batch, dgrads.get(), dloss.get());
  stream.sync();

  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  LRLAB_CUDA_CHECK(cudaStreamBeginCapture(stream.get(), cudaStreamCaptureModeThreadLocal));
  gpu.forward_backward(dp.get(), dx.get(), dl.get(), nullptr, batch, dgrads.get(), dloss.get());
  LRLAB_CUDA_CHECK(cudaStreamEndCapture(stream.get(), &graph));
  LRLAB_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));

  for (uint64_t trial = 0; trial < 3; ++trial) {
    const Minibatch mb = random_minibatch(layout.config(), batch, 100 + 10 * trial);
    // Parameters change between replays as an optimizer step would change them.
    for (float& v : p) v *= 0.9f;
    dp.upload(p);
    dx.upload(mb.x);
    dl.upload(mb.labels);
    dgrads.poison();
    dloss.poison();
    LRLAB_CUDA_CHECK(cudaGraphLaunch(exec, stream.get()));
    stream.sync();
    std::vector<float> grads(K * layout.size()), losses(K);
    cpu.forward_backward(p.data(), mb.x.data(), mb.labels.data(), nullptr, batch, grads.data(),
                         losses.data());
    expect_close(dloss.download(), losses, 1e-5, 1e-6, "graph loss");
    expect_close(dgrads.download(), grads, 1e-4, 1e-6, "graph grads");
  }
  LRLAB_CUDA_CHECK(cudaGraphExecDestroy(exec));
  LRLAB_CUDA_CHECK(cudaGraphDestroy(graph));
}

TEST(MlpCuda, ReportsOutOfRangeLabels) {
  LRLAB_REQUIRE_GPU();
  TestStream stream;
  const MlpLayout layout(make_config(4, {8}, 3, Activation::Relu, LossKind::SoftmaxCrossEntropy));
  const int64_t batch = 4;
  std::vector<float> p = replica_params(layout, 1, 1);
  MlpCuda gpu(layout, 1, batch, stream.get());
  DeviceArray<float> dp(p), dx(random_floats(batch * 4, 2)), dgrads(layout.size()), dloss(1);
  DeviceArray<int32_t> good(std::vector<int32_t>{0, 1, 2, 0}), bad(std::vector<int32_t>{0, 7, 2, 0});

  gpu.forward_backward(dp.get(), dx.get(), good.get(), nullptr, batch, dgrads.get(), dloss.get());
  EXPECT_NO_THROW(gpu.check_labels());
  gpu.forward_backward(dp.get(), dx.get(), bad.get(), nullptr, batch, dgrads.get(), dloss.get());
  EXPECT_TRUE(throws_error_containing([&] { gpu.check_labels(); }, "label 7"));
  EXPECT_TRUE(std::isnan(dloss.download()[0]));
  EXPECT_NO_THROW(gpu.check_labels());  // reported once, then cleared
  double l, a;
  EXPECT_THROW(gpu.evaluate(dp.get(), dx.get(), bad.get(), nullptr, batch, &l, &a), Error);
  EXPECT_THROW(gpu.forward_backward(dp.get(), dx.get(), good.get(), nullptr, batch + 1,
                                    dgrads.get(), dloss.get()),
               Error);
}

TEST(MlpCuda, InitParamsDrawsTheHostsNumbers) {
  LRLAB_REQUIRE_GPU();
  TestStream stream;
  // Both first-layer packings: one wide matrix (12 x 36) and strided-batched with padding (13 x 37).
  for (int64_t in : {12, 13}) {
    const MlpLayout layout(make_config(in, {36 + in - 12, 9}, 5, Activation::Gelu, LossKind::SoftmaxCrossEntropy));
    const int64_t K = 5;
    const std::vector<uint64_t> seeds = {3, 1, 4, 1, 5};
    const ReplicaPacking packing = mlp_packing(layout, K);
    std::vector<float> want(packing.span(), NAN);
    init_params(layout, packing, seeds, want.data(), Init::Xavier);
    MlpCuda gpu(layout, K, 8, stream.get());
    DeviceArray<float> dp(static_cast<size_t>(packing.span()));
    dp.poison();
    gpu.init_params(dp.get(), seeds, Init::Xavier);
    stream.sync();
    const std::vector<float> got = dp.download();
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i], want[i]) << "in=" << in << " float " << i;
  }
}

TEST(MlpCuda, MoveKeepsWorking) {
  LRLAB_REQUIRE_GPU();
  TestStream stream;
  const MlpLayout layout(make_config(4, {8}, 3, Activation::Tanh, LossKind::MeanSquaredError));
  std::vector<float> p = replica_params(layout, 1, 1);
  const Minibatch mb = random_minibatch(layout.config(), 4, 3);
  MlpCpu cpu(layout, 1, 4);
  std::vector<float> grads(layout.size());
  float loss = 0;
  cpu.forward_backward(p.data(), mb.x.data(), nullptr, mb.y.data(), 4, grads.data(), &loss);

  MlpCuda first(layout, 1, 4, stream.get());
  MlpCuda moved(std::move(first));
  DeviceArray<float> dp(p), dx(mb.x), dy(mb.y), dgrads(layout.size()), dloss(1);
  dgrads.poison();
  moved.forward_backward(dp.get(), dx.get(), nullptr, dy.get(), 4, dgrads.get(), dloss.get());
  stream.sync();
  expect_close(dgrads.download(), grads, 1e-4, 1e-6, "moved grads");
  EXPECT_EQ(moved.replicas(), 1);
}

}  // namespace
}  // namespace lrlab
