// The spec grammar shared by schedules and optimizers (see docs/SCHEDULES.md):
//   SPEC    := SEGMENT ( '+' SEGMENT )*
//   SEGMENT := NAME | NAME '(' [ KEY '=' VALUE ( ',' KEY '=' VALUE )* ] ')'
// Parsing yields raw segments; ArgReader turns their values into typed, validated settings and
// names the offending token and its (1-based) position in every error.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace lrlab::spec {

struct Arg {
  std::string key;
  std::string value;
  size_t key_pos = 0;    // 1-based column of the key in the spec
  size_t value_pos = 0;  // 1-based column of the value
};

struct Segment {
  std::string name;
  size_t pos = 0;  // 1-based column of the name
  std::vector<Arg> args;
};

// Throws lrlab::Error on a syntax error ("expected ')' at position 12 in 'step(every=3'"). `what`
// names the kind of spec where the text alone cannot ("empty optimizer spec").
std::vector<Segment> parse(const std::string& text, const char* what = "");

// Reads one segment's arguments. Each accessor consumes its key; finish() rejects keys nobody read.
class ArgReader {
 public:
  // `what` names the kind of thing in messages ("schedule", "optimizer"). steps_per_epoch > 0
  // allows the 'ep' suffix on step values.
  ArgReader(const Segment& seg, std::string what, double steps_per_epoch = 0);
  // It keeps a reference to the segment: a temporary would be gone before the first read.
  ArgReader(Segment&&, std::string, double = 0) = delete;

  bool has(const std::string& key) const;
  // A finite number >= 0 (or any finite number with allow_negative); -0 reads as 0.
  double number(const std::string& key, double fallback, bool allow_negative = false);
  double required_number(const std::string& key, bool allow_negative = false);
  // A step count: a non-negative integer or, with steps_per_epoch, a number of epochs ('2ep',
  // '0.5ep', rounded to the nearest step).
  int64_t steps(const std::string& key, int64_t fallback);
  int64_t required_steps(const std::string& key);
  std::vector<int64_t> required_steps_list(const std::string& key);  // a;b;c
  bool boolean(const std::string& key, bool fallback);  // true/false/1/0
  // One of `allowed`, e.g. anneal=cos|linear.
  std::string word(const std::string& key, const std::string& fallback,
                   const std::vector<std::string>& allowed);
  // Rejects keys nobody read, listing those the segment accepts: every key asked for (by has() or an
  // accessor) before it, so call it after reading them all.
  void finish() const;

  // Where the key's value is in epochs, the message also says how many steps it rounded to.
  [[noreturn]] void fail_value(const std::string& key, const std::string& problem) const;

 private:
  const Arg* find(const std::string& key) const;
  void note_asked(const std::string& key) const;
  const Arg& require(const std::string& key) const;
  int64_t to_steps(const Arg& a) const;
  double to_number(const Arg& a, bool allow_negative) const;
  double epochs_to_steps(double epochs) const;
  std::string epochs_note(const Arg& a) const;

  const Segment& seg_;
  std::string what_;
  double steps_per_epoch_;
  mutable std::vector<bool> used_;  // which keys an accessor has read
  mutable std::vector<std::string> asked_;  // the keys the segment accepts, in the order asked for
};

}  // namespace lrlab::spec
