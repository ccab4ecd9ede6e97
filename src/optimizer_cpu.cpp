// The fused optimizer on the CPU: the same per-element rules as the kernel (update_rules.hpp), in a
// loop GCC vectorises (the library builds host code with -fno-math-errno so sqrtf becomes vsqrtps).
#include <omp.h>

#include "optimizer_kernels.hpp"

namespace lrlab::detail {
namespace {

// Each thread works on its own copies of `h` and `s`: the compiler then knows that no store in the
// loop can change them, keeps their fields in registers and vectorises the loop (check for vsqrtps on
// zmm/ymm in the object file). The bf16 copy is a template flag so the common loop has no branch on it.
template <OptimKind K, int NS, bool BF16>
void update_range(const OptimizerHyper& h_in, const ReplicaState& s_in, float* __restrict p,
                  const float* __restrict g, float* __restrict s0, float* __restrict s1,
                  float* __restrict s2, uint16_t* __restrict bf, int64_t begin, int64_t end, float lr,
                  float wd) {
#pragma omp parallel
  {
    const OptimizerHyper h = h_in;
    const ReplicaState s = s_in;
#pragma omp for simd schedule(static)
    for (int64_t i = begin; i < end; ++i) {
      float pi = p[i];
      float t0 = NS > 0 ? s0[i] : 0.0f;
      float t1 = NS > 1 ? s1[i] : 0.0f;
      float t2 = NS > 2 ? s2[i] : 0.0f;
      update_element<K>(h, s, lr, wd, pi, g[i], t0, t1, t2);
      p[i] = pi;
      if (NS > 0) s0[i] = t0;
      if (NS > 1) s1[i] = t1;
      if (NS > 2) s2[i] = t2;
      if (BF16) bf[i] = float_to_bf16(pi);
    }
  }
}

template <OptimKind K, int NS>
void update_all(const FusedArgs& a, const ReplicaState* states) {
  for (int64_t r = 0; r < a.replicas; ++r) {
    const ReplicaState& s = states[r];
    if (s.skipped) continue;
    const int64_t off = r * a.ld;
    for (int k = 0; k < a.groups.count; ++k) {
      auto run = a.bf16 ? update_range<K, NS, true> : update_range<K, NS, false>;
      run(a.h, s, a.p + off, a.g + off, a.s[0] ? a.s[0] + off : nullptr, a.s[1] ? a.s[1] + off : nullptr,
          a.s[2] ? a.s[2] + off : nullptr, a.bf16 ? a.bf16 + off : nullptr, a.groups.begin[k], a.groups.end[k],
          s.lr * a.groups.lr_mult[k], a.groups.wd[k]);
    }
  }
}

template <OptimKind K>
void update_kind(const FusedArgs& a, const ReplicaState* states) {
  switch (a.nstate) {
    case 0: update_all<K, 0>(a, states); break;
    case 1: update_all<K, 1>(a, states); break;
    case 2: update_all<K, 2>(a, states); break;
    default: update_all<K, 3>(a, states); break;
  }
}

}  // namespace

void cpu_grad_sq(const FusedArgs& a, double* grad_sq) {
  for (int64_t r = 0; r < a.replicas; ++r) {
    const float* g = a.g + r * a.ld;
    double sum = 0.0;
#pragma omp parallel for simd reduction(+ : sum) schedule(static)
    for (int64_t i = 0; i < a.n; ++i) sum += static_cast<double>(g[i]) * g[i];
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
