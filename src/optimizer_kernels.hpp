// What the optimizer's host code hands to its two back ends: the CPU loop and the CUDA kernels.
// Internal to the library.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "lrlab/optimizer.hpp"
#include "lrlab/update_rules.hpp"

namespace lrlab::detail {

struct GroupTable {
  int count = 0;
  int64_t begin[kMaxParamGroups] = {};
  int64_t end[kMaxParamGroups] = {};
  float lr_mult[kMaxParamGroups] = {};
  float wd[kMaxParamGroups] = {};
};

struct FusedArgs {
  OptimizerHyper h;
  GroupTable groups;
  float* p = nullptr;
  const float* g = nullptr;
  float* s[3] = {nullptr, nullptr, nullptr};
  uint16_t* bf16 = nullptr;
  int64_t n = 0;      // parameters per replica
  int64_t ld = 0;     // stride between replicas
  int64_t replicas = 0;
  int nstate = 0;
  bool vec = false;   // 16-byte vector access is safe (aligned pointers, ld % 4 == 0)
  bool stats = false; // gradient statistics (sum of squares) are needed before the update
};

// CPU back end: `states` in host memory.
void cpu_grad_sq(const FusedArgs& a, std::vector<double>& blocks, double* grad_sq);
void cpu_update(const FusedArgs& a, const ReplicaState* states);

// CUDA back end: `states` and `grad_sq` in device memory. Scratch for the reduction is sized by
// cuda_grad_sq_scratch() and owned by the caller, so nothing is allocated during a step.
size_t cuda_grad_sq_scratch(const FusedArgs& a);
void cuda_grad_sq(const FusedArgs& a, double* grad_sq, void* scratch, size_t scratch_bytes,
                  cudaStream_t stream);
void cuda_prepare(ReplicaState* states, const double* grad_sq, const OptimizerHyper& h, bool stats,
                  int64_t replicas, cudaStream_t stream);
void cuda_update(const FusedArgs& a, const ReplicaState* states, int num_sms, cudaStream_t stream);
// p[0..n) = value, enqueued on the stream (state buffers' initial values, with no host staging).
void cuda_fill(float* p, int64_t n, float value, cudaStream_t stream);

}  // namespace lrlab::detail
