#include "lrlab/train.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <optional>
#include <sstream>

#include <nlohmann/json.hpp>

#include "lrlab/checkpoint.hpp"
#include "lrlab/data.hpp"
#include "lrlab/error.hpp"
#include "lrlab/io.hpp"
#include "lrlab/plateau.hpp"
#include "lrlab/plot.hpp"
#include "lrlab/schedule.hpp"
#include "lrlab/train_engine.hpp"

namespace lrlab {

namespace {

using json = nlohmann::json;

// See the guard's test in train(): divergence needs the smoothed loss above this share of the first.
constexpr double kGuardFloor = 0.01;

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// What a checkpoint's weights belong to: the architecture, and the data, told by its contents
// (DataSplits::fingerprint). "data" is the source as written, for people reading the file.
json model_identity(const MlpConfig& m, const DataSplits& data, const std::string& source) {
  return {{"inputs", m.inputs}, {"hidden", m.hidden}, {"outputs", m.outputs},
          {"activation", activation_name(m.activation)}, {"loss", loss_name(m.loss)}, {"data", source},
          {"data_crc32", data.fingerprint}};
}

// A model identity taken apart: the architecture, and the data's fingerprint and source. Not valid
// where a checkpoint's text is no JSON object.
struct Identity {
  bool valid = false;
  json arch, source, crc;
};

Identity split_identity(json j) {
  Identity id;
  if (!j.is_object()) return id;
  id.valid = true;
  if (j.contains("data")) id.source = j["data"];
  if (j.contains("data_crc32")) id.crc = j["data_crc32"];
  j.erase("data");
  j.erase("data_crc32");
  id.arch = j;
  return id;
}

constexpr const char* kLogHeader = "step,epoch,lr,loss\n";

// The rows of an earlier --log before `step`: a resumed run's log continues the one its checkpoint
// came from. They are kept only if they are that run's (steps from 0 up to step-1, as the log is
// written before each checkpoint); otherwise the log starts afresh and `note` says why.
std::string earlier_log_rows(const std::string& path, int64_t step, std::string* note) {
  std::string text;
  try {
    text = read_file(path, size_t(1) << 32);
  } catch (const Error&) {
    *note = "--log '" + path + "' could not be read; it restarts at step " + std::to_string(step);
    return "";
  }
  std::string out;
  int64_t first = -1, last = -1;
  bool ok = text.rfind(kLogHeader, 0) == 0;
  for (size_t pos = std::strlen(kLogHeader); ok && pos < text.size();) {
    const size_t nl = text.find('\n', pos);
    char* end = nullptr;
    const long long row = std::strtoll(text.c_str() + pos, &end, 10);
    ok = nl != std::string::npos && end != text.c_str() + pos && *end == ',';
    if (ok && row < step) {
      if (first < 0) first = row;
      last = row;
      out.append(text, pos, nl + 1 - pos);
    }
    pos = nl + 1;
  }
  if (ok && (step == 0 || (first == 0 && last == step - 1))) return out;
  *note = "--log '" + path + "' does not hold this run's steps 0-" + std::to_string(step - 1) +
          "; it restarts at step " + std::to_string(step);
  return "";
}

std::string csv_log(const TrainReport& r, int64_t steps_per_epoch, const std::string& earlier_rows) {
  std::string out = kLogHeader + earlier_rows;
  char line[128];
  for (size_t i = 0; i < r.step_index.size(); ++i) {
    std::snprintf(line, sizeof line, "%lld,%lld,", static_cast<long long>(r.step_index[i]),
                  static_cast<long long>(r.step_index[i] / steps_per_epoch + 1));
    out += line + csv_number(r.step_lr[i]) + "," + csv_number(r.step_loss[i]) + "\n";
  }
  return out;
}

// Two stacked panels in one self-contained SVG: the loss per step (and per epoch on validation),
// and the learning rate per step.
std::string training_plot(const TrainReport& r, int64_t steps_per_epoch) {
  Series step_loss{"train loss (per step)", {}, {}};
  Series lr{"learning rate", {}, {}};
  for (size_t i = 0; i < r.step_index.size(); ++i) {
    double epoch = static_cast<double>(r.step_index[i]) / steps_per_epoch;
    step_loss.x.push_back(epoch);
    step_loss.y.push_back(r.step_loss[i]);
    lr.x.push_back(epoch);
    lr.y.push_back(r.step_lr[i]);
  }
  Series val{"validation loss (per epoch)", {}, {}};
  for (const EpochRecord& e : r.epochs) {
    val.x.push_back(static_cast<double>(e.epoch));
    val.y.push_back(e.val_loss);
  }
  PlotOptions top;
  top.title = "Loss";
  top.xlabel = "epoch";
  top.ylabel = "loss";
  top.log_y = true;
  PlotOptions bottom;
  bottom.title = "Learning rate";
  bottom.xlabel = "epoch";
  bottom.ylabel = "lr";
  std::string a = svg_line_plot({step_loss, val}, top);
  std::string b = svg_line_plot({lr}, bottom);
  std::ostringstream os;
  os << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << top.width << "\" height=\""
     << top.height + bottom.height << "\">\n<g>" << a << "</g>\n<g transform=\"translate(0," << top.height
     << ")\">" << b << "</g>\n</svg>\n";
  return os.str();
}

}  // namespace

DataOptions data_options(const TrainOptions& o, uint64_t seed) {
  DataOptions d;
  d.val_fraction = o.val_fraction;
  d.seed = seed;
  d.limit_train = o.limit_train;
  d.synthetic_samples = o.synthetic_samples;
  return d;
}

MlpConfig model_for(const TrainOptions& o, const Dataset& train) {
  for (int64_t h : o.hidden) LRLAB_REQUIRE(h >= 1, "hidden layer widths must be at least 1 (got ", h, ")");
  MlpConfig model;
  model.inputs = train.dim;
  model.hidden = o.hidden;
  model.activation = parse_activation(o.activation);
  model.loss = train.is_regression() ? LossKind::MeanSquaredError : LossKind::SoftmaxCrossEntropy;
  model.outputs = train.is_regression() ? train.targets_dim : train.num_classes;
  return model;
}

std::string train_report_json(const TrainOptions& o, const TrainReport& r) {
  // Every option that changes the run, so that it can be repeated from this alone.
  json cfg = {{"data", o.data},
              {"hidden", o.hidden},
              {"activation", o.activation},
              {"optimizer", o.optimizer},
              {"lr", o.lr},
              {"schedule", o.schedule},
              {"plateau", o.plateau},
              {"epochs", o.epochs},
              {"batch", o.batch},
              {"seed", o.seed},
              {"device", o.device},
              {"tf32", o.tf32},
              {"bias_decay", o.bias_decay},
              {"val_fraction", o.val_fraction},
              {"limit_train", o.limit_train},
              {"samples", o.synthetic_samples},
              {"guard", o.guard},
              {"guard_factor", o.guard_factor},
              {"guard_threshold", o.guard_threshold},
              {"guard_max_events", o.guard_max_events},
              {"check_every", o.check_every},
              {"resume", o.resume}};
  json epochs = json::array();
  for (const EpochRecord& e : r.epochs)
    epochs.push_back({{"epoch", e.epoch}, {"train_loss", e.train_loss}, {"val_loss", e.val_loss},
                      {"val_accuracy", e.val_accuracy}, {"lr", e.lr}, {"samples_per_s", e.samples_per_s},
                      {"seconds", e.seconds}});
  json events = json::array();
  for (const TrainEvent& e : r.events)
    events.push_back({{"kind", e.kind}, {"epoch", e.epoch}, {"step", e.step}, {"scale", e.scale},
                      {"message", e.message}});
  // NaN is not JSON: a diverged metric is written as null.
  auto num = [](double v) { return std::isfinite(v) ? json(v) : json(nullptr); };
  for (auto& e : epochs)
    for (auto& [k, v] : e.items())
      if (v.is_number_float()) v = num(v.get<double>());
  json doc = {{"config", cfg},
              {"device", r.device},
              {"data", r.data_description},
              {"parameters", r.parameters},
              {"samples", {{"train", r.train_samples}, {"val", r.val_samples}, {"test", r.test_samples}}},
              {"epochs", epochs},
              {"test", {{"loss", num(r.test_loss)}, {"accuracy", num(r.test_accuracy)}}},
              {"seconds", r.seconds},
              {"steps", r.steps},
              {"events", events},
              {"notes", r.notes},
              {"stopped_by_guard", r.stopped_by_guard},
              {"nonfinite_step", r.nonfinite_step >= 0 ? json(r.nonfinite_step) : json(nullptr)}};
  return doc.dump(2) + "\n";
}

void check_train_outputs(const TrainOptions& o) {
  for (const std::string* out : {&o.save, &o.log_csv, &o.json_out, &o.plot_svg})
    if (!out->empty()) require_writable(*out);
  // --save may name the --resume file (a run that goes on saving where it left off); the others may not.
  require_distinct_files({{"--save", o.save}, {"--log", o.log_csv}, {"--json", o.json_out}, {"--plot", o.plot_svg}});
  require_distinct_files({{"--resume", o.resume}, {"--log", o.log_csv}, {"--json", o.json_out}, {"--plot", o.plot_svg}});
}

TrainReport train(const TrainOptions& o, const TrainObserver& obs) {
  const auto t_start = std::chrono::steady_clock::now();
  LRLAB_REQUIRE(o.epochs >= 1, "--epochs must be at least 1 (got ", o.epochs, ")");
  LRLAB_REQUIRE(o.batch >= 1, "--batch must be at least 1 (got ", o.batch, ")");
  check_base_rate(o.lr, "--lr");
  LRLAB_REQUIRE(o.check_every >= 1, "the check interval must be at least 1 step");
  LRLAB_REQUIRE(o.guard_factor > 0 && o.guard_factor < 1, "the guard's factor must be in (0, 1)");
  LRLAB_REQUIRE(o.guard_threshold > 1, "the guard's threshold must be above 1");
  LRLAB_REQUIRE(o.guard_max_events >= 1, "the guard's event limit must be at least 1 (got ", o.guard_max_events, ")");
  check_train_outputs(o);

  const Device device = parse_device(o.device);
  std::optional<Checkpoint> ckpt;
  if (!o.resume.empty()) ckpt = load_checkpoint(o.resume);
  const uint64_t data_seed = ckpt ? ckpt->data_seed : o.seed;
  // Said once on_start is reached: a resumed run keeps its split and data order.
  std::vector<std::string> notes;
  if (ckpt && o.seed != ckpt->data_seed)
    notes.push_back("resuming with the checkpoint's seed " + std::to_string(ckpt->data_seed) + "; the seed " +
                    std::to_string(o.seed) + " asked for applies to new runs only");

  DataSplits data = load_data(o.data, data_options(o, data_seed));
  const MlpConfig model = model_for(o, data.train);
  const json identity = model_identity(model, data, o.data);

  EngineConfig ec;
  ec.model = model;
  ec.optimizer = o.optimizer;
  ec.replicas = {ReplicaSpec{static_cast<float>(o.lr), o.schedule, data_seed}};
  ec.batch = o.batch;
  ec.epochs = o.epochs;
  ec.data_seed = data_seed;
  ec.device = device;
  ec.tf32 = o.tf32;
  ec.bias_decay = o.bias_decay;
  TrainEngine eng(ec, data);
  Optimizer& opt = eng.optimizer();
  const int64_t spe = eng.steps_per_epoch();
  const std::vector<float>& table = eng.table(0);

  std::optional<ReduceOnPlateau> plateau;
  if (!o.plateau.empty()) plateau.emplace(parse_plateau(o.plateau));
  GuardState guard;
  TrainReport rep;
  rep.device = device_name(device);
  rep.data_description = data.description;
  rep.parameters = eng.layout().size();
  rep.train_samples = data.train.n;
  rep.val_samples = data.val.n;
  rep.test_samples = data.test.n;
  int64_t start_epoch = 0;

  if (ckpt) {
    const Identity saved = split_identity(json::parse(ckpt->model, nullptr, false));
    const Identity asked = split_identity(identity);
    LRLAB_REQUIRE(saved.valid && saved.arch == asked.arch, "checkpoint '", o.resume, "' holds a different model (",
                  saved.valid ? saved.arch.dump() : ckpt->model, ") than the one asked for (", asked.arch.dump(), ")");
    LRLAB_REQUIRE(ckpt->epochs_done < o.epochs, "checkpoint '", o.resume, "' has already done ",
                  ckpt->epochs_done, ckpt->epochs_done == 1 ? " epoch" : " epochs", "; ask for more with --epochs");
    // Another batch size would renumber the steps (the schedule's position, the epochs done) and
    // another split would move samples already trained on into validation.
    LRLAB_REQUIRE(ckpt->batch == 0 || (ckpt->train_samples == data.train.n && ckpt->val_samples == data.val.n &&
                                       ckpt->test_samples == data.test.n),
                  "checkpoint '", o.resume, "' was trained on a split of ", ckpt->train_samples, " training, ",
                  ckpt->val_samples, " validation and ", ckpt->test_samples, " test samples; these options give ",
                  data.train.n, ", ", data.val.n, " and ", data.test.n,
                  " (resume with the --val-fraction, --limit-train and --samples it was trained with, on its data",
                  saved.source.is_string() ? ": --data '" + saved.source.get<std::string>() + "'" : "", ")");
    LRLAB_REQUIRE(ckpt->batch == 0 || ckpt->batch == eng.config().batch, "checkpoint '", o.resume,
                  "' was trained with minibatches of ", ckpt->batch, "; resume it with the same --batch (got ",
                  eng.config().batch,
                  eng.config().batch == o.batch ? std::string() : ", --batch " + std::to_string(o.batch) +
                                                                        " cut to the training samples",
                  ")");
    // The same data wherever it is read from: a job that copies the data set into its own scratch
    // directory resumes the last job's checkpoint. Checkpoints written before the fingerprint are
    // told by the source as written.
    LRLAB_REQUIRE(saved.crc.is_null() ? saved.source == asked.source : saved.crc == asked.crc, "checkpoint '",
                  o.resume, "' was trained on other data than --data '", o.data, "' gives",
                  saved.source.is_string() ? " (its --data was '" + saved.source.get<std::string>() + "')" : "",
                  "; resume it on the data it was trained on");
    eng.set_params(ckpt->params);
    opt.load(ckpt->optimizer);
    // The schedule follows this run's options (a fine-tuning run may change it); its position
    // continues from the checkpoint's step.
    opt.set_schedule(table);
    if (o.lr_given) opt.set_lr(static_cast<float>(o.lr));
    guard = ckpt->guard;
    if (plateau && ckpt->has_plateau) plateau->restore(ckpt->plateau);
    start_epoch = ckpt->epochs_done;
    rep.steps = ckpt->step;
  }
  std::string log_before, log_note;
  if (ckpt && !o.log_csv.empty() && !is_stream(o.log_csv)) log_before = earlier_log_rows(o.log_csv, ckpt->step, &log_note);
  rep.notes = notes;
  if (!log_note.empty()) rep.notes.push_back(log_note);
  rep.start_epoch = start_epoch;
  auto plateau_scale = [&] { return plateau ? plateau->scale() : 1.0; };
  // A product that rounds to 0 in fp32 would freeze the optimizer (set_scale): the run would go on
  // without counting steps. Its smallest positive value is a rate of 0 that still counts them, as
  // PyTorch's ReduceLROnPlateau(min_lr=0) goes on.
  auto apply_scale = [&] {
    const float scale = static_cast<float>(guard.scale * plateau_scale());
    opt.set_scale(std::max(scale, std::numeric_limits<float>::denorm_min()));
  };
  apply_scale();
  const double base_lr = opt.replica_state(0).base_lr;
  // The rate at a step before the plateau rule's scale, and with it.
  auto unscaled_lr_at = [&](int64_t step) {
    double m = table[static_cast<size_t>(std::min<int64_t>(step, static_cast<int64_t>(table.size()) - 1))];
    return base_lr * m * guard.scale;
  };
  auto lr_at = [&](int64_t step) { return unscaled_lr_at(step) * plateau_scale(); };
  if (obs.on_start) obs.on_start(rep);

  auto report_event = [&](TrainEvent e) {
    rep.events.push_back(e);
    if (obs.on_event) obs.on_event(e);
  };

  for (int64_t epoch = start_epoch; epoch < o.epochs && !rep.stopped_by_guard; ++epoch) {
    const auto t_epoch = std::chrono::steady_clock::now();
    eng.begin_epoch(epoch);
    GuardState guard_at_good = guard;
    if (o.guard) eng.stash();
    double loss_sum = 0;
    int64_t loss_count = 0;
    double train_seconds = 0;
    while (eng.steps_left_in_epoch() > 0) {
      const int64_t n = std::min(o.check_every, eng.steps_left_in_epoch());
      const int64_t first_step = opt.step_count();
      const auto t_run = std::chrono::steady_clock::now();
      std::vector<float> losses = eng.run(n);
      train_seconds += seconds_since(t_run);
      bool diverged = false;
      GuardState g = guard;
      double chunk_sum = 0;
      for (int64_t i = 0; i < n; ++i) {
        double l = losses[i];
        rep.step_index.push_back(first_step + i);
        rep.step_lr.push_back(static_cast<float>(lr_at(first_step + i)));
        rep.step_loss.push_back(losses[i]);
        chunk_sum += l;
        if (!std::isfinite(l)) {
          diverged = true;
          if (!o.guard && rep.nonfinite_step < 0) rep.nonfinite_step = first_step + i;
          continue;
        }
        const double smoothed = g.loss.add(l);
        if (g.loss.count == 1) g.start = smoothed;  // a run resumed from a version 2 file has none
        // Besides its multiple of the best, the loss must climb back above a hundredth of where the
        // run began: a loss converging towards zero (a regression fitted almost exactly) swings by
        // large factors around a tiny best, and that is noise, not divergence.
        if (smoothed > o.guard_threshold * g.loss.best && smoothed > kGuardFloor * g.start && g.loss.count > 1)
          diverged = true;
      }
      if (diverged && o.guard) {
        eng.unstash();
        const double value = g.loss.value();
        guard = guard_at_good;
        guard.events += 1;
        guard.scale *= o.guard_factor;
        guard_at_good = guard;
        apply_scale();
        TrainEvent e;
        e.kind = "guard";
        e.epoch = epoch + 1;
        e.step = first_step + n;
        e.scale = guard.scale;
        std::ostringstream msg;
        msg << "loss diverged (" << (std::isfinite(value) && std::isfinite(chunk_sum) ? "smoothed loss "
                                                                                      : "non-finite loss ")
            << (std::isfinite(chunk_sum) ? value : chunk_sum) << ") in steps " << first_step + 1 << "-"
            << first_step + n << ": restored the state of step " << first_step << ", rate x"
            << o.guard_factor << " -> lr " << lr_at(first_step);
        e.message = msg.str();
        report_event(e);
        if (guard.events >= o.guard_max_events) {
          rep.stopped_by_guard = true;
          // At the step the guard gave up, as its last event; the state kept is first_step's.
          report_event({"stop", epoch + 1, first_step + n, guard.scale,
                        "stopped after " + std::to_string(guard.events) +
                            " divergence events; try a lower --lr"});
          break;
        }
        continue;
      }
      guard = g;
      loss_sum += chunk_sum;
      loss_count += n;
      if (o.guard) {
        eng.stash();
        guard_at_good = guard;
      }
      if (obs.on_progress) {
        int64_t done = spe - eng.steps_left_in_epoch();
        double rate = train_seconds / std::max<int64_t>(1, loss_count);
        double eta = rate * (eng.steps_left_in_epoch() + (o.epochs - epoch - 1) * spe);
        obs.on_progress(epoch + 1, done, spe, chunk_sum / n, eta);
      }
    }
    if (rep.stopped_by_guard) break;
    rep.steps = opt.step_count();
    EpochRecord rec;
    rec.epoch = epoch + 1;
    rec.train_loss = loss_sum / static_cast<double>(loss_count);  // every step of the epoch: undone ones ran again
    TrainEngine::Eval val = eng.evaluate(Split::Val);
    rec.val_loss = val.loss[0];
    rec.val_accuracy = val.accuracy[0];
    rec.lr = lr_at(std::max<int64_t>(0, rep.steps - 1));
    rec.samples_per_s = static_cast<double>(data.train.n) / std::max(train_seconds, 1e-9);
    if (plateau) {
      double metric = std::isfinite(rec.val_loss) ? rec.val_loss : rec.train_loss;
      const double before = plateau->scale();
      if (plateau->step(metric, unscaled_lr_at(rep.steps))) {
        apply_scale();
        std::ostringstream msg;
        msg << (data.val.n ? "validation" : "training") << " loss has not improved for "
            << detail::counted(plateau->options().patience + 1, "epoch") << ": rate x" << plateau->scale() / before << " -> lr "
            << lr_at(rep.steps);
        report_event({"plateau", epoch + 1, rep.steps, guard.scale * plateau_scale(), msg.str()});
      }
    }
    rec.seconds = seconds_since(t_epoch);
    rep.epochs.push_back(rec);
    // A stream (a pipe, stdout) takes a checkpoint or log once, at the end, not each epoch's again.
    const bool last = epoch + 1 == o.epochs;
    if (!o.log_csv.empty() && (last || !is_stream(o.log_csv)))
      write_file_atomic(o.log_csv, csv_log(rep, spe, log_before));
    if (!o.save.empty() && (last || !is_stream(o.save))) {
      Checkpoint c;
      c.model = identity.dump();
      c.epochs_done = epoch + 1;
      c.step = rep.steps;
      c.data_seed = data_seed;
      c.params = eng.params();
      c.optimizer = opt.save();
      c.guard = guard;
      c.has_plateau = plateau.has_value();
      if (plateau) c.plateau = plateau->state();
      c.batch = eng.config().batch;  // as the engine cut them: a --batch above the split's size is the split
      c.train_samples = data.train.n;
      c.val_samples = data.val.n;
      c.test_samples = data.test.n;
      save_checkpoint(o.save, c);
    }
    if (obs.on_epoch) obs.on_epoch(rec);
  }
  TrainEngine::Eval test = eng.evaluate(Split::Test);
  rep.test_loss = test.loss[0];
  rep.test_accuracy = test.accuracy[0];
  rep.seconds = seconds_since(t_start);
  // The log is complete once the epochs are; only a run the guard stopped has rows to add.
  if (!o.log_csv.empty() && rep.stopped_by_guard) write_file_atomic(o.log_csv, csv_log(rep, spe, log_before));
  if (!o.plot_svg.empty()) write_file_atomic(o.plot_svg, training_plot(rep, spe));
  if (!o.json_out.empty()) write_file_atomic(o.json_out, train_report_json(o, rep));
  return rep;
}

}  // namespace lrlab
