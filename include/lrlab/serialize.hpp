// Little-endian binary encoding of lrlab's saved state (optimizer state, checkpoints, sweep
// results). The reader checks every length against what is left, so a truncated or corrupt input
// is an lrlab::Error naming the offset, never a read past the buffer or a huge allocation.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "lrlab/error.hpp"

namespace lrlab {

class ByteWriter {
 public:
  template <typename T>
  void put(const T& v) {
    static_assert(std::is_trivially_copyable_v<T>);
    out_.append(reinterpret_cast<const char*>(&v), sizeof v);
  }
  void put_bytes(const void* p, size_t n) {
    if (n) out_.append(static_cast<const char*>(p), n);
  }
  void put_string(const std::string& s) {
    put<uint64_t>(s.size());
    out_ += s;
  }
  template <typename T>
  void put_vector(const std::vector<T>& v) {
    put<uint64_t>(v.size());
    put_bytes(v.data(), v.size() * sizeof(T));
  }
  const std::string& bytes() const { return out_; }
  std::string take() { return std::move(out_); }

 private:
  std::string out_;
};

class ByteReader {
 public:
  // `what` names the input in errors ("checkpoint 'run.ckpt'").
  ByteReader(const std::string& bytes, std::string what, size_t offset = 0)
      : b_(bytes), what_(std::move(what)), pos_(offset), end_(bytes.size()) {}
  // It reads the caller's string in place: a temporary would be gone before the first read.
  ByteReader(std::string&&, std::string, size_t = 0) = delete;

  template <typename T>
  T get() {
    static_assert(std::is_trivially_copyable_v<T>);
    T v;
    need(sizeof v);
    std::memcpy(&v, b_.data() + pos_, sizeof v);
    pos_ += sizeof v;
    return v;
  }
  void get_bytes(void* p, size_t n) {
    need(n);
    if (n) std::memcpy(p, b_.data() + pos_, n);  // p may be null when n is 0 (an empty vector)
    pos_ += n;
  }
  std::string get_string(size_t max_len = 1 << 20) {
    uint64_t n = get<uint64_t>();
    LRLAB_REQUIRE(n <= max_len, what_, ": string of ", n, " bytes at offset ", pos_ - 8, " is too long");
    need(n);
    std::string s = b_.substr(pos_, n);
    pos_ += n;
    return s;
  }
  template <typename T>
  std::vector<T> get_vector() {
    uint64_t n = get<uint64_t>();
    LRLAB_REQUIRE(n <= (end_ - pos_) / sizeof(T), what_, ": array of ", n,
                  " elements at offset ", pos_ - 8, " runs past the end");
    std::vector<T> v(n);
    get_bytes(v.data(), n * sizeof(T));
    return v;
  }
  size_t offset() const { return pos_; }
  size_t remaining() const { return end_ - pos_; }
  // Reads no further than `end` (a trailer after it, say a checksum, is not part of the record).
  void limit(size_t end) { end_ = end < end_ ? end : end_; }
  const std::string& what() const { return what_; }
  void expect_end() const {
    LRLAB_REQUIRE(pos_ == end_, what_, ": ", end_ - pos_, " unexpected bytes at offset ", pos_);
  }

 private:
  void need(size_t n) const {
    LRLAB_REQUIRE(pos_ <= end_ && n <= end_ - pos_, what_, ": truncated at offset ", pos_, " (needs ", n,
                  " more bytes, has ", end_ - pos_, ")");
  }
  const std::string& b_;
  std::string what_;
  size_t pos_, end_;
};

// zlib's CRC-32 of n bytes; with `crc`, of the bytes that gave `crc` followed by these.
uint32_t crc32_of(const char* p, size_t n, uint32_t crc = 0);
// Appends the CRC-32 of everything written so far: a record that can be checked whole.
inline void put_crc32(ByteWriter& w) { w.put(crc32_of(w.bytes().data(), w.bytes().size())); }
// Checks the CRC-32 that put_crc32 appended to `bytes` and limits `rd` to what precedes it.
inline void check_crc32(const std::string& bytes, ByteReader& rd) {
  LRLAB_REQUIRE(bytes.size() >= 4 + rd.offset(), rd.what(), ": truncated (", bytes.size(), " bytes)");
  uint32_t stored;
  std::memcpy(&stored, bytes.data() + bytes.size() - 4, 4);
  LRLAB_REQUIRE(crc32_of(bytes.data(), bytes.size() - 4) == stored, rd.what(), ": checksum mismatch (corrupt data)");
  rd.limit(bytes.size() - 4);
}

}  // namespace lrlab
