// The benchmark binaries and the replay tools (optim_replay and plateau_replay, the lrlab side of
// compare_updates.py and compare_plateau.py), run small on the CPU: the JSON fields that
// BENCHMARKS.md, the compare scripts and benchmarks/gpu_check.sh read, the ratios and numbers they
// report, and their refusal of bad options. A GPU machine's one timed run depends on these binaries
// working as documented; here is where a change that breaks them shows first.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "cli_util.hpp"

using lrlab::testing::run_program;
using lrlab::testing::slurp;
using lrlab::testing::temp_path;
using nlohmann::json;

namespace {

json run_for_json(const std::string& program, const std::string& args) {
  const std::string path = temp_path("bench.json");
  const auto r = run_program(program, args + " --json " + path);
  EXPECT_EQ(r.status, 0) << r.err;
  const std::string text = slurp(path);
  std::remove(path.c_str());
  return json::parse(text.empty() ? "null" : text);
}

constexpr const char* kSmallSweep = "--device cpu --data spirals --hidden 8 --steps 4 --batch 16 --repeat 2";

}  // namespace

TEST(BenchSweepCli, TimesEveryModeWithAndWithoutEngineSetup) {
  const json doc = run_for_json(LRLAB_BENCH_SWEEP_PATH, std::string(kSmallSweep) + " --ks 1,3");
  ASSERT_TRUE(doc.is_object());
  EXPECT_EQ(doc["benchmark"], "bench_sweep");
  EXPECT_EQ(doc["steps"], 4);
  EXPECT_TRUE(doc["date"].is_string() && doc["cpu"].is_string());
  const json& rows = doc["results"];
  ASSERT_EQ(rows.size(), 4u) << rows.dump(1);  // K=1 sequential; K=3 sequential, streams, packed
  std::set<std::string> modes_of_three;
  double one = 0, one_train = 0;
  for (const json& r : rows) {
    SCOPED_TRACE(r.dump());
    EXPECT_EQ(r["device"], "cpu");
    EXPECT_EQ(r["steps_per_config"], 4);
    const double s = r["seconds"], train = r["train_seconds"];
    EXPECT_GT(train, 0.0);
    // The training part lies inside the whole run's time.
    EXPECT_LE(train, s);
    EXPECT_LE(r["seconds_min"].get<double>(), s);
    EXPECT_GE(r["seconds_max"].get<double>(), s);
    EXPECT_DOUBLE_EQ(r["configs_per_second_x_steps"].get<double>(), r["configs"].get<double>() * 4 / s);
    if (r["configs"] == 1) {
      EXPECT_EQ(r["mode"], "sequential");
      one = s;
      one_train = train;
    } else {
      EXPECT_EQ(r["configs"], 3);
      modes_of_three.insert(r["mode"].get<std::string>());
      ASSERT_GT(one, 0.0) << "the K=1 row comes first";
      EXPECT_DOUBLE_EQ(r["ratio_to_one"].get<double>(), s / one);
      EXPECT_DOUBLE_EQ(r["train_ratio_to_one"].get<double>(), train / one_train);
    }
  }
  EXPECT_EQ(modes_of_three, (std::set<std::string>{"sequential", "streams", "packed"}));
  EXPECT_DOUBLE_EQ(rows[0]["ratio_to_one"].get<double>(), 1.0);
}

TEST(BenchSweepCli, NoRatioWithoutOneConfigurationTimed) {
  const json doc = run_for_json(LRLAB_BENCH_SWEEP_PATH, std::string(kSmallSweep) + " --ks 2 --modes packed");
  ASSERT_TRUE(doc.is_object());
  ASSERT_EQ(doc["results"].size(), 1u);
  const json& r = doc["results"][0];
  EXPECT_EQ(r["mode"], "packed");
  EXPECT_TRUE(r["ratio_to_one"].is_null()) << r.dump();
  EXPECT_TRUE(r["train_ratio_to_one"].is_null()) << r.dump();
  EXPECT_GT(r["seconds"].get<double>(), 0.0);
}

