// Replays a sequence of validation metrics through lrlab's reduce-on-plateau rule and prints the
// learning rate after each evaluation: the lrlab side of benchmarks/compare_plateau.py, which feeds
// the same metrics to torch.optim.lr_scheduler.ReduceLROnPlateau. Not a benchmark; it lives here
// with the other side-by-side tools.
//
// Input (standard input, whitespace-separated): the metrics, one per evaluation; `nan` and `inf`
// are metrics too. Output: one line per evaluation, the rate base * scale after it (%.17g).
#include <CLI/CLI.hpp>
#include <cmath>
#include <cstdio>
#include <exception>
#include <iostream>
#include <string>

#include "bench_common.hpp"
#include "lrlab/error.hpp"
#include "lrlab/plateau.hpp"

using namespace lrlab;

int main(int argc, char** argv) {
  CLI::App app{"plateau_replay: validation metrics from standard input through lrlab's reduce-on-plateau rule"};
  std::string spec = "plateau()";
  double lr = 1;
  app.add_option("--plateau", spec, "reduce-on-plateau spec (docs/SCHEDULES.md)")->capture_default_str();
  app.add_option("--lr", lr, "base learning rate the scale multiplies")->capture_default_str();
  if (const int status = bench::parse_options(app, argc, argv); status >= 0) return status;
  try {
    LRLAB_REQUIRE(std::isfinite(lr) && lr > 0, "--lr must be a finite rate above 0 (got ", lr, ")");
    ReduceOnPlateau rule(parse_plateau(spec));
    int64_t evaluations = 0;
    while (!(std::cin >> std::ws).eof()) {
      const double metric = bench::read_number(std::cin, "a metric");
      rule.step(metric, lr);  // the rate the scale multiplies
      std::printf("%.17g\n", lr * rule.scale());
      ++evaluations;
    }
    LRLAB_REQUIRE(evaluations > 0, "standard input: expected at least one metric");
  } catch (const Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
