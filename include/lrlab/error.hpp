// Errors lrlab reports: one exception type, so an embedding trainer can catch it, log it and
// carry on (or the CLI can turn it into "error: ..." and exit status 2).
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace lrlab {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
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
