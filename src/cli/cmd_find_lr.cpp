// lrlab find-lr: the learning-rate range test, one curve per optimizer spec.
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "command.hpp"
#include "lrlab/error.hpp"
#include "lrlab/io.hpp"
#include "lrlab/lr_finder.hpp"
#include "lrlab/optimizer.hpp"
#include "lrlab/schedule.hpp"
#include "options.hpp"

namespace lrlab::cli {
namespace {

struct FindLrArgs {
  TrainOptions o;
  std::string hidden = "256,128";
  std::vector<std::string> optimizers = {"adam()"};
  std::string start = "1e-7", end = "10";
  int64_t steps = 100;
  std::string mode = "exp";
  std::string json_out, plot_svg;
  bool quiet = false;
};

void print_curve(const FinderCurve& c, int64_t planned) {
  std::printf("\n%s: %lld of %lld steps", c.optimizer.c_str(), static_cast<long long>(c.steps_run),
              static_cast<long long>(planned));
  if (c.stopped_early)
    std::printf(", stopped early at lr %.3g: the loss diverged\n", c.lr.back());
  else
    std::printf(", did not diverge (a higher --end would show where it does)\n");
  const struct {
    const char* key;
    const char* label;
    double rate;
  } rows[] = {{"valley", "valley", c.valley}, {"steepest", "steepest", c.steepest},
              {"min_div10", "minimum/10", c.min_div10}};
  for (const auto& r : rows) {
    char rate[32] = "-";  // too few points for the rule
    if (std::isfinite(r.rate)) std::snprintf(rate, sizeof rate, "%.3g", r.rate);
    std::printf("  %-11s %10s%s\n", r.label, rate, c.recommended == r.key ? "  <- recommended" : "");
  }
  if (!c.no_suggestion.empty())
    std::printf("  (no rate suggested: see the warning)\n");
  else if (c.recommended != "valley")
    std::printf("  (the loss never decreased: no valley, minimum/10 recommended)\n");
}

// A live line on a terminal (stderr) while the tests run: the steps of all curves together.
class Progress {
 public:
  Progress(bool on, size_t curves, int64_t steps) : on_(on), done_(curves, 0), planned_(steps) {}

  FinderProgress observer() {
    if (!on_) return {};
    return [this](size_t curve, int64_t done) {
      std::lock_guard<std::mutex> lock(mutex_);
      done_[curve] = done;
      int64_t all = 0;
      for (int64_t d : done_) all += d;
      const int64_t total = planned_ * static_cast<int64_t>(done_.size());
      std::fprintf(stderr, "\r  range test: %lld of %lld steps   ", static_cast<long long>(all),
                   static_cast<long long>(total));
      std::fflush(stderr);
    };
  }
  void clear() {
    if (on_) std::fprintf(stderr, "\r%60s\r", "");
  }

 private:
  bool on_;
  std::mutex mutex_;
  std::vector<int64_t> done_;
  int64_t planned_;
};

int run_find_lr(FindLrArgs& a) {
  TrainOptions& o = a.o;
  o.hidden = parse_int_list(a.hidden, "--hidden");
  FinderOptions f;
  f.start = parse_rate(a.start, "--start");
  f.end = parse_rate(a.end, "--end");
  f.steps = a.steps;
  f.linear = a.mode == "linear";
  // A curve without a suggestion is reported with the others, not an error.
  f.require_suggestion = false;
  LRLAB_REQUIRE(f.end > f.start, "--end (", a.end, ") must be above --start (", a.start, ")");
  validate_finder_options(f);
  for (const std::string& spec : a.optimizers) parse_optimizer(spec);
  const char* device = device_name(parse_device(o.device));
  for (const std::string* out : {&a.json_out, &a.plot_svg})
    if (!out->empty()) require_writable(*out);

  std::printf("lrlab find-lr: %s, %lld steps from lr %.3g to %.3g (%s), device %s\n", o.data.c_str(),
              static_cast<long long>(f.steps), f.start, f.end, a.mode.c_str(), device);
  std::fflush(stdout);
  const auto t0 = std::chrono::steady_clock::now();
  Progress progress(isatty(STDERR_FILENO) && !a.quiet, a.optimizers.size(), f.steps);
  std::vector<FinderCurve> curves;
  try {
    curves = find_lr(o, a.optimizers, f, progress.observer());
  } catch (...) {
    progress.clear();  // the error gets a line of its own
    throw;
  }
  progress.clear();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  for (const FinderCurve& c : curves) print_curve(c, f.steps);
  std::printf("\n%.1f s\n", seconds);
  std::fflush(stdout);
  for (const FinderCurve& c : curves)
    if (!c.no_suggestion.empty())
      std::fprintf(stderr, "warning: %s: no rate suggested: %s\n", c.optimizer.c_str(), c.no_suggestion.c_str());
  if (!a.json_out.empty()) write_file_atomic(a.json_out, finder_json(curves));
  if (!a.plot_svg.empty()) write_file_atomic(a.plot_svg, finder_svg(curves));
  return kExitOk;
}

Register reg("find-lr", "learning-rate range test: suggests a rate per optimizer (valley recommended)",
             [](CLI::App& sub) {
  auto a = std::make_shared<FindLrArgs>();
  TrainOptions& o = a->o;
  add_run_options(sub, o, a->hidden, "seed of the data split, data order and initial weights");
  sub.add_option("--optimizer", a->optimizers, "one or more optimizer specs, each tested on its own")
      ->expected(1, -1)
      ->capture_default_str();
  sub.add_option("--start", a->start, "first learning rate")->capture_default_str();
  sub.add_option("--end", a->end, "last learning rate")->capture_default_str();
  // A range check, with the reason for the minimum: CLI11's conversion alone would take
  // 9223372036854775808 as the largest int64_t.
  const CLI::Validator steps_range = whole_range(kMinFinderSteps, kMaxTableSteps);
  sub.add_option("--steps", a->steps,
                 "minibatches in the test (over several epochs if needed); at least " +
                     std::to_string(kMinFinderSteps) + ", as " + finder_window_rule())
      ->check(CLI::Validator(
          [steps_range](std::string& text) {
            std::string problem = steps_range(text);
            int64_t steps = 0;
            if (!problem.empty() && CLI::detail::lexical_cast(text, steps) && steps < kMinFinderSteps)
              problem += " (" + finder_window_rule() + ")";
            return problem;
          },
          steps_range.get_description()))
      ->capture_default_str();
  sub.add_option("--mode", a->mode, "how the rate grows: exp or linear")
      ->check(CLI::IsMember({"exp", "linear"}))
      ->capture_default_str();
  sub.add_option("--json", a->json_out, "write the curves and suggestions as JSON");
  sub.add_option("--plot", a->plot_svg, "write an SVG of the smoothed loss against the rate, with the suggestions");
  sub.add_flag("--quiet", a->quiet, "no live progress line");
  return [a] { return run_find_lr(*a); };
});

}  // namespace
}  // namespace lrlab::cli
