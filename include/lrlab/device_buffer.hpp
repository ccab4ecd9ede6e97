// An owning, move-only array in device memory.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <limits>
#include <utility>
#include <vector>

#include "lrlab/cuda_check.hpp"
#include "lrlab/error.hpp"

namespace lrlab {

template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t n) : n_(n) {
    LRLAB_REQUIRE(n_ <= std::numeric_limits<size_t>::max() / sizeof(T), "a device buffer of ", n_,
                  " elements does not fit in the address space");
    if (n_) LRLAB_CUDA_CHECK(cudaMalloc(&p_, n_ * sizeof(T)));
  }
  ~DeviceBuffer() {
    if (p_) cudaFree(p_);  // an empty buffer (the CPU paths' members) never touches the CUDA runtime
  }
  DeviceBuffer(DeviceBuffer&& o) noexcept : p_(std::exchange(o.p_, nullptr)), n_(std::exchange(o.n_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    std::swap(p_, o.p_);
    std::swap(n_, o.n_);
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  static DeviceBuffer from(const std::vector<T>& v, cudaStream_t s) {
    DeviceBuffer b(v.size());
    b.upload(v.data(), v.size(), s);
    return b;
  }
  // Synchronous with respect to the host (the source may be pageable and short-lived).
  void upload(const T* src, size_t n, cudaStream_t s, size_t offset = 0) {
    check_range(n, offset);
    if (!n) return;
    LRLAB_CUDA_CHECK(cudaMemcpyAsync(p_ + offset, src, n * sizeof(T), cudaMemcpyHostToDevice, s));
    LRLAB_CUDA_CHECK(cudaStreamSynchronize(s));
  }
  void download(T* dst, size_t n, cudaStream_t s, size_t offset = 0) const {
    check_range(n, offset);
    if (!n) return;
    LRLAB_CUDA_CHECK(cudaMemcpyAsync(dst, p_ + offset, n * sizeof(T), cudaMemcpyDeviceToHost, s));
    LRLAB_CUDA_CHECK(cudaStreamSynchronize(s));
  }
  std::vector<T> to_host(cudaStream_t s) const {
    std::vector<T> v(n_);
    download(v.data(), n_, s);
    return v;
  }

  T* get() const { return p_; }
  size_t size() const { return n_; }

 private:
  void check_range(size_t n, size_t offset) const {
    LRLAB_REQUIRE(offset <= n_ && n <= n_ - offset, "copy of ", n, " elements at offset ", offset,
                  " runs past a device buffer of ", n_);
  }

  T* p_ = nullptr;
  size_t n_ = 0;
};

}  // namespace lrlab
