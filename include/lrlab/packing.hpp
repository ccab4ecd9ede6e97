// Where the parameters of K replicas lie in one buffer. Each replica sees its parameters as one
// vector [0, n); the buffer holds them in blocks: a block is a range [begin, end) of every
// replica's vector, stored for replica r at offset + r * stride. With one block of stride n the
// replicas lie back to back. A packed model can instead put one tensor of all replicas together:
// an MLP keeps its first-layer weights of all K replicas as one [K*out x in] matrix, so the shared
// minibatch goes through one wide GEMM (mlp_packing() in mlp.hpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace lrlab {

struct ReplicaBlock {
  int64_t begin = 0, end = 0;  // the range of each replica's vector
  int64_t offset = 0;          // where replica 0's copy starts in the buffer
  int64_t stride = 0;          // floats from one replica's copy to the next
};
constexpr int kMaxReplicaBlocks = 8;
// Replicas of one packing, optimizer or MLP: the GPU's launches put replicas on grid.y.
constexpr int64_t kMaxReplicas = 65535;

inline bool operator==(const ReplicaBlock& a, const ReplicaBlock& b) {
  return a.begin == b.begin && a.end == b.end && a.offset == b.offset && a.stride == b.stride;
}

class ReplicaPacking {
 public:
  // Replicas back to back, `stride` floats apart (0: n).
  ReplicaPacking(int64_t n, int64_t replicas, int64_t stride = 0);
  // Throws lrlab::Error unless replicas is in [1, kMaxReplicas], the blocks cover [0, n) in order, each
  // replica's copies of them overlap nothing else in the buffer, and there are at most
  // kMaxReplicaBlocks. Blocks that lie end to end in every replica are merged.
  ReplicaPacking(int64_t n, int64_t replicas, std::vector<ReplicaBlock> blocks);
  // Copied, also where a move is asked for (no move operations): a moved-from value stays whole
  // rather than half-empty and crashing later, and its parts are small.
  ReplicaPacking(const ReplicaPacking&) = default;
  ReplicaPacking& operator=(const ReplicaPacking&) = default;

  int64_t n() const { return n_; }
  int64_t replicas() const { return replicas_; }
  // Floats the buffer must hold: one past the last float any replica uses.
  int64_t span() const { return span_; }
  const std::vector<ReplicaBlock>& blocks() const { return blocks_; }
  // The block that holds float i of every replica's vector.
  const ReplicaBlock& block_of(int64_t i) const;
  // Where float i of replica r lies in the buffer.
  int64_t index(int64_t replica, int64_t i) const;
  // Every float a replica uses lies at one place, and the floats between them hold no other
  // replica's: the buffer is [replicas x n] laid out in some order, with no gaps.
  bool dense() const { return span_ == replicas_ * n_; }
  bool back_to_back() const { return blocks_.size() == 1 && blocks_[0].stride == n_; }

  // One replica's vector out of the buffer, and back in; the other replicas are untouched.
  template <typename T>
  void gather(const T* buffer, int64_t replica, T* out) const {
    for (const ReplicaBlock& b : blocks_) {
      const T* src = buffer + b.offset + replica * b.stride;
      for (int64_t i = 0; i < b.end - b.begin; ++i) out[b.begin + i] = src[i];
    }
  }
  template <typename T>
  void scatter(const T* in, int64_t replica, T* buffer) const {
    for (const ReplicaBlock& b : blocks_) {
      T* dst = buffer + b.offset + replica * b.stride;
      for (int64_t i = 0; i < b.end - b.begin; ++i) dst[i] = in[b.begin + i];
    }
  }
  // All replicas: the buffer as [replicas x n] (replica after replica), and back.
  template <typename T>
  std::vector<T> to_replica_major(const std::vector<T>& buffer) const {
    std::vector<T> out(static_cast<std::size_t>(replicas_ * n_));
    for (int64_t r = 0; r < replicas_; ++r) gather(buffer.data(), r, out.data() + r * n_);
    return out;
  }
  template <typename T>
  std::vector<T> from_replica_major(const std::vector<T>& rows, T fill = T{}) const {
    std::vector<T> out(static_cast<std::size_t>(span_), fill);
    for (int64_t r = 0; r < replicas_; ++r) scatter(rows.data() + r * n_, r, out.data());
    return out;
  }

  bool operator==(const ReplicaPacking& o) const {
    return n_ == o.n_ && replicas_ == o.replicas_ && blocks_ == o.blocks_;
  }
  bool operator!=(const ReplicaPacking& o) const { return !(*this == o); }

 private:
  void validate();

  int64_t n_ = 0, replicas_ = 1, span_ = 0;
  std::vector<ReplicaBlock> blocks_;
};

}  // namespace lrlab
