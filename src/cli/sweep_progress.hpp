// The timing of `lrlab sweep`'s progress lines, apart from the clock so that it can be checked.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>

namespace lrlab::cli {

// ", 12 s, ~36 s left" after epoch e of E, `spent` seconds in: the epochs to come at the mean pace
// of those done (an estimate, since configurations that diverge or are halved stop training). None
// is left once none trains, or after the last epoch.
inline std::string sweep_progress_timing(int64_t e, int64_t E, int64_t alive, double spent) {
  char timing[64];
  if (e < E && alive > 0)
    std::snprintf(timing, sizeof timing, ", %.0f s, ~%.0f s left", spent,
                  spent / static_cast<double>(e) * static_cast<double>(E - e));
  else
    std::snprintf(timing, sizeof timing, ", %.0f s", spent);
  return timing;
}

}  // namespace lrlab::cli
