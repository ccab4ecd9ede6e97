// Sweep outputs: results.json (also what `lrlab merge` reads), curves.csv, report.html and the
// ranked terminal table.
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>
#include <sstream>
#include <tuple>

#include <nlohmann/json.hpp>

#include "lrlab/error.hpp"
#include "lrlab/io.hpp"
#include "lrlab/plot.hpp"
#include "lrlab/sweep.hpp"

namespace lrlab {

namespace {

using json = nlohmann::json;
constexpr const char* kFormat = "lrlab-sweep-results";
constexpr int kVersion = 1;

json num(double v) { return std::isfinite(v) ? json(v) : json(nullptr); }
json nums(const std::vector<double>& v) {
  json a = json::array();
  for (double x : v) a.push_back(num(x));
  return a;
}

std::string status(const SweepRun& r, const SweepResult& of) {
  // Where runs of two devices are joined, each says which trained it.
  const std::string on = of.device.find('+') != std::string::npos && !r.device.empty() ? " (" + r.device + ")" : "";
  if (r.diverged) return "diverged@" + std::to_string(r.diverged_epoch) + on;
  if (r.halted) return "halted@" + std::to_string(r.val_loss.size()) + on;
  if (of.interrupted && static_cast<int64_t>(r.val_loss.size()) < of.epochs)
    return "unfinished@" + std::to_string(r.val_loss.size()) + on;
  return "ok" + on;
}

// printf into a string of any length: rows carry specs, and a spec has no length limit.
__attribute__((format(printf, 1, 2))) std::string strf(const char* format, ...) {
  va_list args, again;
  va_start(args, format);
  va_copy(again, args);
  const int len = std::vsnprintf(nullptr, 0, format, args);
  va_end(args);
  std::string out(len > 0 ? static_cast<size_t>(len) : 0, '\0');
  if (len > 0) std::vsnprintf(out.data(), out.size() + 1, format, again);
  va_end(again);
  return out;
}

// A metric in a table cell: "-" where there is none (regression's accuracy, a run with no finished
// epoch, a loss that became NaN), so that no "nan" or "-nan" reaches the reader.
std::string cell(const char* format, double v) {
  if (std::isnan(v)) return "-";
  char buf[64];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}


// Why a best rate at an end of the grid deserves a second look, for the table and the report.
const char* edge_note(int edge) {
  return edge > 0   ? "the largest rate tried: extend --lr upward"
         : edge < 0 ? "the smallest rate tried: extend --lr downward"
                    : "";
}

const char* edge_name(const SweepBest& b) {
  return b.only_rate ? "only" : b.edge > 0 ? "largest" : b.edge < 0 ? "smallest" : "inside";
}

// Whether the best per optimizer comes from part of the grid.
std::string partial_note(const SweepResult& r) {
  if (r.interrupted) return "the sweep was interrupted";
  if (r.shard_count > 1)
    return strf("shard %lld/%lld of the grid", static_cast<long long>(r.shard_index),
                static_cast<long long>(r.shard_count));
  if (static_cast<int64_t>(r.runs.size()) < r.grid_size)  // a merge that lacks a shard
    return strf("%zu of the grid's %lld configurations", r.runs.size(), static_cast<long long>(r.grid_size));
  return "";
}

// The reader's accessors: every field checked, so a foreign or damaged file is an error, not UB.
struct Reader {
  const std::string& name;
  [[noreturn]] void fail(const std::string& what) const { LRLAB_FAIL("sweep results '", name, "': ", what); }
  const json& field(const json& obj, const char* key) const {
    if (!obj.is_object() || !obj.contains(key)) fail(std::string("missing field '") + key + "'");
    return obj.at(key);
  }
  double number(const json& obj, const char* key) const {
    const json& v = field(obj, key);
    if (v.is_null()) return NAN;
    if (!v.is_number()) fail(std::string("field '") + key + "' is not a number");
    return v.get<double>();
  }
  int64_t integer(const json& obj, const char* key) const {
    const json& v = field(obj, key);
    if (!v.is_number_integer()) fail(std::string("field '") + key + "' is not a whole number");
    return v.get<int64_t>();
  }
  std::string text(const json& obj, const char* key) const {
    const json& v = field(obj, key);
    if (!v.is_string()) fail(std::string("field '") + key + "' is not a string");
    return v.get<std::string>();
  }
  bool boolean(const json& obj, const char* key) const {
    const json& v = field(obj, key);
    if (!v.is_boolean()) fail(std::string("field '") + key + "' is not true or false");
    return v.get<bool>();
  }
  std::vector<std::string> texts(const json& obj, const char* key) const {
    const json& v = field(obj, key);
    if (!v.is_array()) fail(std::string("field '") + key + "' is not an array");
    std::vector<std::string> out;
    for (const json& x : v) {
      if (!x.is_string()) fail(std::string("field '") + key + "' holds a non-string");
      out.push_back(x.get<std::string>());
    }
    return out;
  }
  template <typename T>
  std::vector<T> array(const json& obj, const char* key) const {
    const json& v = field(obj, key);
    if (!v.is_array()) fail(std::string("field '") + key + "' is not an array");
    std::vector<T> out;
    for (const json& x : v) {
      if (x.is_null()) out.push_back(static_cast<T>(NAN));
      else if (x.is_number()) out.push_back(x.get<T>());
      else fail(std::string("field '") + key + "' holds a non-number");
    }
    return out;
  }
};

}  // namespace

std::vector<size_t> rank_runs(const std::vector<SweepRun>& runs) {
  std::vector<size_t> idx(runs.size());
  for (size_t i = 0; i < idx.size(); ++i) idx[i] = i;
  auto tier = [](const SweepRun& r) { return r.diverged ? 2 : r.halted ? 1 : 0; };
  auto key = [](const SweepRun& r) { return std::isfinite(r.best_val_loss) ? r.best_val_loss : INFINITY; };
  std::stable_sort(idx.begin(), idx.end(), [&](size_t a, size_t b) {
    const SweepRun &x = runs[a], &y = runs[b];
    if (tier(x) != tier(y)) return tier(x) < tier(y);
    if (tier(x) == 1 && x.val_loss.size() != y.val_loss.size()) return x.val_loss.size() > y.val_loss.size();
    if (key(x) != key(y)) return key(x) < key(y);
    return x.config.id < y.config.id;
  });
  return idx;
}

std::string sweep_results_json(const SweepResult& r) {
  json runs = json::array();
  for (const SweepRun& x : r.runs) {
    runs.push_back({{"id", x.config.id}, {"lr", x.config.lr}, {"schedule", x.config.schedule},
                    {"optimizer", x.config.optimizer}, {"seed_index", x.config.seed_index},
                    {"diverged", x.diverged}, {"halted", x.halted}, {"diverged_epoch", x.diverged_epoch},
                    {"train_loss", nums(x.train_loss)}, {"val_loss", nums(x.val_loss)},
                    {"val_accuracy", nums(x.val_accuracy)}, {"lr_per_epoch", nums(x.lr)},
                    {"final_val_loss", num(x.final_val_loss)}, {"best_val_loss", num(x.best_val_loss)},
                    {"final_val_accuracy", num(x.final_val_accuracy)},
                    {"best_val_accuracy", num(x.best_val_accuracy)}, {"best_epoch", x.best_epoch},
                    {"lr_curve", x.lr_curve}, {"lr_curve_stride", x.lr_curve_stride}});
    // A run with no device (built by a caller) reads back with the file's.
    if (!x.device.empty()) runs.back()["device"] = x.device;
  }
  json doc = {{"format", kFormat},
              {"version", kVersion},
              {"options", json::parse(r.options_json.empty() ? "{}" : r.options_json)},
              {"data", r.data_description},
              {"device", r.device},
              {"mode", r.mode},
              {"epochs", r.epochs},
              {"steps_per_epoch", r.steps_per_epoch},
              {"grid_size", r.grid_size},
              {"shard", {{"index", r.shard_index}, {"count", r.shard_count}}},
              {"seconds", r.seconds},
              {"interrupted", r.interrupted},
              {"runs", runs}};
  // Derived from the runs (merge recomputes them), for scripts that want the answer without ranking.
  auto listed = [&r](const std::vector<SweepBest>& best) {
    json list = json::array();
    for (const SweepBest& b : best) {
      const SweepRun& x = r.runs[b.run];
      list.push_back({{"id", x.config.id}, {"optimizer", x.config.optimizer}, {"schedule", x.config.schedule},
                      {"lr", x.config.lr}, {"best_val_loss", num(b.best_val_loss)},
                      {"best_val_accuracy", num(b.best_val_accuracy)}, {"data_orders", b.data_orders},
                      {"rate_in_grid", edge_name(b)}, {"within_noise", json::array()}});
      for (const SweepRival& v : b.within_noise) {
        const SweepConfig& c = r.runs[v.run].config;
        list.back()["within_noise"].push_back({{"id", c.id}, {"schedule", c.schedule}, {"lr", c.lr},
                                               {"best_val_loss", num(v.best_val_loss)}});
      }
    }
    return list;
  };
  doc["best_per_optimizer"] = listed(best_per_optimizer(r));
  doc["best_per_schedule"] = listed(best_per_schedule(r));
  return doc.dump(1) + "\n";
}

namespace {

// A number in as few digits as read back to it: "0.1", not "0.10000000000000001".
std::string shortest(double v) {
  for (int digits = 6;; ++digits) {
    const std::string text = strf("%.*g", digits, v);
    if (digits >= 17 || std::strtod(text.c_str(), nullptr) == v) return text;
  }
}

// The grid a results file's options describe, enumerated as the sweep enumerated it.
std::vector<SweepConfig> stored_grid(const Reader& rd, const json& opts) {
  SweepOptions o;
  o.lrs = rd.array<double>(opts, "lrs");
  o.schedules = rd.texts(opts, "schedules");
  o.optimizers = rd.texts(opts, "optimizers");
  o.seeds = rd.integer(opts, "seeds");
  for (double lr : o.lrs)
    if (!(lr > 0) || !std::isfinite(lr)) rd.fail("field 'options': its lrs hold " + shortest(lr) + ", not a rate");
  try {
    return grid_configs(o);
  } catch (const Error& e) {
    rd.fail(std::string("field 'options': ") + e.what());
  }
}

// What differs between two shards' options ("" when they describe one sweep): the keys whose values
// differ, each with b's value and a's, which `a_name` names. Where both tell the data by its contents, the path it was read from
// may differ (each task of a job array reading its own copy); results written before the
// fingerprint compare as written.
std::string options_difference(const std::string& a, const std::string& b, const std::string& a_name) {
  json ja = json::parse(a, nullptr, false), jb = json::parse(b, nullptr, false);
  if (!ja.is_object() || !jb.is_object()) return a == b ? "" : "its options differ";
  if (ja.contains("data_crc32") && jb.contains("data_crc32")) {
    ja.erase("data");
    jb.erase("data");
  }
  std::set<std::string> keys;
  for (const json* j : {&ja, &jb})
    for (const auto& item : j->items()) keys.insert(item.key());
  std::string out;
  for (const std::string& k : keys) {
    const json va = ja.contains(k) ? ja[k] : json(), vb = jb.contains(k) ? jb[k] : json();
    if (va == vb) continue;
    auto shown = [](const json& v) {
      const std::string t = v.is_null() ? "none" : v.dump();
      return t.size() > 60 ? t.substr(0, 57) + "..." : t;
    };
    out += (out.empty() ? "its options differ: " : "; ") + (k == "data_crc32" ? "the data (data_crc32)" : k) + " " +
           shown(vb) + " (" + shown(va) + " in " + a_name + ")";
  }
  return out;
}

// Two records of one run, as results files and shares hold them (NaN, written as null, equals NaN).
bool same_run(const SweepRun& a, const SweepRun& b) {
  auto same = [](const auto& x, const auto& y) {
    return x.size() == y.size() && std::equal(x.begin(), x.end(), y.begin(), [](double u, double v) {
             return u == v || (std::isnan(u) && std::isnan(v));
           });
  };
  return a.config.id == b.config.id && a.diverged == b.diverged && a.halted == b.halted &&
         a.diverged_epoch == b.diverged_epoch && same(a.train_loss, b.train_loss) && same(a.val_loss, b.val_loss) &&
         same(a.val_accuracy, b.val_accuracy) && same(a.lr, b.lr) && same(a.lr_curve, b.lr_curve) &&
         a.lr_curve_stride == b.lr_curve_stride;
}

// A device as a run names it ("cpu", "cuda"): it reaches the report and the terminal as written,
// and '+' joins several.
bool device_name_ok(const std::string& name) {
  return !name.empty() && std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == ':' || c == '-';
  });
}

