// The CUDA backend of the MLP. The first layer of all K replicas is one wide GEMM: the packing
// (mlp_packing) keeps their weights together as one [K*out x in] matrix, which meets the shared
// minibatch once. The other layers run as strided-batched cuBLAS GEMMs, one batch entry per
// replica. Every GEMM's shape and every index of the kernels come from the host-side plan of
// src/mlp_plan.hpp, which a test checks against MlpCpu without a GPU. The elementwise and per-row
// work are small kernels built on the shared formulas of nn_math.hpp. Nothing here allocates,
// synchronises or touches host memory after the constructor, except evaluate(), check_labels() and
// init_params(), which say so.
#include <cub/block/block_reduce.cuh>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "../src/mlp_plan.hpp"
#include "launch.cuh"
#include "lrlab/cuda_check.hpp"
#include "lrlab/device.hpp"
#include "lrlab/error.hpp"
#include "lrlab/mlp.hpp"

namespace lrlab {

namespace {

constexpr int kThreads = 256;
constexpr int kReduceThreads = 256;
constexpr int kBiasCols = 32;  // columns per bias-gradient block: one coalesced warp-wide read
constexpr int kBiasRows = 8;   // row lanes per bias-gradient block
// The cuBLAS workspace NVIDIA recommends for Hopper; given to the handle so that nothing is
// allocated while a graph is being captured.
constexpr size_t kCublasWorkspace = size_t{32} << 20;

unsigned blocks_for(int64_t n, int threads) {
  // Grid-stride loops cover the rest; this many blocks fill any current GPU.
  return static_cast<unsigned>(std::min<int64_t>((n + threads - 1) / threads, 65536));
}

// z += b (of the element's replica and unit); a = f(z) unless a is null (the linear output layer).
// Element i belongs to replica i / replica_elems and unit (i / unit_step) % width: unit_step is 1
// for [row][unit] activations and the batch size for unit-major ones. Replica k's bias starts at
// bias + k * bias_stride. Index is uint32_t whenever n allows: the three divisions per element
// cost several times as much in 64 bits as in 32 on the GPU, more than the element's memory traffic.
template <Activation A, typename Index>
__global__ void bias_activation_kernel(float* __restrict__ z, float* __restrict__ a,
                                       const float* __restrict__ bias, int64_t bias_stride, Index n,
                                       Index width, Index unit_step, Index replica_elems) {
  for (Index i = blockIdx.x * Index{blockDim.x} + threadIdx.x; i < n; i += Index{gridDim.x} * blockDim.x) {
    const Index k = i / replica_elems;
    const float v = z[i] + bias[k * bias_stride + (i / unit_step) % width];
    z[i] = v;
    if (a) a[i] = ActivationFn<A>::forward(v);
  }
}

template <Activation A>
void launch_bias_activation(float* z, float* a, const float* bias, int64_t bias_stride, int64_t n,
                            int64_t width, int64_t unit_step, int64_t replica_elems, cudaStream_t stream) {
  // Below 2^31 the grid-stride step (at most 2^24) cannot wrap a 32-bit index past n.
  if (n <= std::numeric_limits<int32_t>::max())
    LRLAB_LAUNCH(blocks_for(n, kThreads), kThreads, stream, bias_activation_kernel<A, uint32_t>)(
        z, a, bias, bias_stride, static_cast<uint32_t>(n), static_cast<uint32_t>(width),
        static_cast<uint32_t>(unit_step), static_cast<uint32_t>(replica_elems));
  else
    LRLAB_LAUNCH(blocks_for(n, kThreads), kThreads, stream, bias_activation_kernel<A, int64_t>)(
        z, a, bias, bias_stride, n, width, unit_step, replica_elems);
  LRLAB_CUDA_CHECK_LAUNCH();
}

template <Activation A>
__global__ void activation_backward_kernel(float* __restrict__ delta, const float* __restrict__ z,
                                           int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x)
    delta[i] *= ActivationFn<A>::derivative(z[i]);
}

// One thread per (replica, sample) row. grad and correct may be null (evaluation). A label out of
// range gives a NaN row loss and is recorded in bad_label = {flag, label} for check_labels().
__global__ void softmax_cross_entropy_kernel(const float* __restrict__ logits,
                                             const int32_t* __restrict__ labels, int64_t rows,
                                             int64_t batch, int64_t classes, float scale,
                                             float* __restrict__ grad, float* __restrict__ row_loss,
                                             float* __restrict__ correct, int* bad_label) {
  const int64_t r = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (r >= rows) return;
  const int32_t label = labels[r % batch];
  const float* z = logits + r * classes;
  float* g = grad ? grad + r * classes : nullptr;
  if (!label_in_range(label, classes)) {
    if (atomicCAS(bad_label, 0, 1) == 0) bad_label[1] = label;
    row_loss[r] = NAN;
    if (g)
      for (int64_t i = 0; i < classes; ++i) g[i] = 0.0f;
    if (correct) correct[r] = 0.0f;
    return;
  }
  row_loss[r] = softmax_cross_entropy(z, classes, label, scale, g);
  if (correct) correct[r] = argmax(z, classes) == label ? 1.0f : 0.0f;
}

__global__ void mean_squared_error_kernel(const float* __restrict__ out, const float* __restrict__ y,
                                          int64_t rows, int64_t batch, int64_t width, float scale,
                                          float* __restrict__ grad, float* __restrict__ row_loss) {
  const int64_t r = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (r >= rows) return;
  row_loss[r] = mean_squared_error(out + r * width, y + (r % batch) * width, width, scale,
                                   grad ? grad + r * width : nullptr);
}

// Where one layer's bias gradients go (the plan's indexes), and the alignment padding after its
// weights and after its bias, which the bias-gradient kernels zero so that grads are written in
// full with no separate launch.
struct BiasGradOut {
  float* grads;
  int64_t b_at, b_stride, w_pad_at, w_stride;
  int w_pad, b_pad;
};

BiasGradOut bias_grad_out(float* grads, const detail::MlpLayerPlan& p) {
  return {grads, p.bias_at, p.bias_stride, p.w_pad_at, p.w_stride, p.w_pad, p.b_pad};
}

__device__ __forceinline__ void zero_padding(const BiasGradOut& o, int64_t k, int64_t width, int t) {
  if (t < o.w_pad) o.grads[o.w_pad_at + k * o.w_stride + t] = 0.0f;
  if (t < o.b_pad) o.grads[o.b_at + k * o.b_stride + width + t] = 0.0f;
}

// db[c] = sum over rows of delta[row, c] for [replica][row][unit] gradients, one block per
// (32 columns, replica).
__global__ void bias_grad_kernel(const float* __restrict__ delta, int64_t batch, int64_t width,
                                 BiasGradOut o) {
  LRLAB_SHARED(float[kBiasRows][kBiasCols + 1], part);
  const int64_t k = blockIdx.y;
  const int64_t c = blockIdx.x * int64_t{kBiasCols} + threadIdx.x;
  float s = 0.0f;
  if (c < width) {
    const float* d = delta + k * batch * width + c;
    for (int64_t r = threadIdx.y; r < batch; r += kBiasRows) s += d[r * width];
  }
  part[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && c < width) {
    float t = 0.0f;
    for (int i = 0; i < kBiasRows; ++i) t += part[i][threadIdx.x];
    o.grads[o.b_at + k * o.b_stride + c] = t;
  }
  if (blockIdx.x == 0 && threadIdx.y == 1) zero_padding(o, k, width, static_cast<int>(threadIdx.x));
}

// The same for unit-major gradients ([replica][unit][row], the first layer's): one warp per
// (replica, unit), summing `batch` contiguous floats.
__global__ void bias_grad_rows_kernel(const float* __restrict__ delta, int64_t batch, int64_t width,
                                      int64_t rows, BiasGradOut o) {
  const int64_t row = blockIdx.x * int64_t{kThreads / 32} + threadIdx.x / 32;
  const int lane = static_cast<int>(threadIdx.x % 32);
  if (row >= rows) return;  // the whole warp: row is the same for its 32 lanes
  const float* d = delta + row * batch;
  float s = 0.0f;
  for (int64_t i = lane; i < batch; i += 32) s += d[i];
  for (int step = 16; step > 0; step /= 2) s += __shfl_down_sync(0xffffffffu, s, step);
  const int64_t k = row / width, c = row % width;
  if (lane == 0) o.grads[o.b_at + k * o.b_stride + c] = s;
  if (c == 0) zero_padding(o, k, width, lane);
}

// loss[k] = mean of row_loss[k, :], one block per replica.
__global__ void mean_loss_kernel(const float* __restrict__ row_loss, int64_t batch,
                                 float* __restrict__ loss) {
  using Reduce = cub::BlockReduce<float, kReduceThreads>;
  LRLAB_SHARED(typename Reduce::TempStorage, tmp);
  const float* rl = row_loss + blockIdx.x * batch;
  float s = 0.0f;
  for (int64_t i = threadIdx.x; i < batch; i += kReduceThreads) s += rl[i];
  const float total = Reduce(tmp).Sum(s);
  if (threadIdx.x == 0) loss[blockIdx.x] = total / static_cast<float>(batch);
}

// sums[k] += {sum of row_loss[k, :], sum of correct[k, :]} (correct may be null), in double so
// that a long evaluation does not lose small contributions.
__global__ void accumulate_eval_kernel(const float* __restrict__ row_loss,
                                       const float* __restrict__ correct, int64_t batch,
                                       double* __restrict__ sums) {
  using Reduce = cub::BlockReduce<double, kReduceThreads>;
  LRLAB_SHARED(typename Reduce::TempStorage, tmp);
  const int64_t base = blockIdx.x * batch;
  double l = 0.0, c = 0.0;
  for (int64_t i = threadIdx.x; i < batch; i += kReduceThreads) {
    l += row_loss[base + i];
    if (correct) c += correct[base + i];
  }
  const double lsum = Reduce(tmp).Sum(l);
  __syncthreads();  // the temp storage is reused
  const double csum = Reduce(tmp).Sum(c);
  if (threadIdx.x == 0) {
    sums[2 * blockIdx.x] += lsum;
    sums[2 * blockIdx.x + 1] += csum;
  }
}

// Replica blockIdx.y's weights of one piece (init_pieces): init_weight, as the host draws them.
__global__ void init_weights_kernel(float* params, const uint64_t* seeds, detail::InitPiece piece) {
  const int64_t r = blockIdx.y;
  const uint64_t start = rng_stream_start(seeds[r], static_cast<uint64_t>(piece.layer));
  float* dst = params + piece.offset + r * piece.stride;
  for (int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; j < piece.count;
       j += static_cast<int64_t>(gridDim.x) * blockDim.x)
    dst[j] = init_weight(start, piece.first + j, piece.limit);
}

}  // namespace

