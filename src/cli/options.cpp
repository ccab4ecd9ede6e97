#include "options.hpp"

#include <cerrno>
#include <cmath>
#include <cstdlib>

#include "lrlab/error.hpp"

namespace lrlab::cli {

std::vector<int64_t> parse_int_list(const std::string& text, const std::string& option) {
  std::vector<int64_t> out;
  if (text.empty() || text == "none") return out;
  size_t start = 0;
  for (;;) {
    size_t comma = text.find(',', start);
    std::string tok = text.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    char* end = nullptr;
    errno = 0;
    long long v = std::strtoll(tok.c_str(), &end, 10);
    LRLAB_REQUIRE(!tok.empty() && end && *end == '\0' && errno == 0 && v >= 1 && v <= (1 << 24), option,
                  ": '", tok, "' is not a positive whole number (in '", text, "')");
    out.push_back(v);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

double parse_rate(const std::string& text, const std::string& option) {
  char* end = nullptr;
  errno = 0;
  double v = std::strtod(text.c_str(), &end);
  LRLAB_REQUIRE(!text.empty() && end && *end == '\0' && errno == 0 && std::isfinite(v) && v > 0, option, ": '",
                text, "' is not a positive finite number");
  return v;
}

}  // namespace lrlab::cli
