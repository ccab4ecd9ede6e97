// The whole input is a results.json as `lrlab merge` reads it. An accepted file must survive a
// write/read round trip, merge, and render as a table and a report, with no error.
#include <cstdlib>

#include "fuzz_common.hpp"
#include "lrlab/sweep.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text = lrlab::fuzz::bytes_of(data, size);
  lrlab::SweepResult r;
  try {
    r = lrlab::read_sweep_results(text, "fuzz.json");
  } catch (const lrlab::Error&) {
    return 0;
  }
  // What was accepted must be written so that it reads back (merge writes what it read), and
  // merge, the table and the report must take it: no error past this point.
  try {
    const lrlab::SweepResult back = lrlab::read_sweep_results(lrlab::sweep_results_json(r), "round trip");
    if (back.runs.size() != r.runs.size() || back.grid_size != r.grid_size || back.device != r.device) std::abort();
    const lrlab::SweepResult merged = lrlab::merge_sweeps({r});
    lrlab::read_sweep_results(lrlab::sweep_results_json(merged), "merged");
    lrlab::sweep_table(r);
    lrlab::sweep_report_html(r);
  } catch (const lrlab::Error&) {
    std::abort();
  }
  return 0;
}
