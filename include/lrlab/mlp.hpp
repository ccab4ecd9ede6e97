// A multilayer perceptron trained as K packed replicas: K copies of one architecture, each with its
// own weights, that see the same input minibatch (an LR sweep trains them together; K = 1 is plain
// training). A replica's parameters are one flat fp32 vector described by MlpLayout; the K vectors
// share one buffer as mlp_packing() says, so replica k's float i is params[packing.index(k, i)].
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "lrlab/device.hpp"
#include "lrlab/nn_math.hpp"
#include "lrlab/packing.hpp"

namespace lrlab {

// Names: relu, gelu, tanh, sigmoid, identity. Throws lrlab::Error on anything else.
Activation parse_activation(const std::string& name);
const char* activation_name(Activation a);
// Names: cross_entropy (or ce), mse. Throws lrlab::Error on anything else.
LossKind parse_loss(const std::string& name);
const char* loss_name(LossKind l);

struct MlpConfig {
  int64_t inputs = 0;
  std::vector<int64_t> hidden;
  int64_t outputs = 0;
  Activation activation = Activation::Relu;  // of the hidden layers; the output layer is linear
  LossKind loss = LossKind::SoftmaxCrossEntropy;
};

struct ParamRange {
  int64_t begin, end;  // [begin, end) within one replica
};

// W is [out x in] row-major (like torch.nn.Linear.weight), b is [out].
struct LayerView {
  int64_t in, out, w_offset, b_offset;
};

// Where each tensor of one replica lies: W0, b0, W1, b1, ..., each starting 16-byte aligned.
class MlpLayout {
 public:
  // Throws lrlab::Error for sizes < 1, fewer than 2 classes with cross-entropy, or a layer too
  // large for the 32-bit dimensions of BLAS.
  explicit MlpLayout(const MlpConfig& config);
  // Copied, also where a move is asked for (no move operations): a moved-from value stays whole
  // rather than half-empty and crashing later, and its parts are small.
  MlpLayout(const MlpLayout&) = default;
  MlpLayout& operator=(const MlpLayout&) = default;

  int64_t size() const { return size_; }  // floats per replica, a multiple of 4
  const std::vector<LayerView>& layers() const { return layers_; }
  const MlpConfig& config() const { return config_; }
  std::vector<ParamRange> weight_ranges() const;
  std::vector<ParamRange> bias_ranges() const;
  // The alignment gaps: weights, biases and padding together cover [0, size()) exactly once.
  std::vector<ParamRange> padding_ranges() const;

 private:
  MlpConfig config_;
  std::vector<LayerView> layers_;
  int64_t size_ = 0;
};

// Where K replicas keep their parameters (and gradients) in one buffer of K * layout.size() floats:
// the first layer's weights of all replicas come first, back to back, as one [K*out x in] matrix
// that the shared minibatch meets in one wide GEMM on the GPU; each replica's other tensors follow,
// replica after replica. With K = 1 this is the layout itself.
ReplicaPacking mlp_packing(const MlpLayout& layout, int64_t replicas);

// Auto: He for the hidden layers of relu and gelu networks, Xavier (Glorot) for the linear output
// layer and for other activations. Both are uniform distributions with the variance their names ask
// for (He 2 / in, Glorot 2 / (in + out)), as Keras's he_uniform and glorot_uniform and PyTorch's
// kaiming_uniform_ and xavier_uniform_ are.
enum class Init { Auto, He, Xavier };

// Fills one replica's parameters (host memory, layout.size() floats) from `seed`: weights drawn
// per layer (init_weight in nn_math.hpp), biases and padding zero. The same seed gives the same
// parameters on every machine, and on the GPU (MlpCuda::init_params).
void init_params(const MlpLayout& layout, float* params, uint64_t seed, Init init = Init::Auto);
// Every replica of a packed buffer (host memory, packing.span() floats), replica r from seeds[r]:
// the numbers init_params gives each alone, where the packing puts them; floats no replica uses
// are zero. Runs on the CPU backend's threads.
void init_params(const MlpLayout& layout, const ReplicaPacking& packing, const std::vector<uint64_t>& seeds,
                 float* params, Init init = Init::Auto);

namespace detail {
// What init_params draws, cut where the packing cuts: weights [first, first + count) of `layer`,
// which lie at offset + r * stride for replica r, uniform on [-limit, limit] (after the rounding to
// float, which may reach the limit).
struct InitPiece {
  int64_t layer, first, count, offset, stride;
  double limit;
};
std::vector<InitPiece> init_pieces(const MlpLayout& layout, const ReplicaPacking& packing, Init init);
void check_init_seeds(const ReplicaPacking& packing, const std::vector<uint64_t>& seeds, const float* params);

// Host-side argument checks shared by the backends (the CPU one also checks label values). The
// workspace must also fit in the memory `device` has free (require_memory).
void check_backend_shape(const MlpLayout& layout, int64_t replicas, int64_t max_batch, Device device);
void check_minibatch(const MlpConfig& config, const char* what, int64_t batch, int64_t max_batch,
                     const float* params, const float* x, const int32_t* labels, const float* y,
                     bool needs_targets = true);
}  // namespace detail

// The CPU backend: OpenBLAS GEMMs, threaded by lrlab with as many threads as OpenMP gives the
// calling thread (omp_get_max_threads()), fewer for a call with little arithmetic, over parts of
// kRowsPerSlice rows of each replica's minibatch. Every GEMM runs on the thread that calls it, so
// the constructor calls use_single_threaded_blas() (blas_env.hpp).
// Results do not depend on the number of threads, bit for bit, nor on the number of replicas packed
// together. All workspace is allocated by the constructor; the methods allocate nothing.
class MlpCpu {
 public:
  // Throws lrlab::Error for replicas outside [1, kMaxReplicas], a batch outside [1, 2^31-1] or a
  // workspace too large. A moved-from MlpCpu may only be destroyed or assigned to.
  MlpCpu(const MlpLayout& layout, int64_t replicas, int64_t max_batch);

