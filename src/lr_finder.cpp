#include "lrlab/lr_finder.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <memory>
#include <tuple>

#include <nlohmann/json.hpp>

#include "engine_workers.hpp"
#include "lrlab/data.hpp"
#include "lrlab/error.hpp"
#include "lrlab/optimizer.hpp"
#include "lrlab/plot.hpp"
#include "lrlab/schedule.hpp"
#include "lrlab/smoothed_loss.hpp"

namespace lrlab {

namespace {

// Losses are read back this many steps at a time (one host sync each on the GPU); the steps run
// past a divergence are dropped from the curve.
constexpr int64_t kCheckEvery = 8;

std::string number(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

// The half-open stretch of the curve the suggestions read.
struct Window {
  size_t begin, end;
};

// fastai's lr_find trims the curve to [num_it / 10, len - 5) before suggesting. A curve too short
// for that gives a window shorter than kFinderMinPoints, possibly empty, never reversed.
Window trimmed(size_t n, int64_t planned_steps, int64_t trim_end) {
  const size_t skip_start = static_cast<size_t>(std::max<int64_t>(0, planned_steps / kFinderSkipStartDivisor));
  const size_t skip_end = static_cast<size_t>(std::max<int64_t>(0, trim_end));
  const size_t begin = std::min(skip_start, n);
  return {begin, std::max(begin, n - std::min(skip_end, n))};
}

std::vector<double> slice(const std::vector<double>& v, Window w) {
  return std::vector<double>(v.begin() + w.begin, v.begin() + w.end);
}

}  // namespace

// fastai records its smoothed loss at every step and reads [num_it/10, len-5), then cuts at the
// first NaN. A NaN compares false with the stop threshold, so that test runs on to num_it steps,
// and the cut keeps every finite point before the NaN that lies below num_it-5. An infinite loss
// keeps the smoothed one infinite, past the threshold: the test stops with it recorded, and it is
// one of the 5 points trimmed.
int64_t fastai_trim_end(int64_t kept, int64_t planned_steps, double ended_by) {
  if (std::isfinite(ended_by)) return kFinderSkipEnd;
  if (std::isnan(ended_by)) return std::max<int64_t>(0, kept - (planned_steps - kFinderSkipEnd));
  return kFinderSkipEnd - 1;
}

void validate_finder_options(const FinderOptions& o) {
  LRLAB_REQUIRE(std::isfinite(o.start) && o.start > 0, "the start rate must be positive and finite (got ",
                o.start, ")");
  LRLAB_REQUIRE(std::isfinite(o.end) && o.end > o.start, "the end rate must be finite and above the start rate ",
                o.start, " (got ", o.end, ")");
  // The rates live in a float table.
  LRLAB_REQUIRE(o.start >= std::numeric_limits<float>::min() && o.end <= std::numeric_limits<float>::max(),
                "the rates must lie within the float range [", std::numeric_limits<float>::min(), ", ",
                std::numeric_limits<float>::max(), "] (got ", o.start, " to ", o.end, ")");
  LRLAB_REQUIRE(o.steps >= kMinFinderSteps && o.steps <= kMaxTableSteps, "the range test needs between ",
                kMinFinderSteps, " and ", kMaxTableSteps, " steps (got ", o.steps, "): ", finder_window_rule());
  LRLAB_REQUIRE(std::isfinite(o.beta) && o.beta >= 0 && o.beta < 1, "the smoothing beta must be in [0, 1) (got ",
                o.beta, ")");
  LRLAB_REQUIRE(std::isfinite(o.stop_factor) && o.stop_factor > 1, "the stop factor must be above 1 (got ",
                o.stop_factor, ")");
}

std::string finder_window_rule() {
  return detail::concat("the suggestions need ", kFinderMinPoints, " points after leaving out the first tenth of ",
                        "the planned steps and the last ", kFinderSkipEnd);
}

std::string finder_schedule(const FinderOptions& o) {
  return "range(start=" + number(o.start) + ",end=" + number(o.end) + ",steps=" + std::to_string(o.steps) +
         ",mode=" + (o.linear ? "linear" : "exp") + ")";
}

// ---- suggestion rules --------------------------------------------------------------------------

int64_t valley_index(const std::vector<double>& y) {
  LRLAB_REQUIRE(!y.empty(), "no loss curve to suggest a rate from");
  // lds[i]: the longest strictly decreasing subsequence ending at i, by patience sorting on -y
  // (O(n log n); fastai's double loop gives the same lengths in O(n^2)).
  std::vector<double> tails;
  int64_t best_len = 0, max_end = 0;
  for (size_t i = 0; i < y.size(); ++i) {
    const double x = -y[i];
    auto it = std::lower_bound(tails.begin(), tails.end(), x);
    const int64_t len = (it - tails.begin()) + 1;
    if (it == tails.end()) tails.push_back(x);
    else *it = x;
    if (len > best_len) best_len = len, max_end = static_cast<int64_t>(i);  // first index of the longest
  }
  const int64_t max_start = max_end - best_len;
  const double sections = static_cast<double>(max_end - max_start) / 3;
  const int64_t idx = max_start + static_cast<int64_t>(sections) + static_cast<int64_t>(sections / 2);
  // fastai indexes with idx = -1 for the shortest stretches (Python then wraps to the last
  // point, the largest rate); the start of the stretch is the sensible reading.
  return std::clamp<int64_t>(idx, 0, static_cast<int64_t>(y.size()) - 1);
}

int64_t steepest_index(const std::vector<double>& lr, const std::vector<double>& y) {
  LRLAB_REQUIRE(!y.empty() && lr.size() == y.size(), "the rates and losses differ in length (", lr.size(), " and ",
                y.size(), ")");
  const size_t n = y.size();
  if (n == 1) return 0;
  int64_t best = -1;
  double best_slope = 0;
  for (size_t i = 0; i < n; ++i) {
    const size_t a = i == 0 ? 0 : i - 1, b = i + 1 == n ? n - 1 : i + 1;
    const double dx = std::log10(lr[b]) - std::log10(lr[a]);
    if (!(dx > 0)) continue;  // equal float rates in a very long ramp give no slope
    const double slope = (y[b] - y[a]) / dx;
    if (best < 0 || slope < best_slope) best = static_cast<int64_t>(i), best_slope = slope;
  }
  return std::max<int64_t>(best, 0);
}

int64_t minimum_index(const std::vector<double>& y) {
  LRLAB_REQUIRE(!y.empty(), "no loss curve to suggest a rate from");
  return std::min_element(y.begin(), y.end()) - y.begin();
}

Suggestions suggest(const std::vector<double>& lr, const std::vector<double>& smoothed, int64_t planned_steps,
                    int64_t trim_end) {
  LRLAB_REQUIRE(!smoothed.empty() && lr.size() == smoothed.size(), "the rates and losses differ in length (",
                lr.size(), " and ", smoothed.size(), ") or are empty");
  const Window w = trimmed(smoothed.size(), planned_steps, trim_end);
  Suggestions s;
  s.window_begin = static_cast<int64_t>(w.begin);
  s.window_end = static_cast<int64_t>(w.end);
  // Below two points no rule means anything: one point is its own minimum, valley and steepest
  // descent, whatever the loss did.
  s.enough_points = s.window_end - s.window_begin >= kFinderMinPoints;
  if (!s.enough_points) {
    s.steepest_lr = s.valley_lr = s.min_div10_lr = std::numeric_limits<double>::quiet_NaN();
    return s;
  }
  const std::vector<double> x = slice(lr, w), y = slice(smoothed, w);
  s.steepest = static_cast<int64_t>(w.begin) + steepest_index(x, y);
  s.valley = static_cast<int64_t>(w.begin) + valley_index(y);
  s.minimum = static_cast<int64_t>(w.begin) + minimum_index(y);
  s.steepest_lr = lr[s.steepest];
  s.valley_lr = lr[s.valley];
  s.min_div10_lr = lr[s.minimum] / 10;
  // A valley needs some point below an earlier one.
  double highest = y[0];
  for (size_t i = 1; i < y.size() && !s.has_valley; ++i) {
    s.has_valley = y[i] < highest;
    highest = std::max(highest, y[i]);
  }
  return s;
}

namespace {

// Why `c` has no suggestion, or "" when it has one: a point or two are no curve (the test diverged
// at once), and a minimum / 10 below the first rate is a rate the test never tried.
std::string why_no_suggestion(const FinderCurve& c, const Suggestions& s) {
  using detail::concat;
  using detail::counted;
  if (!s.enough_points)
    return concat("the test recorded ", counted(c.steps_run, "point"),
                  c.stopped_early ? concat(" before the loss diverged at lr ", c.lr.back()) : "", ", and ",
                  finder_window_rule(), " (", s.window_end - s.window_begin,
                  " left here): start the ramp lower or give it more steps");
  if (!s.has_valley && !(s.min_div10_lr >= c.lr.front()))
    return concat("the loss never decreased and was lowest at lr ", c.lr[s.minimum],
                  ", so minimum/10 lies below the range tested (from ", c.lr.front(), "): start the ramp lower");
  return "";
}

}  // namespace

// ---- running the test --------------------------------------------------------------------------

FinderCurve run_range_test(TrainEngine& engine, const FinderOptions& o,
                           const std::function<void(int64_t steps_done)>& progress) {
  validate_finder_options(o);
  LRLAB_REQUIRE(engine.replicas() == 1, "the range test trains one model (the engine has ", engine.replicas(),
                " replicas)");
  Optimizer& opt = engine.optimizer();
  const TrainEngine::Snapshot before = engine.snapshot();
  // With base rate 1 the table holds the absolute rates.
  const std::vector<float> table = Schedule::parse(finder_schedule(o)).table(o.steps, 1.0);
  FinderCurve c;
  c.optimizer = engine.config().optimizer;
  double ended_by = 0;  // the non-finite loss that ended the curve, if one did (fastai's window)
  try {
    opt.reset_replica(0);  // a fresh optimizer: no moments from earlier training
    opt.set_lr(1.0f);
    opt.set_scale(1.0f);
    opt.set_schedule(table);
    SmoothedLoss smoothed{o.beta};
    int64_t done = 0, epoch = 0;
    engine.begin_epoch(epoch);
    while (done < o.steps && !c.stopped_early) {
      if (engine.steps_left_in_epoch() == 0) engine.begin_epoch(++epoch);
      const int64_t n = std::min({kCheckEvery, o.steps - done, engine.steps_left_in_epoch()});
      const std::vector<float> losses = engine.run(n);
      for (int64_t i = 0; i < n; ++i) {
        const double loss = losses[i];
        if (!std::isfinite(loss)) {
          c.stopped_early = true;
          ended_by = loss;
          break;
        }
        const double smooth = smoothed.add(loss);
        c.lr.push_back(table[done + i]);
        c.loss.push_back(loss);
        c.smoothed.push_back(smooth);
        if (smooth > o.stop_factor * smoothed.best) {
          c.stopped_early = done + i + 1 < o.steps;
          break;
        }
      }
      done += n;
      if (progress) progress(done);
    }
  } catch (...) {
    engine.restore(before);
    throw;
  }
  engine.restore(before);
  c.steps_run = static_cast<int64_t>(c.lr.size());
  LRLAB_REQUIRE(c.steps_run > 0, "the loss of the first step (lr ", o.start, ") is not finite; ",
                "the range test has nothing to suggest from");
  const Suggestions s = suggest(c.lr, c.smoothed, o.steps, fastai_trim_end(c.steps_run, o.steps, ended_by));
  c.window_begin = s.window_begin;
  c.window_end = s.window_end;
  c.steepest = s.steepest_lr;
  c.valley = s.valley_lr;
  c.min_div10 = s.min_div10_lr;
  c.no_suggestion = why_no_suggestion(c, s);
  c.recommended = !c.no_suggestion.empty() ? "" : s.has_valley ? "valley" : "min_div10";
  c.suggestion = c.recommended.empty() ? std::numeric_limits<double>::quiet_NaN()
                 : s.has_valley        ? c.valley
                                       : c.min_div10;
  LRLAB_REQUIRE(!o.require_suggestion || c.no_suggestion.empty(), "the range test of ", c.optimizer,
                " suggests no rate: ", c.no_suggestion);
  return c;
}

std::vector<FinderCurve> find_lr(const TrainOptions& base, const std::vector<std::string>& optimizers,
                                 const FinderOptions& options, const FinderProgress& progress) {
  validate_finder_options(options);
  LRLAB_REQUIRE(!optimizers.empty(), "the range test needs at least one optimizer spec");
  for (const std::string& spec : optimizers) parse_optimizer(spec);
  LRLAB_REQUIRE(base.batch >= 1, "--batch must be at least 1 (got ", base.batch, ")");
  const Device device = parse_device(base.device);
  const DataSplits data = load_data(base.data, data_options(base, base.seed));

  // The same model, initial weights and data order `lrlab train` would use with these options.
  EngineConfig ec;
  ec.model = model_for(base, data.train);
  ec.replicas = {ReplicaSpec{1.0f, finder_schedule(options), base.seed}};
  ec.batch = base.batch;
  LRLAB_REQUIRE(data.train.n >= 1, "the training set is empty");
  // Enough epochs that the engine's table covers the whole ramp. A batch beyond the training set is
  // the whole set, as the engine takes it.
  const int64_t batch = std::min(base.batch, data.train.n);
  const int64_t steps_per_epoch = (data.train.n + batch - 1) / batch;
  ec.epochs = std::max<int64_t>(1, (options.steps + steps_per_epoch - 1) / steps_per_epoch);
  ec.data_seed = base.seed;
  ec.device = device;
  ec.tf32 = base.tf32;
  ec.bias_decay = base.bias_decay;

  // Every engine is built before any trains, so a bad combination fails fast.
  std::vector<std::unique_ptr<TrainEngine>> engines;
  std::shared_ptr<const DeviceData> device_data;
  if (device == Device::CUDA) device_data = upload_to_device(data);
  for (const std::string& spec : optimizers) {
    ec.optimizer = spec;
    engines.push_back(std::make_unique<TrainEngine>(ec, data, device_data));
  }
  // One host thread per engine, each with its own stream on the GPU. On the CPU at most one per
  // thread of the budget (cpu_thread_budget), each with a share of it for the CPU backend's OpenMP
  // team (measured when GEMMs were still threaded by OpenBLAS: on a busy 2-core machine, Adam and
  // SGD tests of 300 steps each on Fashion-MNIST took 13-14 s one after another and 6 s in two
  // workers).
  const int64_t n = static_cast<int64_t>(engines.size());
  const int64_t workers = device == Device::CPU ? std::min(n, detail::cpu_thread_budget()) : n;
  const detail::WorkerSetup worker(device, workers);
  std::vector<FinderCurve> curves(n);
  detail::parallel_for(n, workers, [&](int64_t i) {
    worker.apply();
    std::function<void(int64_t)> own_progress;
    if (progress) own_progress = [&progress, i](int64_t done) { progress(static_cast<size_t>(i), done); };
    curves[i] = run_range_test(*engines[i], options, own_progress);
  });
  return curves;
}

// ---- output ------------------------------------------------------------------------------------

std::string finder_json(const std::vector<FinderCurve>& curves) {
  using json = nlohmann::json;
  auto num = [](double v) { return std::isfinite(v) ? json(v) : json(nullptr); };
  auto text = [](const std::string& v) { return v.empty() ? json(nullptr) : json(v); };
  auto nums = [&](const std::vector<double>& v) {
    json a = json::array();
    for (double x : v) a.push_back(num(x));
    return a;
  };
  json list = json::array();
  for (const FinderCurve& c : curves)
    list.push_back({{"optimizer", c.optimizer},
                    {"steps_run", c.steps_run},
                    {"stopped_early", c.stopped_early},
                    {"window", {c.window_begin, c.window_end}},
                    {"suggestions", {{"steepest", num(c.steepest)}, {"valley", num(c.valley)},
                                     {"min_div10", num(c.min_div10)}}},
                    {"recommended", text(c.recommended)},
                    {"suggestion", num(c.suggestion)},
                    {"no_suggestion", text(c.no_suggestion)},
                    {"lr", nums(c.lr)},
                    {"loss", nums(c.loss)},
                    {"smoothed", nums(c.smoothed)}});
  return json{{"curves", list}}.dump(2) + "\n";
}

namespace {

// The smoothed loss at `rate`, interpolated in log(rate) between the two steps around it (minimum/10
// is rarely a rate the ramp stepped on); beyond the ramp's ends, the end's loss.
double curve_at(const FinderCurve& c, double rate) {
  const size_t at = std::lower_bound(c.lr.begin(), c.lr.end(), rate) - c.lr.begin();
  if (at == 0) return c.smoothed.front();
  if (at == c.lr.size()) return c.smoothed.back();
  const double t = std::log(rate / c.lr[at - 1]) / std::log(c.lr[at] / c.lr[at - 1]);
  return c.smoothed[at - 1] + t * (c.smoothed[at] - c.smoothed[at - 1]);
}

}  // namespace

std::string finder_svg(const std::vector<FinderCurve>& curves) {
  // A curve that diverged is drawn without its last 5 points, the blow-up, which would otherwise
  // stretch the loss axis until the useful part of the curve is flat. (fastai's plot always drops
  // them; a curve that ran its course keeps them here.)
  std::vector<Series> series;
  for (const FinderCurve& c : curves) {
    size_t shown = c.smoothed.size();
    if (c.stopped_early && shown > 2 * kFinderSkipEnd) shown -= kFinderSkipEnd;
    Series s{c.optimizer, {c.lr.begin(), c.lr.begin() + shown},
             {c.smoothed.begin(), c.smoothed.begin() + shown}};
    series.push_back(std::move(s));
  }
  // Each suggestion is a marker on its curve, in the curve's colour, one shape per rule; the
  // recommended one is filled.
  for (size_t ci = 0; ci < curves.size(); ++ci) {
    const FinderCurve& c = curves[ci];
    if (c.lr.empty()) continue;
    const std::tuple<const char*, double, Mark> marks[] = {{"steepest", c.steepest, Mark::triangle},
                                                           {"valley", c.valley, Mark::diamond},
                                                           {"min_div10", c.min_div10, Mark::circle}};
    for (const auto& [name, rate, shape] : marks) {
      if (!std::isfinite(rate)) continue;  // too few points for the rules
      const bool recommended = c.recommended == name;
      char value[64];
      std::snprintf(value, sizeof value, "%s %.3g%s", name, rate, recommended ? " *" : "");
      const std::string label = curves.size() > 1 ? c.optimizer + " " + value : value;
      series.push_back({label, {rate}, {curve_at(c, rate)}, shape, recommended, plot_colour(ci)});
    }
  }
  PlotOptions o;
  o.title = "Learning-rate range test (filled, *: recommended)";
  o.height = 520;
  o.xlabel = "learning rate";
  o.ylabel = "smoothed training loss";
  o.log_x = true;
  return svg_line_plot(series, o);
}

}  // namespace lrlab
