// The fused optimizer on the GPU: a CUB segmented reduction for gradient statistics (when
// clipping or the finite check needs them), a one-thread-per-replica prepare kernel, and one update
// launch over every parameter of every replica. The per-element math is update_rules.hpp's.
#include <algorithm>
#include <type_traits>

#include <cub/device/device_reduce.cuh>
#include <cub/device/device_segmented_reduce.cuh>
#include <cuda/std/functional>
#include <thrust/iterator/counting_iterator.h>
#include <thrust/iterator/transform_iterator.h>

#include "../src/optimizer_kernels.hpp"
#include "launch.cuh"
#include "lrlab/cuda_check.hpp"

namespace lrlab::detail {
namespace {

struct SquareToDouble {
  __host__ __device__ double operator()(float x) const { return static_cast<double>(x) * x; }
};

auto square_iter(const float* g) { return thrust::make_transform_iterator(g, SquareToDouble{}); }
auto edges(const FusedArgs& a, bool end) {
  return thrust::make_transform_iterator(thrust::counting_iterator<int64_t>(0),
                                         GradSegmentEdge{a.blocks, a.grad_chunk, a.grad_parts, end});
}

constexpr int kUpdateThreads = 256;

__device__ __forceinline__ int group_of(const GroupTable& gt, int64_t i) {
  for (int k = 0; k < gt.count; ++k)
    if (i >= gt.begin[k] && i < gt.end[k]) return k;
  return -1;
}

__global__ void prepare_kernel(ReplicaState* states, const double* grad_sq, int parts,
                               OptimizerHyper h, bool stats, int64_t replicas) {
  int64_t r = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (r >= replicas) return;
  double sq = 0.0;
  if (stats)
    for (int j = 0; j < parts; ++j) sq += grad_sq[r * parts + j];
  prepare_step(states[r], h, stats, sq);
}

template <OptimKind K, bool KR, int NS>
__device__ __forceinline__ void scalar_update(const FusedArgs& a, const ReplicaState& s, int64_t at,
                                              int gi) {
  float lr = s.lr * a.groups.lr_mult[gi];
  float wd = a.groups.wd[gi];
  float p = a.p[at];
  float st[3] = {0.0f, 0.0f, 0.0f};
#pragma unroll
  for (int k = 0; k < NS; ++k) st[k] = a.s[k][at];
  update_element<K, KR>(a.h, s, lr, wd, p, a.g[at], st[0], st[1], st[2]);
  a.p[at] = p;
#pragma unroll
  for (int k = 0; k < NS; ++k) a.s[k][at] = st[k];
  if (a.bf16) a.bf16[at] = float_to_bf16(p);
}

// A quad is four consecutive parameters of one replica. Inside one group and one packing block, and
// whole, it takes the 16-byte path; otherwise (a boundary or the end) it goes element-wise.
__device__ __forceinline__ bool vector_quad(const FusedArgs& a, int64_t i, int& gi, int& bi) {
  gi = group_of(a.groups, i);
  bi = block_of(a.blocks, i);
  return a.vec && gi >= 0 && i + 3 < a.n && i + 3 < a.groups.end[gi] && i + 3 < a.blocks.end[bi];
}

template <int NS>
struct QuadData {
  float4 p, g, st[NS > 0 ? NS : 1];
};

template <int NS>
__device__ __forceinline__ void load_quad(const FusedArgs& a, int64_t at, QuadData<NS>& x) {
  x.p = *reinterpret_cast<const float4*>(a.p + at);
  x.g = *reinterpret_cast<const float4*>(a.g + at);
#pragma unroll
  for (int k = 0; k < NS; ++k) x.st[k] = *reinterpret_cast<const float4*>(a.s[k] + at);
}

template <OptimKind K, bool KR, int NS>
__device__ __forceinline__ void update_quad(const FusedArgs& a, const ReplicaState& s, int gi, int64_t at,
                                            QuadData<NS>& x) {
  const float lr = s.lr * a.groups.lr_mult[gi];
  const float wd = a.groups.wd[gi];
  float d0 = 0.0f, d1 = 0.0f, d2 = 0.0f;
  float* sx[3] = {NS > 0 ? &x.st[0].x : &d0, NS > 1 ? &x.st[1].x : &d1, NS > 2 ? &x.st[2].x : &d2};
  float* sy[3] = {NS > 0 ? &x.st[0].y : &d0, NS > 1 ? &x.st[1].y : &d1, NS > 2 ? &x.st[2].y : &d2};
  float* sz[3] = {NS > 0 ? &x.st[0].z : &d0, NS > 1 ? &x.st[1].z : &d1, NS > 2 ? &x.st[2].z : &d2};
  float* sw[3] = {NS > 0 ? &x.st[0].w : &d0, NS > 1 ? &x.st[1].w : &d1, NS > 2 ? &x.st[2].w : &d2};
  update_element<K, KR>(a.h, s, lr, wd, x.p.x, x.g.x, *sx[0], *sx[1], *sx[2]);
  update_element<K, KR>(a.h, s, lr, wd, x.p.y, x.g.y, *sy[0], *sy[1], *sy[2]);
  update_element<K, KR>(a.h, s, lr, wd, x.p.z, x.g.z, *sz[0], *sz[1], *sz[2]);
  update_element<K, KR>(a.h, s, lr, wd, x.p.w, x.g.w, *sw[0], *sw[1], *sw[2]);
  *reinterpret_cast<float4*>(a.p + at) = x.p;
#pragma unroll
  for (int k = 0; k < NS; ++k) *reinterpret_cast<float4*>(a.s[k] + at) = x.st[k];
  if (a.bf16) {
    ushort4 b = make_ushort4(float_to_bf16(x.p.x), float_to_bf16(x.p.y), float_to_bf16(x.p.z),
                             float_to_bf16(x.p.w));
    *reinterpret_cast<ushort4*>(a.bf16 + at) = b;
  }
}

// Quad q of replica r, on its own.
template <OptimKind K, bool KR, int NS>
__device__ __forceinline__ void single_quad(const FusedArgs& a, const ReplicaState& s, int64_t r, int64_t q) {
  const int64_t i = q * 4;
  int gi, bi;
  if (vector_quad(a, i, gi, bi)) {
    const int64_t at = block_base(a.blocks, bi, r) + i;
    QuadData<NS> x;
    load_quad<NS>(a, at, x);
    update_quad<K, KR, NS>(a, s, gi, at, x);
  } else {
    for (int64_t j = i; j < i + 4 && j < a.n; ++j) {
      const int gj = group_of(a.groups, j);
      if (gj >= 0) scalar_update<K, KR, NS>(a, s, block_base(a.blocks, block_of(a.blocks, j), r) + j, gj);
    }
  }
}

// One block row (blockIdx.y) per replica; threads stride over quads of the replica's parameters.
// With U = 2 a thread takes two quads an iteration, a grid's width apart (so both loads stay
// coalesced), and issues both quads' loads before the first one's arithmetic. Only the source order
// can do that: one quad's stores may alias the next one's loads as far as the compiler knows. That
// doubles the bytes each thread has in flight, with fewer threads (fewer blocks fit): which form
// keeps the memory busier is for the hardware to say (bench_optim --variants, BENCHMARKS.md).
//
// The register budget (__launch_bounds__'s second figure, blocks per multiprocessor) holds each
// kernel at the blocks it fits without the cap, except where a register or two decides a whole
// block: with one quad, Adam needs 50 registers and centered RMSprop with momentum 49, which leave
// 4 blocks of 256 threads; at 48 they fit 5 (ptxas -v, sm_90: no spill for Adam, 4 bytes for
// RMSprop). amsgrad's 56 stay. Keras's SGD with momentum needs 34 uncapped (6 blocks); SGD asks
// for 8, which it fits at 32 with no spill. Keras's plain RMSprop needs 41 (5 blocks, PyTorch's
// 40 fit 6) and is left so: held at 40 it spills 8 bytes, a trade for a GPU to judge.
constexpr int update_min_blocks(OptimKind k, int ns, int u) {
  return u == 2                                                     ? 3
         : k == OptimKind::SGD                                        ? 8
         : (k == OptimKind::Adam || k == OptimKind::AdamW) && ns == 3 ? 4
                                                                      : 5;
}

template <OptimKind K, bool KR, int NS, int U>
__global__ void __launch_bounds__(kUpdateThreads, update_min_blocks(K, NS, U))
    update_kernel(FusedArgs a, const ReplicaState* states) {
  static_assert(U == 1 || U == 2, "one or two quads an iteration");
  const int64_t r = blockIdx.y;
  const ReplicaState s = states[r];
  if (s.skipped) return;
  const int64_t nq = (a.n + 3) / 4;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t q = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; q < nq; q += U * stride) {
    int g0, b0, g1, b1;
    if (U == 2 && q + stride < nq && vector_quad(a, q * 4, g0, b0) &&
        vector_quad(a, (q + stride) * 4, g1, b1)) {
      const int64_t at0 = block_base(a.blocks, b0, r) + q * 4;
      const int64_t at1 = block_base(a.blocks, b1, r) + (q + stride) * 4;
      QuadData<NS> x0, x1;
      load_quad<NS>(a, at0, x0);
      load_quad<NS>(a, at1, x1);
      update_quad<K, KR, NS>(a, s, g0, at0, x0);
      update_quad<K, KR, NS>(a, s, g1, at1, x1);
    } else {
      single_quad<K, KR, NS>(a, s, r, q);
      if (U == 2 && q + stride < nq) single_quad<K, KR, NS>(a, s, r, q + stride);
    }
  }
}

__global__ void fill_kernel(float* p, int64_t n, float value) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    p[i] = value;
}

