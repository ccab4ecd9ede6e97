// Comma-separated tables: the label (or regression target) in the first column, then the
// features. Every problem is reported with the file name and its 1-based line and column.
#include <algorithm>
#include <charconv>
#include <climits>
#include <cmath>
#include <string>
#include <string_view>
#include <vector>

#include "lrlab/data.hpp"
#include "lrlab/error.hpp"

namespace lrlab {
namespace {

std::string_view trim(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && (s[b] == ' ' || s[b] == '\t')) ++b;
  while (e > b && (s[e - 1] == ' ' || s[e - 1] == '\t' || s[e - 1] == '\r')) --e;
  return s.substr(b, e - b);
}

// Parses a whole field as a number; false if it is not one (out of range counts as a number, so
// the caller can report it as such).
bool parse_number(std::string_view f, double* out) {
  if (!f.empty() && f[0] == '+') f.remove_prefix(1);
  if (f.empty()) return false;
  auto r = std::from_chars(f.data(), f.data() + f.size(), *out);
  if (r.ptr != f.data() + f.size()) return false;
  if (r.ec == std::errc::result_out_of_range) *out = HUGE_VAL;
  else if (r.ec != std::errc()) return false;
  return true;
}

void split_fields(std::string_view line, std::vector<std::string_view>* fields) {
  fields->clear();
  size_t start = 0;
  for (;;) {
    size_t comma = line.find(',', start);
    fields->push_back(trim(line.substr(start, comma == std::string_view::npos ? std::string_view::npos : comma - start)));
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
}

}  // namespace

Dataset parse_csv(const std::string& text, const std::string& name, bool regression, int64_t num_classes) {
  LRLAB_REQUIRE(num_classes >= 0 && num_classes <= kMaxClasses, "number of classes ", num_classes,
                " is outside [0, ", kMaxClasses, "]");
  LRLAB_REQUIRE(!text.empty(), name, ": empty file");
  Dataset d;
  if (regression) d.targets_dim = 1;
  const int64_t class_limit = num_classes > 0 ? num_classes : kMaxClasses;
  int64_t largest = -1;
  size_t columns = 0;  // 0 until the first row (header or data) fixes it
  int64_t columns_line = 0;
  std::vector<std::string_view> fields;
  std::vector<double> values;

  // A byte-order mark, as spreadsheet programs write, is not part of the first field.
  size_t pos = text.compare(0, 3, "\xEF\xBB\xBF") == 0 ? 3 : 0;
  int64_t line_no = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    size_t end = nl == std::string::npos ? text.size() : nl;
    ++line_no;
    LRLAB_REQUIRE(end - pos <= kMaxCsvLineBytes, name, ": line ", line_no, " is longer than the limit of ",
                  kMaxCsvLineBytes, " bytes");
    std::string_view line(text.data() + pos, end - pos);
    pos = end + 1;
    if (trim(line).empty()) continue;

    split_fields(line, &fields);
    values.resize(fields.size());
    size_t bad = fields.size();
    for (size_t c = 0; c < fields.size() && bad == fields.size(); ++c)
      if (!parse_number(fields[c], &values[c])) bad = c;

    if (columns == 0) {
      LRLAB_REQUIRE(fields.size() >= 2, name, ": line ", line_no, " has ", fields.size(),
                    " column; the first column is the ", regression ? "target" : "label",
                    " and at least one feature must follow");
      columns = fields.size();
      columns_line = line_no;
      d.dim = static_cast<int64_t>(columns) - 1;
      // A header names the label column; a first row whose label is a number is data, and a
      // typo further along it is reported, not taken for a header and dropped.
      if (bad == 0) continue;
    }
    LRLAB_REQUIRE(fields.size() == columns, name, ": line ", line_no, " has ", fields.size(), " columns, expected ",
                  columns, " (as on line ", columns_line, ")");
    if (bad != fields.size()) {
      if (fields[bad].empty()) LRLAB_FAIL(name, ": line ", line_no, ", column ", bad + 1, ": empty field");
      LRLAB_FAIL(name, ": line ", line_no, ", column ", bad + 1, ": '", fields[bad], "' is not a number");
    }
    for (size_t c = 0; c < columns; ++c) {
      const float f = static_cast<float>(values[c]);
      if (!std::isfinite(values[c]) || !std::isfinite(f))
        LRLAB_FAIL(name, ": line ", line_no, ", column ", c + 1, ": '", fields[c], "' is not a finite number",
                   std::isfinite(values[c]) ? " in single precision" : "");
    }
    if (regression) {
      d.y.push_back(static_cast<float>(values[0]));
    } else {
      const double label = values[0];
      LRLAB_REQUIRE(label == std::floor(label), name, ": line ", line_no, ", column 1: label '", fields[0],
                    "' is not a whole number");
      LRLAB_REQUIRE(label >= 0, name, ": line ", line_no, ", column 1: label ", fields[0], " is negative");
      LRLAB_REQUIRE(label < static_cast<double>(class_limit), name, ": line ", line_no, ", column 1: label ",
                    fields[0], " is not below the ", class_limit, " classes");
      d.labels.push_back(static_cast<int32_t>(label));
      largest = std::max(largest, static_cast<int64_t>(label));
    }
    for (size_t c = 1; c < columns; ++c) d.x.push_back(static_cast<float>(values[c]));
    ++d.n;
    LRLAB_REQUIRE(d.n < INT32_MAX, name, ": more than ", INT32_MAX, " rows");
  }
  LRLAB_REQUIRE(d.n > 0, name, ": no data rows");
  if (!regression) d.num_classes = num_classes > 0 ? num_classes : largest + 1;
  return d;
}

}  // namespace lrlab
