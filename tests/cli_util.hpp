// Running the lrlab executable from tests: exit status, stdout and stderr.
#pragma once

#include <sys/wait.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

namespace lrlab::testing {

struct CliResult {
  int status = -1;
  std::string out, err;
};

inline std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

inline std::string temp_path(const std::string& name) {
  const char* dir = std::getenv("TMPDIR");
  static int counter = 0;
  return std::string(dir ? dir : "/tmp") + "/lrlab_test_" + std::to_string(::getpid()) + "_" +
         std::to_string(counter++) + "_" + name;
}

// Runs `program` with `args` appended as shell words.
inline CliResult run_program(const std::string& program, const std::string& args) {
  std::string out = temp_path("out"), err = temp_path("err");
  std::string cmd = program + " " + args + " >" + out + " 2>" + err + " </dev/null";
  int rc = std::system(cmd.c_str());
  CliResult r;
  r.status = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  r.out = slurp(out);
  r.err = slurp(err);
  std::remove(out.c_str());
  std::remove(err.c_str());
  return r;
}

// The lrlab executable with `args`.
inline CliResult run_cli(const std::string& args) { return run_program(LRLAB_CLI_PATH, args); }

}  // namespace lrlab::testing
