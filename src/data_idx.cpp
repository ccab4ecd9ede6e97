// IDX files (the MNIST format): a big-endian header of magic number and dimensions, then the
// raw values. Only unsigned-byte images (3 dimensions) and labels (1 dimension) are read. Sizes
// in the header are checked against the bytes actually present before anything is allocated.
#include <algorithm>
#include <climits>
#include <cstdio>
#include <string>

#include "data_internal.hpp"
#include "lrlab/data.hpp"
#include "lrlab/error.hpp"

namespace lrlab {
namespace {

constexpr unsigned kUbyte = 0x08;

uint32_t be32(const unsigned char* p) {
  return uint32_t{p[0]} << 24 | uint32_t{p[1]} << 16 | uint32_t{p[2]} << 8 | uint32_t{p[3]};
}

struct IdxView {
  const unsigned char* data = nullptr;  // first value after the header
  size_t header_bytes = 0;
  uint32_t dims[3] = {0, 0, 0};
};

// Validates the header of an unsigned-byte IDX buffer with `ndims` dimensions and that the
// buffer holds exactly the values it announces.
IdxView read_header(const std::string& b, const std::string& name, unsigned ndims, const char* what) {
  const unsigned char* p = reinterpret_cast<const unsigned char*>(b.data());
  const uint32_t expected_magic = kUbyte << 8 | ndims;
  LRLAB_REQUIRE(!b.empty(), name, ": empty file");
  LRLAB_REQUIRE(b.size() >= 4, name, ": truncated IDX header: the file ends at byte offset ", b.size(),
                " inside the 4-byte magic number");
  const uint32_t magic = be32(p);
  if (p[0] != 0 || p[1] != 0 || p[2] != kUbyte || p[3] != ndims) {
    char hex[16];
    std::snprintf(hex, sizeof hex, "0x%08x", magic);
    char want[16];
    std::snprintf(want, sizeof want, "0x%08x", expected_magic);
    LRLAB_FAIL(name, ": wrong IDX magic number ", hex, " at byte offset 0 (expected ", want, " for unsigned-byte ",
               what, ")");
  }
  IdxView v;
  v.header_bytes = 4 + 4 * size_t{ndims};
  LRLAB_REQUIRE(b.size() >= v.header_bytes, name, ": truncated IDX header: the file ends at byte offset ", b.size(),
                ", the header needs ", v.header_bytes, " bytes");
  unsigned __int128 values = 1;
  for (unsigned i = 0; i < ndims; ++i) {
    v.dims[i] = be32(p + 4 + 4 * i);
    LRLAB_REQUIRE(v.dims[i] > 0, name, ": IDX dimension ", i, " is 0 at byte offset ", 4 + 4 * i);
    values *= v.dims[i];
  }
  LRLAB_REQUIRE(v.dims[0] <= static_cast<uint32_t>(INT32_MAX), name, ": the header claims ", v.dims[0], " ", what,
                " at byte offset 4, more than lrlab supports (", INT32_MAX, ")");
  const size_t available = b.size() - v.header_bytes;
  if (values > available) {
    std::string shape = ndims == 3 ? " of " + std::to_string(v.dims[1]) + "x" + std::to_string(v.dims[2]) : "";
    LRLAB_FAIL(name, ": truncated IDX data: the header claims ", v.dims[0], " ", what, shape,
               " but the file ends at byte offset ", b.size());
  }
  LRLAB_REQUIRE(values == available, name, ": unexpected data after the IDX values at byte offset ",
                v.header_bytes + static_cast<size_t>(values), " (", available - static_cast<size_t>(values),
                " extra bytes)");
  v.data = p + v.header_bytes;
  return v;
}

}  // namespace

Dataset parse_idx(const std::string& images_bytes, const std::string& images_name, const std::string& labels_bytes,
                  const std::string& labels_name, int64_t num_classes) {
  LRLAB_REQUIRE(num_classes >= 0 && num_classes <= kMaxClasses, "number of classes ", num_classes,
                " is outside [0, ", kMaxClasses, "]");
  // Inflate only when needed: plain buffers are read in place rather than copied.
  std::string images_plain, labels_plain;
  const bool images_gz = data_detail::is_gzip(images_bytes);
  const bool labels_gz = data_detail::is_gzip(labels_bytes);
  if (images_gz) images_plain = gunzip_if_needed(images_bytes, images_name, kMaxDataBytes);
  if (labels_gz) labels_plain = gunzip_if_needed(labels_bytes, labels_name, kMaxDataBytes);
  const std::string& images = images_gz ? images_plain : images_bytes;
  const std::string& labels = labels_gz ? labels_plain : labels_bytes;

  // Labels first: they are small, and a count mismatch is reported before pixels are converted.
  IdxView lv = read_header(labels, labels_name, 1, "labels");
  IdxView iv = read_header(images, images_name, 3, "images");
  LRLAB_REQUIRE(lv.dims[0] == iv.dims[0], labels_name, " holds ", lv.dims[0], " labels (count at byte offset 4) but ",
                images_name, " holds ", iv.dims[0], " images");

  Dataset d;
  d.n = iv.dims[0];
  d.dim = int64_t{iv.dims[1]} * iv.dims[2];
  d.labels.resize(static_cast<size_t>(d.n));
  int64_t largest = -1;
  for (int64_t i = 0; i < d.n; ++i) {
    const int64_t label = lv.data[i];
    if (num_classes > 0 && label >= num_classes)
      LRLAB_FAIL(labels_name, ": label ", label, " at byte offset ", lv.header_bytes + static_cast<size_t>(i),
                 " is not below the ", num_classes, " classes");
    d.labels[static_cast<size_t>(i)] = static_cast<int32_t>(label);
    largest = std::max(largest, label);
  }
  d.num_classes = num_classes > 0 ? num_classes : largest + 1;

  const size_t count = static_cast<size_t>(d.n) * static_cast<size_t>(d.dim);
  d.x.resize(count);
  const unsigned char* px = iv.data;
  float* x = d.x.data();
  constexpr float kScale = 1.0f / 255.0f;
  for (size_t i = 0; i < count; ++i) x[i] = static_cast<float>(px[i]) * kScale;
  return d;
}

Dataset parse_idx(const std::string& images_bytes, const std::string& labels_bytes, const std::string& name,
                  int64_t num_classes) {
  return parse_idx(images_bytes, name + " images", labels_bytes, name + " labels", num_classes);
}

}  // namespace lrlab