// Per-epoch values that are either missing (null: NaN) or in [lo, hi].
bool in_range(const std::vector<double>& values, double lo, double hi) {
  return std::all_of(values.begin(), values.end(), [&](double v) { return std::isnan(v) || (v >= lo && v <= hi); });
}

}  // namespace

SweepResult read_sweep_results(const std::string& text, const std::string& name) {
  Reader rd{name};
  json doc = json::parse(text, nullptr, false);
  if (doc.is_discarded()) rd.fail("not valid JSON");
  if (!doc.is_object() || !doc.contains("format") || doc["format"] != kFormat) rd.fail("not an lrlab sweep results file");
  if (rd.integer(doc, "version") != kVersion) rd.fail("unsupported version");
  SweepResult r;
  r.source = name;
  const json& opts = rd.field(doc, "options");
  if (!opts.is_object()) rd.fail("field 'options' is not an object");
  r.options_json = opts.dump();
  r.data_description = rd.text(doc, "data");
  r.device = rd.text(doc, "device");
  {
    std::istringstream names(r.device);
    std::string name;
    bool ok = !r.device.empty() && r.device.back() != '+';
    while (ok && std::getline(names, name, '+')) ok = device_name_ok(name);
    if (!ok) rd.fail("field 'device' is '" + r.device + "', not a device's name (or names joined by '+')");
  }
  r.mode = rd.text(doc, "mode");
  r.epochs = rd.integer(doc, "epochs");
  r.steps_per_epoch = rd.integer(doc, "steps_per_epoch");
  r.grid_size = rd.integer(doc, "grid_size");
  const json& shard = rd.field(doc, "shard");
  r.shard_index = rd.integer(shard, "index");
  r.shard_count = rd.integer(shard, "count");
  r.seconds = rd.number(doc, "seconds");
  r.interrupted = rd.boolean(doc, "interrupted");
  // The reports find a run's grid entry, data order and rate range from its id and the options: a
  // file whose sizes or runs say otherwise is refused rather than misreported.
  const std::vector<SweepConfig> grid = stored_grid(rd, opts);
  const auto configs = static_cast<int64_t>(grid.size());
  if (r.grid_size != configs)
    rd.fail("field 'grid_size' is " + std::to_string(r.grid_size) + ", but the grid of its options has " +
            detail::counted(configs, "configuration"));
  if (r.epochs < 1) rd.fail("field 'epochs' is not positive");
  if (r.epochs != rd.integer(opts, "epochs"))
    rd.fail("field 'epochs' is " + std::to_string(r.epochs) + ", not the options' " +
            std::to_string(rd.integer(opts, "epochs")));
  if (r.steps_per_epoch < 1) rd.fail("field 'steps_per_epoch' is not positive");
  if (r.shard_count < 1 || r.shard_count > configs || r.shard_index < 0 || r.shard_index >= r.shard_count)
    rd.fail("field 'shard' is out of range (" + std::to_string(r.shard_index) + "/" + std::to_string(r.shard_count) +
            " of " + std::to_string(configs) + " configurations)");
  if (!(r.seconds >= 0) || !std::isfinite(r.seconds)) rd.fail("field 'seconds' is not a time");
  const json& runs = rd.field(doc, "runs");
  if (!runs.is_array()) rd.fail("field 'runs' is not an array");
  std::set<int64_t> ids;
  for (const json& j : runs) {
    SweepRun x;
    x.config.id = rd.integer(j, "id");
    if (x.config.id < 0 || x.config.id >= r.grid_size || !ids.insert(x.config.id).second)
      rd.fail("run id " + std::to_string(x.config.id) + " is out of range or repeated");
    const std::string run = "run " + std::to_string(x.config.id) + ": ";
    if (x.config.id % r.shard_count != r.shard_index)
      rd.fail(run + "not a configuration of shard " + std::to_string(r.shard_index) + "/" +
              std::to_string(r.shard_count));
    x.config.lr = rd.number(j, "lr");
    x.config.schedule = rd.text(j, "schedule");
    x.config.optimizer = rd.text(j, "optimizer");
    x.config.seed_index = rd.integer(j, "seed_index");
    const SweepConfig& want = grid[static_cast<size_t>(x.config.id)];
    auto differs = [&](const char* field, const std::string& got, const std::string& grid_has) {
      rd.fail(run + "field '" + field + "' is " + got + ", but the grid's configuration " +
              std::to_string(x.config.id) + " has " + grid_has);
    };
    if (x.config.lr != want.lr) differs("lr", shortest(x.config.lr), shortest(want.lr));
    if (x.config.schedule != want.schedule)
      differs("schedule", "'" + x.config.schedule + "'", "'" + want.schedule + "'");
    if (x.config.optimizer != want.optimizer)
      differs("optimizer", "'" + x.config.optimizer + "'", "'" + want.optimizer + "'");
    if (x.config.seed_index != want.seed_index)
      differs("seed_index", std::to_string(x.config.seed_index), std::to_string(want.seed_index));
    x.diverged = rd.boolean(j, "diverged");
    x.halted = rd.boolean(j, "halted");
    if (x.diverged && x.halted) rd.fail(run + "both diverged and halted");
    x.diverged_epoch = rd.integer(j, "diverged_epoch");
    x.train_loss = rd.array<double>(j, "train_loss");
    x.val_loss = rd.array<double>(j, "val_loss");
    x.val_accuracy = rd.array<double>(j, "val_accuracy");
    x.lr = rd.array<double>(j, "lr_per_epoch");
    if (x.val_loss.size() > static_cast<size_t>(r.epochs))
      rd.fail(run + "field 'val_loss' has " + detail::counted(static_cast<int64_t>(x.val_loss.size()), "epoch") +
              ", more than the sweep's " + std::to_string(r.epochs));
    for (const auto& [field, curve] : {std::pair<const char*, const std::vector<double>*>{"train_loss", &x.train_loss},
                                       {"val_accuracy", &x.val_accuracy}, {"lr_per_epoch", &x.lr}})
      if (curve->size() != x.val_loss.size())
        rd.fail(run + "curves of inconsistent lengths: field '" + field + "' has " +
                detail::counted(static_cast<int64_t>(curve->size()), "value") + ", 'val_loss' " +
                std::to_string(x.val_loss.size()));
    const auto epochs_run = static_cast<int64_t>(x.val_loss.size());
    if (x.diverged ? x.diverged_epoch < 1 || x.diverged_epoch > epochs_run : x.diverged_epoch != 0)
      rd.fail(run + "field 'diverged_epoch' is " + std::to_string(x.diverged_epoch) + ", out of range for a run of " +
              detail::counted(epochs_run, "epoch") + (x.diverged ? "" : " that did not diverge"));
    // Losses are never negative, accuracies are fractions; null (NaN) is a metric the run lacks.
    auto require_in_range = [&](const char* field, const std::vector<double>& values, double hi) {
      if (!in_range(values, 0, hi)) rd.fail(run + "field '" + field + "' holds a value out of range");
    };
    require_in_range("train_loss", x.train_loss, INFINITY);
    require_in_range("val_loss", x.val_loss, INFINITY);
    require_in_range("val_accuracy", x.val_accuracy, 1);
    if (!std::all_of(x.lr.begin(), x.lr.end(), [](double v) { return v >= 0 && std::isfinite(v); }))
      rd.fail(run + "field 'lr_per_epoch' holds a value that is not a rate");
    x.final_val_loss = rd.number(j, "final_val_loss");
    x.best_val_loss = rd.number(j, "best_val_loss");
    x.final_val_accuracy = rd.number(j, "final_val_accuracy");
    x.best_val_accuracy = rd.number(j, "best_val_accuracy");
    require_in_range("final_val_loss", {x.final_val_loss}, INFINITY);
    require_in_range("best_val_loss", {x.best_val_loss}, INFINITY);
    require_in_range("final_val_accuracy", {x.final_val_accuracy}, 1);
    require_in_range("best_val_accuracy", {x.best_val_accuracy}, 1);
    x.best_epoch = rd.integer(j, "best_epoch");
    if (x.best_epoch < 0 || x.best_epoch > epochs_run)
      rd.fail(run + "field 'best_epoch' is " + std::to_string(x.best_epoch) + ", out of range for a run of " +
              detail::counted(epochs_run, "epoch"));
    // The summary is derived from the curves, and the ranking reads the summary: a file whose two
    // disagree (edited by hand, or damaged) would be ranked by numbers its curves do not show.
    SweepRun derived = x;
    summarize_sweep_run(derived);
    auto agree = [&](const char* field, double stored, double from_curves) {
      if (stored == from_curves || (std::isnan(stored) && std::isnan(from_curves))) return;
      auto shown = [](double v) { return std::isnan(v) ? std::string("null") : shortest(v); };
      rd.fail(run + "field '" + field + "' is " + shown(stored) + ", but its curves give " + shown(from_curves));
    };
    agree("final_val_loss", x.final_val_loss, derived.final_val_loss);
    agree("best_val_loss", x.best_val_loss, derived.best_val_loss);
    agree("final_val_accuracy", x.final_val_accuracy, derived.final_val_accuracy);
    agree("best_val_accuracy", x.best_val_accuracy, derived.best_val_accuracy);
    agree("best_epoch", static_cast<double>(x.best_epoch), static_cast<double>(derived.best_epoch));
    x.lr_curve = rd.array<float>(j, "lr_curve");
    if (static_cast<int64_t>(x.lr_curve.size()) > kLrCurvePoints ||
        !std::all_of(x.lr_curve.begin(), x.lr_curve.end(), [](float v) { return v >= 0 && std::isfinite(v); }))
      rd.fail(run + "field 'lr_curve' has more than " + std::to_string(kLrCurvePoints) +
              " points or a value that is not a rate");
    x.lr_curve_stride = rd.integer(j, "lr_curve_stride");
    if (x.lr_curve_stride < 1)
      rd.fail(run + "field 'lr_curve_stride' is " + std::to_string(x.lr_curve_stride) + ", not positive");
    // Files written before runs named their device: the file's one device trained them all.
    if (j.contains("device")) {
      x.device = rd.text(j, "device");
      if (!device_name_ok(x.device)) rd.fail(run + "field 'device' is '" + x.device + "', not the name of a device");
    } else {
      if (r.device.find('+') != std::string::npos)
        rd.fail(run + "missing field 'device' (the file's runs trained on " + r.device + ")");
      x.device = r.device;
    }
    r.runs.push_back(std::move(x));
  }
  r.device = sweep_devices(r.runs, r.device);
  return r;
}

