// Sweep throughput: wall time to train K = 1, 8, 64 configurations (the same steps each) run
// sequentially, on concurrent engines (streams / worker threads) and packed as replicas, on the CPU
// and the GPU. Writes JSON; the figure of merit is time(K packed) / time(1), with engine setup
// (train_ratio_to_one: without it). Then, for each K, where one engine of K packed replicas spends
// its set-up ("setup" in the JSON): what a packed sweep's wall time holds besides its steps.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "bench_common.hpp"
#include "lrlab/blas_env.hpp"
#include "lrlab/cuda_check.hpp"
#include "lrlab/data.hpp"
#include "lrlab/device.hpp"
#include "lrlab/error.hpp"
#include "lrlab/io.hpp"
#include "lrlab/sweep.hpp"
#include "lrlab/train_engine.hpp"
#include "options.hpp"

using namespace lrlab;
using nlohmann::json;

namespace {

// One packed engine of K replicas, built as a sweep builds one, its phases timed one by one: the
// data's upload (GPU), construction, the untrained evaluation the sweep starts with, the first step
// (eager), the second (captured into a CUDA graph on the GPU, then launched), later steps (graph
// replays), destruction. Each phase ends with the device idle. A phase the device does not have is null.
json setup_breakdown(const SweepOptions& o, const DataSplits& data, int64_t K, int64_t steps) {
  const Device device = parse_device(o.base.device);
  const bool gpu = device == Device::CUDA;
  auto sync = [gpu] {
    if (gpu) LRLAB_CUDA_CHECK(cudaDeviceSynchronize());
  };
  EngineConfig ec = sweep_engine_config(o, model_for(o.base, data.train), o.optimizers.front(), 0, device);
  for (int64_t k = 0; k < K; ++k)
    ec.replicas.push_back({static_cast<float>(o.lrs[static_cast<size_t>(k)]), o.schedules.front(), o.base.seed});
  double t = bench::now_s();
  auto lap = [&t, &sync] {
    sync();
    const double now = bench::now_s(), dt = now - t;
    t = now;
    return dt;
  };
  std::shared_ptr<const DeviceData> shared;
  if (gpu) shared = upload_to_device(data);
  const json upload = gpu ? json(lap()) : json();
  auto engine = std::make_unique<TrainEngine>(ec, data, shared);
  const double construct = lap();
  (void)engine->evaluate(Split::Val);
  const double first_eval = lap();
  engine->begin_epoch(0);
  const int64_t n = std::min<int64_t>(steps, engine->steps_left_in_epoch());
  (void)engine->run(1);
  const double eager = lap();
  json second, replay;
  if (n >= 2) {
    (void)engine->run(1);
    second = lap();
  }
  const int64_t later = std::max<int64_t>(0, n - 2);
  if (later > 0) {
    (void)engine->run(later);
    replay = lap() / static_cast<double>(later);
  }
  engine.reset();
  shared.reset();
  const double destroy = lap();
  return {{"device", device_name(device)}, {"configs", K},       {"upload_seconds", upload},
          {"construct_seconds", construct}, {"first_eval_seconds", first_eval}, {"eager_step_seconds", eager},
          {"second_step_seconds", second},  {"later_step_seconds", replay},     {"later_steps", later},
          {"destroy_seconds", destroy}};
}

}  // namespace

