#include "lrlab/spec.hpp"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>

#include "lrlab/error.hpp"

namespace lrlab::spec {
namespace {

bool is_name_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '_';
}
// The character at i as the user typed it: a whole UTF-8 sequence, not its first byte (a byte that
// starts none is left for the error's escaping).
std::string char_at(const std::string& s, size_t i) {
  return s.substr(i, std::max<size_t>(1, lrlab::detail::printable_utf8(s, i)));
}

// A number written in decimal: [+-]digits[.digits][e[+-]digits], as the specs document. strtod
// alone would also take hexadecimal ("0x10"), "inf" and "nan".
bool is_decimal(const std::string& v) {
  size_t i = 0, digits = 0;
  auto run = [&] {
    size_t n = 0;
    while (i < v.size() && std::isdigit(static_cast<unsigned char>(v[i]))) ++i, ++n;
    return n;
  };
  if (i < v.size() && (v[i] == '+' || v[i] == '-')) ++i;
  digits += run();
  if (i < v.size() && v[i] == '.') {
    ++i;
    digits += run();
  }
  if (digits == 0) return false;
  if (i < v.size() && (v[i] == 'e' || v[i] == 'E')) {
    ++i;
    if (i < v.size() && (v[i] == '+' || v[i] == '-')) ++i;
    if (run() == 0) return false;
  }
  return i == v.size();
}

bool is_value_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '-' ||
         c == '+' || c == ';';
}

// PyTorch's and Keras's names for settings lrlab spells otherwise, and lrlab's: a hint where the
// segment accepts the latter (decay_steps is exp's every but poly's steps).
struct Spelling {
  const char* theirs;
  const char* ours;   // the key that must be accepted for the hint to apply
  const char* hint;
};
constexpr Spelling kSpellings[] = {
    {"betas", "beta1", "PyTorch's betas=(b1, b2) are beta1=b1, beta2=b2"},
    {"beta_1", "beta1", "Keras's beta_1 is beta1"},
    {"beta_2", "beta2", "Keras's beta_2 is beta2"},
    {"rho", "alpha", "Keras's rho is alpha"},
    {"epsilon", "eps", "Keras's epsilon is eps"},
    {"clipnorm", "clip", "Keras's clipnorm is clip (one norm over all gradients)"},
    {"global_clipnorm", "clip", "Keras's global_clipnorm is clip"},
    {"max_norm", "clip", "clip_grad_norm_'s max_norm is clip"},
    {"step_size", "every", "PyTorch's step_size is every"},
    {"milestones", "at", "PyTorch's milestones are at=a;b;c"},
    {"T_max", "steps", "PyTorch's T_max is steps"},
    {"T_0", "period", "PyTorch's T_0 is period"},
    {"T_mult", "mult", "PyTorch's T_mult is mult"},
    {"eta_min", "min", "PyTorch's eta_min is min, a multiplier of the base rate"},
    {"total_iters", "steps", "PyTorch's total_iters is steps"},
    {"total_steps", "steps", "PyTorch's total_steps is steps"},
    {"start_factor", "from", "PyTorch's start_factor is from"},
    {"end_factor", "to", "PyTorch's end_factor is to"},
    {"pct_start", "pct", "PyTorch's pct_start is pct"},
    {"div_factor", "div", "PyTorch's div_factor is div"},
    {"final_div_factor", "final_div", "PyTorch's final_div_factor is final_div"},
    {"anneal_strategy", "anneal", "PyTorch's anneal_strategy is anneal"},
    {"decay_rate", "gamma", "Keras's decay_rate is gamma"},
    {"decay_rate", "rate", "Keras's decay_rate is rate"},
    {"decay_steps", "every", "Keras's decay_steps is every"},
    {"decay_steps", "steps", "Keras's decay_steps is steps"},
    {"end_learning_rate", "end", "Keras's end_learning_rate is end, a multiplier of the base rate"},
    {"min_lr", "min_scale", "PyTorch's min_lr is min_scale, a multiplier of the base rate"},
};