SweepResult read_sweep_results_file(const std::string& path) {
  return read_sweep_results(read_file(path, size_t(1) << 30), path);
}

std::string share_path(const std::string& dir, int64_t rank) {
  return path_join(dir, "rank-" + std::to_string(rank) + ".json");
}

std::string shard_path(const std::string& dir, int64_t index, int64_t count) {
  return path_join(dir, "shard-" + std::to_string(index) + "-of-" + std::to_string(count) + ".json");
}

namespace {

// `text` from `at` on is digits, then `rest` and nothing more.
bool digits_then(const std::string& text, size_t at, const std::string& rest) {
  const size_t end = std::min(text.find_first_not_of("0123456789", at), text.size());
  return end > at && text.compare(end, std::string::npos, rest) == 0;
}

bool rank_share_name(const std::string& name) { return name.rfind("rank-", 0) == 0 && digits_then(name, 5, ".json"); }

bool shard_share_name(const std::string& name) {
  if (name.rfind("shard-", 0) != 0) return false;
  const size_t of = name.find("-of-", 6);
  return of != std::string::npos && digits_then(name.substr(0, of), 6, "") && digits_then(name, of + 4, ".json");
}

}  // namespace

std::vector<std::string> merge_inputs_in(const std::string& dir) {
  std::vector<std::string> inputs;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name == "results.json" || rank_share_name(name) || shard_share_name(name))
      inputs.push_back(entry.path().string());
  }
  std::sort(inputs.begin(), inputs.end());
  return inputs;
}

