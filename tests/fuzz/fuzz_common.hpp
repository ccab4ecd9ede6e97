// Shared by the libFuzzer targets: lrlab::Error is how lrlab refuses bad input, so it is an
// expected outcome; any other exception escapes and libFuzzer reports it as a crash.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "lrlab/error.hpp"

namespace lrlab::fuzz {

inline std::string bytes_of(const uint8_t* data, size_t size) {
  return std::string(reinterpret_cast<const char*>(data), size);
}

template <typename F>
void expect_only_errors(F&& f) {
  try {
    f();
  } catch (const lrlab::Error&) {
  }
}

}  // namespace lrlab::fuzz
