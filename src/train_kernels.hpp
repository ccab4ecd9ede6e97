// Device helpers of the training engine. Internal to the library.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace lrlab::detail {

// Copies the rows perm[cursor*batch .. +bsz) of x (and of labels / y) into the minibatch buffers.
// `cursor` (device) is the minibatch index in the epoch, so a replayed graph gathers the next one.
void cuda_gather_batch(const float* x, const int32_t* labels, const float* y, int64_t dim, int64_t ydim,
                       const int32_t* perm, const int64_t* cursor, int64_t batch, int64_t bsz,
                       float* xb, int32_t* lb, float* yb, cudaStream_t stream);

// ring[cursor * replicas + k] = loss[k]; then ++cursor.
void cuda_record_and_advance(const float* loss, int64_t replicas, float* ring, int64_t* cursor,
                             cudaStream_t stream);

}  // namespace lrlab::detail
