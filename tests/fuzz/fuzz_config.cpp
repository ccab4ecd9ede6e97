// The whole input is a config file (`lrlab train --config FILE`). Reading it against a command with
// options of each kind (a number, a text, a list, a switch) either adds arguments or throws
// lrlab::Error; it never crashes, and CLI11's own exceptions never escape.
#include <sys/mman.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

#include "../../src/cli/config_file.hpp"
#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // In memory, named by a path the reader opens like any file's: nothing is left on disk.
  static const int fd = ::memfd_create("lrlab_fuzz_config", 0);
  if (fd < 0 || ::ftruncate(fd, 0) != 0 ||
      ::pwrite(fd, data, size, 0) != static_cast<ssize_t>(size))
    return 0;
  const std::string path = "/proc/self/fd/" + std::to_string(fd);
  CLI::App app{"lrlab"};
  int64_t epochs = 1;
  std::string schedule;
  std::vector<double> lrs;
  bool quiet = false;
  for (const char* name : {"train", "sweep"}) {
    CLI::App* sub = app.add_subcommand(name);
    sub->add_option("--epochs", epochs);
    sub->add_option("--schedule", schedule);
    sub->add_option("--lr", lrs);
    sub->add_flag("--quiet", quiet);
    lrlab::cli::add_config_option(*sub);
  }
  std::vector<std::string> words = {"lrlab", "train", "--config", path};
  std::vector<char*> argv;
  for (std::string& w : words) argv.push_back(w.data());
  lrlab::fuzz::expect_only_errors(
      [&] { (void)lrlab::cli::with_config_file(app, static_cast<int>(argv.size()), argv.data()); });
  return 0;
}
