// Errors lrlab reports: one exception type, so an embedding trainer can catch it, log it and
// carry on (or the CLI can turn it into "error: ..." and exit status 2).
#pragma once

#include <cstddef>
#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>

namespace lrlab {

namespace detail {
// The length of the well-formed UTF-8 sequence at text[i] that is printable (not a C1 control, not
// a line or paragraph separator), or 0.
inline size_t printable_utf8(const std::string& text, size_t i) {
  const unsigned char c = static_cast<unsigned char>(text[i]);
  const size_t len = (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
  if (len == 0 || i + len > text.size()) return 0;
  uint32_t cp = c & (0x7f >> len);
  for (size_t k = 1; k < len; ++k) {
    const unsigned char b = static_cast<unsigned char>(text[i + k]);
    if ((b & 0xc0) != 0x80) return 0;
    cp = cp << 6 | (b & 0x3f);
  }
  static const uint32_t shortest[] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < shortest[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;  // overlong, surrogate
  if (cp <= 0x9f || cp == 0x2028 || cp == 0x2029) return 0;
  return len;
}

// A message that prints as one line whatever the user's input held: control characters (a newline
// in a spec, a NUL in a data file) and bytes that are not printable UTF-8 become escapes ("\n",
// "\x00"); printable UTF-8 passes through.
inline std::string one_line(const std::string& text) {
  static const char hex[] = "0123456789abcdef";
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (c >= 0x80) {
      if (const size_t len = printable_utf8(text, i)) {
        out.append(text, i, len);
        i += len;
        continue;
      }
    }
    if (c == '\n') out += "\\n";
    else if (c == '\t') out += "\\t";
    else if (c == '\r') out += "\\r";
    else if (c < 0x20 || c >= 0x7f) out += std::string("\\x") + hex[c >> 4] + hex[c & 15];
    else out += static_cast<char>(c);
    ++i;
  }
  return out;
}
}  // namespace detail

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(detail::one_line(what)) {}
};

// A failure inside the CUDA runtime or cuBLAS, not a problem with the user's input; carries file:line.
class CudaError : public Error {
 public:
  using Error::Error;
};

namespace detail {
[[noreturn]] inline void throw_error(const std::string& msg) { throw Error(msg); }

template <typename... Args>
std::string concat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

// "1 epoch", "3 epochs": a count and its noun, for messages.
inline std::string counted(int64_t n, const std::string& noun) {
  return std::to_string(n) + " " + noun + (n == 1 ? "" : "s");
}
}  // namespace detail

}  // namespace lrlab

// User-facing validation: the message is what the user sees after "error: ".
#define LRLAB_FAIL(...) ::lrlab::detail::throw_error(::lrlab::detail::concat(__VA_ARGS__))
#define LRLAB_REQUIRE(cond, ...) \
  do {                           \
    if (!(cond)) LRLAB_FAIL(__VA_ARGS__); \
  } while (0)
