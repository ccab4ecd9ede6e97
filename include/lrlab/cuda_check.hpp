// The one family of check macros for CUDA runtime and cuBLAS calls. Every call into either goes
// through one of these, so a failure is an exception naming the call's file and line.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <string>

#include "lrlab/error.hpp"

namespace lrlab::detail {

[[noreturn]] inline void throw_cuda(cudaError_t err, const char* expr, const char* file, int line) {
  // The runtime also keeps the error as its "last error"; clear it, or the next launch check would
  // report an error the caller already caught. (A sticky error stays, as it must.)
  (void)cudaGetLastError();
  throw CudaError(concat("CUDA error ", cudaGetErrorName(err), " (", cudaGetErrorString(err),
                         ") in ", expr, " at ", file, ":", line));
}

[[noreturn]] inline void throw_cublas(cublasStatus_t st, const char* expr, const char* file,
                                      int line) {
  throw CudaError(concat("cuBLAS error ", cublasGetStatusName(st), " (", cublasGetStatusString(st),
                         ") in ", expr, " at ", file, ":", line));
}

}  // namespace lrlab::detail

#define LRLAB_CUDA_CHECK(call)                                                        \
  do {                                                                                \
    cudaError_t lrlab_err_ = (call);                                                  \
    if (lrlab_err_ != cudaSuccess)                                                    \
      ::lrlab::detail::throw_cuda(lrlab_err_, #call, __FILE__, __LINE__);             \
  } while (0)

// After a kernel launch: catches bad launch configurations at the launch site.
#define LRLAB_CUDA_CHECK_LAUNCH() LRLAB_CUDA_CHECK(cudaGetLastError())

#define LRLAB_CUBLAS_CHECK(call)                                                      \
  do {                                                                                \
    cublasStatus_t lrlab_st_ = (call);                                                \
    if (lrlab_st_ != CUBLAS_STATUS_SUCCESS)                                           \
      ::lrlab::detail::throw_cublas(lrlab_st_, #call, __FILE__, __LINE__);            \
  } while (0)
