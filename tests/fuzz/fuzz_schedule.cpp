// The whole input is a schedule spec. A spec that parses must also evaluate: a short table and a
// few far-out steps (up to the largest step the API accepts) either give finite values or throw
// lrlab::Error.
#include <cmath>
#include <cstdlib>
#include <limits>

#include "fuzz_common.hpp"
#include "lrlab/schedule.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string spec = lrlab::fuzz::bytes_of(data, size);
  lrlab::fuzz::expect_only_errors([&] {
    // A fractional steps-per-epoch exercises the rounding of 'ep' values.
    lrlab::Schedule s = lrlab::Schedule::parse(spec, 7.5);
    std::vector<float> t = s.table(64, 1e-3);
    for (float v : t)
      if (!std::isfinite(v)) std::abort();  // table() promises finite values or an Error
    for (int64_t step : {int64_t{1000}, int64_t{1} << 40, std::numeric_limits<int64_t>::max()}) {
      double m = s.multiplier(step, 1e-3);
      if (!std::isfinite(m)) std::abort();
    }
  });
  return 0;
}
