// `make demo`, the README's main job, run end to end on the built-in data set (LRLAB_DEMO_DATA):
// every step it prints and every file it promises, so a change to the commands it calls cannot
// break it unnoticed. (On Fashion-MNIST it takes a minute or more; the steps are the same.)
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <sys/stat.h>

#include "cli_util.hpp"

using lrlab::testing::run_program;
using lrlab::testing::slurp;
using lrlab::testing::temp_path;

TEST(DemoScript, RunsEveryStepOnTheBuiltInSet) {
  const std::string cli = LRLAB_CLI_PATH;
  const std::string build_dir = cli.substr(0, cli.find_last_of('/'));
  const std::string out = temp_path("demo");
  const auto r = run_program("cd " LRLAB_SOURCE_DIR " && LRLAB_DEMO_DATA=spirals LRLAB_DEMO_OUT=" + out,
                             "scripts/demo.sh " + build_dir);
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  for (const char* says : {"== 1. One training run", "== 2. LR range test", "== 3. Sweep",
                           "lrlab train: spirals", "best per optimizer", "best rate per schedule", "report: "})
    EXPECT_NE(r.out.find(says), std::string::npos) << "missing '" << says << "' in:\n" << r.out;
  EXPECT_EQ(r.out.find("is not installed"), std::string::npos) << "the data set was chosen, not fallen back to";

  for (const char* file : {"train.svg", "train.json", "train.csv", "find-lr.svg", "find-lr.json", "sweep/report.html",
                           "sweep/results.json", "sweep/curves.csv"}) {
    struct stat st {};
    EXPECT_TRUE(::stat((out + "/" + file).c_str(), &st) == 0 && st.st_size > 0) << file;
  }
  // The sweep is the whole grid: 4 schedules x 3 optimizers x 4 rates.
  const auto results = nlohmann::json::parse(slurp(out + "/sweep/results.json"));
  EXPECT_EQ(results["runs"].size(), 48u);
  EXPECT_EQ(nlohmann::json::parse(slurp(out + "/find-lr.json"))["curves"].size(), 3u);
  std::system(("rm -rf '" + out + "'").c_str());
}