TEST(BenchSweepCli, BreaksDownOnePackedEnginesSetUpPerCount) {
  const json doc = run_for_json(LRLAB_BENCH_SWEEP_PATH, std::string(kSmallSweep) + " --ks 1,3 --modes packed");
  ASSERT_TRUE(doc.is_object());
  const json& setups = doc["setup"];
  ASSERT_EQ(setups.size(), 2u) << setups.dump(1);
  for (size_t i = 0; i < setups.size(); ++i) {
    const json& r = setups[i];
    SCOPED_TRACE(r.dump());
    EXPECT_EQ(r["device"], "cpu");
    EXPECT_EQ(r["configs"], i == 0 ? 1 : 3);
    EXPECT_TRUE(r["upload_seconds"].is_null()) << "the CPU engine reads the host's data";
    // 4 steps: the first, the second and 2 later ones.
    EXPECT_EQ(r["later_steps"], 2);
    for (const char* key : {"construct_seconds", "first_eval_seconds", "eager_step_seconds",
                            "second_step_seconds", "later_step_seconds", "destroy_seconds"}) {
      ASSERT_TRUE(r[key].is_number()) << key;
      EXPECT_GE(r[key].get<double>(), 0.0) << key;
    }
    EXPECT_GT(r["eager_step_seconds"].get<double>(), 0.0);
  }
}

TEST(BenchSweepCli, SetUpBreakdownLeavesOutTheStepsItDoesNotRun) {
  const json doc = run_for_json(LRLAB_BENCH_SWEEP_PATH,
                                "--device cpu --data spirals --hidden 8 --steps 2 --batch 16 --repeat 1 --ks 2 --modes packed");
  ASSERT_TRUE(doc.is_object());
  ASSERT_EQ(doc["setup"].size(), 1u);
  const json& r = doc["setup"][0];
  EXPECT_TRUE(r["second_step_seconds"].is_number()) << r.dump();
  EXPECT_TRUE(r["later_step_seconds"].is_null()) << r.dump();
  EXPECT_EQ(r["later_steps"], 0);
}

TEST(BenchOptimCli, EveryOptimizerAndSizeAgainstACopy) {
  const json doc = run_for_json(LRLAB_BENCH_OPTIM_PATH,
                                "--device cpu --sizes 4K,mixed --optimizers 'adam()' 'sgd(momentum=0.9)' --reps 3");
  ASSERT_TRUE(doc.is_object());
  EXPECT_EQ(doc["benchmark"], "bench_optim");
  const json& rows = doc["results"];
  ASSERT_EQ(rows.size(), 4u) << rows.dump(1);
  std::map<std::string, std::set<std::string>> seen;  // case ("mixed" is labelled by its tensors) -> optimizers
  for (const json& r : rows) {
    SCOPED_TRACE(r.dump());
    EXPECT_EQ(r["device"], "cpu");
    seen[r["case"].get<std::string>()].insert(r["optimizer"].get<std::string>());
    // The fields compare_optim.py joins and divides.
    EXPECT_GT(r["step_ms"].get<double>(), 0.0);
    EXPECT_GT(r["gbps"].get<double>(), 0.0);
    EXPECT_GT(r["copy_gbps"].get<double>(), 0.0);
    EXPECT_NEAR(r["fraction_of_copy"].get<double>(), r["gbps"].get<double>() / r["copy_gbps"].get<double>(),
                1e-9 * r["fraction_of_copy"].get<double>());
    if (r["case"] == "4K") EXPECT_EQ(r["params"], 4096);
  }
  const std::set<std::string> both{"adam()", "sgd(momentum=0.9)"};
  EXPECT_EQ(seen, (std::map<std::string, std::set<std::string>>{{"4K", both}, {"1000 tensors", both}}));
}

