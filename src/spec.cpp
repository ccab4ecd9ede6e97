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

const Arg* ArgReader::find(const std::string& key) const {
  for (size_t i = 0; i < seg_.args.size(); ++i)
    if (seg_.args[i].key == key) {
      used_[i] = true;
      return &seg_.args[i];
    }
  return nullptr;
}

bool ArgReader::has(const std::string& key) const {
  for (const Arg& a : seg_.args)
    if (a.key == key) return true;
  return false;
}

const Arg& ArgReader::require(const std::string& key) const {
  const Arg* a = find(key);
  if (a) return *a;
  // A missing key is often a misspelt one; the keys given are listed so that it shows. (Which of
  // them are unknown is only certain once every key has been read, as finish() does.)
  std::string given;
  for (const Arg& x : seg_.args) given += (given.empty() ? "" : ", ") + x.key + " at position " + std::to_string(x.key_pos);
  LRLAB_FAIL(what_, " '", seg_.name, "' at position ", seg_.pos, " needs the key '", key, "'",
             given.empty() ? "" : " (given: " + given + ")");
}

void ArgReader::fail_value(const std::string& key, const std::string& problem) const {
  const Arg* a = nullptr;
  for (const Arg& x : seg_.args)
    if (x.key == key) a = &x;
  if (a)
    LRLAB_FAIL(what_, " '", seg_.name, "': ", key, "=", a->value, " at position ", a->value_pos, ": ", problem);
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
  return v;
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
    x = std::round(x * steps_per_epoch_);
  } else if (x != std::floor(x)) {
    fail_value(a.key, "a step count must be a whole number (or use 'ep' for epochs)");
  }
  if (x > 9.0e15) fail_value(a.key, "too many steps");
  return static_cast<int64_t>(x);
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
  for (size_t i = 0; i < seg_.args.size(); ++i)
    if (!used_[i])
      LRLAB_FAIL("unknown key '", seg_.args[i].key, "' at position ", seg_.args[i].key_pos, " for ",
                 what_, " '", seg_.name, "'");
}

}  // namespace lrlab::spec
