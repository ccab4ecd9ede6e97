#include "lrlab/packing.hpp"

#include <algorithm>
#include <utility>

#include "lrlab/error.hpp"

namespace lrlab {

ReplicaPacking::ReplicaPacking(int64_t n, int64_t replicas, int64_t stride)
    : ReplicaPacking(n, replicas, std::vector<ReplicaBlock>{{0, n, 0, stride ? stride : n}}) {}

ReplicaPacking::ReplicaPacking(int64_t n, int64_t replicas, std::vector<ReplicaBlock> blocks)
    : n_(n), replicas_(replicas), blocks_(std::move(blocks)) {
  validate();
}

void ReplicaPacking::validate() {
  LRLAB_REQUIRE(n_ >= 1, "a packing needs at least one parameter per replica (got ", n_, ")");
  LRLAB_REQUIRE(replicas_ >= 1 && replicas_ <= kMaxReplicas, "replicas must be in [1, ", kMaxReplicas, "] (got ",
                replicas_, ")");
  LRLAB_REQUIRE(!blocks_.empty(), "a packing needs at least one block");
  // Before merging, a bound that keeps the overlap check below cheap.
  LRLAB_REQUIRE(blocks_.size() <= 8 * static_cast<size_t>(kMaxReplicaBlocks), "too many blocks (",
                blocks_.size(), ")");
  int64_t next = 0;
  for (size_t i = 0; i < blocks_.size(); ++i) {
    ReplicaBlock& b = blocks_[i];
    LRLAB_REQUIRE(b.begin == next && b.end > b.begin && b.end <= n_, "block ", i, " [", b.begin, ", ",
                  b.end, ") does not continue the blocks before it within the ", n_, " parameters");
    LRLAB_REQUIRE(b.offset >= 0, "block ", i, " has a negative offset");
    // One replica's copy of a block must not run into the next replica's.
    if (replicas_ == 1) b.stride = n_;
    LRLAB_REQUIRE(b.stride >= b.end - b.begin, "block ", i, ": stride ", b.stride,
                  " is smaller than its ", b.end - b.begin, " parameters");
    LRLAB_REQUIRE(static_cast<double>(b.offset) + static_cast<double>(b.stride) * replicas_ < 9e15,
                  "block ", i, " reaches too far for a buffer");
    next = b.end;
  }
  LRLAB_REQUIRE(next == n_, "the blocks cover ", next, " of the ", n_, " parameters");

  // No two copies of any blocks may share memory: sorted by start, each ends before the next starts.
  std::vector<std::pair<int64_t, int64_t>> spans;
  spans.reserve(blocks_.size() * static_cast<size_t>(replicas_));
  for (const ReplicaBlock& b : blocks_)
    for (int64_t r = 0; r < replicas_; ++r) spans.emplace_back(b.offset + r * b.stride, b.end - b.begin);
  std::sort(spans.begin(), spans.end());
  for (size_t i = 1; i < spans.size(); ++i)
    LRLAB_REQUIRE(spans[i - 1].first + spans[i - 1].second <= spans[i].first,
                  "the blocks overlap in the buffer at float ", spans[i].first);
  span_ = spans.back().first + spans.back().second;

  // Blocks that continue each other in every replica are one block: fewer lookups in the kernels,
  // and a plain layout given as several blocks is recognised as back to back.
  std::vector<ReplicaBlock> merged{blocks_[0]};
  for (size_t i = 1; i < blocks_.size(); ++i) {
    ReplicaBlock& last = merged.back();
    const ReplicaBlock& b = blocks_[i];
    if (b.stride == last.stride && b.offset == last.offset + (last.end - last.begin))
      last.end = b.end;
    else
      merged.push_back(b);
  }
  blocks_ = std::move(merged);
  LRLAB_REQUIRE(static_cast<int>(blocks_.size()) <= kMaxReplicaBlocks, "a packing has at most ",
                kMaxReplicaBlocks, " blocks (got ", blocks_.size(), ")");
}

const ReplicaBlock& ReplicaPacking::block_of(int64_t i) const {
  LRLAB_REQUIRE(i >= 0 && i < n_, "parameter ", i, " is outside [0, ", n_, ")");
  for (const ReplicaBlock& b : blocks_)
    if (i < b.end) return b;
  return blocks_.back();
}

int64_t ReplicaPacking::index(int64_t replica, int64_t i) const {
  LRLAB_REQUIRE(replica >= 0 && replica < replicas_, "replica ", replica, " out of range (packing has ",
                replicas_, ")");
  const ReplicaBlock& b = block_of(i);
  return b.offset + replica * b.stride + (i - b.begin);
}

}  // namespace lrlab