template <int V>
using Int = std::integral_constant<int, V>;
template <bool V>
using Bool = std::integral_constant<bool, V>;
template <OptimKind K>
using Kind = std::integral_constant<OptimKind, K>;

// Calls f(Kind<K>, Bool<KERAS>, Int<NS>, Int<U>) for the kernel that serves `kind` in PyTorch's or
// Keras's form with `nstate` state buffers and `unroll` quads an iteration. Only the state counts a
// kind can have are built (state_buffers()).
template <typename F>
void with_update_kernel(OptimKind kind, bool keras, int nstate, int unroll, F&& f) {
  auto by_unroll = [&](auto k, auto ns) {
    auto by_form = [&](auto u) {
      if (keras)
        f(k, Bool<true>{}, ns, u);
      else
        f(k, Bool<false>{}, ns, u);
    };
    if (unroll == 2)
      by_form(Int<2>{});
    else
      by_form(Int<1>{});
  };
  auto adam_like = [&](auto k) {  // m, v and, with amsgrad, vmax
    if (nstate == 3)
      by_unroll(k, Int<3>{});
    else
      by_unroll(k, Int<2>{});
  };
  switch (kind) {
    case OptimKind::SGD:
      if (nstate == 0) by_unroll(Kind<OptimKind::SGD>{}, Int<0>{});
      else by_unroll(Kind<OptimKind::SGD>{}, Int<1>{});
      break;
    case OptimKind::Adam: adam_like(Kind<OptimKind::Adam>{}); break;
    case OptimKind::AdamW: adam_like(Kind<OptimKind::AdamW>{}); break;
    case OptimKind::RMSprop:
      if (nstate == 1) by_unroll(Kind<OptimKind::RMSprop>{}, Int<1>{});
      else if (nstate == 2) by_unroll(Kind<OptimKind::RMSprop>{}, Int<2>{});
      else by_unroll(Kind<OptimKind::RMSprop>{}, Int<3>{});
      break;
    case OptimKind::Adagrad: by_unroll(Kind<OptimKind::Adagrad>{}, Int<1>{}); break;
  }
}

}  // namespace

