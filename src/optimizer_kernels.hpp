// What the optimizer's host code hands to its two back ends: the CPU loop and the CUDA kernels.
// Internal to the library.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "lrlab/optimizer.hpp"
#include "lrlab/hd.hpp"
#include "lrlab/packing.hpp"
#include "lrlab/update_rules.hpp"

namespace lrlab::detail {

struct GroupTable {
  int count = 0;
  int64_t begin[kMaxParamGroups] = {};
  int64_t end[kMaxParamGroups] = {};
  float lr_mult[kMaxParamGroups] = {};
  float wd[kMaxParamGroups] = {};
};

// ReplicaPacking's blocks, by value for the kernels.
struct BlockTable {
  int count = 0;
  int64_t begin[kMaxReplicaBlocks] = {};
  int64_t end[kMaxReplicaBlocks] = {};
  int64_t offset[kMaxReplicaBlocks] = {};
  int64_t stride[kMaxReplicaBlocks] = {};
};

struct FusedArgs {
  OptimizerHyper h;
  GroupTable groups;
  float* p = nullptr;
  const float* g = nullptr;
  float* s[3] = {nullptr, nullptr, nullptr};
  uint16_t* bf16 = nullptr;
  int64_t n = 0;      // parameters per replica
  int64_t replicas = 0;
  BlockTable blocks;  // where each replica's parameters lie (also its gradients and moments)
  // The GPU's gradient statistics: each replica's blocks cut into pieces of at most grad_chunk
  // floats, grad_parts per replica, one reduction segment each (so that a few large replicas
  // still spread over the whole GPU).
  int64_t grad_chunk = 0;
  int grad_parts = 0;
  int nstate = 0;
  int unroll = 1;     // the CUDA update's quads per thread per iteration: 1 or 2
  bool vec = false;   // 16-byte vector access is safe (aligned pointers and blocks)
  bool stats = false; // gradient statistics (sum of squares) are needed before the update
};

inline BlockTable block_table(const ReplicaPacking& pk) {
  BlockTable bt;
  bt.count = static_cast<int>(pk.blocks().size());
  for (int b = 0; b < bt.count; ++b) {
    bt.begin[b] = pk.blocks()[b].begin;
    bt.end[b] = pk.blocks()[b].end;
    bt.offset[b] = pk.blocks()[b].offset;
    bt.stride[b] = pk.blocks()[b].stride;
  }
  return bt;
}

LRLAB_HD int block_of(const BlockTable& bt, int64_t i) {
  int b = 0;
  while (b + 1 < bt.count && i >= bt.end[b]) ++b;
  return b;
}

// Where float i of replica r lies: index = offset + r * stride - begin + i, for i in the block.
LRLAB_HD int64_t block_base(const BlockTable& bt, int b, int64_t r) {
  return bt.offset[b] + r * bt.stride[b] - bt.begin[b];
}

// Pieces of at most `chunk` floats that each replica's blocks are cut into.
inline int64_t grad_parts(const BlockTable& bt, int64_t chunk) {
  int64_t parts = 0;
  for (int b = 0; b < bt.count; ++b) parts += (bt.end[b] - bt.begin[b] + chunk - 1) / chunk;
  return parts;
}

// Segment s of the GPU's gradient reduction is piece s % parts of replica s / parts, the pieces
// running through the replica's blocks in order, each block cut every `chunk` floats; the functor
// gives its first float, or one past its last.
struct GradSegmentEdge {
  BlockTable bt;
  int64_t chunk;
  int parts;
  bool end;
  LRLAB_HD int64_t operator()(int64_t s) const {
    const int64_t r = s / parts;
    int64_t j = s % parts;
    for (int b = 0;; ++b) {
      const int64_t len = bt.end[b] - bt.begin[b], pieces = (len + chunk - 1) / chunk;
      if (j < pieces || b + 1 == bt.count) {
        const int64_t first = bt.offset[b] + r * bt.stride[b] + j * chunk;
        const int64_t last = bt.offset[b] + r * bt.stride[b] + len;
        return end ? (first + chunk < last ? first + chunk : last) : first;
      }
      j -= pieces;
    }
  }
};

// CPU back end: `states` in host memory; grad_sq[replicas].
void cpu_grad_sq(const FusedArgs& a, std::vector<double>& blocks, double* grad_sq);
void cpu_update(const FusedArgs& a, const ReplicaState* states);

// CUDA back end: `states` and `grad_sq` (replicas x grad_parts partial sums) in device memory. Scratch for the reduction is sized by
// cuda_grad_sq_scratch() and owned by the caller, so nothing is allocated during a step.
size_t cuda_grad_sq_scratch(const FusedArgs& a);
void cuda_grad_sq(const FusedArgs& a, double* grad_sq, void* scratch, size_t scratch_bytes,
                  cudaStream_t stream);
void cuda_prepare(ReplicaState* states, const double* grad_sq, int parts, const OptimizerHyper& h,
                  bool stats, int64_t replicas, cudaStream_t stream);
// The CUDA update's quads per thread per loop iteration unless told otherwise (FusedArgs::unroll).
// Two quads put more bytes in flight per thread with fewer threads; which is faster is for the
// hardware to say (bench_optim --variants times both, BENCHMARKS.md).
constexpr int kDefaultUpdateUnroll = 1;
// How many blocks of the update kernel for `kind` (in Keras's form or PyTorch's) with `nstate` state
// buffers and `unroll` quads an iteration the whole GPU holds at once (multiprocessors x blocks each
// fits, given its registers): cuda_update's grid.
int64_t cuda_update_resident_blocks(OptimKind kind, bool keras, int nstate, int unroll, int num_sms);
// The CUDA update of an existing optimizer, so that a benchmark can time its variants side by side.
struct OptimizerAccess {
  static int update_unroll(const Optimizer& opt);
  // 1 or 2; the grid follows (the kernels differ in registers, so in the blocks that fit).
  static void set_update_unroll(Optimizer& opt, int unroll);
  // Blocks of the update kernel in use that one multiprocessor holds at once.
  static int64_t update_blocks_per_sm(const Optimizer& opt);
};

void cuda_update(const FusedArgs& a, const ReplicaState* states, int64_t resident_blocks, cudaStream_t stream);
// p[0..n) = value, enqueued on the stream (state buffers' initial values, with no host staging).
void cuda_fill(float* p, int64_t n, float value, cudaStream_t stream);

}  // namespace lrlab::detail
