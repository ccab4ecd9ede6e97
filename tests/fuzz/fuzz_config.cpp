// The whole input is a config file (`lrlab train --config FILE`). Reading it against a command with
// options of each kind (a number, a text, a list, a switch) either adds arguments or throws
// lrlab::Error; it never crashes, and CLI11's own exceptions never escape.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>
#include <vector>

#include "../../src/cli/config_file.hpp"
#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = "/tmp/lrlab_fuzz_config_" + std::to_string(::getpid()) + ".toml";
  if (FILE* f = std::fopen(path.c_str(), "wb")) {
    std::fwrite(data, 1, size, f);
    std::fclose(f);
  } else {
    return 0;
  }
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
