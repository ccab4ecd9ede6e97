// lrlab's device emulator: cub::DeviceReduce::Reduce, run on the stream like any launch.
#pragma once

#include "../../cuda_runtime.h"

namespace cub {
namespace emu_detail {
// The scratch the emulator asks for grows with the work, as CUB's does, so that a size queried for
// a smaller problem than the one run is caught (CUB then fails with cudaErrorInvalidValue).
inline size_t scratch_bytes(long long items) { return 256 + 8 * static_cast<size_t>((items + 1023) / 1024); }

inline bool scratch_ok(const void* temp, size_t given, size_t needed) {
  return given >= needed && lrlab_emu::is_device_range(temp, needed);
}
}  // namespace emu_detail

struct DeviceReduce {
  template <typename In, typename Out, typename Count, typename Op, typename T>
  static cudaError_t Reduce(void* temp, size_t& temp_bytes, In in, Out out, Count n, Op op, T init,
                            cudaStream_t stream = nullptr) {
    const size_t needed = emu_detail::scratch_bytes(static_cast<long long>(n));
    if (!temp) {
      temp_bytes = needed;
      return cudaSuccess;
    }
    if (!emu_detail::scratch_ok(temp, temp_bytes, needed)) return cudaErrorInvalidValue;
    return lrlab_emu::submit(stream, [=]() {
      T acc = init;
      for (Count i = 0; i < n; ++i) acc = op(acc, in[i]);
      *out = acc;
    });
  }
};

}  // namespace cub
