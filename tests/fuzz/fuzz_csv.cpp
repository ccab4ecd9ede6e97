// The whole input is a CSV file, read as a classification table (labels inferred, and with a fixed
// class count) and as a regression table.
#include <cmath>
#include <cstdlib>

#include "fuzz_common.hpp"
#include "lrlab/data.hpp"

namespace {

// What parse_csv promises about a table it accepts.
void check(const lrlab::Dataset& d, bool regression) {
  const size_t n = static_cast<size_t>(d.n);
  if (d.n <= 0 || d.dim <= 0 || d.x.size() != n * static_cast<size_t>(d.dim)) std::abort();
  if (regression ? d.y.size() != n : d.labels.size() != n) std::abort();
  for (float v : d.x)
    if (!std::isfinite(v)) std::abort();
  for (int32_t l : d.labels)
    if (l < 0 || l >= d.num_classes) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text = lrlab::fuzz::bytes_of(data, size);
  for (int64_t classes : {int64_t{0}, int64_t{3}})
    lrlab::fuzz::expect_only_errors([&] { check(lrlab::parse_csv(text, "fuzz.csv", false, classes), false); });
  lrlab::fuzz::expect_only_errors([&] { check(lrlab::parse_csv(text, "fuzz.csv", true), true); });
  return 0;
}
