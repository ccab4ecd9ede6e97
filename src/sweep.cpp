#include "lrlab/sweep.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <set>

#include <nlohmann/json.hpp>

#include "engine_workers.hpp"
#include "lrlab/error.hpp"
#include "lrlab/optimizer.hpp"
#include "lrlab/packing.hpp"
#include "lrlab/schedule.hpp"
#include "lrlab/spec.hpp"
#include "lrlab/train_engine.hpp"

namespace lrlab {

namespace {

double parse_positive(const std::string& tok, const std::string& text) {
  char* end = nullptr;
  double v = std::strtod(tok.c_str(), &end);
  LRLAB_REQUIRE(!tok.empty() && end && *end == '\0' && std::isfinite(v) && v > 0, "--lr: '", tok,
                "' is not a positive rate (in '", text, "')");
  return v;
}

// One engine and the runs it trains: K replicas in packed mode, one otherwise.
struct Lane {
  std::unique_ptr<TrainEngine> engine;
  EngineConfig config;
  std::vector<size_t> runs;    // index into SweepResult::runs, per replica
};

std::vector<float> sample_curve(const std::vector<float>& table, double lr, int64_t* stride) {
  *stride = std::max<int64_t>(1, (static_cast<int64_t>(table.size()) + kLrCurvePoints - 1) / kLrCurvePoints);
  std::vector<float> out;
  for (size_t t = 0; t < table.size(); t += *stride) out.push_back(static_cast<float>(lr * table[t]));
  return out;
}

void summarize(SweepResult& res) {
  for (SweepRun& r : res.runs) summarize_sweep_run(r);
}

// The data is named as written and told by its contents (DataSplits::fingerprint): merge takes
// the shards of a job array whose tasks each read their own copy of the data as one sweep.
std::string options_json(const SweepOptions& o, const DataSplits& data) {
  nlohmann::json opts = {{"data", o.base.data}, {"hidden", o.base.hidden}, {"activation", o.base.activation},
                         {"batch", o.base.batch}, {"epochs", o.base.epochs}, {"seed", o.base.seed},
                         {"lrs", o.lrs}, {"schedules", o.schedules}, {"optimizers", o.optimizers},
                         {"seeds", o.seeds}, {"halving", o.halving}, {"val_fraction", o.base.val_fraction},
                         {"limit_train", o.base.limit_train}, {"samples", o.base.synthetic_samples},
                         {"bias_decay", o.base.bias_decay}, {"tf32", o.base.tf32},
                         {"data_crc32", data.fingerprint}};
  return opts.dump();
}

// A schedule spec less what does not change the schedule: spaces, the order of its keys, and how
// a number is spelled ("0.5", ".5", "5e-1"). Equal keys train the same schedule; specs that differ
// only in a key left at its default keep different keys, a repeat the grid then trains twice.
std::string schedule_key(const std::string& text) {
  std::string key;
  for (const spec::Segment& seg : spec::parse(text, "schedule")) {
    std::vector<std::pair<std::string, std::string>> args;
    for (const spec::Arg& a : seg.args) {
      char* end = nullptr;
      const double v = std::strtod(a.value.c_str(), &end);
      char number[32];
      std::snprintf(number, sizeof number, "%.17g", v);
      args.push_back({a.key, end == a.value.c_str() ? a.value : number + std::string(end)});  // "2ep": the unit stays
    }
    std::sort(args.begin(), args.end());
    key += "+" + seg.name + "(";
    for (const auto& [k, v] : args) key += k + "=" + v + ",";
    key += ")";
  }
  return key;
}

// The grid lists each value once: a repeat would train every configuration it is part of twice.
void require_once(std::map<std::string, std::string>& seen, const std::string& key, const std::string& text,
                  const char* option) {
  const auto [at, first] = seen.emplace(key, text);
  if (first) return;
  LRLAB_REQUIRE(at->second != text, option, ": '", text, "' is listed twice");
  LRLAB_FAIL(option, ": '", text, "' is the same as '", at->second, "', listed before it");
}

void require_distinct_grid(const SweepOptions& o) {
  std::map<std::string, std::string> rates, schedules, optimizers;
  for (double lr : o.lrs) {
    char key[32], text[32];
    std::snprintf(key, sizeof key, "%.17g", lr);  // "1e-3" and "0.001" are one rate
    std::snprintf(text, sizeof text, "%.12g", lr);
    require_once(rates, key, text, "--lr");
  }
  for (const std::string& s : o.schedules) require_once(schedules, schedule_key(s), s, "--schedule");
  // Optimizers compare by their settings, defaults and aliases resolved ("adam" is "adam()" is
  // "adam(beta1=0.9)"). Their fields are all 4 bytes wide, so the bytes are the settings (a field of
  // another width would bring padding bytes, and the assertion below with it).
  static_assert(sizeof(OptimizerHyper) == 17 * 4 && alignof(OptimizerHyper) == 4,
                "OptimizerHyper has fields other than 17 of 4 bytes: compare it field by field here");
  for (const std::string& s : o.optimizers) {
    const OptimizerHyper h = parse_optimizer(s);
    require_once(optimizers, std::string(reinterpret_cast<const char*>(&h), sizeof h), s, "--optimizer");
  }
}

// Hyperband's rungs (its most aggressive bracket) in whole epochs: epochs / eta^k for k = 1 ..
// floor(log_eta(epochs)), rounded down, earliest first. 10 epochs at eta 3: after epochs 1 and 3;
// fewer epochs than eta: none.
std::vector<int64_t> rung_epochs(int64_t epochs, double eta) {
  std::vector<int64_t> rungs;
  if (eta <= 1) return rungs;
  for (double p = eta; p <= epochs * (1 + 1e-12); p *= eta) {
    const int64_t r = static_cast<int64_t>(std::floor(epochs / p + 1e-9));
    if (r >= 1 && r < epochs && (rungs.empty() || rungs.front() != r)) rungs.insert(rungs.begin(), r);
  }
  return rungs;
}

}  // namespace

std::vector<double> parse_rates(const std::string& text) {
  std::vector<double> out;
  if (text.find(':') != std::string::npos) {
    size_t a = text.find(':'), b = text.find(':', a + 1);
    LRLAB_REQUIRE(b != std::string::npos && text.find(':', b + 1) == std::string::npos, "--lr: malformed range '",
                  text, "' (expected START:END:COUNT, e.g. 1e-4:1e-1:8)");
    double lo = parse_positive(text.substr(0, a), text), hi = parse_positive(text.substr(a + 1, b - a - 1), text);
    std::string count = text.substr(b + 1);
    char* end = nullptr;
    long long n = std::strtoll(count.c_str(), &end, 10);
    LRLAB_REQUIRE(!count.empty() && *end == '\0' && n >= 1 && n <= 10000, "--lr: malformed range '", text,
                  "': the count '", count, "' must be a whole number from 1 to 10000");
    LRLAB_REQUIRE(lo < hi || (n == 1 && lo == hi), "--lr: malformed range '", text, "': START must be below END");
    for (long long i = 0; i < n; ++i) {
      // To 12 significant digits, so that 1e-4:1e-1:4 gives 0.001, not 0.0009999999999999998.
      const double v = n == 1 ? lo : lo * std::pow(hi / lo, static_cast<double>(i) / (n - 1));
      char text12[32];
      std::snprintf(text12, sizeof text12, "%.12g", v);
      out.push_back(std::strtod(text12, nullptr));
    }
    return out;
  }
  size_t start = 0;
  for (;;) {
    size_t comma = text.find(',', start);
    out.push_back(parse_positive(text.substr(start, comma == std::string::npos ? std::string::npos : comma - start), text));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

bool sweep_diverged(const std::vector<double>& train_loss, double initial_loss, double val_loss, double factor) {
  LRLAB_REQUIRE(!train_loss.empty(), "sweep_diverged: no epoch to judge");
  const double last = train_loss.back();
  if (!std::isfinite(last) || !std::isfinite(val_loss)) return true;
  if (std::isfinite(initial_loss) && val_loss > factor * initial_loss) return true;
  if (train_loss.size() == 1) return false;
  const double best = *std::min_element(train_loss.begin(), train_loss.end() - 1);
  return last > factor * best && last > train_loss.front();
}

std::vector<SweepConfig> sweep_grid(const SweepOptions& o) {
  std::vector<SweepConfig> grid = grid_configs(o);
  for (double lr : o.lrs) check_base_rate(lr, "--lr");
  for (const std::string& s : o.schedules) Schedule::parse(s, 1000);
  for (const std::string& s : o.optimizers) parse_optimizer(s);
  return grid;
}

SweepResult run_sweep(const SweepOptions& o, const SweepObserver& obs, const volatile int* stop,
                      const std::vector<SweepResult>& earlier) {
  validate_sweep(o);  // bad options fail before the data is read
  LRLAB_REQUIRE(earlier.empty() || o.halving == 0, kNoHalvingResume);
  DataSplits data = load_data(o.base.data, data_options(o.base, o.base.seed));
  return run_sweep_on(o, data, obs, stop, earlier);
}

std::vector<SweepConfig> validate_sweep(const SweepOptions& o) {
  LRLAB_REQUIRE(o.mode == "auto" || o.mode == "packed" || o.mode == "streams" || o.mode == "sequential",
                "--mode must be auto, packed, streams or sequential (got '", o.mode, "')");
  LRLAB_REQUIRE(o.halving == 0 || (o.halving > 1 && std::isfinite(o.halving)),
                "--halving must be a finite number above 1 (got ", o.halving, ")");
  LRLAB_REQUIRE(o.shard_count >= 1 && o.shard_index >= 0 && o.shard_index < o.shard_count, "shard ", o.shard_index,
                "/", o.shard_count, " is out of range (index must be from 0 to count-1)");
  LRLAB_REQUIRE(o.halving == 0 || o.shard_count == 1,
                "--halving ranks all configurations together and cannot run split into shards or ranks");
  LRLAB_REQUIRE(o.halving == 0 || !rung_epochs(o.base.epochs, o.halving).empty(), "--halving ", o.halving,
                " halts nothing in ", o.base.epochs, " epoch(s): its first rung comes after epochs / eta, so it needs "
                "--epochs of at least eta");
  LRLAB_REQUIRE(o.diverge_factor > 1, "the divergence factor must be above 1");
  LRLAB_REQUIRE(o.max_packed >= 1 && o.max_packed <= kMaxReplicas, "configurations per packed engine must be in [1, ",
                kMaxReplicas, "] (got ", o.max_packed, ")");
  LRLAB_REQUIRE(o.base.epochs >= 1, "--epochs must be at least 1 (got ", o.base.epochs, ")");
  LRLAB_REQUIRE(o.workers >= 0, "--workers must be 0 (automatic) or more (got ", o.workers, ")");
  const std::vector<SweepConfig> grid = sweep_grid(o);
  // After sweep_grid, whose checks name a malformed spec; results files written before repeats were
  // refused still read (grid_configs alone rebuilds their grid).
  require_distinct_grid(o);
  LRLAB_REQUIRE(o.shard_count <= static_cast<int64_t>(grid.size()), "more shards or ranks (", o.shard_count,
                ") than configurations (", grid.size(), ")");
  return grid;
}

EngineConfig sweep_engine_config(const SweepOptions& o, const MlpConfig& model, const std::string& optimizer,
                                 int64_t seed_index, Device device) {
  EngineConfig ec;
  ec.model = model;
  ec.optimizer = optimizer;
  ec.replicas.clear();
  ec.batch = o.base.batch;
  ec.epochs = o.base.epochs;
  ec.data_seed = o.base.seed + static_cast<uint64_t>(seed_index);
  ec.device = device;
  ec.tf32 = o.base.tf32;
  ec.bias_decay = o.base.bias_decay;
  return ec;
}

SweepResult run_sweep_on(const SweepOptions& o, const DataSplits& data, const SweepObserver& obs,
                         const volatile int* stop, const std::vector<SweepResult>& earlier) {
  const auto t0 = std::chrono::steady_clock::now();
  const std::vector<SweepConfig> grid = validate_sweep(o);
  const Device device = parse_device(o.base.device);
  const std::string mode = o.mode != "auto" ? o.mode : device == Device::CUDA ? "packed" : "streams";
  const MlpConfig model = model_for(o.base, data.train);
  // Runs are ranked, halved and judged by their validation loss: without validation samples every
  // run would look diverged after its first epoch.
  LRLAB_REQUIRE(data.val.n > 0, "a sweep compares configurations on the validation split, and it is empty ",
                "(raise --val-fraction)");

  SweepResult res;
  res.options_json = options_json(o, data);
  res.data_description = data.description;
  res.device = device_name(device);
  res.mode = mode;
  res.epochs = o.base.epochs;
  res.grid_size = static_cast<int64_t>(grid.size());
  res.shard_index = o.shard_index;
  res.shard_count = o.shard_count;
  for (const SweepConfig& c : grid)
    if (c.id % o.shard_count == o.shard_index) {
      SweepRun r;
      r.config = c;
      r.device = res.device;
      res.runs.push_back(r);
    }
  // A resumed sweep keeps what the earlier run finished and trains the rest from the start: a
  // configuration's data order and weights follow from its seed alone, so it trains as it would have.
  std::vector<bool> kept(res.runs.size(), false);
  double earlier_seconds = 0;
  LRLAB_REQUIRE(earlier.empty() || o.halving == 0, kNoHalvingResume);
  std::vector<SweepResult> finished_earlier;  // each input's finished runs
  for (const SweepResult& e : earlier) {
    const std::string differs = sweep_difference(res, e, "these options");
    LRLAB_REQUIRE(differs.empty(), e.source.empty() ? std::string("results to resume") : "'" + e.source + "'",
                  " are another sweep's than these options describe: ", differs,
                  " (resume with the options, and data, the sweep ran with)");
    finished_earlier.push_back(e);
    SweepResult& f = finished_earlier.back();
    f.runs.erase(std::remove_if(f.runs.begin(), f.runs.end(),
                                [&](const SweepRun& r) { return !sweep_run_finished(r, o.base.epochs); }),
                 f.runs.end());
  }
  if (!finished_earlier.empty()) {
    const SweepResult done = merge_sweeps(finished_earlier);  // two finished records must agree
    std::map<int64_t, const SweepRun*> by_id;
    for (const SweepRun& r : done.runs) by_id[r.config.id] = &r;
    for (size_t i = 0; i < res.runs.size(); ++i)
      if (auto at = by_id.find(res.runs[i].config.id); at != by_id.end()) {
        res.runs[i] = *at->second;
        kept[i] = true;
      }
    // The time that trained the kept runs: the longest of the inputs, which ran side by side.
    for (const SweepResult& e : earlier) earlier_seconds = std::max(earlier_seconds, e.seconds);
    res.device = sweep_devices(res.runs, res.device);  // the kept runs may have trained elsewhere
  }

  // Lanes: packed groups share (optimizer, seed), at most max_packed to an engine; the other modes
  // give each run its own lane.
  std::vector<Lane> lanes;
  std::map<std::pair<std::string, int64_t>, size_t> group_of;
  for (size_t i = 0; i < res.runs.size(); ++i) {
    if (kept[i]) continue;
    const SweepConfig& c = res.runs[i].config;
    size_t li;
    auto key = std::make_pair(c.optimizer, c.seed_index);
    if (mode == "packed" && group_of.count(key) &&
        static_cast<int64_t>(lanes[group_of[key]].runs.size()) < o.max_packed) {
      li = group_of[key];
    } else {
      li = lanes.size();
      lanes.emplace_back();
      group_of[key] = li;
      lanes[li].config = sweep_engine_config(o, model, c.optimizer, c.seed_index, device);
    }
    lanes[li].config.replicas.push_back(
        {static_cast<float>(c.lr), c.schedule, o.base.seed + static_cast<uint64_t>(c.seed_index)});
    lanes[li].runs.push_back(i);
  }
  res.engines = static_cast<int64_t>(lanes.size());
  int64_t workers = o.workers > 0 ? o.workers : device == Device::CUDA ? 16 : detail::cpu_thread_budget();
  if (mode == "sequential") workers = 1;
  workers = std::min<int64_t>(workers, static_cast<int64_t>(lanes.size()));
  const detail::WorkerSetup worker(device, workers);
  // GPU lanes read one copy of the data set (64 streams would otherwise hold 64 copies), and so do
  // the lanes that halving rebuilds.
  std::shared_ptr<const DeviceData> device_data;
  if (device == Device::CUDA) device_data = upload_to_device(data);

  // Each run's validation loss before training: what divergence is measured against.
  std::vector<double> initial_loss(res.runs.size(), std::nan(""));
  detail::parallel_for(static_cast<int64_t>(lanes.size()), workers, [&](int64_t li) {
    worker.apply();
    Lane& lane = lanes[li];
    lane.engine = std::make_unique<TrainEngine>(lane.config, data, device_data);
    const TrainEngine::Eval untrained = lane.engine->evaluate(Split::Val);
    for (size_t r = 0; r < lane.runs.size(); ++r) {
      SweepRun& run = res.runs[lane.runs[r]];
      run.lr_curve = sample_curve(lane.engine->table(static_cast<int64_t>(r)), run.config.lr, &run.lr_curve_stride);
      initial_loss[lane.runs[r]] = untrained.loss[r];
    }
  });
  res.steps_per_epoch = !lanes.empty()     ? lanes[0].engine->steps_per_epoch()
                        : !earlier.empty() ? earlier[0].steps_per_epoch
                                           : 0;
  const std::vector<int64_t> rungs = rung_epochs(o.base.epochs, o.halving);
  if (obs.on_start) obs.on_start();

  auto alive = [&](const SweepRun& r) { return !r.diverged && !r.halted; };
  for (int64_t epoch = 0; epoch < o.base.epochs && !lanes.empty(); ++epoch) {
    if (stop && *stop) {
      res.interrupted = true;
      break;
    }
    detail::parallel_for(static_cast<int64_t>(lanes.size()), workers, [&](int64_t li) {
      worker.apply();
      Lane& lane = lanes[li];
      TrainEngine& eng = *lane.engine;
      const int64_t K = eng.replicas();
      eng.begin_epoch(epoch);
      const int64_t spe = eng.steps_per_epoch();
      std::vector<float> losses = eng.run(spe);
      TrainEngine::Eval val = eng.evaluate(Split::Val);
      for (int64_t r = 0; r < K; ++r) {
        SweepRun& run = res.runs[lane.runs[r]];
        if (!alive(run)) continue;
        double sum = 0;
        for (int64_t s = 0; s < spe; ++s) sum += losses[s * K + r];
        const double mean = sum / spe;
        run.train_loss.push_back(mean);
        run.val_loss.push_back(val.loss[r]);
        run.val_accuracy.push_back(val.accuracy[r]);
        const std::vector<float>& table = eng.table(r);
        run.lr.push_back(run.config.lr * table[std::min<size_t>((epoch + 1) * spe - 1, table.size() - 1)]);
        if (sweep_diverged(run.train_loss, initial_loss[lane.runs[r]], val.loss[r], o.diverge_factor)) {
          run.diverged = true;
          run.diverged_epoch = epoch + 1;
          eng.optimizer().set_scale(0.0f, r);  // stop updating it; it no longer affects the others
        }
      }
    });
    // Successive halving: rank the grid entries still alive by this epoch's validation loss, each
    // entry by the mean over its data orders, and keep or drop all of an entry's seeds together (so
    // that its spread compares equal epochs).
    if (std::find(rungs.begin(), rungs.end(), epoch + 1) != rungs.end()) {
      const int64_t per_seed = static_cast<int64_t>(grid.size()) / o.seeds;
      // An entry with a diverged seed is unstable at that rate: it ranks last (an infinite mean).
      struct Entry {
        double sum = 0;
        int64_t runs = 0;
        bool live = false;
      };
      std::map<int64_t, Entry> entries;
      for (const SweepRun& run : res.runs)
        if (alive(run) || run.diverged) {
          Entry& e = entries[run.config.id % per_seed];
          e.sum += run.diverged ? INFINITY : run.val_loss.back();
          e.runs += 1;
          e.live = e.live || alive(run);
        }
      std::vector<std::pair<double, int64_t>> ranked;  // (mean loss, entry), entries still training
      for (const auto& [entry, e] : entries) {
        if (!e.live) continue;
        const double mean = e.sum / e.runs;
        ranked.push_back({std::isnan(mean) ? INFINITY : mean, entry});
      }
      std::stable_sort(ranked.begin(), ranked.end(),
                       [](const auto& a, const auto& b) { return a.first < b.first; });
      const size_t keep = static_cast<size_t>(std::ceil(ranked.size() / o.halving));
      std::set<int64_t> dropped;
      for (size_t j = keep; j < ranked.size(); ++j) dropped.insert(ranked[j].second);
      for (SweepRun& run : res.runs)
        if (alive(run) && dropped.count(run.config.id % per_seed)) run.halted = true;
    }
    // Runs that stopped leave their lane: packed lanes are rebuilt with the survivors only.
    std::vector<Lane> next;
    for (Lane& lane : lanes) {
      std::vector<int64_t> keep;
      for (size_t r = 0; r < lane.runs.size(); ++r)
        if (alive(res.runs[lane.runs[r]])) keep.push_back(static_cast<int64_t>(r));
      if (keep.empty()) continue;
      if (keep.size() == lane.runs.size()) {
        next.push_back(std::move(lane));
        continue;
      }
      Lane compact;
      compact.config = lane.config;
      compact.config.replicas.clear();
      const int64_t P = lane.engine->layout().size();
      std::vector<float> old_params = lane.engine->params(), params;
      for (int64_t r : keep) {
        compact.config.replicas.push_back(lane.config.replicas[r]);
        compact.runs.push_back(lane.runs[r]);
        params.insert(params.end(), old_params.begin() + r * P, old_params.begin() + (r + 1) * P);
      }
      compact.engine = std::make_unique<TrainEngine>(compact.config, data, device_data);
      compact.engine->set_params(params);
      for (size_t j = 0; j < keep.size(); ++j)
        compact.engine->optimizer().load_replica(static_cast<int64_t>(j), lane.engine->optimizer().save_replica(keep[j]));
      lane.engine.reset();
      next.push_back(std::move(compact));
    }
    lanes = std::move(next);
    int64_t n_alive = 0;  // the runs still training (runs a resumed sweep kept are in no lane)
    for (const Lane& lane : lanes) n_alive += static_cast<int64_t>(lane.runs.size());
    if (obs.on_epoch) obs.on_epoch(epoch + 1, o.base.epochs, n_alive, static_cast<int64_t>(res.runs.size()));
    if (obs.on_partial && epoch + 1 < o.base.epochs && n_alive > 0) {
      SweepResult partial = res;
      partial.interrupted = true;
      partial.seconds =
          earlier_seconds + std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      summarize(partial);
      obs.on_partial(partial);
    }
    if (n_alive == 0) break;
  }
  summarize(res);
  res.seconds = earlier_seconds + std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return res;
}

}  // namespace lrlab
