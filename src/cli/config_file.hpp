// `--config FILE` for every subcommand: the file's keys are long option names (TOML or INI, top
// level or under a [subcommand] section); options given on the command line win.
#pragma once

#include <CLI/CLI.hpp>

#include <string>
#include <vector>

namespace lrlab::cli {

void add_config_option(CLI::App& sub);
// argv with the config file's settings added, in the reversed order CLI::App::parse expects.
// Throws lrlab::Error naming the commands when the first word is not one of them.
std::vector<std::string> with_config_file(CLI::App& app, int argc, char** argv);

}  // namespace lrlab::cli
