// The CPU backend of the MLP: OpenBLAS GEMMs and elementwise passes built on the shared formulas
// of nn_math.hpp, threaded by lrlab itself rather than by OpenBLAS.
//
// Why lrlab threads it: the GEMMs of a minibatch are small (batch 128), and OpenBLAS splitting each
// of them across cores costs a hand-off per call, while its pool threads fight the OpenMP team of
// the elementwise passes for the same cores. Measured on the 2-core development machine for the
// 784-256-128-10 MLP at batch 128 (GEMMs only): 8 replicas one after another with 2 OpenBLAS threads
// ran at 128-174 GFLOP/s, the same replicas spread over 2 OpenMP threads with single-threaded GEMMs
// at 189-215 GFLOP/s. So every GEMM runs on the calling thread and the work is split here, into
// parts of each replica: its minibatch rows (forward and the propagated gradients) and its output
// units (weight gradients), ceil(batch / kRowsPerSlice) parts of equal size (133 rows: 44, 44, 45),
// handed to the threads (cpu_pool.hpp).
//
// The parts do not depend on the number of threads because OpenBLAS's results depend on the shapes
// it is given: with its SkylakeX kernels, a 128-row GEMM of the last layer (10 units) and the same
// rows as two 64-row GEMMs differ in the last bits, and so does a bias-gradient GEMV split by
// columns. With parts fixed, a replica computes the same numbers on any number of threads, packed
// or alone: a sweep's configuration, its shard under mpirun and `lrlab train` of the same
// configuration agree bit for bit. The price: one replica uses at most batch / kRowsPerSlice threads
// (2 at batch 128); configurations trained together use the rest.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "cpu_pool.hpp"
#include "lrlab/blas_env.hpp"
#include "lrlab/error.hpp"
#include "lrlab/mlp.hpp"

