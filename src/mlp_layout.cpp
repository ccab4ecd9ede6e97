// MLP configuration names, the parameter layout of one replica, and weight initialisation.
#include <algorithm>
#include <cmath>
#include <limits>

#include "cpu_pool.hpp"
#include "lrlab/device.hpp"
#include "lrlab/error.hpp"
#include "lrlab/mlp.hpp"

namespace lrlab {

namespace {

// 4 floats = 16 bytes: every tensor can be read with aligned vector loads.
int64_t align4(int64_t n) { return (n + 3) / 4 * 4; }

}  // namespace

Activation parse_activation(const std::string& name) {
  if (name == "relu") return Activation::Relu;
  if (name == "gelu") return Activation::Gelu;
  if (name == "tanh") return Activation::Tanh;
  if (name == "sigmoid") return Activation::Sigmoid;
  if (name == "identity") return Activation::Identity;
  LRLAB_FAIL("unknown activation '", name, "' (expected relu, gelu, tanh, sigmoid or identity)");
}

const char* activation_name(Activation a) {
  switch (a) {
    case Activation::Relu: return "relu";
    case Activation::Gelu: return "gelu";
    case Activation::Tanh: return "tanh";
    case Activation::Sigmoid: return "sigmoid";
    case Activation::Identity: return "identity";
  }
  return "?";
}

LossKind parse_loss(const std::string& name) {
  if (name == "cross_entropy" || name == "ce") return LossKind::SoftmaxCrossEntropy;
  if (name == "mse") return LossKind::MeanSquaredError;
  LRLAB_FAIL("unknown loss '", name, "' (expected cross_entropy or mse)");
}

const char* loss_name(LossKind l) {
  return l == LossKind::SoftmaxCrossEntropy ? "cross_entropy" : "mse";
}

MlpLayout::MlpLayout(const MlpConfig& config) : config_(config) {
  LRLAB_REQUIRE(config.inputs >= 1, "MLP inputs must be at least 1, got ", config.inputs);
  LRLAB_REQUIRE(config.outputs >= 1, "MLP outputs must be at least 1, got ", config.outputs);
  LRLAB_REQUIRE(config.loss != LossKind::SoftmaxCrossEntropy || config.outputs >= 2,
                "cross-entropy needs at least 2 classes, got ", config.outputs, " output");
  std::vector<int64_t> widths{config.inputs};
  for (size_t i = 0; i < config.hidden.size(); ++i) {
    LRLAB_REQUIRE(config.hidden[i] >= 1, "MLP hidden layer ", i + 1, " must have at least 1 unit, got ",
                  config.hidden[i]);
    widths.push_back(config.hidden[i]);
  }
  widths.push_back(config.outputs);

  const int64_t int_max = std::numeric_limits<int>::max();
  int64_t offset = 0;
  for (size_t l = 0; l + 1 < widths.size(); ++l) {
    const int64_t in = widths[l], out = widths[l + 1];
    // BLAS takes int dimensions and leading dimensions.
    LRLAB_REQUIRE(in <= int_max / out, "MLP layer ", l + 1, " (", in, " x ", out,
                  ") is too large: its weight matrix must have fewer than 2^31 entries");
    LayerView v{in, out, 0, 0};
    v.w_offset = offset;
    v.b_offset = align4(v.w_offset + in * out);
    offset = align4(v.b_offset + out);
    layers_.push_back(v);
  }
  size_ = offset;
}

std::vector<ParamRange> MlpLayout::weight_ranges() const {
  std::vector<ParamRange> r;
  for (const LayerView& v : layers_) r.push_back({v.w_offset, v.w_offset + v.in * v.out});
  return r;
}

std::vector<ParamRange> MlpLayout::bias_ranges() const {
  std::vector<ParamRange> r;
  for (const LayerView& v : layers_) r.push_back({v.b_offset, v.b_offset + v.out});
  return r;
}

std::vector<ParamRange> MlpLayout::padding_ranges() const {
  std::vector<ParamRange> r;
  for (const LayerView& v : layers_) {
    const int64_t w_end = v.w_offset + v.in * v.out, b_end = v.b_offset + v.out;
    if (w_end < v.b_offset) r.push_back({w_end, v.b_offset});
    if (b_end < align4(b_end)) r.push_back({b_end, align4(b_end)});
  }
  return r;
}

ReplicaPacking mlp_packing(const MlpLayout& layout, int64_t replicas) {
  LRLAB_REQUIRE(replicas >= 1 && replicas <= kMaxReplicas, "replicas must be in [1, ", kMaxReplicas, "] (got ",
                replicas, ")");
  const int64_t w0 = layout.layers()[0].b_offset;  // W0 and its alignment padding
  return ReplicaPacking(layout.size(), replicas,
                        {{0, w0, 0, w0}, {w0, layout.size(), replicas * w0, layout.size() - w0}});
}

namespace detail {

void check_backend_shape(const MlpLayout& layout, int64_t replicas, int64_t max_batch, Device device) {
  LRLAB_REQUIRE(replicas >= 1 && replicas <= kMaxReplicas, "MLP replicas must be in [1, ", kMaxReplicas, "], got ",
                replicas);
  // GEMM dimensions are int in BLAS and cuBLAS.
  LRLAB_REQUIRE(max_batch >= 1 && max_batch <= std::numeric_limits<int>::max(), "MLP max batch must be in [1, ",
                std::numeric_limits<int>::max(), "], got ", max_batch);
  int64_t widest = 0;
  for (const LayerView& l : layout.layers()) widest = std::max(widest, l.out);
  // Each activation buffer holds replicas x max_batch x width floats; in double, the product cannot
  // wrap before it is compared.
  LRLAB_REQUIRE(static_cast<double>(replicas) * static_cast<double>(max_batch) * static_cast<double>(widest) <=
                    static_cast<double>(int64_t{1} << 40),
                "MLP workspace of ", replicas, " replicas x batch ", max_batch, " x width ", widest,
                " floats is over the limit of 2^40");
  // Pre-activations, their gradients and hidden outputs, as the backends allocate them.
  double floats = 0;
  for (size_t l = 0; l < layout.layers().size(); ++l)
    floats += (l + 1 < layout.layers().size() ? 3.0 : 2.0) * static_cast<double>(layout.layers()[l].out);
  floats *= static_cast<double>(replicas) * static_cast<double>(max_batch);
  require_memory(device, floats * sizeof(float),
                 "an MLP workspace of " + std::to_string(replicas) + " replicas x batch " + std::to_string(max_batch),
                 "a smaller batch or fewer replicas");
}

void check_minibatch(const MlpConfig& config, const char* what, int64_t batch, int64_t max_batch,
                     const float* params, const float* x, const int32_t* labels, const float* y,
                     bool needs_targets) {
  LRLAB_REQUIRE(batch >= 1 && batch <= max_batch, what, ": batch size ", batch,
                " outside [1, ", max_batch, "]");
  LRLAB_REQUIRE(params != nullptr && x != nullptr, what, ": params and inputs must not be null");
  if (!needs_targets) return;
  if (config.loss == LossKind::SoftmaxCrossEntropy)
    LRLAB_REQUIRE(labels != nullptr, what, ": cross-entropy needs labels");
  else
    LRLAB_REQUIRE(y != nullptr, what, ": mean squared error needs targets");
}

}  // namespace detail

namespace detail {

std::vector<InitPiece> init_pieces(const MlpLayout& layout, const ReplicaPacking& packing, Init init) {
  LRLAB_REQUIRE(packing.n() == layout.size(), "init_params: the packing holds replicas of ", packing.n(),
                " parameters, the layout ", layout.size());
  const Activation act = layout.config().activation;
  const bool rectifier = act == Activation::Relu || act == Activation::Gelu;
  const auto& layers = layout.layers();
  std::vector<InitPiece> pieces;
  for (size_t l = 0; l < layers.size(); ++l) {
    const LayerView& v = layers[l];
    // Auto: He for the layers a rectifier follows; the output layer is linear, and He's factor 2
    // there only inflates the initial logits (an initial loss far above log(classes)), so it and
    // the layers of other activations get Glorot.
    Init layer_init = init;
    if (init == Init::Auto) layer_init = rectifier && l + 1 < layers.size() ? Init::He : Init::Xavier;
    // He keeps the variance of ReLU activations constant through depth (Var W = 2 / fan_in);
    // Glorot balances forward and backward variance (Var W = 2 / (fan_in + fan_out)). A uniform
    // distribution on [-a, a) has variance a^2 / 3.
    const double var = layer_init == Init::He ? 2.0 / static_cast<double>(v.in)
                                              : 2.0 / static_cast<double>(v.in + v.out);
    const double limit = std::sqrt(3.0 * var);
    const int64_t begin = v.w_offset, end = v.w_offset + v.in * v.out;
    for (const ReplicaBlock& b : packing.blocks()) {
      const int64_t lo = std::max(begin, b.begin), hi = std::min(end, b.end);
      if (lo < hi) pieces.push_back({static_cast<int64_t>(l), lo - begin, hi - lo, b.offset + (lo - b.begin), b.stride, limit});
    }
  }
  return pieces;
}

void check_init_seeds(const ReplicaPacking& packing, const std::vector<uint64_t>& seeds, const float* params) {
  LRLAB_REQUIRE(params != nullptr, "init_params: params is null");
  LRLAB_REQUIRE(static_cast<int64_t>(seeds.size()) == packing.replicas(), "init_params: ", seeds.size(),
                " seeds for ", packing.replicas(), " replicas");
}

}  // namespace detail

void init_params(const MlpLayout& layout, const ReplicaPacking& packing, const std::vector<uint64_t>& seeds,
                 float* params, Init init) {
  detail::check_init_seeds(packing, seeds, params);
  const std::vector<detail::InitPiece> pieces = detail::init_pieces(layout, packing, init);
  std::fill(params, params + packing.span(), 0.0f);
  // One stream per layer: changing one layer's shape leaves the others' weights as they were.
  detail::parallel_items(packing.replicas(), detail::cpu_thread_budget(), [&](int64_t r) {
    for (const detail::InitPiece& p : pieces) {
      const uint64_t start = rng_stream_start(seeds[r], static_cast<uint64_t>(p.layer));
      float* dst = params + p.offset + r * p.stride;
      for (int64_t j = 0; j < p.count; ++j) dst[j] = init_weight(start, p.first + j, p.limit);
    }
  });
}

void init_params(const MlpLayout& layout, float* params, uint64_t seed, Init init) {
  init_params(layout, ReplicaPacking(layout.size(), 1), {seed}, params, init);
}

}  // namespace lrlab
