// The CUDA backend's plan (src/mlp_plan.hpp), carried out on the CPU: every GEMM by a plain
// column-major reference with cuBLAS's meaning of the arguments, every kernel by a loop over the
// plan's indexes, in the order MlpCuda runs them. Forward outputs and gradients must equal
// MlpCpu's, so the GPU's shapes, leading dimensions, strides and index arithmetic are checked
// where no GPU exists. (Whether the kernels follow the plan is for the GPU tests.)
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "lrlab/mlp.hpp"
#include "lrlab/nn_math.hpp"
#include "lrlab/rng.hpp"
#include "mlp_plan.hpp"
#include "test_util.hpp"

using namespace lrlab;
using detail::Gemm;
using detail::GemmOperand;
using detail::MlpBuffer;
using detail::MlpLayerPlan;
using lrlab::testing::make_config;

namespace {

// cublasSgemmStridedBatched with alpha 1, beta 0: C = op(A) op(B), column-major.
void reference_gemm(const Gemm& g, const float* A, const float* B, float* C) {
  for (int i = 0; i < g.count; ++i) {
    const float* a = A + i * g.a.stride;
    const float* b = B + i * g.b.stride;
    float* c = C + i * g.c.stride;
    for (int col = 0; col < g.n; ++col)
      for (int row = 0; row < g.m; ++row) {
        double sum = 0.0;
        for (int p = 0; p < g.k; ++p) {
          const double x = g.trans_a ? a[p + int64_t{row} * g.a.ld] : a[row + int64_t{p} * g.a.ld];
          const double y = g.trans_b ? b[col + int64_t{p} * g.b.ld] : b[p + int64_t{col} * g.b.ld];
          sum += x * y;
        }
        c[row + int64_t{col} * g.c.ld] = static_cast<float>(sum);
      }
  }
}

// MlpCuda's forward and backward over one minibatch, run from the plan on the host.
class PlanRunner {
 public:
  PlanRunner(const MlpLayout& layout, int64_t replicas, int64_t batch)
      : layout_(layout), packing_(mlp_packing(layout, replicas)), K_(replicas), batch_(batch) {
    int64_t widest = 0;
    for (const LayerView& v : layout.layers()) {
      // NaN everywhere a pass must write before it reads.
      pre_.emplace_back(K_ * batch * v.out, std::numeric_limits<float>::quiet_NaN());
      post_.emplace_back(K_ * batch * v.out, std::numeric_limits<float>::quiet_NaN());
      widest = std::max(widest, v.out);
    }
    delta_.assign(K_ * batch * widest, std::numeric_limits<float>::quiet_NaN());
    delta_prev_ = delta_;
  }

  // The output layer [replicas x batch x outputs].
  const std::vector<float>& forward(const float* params, const float* x) {
    const auto& layers = layout_.layers();
    for (size_t l = 0; l < layers.size(); ++l) {
      const LayerView& v = layers[l];
      const MlpLayerPlan p = detail::mlp_layer_plan(layout_, packing_, batch_, l);
      run(p.forward, params, x, nullptr);
      const bool last = l + 1 == layers.size();
      const int64_t n = K_ * batch_ * v.out;
      dispatch_activation(last ? Activation::Identity : layout_.config().activation, [&](auto tag) {
        for (int64_t i = 0; i < n; ++i) {
          const int64_t k = i / (batch_ * v.out);
          const float z = pre_[l][i] + params[p.bias_at + k * p.bias_stride + (i / p.unit_step) % v.out];
          pre_[l][i] = z;
          if (!last) post_[l][i] = ActivationFn<decltype(tag)::value>::forward(z);
        }
      });
    }
    return pre_.back();
  }

  // Gradients of the mean cross-entropy, written into grads as MlpCuda writes them.
  void backward(const float* params, const float* x, const std::vector<int32_t>& labels, float* grads) {
    const auto& layers = layout_.layers();
    const int64_t classes = layout_.config().outputs;
    for (int64_t r = 0; r < K_ * batch_; ++r)
      softmax_cross_entropy(pre_.back().data() + r * classes, classes, labels[r % batch_],
                            1.0f / static_cast<float>(batch_), delta_.data() + r * classes);
    for (size_t l = layers.size(); l-- > 0;) {
      const LayerView& v = layers[l];
      const MlpLayerPlan p = detail::mlp_layer_plan(layout_, packing_, batch_, l);
      run(p.weight_grad, params, x, grads);
      for (int64_t k = 0; k < K_; ++k) {
        for (int64_t c = 0; c < v.out; ++c) {
          float s = 0.0f;
          for (int64_t r = 0; r < batch_; ++r)
            s += p.unit_major ? delta_[(k * v.out + c) * batch_ + r] : delta_[(k * batch_ + r) * v.out + c];
          grads[p.bias_at + k * p.bias_stride + c] = s;
        }
        for (int t = 0; t < p.w_pad; ++t) grads[p.w_pad_at + k * p.w_stride + t] = 0.0f;
        for (int t = 0; t < p.b_pad; ++t) grads[p.bias_at + k * p.bias_stride + v.out + t] = 0.0f;
      }
      if (l == 0) break;
      run(p.input_grad, params, x, grads);
      dispatch_activation(layout_.config().activation, [&](auto tag) {
        for (int64_t i = 0; i < K_ * batch_ * v.in; ++i)
          delta_prev_[i] *= ActivationFn<decltype(tag)::value>::derivative(pre_[l - 1][i]);
      });
      std::swap(delta_, delta_prev_);
    }
  }