// "; <hint>" where `theirs` is another library's name for a key `accepts` says this segment takes.
template <typename Accepts>
std::string spelling_hint(const std::string& theirs, Accepts accepts) {
  for (const Spelling& s : kSpellings)
    if (theirs == s.theirs && accepts(s.ours)) return std::string("; ") + s.hint;
  return "";
}

class Parser {
 public:
  Parser(const std::string& s, const char* what) : s_(s), what_(what) {}

  std::vector<Segment> run() {
    std::vector<Segment> out;
    skip_ws();
    LRLAB_REQUIRE(i_ < s_.size(), "empty ", what_, *what_ ? " " : "", "spec");
    for (;;) {
      out.push_back(segment());
      skip_ws();
      if (i_ == s_.size()) break;
      expect('+');
      skip_ws();
    }
    return out;
  }

 private:
  [[noreturn]] void fail(const std::string& msg) const {
    LRLAB_FAIL(msg, " at position ", i_ + 1, " in '", s_, "'");
  }
  void skip_ws() {
    while (i_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[i_]))) ++i_;
  }
  void expect(char c) {
    if (i_ >= s_.size()) fail(std::string("expected '") + c + "' but the spec ended");
    if (s_[i_] != c) fail(std::string("expected '") + c + "', found '" + char_at(s_, i_) + "'");
    ++i_;
  }
  std::string word(bool value) {
    size_t start = i_;
    // A value may be signed ("-1", "1e-3"); '+' inside a value only after an exponent marker,
    // since a bare '+' separates segments.
    while (i_ < s_.size()) {
      char c = s_[i_];
      bool ok = value ? is_value_char(c) : is_name_char(c);
      if (value && c == '+' && !(i_ > start && (s_[i_ - 1] == 'e' || s_[i_ - 1] == 'E'))) ok = false;
      if (!ok) break;
      ++i_;
    }
    if (i_ == start) {
      if (i_ >= s_.size()) fail(value ? "expected a value but the spec ended" : "expected a name but the spec ended");
      fail(std::string(value ? "expected a value" : "expected a name") + ", found '" + char_at(s_, i_) + "'");
    }
    return s_.substr(start, i_ - start);
  }
  Segment segment() {
    Segment seg;
    seg.pos = i_ + 1;
    if (i_ < s_.size() && !std::isalpha(static_cast<unsigned char>(s_[i_])))
      fail(std::string("expected a name, found '") + char_at(s_, i_) + "'");
    seg.name = word(false);
    skip_ws();
    if (i_ < s_.size() && s_[i_] == '(') {
      ++i_;
      skip_ws();
      if (i_ < s_.size() && s_[i_] == ')') {
        ++i_;
        return seg;
      }
      for (;;) {
        skip_ws();
        Arg a;
        a.key_pos = i_ + 1;
        a.key = word(false);
        for (const Arg& prev : seg.args)
          if (prev.key == a.key) LRLAB_FAIL("key '", a.key, "' given twice at position ", a.key_pos, " in '", s_, "'");
        skip_ws();
        expect('=');
        skip_ws();
        a.value_pos = i_ + 1;
        a.value = list_value();
        seg.args.push_back(std::move(a));
        skip_ws();
        if (i_ < s_.size() && s_[i_] == ',') {
          ++i_;
          continue;
        }
        expect(')');
        break;
      }
    }
    return seg;
  }

  // A number's 'ep' unit after spaces ("2 ep"): the grammar's VALUE is number 'ep', two tokens.
  std::string with_unit(std::string v) {
    const size_t at = i_;
    skip_ws();
    const bool unit = i_ > at && (std::isdigit(static_cast<unsigned char>(v.back())) || v.back() == '.') &&
                      s_.compare(i_, 2, "ep") == 0 &&
                      (i_ + 2 == s_.size() || !(std::isalnum(static_cast<unsigned char>(s_[i_ + 2])) ||
                                                 s_[i_ + 2] == '_' || s_[i_ + 2] == '.'));
    if (!unit) {
      i_ = at;
      return v;
    }
    i_ += 2;
    return v + "ep";
  }

  // A value, or a list a;b;c with spaces allowed around each ';'.
  std::string list_value() {
    std::string v = with_unit(word(true));
    for (;;) {
      const size_t at = i_;
      skip_ws();
      if (v.back() != ';') {
        if (i_ >= s_.size() || s_[i_] != ';') {
          i_ = at;
          return v;
        }
        ++i_;
        v += ';';
        skip_ws();
      }
      v += with_unit(word(true));
    }
  }

  const std::string& s_;
  const char* what_;
  size_t i_ = 0;
};

}  // namespace

