// The CPU backend of the MLP: row-major OpenBLAS GEMMs per replica, OpenMP elementwise passes
// built on the shared formulas of nn_math.hpp.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "lrlab/error.hpp"
#include "lrlab/mlp.hpp"

namespace lrlab {

namespace {

// Elementwise passes run on the OpenMP team only when they are large. Waking the team between
// GEMMs leaves its threads spinning while OpenBLAS's own threads want the same cores: on the
// 2-core development machine a K=4 sweep of the 784-256-128-10 MLP took 4x the CPU time with
// small passes parallelised. A ReLU pass below this size takes about a millisecond on one core.
constexpr int64_t kParallelMin = 1 << 20;

int to_int(int64_t v) { return static_cast<int>(v); }

// Calls f(begin, end) on contiguous parts of [0, n), one per OpenMP thread when the pass is
// large enough (n items of `width` elements each). The loops live in plain functions with
// __restrict parameters: GCC does not vectorise them reliably inside an outlined OpenMP body.
template <typename F>
void parallel_ranges(int64_t n, int64_t width, F&& f) {
  if (n * width < kParallelMin) {
    f(int64_t{0}, n);
    return;
  }
#pragma omp parallel
  {
    const int64_t parts = omp_get_num_threads(), t = omp_get_thread_num();
    f(n * t / parts, n * (t + 1) / parts);
  }
}

// z = z + b; a = f(z) over one row.
template <Activation A>
void bias_activation_row(float* __restrict z, float* __restrict a, const float* __restrict b,
                         int64_t width) {
  for (int64_t j = 0; j < width; ++j) {
    const float v = z[j] + b[j];
    z[j] = v;
    a[j] = ActivationFn<A>::forward(v);
  }
}

void add_bias_row(float* __restrict z, const float* __restrict b, int64_t width) {
  for (int64_t j = 0; j < width; ++j) z[j] += b[j];
}

// delta *= f'(z): the gradient w.r.t. activations becomes one w.r.t. pre-activations.
template <Activation A>
void activation_backward(float* __restrict delta, const float* __restrict z, int64_t n) {
  for (int64_t i = 0; i < n; ++i) delta[i] *= ActivationFn<A>::derivative(z[i]);
}

void check_labels(const int32_t* labels, int64_t n, int64_t classes) {
  for (int64_t i = 0; i < n; ++i)
    LRLAB_REQUIRE(label_in_range(labels[i], classes), "label ", labels[i], " of sample ", i,
                  " is outside [0, ", classes, ")");
}

}  // namespace


MlpCpu::MlpCpu(const MlpLayout& layout, int64_t replicas, int64_t max_batch)
    : layout_(layout), replicas_(replicas), max_batch_(max_batch) {
  detail::check_backend_shape(replicas, max_batch);
  int64_t widest = 0;
  for (size_t l = 0; l < layout_.layers().size(); ++l) {
    const int64_t out = layout_.layers()[l].out;
    widest = std::max(widest, out);
    pre_.emplace_back(replicas * max_batch * out);
    if (l + 1 < layout_.layers().size()) post_.emplace_back(replicas * max_batch * out);
  }
  delta_[0].resize(replicas * max_batch * widest);
  delta_[1].resize(replicas * max_batch * widest);
  ones_.assign(max_batch, 1.0f);
  row_loss_.resize(replicas * max_batch);
  padding_ = layout_.padding_ranges();
}

// Activations are stored [replica][row][unit] for the current batch, so replica k's block starts
// at k * batch * width and GEMMs see plain row-major matrices.
void MlpCpu::run_forward(const float* params, const float* x, int64_t batch) {
  const auto& layers = layout_.layers();
  const int64_t stride = layout_.size();
  for (size_t l = 0; l < layers.size(); ++l) {
    const LayerView& v = layers[l];
    float* z = pre_[l].data();
    for (int64_t k = 0; k < replicas_; ++k) {
      const float* in = l == 0 ? x : post_[l - 1].data() + k * batch * v.in;
      // Z[batch x out] = A[batch x in] * W^T
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, to_int(batch), to_int(v.out),
                  to_int(v.in), 1.0f, in, to_int(v.in), params + k * stride + v.w_offset,
                  to_int(v.in), 0.0f, z + k * batch * v.out, to_int(v.out));
    }
    const int64_t rows = replicas_ * batch;
    auto bias_of = [&](int64_t r) { return params + (r / batch) * stride + v.b_offset; };
    if (l + 1 == layers.size()) {
      parallel_ranges(rows, v.out, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) add_bias_row(z + r * v.out, bias_of(r), v.out);
      });
    } else {
      float* a = post_[l].data();
      dispatch_activation(layout_.config().activation, [&](auto act) {
        parallel_ranges(rows, v.out, [&](int64_t r0, int64_t r1) {
          for (int64_t r = r0; r < r1; ++r)
            bias_activation_row<decltype(act)::value>(z + r * v.out, a + r * v.out, bias_of(r),
                                                      v.out);
        });
      });
    }
  }
}

