// Reading files and inflating gzip with zlib, streaming into a capped buffer so a gzip bomb is
// refused once it passes the cap rather than after it has filled memory.
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <sys/stat.h>

#include "data_internal.hpp"
#include "lrlab/data.hpp"
#include "lrlab/error.hpp"

namespace lrlab {
namespace data_detail {

bool is_gzip(const std::string& bytes) {
  return bytes.size() >= 2 && static_cast<unsigned char>(bytes[0]) == 0x1f &&
         static_cast<unsigned char>(bytes[1]) == 0x8b;
}

bool file_exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string read_file(const std::string& path, size_t max_bytes) {
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  LRLAB_REQUIRE(f, "cannot open '", path, "': ", std::strerror(errno));
  struct stat st;
  LRLAB_REQUIRE(::fstat(fileno(f.get()), &st) == 0, "cannot stat '", path, "': ", std::strerror(errno));
  LRLAB_REQUIRE(S_ISREG(st.st_mode), "'", path, "' is not a regular file");
  size_t size = static_cast<size_t>(st.st_size);
  LRLAB_REQUIRE(size <= max_bytes, "'", path, "' is ", size, " bytes, more than the limit of ", max_bytes, " bytes");
  std::string bytes(size, '\0');
  size_t got = size ? std::fread(&bytes[0], 1, size, f.get()) : 0;
  LRLAB_REQUIRE(got == size, "cannot read '", path, "': read ", got, " of ", size, " bytes");
  return bytes;
}

}  // namespace data_detail

std::string gunzip_if_needed(const std::string& bytes, const std::string& name, size_t max_out) {
  if (!data_detail::is_gzip(bytes)) return bytes;
  const size_t cap = std::min(max_out, kMaxDataBytes);
  // zlib counts in 32-bit uInt; feed and drain in pieces well below that.
  constexpr size_t kPiece = size_t{1} << 30;

  z_stream zs;
  std::memset(&zs, 0, sizeof zs);
  LRLAB_REQUIRE(inflateInit2(&zs, 16 + MAX_WBITS) == Z_OK, name, ": cannot initialise zlib");
  std::unique_ptr<z_stream, int (*)(z_stream*)> guard(&zs, &inflateEnd);

  // The gzip trailer's ISIZE (size mod 2^32) is a hint for the first allocation; deflate cannot
  // expand more than ~1032:1, so a lying trailer cannot make us allocate much beyond the input.
  size_t hint = 0;
  if (bytes.size() >= 18) {
    const unsigned char* t = reinterpret_cast<const unsigned char*>(bytes.data() + bytes.size() - 4);
    hint = size_t{t[0]} | size_t{t[1]} << 8 | size_t{t[2]} << 16 | size_t{t[3]} << 24;
  }
  hint = std::min({hint, bytes.size() * 1032 + 1024, cap});
  std::string out(std::max<size_t>(hint + 1, size_t{1} << 16), '\0');
  size_t out_len = 0;
  size_t fed = 0;  // input bytes handed to zlib so far

  for (;;) {
    if (zs.avail_in == 0 && fed < bytes.size()) {
      size_t piece = std::min(kPiece, bytes.size() - fed);
      zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(bytes.data() + fed));
      zs.avail_in = static_cast<uInt>(piece);
      fed += piece;
    }
    if (out_len == out.size()) {
      LRLAB_REQUIRE(out.size() <= cap, name, ": gzip data inflates to more than ", cap,
                    " bytes (refused; the limit guards against gzip bombs)");
      out.resize(std::min(std::max(out.size() * 2, size_t{1} << 16), cap + 1));
    }
    size_t room = std::min(kPiece, out.size() - out_len);
    zs.next_out = reinterpret_cast<Bytef*>(&out[out_len]);
    zs.avail_out = static_cast<uInt>(room);
    int rc = inflate(&zs, Z_NO_FLUSH);
    out_len += room - zs.avail_out;
    size_t consumed = fed - zs.avail_in;
    LRLAB_REQUIRE(out_len <= cap, name, ": gzip data inflates to more than ", cap,
                  " bytes (refused; the limit guards against gzip bombs)");
    if (rc == Z_OK) continue;
    if (rc == Z_STREAM_END) {
      if (consumed == bytes.size()) break;
      // Concatenated gzip members form one file (as gzip -d reads them).
      std::string rest_magic = bytes.substr(consumed, 2);
      LRLAB_REQUIRE(data_detail::is_gzip(rest_magic), name, ": unexpected data after the gzip stream at byte offset ",
                    consumed, " (", bytes.size() - consumed, " bytes)");
      LRLAB_REQUIRE(inflateReset(&zs) == Z_OK, name, ": cannot reset zlib");
      continue;
    }
    if (rc == Z_BUF_ERROR && zs.avail_in == 0 && fed == bytes.size())
      LRLAB_FAIL(name, ": truncated gzip data: the input ends at byte offset ", consumed,
                 " before the end of the compressed stream");
    if (rc == Z_DATA_ERROR)
      LRLAB_FAIL(name, ": corrupt gzip data near byte offset ", consumed, " (zlib: ", zs.msg ? zs.msg : "data error", ")");
    if (rc == Z_MEM_ERROR) LRLAB_FAIL(name, ": out of memory while inflating gzip data");
    LRLAB_FAIL(name, ": gzip inflate failed near byte offset ", consumed, " (zlib code ", rc, ")");
  }
  out.resize(out_len);
  return out;
}

}  // namespace lrlab
