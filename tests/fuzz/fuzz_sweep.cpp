// The whole input is a results.json as `lrlab merge` reads it. An accepted file must survive a
// write/read round trip and render as a table and a report without failing.
#include <cstdlib>

#include "fuzz_common.hpp"
#include "lrlab/sweep.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text = lrlab::fuzz::bytes_of(data, size);
  lrlab::fuzz::expect_only_errors([&] {
    lrlab::SweepResult r = lrlab::read_sweep_results(text, "fuzz.json");
    lrlab::SweepResult back = lrlab::read_sweep_results(lrlab::sweep_results_json(r), "round trip");
    if (back.runs.size() != r.runs.size() || back.grid_size != r.grid_size) std::abort();
    lrlab::merge_sweeps({r});
    lrlab::sweep_table(r);
    lrlab::sweep_report_html(r);
  });
  return 0;
}