std::vector<Segment> parse(const std::string& text, const char* what) { return Parser(text, what).run(); }

ArgReader::ArgReader(const Segment& seg, std::string what, double steps_per_epoch)
    : seg_(seg), what_(std::move(what)), steps_per_epoch_(steps_per_epoch), used_(seg.args.size()) {}

void ArgReader::note_asked(const std::string& key) const {
  if (std::find(asked_.begin(), asked_.end(), key) == asked_.end()) asked_.push_back(key);
}

const Arg* ArgReader::find(const std::string& key) const {
  note_asked(key);
  for (size_t i = 0; i < seg_.args.size(); ++i)
    if (seg_.args[i].key == key) {
      used_[i] = true;
      return &seg_.args[i];
    }
  return nullptr;
}

bool ArgReader::has(const std::string& key) const {
  note_asked(key);
  for (const Arg& a : seg_.args)
    if (a.key == key) return true;
  return false;
}

const Arg& ArgReader::require(const std::string& key) const {
  const Arg* a = find(key);
  if (a) return *a;
  // A missing key is often a misspelt one; the keys given are listed so that it shows. (Which of
  // them are unknown is only certain once every key has been read, as finish() does.)
  std::string given, hint;
  for (const Arg& x : seg_.args) {
    given += (given.empty() ? "" : ", ") + x.key + " at position " + std::to_string(x.key_pos);
    if (hint.empty()) hint = spelling_hint(x.key, [&](const std::string& ours) { return ours == key; });
  }
  LRLAB_FAIL(what_, " '", seg_.name, "' at position ", seg_.pos, " needs the key '", key, "'",
             given.empty() ? "" : " (given: " + given + ")", hint);
}

void ArgReader::fail_value(const std::string& key, const std::string& problem) const {
  const Arg* a = nullptr;
  for (const Arg& x : seg_.args)
    if (x.key == key) a = &x;
  if (a)
    LRLAB_FAIL(what_, " '", seg_.name, "': ", key, "=", a->value, " at position ", a->value_pos, ": ", problem,
               epochs_note(*a));
  LRLAB_FAIL(what_, " '", seg_.name, "': ", key, ": ", problem);
}

double ArgReader::to_number(const Arg& a, bool allow_negative) const {
  const char* begin = a.value.c_str();
  char* end = nullptr;
  errno = 0;
  double v = std::strtod(begin, &end);
  if (end == begin || *end != '\0') fail_value(a.key, "not a number");
  if (errno == ERANGE && std::fabs(v) < 1) fail_value(a.key, "too close to zero to represent (use 0)");
  if (!std::isfinite(v) || errno == ERANGE) fail_value(a.key, "not a finite number");
  if (!is_decimal(a.value)) fail_value(a.key, "not a decimal number");
  if (!allow_negative && v < 0) fail_value(a.key, "must not be negative");
  // "-0" is no negative number, but it prints as -0 (gamma=-0 would give rows of -0).
  return v == 0 ? 0.0 : v;
}

double ArgReader::number(const std::string& key, double fallback, bool allow_negative) {
  const Arg* a = find(key);
  return a ? to_number(*a, allow_negative) : fallback;
}

double ArgReader::required_number(const std::string& key, bool allow_negative) {
  return to_number(require(key), allow_negative);
}

