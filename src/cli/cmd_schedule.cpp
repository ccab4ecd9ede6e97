// `lrlab schedule SPEC`: prints a schedule's learning rates as CSV, an aligned table or an SVG curve.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "command.hpp"
#include "options.hpp"
#include "lrlab/error.hpp"
#include "lrlab/io.hpp"
#include "lrlab/plot.hpp"
#include "lrlab/schedule.hpp"

namespace lrlab::cli {
namespace {

struct ScheduleArgs {
  std::string spec;
  double lr = 1;
  int64_t steps = 100;
  double steps_per_epoch = 1;
  std::string format = "csv";
  std::string out;
};

std::string printf_string(const char* format, double a, double b = 0) {
  char buf[128];
  std::snprintf(buf, sizeof buf, format, a, b);
  return buf;
}

// %.9g of the float value: the digits round-trip to the exact float the device would use.
std::string float_text(double v) { return printf_string("%.9g", static_cast<float>(v)); }

std::string render_csv(const std::vector<double>& lr) {
  std::string out = "step,lr\n";
  for (size_t t = 0; t < lr.size(); ++t) out += std::to_string(t) + "," + float_text(lr[t]) + "\n";
  return out;
}

std::string render_table(const std::vector<double>& lr, double base) {
  int step_width = static_cast<int>(std::max<size_t>(4, std::to_string(lr.empty() ? 0 : lr.size() - 1).size()));
  std::string out;
  char buf[160];
  std::snprintf(buf, sizeof buf, "%*s  %16s  %16s\n", step_width, "step", "lr", "multiplier");
  out += buf;
  for (size_t t = 0; t < lr.size(); ++t) {
    std::snprintf(buf, sizeof buf, "%*zu  %16s  %16s\n", step_width, t, float_text(lr[t]).c_str(),
                  float_text(lr[t] / base).c_str());
    out += buf;
  }
  return out;
}

std::string render_svg(const std::vector<double>& lr, const std::string& spec, bool log_y) {
  Series s;
  s.name = "learning rate";
  s.y = lr;
  for (size_t t = 0; t < lr.size(); ++t) s.x.push_back(static_cast<double>(t));
  PlotOptions o;
  o.title = spec;
  o.xlabel = "step";
  o.ylabel = "learning rate";
  o.log_y = log_y;
  return svg_line_plot({s}, o);
}

int run(const ScheduleArgs& a) {
  // As train and sweep take it: a rate fp32 rounds to 0 would print a column of zeros.
  check_base_rate(a.lr, "--lr");
  // An epoch is a count of minibatches; 'ep' values become whole steps (docs/SCHEDULES.md).
  LRLAB_REQUIRE(std::isfinite(a.steps_per_epoch) && a.steps_per_epoch >= 1 &&
                    a.steps_per_epoch == std::floor(a.steps_per_epoch),
                "--steps-per-epoch must be a whole number of steps, at least 1, got ", a.steps_per_epoch);
  LRLAB_REQUIRE(a.steps >= 1 || a.format != "svg", "--format svg needs at least one step to draw (--steps 0)");
  Schedule schedule = Schedule::parse(a.spec, a.steps_per_epoch);
  // The float table is what the device reads, so the rows show base * table[t]. No steps, no rows:
  // the spec is still checked.
  std::vector<float> table = a.steps ? schedule.table(a.steps, a.lr) : std::vector<float>{};
  std::vector<double> lr(table.size());
  for (size_t t = 0; t < table.size(); ++t) {
    lr[t] = a.lr * static_cast<double>(table[t]);
    LRLAB_REQUIRE(std::isfinite(static_cast<float>(lr[t])), "the learning rate at step ", t,
                  " is too large for a float (", lr[t], ")");
  }

  // An LR range test sweeps over decades and is read on a log axis, as in fastai and Lightning.
  std::string text = a.format == "svg"     ? render_svg(lr, a.spec, schedule.needs_base_lr())
                     : a.format == "table" ? render_table(lr, a.lr)
                                           : render_csv(lr);
  if (!a.out.empty()) {
    write_file_atomic(a.out, text);
    return kExitOk;
  }
  if (std::fwrite(text.data(), 1, text.size(), stdout) != text.size() || std::fflush(stdout) != 0) {
    std::fprintf(stderr, "error: cannot write to standard output\n");
    return kExitFailure;
  }
  return kExitOk;
}

const Register reg("schedule", "print a learning-rate schedule (docs/SCHEDULES.md) as csv, a table or an svg curve",
                   [](CLI::App& sub) -> std::function<int()> {
                     auto a = std::make_shared<ScheduleArgs>();
                     sub.add_option("spec", a->spec, "Schedule spec, e.g. 'warmup(steps=500) + cosine(steps=20ep)'")
                         ->required();
                     sub.add_option("--lr", a->lr, "Base learning rate")->capture_default_str();
                     // CLI11's conversion alone would take 9223372036854775808 as the largest int64_t.
                     sub.add_option("--steps", a->steps, "Number of steps to print")
                         ->check(whole_range(0, kMaxTableSteps))
                         ->capture_default_str();
                     // Whole numbers: the help says so, and 7.5 is refused as any whole-number option's
                     // malformed value is (run() refuses those below 1).
                     sub.add_option("--steps-per-epoch", a->steps_per_epoch, "Steps per epoch, for 'ep' values")
                         ->type_name("INT")
                         ->capture_default_str();
                     sub.add_option("--format", a->format, "Output format")
                         ->check(CLI::IsMember({"csv", "table", "svg"}))
                         ->capture_default_str();
                     sub.add_option("--out", a->out, "Write to this file (atomically) instead of standard output");
                     return [a] { return run(*a); };
                   });

}  // namespace
}  // namespace lrlab::cli