namespace lrlab {

namespace {

int to_int(int64_t v) { return static_cast<int>(v); }

// z = z + b; a = f(z) over `rows` rows of `width`.
template <Activation A>
void bias_activation(float* __restrict z, float* __restrict a, const float* __restrict b,
                     int64_t rows, int64_t width) {
  for (int64_t r = 0; r < rows; ++r, z += width, a += width)
    for (int64_t j = 0; j < width; ++j) {
      const float v = z[j] + b[j];
      z[j] = v;
      a[j] = ActivationFn<A>::forward(v);
    }
}

void add_bias(float* __restrict z, const float* __restrict b, int64_t rows, int64_t width) {
  for (int64_t r = 0; r < rows; ++r, z += width)
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

// [begin, end) of part s of n items split into `parts` nearly equal parts.
std::pair<int64_t, int64_t> part(int64_t n, int64_t s, int64_t parts) {
  return {n * s / parts, n * (s + 1) / parts};
}

}  // namespace

MlpCpu::MlpCpu(const MlpLayout& layout, int64_t replicas, int64_t max_batch)
    : layout_(layout),
      packing_((detail::check_backend_shape(layout, replicas, max_batch, Device::CPU), mlp_packing(layout, replicas))),
      replicas_(replicas),
      max_batch_(max_batch) {
  for (size_t l = 0; l < layout_.layers().size(); ++l) {
    const int64_t out = layout_.layers()[l].out;
    pre_.emplace_back(replicas * max_batch * out);
    delta_.emplace_back(replicas * max_batch * out);
    if (l + 1 < layout_.layers().size()) post_.emplace_back(replicas * max_batch * out);
  }
  ones_.assign(max_batch, 1.0f);
  row_loss_.resize(replicas * max_batch);
  padding_ = layout_.padding_ranges();
  // The threading contract of this backend (see the top of this file).
  use_single_threaded_blas();
}

MlpCpu::Work MlpCpu::plan(int64_t batch, int passes) const {
  const double flops = 2.0 * passes * static_cast<double>(batch) * static_cast<double>(layout_.size()) *
                       static_cast<double>(replicas_);
  int64_t threads = detail::cpu_thread_budget();
  if (min_flops_per_thread_ > 0)
    threads = std::min(threads, std::max<int64_t>(1, static_cast<int64_t>(flops / min_flops_per_thread_)));
  const int64_t slices = (batch + kRowsPerSlice - 1) / kRowsPerSlice;
  return {slices, std::min(threads, replicas_ * slices)};
}

template <typename F>
void MlpCpu::for_each_item(const Work& sp, F&& f) {
  detail::parallel_items(replicas_ * sp.slices, sp.threads, [&](int64_t i) { f(i / sp.slices, i % sp.slices); });
}

// Rows [r0, r1) of replica k through every layer. Activations are stored [replica][row][unit] for
// the current batch, so replica k's block of a layer starts at k * batch * width.
void MlpCpu::forward_rows(const float* params, const float* x, int64_t batch, int64_t k,
                          int64_t r0, int64_t r1) {
  const int64_t rows = r1 - r0;
  if (rows == 0) return;
  const auto& layers = layout_.layers();
  for (size_t l = 0; l < layers.size(); ++l) {
    const LayerView& v = layers[l];
    const float* in = l == 0 ? x + r0 * v.in : post_[l - 1].data() + (k * batch + r0) * v.in;
    float* z = pre_[l].data() + (k * batch + r0) * v.out;
    // Z[rows x out] = A[rows x in] * W^T
    const float* w = params + packing_.index(k, v.w_offset);
    const float* b = params + packing_.index(k, v.b_offset);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, to_int(rows), to_int(v.out),
                to_int(v.in), 1.0f, in, to_int(v.in), w, to_int(v.in), 0.0f, z, to_int(v.out));
    if (l + 1 == layers.size()) {
      add_bias(z, b, rows, v.out);
    } else {
      float* a = post_[l].data() + (k * batch + r0) * v.out;
      dispatch_activation(layout_.config().activation, [&](auto act) {
        bias_activation<decltype(act)::value>(z, a, b, rows, v.out);
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

  const auto& layers = layout_.layers();
  const int64_t classes = cfg.outputs;
  const float scale = 1.0f / static_cast<float>(batch);
  const Work sp = plan(batch, 3);

  // Rows of the minibatch: forward, loss, and the gradients w.r.t. pre-activations, which for a
  // row depend on that row alone.
  auto rows_part = [&](int64_t k, int64_t s) {
    const auto [r0, r1] = part(batch, s, sp.slices);
    const int64_t rows = r1 - r0;
    if (rows == 0) return;
    forward_rows(params, x, batch, k, r0, r1);
    const float* logits = pre_.back().data();
    float* d = delta_.back().data();
    for (int64_t r = k * batch + r0; r < k * batch + r1; ++r) {
      const int64_t i = r - k * batch;
      row_loss_[r] = classify ? softmax_cross_entropy(logits + r * classes, classes, labels[i],
                                                      scale, d + r * classes)
                              : mean_squared_error(logits + r * classes, y + i * classes, classes,
                                                   scale, d + r * classes);
    }
    for (size_t l = layers.size() - 1; l > 0; --l) {
      const LayerView& v = layers[l];
      float* prev = delta_[l - 1].data() + (k * batch + r0) * v.in;
      // dA_prev[rows x in] = D[rows x out] * W[out x in]
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, to_int(rows), to_int(v.in),
                  to_int(v.out), 1.0f, delta_[l].data() + (k * batch + r0) * v.out, to_int(v.out),
                  params + packing_.index(k, v.w_offset), to_int(v.in), 0.0f, prev, to_int(v.in));
      const float* z = pre_[l - 1].data() + (k * batch + r0) * v.in;
      dispatch_activation(cfg.activation, [&](auto act) {
        activation_backward<decltype(act)::value>(prev, z, rows * v.in);
      });
    }
  };
  // Output units of every layer: the weight and bias gradients sum over all rows.
  auto units_part = [&](int64_t k, int64_t s) {
    for (size_t l = 0; l < layers.size(); ++l) {
      const LayerView& v = layers[l];
      const auto [o0, o1] = part(v.out, s, sp.slices);
      if (o0 == o1) continue;
      const float* in = l == 0 ? x : post_[l - 1].data() + k * batch * v.in;
      const float* d = delta_[l].data() + k * batch * v.out + o0;
      // dW[o0:o1 x in] = D[:, o0:o1]^T * A[batch x in]
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, to_int(o1 - o0), to_int(v.in),
                  to_int(batch), 1.0f, d, to_int(v.out), in, to_int(v.in), 0.0f,
                  grads + packing_.index(k, v.w_offset) + o0 * v.in, to_int(v.in));
      // db[o0:o1] = D[:, o0:o1]^T * 1
      cblas_sgemv(CblasRowMajor, CblasTrans, to_int(batch), to_int(o1 - o0), 1.0f, d,
                  to_int(v.out), ones_.data(), 1, 0.0f, grads + packing_.index(k, v.b_offset) + o0, 1);
    }
    // Each padding range lies inside one tensor's block of the packing, so it is contiguous.
    if (s == 0)
      for (const ParamRange& p : padding_) {
        float* at = grads + packing_.index(k, p.begin);
        std::fill(at, at + (p.end - p.begin), 0.0f);
      }
  };

  if (sp.slices == 1) {
    // Whole replicas per thread: no thread needs another's rows.
    for_each_item(sp, [&](int64_t k, int64_t s) {
      rows_part(k, s);
      units_part(k, s);
    });
  } else {
    for_each_item(sp, rows_part);
    for_each_item(sp, units_part);
  }

  for (int64_t k = 0; k < replicas_; ++k) {
    double sum = 0.0;
    for (int64_t i = 0; i < batch; ++i) sum += row_loss_[k * batch + i];
    loss[k] = static_cast<float>(sum / static_cast<double>(batch));
  }
}

void MlpCpu::run_forward(const float* params, const float* x, int64_t batch) {
  const Work sp = plan(batch, 1);
  for_each_item(sp, [&](int64_t k, int64_t s) {
    const auto [r0, r1] = part(batch, s, sp.slices);
    forward_rows(params, x, batch, k, r0, r1);
  });
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
