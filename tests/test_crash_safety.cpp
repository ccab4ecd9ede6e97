// Crash safety: runs killed with SIGKILL at random moments, many of them during a save, must always
// leave the newest complete checkpoint (or sweep results) readable and resumable.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <unistd.h>

#include <dirent.h>

#include <chrono>
#include <thread>

#include "cli_util.hpp"
#include "lrlab/checkpoint.hpp"
#include "lrlab/io.hpp"
#include "lrlab/rng.hpp"
#include "lrlab/sweep.hpp"

using namespace lrlab;
using lrlab::testing::run_cli;
using lrlab::testing::temp_path;

namespace {

pid_t spawn(const std::vector<std::string>& args) {
  pid_t pid = fork();
  if (pid == 0) {
    std::vector<char*> argv;
    argv.push_back(const_cast<char*>(LRLAB_CLI_PATH));
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    int devnull = open("/dev/null", O_WRONLY);
    dup2(devnull, 1);
    dup2(devnull, 2);
    execv(LRLAB_CLI_PATH, argv.data());
    _exit(127);
  }
  return pid;
}

// The temporary files a process `pid` has open next to `path` (write_file_atomic's PATH.tmp.PID.N).
std::vector<std::string> temporaries(const std::string& path, pid_t pid) {
  const std::string dir = path.substr(0, path.rfind('/'));
  const std::string prefix = path.substr(path.rfind('/') + 1) + ".tmp." + std::to_string(pid) + ".";
  std::vector<std::string> out;
  if (DIR* d = opendir(dir.c_str())) {
    while (dirent* e = readdir(d))
      if (std::string(e->d_name).rfind(prefix, 0) == 0) out.push_back(dir + "/" + e->d_name);
    closedir(d);
  }
  return out;
}

// Starts `args`, waits until the process is in the middle of writing `path` (its temporary file
// exists), waits a random few hundred microseconds more and kills it. Returns true when the kill
// landed inside the save (the temporary was left behind); removes the leftovers.
bool kill_during_save(const std::vector<std::string>& args, const std::string& path, Rng& rng) {
  pid_t pid = spawn(args);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (temporaries(path, pid).empty() && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  std::this_thread::sleep_for(std::chrono::microseconds(rng.below(400)));
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  std::vector<std::string> left = temporaries(path, pid);
  for (const std::string& t : left) std::remove(t.c_str());
  return !left.empty();
}

// A model whose checkpoint (1.2M parameters with Adam's moments, ~14 MB) takes about as long to
// write as an epoch takes to train, so random kills often land inside a save.
const std::vector<std::string> kTrainArgs = {"train", "--data", "spirals", "--samples", "400", "--hidden", "1024,1024",
                                             "--batch", "400", "--device", "cpu", "--quiet", "--guard", "off"};

TEST(CrashSafety, KilledTrainingAlwaysLeavesALoadableCheckpoint) {
  const std::string ck = temp_path("kill.ckpt");
  Rng rng(2024);
  int during_save = 0, trials = 0;
  int64_t last_epochs = 0;
  // At least 50 kills inside a save; the first save of a run has no predecessor, so each trial
  // first lets one run finish a save.
  {
    std::vector<std::string> args = kTrainArgs;
    args.insert(args.end(), {"--epochs", "1", "--save", ck});
    ASSERT_EQ(waitpid(spawn(args), nullptr, 0) > 0, true);
    ASSERT_EQ(load_checkpoint(ck).epochs_done, 1);
  }
  while (during_save < 50 && trials < 300) {
    ++trials;
    std::vector<std::string> args = kTrainArgs;
    args.insert(args.end(), {"--epochs", "100000", "--save", ck, "--resume", ck});
    during_save += kill_during_save(args, ck, rng);
    Checkpoint c = load_checkpoint(ck);  // throws (fails the test) on a torn file
    EXPECT_GE(c.epochs_done, last_epochs);
    last_epochs = c.epochs_done;
  }
  EXPECT_GE(during_save, 50) << "only " << during_save << " of " << trials << " kills landed inside a save";
  RecordProperty("kills_inside_a_save", during_save);
  RecordProperty("kills", trials);
  // The newest checkpoint resumes and trains one more epoch.
  std::string cmd;
  for (const std::string& a : kTrainArgs) cmd += "'" + a + "' ";
  auto r = run_cli(cmd + "--resume " + ck + " --epochs " + std::to_string(last_epochs + 1) + " --save " + ck);
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(load_checkpoint(ck).epochs_done, last_epochs + 1);
  std::remove(ck.c_str());
}

TEST(CrashSafety, KilledSweepAlwaysLeavesReadableResults) {
  const std::string out = temp_path("kill_sweep");
  const std::string results = out + "/results.json";
  Rng rng(7);
  int during_save = 0, trials = 0;
  while (during_save < 50 && trials < 300) {
    ++trials;
    during_save += kill_during_save({"sweep", "--data", "spirals", "--samples", "400", "--hidden", "256,256", "--batch",
                                     "400", "--device", "cpu", "--quiet", "--epochs", "100000", "--lr", "1e-3:1e-2:16",
                                     "--out", out},
                                    results, rng);
    if (access(results.c_str(), F_OK) != 0) continue;  // killed inside the very first write
    SweepResult r = read_sweep_results(read_file(results, 1 << 28), "results.json");
    EXPECT_TRUE(r.interrupted);
    EXPECT_EQ(r.runs.size(), 16u);
  }
  EXPECT_GE(during_save, 50) << "only " << during_save << " of " << trials << " kills landed inside a write";
  RecordProperty("kills_inside_a_write", during_save);
  RecordProperty("kills", trials);
}

}  // namespace
