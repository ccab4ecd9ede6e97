// lrlab's device emulator: cub::BlockReduce for one-dimensional blocks. Every thread of the block
// must call Sum; the result is valid in thread 0, as with CUB. The temporary storage may be reused
// only after a __syncthreads(), as with CUB: the emulator reproduces the race otherwise.
#pragma once

#include "../../cuda_runtime.h"

namespace cub {

template <typename T, int BlockThreads>
class BlockReduce {
 public:
  struct TempStorage {
    T slot[BlockThreads];
  };
  explicit BlockReduce(TempStorage& storage) : s_(storage) {}

  template <typename Op>
  T Reduce(T value, Op op) {
    if (blockDim.x != BlockThreads || blockDim.y != 1 || blockDim.z != 1)
      lrlab_emu::fault("cub::BlockReduce used with a block shape other than its template's");
    s_.slot[threadIdx.x] = value;
    __syncthreads();
    if (threadIdx.x != 0) return value;  // only thread 0's result is defined
    T total = s_.slot[0];
    for (int i = 1; i < BlockThreads; ++i) total = op(total, s_.slot[i]);
    return total;
  }
  T Sum(T value) {
    return Reduce(value, [](const T& a, const T& b) { return a + b; });
  }

 private:
  TempStorage& s_;
};

}  // namespace cub
