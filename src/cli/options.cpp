#include "options.hpp"

#include <cerrno>
#include <cmath>
#include <cstdlib>

#include "lrlab/error.hpp"

namespace lrlab::cli {

std::string trimmed(const std::string& s) {
  const size_t a = s.find_first_not_of(" \t\r"), b = s.find_last_not_of(" \t\r");
  return a == std::string::npos ? "" : s.substr(a, b - a + 1);
}

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

// What is wrong with `text` as a value of an option of CLI11 type `type` (INT, UINT or FLOAT), or
// "". As CLI11 converts, in base 0 for whole numbers (leading zeros are check_value's), the whole
// text consumed; and as the option stores it: a double, a signed or unsigned 64-bit number.
namespace {
// number_error's first half: what is wrong with `text` as it is written, whatever its size. Sets
// errno as the conversion left it.
std::string malformed_number(const std::string& type, const std::string& text) {
  const char* s = text.c_str();
  char* end = nullptr;
  errno = 0;
  if (type == "FLOAT") (void)std::strtod(s, &end);
  else if (type == "INT") (void)std::strtoll(s, &end, 0);
  else (void)std::strtoull(s, &end, 0);
  const char* what = type == "FLOAT" ? "a number" : type == "INT" ? "a whole number" : "a whole number from 0 up";
  if (text.empty() || end != s + text.size() || (type == "UINT" && text.find('-') != std::string::npos))
    return "'" + text + "' is not " + what;
  return "";
}
}  // namespace

std::string number_error(const std::string& type, const std::string& text) {
  if (std::string bad = malformed_number(type, text); !bad.empty()) return bad;
  if (errno == ERANGE) return "'" + text + "' is out of range";
  return "";
}

CLI::Validator whole_range(int64_t lo, int64_t hi) {
  const CLI::Range range(lo, hi);
  return CLI::Validator(
      [range](std::string& text) {
        const std::string bad = malformed_number("INT", text);
        return bad.empty() ? range(text) : bad;
      },
      range.get_description());
}

namespace {
std::string number_type(const CLI::Option& opt) {
  const std::string full = opt.get_type_name(), type = full.substr(0, full.find(':'));
  return type == "INT" || type == "UINT" || type == "FLOAT" ? type : "";
}
}  // namespace

void check_value(const CLI::Option& opt, const std::string& value, const std::string& where) {
  const std::string type = number_type(opt);
  if (type.empty()) return;
  const std::string v = trimmed(value);
  LRLAB_REQUIRE(!v.empty(), where, opt.get_name(), ": empty value; give a number");
  const size_t digits = v.find_first_not_of("+-");
  const bool octal = type != "FLOAT" && digits <= 1 && digits != std::string::npos && v.size() >= digits + 2 &&
                     v[digits] == '0' && v.find_first_not_of("0123456789", digits) == std::string::npos;
  const size_t first = octal ? v.find_first_not_of('0', digits) : std::string::npos;
  if (first != std::string::npos)  // not all zeros, which are 0 in any base
    LRLAB_FAIL(where, opt.get_name(), ": '", v, "' has a leading zero, which would be read as an octal number: write ",
               v.substr(0, digits), v.substr(first));
  if (const std::string e = number_error(type, v); !e.empty()) LRLAB_FAIL(where, opt.get_name(), ": ", e);
}

void require_values(const CLI::App& sub) {
  for (const CLI::Option* opt : sub.get_options())
    for (const std::string& v : opt->results()) check_value(*opt, v);
}

void add_number_checks(CLI::App& sub) {
  for (CLI::Option* opt : sub.get_options())
    if (const std::string type = number_type(*opt); !type.empty())
      opt->check(CLI::Validator([type](std::string& text) { return number_error(type, text); }, ""));
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

void add_run_options(CLI::App& sub, TrainOptions& o, std::string& hidden, const std::string& seed_help) {
  const std::string group = "Data and model";
  sub.add_option("--data", o.data, "fashion-mnist, idx:DIR, csv:FILE[:regression], spirals, blobs or sine")
      ->capture_default_str()
      ->group(group);
  sub.add_option("--hidden", hidden, "hidden layer widths, comma-separated ('none': a linear model)")
      ->capture_default_str()
      ->group(group);
  sub.add_option("--activation", o.activation, "relu, gelu, tanh, sigmoid or identity")
      ->capture_default_str()
      ->group(group);
  sub.add_option("--batch", o.batch, "minibatch size")->capture_default_str()->group(group);
  sub.add_option("--seed", o.seed, seed_help)->check(unsigned_64())->capture_default_str()->group(group);
  sub.add_option("--val-fraction", o.val_fraction, "share of the training set held out for validation")
      ->capture_default_str()
      ->group(group);
  sub.add_option("--limit-train", o.limit_train, "use only this many training samples (0: all)")->group(group);
  sub.add_option("--samples", o.synthetic_samples, "samples of a synthetic data set")
      ->capture_default_str()
      ->group(group);
  sub.add_option("--device", o.device, "auto, cpu or cuda")->capture_default_str()->group(group);
  sub.add_flag("--tf32", o.tf32, "let cuBLAS use TF32 tensor cores (GPU)")->group(group);
  // A callback rather than CLI11's "!--flag", which --help would show as "--no-bias-decay{false}".
  TrainOptions* run = &o;
  sub.add_flag_callback("--no-bias-decay", [run] { run->bias_decay = false; }, "no weight decay on biases")
      ->group(group);
}

}  // namespace lrlab::cli
