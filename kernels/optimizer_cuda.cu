// The fused optimizer on the GPU: a CUB segmented reduction for gradient statistics (when
// clipping or the finite check needs them), a one-thread-per-replica prepare kernel, and one update
// launch over every parameter of every replica. The per-element math is update_rules.hpp's.
#include <algorithm>

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

template <OptimKind K, int NS>
__device__ __forceinline__ void scalar_update(const FusedArgs& a, const ReplicaState& s, int64_t at,
                                              int gi) {
  float lr = s.lr * a.groups.lr_mult[gi];
  float wd = a.groups.wd[gi];
  float p = a.p[at];
  float st[3] = {0.0f, 0.0f, 0.0f};
#pragma unroll
  for (int k = 0; k < NS; ++k) st[k] = a.s[k][at];
  update_element<K>(a.h, s, lr, wd, p, a.g[at], st[0], st[1], st[2]);
  a.p[at] = p;
#pragma unroll
  for (int k = 0; k < NS; ++k) a.s[k][at] = st[k];
  if (a.bf16) a.bf16[at] = float_to_bf16(p);
}

// One block row (blockIdx.y) per replica; threads stride over quads of the replica's parameters. A
// quad inside one group and one packing block takes the 16-byte path; quads that straddle a
// boundary or the end go element-wise.
template <OptimKind K, int NS>
__global__ void __launch_bounds__(kUpdateThreads) update_kernel(FusedArgs a, const ReplicaState* states) {
  const int64_t r = blockIdx.y;
  const ReplicaState s = states[r];
  if (s.skipped) return;
  const int64_t nq = (a.n + 3) / 4;
  for (int64_t q = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; q < nq;
       q += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = q * 4;
    const int gi = group_of(a.groups, i);
    const int bi = block_of(a.blocks, i);
    if (a.vec && gi >= 0 && i + 3 < a.n && i + 3 < a.groups.end[gi] && i + 3 < a.blocks.end[bi]) {
      const int64_t at = block_base(a.blocks, bi, r) + i;
      const float lr = s.lr * a.groups.lr_mult[gi];
      const float wd = a.groups.wd[gi];
      float4 p = *reinterpret_cast<const float4*>(a.p + at);
      const float4 g = *reinterpret_cast<const float4*>(a.g + at);
      float4 st[3];
#pragma unroll
      for (int k = 0; k < NS; ++k) st[k] = *reinterpret_cast<const float4*>(a.s[k] + at);
      float d0 = 0.0f, d1 = 0.0f, d2 = 0.0f;
      float* sx[3] = {NS > 0 ? &st[0].x : &d0, NS > 1 ? &st[1].x : &d1, NS > 2 ? &st[2].x : &d2};
      float* sy[3] = {NS > 0 ? &st[0].y : &d0, NS > 1 ? &st[1].y : &d1, NS > 2 ? &st[2].y : &d2};
      float* sz[3] = {NS > 0 ? &st[0].z : &d0, NS > 1 ? &st[1].z : &d1, NS > 2 ? &st[2].z : &d2};
      float* sw[3] = {NS > 0 ? &st[0].w : &d0, NS > 1 ? &st[1].w : &d1, NS > 2 ? &st[2].w : &d2};
      update_element<K>(a.h, s, lr, wd, p.x, g.x, *sx[0], *sx[1], *sx[2]);
      update_element<K>(a.h, s, lr, wd, p.y, g.y, *sy[0], *sy[1], *sy[2]);
      update_element<K>(a.h, s, lr, wd, p.z, g.z, *sz[0], *sz[1], *sz[2]);
      update_element<K>(a.h, s, lr, wd, p.w, g.w, *sw[0], *sw[1], *sw[2]);
      *reinterpret_cast<float4*>(a.p + at) = p;
#pragma unroll
      for (int k = 0; k < NS; ++k) *reinterpret_cast<float4*>(a.s[k] + at) = st[k];
      if (a.bf16) {
        ushort4 b = make_ushort4(float_to_bf16(p.x), float_to_bf16(p.y), float_to_bf16(p.z),
                                 float_to_bf16(p.w));
        *reinterpret_cast<ushort4*>(a.bf16 + at) = b;
      }
    } else {
      for (int64_t j = i; j < i + 4 && j < a.n; ++j) {
        const int gj = group_of(a.groups, j);
        if (gj >= 0) scalar_update<K, NS>(a, s, block_base(a.blocks, block_of(a.blocks, j), r) + j, gj);
      }
    }
  }
}

