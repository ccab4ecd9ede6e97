// Learning-rate sweeps: a grid of base rates x schedules x optimizers x data orders, trained at
// once. Every configuration sees the same data split, and all configurations of one seed see the
// same data order and start from the same weights, so the comparison measures the schedule and the
// rate, not data noise.
//
// Modes: "packed" trains the configurations that share an optimizer and seed as K replicas of one
// engine, at most max_packed to an engine (one wide first-layer GEMM, strided-batched GEMMs, one
// fused optimizer launch with a table and rate per replica); "streams" trains each configuration on its own engine, concurrently (CUDA
// streams on the GPU, worker threads on the CPU); "sequential" trains them one after another.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "lrlab/error.hpp"
#include "lrlab/packing.hpp"
#include "lrlab/train.hpp"
#include "lrlab/train_engine.hpp"

namespace lrlab {

// "1e-4:1e-1:8" (8 rates, log-spaced, both ends included) or "1e-3,3e-3,0.01".
std::vector<double> parse_rates(const std::string& text);

struct SweepConfig {
  int64_t id = 0;          // position in the full grid: the same in every shard and rank
  double lr = 0;
  std::string schedule, optimizer;
  int64_t seed_index = 0;  // which data order (0 .. seeds-1)
};

struct SweepOptions {
  TrainOptions base;       // data, model, batch, epochs, seed, device (rates and specs come from the grid)
  std::vector<double> lrs;
  std::vector<std::string> schedules = {"constant"};
  std::vector<std::string> optimizers = {"adam()"};
  int64_t seeds = 1;
  // packed, streams, sequential, or auto: packed on the GPU (one launch serves K replicas), streams on
  // the CPU (packing cannot shrink the GEMMs' arithmetic there, and each stream's weights stay in
  // cache: 8 configurations of the Fashion-MNIST MLP in 4.9x the time of one, packed 5.5x).
  std::string mode = "auto";
  // Packed mode: configurations per engine (one optimizer launch); a larger group is split.
  int64_t max_packed = kMaxReplicas;
  double halving = 0;           // successive halving factor eta (> 1), 0: off
  int64_t workers = 0;          // concurrent lanes (CPU threads / GPU streams); 0: automatic
  double diverge_factor = 4;    // diverged: epoch train loss not finite, or above this multiple of its
                                // best and above the first epoch's
  int64_t shard_index = 0, shard_count = 1;  // this process trains configs with id % count == index
};

// The points of a run's sampled rate curve, at most.
constexpr int64_t kLrCurvePoints = 200;

struct SweepRun {
  SweepConfig config;
  std::vector<double> train_loss, val_loss, val_accuracy, lr;  // per epoch run
  bool diverged = false;
  bool halted = false;       // dropped by successive halving
  int64_t diverged_epoch = 0;
  // Summary (NaN when no epoch finished).
  double final_val_loss = 0, best_val_loss = 0, final_val_accuracy = 0, best_val_accuracy = 0;
  int64_t best_epoch = 0;
  std::vector<float> lr_curve;  // the rate per step, sampled (at most kLrCurvePoints)
  int64_t lr_curve_stride = 1;
  // The device that trained it ("cpu", "cuda"): a resumed or merged sweep may join runs of both,
  // whose numbers differ in rounding.
  std::string device;
};

struct SweepResult {
  std::vector<SweepRun> runs;   // ordered by config id
  int64_t engines = 0;          // engines run_sweep built at the start (not saved in results.json)
  std::string data_description;
  std::string mode;             // how it trained; a merge of shards in several modes joins them by '+'
  std::string device;           // its runs' devices, sorted and joined by '+' ("cpu", "cpu+cuda")
  int64_t epochs = 0, steps_per_epoch = 0, grid_size = 0;
  int64_t shard_index = 0, shard_count = 1;
  double seconds = 0;
  bool interrupted = false;
  std::string options_json;     // the sweep's options, for the report
  std::string source;           // the name read_sweep_results read it as, for merge's errors (not saved)
};

struct SweepObserver {
  // Once every check has passed and every engine is built, before the first epoch trains.
  std::function<void()> on_start;
  std::function<void(int64_t epoch, int64_t epochs, int64_t alive, int64_t total)> on_epoch;
  // After every epoch, the results so far (marked interrupted): what a crash would leave behind.
  std::function<void(const SweepResult& partial)> on_partial;
};

// A grid larger than this is refused (its bookkeeping alone would take gigabytes); shards split it.
constexpr double kMaxSweepConfigs = 1e6;

// The grid in id order: rates vary fastest, then schedules, optimizers and data orders. It checks
// only what needs no parsing (a rate, schedule and optimizer at least, --seeds from 1 to 1000, at
// most kMaxSweepConfigs). Inline: read_sweep_results rebuilds a file's grid with it, and the
// results fuzzer links that without the specs' parsers or the training code.
inline std::vector<SweepConfig> grid_configs(const SweepOptions& o) {
  LRLAB_REQUIRE(!o.lrs.empty() && !o.schedules.empty() && !o.optimizers.empty(),
                "empty grid: give at least one rate, schedule and optimizer");
  LRLAB_REQUIRE(o.seeds >= 1 && o.seeds <= 1000, "--seeds must be from 1 to 1000 (got ", o.seeds, ")");
  const double size = static_cast<double>(o.lrs.size()) * o.schedules.size() * o.optimizers.size() * o.seeds;
  LRLAB_REQUIRE(size <= kMaxSweepConfigs, "the grid has ", size, " configurations; at most ", kMaxSweepConfigs,
                " can be trained in one sweep (split it with --shard)");
  std::vector<SweepConfig> grid;
  for (int64_t seed = 0; seed < o.seeds; ++seed)
    for (const std::string& opt : o.optimizers)
      for (const std::string& sched : o.schedules)
        for (double lr : o.lrs) grid.push_back({static_cast<int64_t>(grid.size()), lr, sched, opt, seed});
  return grid;
}
// grid_configs, once every rate and spec is checked (parsed), so that a typo fails before training.
std::vector<SweepConfig> sweep_grid(const SweepOptions& options);
// Every check of the options alone (grid, mode, halving, shards), before data or devices: the same
// options give the same answer on every MPI rank. Returns the grid.
std::vector<SweepConfig> validate_sweep(const SweepOptions& options);

// The engine a sweep trains the runs of one (optimizer, data order) on, as yet without replicas:
// each run adds {rate, schedule, options.base.seed + seed_index}.
EngineConfig sweep_engine_config(const SweepOptions& options, const MlpConfig& model, const std::string& optimizer,
                                 int64_t seed_index, Device device);

// Throws lrlab::Error for bad options. `stop` (may be null) is polled between epochs: when it
// becomes true the sweep ends early and returns what it has, with `interrupted` set.
// `earlier` (may be empty) continues an interrupted sweep from what it left: results files of it
// (read_sweep_results), each of which must be of this sweep (sweep_difference, naming the file that
// is not). Runs of this shard that one of them finished (sweep_run_finished) are kept as they are,
// the others trained from the start. Successive halving, whose rungs rank every configuration
// together, cannot be resumed.
SweepResult run_sweep(const SweepOptions& options, const SweepObserver& observer = {},
                      const volatile int* stop = nullptr, const std::vector<SweepResult>& earlier = {});
// The same on data already loaded (with data_options(options.base, options.base.seed)).
SweepResult run_sweep_on(const SweepOptions& options, const DataSplits& data, const SweepObserver& observer = {},
                         const volatile int* stop = nullptr, const std::vector<SweepResult>& earlier = {});

// A run that needs no more training: it diverged, successive halving dropped it, or it trained
// every one of the sweep's epochs.
inline bool sweep_run_finished(const SweepRun& run, int64_t epochs) {
  return run.diverged || run.halted || static_cast<int64_t>(run.val_loss.size()) == epochs;
}

inline constexpr const char* kNoHalvingResume =
    "a successive-halving sweep (--halving) cannot be resumed: its rungs rank every configuration together";

// Whether a run diverged in the last epoch of `train_loss` (its per-epoch mean training losses):
// a non-finite training or validation loss; a validation loss (the model as the epoch left it) above
// `factor` times `initial_loss`, the untrained model's validation loss (NaN: unknown);
// or a training loss above `factor` times the best of the earlier epochs and above the first
// epoch's (a loss near zero may wobble by large factors harmlessly). The epoch's mean training loss
// is not held against the untrained model: early spikes that training recovers from (RMSprop's
// first steps) would count.
bool sweep_diverged(const std::vector<double>& train_loss, double initial_loss, double val_loss, double factor);

// Ranking: finished runs by best validation loss, then runs halted by halving, then diverged ones.
std::vector<size_t> rank_runs(const std::vector<SweepRun>& runs);

// The best grid entry of each optimizer, in the order the optimizers first appear: the lowest best
// validation loss, averaged over the data orders (--seeds) as halving averages it; an entry that
// diverged under any data order, or was halted, is left out. Where runs are missing (an interrupted
// sweep, a shard), all entries of an optimizer are compared over the same data orders. `edge` says
// where its rate lies among the rates the grid tried (the sweep's --lr): at the largest (+1) or the
// smallest (-1), the sweep cannot tell whether a rate beyond it would do better; 0: inside.
//
// `within_noise` lists the other entries of the group that the data orders do not tell apart from
// the best: compared order by order (each order is one draw of data order and initial weights,
// shared by every entry, so pairing removes what a draw does to all entries alike), their loss
// minus the best's is not above zero by a one-sided paired t-test at the 5% level, each entry
// tested on its own. Best first. It needs two data orders and is empty with one; with two the test
// has one degree of freedom and lists almost everything, so three or more (--seeds 3) are advised.
struct SweepRival {
  size_t run = 0;            // its first finished run
  double best_val_loss = 0;  // its mean over the same data orders
};
struct SweepBest {
  size_t run = 0;  // the entry's first finished run, an index into SweepResult::runs
  int edge = 0;
  double best_val_loss = 0, best_val_accuracy = 0;  // means over the data orders compared
  int64_t data_orders = 0;                           // how many
  bool only_rate = false;                            // the grid tried one rate (edge 0)
  std::vector<SweepRival> within_noise;
};

// The one-sided 95% quantile of Student's t distribution with `dof` degrees of freedom (>= 1).
double student_t_95(int64_t dof);
std::vector<SweepBest> best_per_optimizer(const SweepResult& r);
// The same for each optimizer and schedule (each schedule at its own best rate, the fair way to
// compare schedules), in the order of the grid, over the same data orders as best_per_optimizer.
std::vector<SweepBest> best_per_schedule(const SweepResult& r);

// results.json (round-trips through read_sweep_results), curves.csv and report.html.
std::string sweep_results_json(const SweepResult& r);
// Throws lrlab::Error, naming `name` and the field, for a file that is not one sweep's results as
// lrlab writes them: its grid is rebuilt from its stored options (grid_configs), and every run must be
// that grid's entry of its id, with curves and summaries in range.
SweepResult read_sweep_results(const std::string& json_text, const std::string& name);
// The same for a file, named by its path (at most 1 GiB).
SweepResult read_sweep_results_file(const std::string& path);
std::string sweep_curves_csv(const SweepResult& r);
std::string sweep_report_html(const SweepResult& r);
// The ranked table printed on the terminal, the spread over data orders (several seeds), and the
// best run per optimizer with a note where its rate is at an end of the grid.
std::string sweep_table(const SweepResult& r);
// Writes results.json, curves.csv and report.html into dir (created if missing), atomically.
void write_sweep_outputs(const SweepResult& r, const std::string& dir);
// Under mpirun each rank keeps its share of a sweep in DIR/rank-N.json, for `lrlab merge` to join
// after an interruption.
std::string share_path(const std::string& dir, int64_t rank);
// A sweep run as shard INDEX of COUNT (--shard, a Slurm job array's task) keeps its results in
// DIR/shard-INDEX-of-COUNT.json: the tasks of one array may all write to one folder.
std::string shard_path(const std::string& dir, int64_t index, int64_t count);
// What `lrlab merge DIR` and `lrlab sweep --resume` read from a folder, sorted by name: its
// results.json and its shares (shard-I-of-N.json, and rank-N.json that an interrupted mpirun left).
std::vector<std::string> merge_inputs_in(const std::string& dir);
// Removes the shares an earlier sweep left in `dir` (a run of more ranks leaves some that a later one
// never overwrites, and `merge OUT/rank-*.json` would join them): files named as shares that hold
// sweep results, and no other (a user's rank-notes.json stays). A missing folder has none.
void remove_stale_shares(const std::string& dir);

// Why `b` is not of the same sweep as `a`, or "" when it is: "its options differ: epochs 2 (3 in
// A_NAME)", "its grid size differs", "its epochs differ". Options that differ only in where the
// data was read from, both recording the data's fingerprint, are the same.
std::string sweep_difference(const SweepResult& a, const SweepResult& b, const std::string& a_name);

// Joins the shards of one sweep; throws lrlab::Error, naming the inputs by their source, for foreign
// shards and for a configuration two inputs hold with different results. One with the same results
// in two inputs (a merged results.json beside the shares it came from) is taken once.
SweepResult merge_sweeps(const std::vector<SweepResult>& shards);

// Sets a run's summary from its curves: the final and best (lowest loss, highest accuracy; NaN and
// infinities skipped) validation loss and accuracy, and the epoch of the best loss (0: none).
void summarize_sweep_run(SweepRun& run);

// The runs' devices, sorted and joined by '+' ("cpu+cuda"); `fallback` when no run names one.
std::string sweep_devices(const std::vector<SweepRun>& runs, const std::string& fallback);
// "" when every run trained on one device, else how many each trained ("3 runs on cpu, 5 on cuda"):
// the CLI warns with it and the report says it, for numbers from two devices differ in rounding.
std::string sweep_mixed_devices(const SweepResult& r);

}  // namespace lrlab
