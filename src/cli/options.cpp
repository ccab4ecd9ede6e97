#include "options.hpp"

#include <cerrno>
#include <cmath>
#include <cstdlib>

#include "lrlab/error.hpp"

namespace lrlab::cli {

namespace {
std::string trimmed(const std::string& s) {
  const size_t a = s.find_first_not_of(" \t"), b = s.find_last_not_of(" \t");
  return a == std::string::npos ? "" : s.substr(a, b - a + 1);
}
}  // namespace

std::vector<int64_t> parse_int_list(const std::string& text, const std::string& option) {
  std::vector<int64_t> out;
  if (trimmed(text).empty() || trimmed(text) == "none") return out;
  size_t start = 0;
  for (;;) {
    size_t comma = text.find(',', start);
    std::string tok = trimmed(text.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
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

void require_values(const CLI::App& sub) {
  for (const CLI::Option* opt : sub.get_options())
    if (opt->get_type_size_max() > 0)  // flags take no value
      for (const std::string& v : opt->results())
        LRLAB_REQUIRE(!trimmed(v).empty(), opt->get_name(), ": empty value (leave the option out for its default)");
}

CLI::Validator unsigned_64() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        const bool digits = !text.empty() && text.size() <= 20 &&
                            text.find_first_not_of("0123456789") == std::string::npos;
        errno = 0;
        if (digits) std::strtoull(text.c_str(), nullptr, 10);
        if (!digits || errno == ERANGE) return "'" + text + "' is not a whole number from 0 to 18446744073709551615";
        return {};
      },
      "UINT64");
}

}  // namespace lrlab::cli