void remove_stale_shares(const std::string& dir) {
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (!rank_share_name(name)) continue;
    try {
      read_sweep_results_file(entry.path().string());
    } catch (const Error&) {
      continue;
    }
    std::filesystem::remove(entry.path(), ec);
  }
}

std::string sweep_difference(const SweepResult& a, const SweepResult& b, const std::string& a_name) {
  const std::string options = options_difference(a.options_json, b.options_json, a_name);
  return !options.empty()           ? options
         : a.grid_size != b.grid_size ? "its grid size differs"
         : a.epochs != b.epochs       ? "its epochs differ"
                                      : "";
}

namespace {
// A run that names its device and trained on it: one a resume has queued but not yet trained
// names the device it will train on, which holds no numbers yet.
bool trained_on_device(const SweepRun& x) { return !x.device.empty() && !x.val_loss.empty(); }

// Names in order, joined by '+' ("cpu+cuda", "packed+streams").
std::string plus_joined(const std::set<std::string>& names) {
  std::string out;
  for (const std::string& n : names) out += (out.empty() ? "" : "+") + n;
  return out;
}
}  // namespace

void summarize_sweep_run(SweepRun& r) {
  r.final_val_loss = r.val_loss.empty() ? NAN : r.val_loss.back();
  r.final_val_accuracy = r.val_accuracy.empty() ? NAN : r.val_accuracy.back();
  r.best_val_loss = NAN;
  r.best_val_accuracy = NAN;
  r.best_epoch = 0;
  for (size_t e = 0; e < r.val_loss.size(); ++e) {
    if (std::isfinite(r.val_loss[e]) && !(r.val_loss[e] >= r.best_val_loss)) {
      r.best_val_loss = r.val_loss[e];
      r.best_epoch = static_cast<int64_t>(e) + 1;
    }
    if (e < r.val_accuracy.size() && std::isfinite(r.val_accuracy[e]) && !(r.val_accuracy[e] <= r.best_val_accuracy))
      r.best_val_accuracy = r.val_accuracy[e];
  }
}

std::string sweep_devices(const std::vector<SweepRun>& runs, const std::string& fallback) {
  std::set<std::string> names;
  for (const SweepRun& x : runs)
    if (trained_on_device(x)) names.insert(x.device);
  return names.empty() ? fallback : plus_joined(names);
}

std::string sweep_mixed_devices(const SweepResult& r) {
  std::map<std::string, int64_t> count;
  for (const SweepRun& x : r.runs)
    if (trained_on_device(x)) ++count[x.device];
  if (count.size() < 2) return "";
  std::string out;
  for (const auto& [name, n] : count)
    out += out.empty() ? detail::counted(n, "run") + " on " + name : ", " + std::to_string(n) + " on " + name;
  return out;
}

SweepResult merge_sweeps(const std::vector<SweepResult>& shards) {
  LRLAB_REQUIRE(!shards.empty(), "nothing to merge");
  auto input = [&](size_t i) {
    return shards[i].source.empty() ? "input " + std::to_string(i + 1) : "'" + shards[i].source + "'";
  };
  SweepResult out = shards[0];
  out.runs.clear();
  out.shard_index = 0;
  out.shard_count = 1;
  out.seconds = 0;
  out.interrupted = false;
  out.source.clear();
  std::map<int64_t, size_t> input_of, index_of;  // config id -> the input that holds it, its place in out.runs
  for (size_t i = 0; i < shards.size(); ++i) {
    const SweepResult& s = shards[i];
    const std::string differs = sweep_difference(shards[0], s, input(0));
    LRLAB_REQUIRE(differs.empty(), input(i), " belongs to a different sweep than ", input(0), ": ", differs);
    for (const SweepRun& r : s.runs) {
      const auto [at, added] = input_of.emplace(r.config.id, i);
      if (added) {
        index_of[r.config.id] = out.runs.size();
        out.runs.push_back(r);
        continue;
      }
      LRLAB_REQUIRE(at->second != i, "configuration ", r.config.id, " appears in ", input(i), " twice");
      // Two records of one configuration: a copy, or an interrupted run's and a later one's. The
      // record that trained further is kept; two that both finished must agree.
      SweepRun& kept = out.runs[index_of[r.config.id]];
      if (same_run(r, kept)) continue;
      const bool done_r = sweep_run_finished(r, s.epochs), done_kept = sweep_run_finished(kept, s.epochs);
      const bool devices_differ = r.device != kept.device && !r.device.empty() && !kept.device.empty();
      LRLAB_REQUIRE(!(done_r && done_kept), "configuration ", r.config.id, " finished in ", input(at->second),
                    devices_differ ? " (on " + kept.device + ")" : "", " and in ", input(i),
                    devices_differ ? " (on " + r.device + ")" : "", " with other results",
                    devices_differ ? " (devices round differently; keep the one wanted)"
                                   : " (one of them an earlier run's? keep the one wanted)");
      if (done_r || (!done_kept && r.val_loss.size() > kept.val_loss.size())) {
        kept = r;
        at->second = i;
      }
    }
    out.seconds = std::max(out.seconds, s.seconds);
  }
  // Interrupted where a configuration it holds still had epochs to train (a later record may have
  // finished what an interrupted input left).
  out.interrupted = std::any_of(out.runs.begin(), out.runs.end(),
                                [&](const SweepRun& r) { return !sweep_run_finished(r, out.epochs); });
  std::sort(out.runs.begin(), out.runs.end(),
            [](const SweepRun& a, const SweepRun& b) { return a.config.id < b.config.id; });
  out.device = sweep_devices(out.runs, shards[0].device);
  // Shards may have run in other modes (streams on one machine, packed on another).
  std::set<std::string> modes;
  for (const SweepResult& sh : shards) modes.insert(sh.mode);
  out.mode = plus_joined(modes);
  return out;
}

std::string sweep_curves_csv(const SweepResult& r) {
  std::string out = "id,optimizer,schedule,base_lr,seed_index,epoch,train_loss,val_loss,val_accuracy,lr\n";
  for (const SweepRun& x : r.runs)
    for (size_t e = 0; e < x.val_loss.size(); ++e) {
      out += strf("%lld,\"%s\",\"%s\",%.9g,%lld,%zu,%s,%s,%s,%s\n", static_cast<long long>(x.config.id),
                  x.config.optimizer.c_str(), x.config.schedule.c_str(), x.config.lr,
                  static_cast<long long>(x.config.seed_index), e + 1, csv_number(x.train_loss[e]).c_str(),
                  csv_number(x.val_loss[e]).c_str(), csv_number(x.val_accuracy[e]).c_str(),
                  csv_number(x.lr[e]).c_str());
    }
  return out;
}