TEST(BenchCli, BadOptionsGiveOneErrorLineAndStatus2) {
  const struct {
    const char* program;
    std::string args, says;
  } cases[] = {
      {LRLAB_BENCH_SWEEP_PATH, "--ks 1,x", "--ks: 'x' is not a positive whole number"},
      {LRLAB_BENCH_SWEEP_PATH, "--ks ''", "--ks: no number of configurations"},
      {LRLAB_BENCH_SWEEP_PATH, "--modes packed,fast", "--modes: 'fast' is not sequential, streams or packed"},
      {LRLAB_BENCH_SWEEP_PATH, "--modes ''", "--modes: no mode given"},
      {LRLAB_BENCH_SWEEP_PATH, "--hidden 8,-1", "--hidden: '-1' is not a positive whole number"},
      {LRLAB_BENCH_SWEEP_PATH, "--steps 0", "--steps"},
      {LRLAB_BENCH_SWEEP_PATH, "--device tpu", "--device"},
      {LRLAB_BENCH_SWEEP_PATH, "--bogus", "--bogus"},
      {LRLAB_BENCH_OPTIM_PATH, "--sizes 12Q", "--sizes: '12Q' is not a parameter count"},
      {LRLAB_BENCH_OPTIM_PATH, "--unroll 3", "--unroll"},
      {LRLAB_BENCH_OPTIM_PATH, "--sizes -5", "--sizes: '-5' is not a parameter count"},
      {LRLAB_BENCH_OPTIM_PATH, "--sizes 1e30", "--sizes: '1e30' is not a parameter count"},
      {LRLAB_BENCH_OPTIM_PATH, "--sizes 1M,,2M", "--sizes: '' is not a parameter count"},
      {LRLAB_BENCH_OPTIM_PATH, "--device cpu --sizes 4K --optimizers 'adamm()'", "adamm"},
      {LRLAB_BENCH_OPTIM_PATH, "--reps 1", "--reps"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(std::string(c.program) + " " + c.args);
    const auto r = run_program(c.program, c.args);
    EXPECT_EQ(r.status, 2);
    EXPECT_EQ(r.err.rfind("error: ", 0), 0u) << r.err;
    EXPECT_NE(r.err.find(c.says), std::string::npos) << r.err;
    EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << "one line: " << r.err;
    EXPECT_EQ(r.out, "");
  }
}

namespace {

// A replay tool reading `input` on its standard input.
lrlab::testing::CliResult replay_with(const std::string& program, const std::string& args, const std::string& input) {
  const std::string path = temp_path("replay.txt");
  {
    std::ofstream f(path);
    f << input;
  }
  // run_program sends /dev/null to the shell; the replay's own redirection comes inside it.
  const auto r = run_program("sh -c", "'" + program + " " + args + " <" + path + "'");
  std::remove(path.c_str());
  return r;
}

lrlab::testing::CliResult replay(const std::string& args, const std::string& input) {
  return replay_with(LRLAB_OPTIM_REPLAY_PATH, args, input);
}

}  // namespace

// optim_replay, the lrlab side of compare_updates.py: the parameters after every step of the given
// gradients, with the schedule applied (here SGD, p -= lr * m(t) * g, m = 0.5^t).
TEST(OptimReplayCli, PrintsTheParametersAfterEveryStep) {
  const auto r = replay("--optimizer \"sgd()\" --lr 0.25 --schedule \"exp(gamma=0.5)\"", "3 2\n1 2 3\n0.5 -1 2\n1 1 0\n");
  ASSERT_EQ(r.status, 0) << r.err;
  std::istringstream out(r.out);
  std::vector<double> v;
  for (double x; out >> x;) v.push_back(x);
  ASSERT_EQ(v.size(), 6u) << r.out;
  const float lr0 = 0.25f, lr1 = 0.125f;
  const float p1[3] = {1 - lr0 * 0.5f, 2 - lr0 * -1.0f, 3 - lr0 * 2.0f};
  const float p2[3] = {p1[0] - lr1 * 1.0f, p1[1] - lr1 * 1.0f, p1[2] - lr1 * 0.0f};
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(static_cast<float>(v[i]), p1[i]) << i;
    EXPECT_EQ(static_cast<float>(v[3 + i]), p2[i]) << i;
  }
}

TEST(OptimReplayCli, BadInputIsOneErrorLine) {
  for (const std::string& in : {"", "3", "0 2", "2 1\n1 x\n", "2 2\n1 2\n0.1 0.2\n"}) {
    SCOPED_TRACE(in);
    const auto r = replay("", in);
    EXPECT_EQ(r.status, 2);
    EXPECT_EQ(r.err.rfind("error: standard input: ", 0), 0u) << r.err;
  }
  const auto r = replay("--optimizer \"adamm()\"", "1 1\n1\n1\n");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("adamm"), std::string::npos) << r.err;
}

