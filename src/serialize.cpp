#include "lrlab/serialize.hpp"

#include <zlib.h>

#include <algorithm>

namespace lrlab {

uint32_t crc32_of(const char* p, size_t n, uint32_t crc) {
  while (n > 0) {  // zlib's length is a uInt: a state past 4 GiB goes in pieces
    uInt chunk = static_cast<uInt>(std::min<size_t>(n, 1u << 30));
    crc = crc32(crc, reinterpret_cast<const Bytef*>(p), chunk);
    p += chunk;
    n -= chunk;
  }
  return static_cast<uint32_t>(crc);
}

}  // namespace lrlab