  // params and grads: all replicas, packed as packing() says. x: [batch x inputs], shared by all
  // replicas. labels [batch] for classification or y [batch x outputs] for regression (the other
  // may be null). Overwrites grads (padding zero) and loss[replicas] with each replica's mean loss.
  void forward_backward(const float* params, const float* x, const int32_t* labels, const float* y,
                        int64_t batch, float* grads, float* loss);
  // Mean loss and accuracy of each replica over n samples, in chunks of max_batch. accuracy is
  // NaN for regression.
  void evaluate(const float* params, const float* x, const int32_t* labels, const float* y,
                int64_t n, double* loss, double* accuracy);
  // out: [replicas x batch x outputs], the output layer before any softmax.
  void forward(const float* params, const float* x, int64_t batch, float* out);

  const MlpLayout& layout() const { return layout_; }
  const ReplicaPacking& packing() const { return packing_; }
  int64_t replicas() const { return replicas_; }
  int64_t max_batch() const { return max_batch_; }

  // A call with less arithmetic than this per thread (2 flops per multiply-add) uses fewer threads:
  // handing work to a thread costs microseconds, and far more when that thread's core is busy with
  // another process. 0: every call uses all threads (the tests of the splits set it).
  static constexpr double kMinFlopsPerThread = 4e6;
  // Each replica's minibatch is cut into parts of this many rows (and its output units into as many
  // parts) whatever the number of threads, which only decides who computes which part: a replica's
  // GEMMs, and so its numbers, are the same on any machine.
  static constexpr int64_t kRowsPerSlice = 64;
  void set_min_flops_per_thread(double flops) { min_flops_per_thread_ = flops; }

 private:
  // How one call is split: each replica into `slices` parts, run on `threads` threads.
  struct Work {
    int64_t slices, threads;
  };
  // `passes`: 1 for a forward pass, 3 with the backward pass.
  Work plan(int64_t batch, int passes) const;
  // Calls f(replica, slice) for every part, spread over the plan's threads.
  template <typename F>
  void for_each_item(const Work& sp, F&& f);
  void forward_rows(const float* params, const float* x, int64_t batch, int64_t k, int64_t r0,
                    int64_t r1);
  void run_forward(const float* params, const float* x, int64_t batch);

  MlpLayout layout_;
  ReplicaPacking packing_;
  int64_t replicas_, max_batch_;
  std::vector<std::vector<float>> pre_;    // per layer: pre-activations [replicas x batch x out]
  std::vector<std::vector<float>> post_;   // per hidden layer: activations, same shape
  std::vector<std::vector<float>> delta_;  // per layer: gradients w.r.t. pre-activations
  std::vector<float> ones_;               // [max_batch] of 1: bias gradients as a GEMV
  std::vector<float> row_loss_;           // [replicas x max_batch]
  std::vector<ParamRange> padding_;
  double min_flops_per_thread_ = kMinFlopsPerThread;
};

// The CUDA backend: the same contract with device pointers, run on `stream`. The first layer of all
// replicas is one GEMM when their weights form one matrix (in * out a multiple of 4, which keeps
// every tensor 16-byte aligned without gaps); the other layers are strided-batched GEMMs.
// forward_backward is capturable in a CUDA graph: it allocates nothing, never synchronises and
// never copies to or from the host (run it once before capturing, so lazily loaded kernels are
// loaded outside the capture). A moved-from MlpCuda may only be destroyed or assigned to.
class MlpCuda {
 public:
  // allow_tf32 lets cuBLAS use TF32 tensor cores (faster, ~1e-3 relative error in GEMMs).
  MlpCuda(const MlpLayout& layout, int64_t replicas, int64_t max_batch, cudaStream_t stream,
          bool allow_tf32 = false);
  ~MlpCuda();
  MlpCuda(const MlpCuda&) = delete;
  MlpCuda& operator=(const MlpCuda&) = delete;
  MlpCuda(MlpCuda&&) noexcept;
  MlpCuda& operator=(MlpCuda&&) noexcept;

  // Device pointers; loss is device memory [replicas]. Labels are checked on the device: an
  // out-of-range label gives that replica a NaN loss and is reported by check_labels().
  void forward_backward(const float* params, const float* x, const int32_t* labels, const float* y,
                        int64_t batch, float* grads, float* loss);
  // Device inputs, host outputs [replicas]; synchronises the stream and calls check_labels().
  void evaluate(const float* params, const float* x, const int32_t* labels, const float* y,
                int64_t n, double* loss, double* accuracy);
  void forward(const float* params, const float* x, int64_t batch, float* out);
  // Every replica's initial parameters into params (device memory, packing().span() floats),
  // replica r's from seeds[r]: init_params's numbers, bit for bit, with nothing drawn or staged on
  // the host. Enqueued on the stream; it copies the seeds from the host, so not capturable.
  void init_params(float* params, const std::vector<uint64_t>& seeds, Init init = Init::Auto);
  // Throws lrlab::Error if a label seen since the last call was outside [0, outputs), then clears
  // the record. Synchronises the stream, so call it outside graph capture (e.g. once per epoch).
  void check_labels();

  const MlpLayout& layout() const;
  const ReplicaPacking& packing() const;
  int64_t replicas() const;
  int64_t max_batch() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace lrlab