struct MlpCuda::Impl {
  MlpLayout layout;
  ReplicaPacking packing;
  int64_t replicas, max_batch;
  cudaStream_t stream;
  cublasHandle_t handle = nullptr;
  std::vector<void*> allocations;
  std::vector<float*> pre, post;  // as in MlpCpu: [replicas x batch x out] per layer
  float* delta[2] = {nullptr, nullptr};
  float* row_loss = nullptr;
  float* correct = nullptr;
  double* eval_sums = nullptr;  // [replicas x 2]
  int* bad_label = nullptr;     // {flag, first bad label}
  uint64_t* seeds = nullptr;    // [replicas], init_params's

  Impl(const MlpLayout& l, int64_t k, int64_t b, cudaStream_t s)
      : layout(l), packing(mlp_packing(l, k)), replicas(k), max_batch(b), stream(s) {}

  // The buffers a plan's GEMMs name, for one call.
  struct Buffers {
    const float* x;
    const float* params;
    float* grads;
    const float* delta;
    float* delta_prev;
  };
  const float* resolve(const detail::GemmOperand& o, const Buffers& b) const;
  float* output(const detail::GemmOperand& o, const Buffers& b) const;
  void gemm(const detail::Gemm& g, const Buffers& b);

  ~Impl() {
    // Destructors must not throw; a failure here leaves nothing to recover.
    if (handle) cublasDestroy(handle);
    for (void* p : allocations) cudaFree(p);
  }

