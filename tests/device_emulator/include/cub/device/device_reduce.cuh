// lrlab's device emulator: cub::DeviceReduce::Reduce, run on the stream like any launch.
#pragma once

#include "../../cuda_runtime.h"

namespace cub {
namespace emu_detail {
// The scratch size the emulator asks for, so that callers still have to provide it.
constexpr size_t kScratchBytes = 256;

inline bool scratch_ok(const void* temp, size_t bytes) {
  return bytes >= kScratchBytes && lrlab_emu::is_device_range(temp, kScratchBytes);
}
}  // namespace emu_detail

struct DeviceReduce {
  template <typename In, typename Out, typename Count, typename Op, typename T>
  static cudaError_t Reduce(void* temp, size_t& temp_bytes, In in, Out out, Count n, Op op, T init,
                            cudaStream_t stream = nullptr) {
    if (!temp) {
      temp_bytes = emu_detail::kScratchBytes;
      return cudaSuccess;
    }
    if (!emu_detail::scratch_ok(temp, temp_bytes)) return cudaErrorInvalidValue;
    lrlab_emu::submit(stream, [=]() {
      T acc = init;
      for (Count i = 0; i < n; ++i) acc = op(acc, in[i]);
      *out = acc;
    });
    return cudaSuccess;
  }
};

}  // namespace cub
