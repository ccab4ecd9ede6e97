// The CUDA backend's GEMMs, written out. cuBLAS is column-major: a row-major [r x c] matrix is, to
// cuBLAS, a column-major [c x r] matrix with leading dimension c; M' below is M seen that way.
#include "mlp_plan.hpp"

#include <limits>

#include "lrlab/error.hpp"

namespace lrlab::detail {

namespace {

int64_t align4(int64_t n) { return (n + 3) / 4 * 4; }

}  // namespace

MlpLayerPlan mlp_layer_plan(const MlpLayout& layout, const ReplicaPacking& packing, int64_t batch, size_t l) {
  const auto& layers = layout.layers();
  LRLAB_REQUIRE(l < layers.size(), "layer ", l, " of a ", layers.size(), "-layer MLP");
  LRLAB_REQUIRE(batch >= 1 && batch <= std::numeric_limits<int>::max(), "batch ", batch, " out of range");
  const LayerView& v = layers[l];
  const int64_t K = packing.replicas();
  const int Ki = static_cast<int>(K), in = static_cast<int>(v.in), out = static_cast<int>(v.out),
            b = static_cast<int>(batch);
  // In a network with hidden layers the first layer's activations are unit-major, and the second
  // layer reads and writes them that way.
  const bool hidden = layers.size() >= 2;
  const bool unit_major = l == 0 && hidden, reads_unit_major = l == 1;

  const int64_t w_at = packing.index(0, v.w_offset), ws = packing.block_of(v.w_offset).stride;
  MlpLayerPlan p{};
  p.bias_at = packing.index(0, v.b_offset);
  p.bias_stride = packing.block_of(v.b_offset).stride;
  p.unit_major = unit_major;
  p.unit_step = unit_major ? batch : 1;
  p.w_pad_at = w_at + v.in * v.out;
  p.w_stride = ws;
  p.w_pad = static_cast<int>(v.b_offset - (v.w_offset + v.in * v.out));
  p.b_pad = static_cast<int>(align4(v.b_offset + v.out) - (v.b_offset + v.out));

  const GemmOperand X{MlpBuffer::Input, 0, 0, in, 0};  // [batch x in], X' = [in x batch]
  const GemmOperand W{MlpBuffer::Params, 0, w_at, in, ws};  // [out x in], W' = [in x out]
  const GemmOperand dW{MlpBuffer::Grads, 0, w_at, in, ws};
  const int lp = static_cast<int>(l) - 1;
  // The layer's input, [batch x in] per replica, or unit-major [in x batch] below the second layer.
  const GemmOperand A = l == 0 ? X : GemmOperand{MlpBuffer::Post, lp, 0, reads_unit_major ? b : in, batch * v.in};
  const GemmOperand D{MlpBuffer::Delta, 0, 0, unit_major ? b : out, batch * v.out};

  if (unit_major) {
    // Z0 unit-major: replica k's [out x batch] = W X^T  <=>  Z'[batch x out] = X'^T W'. When every
    // replica's W' continues the one before ([in x K*out] with ld in), all replicas are one GEMM.
    const bool wide = (K == 1 || ws == v.in * v.out) && K * v.out <= std::numeric_limits<int>::max();
    const GemmOperand Z{MlpBuffer::Pre, 0, 0, b, batch * v.out};
    p.forward = wide ? Gemm{true, false, b, Ki * out, in, 1, X, W, Z} : Gemm{true, false, b, out, in, Ki, X, W, Z};
    // dW[out x in] = D^T X, D stored [out x batch] = Ds[batch x out] (ld batch)  <=>  dW' = X' Ds.
    p.weight_grad = wide ? Gemm{false, false, in, Ki * out, b, 1, X, D, dW} : Gemm{false, false, in, out, b, Ki, X, D, dW};
    return p;
  }

  const GemmOperand Z{MlpBuffer::Pre, static_cast<int>(l), 0, out, batch * v.out};
  // Z[batch x out] = A W^T  <=>  Z'[out x batch] = W'^T A'. A unit-major input is stored
  // [in x batch], which cuBLAS sees as As[batch x in] (ld batch): then A' = As^T.
  p.forward = Gemm{true, reads_unit_major, out, b, in, Ki, W, A, Z};
  // dW[out x in] = D^T A  <=>  dW'[in x out] = A' D'^T (A' = As^T for a unit-major input).
  p.weight_grad = Gemm{reads_unit_major, true, in, out, b, Ki, A, D, dW};
  if (l > 0) {
    if (reads_unit_major) {
      // dA0 = D W, written unit-major  <=>  dA0s[batch x in] = D'^T W'^T.
      const GemmOperand P{MlpBuffer::DeltaPrev, 0, 0, b, batch * v.in};
      p.input_grad = Gemm{true, true, b, in, out, Ki, D, W, P};
    } else {
      // dA[batch x in] = D W  <=>  dA'[in x batch] = W' D'.
      const GemmOperand P{MlpBuffer::DeltaPrev, 0, 0, in, batch * v.in};
      p.input_grad = Gemm{false, false, in, b, out, Ki, W, D, P};
    }
  }
  return p;
}

}  // namespace lrlab::detail