  template <typename T>
  T* alloc(int64_t count) {
    void* p = nullptr;
    LRLAB_CUDA_CHECK(cudaMalloc(&p, static_cast<size_t>(count) * sizeof(T)));
    allocations.push_back(p);
    return static_cast<T*>(p);
  }

  void run_forward(const float* params, const float* x, int64_t batch);
  void loss_rows(const int32_t* labels, const float* y, int64_t batch, float* grad,
                 float* correct_out);
};

const float* MlpCuda::Impl::resolve(const detail::GemmOperand& o, const Buffers& b) const {
  using detail::MlpBuffer;
  const float* base = nullptr;
  switch (o.buffer) {
    case MlpBuffer::Input: base = b.x; break;
    case MlpBuffer::Params: base = b.params; break;
    case MlpBuffer::Grads: base = b.grads; break;
    case MlpBuffer::Pre: base = pre[o.layer]; break;
    case MlpBuffer::Post: base = post[o.layer]; break;
    case MlpBuffer::Delta: base = b.delta; break;
    case MlpBuffer::DeltaPrev: base = b.delta_prev; break;
  }
  return base + o.offset;
}

// A plan writes the pre-activations, the weight gradients and the propagated gradients.
float* MlpCuda::Impl::output(const detail::GemmOperand& o, const Buffers& b) const {
  using detail::MlpBuffer;
  switch (o.buffer) {
    case MlpBuffer::Pre: return pre[o.layer] + o.offset;
    case MlpBuffer::Grads: return b.grads + o.offset;
    case MlpBuffer::DeltaPrev: return b.delta_prev + o.offset;
    default: LRLAB_FAIL("MlpCuda: a GEMM of the plan writes to an input buffer");
  }
}

