// Replays a gradient sequence through one lrlab optimizer on the CPU path and prints the parameters
// after every step: the lrlab side of benchmarks/compare_updates.py, which feeds the same
// gradients to torch.optim. Not a benchmark; it lives here with the other side-by-side tools.
//
// Input (standard input, whitespace-separated numbers): n and steps, then the n initial parameters,
// then `steps` rows of n gradients. Output: `steps` lines of n parameters (%.9g, enough to
// round-trip a float).
#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>
#include <iostream>
#include <string>
#include <vector>

#include "bench_common.hpp"
#include "lrlab/device.hpp"
#include "lrlab/error.hpp"
#include "lrlab/optimizer.hpp"
#include "lrlab/schedule.hpp"

using namespace lrlab;

int main(int argc, char** argv) {
  CLI::App app{"optim_replay: a gradient sequence from standard input through one lrlab optimizer (CPU)"};
  std::string spec = "adam()", schedule = "constant";
  double lr = 1e-3;
  app.add_option("--optimizer", spec, "optimizer spec (docs/OPTIMIZERS.md)")->capture_default_str();
  app.add_option("--lr", lr, "base learning rate")->capture_default_str();
  app.add_option("--schedule", schedule, "schedule spec (docs/SCHEDULES.md)")->capture_default_str();
  if (const int status = bench::parse_options(app, argc, argv); status >= 0) return status;
  try {
    const double n_in = bench::read_number(std::cin, "the parameter count");
    const double steps_in = bench::read_number(std::cin, "the step count");
    LRLAB_REQUIRE(n_in >= 1 && n_in <= (1 << 24) && steps_in >= 1 && steps_in <= (1 << 20) &&
                      n_in == static_cast<int64_t>(n_in) && steps_in == static_cast<int64_t>(steps_in),
                  "standard input: n must be a whole number in [1, 2^24] and steps one in [1, 2^20]");
    const auto n = static_cast<int64_t>(n_in), steps = static_cast<int64_t>(steps_in);
    std::vector<float> params(n), grads(n);
    for (float& p : params) p = static_cast<float>(bench::read_number(std::cin, "an initial parameter"));

    OptimizerSetup setup;
    setup.lr = static_cast<float>(lr);
    Optimizer opt(spec, Device::CPU, n, setup);
    opt.set_schedule(Schedule::parse(schedule).table(steps, lr));
    std::string line;
    for (int64_t t = 0; t < steps; ++t) {
      for (float& g : grads) g = static_cast<float>(bench::read_number(std::cin, "a gradient"));
      opt.step(params, grads);
      line.clear();
      char buf[32];
      for (int64_t i = 0; i < n; ++i) {
        std::snprintf(buf, sizeof buf, i ? " %.9g" : "%.9g", static_cast<double>(params[i]));
        line += buf;
      }
      std::puts(line.c_str());
    }
  } catch (const Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {  // out of memory, say: not the input's fault
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
