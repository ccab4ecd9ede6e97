// lrlab find-lr: the learning-rate range test, one curve per optimizer spec.
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "command.hpp"
#include "lrlab/error.hpp"
#include "lrlab/io.hpp"
#include "lrlab/lr_finder.hpp"
#include "lrlab/optimizer.hpp"
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
  for (const auto& r : rows)
    std::printf("  %-11s %10.3g%s\n", r.label, r.rate, c.recommended == r.key ? "  <- recommended" : "");
  if (c.recommended != "valley") std::printf("  (the loss never decreased: no valley, minimum/10 recommended)\n");
}

int run_find_lr(FindLrArgs& a) {
  TrainOptions& o = a.o;
  o.hidden = parse_int_list(a.hidden, "--hidden");
  FinderOptions f;
  f.start = parse_rate(a.start, "--start");
  f.end = parse_rate(a.end, "--end");
  f.steps = a.steps;
  f.linear = a.mode == "linear";
  LRLAB_REQUIRE(f.end > f.start, "--end (", a.end, ") must be above --start (", a.start, ")");
  LRLAB_REQUIRE(f.steps >= 2, "--steps must be at least 2 (got ", f.steps, ")");
  validate_finder_options(f);
  for (const std::string& spec : a.optimizers) parse_optimizer(spec);
  const char* device = device_name(parse_device(o.device));
  for (const std::string* out : {&a.json_out, &a.plot_svg})
    if (!out->empty()) require_writable(*out);

  std::printf("lrlab find-lr: %s, %lld steps from lr %.3g to %.3g (%s), device %s\n", o.data.c_str(),
              static_cast<long long>(f.steps), f.start, f.end, a.mode.c_str(), device);
  std::fflush(stdout);
  const auto t0 = std::chrono::steady_clock::now();
  const std::vector<FinderCurve> curves = find_lr(o, a.optimizers, f);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  for (const FinderCurve& c : curves) print_curve(c, f.steps);
  std::printf("\n%.1f s\n", seconds);
  if (!a.json_out.empty()) write_file_atomic(a.json_out, finder_json(curves));
  if (!a.plot_svg.empty()) write_file_atomic(a.plot_svg, finder_svg(curves));
  return kExitOk;
}

Register reg("find-lr", "learning-rate range test: suggests a rate per optimizer (valley recommended)",
             [](CLI::App& sub) {
  auto a = std::make_shared<FindLrArgs>();
  TrainOptions& o = a->o;
  sub.add_option("--data", o.data, "fashion-mnist, idx:DIR, csv:FILE[:regression], spirals, blobs or sine")
      ->capture_default_str();
  sub.add_option("--hidden", a->hidden, "hidden layer widths, comma-separated")->capture_default_str();
  sub.add_option("--activation", o.activation, "relu, gelu, tanh, sigmoid or identity")->capture_default_str();
  sub.add_option("--optimizer", a->optimizers, "one or more optimizer specs, each tested on its own")
      ->expected(1, -1)
      ->capture_default_str();
  sub.add_option("--start", a->start, "first learning rate")->capture_default_str();
  sub.add_option("--end", a->end, "last learning rate")->capture_default_str();
  sub.add_option("--steps", a->steps, "minibatches in the test (over several epochs if needed)")
      ->capture_default_str();
  sub.add_option("--mode", a->mode, "how the rate grows: exp or linear")
      ->check(CLI::IsMember({"exp", "linear"}))
      ->capture_default_str();
  sub.add_option("--batch", o.batch, "minibatch size")->capture_default_str();
  sub.add_option("--seed", o.seed, "seed of the data split, data order and initial weights")->check(unsigned_64())->capture_default_str();
  sub.add_option("--device", o.device, "auto, cpu or cuda")->capture_default_str();
  sub.add_option("--val-fraction", o.val_fraction, "share of the training set held out for validation")
      ->capture_default_str();
  sub.add_option("--limit-train", o.limit_train, "use only this many training samples (0: all)");
  sub.add_option("--samples", o.synthetic_samples, "samples of a synthetic data set")->capture_default_str();
  sub.add_option("--json", a->json_out, "write the curves and suggestions as JSON");
  sub.add_option("--plot", a->plot_svg, "write an SVG of the smoothed loss against the rate, with the suggestions");
  return [a] { return run_find_lr(*a); };
});

}  // namespace
}  // namespace lrlab::cli
