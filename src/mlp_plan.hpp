// The CUDA backend's plan for one minibatch: every GEMM in cuBLAS's terms and every index its
// kernels use, computed on the host. MlpCuda carries it out with cuBLAS and its kernels; a test
// carries it out with a reference GEMM and plain loops and compares with MlpCpu, so the GPU's
// shapes, leading dimensions and strides are checked on machines without a GPU. Internal to the
// library.
#pragma once

#include <cstdint>

#include "lrlab/mlp.hpp"
#include "lrlab/packing.hpp"

namespace lrlab::detail {

// The buffers a GEMM reads or writes. Pre/Post: layer `layer`'s pre-activations and activations
// ([replicas x batch x out]); Delta: the gradient w.r.t. the pre-activations of the layer being
// back-propagated; DeltaPrev: the one of the layer below, which the backward pass writes next.
enum class MlpBuffer { Input, Params, Grads, Pre, Post, Delta, DeltaPrev };

struct GemmOperand {
  MlpBuffer buffer;
  int layer;       // for Pre and Post
  int64_t offset;  // floats into the buffer
  int ld;          // leading dimension
  int64_t stride;  // between the batch's matrices; 0 repeats one matrix
};

// C = op(A) op(B), column-major, for `count` matrices; op is a transpose where trans_* is set.
// count == 1 is one plain GEMM.
struct Gemm {
  bool trans_a, trans_b;
  int m, n, k, count;
  GemmOperand a, b, c;
};

// Activations of a layer are [replica][row][unit] unless unit_major, when they are
// [replica][unit][row]: the first layer's, in a network with hidden layers, whose GEMM covers all
// replicas at once. Element i of a layer's activations then belongs to replica
// i / (batch * out) and unit (i / unit_step) % out.
struct MlpLayerPlan {
  Gemm forward;                    // Pre[l] from the layer's input and weights
  int64_t bias_at, bias_stride;    // replica k's bias: params[bias_at + k * bias_stride]
  bool unit_major;
  int64_t unit_step;               // 1, or batch when unit_major
  Gemm weight_grad;                // the weights' gradients from Delta and the layer's input
  Gemm input_grad;                 // DeltaPrev from Delta and the weights (layers above the first)
  // The alignment padding after the weights and after the bias of replica k (each under 4 floats),
  // which the bias-gradient pass zeroes: grads[w_pad_at + k * w_stride + t], t < w_pad, and
  // grads[bias_at + k * bias_stride + out + t], t < b_pad.
  int64_t w_pad_at, w_stride;
  int w_pad, b_pad;
};

// Layer l's plan for `batch` rows (at most INT_MAX, as cuBLAS's dimensions are int).
MlpLayerPlan mlp_layer_plan(const MlpLayout& layout, const ReplicaPacking& packing, int64_t batch, size_t l);

}  // namespace lrlab::detail
