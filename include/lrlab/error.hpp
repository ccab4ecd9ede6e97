// Errors lrlab reports: one exception type, so an embedding trainer can catch it, log it and
// carry on (or the CLI can turn it into "error: ..." and exit status 2).
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace lrlab {

namespace detail {
// A message that prints as one line whatever the user's input held: control characters (a newline
// in a spec, a NUL in a data file) and bytes that are not UTF-8 become escapes ("\n", "\x00");
// valid UTF-8 passes through.
inline std::string one_line(const std::string& text) {
  static const char hex[] = "0123456789abcdef";
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
    bool valid = len > 0 && i + len <= text.size();
    for (size_t k = 1; valid && k < len; ++k) valid = (static_cast<unsigned char>(text[i + k]) & 0xc0) == 0x80;
    if (valid && len > 1) {
      out.append(text, i, len);
      i += len;
      continue;
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
}  // namespace detail

}  // namespace lrlab

// User-facing validation: the message is what the user sees after "error: ".
#define LRLAB_FAIL(...) ::lrlab::detail::throw_error(::lrlab::detail::concat(__VA_ARGS__))
#define LRLAB_REQUIRE(cond, ...) \
  do {                           \
    if (!(cond)) LRLAB_FAIL(__VA_ARGS__); \
  } while (0)
