#include "../src/train_kernels.hpp"
#include "launch.cuh"
#include "lrlab/cuda_check.hpp"

namespace lrlab::detail {
namespace {

__global__ void gather_kernel(const float* x, const int32_t* labels, const float* y, int64_t dim,
                              int64_t ydim, const int32_t* perm, const int64_t* cursor, int64_t batch,
                              int64_t bsz, float* xb, int32_t* lb, float* yb) {
  const int64_t row = blockIdx.x;
  if (row >= bsz) return;
  const int64_t src = perm[*cursor * batch + row];
  const float* from = x + src * dim;
  float* to = xb + row * dim;
  for (int64_t j = threadIdx.x; j < dim; j += blockDim.x) to[j] = from[j];
  if (threadIdx.x == 0 && labels) lb[row] = labels[src];
  if (y)
    for (int64_t j = threadIdx.x; j < ydim; j += blockDim.x) yb[row * ydim + j] = y[src * ydim + j];
}

__global__ void record_kernel(const float* loss, int64_t replicas, float* ring, int64_t* cursor) {
  const int64_t c = *cursor;
  for (int64_t k = threadIdx.x; k < replicas; k += blockDim.x) ring[c * replicas + k] = loss[k];
  __syncthreads();
  if (threadIdx.x == 0) *cursor = c + 1;
}

}  // namespace

void cuda_gather_batch(const float* x, const int32_t* labels, const float* y, int64_t dim, int64_t ydim,
                       const int32_t* perm, const int64_t* cursor, int64_t batch, int64_t bsz,
                       float* xb, int32_t* lb, float* yb, cudaStream_t stream) {
  LRLAB_LAUNCH(static_cast<unsigned>(bsz), 128, stream, gather_kernel)(x, labels, y, dim, ydim, perm, cursor,
                                                                      batch, bsz, xb, lb, yb);
  LRLAB_CUDA_CHECK_LAUNCH();
}

void cuda_record_and_advance(const float* loss, int64_t replicas, float* ring, int64_t* cursor,
                             cudaStream_t stream) {
  LRLAB_LAUNCH(1, 256, stream, record_kernel)(loss, replicas, ring, cursor);
  LRLAB_CUDA_CHECK_LAUNCH();
}

}  // namespace lrlab::detail