namespace {

struct Aggregate {
  SweepConfig config;  // seed_index of the first seed
  std::vector<double> final_loss, final_acc;  // of the runs that trained to the end
  int diverged = 0;
  int halted = 0;  // by successive halving: their last losses are a rung's, not final
};

// The sweep's --seeds, from its options (shards and interrupted runs may lack some seeds' runs).
int64_t seeds_of(const SweepResult& r) {
  int64_t seeds = 1;
  for (const SweepRun& x : r.runs) seeds = std::max(seeds, x.config.seed_index + 1);
  const json opts = json::parse(r.options_json, nullptr, false);
  if (opts.is_object() && opts.contains("seeds") && opts["seeds"].is_number_integer())
    seeds = std::max<int64_t>(seeds, opts["seeds"].get<int64_t>());
  return seeds;
}

// A grid entry: its runs over the data orders. The grid repeats itself once per seed, so an entry
// is its id modulo the size of one repetition; two equal entries of the grid (a rate listed twice)
// stay apart. The specs and the rate are part of the key, so that results whose sizes disagree with
// their runs (built in code; files are checked on reading) still never mix two configurations.
using EntryKey = std::tuple<std::string, std::string, double, int64_t>;

// The size of one repetition of the grid.
int64_t entries_per_order(const SweepResult& r) { return std::max<int64_t>(1, r.grid_size / seeds_of(r)); }

EntryKey entry_of(const SweepRun& x, int64_t per_order) {
  return {x.config.optimizer, x.config.schedule, x.config.lr, x.config.id % per_order};
}

// The rates the grid tried: the sweep's --lr, all of them even where this is one shard. Empty where
// the options do not say (results built in code).
std::vector<double> grid_rates(const SweepResult& r) {
  std::vector<double> rates;
  const json opts = json::parse(r.options_json, nullptr, false);
  if (opts.is_object() && opts.contains("lrs") && opts["lrs"].is_array())
    for (const json& v : opts["lrs"])
      if (v.is_number()) rates.push_back(v.get<double>());
  return rates;
}


// The runs of each grid entry, for the spread.
std::vector<Aggregate> aggregate(const SweepResult& r) {
  const int64_t per_order = entries_per_order(r);
  std::map<EntryKey, Aggregate> m;
  std::vector<EntryKey> order;
  for (const SweepRun& x : r.runs) {
    const EntryKey key = entry_of(x, per_order);
    if (!m.count(key)) {
      order.push_back(key);
      m[key].config = x.config;
    }
    Aggregate& a = m[key];
    if (x.diverged) a.diverged += 1;
    else if (x.halted) a.halted += 1;
    else {
      a.final_loss.push_back(x.final_val_loss);
      a.final_acc.push_back(x.final_val_accuracy);
    }
  }
  std::vector<Aggregate> out;
  for (auto& k : order) out.push_back(m[k]);
  return out;
}

void mean_std(const std::vector<double>& v, double* mean, double* sd) {
  *mean = NAN;
  *sd = NAN;
  if (v.empty()) return;
  double s = 0;
  for (double x : v) s += x;
  *mean = s / v.size();
  double q = 0;
  for (double x : v) q += (x - *mean) * (x - *mean);
  *sd = v.size() > 1 ? std::sqrt(q / (v.size() - 1)) : 0;
}

}  // namespace

namespace {

// Whether `rival` is worse than `best` beyond the noise of the data orders: a one-sided paired
// t-test at the 5% level on their losses, order by order, over `orders` (two or more).
template <typename Entry>
bool clearly_worse(const Entry& rival, const Entry& best, const std::set<int64_t>& orders) {
  std::vector<double> d;
  for (int64_t o : orders) d.push_back(rival.finished.at(o).first - best.finished.at(o).first);
  double mean, sd;
  mean_std(d, &mean, &sd);
  if (!(mean > 0)) return false;
  if (sd == 0) return true;  // the same difference under every order
  return mean / (sd / std::sqrt(static_cast<double>(d.size()))) > student_t_95(static_cast<int64_t>(d.size()) - 1);
}

// The best entry of each optimizer, or of each optimizer and schedule. An entry is judged by its
// mean best loss over the data orders, as halving judges it, and one that diverged or was halted
// under any order is not recommended. Runs missing from a shard or never started in an interrupted
// sweep leave gaps: an optimizer's entries are then compared over the data orders all of them
// finished, or where they share none, over the order most of them finished (the others drop out),
// so that one lucky order never beats another entry's mean. Both answers use the same orders, so
// the best of an optimizer is the best of its schedules.
std::vector<SweepBest> best_in_groups(const SweepResult& r, bool per_schedule) {
  struct Entry {
    size_t first = 0;                                       // its first finished run
    std::map<int64_t, std::pair<double, double>> finished;  // data order -> best loss, best accuracy
    bool excluded = false;
  };
  // Grids of up to a million configurations: everything is found by key, not searched for.
  const int64_t per_order = entries_per_order(r);
  std::map<EntryKey, size_t> index;
  std::vector<Entry> entries;
  std::map<std::string, size_t> optimizer_index;
  std::vector<std::vector<size_t>> optimizer_entries;  // in the order of the command line
  std::map<std::pair<std::string, std::string>, std::pair<double, double>> run_rates;  // lowest, highest
  for (size_t i = 0; i < r.runs.size(); ++i) {
    const SweepRun& x = r.runs[i];
    const auto [it, fresh] = index.try_emplace(entry_of(x, per_order), entries.size());
    if (fresh) {
      entries.emplace_back();
      const auto [o, new_optimizer] = optimizer_index.try_emplace(x.config.optimizer, optimizer_entries.size());
      if (new_optimizer) optimizer_entries.emplace_back();
      optimizer_entries[o->second].push_back(it->second);
    }
    const auto [range, first_rate] =
        run_rates.try_emplace({x.config.optimizer, x.config.schedule}, x.config.lr, x.config.lr);
    if (!first_rate)
      range->second = {std::min(range->second.first, x.config.lr), std::max(range->second.second, x.config.lr)};
    Entry& e = entries[it->second];
    if (x.diverged || x.halted) {
      e.excluded = true;
    } else if (std::isfinite(x.best_val_loss)) {
      if (e.finished.empty()) e.first = i;
      e.finished[x.config.seed_index] = {x.best_val_loss, x.best_val_accuracy};
    }
  }
  const std::vector<double> tried = grid_rates(r);
  std::vector<SweepBest> out;
  for (const std::vector<size_t>& members : optimizer_entries) {
    std::vector<const Entry*> candidates;
    for (size_t k : members)
      if (!entries[k].excluded && !entries[k].finished.empty()) candidates.push_back(&entries[k]);
    if (candidates.empty()) continue;
    std::set<int64_t> common;
    for (const auto& order : candidates[0]->finished) common.insert(order.first);
    for (const Entry* e : candidates)
      for (auto it = common.begin(); it != common.end();) it = e->finished.count(*it) ? std::next(it) : common.erase(it);
    if (common.empty()) {
      std::map<int64_t, size_t> finished_by;
      for (const Entry* e : candidates)
        for (const auto& order : e->finished) ++finished_by[order.first];
      const int64_t most = std::max_element(finished_by.begin(), finished_by.end(), [](const auto& a, const auto& b) {
                             return a.second < b.second;
                           })->first;
      common = {most};
      candidates.erase(std::remove_if(candidates.begin(), candidates.end(),
                                      [most](const Entry* e) { return !e->finished.count(most); }),
                       candidates.end());
    }
    struct Scored {
      const Entry* entry;
      double loss, accuracy;  // means over the common orders
    };
    std::map<std::string, size_t> group_index;  // by schedule, or one group for the optimizer
    std::vector<std::vector<Scored>> groups;
    const auto n = static_cast<int64_t>(common.size());
    for (const Entry* e : candidates) {
      double loss = 0, accuracy = 0;
      for (int64_t order : common) loss += e->finished.at(order).first, accuracy += e->finished.at(order).second;
      const auto [g, new_group] =
          group_index.try_emplace(per_schedule ? r.runs[e->first].config.schedule : std::string(), groups.size());
      if (new_group) groups.emplace_back();
      groups[g->second].push_back({e, loss / static_cast<double>(n), accuracy / static_cast<double>(n)});
    }
    std::vector<SweepBest> best;
    for (const std::vector<Scored>& group : groups) {
      const Scored* top = &group[0];
      for (const Scored& s : group)
        if (s.loss < top->loss) top = &s;  // a tie keeps the earlier entry
      SweepBest b;
      b.run = top->entry->first;
      b.best_val_loss = top->loss;
      b.best_val_accuracy = top->accuracy;
      b.data_orders = n;
      for (const Scored& s : group)
        if (&s != top && n >= 2 && !clearly_worse(*s.entry, *top->entry, common))
          b.within_noise.push_back({s.entry->first, s.loss});
      std::stable_sort(b.within_noise.begin(), b.within_noise.end(),
                       [](const SweepRival& a, const SweepRival& c) { return a.best_val_loss < c.best_val_loss; });
      best.push_back(std::move(b));
    }
    for (SweepBest& b : best) {
      const SweepConfig& x = r.runs[b.run].config;
      double lo, hi;
      std::tie(lo, hi) = run_rates.at({x.optimizer, x.schedule});
      if (!tried.empty()) lo = *std::min_element(tried.begin(), tried.end()), hi = *std::max_element(tried.begin(), tried.end());
      b.edge = lo == hi ? 0 : x.lr >= hi ? 1 : x.lr <= lo ? -1 : 0;
      b.only_rate = lo == hi;
      out.push_back(b);
    }
  }
  return out;
}

}  // namespace

