// Subcommands of the `lrlab` tool. Each lives in its own file and registers itself here, so adding
// one touches no other file.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <string>
#include <vector>

namespace lrlab::cli {

// Exit statuses shared by every subcommand.
constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;     // an internal failure (CUDA error, I/O error on output)
constexpr int kExitBadInput = 2;    // bad options, specs or files: "error: ..." on stderr
constexpr int kExitDiverged = 3;    // training stopped by the divergence guard, or diverged without it

struct Command {
  std::string name;
  // Adds the subcommand's options to `sub` and returns the function that runs it (after parsing).
  std::function<std::function<int()>(CLI::App& sub)> setup;
  std::string description;
};

std::vector<Command>& registry();

struct Register {
  Register(std::string name, std::string description,
           std::function<std::function<int()>(CLI::App&)> setup) {
    registry().push_back({std::move(name), std::move(setup), std::move(description)});
  }
};

}  // namespace lrlab::cli
