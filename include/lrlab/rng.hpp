// The seeded generator behind every random choice lrlab makes (initial weights, data order,
// synthetic data, validation splits). Its own code rather than <random>'s distributions, whose
// outputs differ between standard libraries: a seed must mean the same run everywhere.
#pragma once

#include <cmath>
#include <cstdint>

#include "lrlab/hd.hpp"

namespace lrlab {

// A GCC/Clang extension (x86-64 and AArch64 both have it); __extension__ keeps -Wpedantic quiet in
// the code that includes this header.
namespace detail {
__extension__ typedef unsigned __int128 u128;
}  // namespace detail

// SplitMix64's step: adds its gamma, then finalises. A good 64-bit mix, also used to derive
// independent streams from a seed.
LRLAB_HD uint64_t mix64(uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// The state of Rng(seed, stream) before its first draw.
LRLAB_HD uint64_t rng_stream_start(uint64_t seed, uint64_t stream) { return mix64(seed ^ mix64(stream + 0x1234567ull)); }

// Draw k (from 0) of next_u64() by a generator that started in state `start`. SplitMix64 is a
// counter put through a mix, so any draw can be had directly: the GPU makes each in its own thread.
LRLAB_HD uint64_t rng_draw_at(uint64_t start, uint64_t k) { return mix64(start + k * 0x9E3779B97F4A7C15ull); }

class Rng {
 public:
  // `stream` separates uses of one seed (weights of layer 3, data order of epoch 7, ...).
  explicit Rng(uint64_t seed, uint64_t stream = 0) : s_(rng_stream_start(seed, stream)) {}

  uint64_t next_u64() {
    const uint64_t z = mix64(s_);
    s_ += 0x9E3779B97F4A7C15ull;
    return z;
  }
  // Uniform in [0, 1) with 53 random bits.
  double uniform() { return static_cast<double>(next_u64() >> 11) * (1.0 / 9007199254740992.0); }
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  // Uniform integer in [0, n), unbiased (Lemire's method with rejection).
  uint64_t below(uint64_t n) {
    detail::u128 m = static_cast<detail::u128>(next_u64()) * n;
    uint64_t lo = static_cast<uint64_t>(m);
    if (lo < n) {
      uint64_t t = (0 - n) % n;
      while (lo < t) {
        m = static_cast<detail::u128>(next_u64()) * n;
        lo = static_cast<uint64_t>(m);
      }
    }
    return static_cast<uint64_t>(m >> 64);
  }
  // Standard normal (Box-Muller; one value per call keeps the sequence simple to reproduce).
  double normal() {
    double u1 = uniform();
    double u2 = uniform();
    if (u1 < 1e-300) u1 = 1e-300;
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }

  uint64_t state() const { return s_; }
  void set_state(uint64_t s) { s_ = s; }

 private:
  uint64_t s_;
};

// Fisher-Yates shuffle of [first, first+n) with this generator.
template <typename T>
void shuffle(T* first, int64_t n, Rng& rng) {
  for (int64_t i = n - 1; i > 0; --i) {
    int64_t j = static_cast<int64_t>(rng.below(static_cast<uint64_t>(i) + 1));
    T tmp = first[i];
    first[i] = first[j];
    first[j] = tmp;
  }
}

}  // namespace lrlab
