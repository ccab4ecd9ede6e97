// Input layout (what tests/fuzz/make_corpus.cpp writes):
//   byte 0-1  length L of the labels buffer, little-endian (taken modulo what is left)
//   byte 2    flags: bit 0 gzip the images here, bit 1 gzip the labels here, before parsing
//   byte 3    number of classes (0 = infer)
//   then L bytes of labels, then the images.
// Buffers may also arrive gzip-compressed already, so mutations reach both the IDX header checks
// behind a valid gzip stream and the inflater itself.
#include <zlib.h>

#include <cmath>
#include <cstdlib>

#include "fuzz_common.hpp"
#include "lrlab/data.hpp"

namespace {

std::string gzip(const std::string& in) {
  z_stream zs{};
  if (deflateInit2(&zs, Z_BEST_SPEED, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK) std::abort();
  std::string out(deflateBound(&zs, static_cast<uLong>(in.size())), '\0');
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  zs.avail_in = static_cast<uInt>(in.size());
  zs.next_out = reinterpret_cast<Bytef*>(&out[0]);
  zs.avail_out = static_cast<uInt>(out.size());
  if (deflate(&zs, Z_FINISH) != Z_STREAM_END) std::abort();
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 4) return 0;
  const size_t rest = size - 4;
  const size_t labels_len = rest ? (size_t{data[0]} | size_t{data[1]} << 8) % (rest + 1) : 0;
  const unsigned flags = data[2];
  const int64_t classes = data[3];
  std::string labels = lrlab::fuzz::bytes_of(data + 4, labels_len);
  std::string images = lrlab::fuzz::bytes_of(data + 4 + labels_len, rest - labels_len);
  if (flags & 1) images = gzip(images);
  if (flags & 2) labels = gzip(labels);
  lrlab::fuzz::expect_only_errors([&] {
    lrlab::Dataset d = lrlab::parse_idx(images, labels, "fuzz", classes);
    const size_t n = static_cast<size_t>(d.n);
    if (d.x.size() != n * static_cast<size_t>(d.dim) || d.labels.size() != n) std::abort();
    for (float v : d.x)
      if (!(v >= 0.0f && v <= 1.0f)) std::abort();
    for (int32_t l : d.labels)
      if (l < 0 || l >= d.num_classes) std::abort();
  });
  return 0;
}