int64_t ArgReader::to_steps(const Arg& a) const {
  std::string v = a.value;
  bool epochs = v.size() > 2 && v.compare(v.size() - 2, 2, "ep") == 0;
  if (epochs) v.resize(v.size() - 2);
  const char* begin = v.c_str();
  char* end = nullptr;
  double x = std::strtod(begin, &end);
  if (end == begin || *end != '\0' || !std::isfinite(x) || !is_decimal(v))
    fail_value(a.key, epochs ? "not a number of epochs" : "not a number of steps");
  if (x < 0) fail_value(a.key, "must not be negative");
  if (epochs) {
    if (steps_per_epoch_ <= 0) fail_value(a.key, "epochs ('ep') need the number of steps per epoch");
    x = epochs_to_steps(x);
  } else if (x != std::floor(x)) {
    fail_value(a.key, "a step count must be a whole number (or use 'ep' for epochs)");
  }
  if (x > 9.0e15) fail_value(a.key, "too many steps");
  return static_cast<int64_t>(x);
}

// + 0.0: -0ep is 0 steps, not -0.
double ArgReader::epochs_to_steps(double epochs) const { return std::round(epochs * steps_per_epoch_) + 0.0; }

// " (0.1ep at 1 step per epoch is 0 steps)" for a value in epochs that converts; "" otherwise.
std::string ArgReader::epochs_note(const Arg& a) const {
  const std::string& v = a.value;
  if (steps_per_epoch_ <= 0 || v.size() <= 2 || v.compare(v.size() - 2, 2, "ep") != 0) return "";
  const std::string number = v.substr(0, v.size() - 2);
  char* end = nullptr;
  const double epochs = std::strtod(number.c_str(), &end);
  if (!is_decimal(number) || !std::isfinite(epochs) || epochs < 0) return "";
  const double steps = epochs_to_steps(epochs);
  return detail::concat(" (", v, " at ", steps_per_epoch_, steps_per_epoch_ == 1 ? " step" : " steps",
                        " per epoch rounds to ", steps, steps == 1 ? " step" : " steps", ")");
}

int64_t ArgReader::steps(const std::string& key, int64_t fallback) {
  const Arg* a = find(key);
  return a ? to_steps(*a) : fallback;
}

int64_t ArgReader::required_steps(const std::string& key) { return to_steps(require(key)); }

std::vector<int64_t> ArgReader::required_steps_list(const std::string& key) {
  const Arg& a = require(key);
  std::vector<int64_t> out;
  size_t start = 0;
  for (;;) {
    size_t semi = a.value.find(';', start);
    Arg part = a;
    part.value = a.value.substr(start, semi == std::string::npos ? std::string::npos : semi - start);
    if (part.value.empty()) fail_value(key, "empty item in the list");
    out.push_back(to_steps(part));
    if (semi == std::string::npos) break;
    start = semi + 1;
  }
  return out;
}

bool ArgReader::boolean(const std::string& key, bool fallback) {
  const Arg* a = find(key);
  if (!a) return fallback;
  if (a->value == "true" || a->value == "1") return true;
  if (a->value == "false" || a->value == "0") return false;
  fail_value(key, "expected true or false");
}

std::string ArgReader::word(const std::string& key, const std::string& fallback,
                            const std::vector<std::string>& allowed) {
  const Arg* a = find(key);
  if (!a) return fallback;
  for (const std::string& w : allowed)
    if (a->value == w) return w;
  std::string list;
  for (const std::string& w : allowed) list += (list.empty() ? "" : ", ") + w;
  fail_value(key, "expected one of " + list);
}


void ArgReader::finish() const {
  for (size_t i = 0; i < seg_.args.size(); ++i) {
    if (used_[i]) continue;
    const std::string& key = seg_.args[i].key;
    const std::string hint = spelling_hint(
        key, [&](const std::string& ours) { return std::find(asked_.begin(), asked_.end(), ours) != asked_.end(); });
    std::string known;
    for (const std::string& k : asked_) known += (known.empty() ? "" : ", ") + k;
    LRLAB_FAIL("unknown key '", key, "' at position ", seg_.args[i].key_pos, " for ", what_, " '", seg_.name, "'",
               hint, known.empty() ? " (it takes none)" : " (known: " + known + ")");
  }
}

}  // namespace lrlab::spec