double student_t_95(int64_t dof) {
  LRLAB_REQUIRE(dof >= 1, "student_t_95: degrees of freedom must be at least 1 (got ", dof, ")");
  static const double table[] = {6.314, 2.920, 2.353, 2.132, 2.015, 1.943, 1.895, 1.860, 1.833, 1.812,
                                 1.796, 1.782, 1.771, 1.761, 1.753, 1.746, 1.740, 1.734, 1.729, 1.725,
                                 1.721, 1.717, 1.714, 1.711, 1.708, 1.706, 1.703, 1.701, 1.699, 1.697};
  if (dof <= 30) return table[dof - 1];
  // Beyond the table, the Cornish-Fisher expansion around the normal quantile (within 1e-4 at 31).
  const double z = 1.6448536, v = static_cast<double>(dof);
  return z + (z * z * z + z) / (4 * v) + (5 * std::pow(z, 5) + 16 * z * z * z + 3 * z) / (96 * v * v);
}

std::vector<SweepBest> best_per_optimizer(const SweepResult& r) { return best_in_groups(r, false); }

std::vector<SweepBest> best_per_schedule(const SweepResult& r) { return best_in_groups(r, true); }

namespace {

// What the best entry's figures are: one run's (at its best epoch), or a mean over data orders,
// saying how many of the sweep's orders it has where some are missing.
std::string data_orders_note(const SweepBest& b, const SweepResult& r, int64_t best_epoch) {
  const long long seeds = seeds_of(r), n = b.data_orders;
  if (seeds == 1) return strf("epoch %lld", static_cast<long long>(best_epoch));
  if (n == seeds) return strf("mean of %lld data orders", n);
  return n == 1 ? strf("1 of %lld data orders", seeds) : strf("mean of %lld of %lld data orders", n, seeds);
}

// "step(every=1ep,gamma=0.5) at 0.03 (0.3290), constant at 0.03 (0.3301) and 2 more": the entries
// the data orders do not tell apart from a best one.
std::string rivals_text(const SweepResult& r, const SweepBest& b) {
  std::string s;
  const size_t shown = std::min<size_t>(b.within_noise.size(), 4);
  for (size_t i = 0; i < shown; ++i) {
    const SweepConfig& c = r.runs[b.within_noise[i].run].config;
    s += strf("%s%s at %.3g (%s)", i ? ", " : "", c.schedule.c_str(), c.lr, cell("%.4f", b.within_noise[i].best_val_loss).c_str());
  }
  if (b.within_noise.size() > shown) s += strf(" and %zu more", b.within_noise.size() - shown);
  return s;
}

// Not "as good": each rival is tested on its own, against the best of many, so a listed entry is one
// the data orders do not show to be worse, and nothing more.
const char* const kRivalsLabel = "not told apart from it by the data orders";

// Where every answer rests on one data order, nothing separates real differences from its noise.
bool one_data_order(const std::vector<SweepBest>& best) {
  return std::all_of(best.begin(), best.end(), [](const SweepBest& b) { return b.data_orders < 2; });
}
const char* const kOneOrderNote =
    "with one data order the sweep cannot tell real differences from that order's noise; --seeds 3 or more can";

// The best rate of each schedule (rows) and optimizer (columns), in the order of the grid.
struct ScheduleMatrix {
  std::vector<std::string> schedules, optimizers;
  std::vector<SweepBest> best;
  std::vector<std::vector<int64_t>> best_at;  // index into best; -1: no run of that pair finished

  const SweepBest* at(size_t schedule, size_t optimizer) const {
    const int64_t i = best_at[schedule][optimizer];
    return i < 0 ? nullptr : &best[static_cast<size_t>(i)];
  }
};

ScheduleMatrix schedule_matrix(const SweepResult& r) {
  ScheduleMatrix m;
  std::map<std::string, size_t> row, column;
  for (const SweepRun& x : r.runs) {
    if (row.try_emplace(x.config.schedule, m.schedules.size()).second) m.schedules.push_back(x.config.schedule);
    if (column.try_emplace(x.config.optimizer, m.optimizers.size()).second) m.optimizers.push_back(x.config.optimizer);
  }
  m.best = best_per_schedule(r);
  m.best_at.assign(m.schedules.size(), std::vector<int64_t>(m.optimizers.size(), -1));
  for (size_t i = 0; i < m.best.size(); ++i) {
    const SweepConfig& c = r.runs[m.best[i].run].config;
    m.best_at[row.at(c.schedule)][column.at(c.optimizer)] = static_cast<int64_t>(i);
  }
  return m;
}

// "  0.003  0.3024", the rate marked '>' or '<' where it is the largest or smallest tried; "-" under
// the rates where every run of the pair diverged or was halted. A cell that is its optimizer's best
// ends in '*', one the data orders do not tell apart from that best in '~': which schedules are
// really worse is the question the matrix is read for.
std::string matrix_cell(const SweepResult& r, const SweepBest* b, const SweepBest* optimizer_best) {
  if (!b) return strf("%7s", "-");
  const char* mark = "";
  if (optimizer_best && optimizer_best->run == b->run)
    mark = " *";
  else if (optimizer_best && std::any_of(optimizer_best->within_noise.begin(), optimizer_best->within_noise.end(),
                                         [b](const SweepRival& v) { return v.run == b->run; }))
    mark = " ~";
  return strf("%7.3g%s %s%s", r.runs[b->run].config.lr, b->edge > 0 ? ">" : b->edge < 0 ? "<" : " ",
              cell("%.4f", b->best_val_loss).c_str(), mark);
}

// The best of each of the matrix's optimizer columns (nullptr where none finished).
std::vector<const SweepBest*> column_best(const ScheduleMatrix& m, const SweepResult& r,
                                          const std::vector<SweepBest>& best) {
  std::vector<const SweepBest*> out(m.optimizers.size(), nullptr);
  for (const SweepBest& b : best)
    for (size_t k = 0; k < m.optimizers.size(); ++k)
      if (r.runs[b.run].config.optimizer == m.optimizers[k]) out[k] = &b;
  return out;
}

}  // namespace