void MlpCpu::forward_backward(const float* params, const float* x, const int32_t* labels,
                              const float* y, int64_t batch, float* grads, float* loss) {
  const MlpConfig& cfg = layout_.config();
  detail::check_minibatch(cfg, "MlpCpu::forward_backward", batch, max_batch_, params, x, labels, y);
  LRLAB_REQUIRE(grads != nullptr && loss != nullptr,
                "MlpCpu::forward_backward: grads and loss must not be null");
  const bool classify = cfg.loss == LossKind::SoftmaxCrossEntropy;
  if (classify) check_labels(labels, batch, cfg.outputs);

  run_forward(params, x, batch);

  const auto& layers = layout_.layers();
  const int64_t stride = layout_.size();
  const int64_t classes = cfg.outputs;
  const int64_t rows = replicas_ * batch;
  const float scale = 1.0f / static_cast<float>(batch);
  const float* logits = pre_.back().data();
  float* cur = delta_[0].data();
  float* next = delta_[1].data();
  float* row_loss = row_loss_.data();
  parallel_ranges(rows, classes, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t i = r % batch;
      row_loss[r] = classify ? softmax_cross_entropy(logits + r * classes, classes, labels[i],
                                                     scale, cur + r * classes)
                             : mean_squared_error(logits + r * classes, y + i * classes, classes,
                                                  scale, cur + r * classes);
    }
  });
  for (int64_t k = 0; k < replicas_; ++k) {
    double sum = 0.0;
    for (int64_t i = 0; i < batch; ++i) sum += row_loss[k * batch + i];
    loss[k] = static_cast<float>(sum / static_cast<double>(batch));
  }

  for (size_t l = layers.size(); l-- > 0;) {
    const LayerView& v = layers[l];
    for (int64_t k = 0; k < replicas_; ++k) {
      const float* in = l == 0 ? x : post_[l - 1].data() + k * batch * v.in;
      const float* d = cur + k * batch * v.out;
      float* g = grads + k * stride;
      // dW[out x in] = D^T[out x batch] * A[batch x in]
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, to_int(v.out), to_int(v.in),
                  to_int(batch), 1.0f, d, to_int(v.out), in, to_int(v.in), 0.0f, g + v.w_offset,
                  to_int(v.in));
      // db[out] = D^T * 1
      cblas_sgemv(CblasRowMajor, CblasTrans, to_int(batch), to_int(v.out), 1.0f, d, to_int(v.out),
                  ones_.data(), 1, 0.0f, g + v.b_offset, 1);
      if (l > 0) {
        // dA_prev[batch x in] = D[batch x out] * W[out x in]
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, to_int(batch), to_int(v.in),
                    to_int(v.out), 1.0f, d, to_int(v.out), params + k * stride + v.w_offset,
                    to_int(v.in), 0.0f, next + k * batch * v.in, to_int(v.in));
      }
    }
    if (l > 0) {
      const float* z = pre_[l - 1].data();
      dispatch_activation(cfg.activation, [&](auto act) {
        parallel_ranges(rows * v.in, 1, [&](int64_t i0, int64_t i1) {
          activation_backward<decltype(act)::value>(next + i0, z + i0, i1 - i0);
        });
      });
      std::swap(cur, next);
    }
  }

  for (int64_t k = 0; k < replicas_; ++k)
    for (const ParamRange& p : padding_)
      std::fill(grads + k * stride + p.begin, grads + k * stride + p.end, 0.0f);
}

void MlpCpu::evaluate(const float* params, const float* x, const int32_t* labels, const float* y,
                      int64_t n, double* loss, double* accuracy) {
  const MlpConfig& cfg = layout_.config();
  LRLAB_REQUIRE(n >= 1, "MlpCpu::evaluate: no samples to evaluate");
  LRLAB_REQUIRE(loss != nullptr && accuracy != nullptr,
                "MlpCpu::evaluate: loss and accuracy must not be null");
  const bool classify = cfg.loss == LossKind::SoftmaxCrossEntropy;
  const int64_t classes = cfg.outputs;
  std::vector<double> loss_sum(replicas_, 0.0), correct(replicas_, 0.0);
  for (int64_t start = 0; start < n; start += max_batch_) {
    const int64_t batch = std::min(max_batch_, n - start);
    const int32_t* lab = labels ? labels + start : nullptr;
    const float* tgt = y ? y + start * classes : nullptr;
    detail::check_minibatch(cfg, "MlpCpu::evaluate", batch, max_batch_, params,
                            x + start * cfg.inputs, lab, tgt);
    if (classify) check_labels(lab, batch, classes);
    run_forward(params, x + start * cfg.inputs, batch);
    const float* out = pre_.back().data();
    for (int64_t k = 0; k < replicas_; ++k) {
      for (int64_t i = 0; i < batch; ++i) {
        const float* o = out + (k * batch + i) * classes;
        if (classify) {
          loss_sum[k] += softmax_cross_entropy(o, classes, lab[i], 0.0f, nullptr);
          correct[k] += argmax(o, classes) == lab[i] ? 1.0 : 0.0;
        } else {
          loss_sum[k] += mean_squared_error(o, tgt + i * classes, classes, 0.0f, nullptr);
        }
      }
    }
  }
  for (int64_t k = 0; k < replicas_; ++k) {
    loss[k] = loss_sum[k] / static_cast<double>(n);
    accuracy[k] = classify ? correct[k] / static_cast<double>(n)
                           : std::numeric_limits<double>::quiet_NaN();
  }
}

void MlpCpu::forward(const float* params, const float* x, int64_t batch, float* out) {
  detail::check_minibatch(layout_.config(), "MlpCpu::forward", batch, max_batch_, params, x,
                          nullptr, nullptr, false);
  LRLAB_REQUIRE(out != nullptr, "MlpCpu::forward: out must not be null");
  run_forward(params, x, batch);
  std::copy(pre_.back().begin(), pre_.back().begin() + replicas_ * batch * layout_.config().outputs,
            out);
}

}  // namespace lrlab