__global__ void fill_kernel(float* p, int64_t n, float value) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    p[i] = value;
}

template <OptimKind K, int NS>
int resident_per_sm() {
  int blocks = 0;
  LRLAB_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, update_kernel<K, NS>, kUpdateThreads, 0));
  return blocks;
}

template <OptimKind K>
int resident_per_sm(int nstate) {
  switch (nstate) {
    case 0: return resident_per_sm<K, 0>();
    case 1: return resident_per_sm<K, 1>();
    case 2: return resident_per_sm<K, 2>();
    default: return resident_per_sm<K, 3>();
  }
}

template <OptimKind K>
void launch_kind(const FusedArgs& a, const ReplicaState* states, dim3 grid, cudaStream_t stream) {
  switch (a.nstate) {
    case 0: LRLAB_LAUNCH(grid, kUpdateThreads, stream, update_kernel<K, 0>)(a, states); break;
    case 1: LRLAB_LAUNCH(grid, kUpdateThreads, stream, update_kernel<K, 1>)(a, states); break;
    case 2: LRLAB_LAUNCH(grid, kUpdateThreads, stream, update_kernel<K, 2>)(a, states); break;
    default: LRLAB_LAUNCH(grid, kUpdateThreads, stream, update_kernel<K, 3>)(a, states); break;
  }
  LRLAB_CUDA_CHECK_LAUNCH();
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

int64_t cuda_update_resident_blocks(OptimKind kind, int nstate, int num_sms) {
  int per_sm = 0;
  switch (kind) {
    case OptimKind::SGD: per_sm = resident_per_sm<OptimKind::SGD>(nstate); break;
    case OptimKind::Adam: per_sm = resident_per_sm<OptimKind::Adam>(nstate); break;
    case OptimKind::AdamW: per_sm = resident_per_sm<OptimKind::AdamW>(nstate); break;
    case OptimKind::RMSprop: per_sm = resident_per_sm<OptimKind::RMSprop>(nstate); break;
    case OptimKind::Adagrad: per_sm = resident_per_sm<OptimKind::Adagrad>(nstate); break;
  }
  return std::max<int64_t>(1, static_cast<int64_t>(per_sm) * num_sms);
}

void cuda_update(const FusedArgs& a, const ReplicaState* states, int64_t resident_blocks, cudaStream_t stream) {
  const int64_t quads = (a.n + 3) / 4;
  // One wave of blocks, split across the replicas. Each block strides over an equal share, so a
  // grid larger than the GPU holds at once runs its last blocks as a second, partial wave with too
  // few loads in flight for the memory: on an H200, the grid of 8 blocks per multiprocessor it used
  // to ask for kept Adam (5 blocks fit, then 3) at 0.82 of a copy (BENCHMARKS.md has the table).
  const int64_t want = (quads + kUpdateThreads - 1) / kUpdateThreads;
  const int64_t cap = std::max<int64_t>(1, resident_blocks / a.replicas);
  dim3 grid(static_cast<unsigned>(std::max<int64_t>(1, std::min(want, cap))), static_cast<unsigned>(a.replicas));
  switch (a.h.kind) {
    case OptimKind::SGD: launch_kind<OptimKind::SGD>(a, states, grid, stream); break;
    case OptimKind::Adam: launch_kind<OptimKind::Adam>(a, states, grid, stream); break;
    case OptimKind::AdamW: launch_kind<OptimKind::AdamW>(a, states, grid, stream); break;
    case OptimKind::RMSprop: launch_kind<OptimKind::RMSprop>(a, states, grid, stream); break;
    case OptimKind::Adagrad: launch_kind<OptimKind::Adagrad>(a, states, grid, stream); break;
  }
}

}  // namespace lrlab::detail