 private:
  float* buffer(const GemmOperand& o, const float* params, const float* x, float* grads) {
    switch (o.buffer) {
      case MlpBuffer::Input: return const_cast<float*>(x) + o.offset;
      case MlpBuffer::Params: return const_cast<float*>(params) + o.offset;
      case MlpBuffer::Grads: return grads + o.offset;
      case MlpBuffer::Pre: return pre_[o.layer].data() + o.offset;
      case MlpBuffer::Post: return post_[o.layer].data() + o.offset;
      case MlpBuffer::Delta: return delta_.data() + o.offset;
      case MlpBuffer::DeltaPrev: return delta_prev_.data() + o.offset;
    }
    return nullptr;
  }
  void run(const Gemm& g, const float* params, const float* x, float* grads) {
    ASSERT_GE(g.count, 1);
    reference_gemm(g, buffer(g.a, params, x, grads), buffer(g.b, params, x, grads), buffer(g.c, params, x, grads));
  }

  MlpLayout layout_;
  ReplicaPacking packing_;
  int64_t K_, batch_;
  std::vector<std::vector<float>> pre_, post_;
  std::vector<float> delta_, delta_prev_;
};

struct Shape {
  int64_t in;
  std::vector<int64_t> hidden;
  int64_t out, replicas;
  Activation act;
};

TEST(MlpPlan, GpuPlanComputesWhatTheCpuBackendComputes) {
  // The first layer as one wide GEMM (in * out a multiple of 4) or strided-batched, with one and
  // several replicas, deeper networks, and a network without hidden layers.
  const Shape shapes[] = {{12, {36, 9}, 5, 3, Activation::Tanh},   {13, {37, 9}, 5, 3, Activation::Gelu},
                          {13, {}, 5, 3, Activation::Relu},        {12, {36, 9, 7}, 4, 2, Activation::Sigmoid},
                          {13, {37, 9}, 5, 1, Activation::Tanh},   {12, {8}, 3, 4, Activation::Relu},
                          {13, {7}, 3, 4, Activation::Identity}};
  for (const Shape& sh : shapes) {
    const MlpLayout layout(make_config(sh.in, sh.hidden, sh.out, sh.act));
    const std::string what = "in=" + std::to_string(sh.in) + " layers=" + std::to_string(layout.layers().size()) +
                             " K=" + std::to_string(sh.replicas);
    const int64_t K = sh.replicas, batch = 6;
    Rng rng(static_cast<uint64_t>(sh.in * 10 + K));
    std::vector<float> params(K * layout.size()), x(batch * sh.in);
    for (float& v : params) v = static_cast<float>(rng.uniform(-0.5, 0.5));
    for (float& v : x) v = static_cast<float>(rng.uniform(-1, 1));
    std::vector<int32_t> labels(batch);
    for (int32_t& l : labels) l = static_cast<int32_t>(rng.below(sh.out));

    MlpCpu cpu(layout, K, batch);
    std::vector<float> want_grads(params.size()), loss(K), want_out(K * batch * sh.out);
    cpu.forward_backward(params.data(), x.data(), labels.data(), nullptr, batch, want_grads.data(), loss.data());
    cpu.forward(params.data(), x.data(), batch, want_out.data());

    PlanRunner plan(layout, K, batch);
    const std::vector<float> out = plan.forward(params.data(), x.data());
    ASSERT_EQ(out.size(), want_out.size()) << what;
    for (size_t i = 0; i < out.size(); ++i) ASSERT_NEAR(out[i], want_out[i], 1e-5) << what << " output " << i;
    std::vector<float> grads(params.size(), std::numeric_limits<float>::quiet_NaN());
    plan.backward(params.data(), x.data(), labels, grads.data());
    // Every float, padding included: the plan must write each one, and the right value.
    for (size_t i = 0; i < grads.size(); ++i)
      ASSERT_NEAR(grads[i], want_grads[i], 1e-5 + 1e-4 * std::fabs(want_grads[i])) << what << " gradient " << i;
  }
}

TEST(MlpPlan, FirstLayerOfAllReplicasIsOneGemmWhenTheirWeightsAdjoin) {
  const MlpLayout layout(make_config(784, {256, 128}, 10));
  const MlpLayerPlan wide = detail::mlp_layer_plan(layout, mlp_packing(layout, 64), 128, 0);
  EXPECT_EQ(wide.forward.count, 1);
  EXPECT_EQ(wide.forward.n, 64 * 256);
  EXPECT_EQ(wide.weight_grad.count, 1);
  EXPECT_EQ(detail::mlp_layer_plan(layout, mlp_packing(layout, 64), 128, 1).forward.count, 64);
  // 13 x 7 weights leave padding between the replicas' matrices: one strided-batched GEMM instead.
  const MlpLayout odd(make_config(13, {7}, 10));
  EXPECT_EQ(detail::mlp_layer_plan(odd, mlp_packing(odd, 4), 16, 0).forward.count, 4);
}

}  // namespace