// One replica in one block: a reduction over the whole grid. Otherwise CUB's segmented reduction,
// which gives each segment one thread block: one segment per piece of a replica (FusedArgs), summed
// per replica by the prepare kernel in a fixed order. Each replica's sum is independent of the
// others' values, and the same from run to run.
size_t cuda_grad_sq_scratch(const FusedArgs& a) {
  size_t bytes = 0;
  if (a.replicas == 1 && a.blocks.count == 1)
    LRLAB_CUDA_CHECK(cub::DeviceReduce::Reduce(nullptr, bytes, square_iter(a.g), static_cast<double*>(nullptr),
                                               a.n, cuda::std::plus<double>{}, 0.0));
  else
    LRLAB_CUDA_CHECK(cub::DeviceSegmentedReduce::Reduce(
        nullptr, bytes, square_iter(a.g), static_cast<double*>(nullptr), static_cast<int>(a.replicas * a.grad_parts),
        edges(a, false), edges(a, true), cuda::std::plus<double>{}, 0.0));
  return bytes;
}

void cuda_grad_sq(const FusedArgs& a, double* grad_sq, void* scratch, size_t scratch_bytes,
                  cudaStream_t stream) {
  if (a.replicas == 1 && a.blocks.count == 1)
    LRLAB_CUDA_CHECK(cub::DeviceReduce::Reduce(scratch, scratch_bytes, square_iter(a.g + a.blocks.offset[0]),
                                               grad_sq, a.n, cuda::std::plus<double>{}, 0.0, stream));
  else
    LRLAB_CUDA_CHECK(cub::DeviceSegmentedReduce::Reduce(
        scratch, scratch_bytes, square_iter(a.g), grad_sq, static_cast<int>(a.replicas * a.grad_parts),
        edges(a, false), edges(a, true), cuda::std::plus<double>{}, 0.0, stream));
}

