// lrlab's device emulator: the part of thrust::counting_iterator that CUB's algorithms use.
#pragma once

#include <cstddef>

namespace thrust {

template <typename T>
struct counting_iterator {
  T value;
  explicit counting_iterator(T v) : value(v) {}
  T operator*() const { return value; }
  T operator[](std::ptrdiff_t i) const { return static_cast<T>(value + i); }
  counting_iterator operator+(std::ptrdiff_t i) const { return counting_iterator(static_cast<T>(value + i)); }
};

}  // namespace thrust
