// lrlab's device emulator: cub::DeviceSegmentedReduce::Reduce, run on the stream like any launch.
#pragma once

#include "device_reduce.cuh"

namespace cub {

struct DeviceSegmentedReduce {
  template <typename In, typename Out, typename Begin, typename End, typename Op, typename T>
  static cudaError_t Reduce(void* temp, size_t& temp_bytes, In in, Out out, int segments, Begin begin,
                            End end, Op op, T init, cudaStream_t stream = nullptr) {
    if (segments < 0) return cudaErrorInvalidValue;
    const size_t needed = emu_detail::scratch_bytes(1024LL * segments);
    if (!temp) {
      temp_bytes = needed;
      return cudaSuccess;
    }
    if (!emu_detail::scratch_ok(temp, temp_bytes, needed)) return cudaErrorInvalidValue;
    return lrlab_emu::submit(stream, [=]() {
      for (int s = 0; s < segments; ++s) {
        T acc = init;
        for (auto i = begin[s]; i < end[s]; ++i) acc = op(acc, in[i]);
        out[s] = acc;
      }
    });
  }
};

}  // namespace cub