std::string sweep_table(const SweepResult& r) {
  std::ostringstream os;
  // Specs are as long as their keys: the columns grow to the longest, so the figures stay aligned.
  int wo = 22, ws = 28;
  for (const SweepRun& x : r.runs) {
    wo = std::max(wo, static_cast<int>(x.config.optimizer.size()));
    ws = std::max(ws, static_cast<int>(x.config.schedule.size()));
  }
  // With several data orders a configuration has a row per order: the order tells them apart.
  const bool orders = seeds_of(r) > 1;
  os << strf("%4s  %4s  %s%-*s %-*s %9s  %9s %9s  %8s %8s  %4s  %s\n", "rank", "id", orders ? "order  " : "", wo,
             "optimizer", ws, "schedule", "lr", "final val", "best val", "final acc", "best acc", "best", "status");
  std::vector<size_t> order = rank_runs(r.runs);
  for (size_t k = 0; k < order.size(); ++k) {
    const SweepRun& x = r.runs[order[k]];
    const std::string data_order = orders ? strf("%5lld  ", static_cast<long long>(x.config.seed_index)) : "";
    os << strf("%4zu  %4lld  %s%-*s %-*s %9.3g  %9s %9s  %8s %8s  %4s  %s\n", k + 1,
               static_cast<long long>(x.config.id), data_order.c_str(), wo, x.config.optimizer.c_str(), ws,
               x.config.schedule.c_str(),
               x.config.lr, cell("%.4f", x.final_val_loss).c_str(), cell("%.4f", x.best_val_loss).c_str(),
               cell("%.2f%%", 100 * x.final_val_accuracy).c_str(), cell("%.2f%%", 100 * x.best_val_accuracy).c_str(),
               x.best_epoch > 0 ? std::to_string(x.best_epoch).c_str() : "-", status(x, r).c_str());
  }
  // Several data orders: the spread of each configuration over them.
  if (seeds_of(r) > 1) {
    std::vector<Aggregate> agg = aggregate(r);
    os << "\nover data orders (mean +- std of the final validation metrics):\n";
    for (const Aggregate& a : agg) {
      if (a.final_loss.empty() && a.halted > 0) {
        os << strf("  %-*s %-*s %9.3g  halted by successive halving (%d run%s, %d diverged)\n", wo,
                   a.config.optimizer.c_str(), ws, a.config.schedule.c_str(), a.config.lr, a.halted,
                   a.halted == 1 ? "" : "s", a.diverged);
        continue;
      }
      double ml, sl, ma, sa;
      mean_std(a.final_loss, &ml, &sl);
      mean_std(a.final_acc, &ma, &sa);
      const std::string acc = std::isnan(ma) ? "" : "  acc " + cell("%.2f%%", 100 * ma) + " +- " + cell("%.2f%%", 100 * sa);
      os << strf("  %-*s %-*s %9.3g  loss %s +- %s%s  (%zu run%s, %d diverged)\n", wo,
                 a.config.optimizer.c_str(), ws, a.config.schedule.c_str(), a.config.lr, cell("%.4f", ml).c_str(),
                 cell("%.4f", sl).c_str(), acc.c_str(), a.final_loss.size(), a.final_loss.size() == 1 ? "" : "s",
                 a.diverged);
    }
  }
  const std::vector<SweepBest> best = best_per_optimizer(r);
  const ScheduleMatrix m = schedule_matrix(r);
  const bool one_order = one_data_order(best);
  if (!best.empty())
    os << "\nbest per optimizer (lowest best validation loss" << (partial_note(r).empty() ? "" : "; ")
       << partial_note(r) << "):\n";
  for (size_t k = 0, next = 0; !best.empty() && k < m.optimizers.size(); ++k) {
    if (next == best.size() || r.runs[best[next].run].config.optimizer != m.optimizers[k]) {
      os << strf("  %-*s no configuration finished: every one diverged or was halted\n", wo, m.optimizers[k].c_str());
      continue;
    }
    const SweepBest& b = best[next++];
    const SweepRun& x = r.runs[b.run];
    const std::string when = data_orders_note(b, r, x.best_epoch);
    // The best accuracy over the epochs, as in the ranked table: not necessarily the best-loss epoch's.
    const std::string acc =
        std::isnan(b.best_val_accuracy) ? "" : ", best acc " + cell("%.2f%%", 100 * b.best_val_accuracy);
    const std::string note = b.edge ? std::string("  <- ") + edge_note(b.edge) : "";
    os << strf("  %-*s %-*s %9.3g  val loss %s (%s)%s%s\n", wo, x.config.optimizer.c_str(), ws,
               x.config.schedule.c_str(), x.config.lr, cell("%.4f", b.best_val_loss).c_str(), when.c_str(), acc.c_str(),
               note.c_str());
    if (!b.within_noise.empty())
      os << strf("  %-*s %s: %s\n", wo, "", kRivalsLabel, rivals_text(r, b).c_str());
    else if (b.data_orders < 2 && !one_order)
      os << strf("  %-*s compared on one data order (the others missing): cannot tell which others are worse\n", wo, "");
  }
  if (!best.empty() && one_order) os << "  (" << kOneOrderNote << ")\n";
  if (m.schedules.size() > 1 && !best.empty()) {
    // Columns as wide as their widest cell: a regression's losses can run to many digits.
    std::vector<std::vector<std::string>> cells(m.schedules.size());
    std::vector<int> width;
    for (const std::string& opt : m.optimizers) width.push_back(static_cast<int>(opt.size()));
    const std::vector<const SweepBest*> top = column_best(m, r, best);
    for (size_t j = 0; j < m.schedules.size(); ++j)
      for (size_t k = 0; k < m.optimizers.size(); ++k) {
        cells[j].push_back(matrix_cell(r, m.at(j, k), top[k]));
        width[k] = std::max(width[k], static_cast<int>(cells[j][k].size()));
      }
    os << "\nbest rate per schedule (and its best validation loss; >: the largest rate tried, <: the smallest;\n"
          "-: every run diverged or was halted; *: the optimizer's best"
       << (one_order ? "" : ";\n~: a cell the data orders do not tell apart from that best") << "):\n";
    std::string header = strf("  %-*s", ws, "schedule");
    for (size_t k = 0; k < m.optimizers.size(); ++k) header += strf("   %-*s", width[k], m.optimizers[k].c_str());
    os << header.erase(header.find_last_not_of(' ') + 1) << "\n";
    for (size_t j = 0; j < m.schedules.size(); ++j) {
      std::string line = strf("  %-*s", ws, m.schedules[j].c_str());
      for (size_t k = 0; k < m.optimizers.size(); ++k) line += strf("   %-*s", width[k], cells[j][k].c_str());
      os << line.erase(line.find_last_not_of(' ') + 1) << "\n";
    }
  }
  return os.str();
}