void MlpCuda::Impl::gemm(const detail::Gemm& g, const Buffers& b) {
  const float one = 1.0f, zero = 0.0f;
  const cublasOperation_t ta = g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, tb = g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  float* c = output(g.c, b);
  if (g.count == 1)
    LRLAB_CUBLAS_CHECK(cublasSgemm(handle, ta, tb, g.m, g.n, g.k, &one, resolve(g.a, b), g.a.ld, resolve(g.b, b),
                                   g.b.ld, &zero, c, g.c.ld));
  else
    LRLAB_CUBLAS_CHECK(cublasSgemmStridedBatched(handle, ta, tb, g.m, g.n, g.k, &one, resolve(g.a, b), g.a.ld,
                                                 g.a.stride, resolve(g.b, b), g.b.ld, g.b.stride, &zero, c,
                                                 g.c.ld, g.c.stride, g.count));
}

void MlpCuda::Impl::run_forward(const float* params, const float* x, int64_t batch) {
  const auto& layers = layout.layers();
  const Buffers bufs{x, params, nullptr, nullptr, nullptr};
  for (size_t l = 0; l < layers.size(); ++l) {
    const LayerView& v = layers[l];
    const detail::MlpLayerPlan plan = detail::mlp_layer_plan(layout, packing, batch, l);
    gemm(plan.forward, bufs);
    const bool last = l + 1 == layers.size();
    const int64_t n = replicas * batch * v.out;
    const Activation act = last ? Activation::Identity : layout.config().activation;
    float* a = last ? nullptr : post[l];
    dispatch_activation(act, [&](auto tag) {
      launch_bias_activation<decltype(tag)::value>(pre[l], a, params + plan.bias_at, plan.bias_stride, n, v.out,
                                                   plan.unit_step, batch * v.out, stream);
    });
  }
}

void MlpCuda::Impl::loss_rows(const int32_t* labels, const float* y, int64_t batch, float* grad,
                              float* correct_out) {
  const int64_t rows = replicas * batch;
  const int64_t width = layout.config().outputs;
  const float scale = 1.0f / static_cast<float>(batch);
  const unsigned blocks = static_cast<unsigned>((rows + kThreads - 1) / kThreads);
  if (layout.config().loss == LossKind::SoftmaxCrossEntropy) {
    LRLAB_LAUNCH(blocks, kThreads, stream, softmax_cross_entropy_kernel)(
        pre.back(), labels, rows, batch, width, scale, grad, row_loss, correct_out, bad_label);
  } else {
    LRLAB_LAUNCH(blocks, kThreads, stream, mean_squared_error_kernel)(pre.back(), y, rows, batch, width, scale,
                                                                      grad, row_loss);
  }
  LRLAB_CUDA_CHECK_LAUNCH();
}

