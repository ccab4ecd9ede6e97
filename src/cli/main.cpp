#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <map>
#include <string>
#include <thread>

#include "command.hpp"
#include "config_file.hpp"
#include "mpi_session.hpp"
#include "options.hpp"
#include "lrlab/blas_env.hpp"
#include "lrlab/error.hpp"

namespace lrlab::cli {
std::vector<Command>& registry() {
  static std::vector<Command> commands;
  return commands;
}
}  // namespace lrlab::cli

namespace {
// Under an MPI launcher every rank parses the same command line and reaches the same verdict on it;
// rank 0 alone says it.
bool speaks() {
  const char* rank = lrlab::cli::launcher_rank();
  return !rank || std::string(rank) == "0";
}

// The exit of a rank refusing its command line. mpirun ends the whole job as soon as one rank exits
// with an error, so a silent rank first gives rank 0 time to say why (it parses the same line in the
// same milliseconds); without the wait rank 0 could be killed before its message. A rank still alive
// after the wait was most likely refused alone (a config file its node cannot read) and says so
// itself; under a launcher that lets the job run on after a failed rank (srun without
// --kill-on-bad-exit) every rank says it.
int refuse(const char* message) {
  if (speaks()) {
    std::fprintf(stderr, "error: %s\n", message);
  } else {
    std::this_thread::sleep_for(std::chrono::seconds(10));
    std::fprintf(stderr, "error: rank %s: %s\n", lrlab::cli::launcher_rank(), message);
  }
  return lrlab::cli::kExitBadInput;
}
}  // namespace

int main(int argc, char** argv) {
  using namespace lrlab::cli;
  lrlab::tune_blas_or_reexec(argv);
  CLI::App app{"lrlab: learning-rate schedules, fused optimizers, training and sweeps on NVIDIA GPUs and CPUs",
               "lrlab"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "lrlab 0.1.0");
  auto& cmds = registry();
  std::sort(cmds.begin(), cmds.end(), [](const Command& a, const Command& b) { return a.name < b.name; });
  std::map<CLI::App*, std::function<int()>> runners;
  for (Command& c : cmds) {
    CLI::App* sub = app.add_subcommand(c.name, c.description);
    runners[sub] = c.setup(*sub);
    add_config_option(*sub);
    add_number_checks(*sub);
    // A repeated option takes its last value, as argparse does: a command line grown by appending
    // an override ("... --epochs 5") runs with the override.
    for (CLI::Option* opt : sub->get_options())
      if (opt->get_expected_min() == 1 && opt->get_expected_max() == 1 && opt->get_type_size_max() == 1)
        opt->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  }
  try {
    app.parse(with_config_file(app, argc, argv));
    for (auto& [sub, run] : runners)
      if (sub->parsed()) require_values(*sub);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    return refuse(lrlab::detail::one_line(e.what()).c_str());
  } catch (const lrlab::Error& e) {
    return refuse(e.what());
  }
  try {
    for (auto& [sub, run] : runners)
      if (sub->parsed()) return run();
  } catch (const lrlab::CudaError& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return kExitFailure;
  } catch (const lrlab::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return kExitBadInput;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "error: out of memory\n");
    return kExitFailure;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return kExitFailure;
  }
  return kExitFailure;
}