void cuda_prepare(ReplicaState* states, const double* grad_sq, int parts, const OptimizerHyper& h,
                  bool stats, int64_t replicas, cudaStream_t stream) {
  int threads = 128;
  int grid = static_cast<int>((replicas + threads - 1) / threads);
  LRLAB_LAUNCH(grid, threads, stream, prepare_kernel)(states, grad_sq, parts, h, stats, replicas);
  LRLAB_CUDA_CHECK_LAUNCH();
}

void cuda_fill(float* p, int64_t n, float value, cudaStream_t stream) {
  if (n <= 0) return;
  const int64_t blocks = std::min<int64_t>((n + 255) / 256, 65535);
  LRLAB_LAUNCH(static_cast<unsigned>(blocks), 256, stream, fill_kernel)(p, n, value);
  LRLAB_CUDA_CHECK_LAUNCH();
}

int64_t cuda_update_resident_blocks(OptimKind kind, bool keras, int nstate, int unroll, int num_sms) {
  int per_sm = 0;
  with_update_kernel(kind, keras, nstate, unroll, [&](auto k, auto kr, auto ns, auto u) {
    LRLAB_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
        &per_sm, update_kernel<decltype(k)::value, decltype(kr)::value, decltype(ns)::value, decltype(u)::value>,
        kUpdateThreads, 0));
  });
  return std::max<int64_t>(1, static_cast<int64_t>(per_sm) * num_sms);
}

void cuda_update(const FusedArgs& a, const ReplicaState* states, int64_t resident_blocks, cudaStream_t stream) {
  const int64_t quads = (a.n + 3) / 4;
  // One wave of blocks, split across the replicas. Each block strides over an equal share, so a
  // grid larger than the GPU holds at once runs its last blocks as a second, partial wave with too
  // few loads in flight for the memory: on an H200, the grid of 8 blocks per multiprocessor it used
  // to ask for kept Adam (5 blocks fit, then 3) at 0.82 of a copy (BENCHMARKS.md has the table).
  LRLAB_REQUIRE(a.unroll == 1 || a.unroll == 2, "the update takes one or two quads an iteration, not ", a.unroll);
  const int64_t per_block = int64_t{kUpdateThreads} * a.unroll;
  const int64_t want = (quads + per_block - 1) / per_block;
  const int64_t cap = std::max<int64_t>(1, resident_blocks / a.replicas);
  dim3 grid(static_cast<unsigned>(std::max<int64_t>(1, std::min(want, cap))), static_cast<unsigned>(a.replicas));
  with_update_kernel(a.h.kind, a.h.keras != 0, a.nstate, a.unroll, [&](auto k, auto kr, auto ns, auto u) {
    LRLAB_LAUNCH(grid, kUpdateThreads, stream,
                 update_kernel<decltype(k)::value, decltype(kr)::value, decltype(ns)::value, decltype(u)::value>)(
        a, states);
  });
  LRLAB_CUDA_CHECK_LAUNCH();
}

}  // namespace lrlab::detail