MlpCuda::MlpCuda(const MlpLayout& layout, int64_t replicas, int64_t max_batch,
                 cudaStream_t stream, bool allow_tf32) {
  require_cuda("a CUDA MLP (MlpCuda)");
  detail::check_backend_shape(layout, replicas, max_batch, Device::CUDA);
  impl_ = std::make_unique<Impl>(layout, replicas, max_batch, stream);
  Impl& m = *impl_;
  int64_t widest = 0;
  for (size_t l = 0; l < layout.layers().size(); ++l) {
    const int64_t out = layout.layers()[l].out;
    widest = std::max(widest, out);
    m.pre.push_back(m.alloc<float>(replicas * max_batch * out));
    if (l + 1 < layout.layers().size()) m.post.push_back(m.alloc<float>(replicas * max_batch * out));
  }
  m.delta[0] = m.alloc<float>(replicas * max_batch * widest);
  m.delta[1] = m.alloc<float>(replicas * max_batch * widest);
  m.row_loss = m.alloc<float>(replicas * max_batch);
  m.correct = m.alloc<float>(replicas * max_batch);
  m.eval_sums = m.alloc<double>(replicas * 2);
  m.bad_label = m.alloc<int>(2);
  m.seeds = m.alloc<uint64_t>(replicas);
  LRLAB_CUDA_CHECK(cudaMemsetAsync(m.bad_label, 0, 2 * sizeof(int), stream));
  void* workspace = m.alloc<char>(kCublasWorkspace);

  LRLAB_CUBLAS_CHECK(cublasCreate(&m.handle));
  LRLAB_CUBLAS_CHECK(cublasSetStream(m.handle, stream));
  LRLAB_CUBLAS_CHECK(cublasSetWorkspace(m.handle, workspace, kCublasWorkspace));
  LRLAB_CUBLAS_CHECK(cublasSetPointerMode(m.handle, CUBLAS_POINTER_MODE_HOST));
  LRLAB_CUBLAS_CHECK(
      cublasSetMathMode(m.handle, allow_tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
}

MlpCuda::~MlpCuda() = default;
MlpCuda::MlpCuda(MlpCuda&&) noexcept = default;
MlpCuda& MlpCuda::operator=(MlpCuda&&) noexcept = default;

const MlpLayout& MlpCuda::layout() const { return impl_->layout; }
const ReplicaPacking& MlpCuda::packing() const { return impl_->packing; }
int64_t MlpCuda::replicas() const { return impl_->replicas; }
int64_t MlpCuda::max_batch() const { return impl_->max_batch; }

void MlpCuda::forward_backward(const float* params, const float* x, const int32_t* labels,
                               const float* y, int64_t batch, float* grads, float* loss) {
  Impl& m = *impl_;
  detail::check_minibatch(m.layout.config(), "MlpCuda::forward_backward", batch, m.max_batch,
                          params, x, labels, y);
  LRLAB_REQUIRE(grads != nullptr && loss != nullptr,
                "MlpCuda::forward_backward: grads and loss must not be null");
  m.run_forward(params, x, batch);

  float* cur = m.delta[0];
  float* next = m.delta[1];
  m.loss_rows(labels, y, batch, cur, nullptr);
  LRLAB_LAUNCH(static_cast<unsigned>(m.replicas), kReduceThreads, m.stream, mean_loss_kernel)(m.row_loss, batch,
                                                                                             loss);
  LRLAB_CUDA_CHECK_LAUNCH();

  const auto& layers = m.layout.layers();
  for (size_t l = layers.size(); l-- > 0;) {
    const LayerView& v = layers[l];
    const detail::MlpLayerPlan plan = detail::mlp_layer_plan(m.layout, m.packing, batch, l);
    const Impl::Buffers bufs{x, params, grads, cur, next};
    m.gemm(plan.weight_grad, bufs);
    if (plan.unit_major) {
      const int64_t rows = m.replicas * v.out;
      const auto blocks = static_cast<unsigned>((rows + kThreads / 32 - 1) / (kThreads / 32));
      LRLAB_LAUNCH(blocks, kThreads, m.stream, bias_grad_rows_kernel)(cur, batch, v.out, rows,
                                                                     bias_grad_out(grads, plan));
    } else {
      const dim3 grid(static_cast<unsigned>((v.out + kBiasCols - 1) / kBiasCols), static_cast<unsigned>(m.replicas));
      LRLAB_LAUNCH(grid, dim3(kBiasCols, kBiasRows), m.stream, bias_grad_kernel)(cur, batch, v.out,
                                                                                 bias_grad_out(grads, plan));
    }
    LRLAB_CUDA_CHECK_LAUNCH();
    if (l == 0) break;
    m.gemm(plan.input_grad, bufs);
    // Elementwise: the same for either order of the activations.
    const int64_t n = m.replicas * batch * v.in;
    dispatch_activation(m.layout.config().activation, [&](auto tag) {
      LRLAB_LAUNCH(blocks_for(n, kThreads), kThreads, m.stream,
                   activation_backward_kernel<decltype(tag)::value>)(next, m.pre[l - 1], n);
    });
    LRLAB_CUDA_CHECK_LAUNCH();
    std::swap(cur, next);
  }
}

void MlpCuda::evaluate(const float* params, const float* x, const int32_t* labels, const float* y,
                       int64_t n, double* loss, double* accuracy) {
  Impl& m = *impl_;
  const MlpConfig& cfg = m.layout.config();
  LRLAB_REQUIRE(n >= 1, "MlpCuda::evaluate: no samples to evaluate");
  LRLAB_REQUIRE(loss != nullptr && accuracy != nullptr,
                "MlpCuda::evaluate: loss and accuracy must not be null");
  const bool classify = cfg.loss == LossKind::SoftmaxCrossEntropy;
  LRLAB_CUDA_CHECK(
      cudaMemsetAsync(m.eval_sums, 0, 2 * m.replicas * sizeof(double), m.stream));
  for (int64_t start = 0; start < n; start += m.max_batch) {
    const int64_t batch = std::min(m.max_batch, n - start);
    const int32_t* lab = labels ? labels + start : nullptr;
    const float* tgt = y ? y + start * cfg.outputs : nullptr;
    const float* xs = x + start * cfg.inputs;
    detail::check_minibatch(cfg, "MlpCuda::evaluate", batch, m.max_batch, params, xs, lab, tgt);
    m.run_forward(params, xs, batch);
    m.loss_rows(lab, tgt, batch, nullptr, classify ? m.correct : nullptr);
    LRLAB_LAUNCH(static_cast<unsigned>(m.replicas), kReduceThreads, m.stream, accumulate_eval_kernel)(
        m.row_loss, classify ? m.correct : nullptr, batch, m.eval_sums);
    LRLAB_CUDA_CHECK_LAUNCH();
  }
  std::vector<double> sums(2 * m.replicas);
  LRLAB_CUDA_CHECK(cudaMemcpyAsync(sums.data(), m.eval_sums, sums.size() * sizeof(double),
                                   cudaMemcpyDeviceToHost, m.stream));
  check_labels();  // synchronises
  for (int64_t k = 0; k < m.replicas; ++k) {
    loss[k] = sums[2 * k] / static_cast<double>(n);
    accuracy[k] = classify ? sums[2 * k + 1] / static_cast<double>(n)
                           : std::numeric_limits<double>::quiet_NaN();
  }
}

void MlpCuda::forward(const float* params, const float* x, int64_t batch, float* out) {
  Impl& m = *impl_;
  detail::check_minibatch(m.layout.config(), "MlpCuda::forward", batch, m.max_batch, params, x,
                          nullptr, nullptr, false);
  LRLAB_REQUIRE(out != nullptr, "MlpCuda::forward: out must not be null");
  m.run_forward(params, x, batch);
  LRLAB_CUDA_CHECK(cudaMemcpyAsync(out, m.pre.back(),
                                   m.replicas * batch * m.layout.config().outputs * sizeof(float),
                                   cudaMemcpyDeviceToDevice, m.stream));
}

void MlpCuda::init_params(float* params, const std::vector<uint64_t>& seeds, Init init) {
  Impl& m = *impl_;
  detail::check_init_seeds(m.packing, seeds, params);
  const std::vector<detail::InitPiece> pieces = detail::init_pieces(m.layout, m.packing, init);
  // From pageable memory: the copy takes the seeds before it returns.
  LRLAB_CUDA_CHECK(cudaMemcpyAsync(m.seeds, seeds.data(), seeds.size() * sizeof(uint64_t), cudaMemcpyHostToDevice,
                                   m.stream));
  LRLAB_CUDA_CHECK(cudaMemsetAsync(params, 0, static_cast<size_t>(m.packing.span()) * sizeof(float), m.stream));
  for (const detail::InitPiece& piece : pieces) {
    const dim3 grid(std::min(blocks_for(piece.count, kThreads), 1024u), static_cast<unsigned>(m.replicas));
    LRLAB_LAUNCH(grid, kThreads, m.stream, init_weights_kernel)(params, m.seeds, piece);
    LRLAB_CUDA_CHECK_LAUNCH();
  }
}

void MlpCuda::check_labels() {
  Impl& m = *impl_;
  int bad[2] = {0, 0};
  LRLAB_CUDA_CHECK(cudaMemcpyAsync(bad, m.bad_label, sizeof(bad), cudaMemcpyDeviceToHost, m.stream));
  LRLAB_CUDA_CHECK(cudaStreamSynchronize(m.stream));
  if (bad[0] == 0) return;
  LRLAB_CUDA_CHECK(cudaMemsetAsync(m.bad_label, 0, sizeof(bad), m.stream));
  LRLAB_FAIL("label ", bad[1], " is outside [0, ", m.layout.config().outputs,
             ") (found on the GPU; the losses it touched are NaN)");
}

}  // namespace lrlab
