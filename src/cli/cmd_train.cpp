// lrlab train: minibatch training of an MLP with the ways of lowering the rate.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

#include "command.hpp"
#include "lrlab/error.hpp"
#include "lrlab/io.hpp"
#include "lrlab/lr_finder.hpp"
#include "lrlab/train.hpp"
#include "options.hpp"

namespace lrlab::cli {
namespace {

struct TrainArgs {
  TrainOptions o;
  std::string hidden = "256,128";
  std::string lr = "1e-3";
  std::string guard = "on";
  bool quiet = false;
};

// A loss in a 10-wide column: fixed-point while it fits, else in exponent form; "-" when there is
// none (an empty split, or an epoch whose every step the guard undid).
std::string loss_cell(double v, bool none) {
  char buf[32];
  if (none) return "-";
  if (!std::isfinite(v)) return csv_number(v);  // nan, not glibc's -nan
  if (v == 0 || (std::fabs(v) >= 1e-3 && std::fabs(v) < 1e5))
    std::snprintf(buf, sizeof buf, "%.4f", v);
  else
    std::snprintf(buf, sizeof buf, "%.3e", v);
  return buf;
}

int run_train(TrainArgs& a, CLI::App& sub) {
  TrainOptions& o = a.o;
  o.hidden = parse_int_list(a.hidden, "--hidden");
  o.lr_given = sub.count("--lr") > 0 || o.resume.empty();
  // Before the range test, which would otherwise run in full before a bad output is refused.
  check_train_outputs(o);
  if (a.lr == "find") {
    // The range test on this run's model, data and optimizer; training then starts from the same
    // initial weights with the recommended rate.
    LRLAB_REQUIRE(o.resume.empty(), "--lr find starts a new run; it cannot be combined with --resume");
    FinderOptions finder;
    finder.require_suggestion = false;  // its reason is said below, with what to do about it here
    FinderCurve c = find_lr(o, {o.optimizer}, finder).at(0);
    LRLAB_REQUIRE(c.no_suggestion.empty(), "--lr find: the range test of ", o.optimizer, " suggests no rate (",
                  c.no_suggestion, "); give --lr a rate, or look at the curve with lrlab find-lr");
    std::printf("lrlab find-lr: %s suggests lr %.3g (%s; steepest %.3g, valley %.3g, minimum/10 %.3g)\n",
                o.optimizer.c_str(), c.suggestion, c.recommended.c_str(), c.steepest, c.valley, c.min_div10);
    o.lr = c.suggestion;
  } else {
    o.lr = parse_rate(a.lr, "--lr");
  }
  o.guard = a.guard == "on";
  const bool tty = isatty(STDERR_FILENO) && !a.quiet;

  TrainObserver obs;
  bool no_val = false;
  obs.on_start = [&](const TrainReport& r) {
    std::printf("lrlab train: %s, %lld parameters, device %s%s\n", r.data_description.c_str(),
                static_cast<long long>(r.parameters), r.device.c_str(),
                r.start_epoch ? (", resumed after epoch " + std::to_string(r.start_epoch)).c_str() : "");
    for (const std::string& note : r.notes) std::printf("note: %s\n", note.c_str());
    no_val = r.val_samples == 0;
    if (no_val)
      std::printf("note: no validation samples%s\n",
                  o.plateau.empty() ? "" : "; reduce-on-plateau watches the training loss instead");
    std::printf("%5s  %10s  %10s  %8s  %10s  %10s  %7s\n", "epoch", "train loss", "val loss", "val acc", "lr",
                "samples/s", "time");
    std::fflush(stdout);
  };
  if (tty)
    obs.on_progress = [&](int64_t epoch, int64_t step, int64_t spe, double loss, double eta) {
      int width = 24, filled = static_cast<int>(width * step / std::max<int64_t>(spe, 1));
      std::fprintf(stderr, "\r  epoch %lld [%s%s] %3lld%%  loss %.4f  ETA %.0fs   ", static_cast<long long>(epoch),
                   std::string(filled, '#').c_str(), std::string(width - filled, ' ').c_str(),
                   static_cast<long long>(100 * step / std::max<int64_t>(spe, 1)), loss, eta);
      std::fflush(stderr);
    };
  auto clear_progress = [&] {
    if (tty) std::fprintf(stderr, "\r%80s\r", "");
  };
  obs.on_epoch = [&](const EpochRecord& e) {
    clear_progress();
    char acc[16] = "-";  // regression has no accuracy
    if (!std::isnan(e.val_accuracy)) std::snprintf(acc, sizeof acc, "%.2f%%", 100 * e.val_accuracy);
    std::printf("%5lld  %10s  %10s  %8s  %10.3g  %10.0f  %6.1fs\n", static_cast<long long>(e.epoch),
                loss_cell(e.train_loss, false).c_str(), loss_cell(e.val_loss, no_val).c_str(), acc, e.lr,
                e.samples_per_s, e.seconds);
    std::fflush(stdout);
  };
  obs.on_event = [&](const TrainEvent& e) {
    clear_progress();
    std::printf("  [%s] epoch %lld step %lld: %s\n", e.kind.c_str(), static_cast<long long>(e.epoch),
                static_cast<long long>(e.step), e.message.c_str());
    std::fflush(stdout);
  };
  TrainReport r = train(o, obs);
  clear_progress();
  if (r.test_samples == 0)
    std::printf("test: no test samples (%.1f s)\n", r.seconds);
  else if (std::isnan(r.test_accuracy))
    std::printf("test: loss %s (%.1f s)\n", loss_cell(r.test_loss, false).c_str(), r.seconds);
  else
    std::printf("test: loss %s, accuracy %.2f%% (%.1f s)\n", loss_cell(r.test_loss, false).c_str(),
                100 * r.test_accuracy, r.seconds);
  if (r.stopped_by_guard) {
    const auto guard_events = std::count_if(r.events.begin(), r.events.end(),
                                            [](const TrainEvent& e) { return e.kind == "guard"; });
    // Checkpoints are written at the end of each epoch (to a stream, at the end of the run only).
    std::string kept;
    if (!o.save.empty() && !r.epochs.empty() && !is_stream(o.save))
      kept = "; '" + o.save + "' keeps the checkpoint of epoch " + std::to_string(r.epochs.back().epoch);
    std::fprintf(stderr, "error: training diverged %lld time%s and was stopped%s\n",
                 static_cast<long long>(guard_events), guard_events == 1 ? "" : "s", kept.c_str());
    return kExitDiverged;
  }
  if (r.nonfinite_step >= 0) {
    std::fprintf(stderr,
                 "error: the training loss was first NaN or infinite at step %lld, with the divergence guard off: "
                 "the weights are not usable (lower --lr, or leave --guard on)\n",
                 static_cast<long long>(r.nonfinite_step + 1));  // counted from 1, as the guard's events are
    return kExitDiverged;
  }
  return kExitOk;
}

Register reg("train", "train an MLP by minibatches, on the GPU when present", [](CLI::App& sub) {
  auto a = std::make_shared<TrainArgs>();
  TrainOptions& o = a->o;
  add_run_options(sub, o, a->hidden, "seed of the data split, data order and initial weights");
  sub.add_option("--optimizer", o.optimizer, "optimizer spec, e.g. \"adam(beta2=0.99)\" (see docs/OPTIMIZERS.md)")
      ->capture_default_str();
  sub.add_option("--lr", a->lr, "base learning rate, or 'find' to run the range test first (with --resume: a new rate for fine-tuning)")
      ->capture_default_str();
  sub.add_option("--schedule", o.schedule, "schedule spec, e.g. \"step(every=2ep,gamma=0.5)\"")
      ->capture_default_str();
  sub.add_option("--plateau", o.plateau, "reduce-on-plateau on the validation loss, e.g. \"plateau(factor=0.5,patience=2)\"");
  sub.add_option("--epochs", o.epochs, "epochs in all (a resumed run continues up to this)")->capture_default_str();
  sub.add_option("--guard", a->guard, "divergence guard: on or off")
      ->check(CLI::IsMember({"on", "off"}))
      ->capture_default_str();
  sub.add_option("--guard-factor", o.guard_factor, "rate multiplier after each divergence")->capture_default_str();
  sub.add_option("--guard-threshold", o.guard_threshold, "diverged when the smoothed loss exceeds this multiple of its best")
      ->capture_default_str();
  sub.add_option("--guard-max-events", o.guard_max_events, "stop (exit status 3) after this many divergences")
      ->capture_default_str();
  sub.add_option("--check-every", o.check_every, "steps between divergence checks and good-state snapshots")
      ->capture_default_str();
  sub.add_option("--save", o.save, "checkpoint file, written atomically at the end of every epoch");
  sub.add_option("--resume", o.resume, "continue from this checkpoint");
  sub.add_option("--log", o.log_csv, "per-step CSV log: step,epoch,lr,loss");
  sub.add_option("--json", o.json_out, "write config, per-epoch metrics, test results and events as JSON");
  sub.add_option("--plot", o.plot_svg, "write an SVG of the loss and learning-rate curves");
  sub.add_flag("--quiet", a->quiet, "no live progress line");
  return [a, &sub] { return run_train(*a, sub); };
});

}  // namespace
}  // namespace lrlab::cli
