// Marks a function as shared math: compiled for the host (the CPU path) and, under nvcc, for the
// device (the kernels). Each formula lrlab computes is written once, with this marker.
#pragma once

#if defined(__CUDACC__)
#define LRLAB_HD __host__ __device__ __forceinline__
#else
#define LRLAB_HD inline
#endif