int main(int argc, char** argv) {
  tune_blas_or_reexec(argv);
  CLI::App app{"bench_sweep: K configurations sequentially, on streams and packed"};
  std::string data = fashion_mnist_available() ? "fashion-mnist" : "blobs(classes=10,dim=784)";
  std::string hidden = "256,128", device = "all", out, ks = "1,8,64", modes = "sequential,streams,packed";
  int64_t steps = 40, batch = 128, repeat = 3;
  bool tf32 = false;
  app.add_option("--data", data, "data set")->capture_default_str();
  app.add_option("--hidden", hidden, "hidden widths")->capture_default_str();
  app.add_option("--steps", steps, "training steps per configuration")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 30));
  app.add_option("--batch", batch, "minibatch size")->capture_default_str()->check(CLI::Range(1, 1 << 20));
  app.add_option("--repeat", repeat, "timed runs of each case; the median is reported")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--ks", ks, "numbers of configurations")->capture_default_str();
  app.add_option("--modes", modes, "modes to time")->capture_default_str();
  app.add_option("--device", device, "cpu, cuda or all")
      ->check(CLI::IsMember({"cpu", "cuda", "all"}))
      ->capture_default_str();
  app.add_flag("--tf32", tf32, "let cuBLAS use TF32 tensor cores (GPU; as lrlab sweep --tf32)");
  app.add_option("--json", out, "write results here");
  if (const int status = bench::parse_options(app, argc, argv); status >= 0) return status;
  try {
    const std::vector<int64_t> hidden_widths = cli::parse_int_list(hidden, "--hidden");
    const std::vector<int64_t> counts = cli::parse_int_list(ks, "--ks");
    LRLAB_REQUIRE(!counts.empty(), "--ks: no number of configurations given");
    std::vector<std::string> mode_list;
    std::istringstream modes_in(modes);
    for (std::string m; std::getline(modes_in, m, ',');) {
      LRLAB_REQUIRE(m == "sequential" || m == "streams" || m == "packed", "--modes: '", m,
                    "' is not sequential, streams or packed (in '", modes, "')");
      mode_list.push_back(m);
    }
    LRLAB_REQUIRE(!mode_list.empty(), "--modes: no mode given");
    std::vector<std::string> devices;
    std::string why;
    if (device != "cuda") devices.push_back("cpu");
    if (device != "cpu") {
      if (cuda_available(&why)) devices.push_back("cuda");
      else if (device == "cuda") throw std::runtime_error(why);
      else std::fprintf(stderr, "GPU part skipped: %s\n", why.c_str());
    }
    // K rates around 1e-3: the same work for every configuration.
    auto options_for = [&](const std::string& dev, const std::string& mode, int64_t K) {
      SweepOptions o;
      o.base.data = data;
      o.base.hidden = hidden_widths;
      o.base.epochs = 1;
      o.base.batch = batch;
      o.base.val_fraction = 0.01;
      o.base.limit_train = steps * batch;
      o.base.device = dev;
      o.base.tf32 = tf32;
      o.base.synthetic_samples = steps * batch * 2;
      o.mode = mode;
      o.lrs.clear();
      for (int64_t k = 0; k < K; ++k) o.lrs.push_back(1e-3 * std::pow(1.05, static_cast<double>(k)));
      return o;
    };
    const SweepOptions first = options_for("cpu", "packed", 1);
    const DataSplits loaded = load_data(first.base.data, data_options(first.base, first.base.seed));
    json rows = json::array(), setups = json::array();
    for (const std::string& dev : devices) {
      double t1 = 0, tt1 = 0;
      for (const int64_t K : counts) {
        for (const std::string& mode : mode_list) {
          if (K == 1 && mode != "sequential") continue;  // one configuration is one configuration
          const SweepOptions o = options_for(dev, mode, K);
          // Engine setup (and on the GPU, the data's upload) counts, as in a user's sweep.
          // The training alone, from the moment every engine is built, is timed too: with few
          // steps on a GPU the setup (a cuBLAS handle and buffers per engine) can outweigh the
          // steps, and the two ratios then tell different stories. (Each engine's first eager step
          // and graph capture fall in the training part.)
          double train_start = 0;
          SweepObserver observer;
          observer.on_start = [&train_start] { train_start = bench::now_s(); };
          run_sweep_on(o, loaded);  // warm-up: kernels loaded, pages touched
          std::vector<double> times, train_times;
          for (int64_t i = 0; i < repeat; ++i) {
            const double t0 = bench::now_s();
            run_sweep_on(o, loaded, observer);
            const double t_end = bench::now_s();
            times.push_back(t_end - t0);
            train_times.push_back(t_end - train_start);
          }
          std::sort(times.begin(), times.end());
          std::sort(train_times.begin(), train_times.end());
          const double t = times[times.size() / 2], tt = train_times[train_times.size() / 2];
          if (K == 1) {
            t1 = t;
            tt1 = tt;
          }
          // Ratios only where one configuration was timed (--ks holds 1).
          const json ratio = t1 > 0 ? json(t / t1) : json(), train_ratio = tt1 > 0 ? json(tt / tt1) : json();
          rows.push_back({{"device", dev}, {"mode", mode}, {"configs", K}, {"steps_per_config", steps},
                          {"seconds", t}, {"seconds_min", times.front()}, {"seconds_max", times.back()},
                          {"ratio_to_one", ratio}, {"configs_per_second_x_steps", K * steps / t},
                          {"train_seconds", tt}, {"train_ratio_to_one", train_ratio}});
          auto times_one = [](const json& r) {
            if (r.is_null()) return std::string("     -");
            char buf[32];
            std::snprintf(buf, sizeof buf, "%6.3fx", r.get<double>());  // 3 decimals: a target is 3x
            return std::string(buf);
          };
          std::fprintf(stderr, "%-4s %-10s K=%-3lld %8.3f s   %s the time of one   training alone %8.3f s  %s\n",
                       dev.c_str(), mode.c_str(), static_cast<long long>(K), t, times_one(ratio).c_str(), tt,
                       times_one(train_ratio).c_str());
        }
      }
      for (const int64_t K : counts) {
        json r = setup_breakdown(options_for(dev, "packed", K), loaded, K, steps);
        std::string line;
        for (const auto& [key, label] : {std::pair{"upload_seconds", "upload"}, {"construct_seconds", "build"},
                                         {"first_eval_seconds", "evaluation"}, {"eager_step_seconds", "first step"},
                                         {"second_step_seconds", "second"}, {"later_step_seconds", "later, each"},
                                         {"destroy_seconds", "destroy"}}) {
          if (r[key].is_null()) continue;
          char buf[64];
          std::snprintf(buf, sizeof buf, "%s%s %.3f ms", line.empty() ? "" : ", ", label, 1e3 * r[key].get<double>());
          line += buf;
        }
        std::fprintf(stderr, "%-4s set-up     K=%-3lld %s\n", dev.c_str(), static_cast<long long>(K), line.c_str());
        setups.push_back(std::move(r));
      }
    }
    bench::write_report({{"benchmark", "bench_sweep"}, {"data", data}, {"hidden", hidden}, {"batch", batch},
                         {"steps", steps}, {"repeat", repeat}, {"tf32", tf32}, {"results", rows},
                         {"setup", setups}},
                        out);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
  return 0;
}
