// lrlab's device emulator: the part of thrust::transform_iterator that CUB's algorithms use.
#pragma once

#include <cstddef>

namespace thrust {

template <typename F, typename It>
struct transform_iterator {
  It it;
  F f;
  auto operator*() const { return f(*it); }
  auto operator[](std::ptrdiff_t i) const { return f(it[i]); }
  transform_iterator operator+(std::ptrdiff_t i) const { return {it + i, f}; }
};

template <typename It, typename F>
transform_iterator<F, It> make_transform_iterator(It it, F f) {
  return {it, f};
}

}  // namespace thrust