std::string sweep_report_html(const SweepResult& r) {
  std::ostringstream h;
  h << "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>lrlab sweep</title>\n"
    << "<style>body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;font-size:13px}"
       "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}td.l{text-align:left}h2{margin-top:1.5em}</style>"
       "</head><body>\n";
  h << "<h1>lrlab sweep</h1>\n<p>" << xml_escape(r.data_description) << "; device " << xml_escape(r.device)
    << ", mode " << xml_escape(r.mode) << ", " << r.epochs << (r.epochs == 1 ? " epoch of " : " epochs of ")
    << r.steps_per_epoch << (r.steps_per_epoch == 1 ? " step, " : " steps, ") << r.runs.size()
    << (r.runs.size() == 1 ? " configuration" : " configurations")
    << (r.interrupted ? " (interrupted: partial results)" : "") << ".</p>\n";
  if (const std::string mixed = sweep_mixed_devices(r); !mixed.empty())
    h << "<p>These results join runs of more than one device (" << xml_escape(mixed)
      << "): their numbers differ in rounding as well as by configuration.</p>\n";
  const std::vector<SweepBest> best = best_per_optimizer(r);
  const ScheduleMatrix m = schedule_matrix(r);
  if (!best.empty()) {
    h << "<h2>Best per optimizer</h2>\n";
    if (!partial_note(r).empty()) h << "<p>Partial results: " << partial_note(r) << ".</p>\n";
    const bool rivals = !one_data_order(best);
    h << "<table><tr><th>optimizer</th><th>schedule</th><th>lr</th><th>best val loss</th><th>best acc</th>"
         "<th>from</th><th>note</th>"
      << (rivals ? std::string("<th>") + kRivalsLabel + "</th>" : "") << "</tr>\n";
    for (size_t k = 0, next = 0; k < m.optimizers.size(); ++k) {
      if (next == best.size() || r.runs[best[next].run].config.optimizer != m.optimizers[k]) {
        h << "<tr><td class=l>" << xml_escape(m.optimizers[k]) << "</td><td class=l colspan=" << (rivals ? 7 : 6)
          << ">no configuration "
          << "finished: every one diverged or was halted</td></tr>\n";
        continue;
      }
      const SweepBest& b = best[next++];
      const SweepRun& x = r.runs[b.run];
      h << "<tr><td class=l>" << xml_escape(x.config.optimizer) << "</td><td class=l>" << xml_escape(x.config.schedule)
        << "</td><td>" << strf("%.3g", x.config.lr) << "</td><td>" << cell("%.4f", b.best_val_loss) << "</td><td>"
        << cell("%.2f%%", 100 * b.best_val_accuracy) << "</td><td class=l>" << data_orders_note(b, r, x.best_epoch)
        << "</td><td class=l>" << edge_note(b.edge) << "</td>";
      if (rivals)
        h << "<td class=l>"
          << (b.data_orders < 2 ? "cannot tell: compared on one data order"
              : b.within_noise.empty() ? "none"
                                       : xml_escape(rivals_text(r, b)))
          << "</td>";
      h << "</tr>\n";
    }
    h << "</table>\n";
    if (!rivals) h << "<p>Note: " << kOneOrderNote << ".</p>\n";
  }
  if (m.schedules.size() > 1 && !best.empty()) {
    h << "<h2>Best rate per schedule</h2>\n<p>Each schedule at its own best rate, and the best validation loss "
         "there; &gt; marks the largest rate tried, &lt; the smallest, - a schedule under which every run "
         "diverged or was halted, * the optimizer's best"
      << (one_data_order(best) ? "" : ", ~ a cell the data orders do not tell apart from that best") << ".</p>\n"
      << "<table><tr><th>schedule</th>";
    for (const std::string& opt : m.optimizers) h << "<th>" << xml_escape(opt) << "</th>";
    h << "</tr>\n";
    const std::vector<const SweepBest*> top = column_best(m, r, best);
    for (size_t j = 0; j < m.schedules.size(); ++j) {
      h << "<tr><td class=l>" << xml_escape(m.schedules[j]) << "</td>";
      for (size_t k = 0; k < m.optimizers.size(); ++k)
        h << "<td>" << xml_escape(matrix_cell(r, m.at(j, k), top[k])) << "</td>";
      h << "</tr>\n";
    }
    h << "</table>\n";
  }
  const bool orders = seeds_of(r) > 1;
  h << "<h2>Ranking</h2>\n<table><tr><th>rank</th><th>id</th>" << (orders ? "<th>data order</th>" : "")
    << "<th>optimizer</th><th>schedule</th><th>lr</th><th>final val loss</th><th>best val loss</th><th>final acc</th>"
       "<th>best acc</th><th>best epoch</th><th>status</th></tr>\n";
  std::vector<size_t> order = rank_runs(r.runs);
  char buf[256];
  for (size_t k = 0; k < order.size(); ++k) {
    const SweepRun& x = r.runs[order[k]];
    std::snprintf(buf, sizeof buf, "<td>%.3g</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td>", x.config.lr,
                  cell("%.4f", x.final_val_loss).c_str(), cell("%.4f", x.best_val_loss).c_str(),
                  cell("%.2f%%", 100 * x.final_val_accuracy).c_str(), cell("%.2f%%", 100 * x.best_val_accuracy).c_str(),
                  x.best_epoch > 0 ? std::to_string(x.best_epoch).c_str() : "-");
    h << "<tr><td>" << k + 1 << "</td><td>" << x.config.id << "</td>"
      << (orders ? "<td>" + std::to_string(x.config.seed_index) + "</td>" : "") << "<td class=l>"
      << xml_escape(x.config.optimizer)
      << "</td><td class=l>" << xml_escape(x.config.schedule) << "</td>" << buf << "<td class=l>" << xml_escape(status(x, r))
      << "</td></tr>\n";
  }
  h << "</table>\n";

  const std::vector<std::string>& optimizers = m.optimizers;  // in the order of the grid
  const std::vector<std::string>& schedules = m.schedules;
  // Final loss against base rate: one panel per optimizer, one line per schedule.
  h << "<h2>Final validation loss against base rate</h2>\n";
  std::vector<Aggregate> agg = aggregate(r);
  for (const std::string& opt : optimizers) {
    std::vector<Series> series;
    std::vector<double> failed;  // rates where every run of some schedule diverged
    for (const std::string& sched : schedules) {
      Series s{sched, {}, {}};
      for (const Aggregate& a : agg)
        if (a.config.optimizer == opt && a.config.schedule == sched) {
          double mean, sd;
          mean_std(a.final_loss, &mean, &sd);
          s.x.push_back(a.config.lr);
          s.y.push_back(mean);
          if (a.final_loss.empty() && a.diverged > 0 &&
              std::find(failed.begin(), failed.end(), a.config.lr) == failed.end())
            failed.push_back(a.config.lr);
        }
      series.push_back(s);
    }
    // Such a rate has no loss to draw: a cross above the lines shows how far the grid went and where
    // it failed, which the lines alone would hide. Which schedules failed there is said below.
    if (!failed.empty())
      series.push_back({"every run of a schedule diverged", failed, std::vector<double>(failed.size(), INFINITY), Mark::cross,
                        false, "#555555"});
    PlotOptions po;
    po.title = opt;
    po.xlabel = "base learning rate";
    po.ylabel = "final validation loss";
    po.log_x = true;
    po.log_y = true;
    h << svg_line_plot(series, po) << "\n";
    // In words, with the schedules, and the rates where only some of the data orders diverged.
    std::string diverged;
    for (const std::string& sched : schedules) {
      std::string rates;
      for (const Aggregate& a : agg)
        if (a.config.optimizer == opt && a.config.schedule == sched && a.diverged > 0) {
          std::snprintf(buf, sizeof buf, "%s%.3g", rates.empty() ? "" : ", ", a.config.lr);
          rates += buf;
        }
      if (!rates.empty()) diverged += (diverged.empty() ? "" : "; ") + xml_escape(sched) + " at lr " + rates;
    }
    if (!diverged.empty()) h << "<p>" << xml_escape(opt) << " diverged: " << diverged << "</p>\n";
    int halted = 0;
    for (const Aggregate& a : agg) halted += a.config.optimizer == opt && a.final_loss.empty() && a.halted > 0;
    if (halted)
      h << "<p>" << xml_escape(opt) << ": " << halted << " configuration" << (halted > 1 ? "s" : "")
        << " halted by successive halving, with no final loss, not drawn.</p>\n";
  }
  // Validation loss curves, one panel per optimizer and schedule (first data order).
  h << "<h2>Validation loss per epoch</h2>\n";
  for (const std::string& opt : optimizers)
    for (const std::string& sched : schedules) {
      std::vector<Series> series;
      for (const SweepRun& x : r.runs) {
        if (x.config.optimizer != opt || x.config.schedule != sched || x.config.seed_index != 0) continue;
        std::snprintf(buf, sizeof buf, "lr=%.3g", x.config.lr);
        Series s{buf, {}, x.val_loss};
        for (size_t e = 0; e < x.val_loss.size(); ++e) s.x.push_back(static_cast<double>(e + 1));
        series.push_back(s);
      }
      PlotOptions po;
      po.title = opt + " / " + sched;
      po.xlabel = "epoch";
      po.ylabel = "validation loss";
      po.log_y = true;
      po.width = 540;
      po.height = 320;
      h << svg_line_plot(series, po) << "\n";
    }
  // The learning-rate curves each schedule produced (per step, at the first base rate).
  h << "<h2>Learning-rate curves</h2>\n";
  std::vector<Series> lr_series;
  for (const std::string& sched : schedules)
    for (const SweepRun& x : r.runs)
      if (x.config.schedule == sched && x.config.seed_index == 0) {
        Series s{strf("%s (lr=%.3g)", sched.c_str(), x.config.lr), {}, {}};
        for (size_t i = 0; i < x.lr_curve.size(); ++i) {
          s.x.push_back(static_cast<double>(i * x.lr_curve_stride) / std::max<int64_t>(1, r.steps_per_epoch));
          s.y.push_back(x.lr_curve[i]);
        }
        lr_series.push_back(s);
        break;
      }
  PlotOptions po;
  po.title = "learning rate per step";
  po.xlabel = "epoch";
  po.ylabel = "learning rate";
  po.log_y = true;
  h << svg_line_plot(lr_series, po) << "\n";
  h << "</body></html>\n";
  return h.str();
}

void write_sweep_outputs(const SweepResult& r, const std::string& dir) {
  make_writable_dir(dir);
  write_file_atomic(path_join(dir, "results.json"), sweep_results_json(r));
  write_file_atomic(path_join(dir, "curves.csv"), sweep_curves_csv(r));
  write_file_atomic(path_join(dir, "report.html"), sweep_report_html(r));
}

}  // namespace lrlab
