// The fused optimizer on the CPU: the same per-element rules as the kernel (update_rules.hpp), in a
// loop GCC vectorises (the library builds host code with -fno-math-errno so sqrtf becomes vsqrtps).

#include <algorithm>
#include <vector>

#include "cpu_pool.hpp"
#include "optimizer_kernels.hpp"

namespace lrlab::detail {
namespace {

// Updates below this many elements run on the calling thread: starting the OpenMP team costs more
// than it saves (a packed sweep of small models updates a few thousand floats per replica).
constexpr int64_t kParallelMin = 1 << 15;

// The loop works on its own copies of `h` and `s`: the compiler then knows that no store in the
// loop can change them, keeps their fields in registers and vectorises the loop (check for vsqrtps on
// zmm/ymm in the object file). The bf16 copy is a template flag so the common loop has no branch on it.
template <OptimKind K, bool KERAS, int NS, bool BF16>
void update_range(const OptimizerHyper& h_in, const ReplicaState& s_in, float* __restrict p,
                  const float* __restrict g, float* __restrict s0, float* __restrict s1,
                  float* __restrict s2, uint16_t* __restrict bf, int64_t begin, int64_t end, float lr,
                  float wd) {
  const OptimizerHyper h = h_in;
  const ReplicaState s = s_in;
#pragma omp simd
  for (int64_t i = begin; i < end; ++i) {
    float pi = p[i];
    float t0 = NS > 0 ? s0[i] : 0.0f;
    float t1 = NS > 1 ? s1[i] : 0.0f;
    float t2 = NS > 2 ? s2[i] : 0.0f;
    update_element<K, KERAS>(h, s, lr, wd, pi, g[i], t0, t1, t2);
    p[i] = pi;
    if (NS > 0) s0[i] = t0;
    if (NS > 1) s1[i] = t1;
    if (NS > 2) s2[i] = t2;
    if (BF16) bf[i] = float_to_bf16(pi);
  }
}

// A stretch of each replica's parameters inside one group and one packing block.
struct Piece {
  int64_t begin, end;
  int group, block;
};

std::vector<Piece> pieces(const FusedArgs& a) {
  std::vector<Piece> out;
  for (int k = 0; k < a.groups.count; ++k)
    for (int b = 0; b < a.blocks.count; ++b) {
      const int64_t lo = std::max(a.groups.begin[k], a.blocks.begin[b]);
      const int64_t hi = std::min(a.groups.end[k], a.blocks.end[b]);
      if (lo < hi) out.push_back({lo, hi, k, b});
    }
  return out;
}

// The elements to update are every piece of every replica that is not skipping this step, laid
// end to end; one parallel region gives each thread an equal share of them, whatever the number
// and sizes of the groups, blocks and replicas.
template <OptimKind K, bool KERAS, int NS, bool BF16>
void update_all(const FusedArgs& a, const ReplicaState* states) {
  const std::vector<Piece> ps = pieces(a);
  int64_t per_replica = 0;
  for (const Piece& pc : ps) per_replica += pc.end - pc.begin;
  int64_t live = 0;
  for (int64_t r = 0; r < a.replicas; ++r) live += !states[r].skipped;
  const int64_t total = live * per_replica;
  // Elements [from, to) of the concatenation, piece by piece.
  auto run = [&](int64_t from, int64_t to) {
    int64_t pos = 0;
    for (int64_t r = 0; r < a.replicas && pos < to; ++r) {
      const ReplicaState& s = states[r];
      if (s.skipped) continue;
      for (size_t k = 0; k < ps.size() && pos < to; ++k) {
        const Piece& pc = ps[k];
        const int64_t len = pc.end - pc.begin;
        const int64_t b = std::max(from, pos), e = std::min(to, pos + len);
        if (b < e) {
          // Pointers to the piece's first float: the loop indexes from 0.
          const int64_t off = block_base(a.blocks, pc.block, r) + pc.begin;
          update_range<K, KERAS, NS, BF16>(a.h, s, a.p + off, a.g + off, a.s[0] ? a.s[0] + off : nullptr,
                                    a.s[1] ? a.s[1] + off : nullptr, a.s[2] ? a.s[2] + off : nullptr,
                                    a.bf16 ? a.bf16 + off : nullptr, b - pos, e - pos,
                                    s.lr * a.groups.lr_mult[pc.group], a.groups.wd[pc.group]);
        }
        pos += len;
      }
    }
  };
  if (total < kParallelMin) {
    run(0, total);
    return;
  }
  // A few parts per thread, so that a thread whose core is busy elsewhere leaves its parts to the
  // others (cpu_pool.hpp).
  const int64_t threads = cpu_thread_budget();
  const int64_t parts = std::min(threads * 4, (total + kParallelMin / 2 - 1) / (kParallelMin / 2));
  parallel_items(parts, threads, [&](int64_t t) { run(total * t / parts, total * (t + 1) / parts); });
}

template <OptimKind K, bool KERAS, int NS>
void update_all(const FusedArgs& a, const ReplicaState* states) {
  if (a.bf16) update_all<K, KERAS, NS, true>(a, states);
  else update_all<K, KERAS, NS, false>(a, states);
}

template <OptimKind K, bool KERAS>
void update_kind(const FusedArgs& a, const ReplicaState* states) {
  switch (a.nstate) {
    case 0: update_all<K, KERAS, 0>(a, states); break;
    case 1: update_all<K, KERAS, 1>(a, states); break;
    case 2: update_all<K, KERAS, 2>(a, states); break;
    default: update_all<K, KERAS, 3>(a, states); break;
  }
}

template <OptimKind K>
void update_kind(const FusedArgs& a, const ReplicaState* states) {
  if (a.h.keras) update_kind<K, true>(a, states);
  else update_kind<K, false>(a, states);
}

}  // namespace

void cpu_grad_sq(const FusedArgs& a, std::vector<double>& partial, double* grad_sq) {
  // Fixed pieces of each block (cut as the GPU cuts them, at a size of its own) summed in a fixed
  // order: the sum, and so the clipping, does not depend on the number of threads.
  constexpr int64_t kChunk = 1 << 13;
  const int per_replica = static_cast<int>(grad_parts(a.blocks, kChunk));
  const GradSegmentEdge first{a.blocks, kChunk, per_replica, false}, last{a.blocks, kChunk, per_replica, true};
  const int64_t total = a.replicas * per_replica;
  partial.resize(static_cast<size_t>(total));
  double* out = partial.data();
  auto chunk_sum = [&](int64_t c) {
    const int64_t len = last(c) - first(c);
    const float* __restrict g = a.g + first(c);
    double sum = 0.0;
#pragma omp simd reduction(+ : sum)
    for (int64_t i = 0; i < len; ++i) sum += static_cast<double>(g[i]) * g[i];
    out[c] = sum;
  };
  // Sixteen chunks to an item: claiming an item costs an atomic operation.
  constexpr int64_t kChunksPerItem = 16;
  const int64_t threads = a.replicas * a.n >= kParallelMin ? cpu_thread_budget() : 1;
  parallel_items((total + kChunksPerItem - 1) / kChunksPerItem, threads, [&](int64_t item) {
    for (int64_t c = item * kChunksPerItem; c < std::min(total, (item + 1) * kChunksPerItem); ++c) chunk_sum(c);
  });
  for (int64_t r = 0; r < a.replicas; ++r) {
    double sum = 0.0;
    for (int64_t c = 0; c < per_replica; ++c) sum += out[r * per_replica + c];
    grad_sq[r] = sum;
  }
}

void cpu_update(const FusedArgs& a, const ReplicaState* states) {
  switch (a.h.kind) {
    case OptimKind::SGD: update_kind<OptimKind::SGD>(a, states); break;
    case OptimKind::Adam: update_kind<OptimKind::Adam>(a, states); break;
    case OptimKind::AdamW: update_kind<OptimKind::AdamW>(a, states); break;
    case OptimKind::RMSprop: update_kind<OptimKind::RMSprop>(a, states); break;
    case OptimKind::Adagrad: update_kind<OptimKind::Adagrad>(a, states); break;
  }
}

}  // namespace lrlab::detail
