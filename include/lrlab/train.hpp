// `lrlab train`: one model trained by minibatches, with the ways of lowering the rate users ask
// about: manual (--lr, fine-tuning from a checkpoint), schedules, reduce-on-plateau, and a
// divergence guard that restores the last good state and lowers the rate.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "lrlab/data.hpp"
#include "lrlab/device.hpp"
#include "lrlab/mlp.hpp"

namespace lrlab {

struct TrainOptions {
  std::string data = "fashion-mnist";
  std::vector<int64_t> hidden = {256, 128};
  std::string activation = "relu";
  std::string optimizer = "adam()";
  double lr = 1e-3;
  bool lr_given = true;            // with resume: false keeps the checkpoint's base rate
  std::string schedule = "constant";
  std::string plateau;             // empty: off; else "plateau(factor=0.5,patience=2)"
  int64_t epochs = 10;             // total; a resumed run continues up to this many
  int64_t batch = 128;
  uint64_t seed = 0;               // data order, split and initial weights
  std::string device = "auto";
  bool tf32 = false;
  bool bias_decay = true;
  double val_fraction = 0.1;
  int64_t limit_train = 0;
  int64_t synthetic_samples = 6000;
  // Divergence guard.
  bool guard = true;
  double guard_factor = 0.5;       // rate multiplier per event
  double guard_threshold = 4.0;    // diverged: smoothed loss above this multiple of its best (and
                                   // above 1% of the run's first loss)
  int64_t guard_max_events = 20;   // then stop (exit status 3)
  int64_t check_every = 25;        // steps between host checks (and guard snapshots)
  // Files.
  std::string save, resume, log_csv, json_out, plot_svg;
};

struct EpochRecord {
  int64_t epoch = 0;  // 1-based
  // val_loss is NaN when the validation split is empty; val_accuracy also for regression.
  double train_loss = 0, val_loss = 0, val_accuracy = 0;
  double lr = 0;      // the rate of the epoch's last step
  double samples_per_s = 0, seconds = 0;
};

struct TrainEvent {
  std::string kind;  // "guard", "plateau", "stop"
  int64_t epoch = 0, step = 0;
  double scale = 1;  // the rate factor after the event
  std::string message;
};

struct TrainReport {
  std::vector<EpochRecord> epochs;
  std::vector<TrainEvent> events;
  double test_loss = 0, test_accuracy = 0;
  double seconds = 0;
  std::string device, data_description;
  int64_t parameters = 0, steps = 0, start_epoch = 0;
  int64_t train_samples = 0, val_samples = 0, test_samples = 0;  // test_loss is NaN with no test samples
  bool stopped_by_guard = false;
  // The first step whose training loss was not finite and stayed in the run (-1: none). Only a run
  // without the guard keeps one: the guard undoes such steps.
  int64_t nonfinite_step = -1;
  std::vector<std::string> notes;  // what the run did differently from what was asked, and why
  // Per step: (step, lr, loss), for --log and the plot.
  std::vector<int64_t> step_index;
  std::vector<float> step_lr, step_loss;
};

// Callbacks for live output; any may be empty.
struct TrainObserver {
  std::function<void(const TrainReport&)> on_start;
  std::function<void(int64_t epoch, int64_t step_in_epoch, int64_t steps_per_epoch, double loss,
                     double eta_seconds)>
      on_progress;
  std::function<void(const EpochRecord&)> on_epoch;
  std::function<void(const TrainEvent&)> on_event;
};

// The data options and the model a TrainOptions describes, shared by train, sweep and find-lr.
DataOptions data_options(const TrainOptions& options, uint64_t seed);
MlpConfig model_for(const TrainOptions& options, const Dataset& train);

// Throws lrlab::Error unless every output file (--save, --log, --json, --plot) can be written and
// each is its own file, none the --resume file but --save. train() checks this first; a caller with
// work to do before training (the range test of --lr find) checks it before that.
void check_train_outputs(const TrainOptions& options);

// Throws lrlab::Error for bad options, data or checkpoints.
TrainReport train(const TrainOptions& options, const TrainObserver& observer = {});

// The JSON document --json writes.
std::string train_report_json(const TrainOptions& options, const TrainReport& report);

}  // namespace lrlab
