// lrlab sweep: train a grid of rates x schedules x optimizers x data orders at once, and rank them.
// lrlab merge: join the results of shards (Slurm job arrays) into one report.
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <set>
#include <thread>

#include <cuda_runtime.h>

#include "command.hpp"
#include "lrlab/device.hpp"
#include "lrlab/error.hpp"
#include "lrlab/io.hpp"
#include "lrlab/sweep.hpp"
#include "mpi_session.hpp"
#include "options.hpp"
#include "sweep_progress.hpp"

namespace lrlab::cli {
namespace {

// Ctrl-C, and SIGTERM, which batch systems send at a job's time limit (Slurm, a grace period before
// SIGKILL) and `docker stop` and `kill` send by default: the sweep ends after the epoch in progress
// and writes what finished. The status is the shell's for the signal, 128 + its number.
volatile sig_atomic_t g_stop = 0;
volatile sig_atomic_t g_signal = 0;
extern "C" void on_interrupt(int sig) {
  g_stop = 1;
  g_signal = sig;
  std::signal(sig, SIG_DFL);  // a second one ends the process at once
}

// A shard's index or count as text gives it: false unless it is all digits; an error, naming
// `source`, where it is too large to hold.
bool shard_number(const std::string& text, const std::string& source, int64_t* value) {
  if (text.empty() || text.find_first_not_of("0123456789") != std::string::npos) return false;
  errno = 0;
  const long long v = std::strtoll(text.c_str(), nullptr, 10);
  LRLAB_REQUIRE(errno != ERANGE, source, ": ", text, " is out of range");
  *value = v;
  return true;
}

// "2/8" -> (2, 8).
void parse_shard(const std::string& text, int64_t* index, int64_t* count) {
  const size_t slash = text.find('/');
  LRLAB_REQUIRE(slash != std::string::npos && shard_number(text.substr(0, slash), "--shard", index) &&
                    shard_number(text.substr(slash + 1), "--shard", count) && *count >= 1,
                "--shard: malformed '", text, "' (expected INDEX/COUNT, e.g. 0/4)");
  LRLAB_REQUIRE(*index < *count, "--shard: index ", *index, " is out of range for ", *count, " shards (0 to ",
                *count - 1, ")");
}

// A Slurm job array's task: the errors name the variables, which the user set rather than --shard.
// The shard is the task's place among the array's indices, which run from SLURM_ARRAY_TASK_MIN in
// steps of SLURM_ARRAY_TASK_STEP (`--array=0-7`, `--array=1-8` and `--array=0-14:2` all make shards
// 0 to 7); from 0 in steps of 1 where those are unset. An array of one task is refused: it is most
// likely one task of a larger array submitted again (--array=3), whose place nothing here tells.
void slurm_shard(int64_t* index, int64_t* tasks) {
  auto read = [](const char* name, const char* expected, int64_t fallback) {
    const char* text = std::getenv(name);
    int64_t v = fallback;
    LRLAB_REQUIRE(!text || shard_number(text, name, &v), name, ": malformed '", text ? text : "", "' (expected ",
                  expected, ")");
    return v;
  };
  LRLAB_REQUIRE(std::getenv("SLURM_ARRAY_TASK_COUNT"), "SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not");
  const int64_t id = read("SLURM_ARRAY_TASK_ID", "the task's index in the job array", 0);
  *tasks = read("SLURM_ARRAY_TASK_COUNT", "the job array's number of tasks", 0);
  LRLAB_REQUIRE(*tasks >= 1, "SLURM_ARRAY_TASK_COUNT: malformed '0' (expected the job array's number of tasks)");
  LRLAB_REQUIRE(*tasks > 1, "SLURM_ARRAY_TASK_COUNT is 1: a job array of one task (task ", id,
                " of a larger array submitted again?) does not tell the shard; give --shard INDEX/COUNT");
  const int64_t min = read("SLURM_ARRAY_TASK_MIN", "the job array's lowest index", 0);
  const bool has_max = std::getenv("SLURM_ARRAY_TASK_MAX") != nullptr;
  const int64_t max = read("SLURM_ARRAY_TASK_MAX", "the job array's highest index", 0);
  const int64_t spread = max - min;
  const int64_t step = read("SLURM_ARRAY_TASK_STEP", "the job array's index step, at least 1", 1);
  LRLAB_REQUIRE(step >= 1, "SLURM_ARRAY_TASK_STEP: malformed '0' (expected the job array's index step, at least 1)");
  const bool even = !has_max || (spread >= 0 && spread % step == 0 && spread / step == *tasks - 1);
  LRLAB_REQUIRE(even, "the job array's ", *tasks, " indices from SLURM_ARRAY_TASK_MIN ", min,
                " to SLURM_ARRAY_TASK_MAX ", max, " are not ", step, " apart: number its tasks as a range (--array=0-",
                *tasks - 1, "), or give each task its --shard INDEX/COUNT");
  LRLAB_REQUIRE(id >= min && (id - min) % step == 0, "SLURM_ARRAY_TASK_ID ", id,
                " is not an index of a job array from SLURM_ARRAY_TASK_MIN ", min, " in steps of ", step);
  *index = (id - min) / step;
  LRLAB_REQUIRE(*index < *tasks, "SLURM_ARRAY_TASK_ID ", id, " is out of range for SLURM_ARRAY_TASK_COUNT ", *tasks,
                " (task ", *index, " of an array from index ", min, " in steps of ", step, ")");
}

struct SweepArgs {
  SweepOptions o;
  std::string hidden = "256,128";
  std::vector<std::string> lrs = {"1e-4:1e-1:4"};
  std::string shard, out;
  CLI::Option* shard_option = nullptr;
  bool resume = false;
  bool quiet = false;
};

// Runs of two devices differ in rounding: a resume or merge that joins them says so.
void warn_mixed_devices(const SweepResult& r) {
  const std::string mixed = sweep_mixed_devices(r);
  if (!mixed.empty())
    std::fprintf(stderr, "warning: these results join runs of more than one device (%s): their numbers differ "
                 "in rounding as well as by configuration\n", mixed.c_str());
}

// Thrown on a rank whose peers failed before training: rank 0 has said why.
struct PeerFailed {};

int run_sweep_command(SweepArgs& a) {
  MpiSession mpi;
  SweepOptions& o = a.o;
  // Under mpirun, every rank meets the others once before training (MpiSession::agree): ranks that
  // failed their checks or set-up (options, data, device, --out) say so there, rank 0 reports it
  // once and every rank ends with status 2, no MPI abort. A failure after that ends all ranks.
  bool started = false;
  std::string gpu;  // this rank's GPU, "" on the CPU
  try {
    o.base.hidden = parse_int_list(a.hidden, "--hidden");
    o.lrs.clear();
    for (const std::string& t : a.lrs)
      for (double v : parse_rates(t)) o.lrs.push_back(v);
    if (a.shard_option->count() > 0) {
      parse_shard(a.shard, &o.shard_index, &o.shard_count);
    } else if (std::getenv("SLURM_ARRAY_TASK_ID")) {
      slurm_shard(&o.shard_index, &o.shard_count);
    }
    if (mpi.active()) {
      LRLAB_REQUIRE(a.shard_option->count() == 0, "give either --shard or mpirun ranks, not both");
      LRLAB_REQUIRE(o.shard_count == 1, "SLURM_ARRAY_TASK_ID is set (a Slurm job array) and mpirun started ",
                    mpi.size(), " ranks: split the grid one way, not both (unset SLURM_ARRAY_TASK_ID)");
      o.shard_index = mpi.rank();
      o.shard_count = mpi.size();
      int gpus = 0;
      if (o.base.device != "cpu" && cudaGetDeviceCount(&gpus) == cudaSuccess && gpus > 0) {
        use_gpu(mpi.local_rank() % gpus);
        gpu = gpu_uuid(current_gpu());
      } else {
        cudaGetLastError();
        // The sweep's workers share this thread's OpenMP budget (engine_workers.hpp).
        omp_set_num_threads(cpu_threads_per_rank(omp_get_max_threads(),
                                                 static_cast<int>(std::thread::hardware_concurrency()),
                                                 mpi.local_size()));
      }
    }
    validate_sweep(o);
    // --resume: the results an earlier run of this sweep left in --out, read by every rank before
    // anything there changes (an MPI run then keeps the shares an earlier one left until its end).
    std::vector<SweepResult> earlier;
    std::vector<std::string> resumed_files;
    if (a.resume) {
      LRLAB_REQUIRE(!a.out.empty(), "--resume continues the sweep whose results are in --out: give --out");
      LRLAB_REQUIRE(o.halving == 0, kNoHalvingResume);
      std::error_code ec;
      for (const std::string& path : std::filesystem::is_directory(a.out, ec) ? merge_inputs_in(a.out)
                                                                              : std::vector<std::string>{}) {
        const bool share = std::filesystem::path(path).filename() != "results.json";
        try {
          earlier.push_back(read_sweep_results_file(path));
          resumed_files.push_back(path);
        } catch (const Error& e) {
          // A file named as a share that holds no sweep results is not one (a sweep leaves it there).
          if (!share) throw;
          if (mpi.rank() == 0)
            std::fprintf(stderr, "warning: --resume: '%s' is left out: %s\n", path.c_str(), e.what());
        }
      }
    }
    // Said once the earlier results are known to be this sweep's (run_sweep has checked them).
    auto say_resumed = [&] {
      if (!a.resume || mpi.rank() != 0) return;
      if (earlier.empty()) {
        std::fprintf(stderr, "note: --resume: '%s' holds no results of an earlier run; training every configuration\n",
                     a.out.c_str());
        return;
      }
      std::set<int64_t> done;  // of this process's share, or of the whole grid under mpirun
      for (const SweepResult& e : earlier)
        for (const SweepRun& r : e.runs)
          if (sweep_run_finished(r, o.base.epochs) && (mpi.active() || r.config.id % o.shard_count == o.shard_index))
            done.insert(r.config.id);
      const int64_t grid = earlier[0].grid_size;
      const int64_t share = mpi.active() ? grid : (grid - o.shard_index + o.shard_count - 1) / o.shard_count;
      const auto n = static_cast<int64_t>(done.size());
      if (n == share)
        std::fprintf(stderr, "resuming '%s': all %lld configurations finished there\n", a.out.c_str(),
                     static_cast<long long>(share));
      else
        std::fprintf(stderr, "resuming '%s': %lld of %lld configurations finished there; training the other %lld\n",
                     a.out.c_str(), static_cast<long long>(n), static_cast<long long>(share),
                     static_cast<long long>(share - n));
    };
    const bool tty = isatty(STDERR_FILENO) && !a.quiet && mpi.rank() == 0;
    SweepObserver obs;
    std::chrono::steady_clock::time_point t_start;
    int progress_width = 0;
    obs.on_start = [&] {
      started = true;
      t_start = std::chrono::steady_clock::now();
      if (mpi.active() && !mpi.agree("")) throw PeerFailed{};
      say_resumed();
      if (mpi.active()) {
        // Every rank has its engines built: each reaches this collective.
        const std::vector<std::string> gpus = mpi.gather(gpu);
        const std::string shared = mpi.rank() == 0 ? shared_gpu_warning(gpus) : "";
        if (!shared.empty()) std::fprintf(stderr, "warning: %s\n", shared.c_str());
      }
    };
    obs.on_epoch = [&](int64_t e, int64_t E, int64_t alive, int64_t total) {
      if (a.quiet || mpi.rank() != 0) return;
      const std::string share = mpi.active() ? " on rank 0 (of " + std::to_string(mpi.size()) + " ranks)" : "";
      const double spent = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
      char line[256];
      std::snprintf(line, sizeof line, "  epoch %lld/%lld, %lld of %lld configuration%s training%s%s",
                    static_cast<long long>(e), static_cast<long long>(E), static_cast<long long>(alive),
                    static_cast<long long>(total), total == 1 ? "" : "s", share.c_str(),
                    sweep_progress_timing(e, E, alive, spent).c_str());
      // On a terminal the line is rewritten in place: blanks cover what a longer line left.
      const int len = static_cast<int>(std::strlen(line));
      if (tty) std::fprintf(stderr, "\r%s%*s", line, std::max(0, progress_width - len), "");
      else std::fprintf(stderr, "%s\n", line);
      progress_width = std::max(progress_width, len);
    };
    // What finished survives an interruption. One process rewrites its outputs after every epoch.
    // Under mpirun, which answers Ctrl-C by ending every rank within a second, each rank keeps its own
    // share up to date instead, for `lrlab merge` to join; rank 0 removes them once it has written
    // the joined results, and before training those an earlier sweep left in the folder. A run
    // without mpirun writes no shares, and leaves those in the folder as they are.
    auto rank_file = [&](int rank) { return share_path(a.out, rank); };
    if (!a.out.empty()) {
      // Before any training: a folder that cannot be written would lose the whole sweep at its end.
      make_writable_dir(a.out);
      if (mpi.active() && mpi.rank() == 0 && !a.resume) remove_stale_shares(a.out);
    }
    // A shard without mpirun (--shard, a Slurm job array's task) writes only its share, named by
    // the shard: an array's tasks may share one folder, which `lrlab merge DIR` then joins.
    const bool shard_alone = !mpi.active() && o.shard_count > 1;
    const std::string shard_file = shard_alone && !a.out.empty() ? shard_path(a.out, o.shard_index, o.shard_count) : "";
    if (!a.out.empty() && !mpi.active())
      obs.on_partial = [&](const SweepResult& partial) {
        if (shard_alone) write_file_atomic(shard_file, sweep_results_json(partial));
        else write_sweep_outputs(partial, a.out);
      };
    if (!a.out.empty() && mpi.active())
      obs.on_partial = [&](const SweepResult& partial) {
        write_file_atomic(rank_file(mpi.rank()), sweep_results_json(partial));
      };
    std::signal(SIGINT, on_interrupt);
    std::signal(SIGTERM, on_interrupt);
    SweepResult mine = run_sweep(o, obs, &g_stop, earlier);
    if (tty) std::fprintf(stderr, "\n");
    // A rank's last epoch reaches its share before the ranks meet: mpirun may end them all while
    // rank 0 joins the results (on_partial writes every epoch but the last).
    if (!a.out.empty() && mpi.active()) write_file_atomic(rank_file(mpi.rank()), sweep_results_json(mine));
    // Rank 0's progress is its own share's: without this line a rank 0 done first (or with nothing
    // left to resume) would sit silent while the others train.
    if (mpi.active() && mpi.rank() == 0 && !a.quiet && !mine.interrupted) {
      const std::string others = mpi.size() == 2 ? "rank" : std::to_string(mpi.size() - 1) + " ranks";
      std::fprintf(stderr, "rank 0 has finished its share; waiting for the other %s\n", others.c_str());
    }
    std::vector<std::string> parts = mpi.gather(sweep_results_json(mine));
    if (mpi.rank() != 0) return kExitOk;
    SweepResult all = mine;
    if (mpi.active()) {
      std::vector<SweepResult> shards;
      for (size_t i = 0; i < parts.size(); ++i) shards.push_back(read_sweep_results(parts[i], "rank " + std::to_string(i)));
      all = merge_sweeps(shards);
      all.mode = mine.mode;
    }
    warn_mixed_devices(all);
    std::printf("lrlab sweep: %s; %zu configuration%s (%s, %s), %lld epoch%s, %.1f s%s\n",
                all.data_description.c_str(), all.runs.size(), all.runs.size() == 1 ? "" : "s", all.mode.c_str(),
                all.device.c_str(), static_cast<long long>(all.epochs), all.epochs == 1 ? "" : "s", all.seconds,
                all.interrupted ? " -- interrupted, partial results" : "");
    std::fputs(sweep_table(all).c_str(), stdout);
    if (!a.out.empty() && shard_alone) {
      write_file_atomic(shard_file, sweep_results_json(all));
      std::printf("shard %lld/%lld: %s (when every shard is done: lrlab merge %s --out %s)\n",
                  static_cast<long long>(o.shard_index), static_cast<long long>(o.shard_count), shard_file.c_str(),
                  a.out.c_str(), a.out.c_str());
    } else if (!a.out.empty()) {
      write_sweep_outputs(all, a.out);
      if (mpi.active())
        for (int rank = 0; rank < mpi.size(); ++rank) std::remove(rank_file(rank).c_str());
      // The shares it resumed from are in results.json now, their unfinished runs trained anew: left
      // there, they would contradict it.
      for (const std::string& f : resumed_files)
        if (std::filesystem::path(f).filename() != "results.json") std::remove(f.c_str());
      std::printf("report: %s\n", path_join(a.out, "report.html").c_str());
    }
    return all.interrupted ? 128 + (g_signal ? g_signal : SIGINT) : kExitOk;
  } catch (const PeerFailed&) {
    return kExitBadInput;
  } catch (const std::exception& e) {
    if (!mpi.active()) throw;
    if (!started) {
      mpi.agree(e.what());
      return kExitBadInput;
    }
    std::fprintf(stderr, "error: rank %d: %s\n", mpi.rank(), e.what());
    mpi.abort(kExitBadInput);
  }
}

Register sweep_reg("sweep", "train a grid of learning rates, schedules and optimizers at once and rank them", [](CLI::App& sub) {
  auto a = std::make_shared<SweepArgs>();
  SweepOptions& o = a->o;
  o.base.epochs = 10;
  add_run_options(sub, o.base, a->hidden, "seed of the data split, first data order and initial weights");
  sub.add_option("--lr", a->lrs, "base rates: a list (1e-3 3e-3, or 1e-3,3e-3) or a log range START:END:COUNT")
      ->expected(1, -1)
      ->capture_default_str();
  sub.add_option("--schedule", o.schedules, "one or more schedule specs")->expected(1, -1)->capture_default_str();
  sub.add_option("--optimizer", o.optimizers, "one or more optimizer specs")->expected(1, -1)->capture_default_str();
  sub.add_option("--seeds", o.seeds, "data orders to repeat every configuration with (reports the spread)")
      ->capture_default_str();
  sub.add_option("--epochs", o.base.epochs, "epochs")->capture_default_str();
  sub.add_option("--mode", o.mode, "auto (packed on the GPU, streams on the CPU), packed, streams or sequential")
      ->check(CLI::IsMember({"auto", "packed", "streams", "sequential"}))
      ->capture_default_str();
  sub.add_option("--halving", o.halving, "successive halving: keep the best 1/ETA at each rung (ETA > 1)");
  sub.add_option("--workers", o.workers, "concurrent engines (CPU threads or GPU streams); 0: automatic")
      ->capture_default_str();
  sub.add_option("--out", a->out, "write results.json, curves.csv and report.html here (a shard: its shard-I-of-N.json)");
  a->shard_option = sub.add_option("--shard", a->shard, "train only shard INDEX/COUNT of the grid (default from SLURM_ARRAY_TASK_ID/COUNT)");
  sub.add_flag("--resume", a->resume, "continue the sweep whose results are in --out: keep its finished configurations, train the others");
  sub.add_flag("--quiet", a->quiet, "no progress lines");
  return [a] { return run_sweep_command(*a); };
});

Register merge_reg("merge", "join the results of sweep shards into one report", [](CLI::App& sub) {
  auto inputs = std::make_shared<std::vector<std::string>>();
  auto out = std::make_shared<std::string>();
  sub.add_option("inputs", *inputs, "sweep output folders (each one's shard-I-of-N.json and rank-N.json files, else its results.json), or results files")
      ->required()
      ->expected(1, -1);
  sub.add_option("--out", *out, "write the merged results.json, curves.csv and report.html here")->required();
  return [inputs, out] {
    std::vector<SweepResult> shards;
    for (const std::string& in : *inputs) {
      std::error_code ec;
      const bool file = in.size() >= 5 && in.compare(in.size() - 5, 5, ".json") == 0;
      const std::vector<std::string> paths = file                                   ? std::vector<std::string>{in}
                                             : std::filesystem::is_directory(in, ec) ? merge_inputs_in(in)
                                                                                     : std::vector<std::string>{in + "/results.json"};
      LRLAB_REQUIRE(!paths.empty(), "'", in, "' holds no sweep results (results.json, shard-I-of-N.json or rank-N.json)");
      for (const std::string& path : paths)
        shards.push_back(read_sweep_results_file(path));
    }
    SweepResult all = merge_sweeps(shards);
    LRLAB_REQUIRE(!all.runs.empty(), "the inputs hold no configuration results");
    make_writable_dir(*out);  // before the table: an error is the output's one line
    std::printf("lrlab merge: %zu results file%s, %zu of %lld configuration%s\n", shards.size(),
                shards.size() == 1 ? "" : "s", all.runs.size(), static_cast<long long>(all.grid_size),
                all.grid_size == 1 ? "" : "s");
    const int64_t missing = all.grid_size - static_cast<int64_t>(all.runs.size());
    if (missing > 0)
      std::fprintf(stderr, "warning: %lld of the sweep's %lld configurations %s missing (a shard not given?)\n",
                   static_cast<long long>(missing), static_cast<long long>(all.grid_size),
                   missing == 1 ? "is" : "are");
    warn_mixed_devices(all);
    std::fputs(sweep_table(all).c_str(), stdout);
    write_sweep_outputs(all, *out);
    std::printf("report: %s\n", path_join(*out, "report.html").c_str());
    return kExitOk;
  };
});

}  // namespace
}  // namespace lrlab::cli