// plateau_replay, the lrlab side of compare_plateau.py: the rate after each evaluation, cut after
// patience+1 evaluations without improvement; NaN and +inf never improve, -0.5 does.
TEST(PlateauReplayCli, PrintsTheRateAfterEveryEvaluation) {
  const auto r = replay_with(LRLAB_PLATEAU_REPLAY_PATH, "--plateau \"plateau(patience=1,factor=0.5)\" --lr 0.1",
                             "1 0.9 0.9 0.9\n0.9 nan inf -0.5\n");
  ASSERT_EQ(r.status, 0) << r.err;
  std::istringstream out(r.out);
  std::vector<double> v;
  for (double x; out >> x;) v.push_back(x);
  EXPECT_EQ(v, (std::vector<double>{0.1, 0.1, 0.1, 0.05, 0.05, 0.025, 0.025, 0.025})) << r.out;
}

TEST(PlateauReplayCli, BadInputIsOneErrorLine) {
  for (const auto& [args, in, message] : std::vector<std::array<std::string, 3>>{
           {"", "", "error: standard input: expected at least one metric"},
           {"", "1 0.5 x\n", "error: standard input: expected a metric (a number), got 'x'"},
           {"--lr 0", "1\n", "error: --lr must be a finite rate above 0"},
           {"--plateau \"plateau(fact=1)\"", "1\n", "error: unknown key 'fact'"},
           {"--lr", "1\n", "error: --lr"}}) {
    SCOPED_TRACE(args + " <<< " + in);
    const auto r = replay_with(LRLAB_PLATEAU_REPLAY_PATH, args, in);
    EXPECT_EQ(r.status, 2);
    EXPECT_EQ(r.err.rfind(message, 0), 0u) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
}

// benchmarks/ncu_summary.py reads what Nsight Compute writes for gpu_check.sh's profile part, on a
// machine where it runs once: its CSV as ncu lays it out (its own "==" lines, quoted fields,
// thousands separators, times in several units, demangled names). Python's standard library only;
// skipped where there is no python3.
namespace {

std::string ncu_row(int id, const std::string& kernel, const std::string& metric, const std::string& unit,
                    const std::string& value) {
  return "\"" + std::to_string(id) + "\",\"7\",\"lrlab\",\"host\",\"" + kernel +
         "\",\"1\",\"13\",\"(256, 1, 1)\",\"(660, 1, 1)\",\"0\",\"9.0\",\"Section\",\"" + metric + "\",\"" + unit +
         "\",\"" + value + "\"\n";
}

const char* const kNcuHeader =
    "\"ID\",\"Process ID\",\"Process Name\",\"Host Name\",\"Kernel Name\",\"Context\",\"Stream\",\"Block Size\","
    "\"Grid Size\",\"Device\",\"CC\",\"Section Name\",\"Metric Name\",\"Metric Unit\",\"Metric Value\"\n";

json run_ncu_summary(const std::string& args, const std::string& csv_text) {
  const std::string csv = temp_path("ncu.csv"), out = temp_path("ncu.json");
  {
    std::ofstream f(csv);
    f << csv_text;
  }
  const auto r = run_program("python3", std::string(LRLAB_SOURCE_DIR) + "/benchmarks/ncu_summary.py " + args + " " +
                                            csv + " --json " + out);
  EXPECT_EQ(r.status, 0) << r.err;
  const std::string text = slurp(out);
  std::remove(csv.c_str());
  std::remove(out.c_str());
  return json::parse(text.empty() ? "null" : text);
}

}  // namespace

TEST(NcuSummaryScript, SumsTheKernelsOfWholeStepsOnly) {
  if (std::system("command -v python3 >/dev/null 2>&1") != 0) GTEST_SKIP() << "no python3";
  const std::string update =
      "void lrlab::detail::(anonymous namespace)::update_kernel<(lrlab::OptimKind)1, 2>(lrlab::detail::FusedArgs, "
      "const lrlab::detail::ReplicaState *)";
  const std::string gather =
      "lrlab::detail::(anonymous namespace)::gather_kernel(const float *, const int *, const float *, long, long, "
      "const int *, const long *, long, long, float *, int *, float *)";
  const std::string gemm = "sm90_xmma_gemm_f32f32_f32f32_f32_tn_n_tilesize64x64x8_stage3_warpsize2x2x1_ffma";
  const std::string t = "gpu__time_duration.sum";
  // A window that starts and ends inside a step: the first and last launches belong to no whole step.
  // Units in both of ncu's spellings (usecond, and us in later versions).
  const std::string csv = std::string("==PROF== Connected to process 7 (/x/lrlab)\n") + kNcuHeader +
                          ncu_row(0, gemm, t, "nsecond", "9,000") + ncu_row(1, update, t, "usecond", "3.5") +
                          ncu_row(2, gather, t, "nsecond", "1,500") + ncu_row(3, gemm, t, "us", "12.25") +
                          ncu_row(4, update, t, "ns", "3,500") + ncu_row(5, gather, t, "nsecond", "1,700") +
                          ncu_row(6, gemm, t, "ms", "0.01175") + ncu_row(7, update, t, "usecond", "3.5") +
                          ncu_row(8, gather, t, "usecond", "1") + "==PROF== Disconnected from process 7\n";
  const json s = run_ncu_summary("step --marker update_kernel", csv);
  ASSERT_TRUE(s.is_object());
  EXPECT_EQ(s["steps"], 2);
  EXPECT_DOUBLE_EQ(s["launches_per_step"].get<double>(), 3.0);
  EXPECT_NEAR(s["kernel_us_per_step"].get<double>(), 1.6 + 12.0 + 3.5, 1e-9);
  std::map<std::string, double> per_step;
  for (const json& k : s["kernels"]) per_step[k["kernel"].get<std::string>()] = k["us_per_step"].get<double>();
  EXPECT_EQ(per_step.size(), 3u) << s.dump(1);
  EXPECT_NEAR(per_step["update_kernel<(lrlab::OptimKind)1, 2>"], 3.5, 1e-9);
  EXPECT_NEAR(per_step["gather_kernel"], 1.6, 1e-9);
  EXPECT_NEAR(per_step[gemm], 12.0, 1e-9);
}

TEST(NcuSummaryScript, ReadsTheSectionsOfOneKernel) {
  if (std::system("command -v python3 >/dev/null 2>&1") != 0) GTEST_SKIP() << "no python3";
  const std::string k = "void lrlab::detail::(anonymous namespace)::update_kernel<(lrlab::OptimKind)1, 2>(int)";
  const std::string csv = std::string("==PROF== Connected to process 7\n") + kNcuHeader +
                          ncu_row(0, k, "DRAM Throughput", "%", "88.52") + ncu_row(0, k, "Duration", "msecond", "2.13") +
                          ncu_row(0, k, "Achieved Occupancy", "%", "58.1") +
                          ncu_row(0, k, "Registers Per Thread", "register/thread", "46") +
                          ncu_row(0, k, "Waves Per SM", "", "1.00") + ncu_row(0, k, "Grid Size", "", "1,320") +
                          ncu_row(0, k, "Note", "", "see the rule");
  const json s = run_ncu_summary("kernel", csv);
  ASSERT_TRUE(s.is_object());
  ASSERT_EQ(s["kernels"].size(), 1u) << s.dump(1);
  const json& r = s["kernels"][0];
  EXPECT_EQ(r["kernel"], "update_kernel<(lrlab::OptimKind)1, 2>");
  EXPECT_NEAR(r["duration_us"].get<double>(), 2130.0, 1e-9);
  EXPECT_DOUBLE_EQ(r["dram_pct"].get<double>(), 88.52);
  EXPECT_DOUBLE_EQ(r["registers"].get<double>(), 46);
  EXPECT_DOUBLE_EQ(r["grid"].get<double>(), 1320);
  EXPECT_FALSE(r["all_metrics"].contains("Note")) << "a rule's text is no number";
}
