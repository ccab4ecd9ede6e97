// Shared timing helpers for lrlab's benchmarks: warm up, repeat, report the median, and measure a
// plain copy of the same bytes in the same run as the yardstick.
#pragma once

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "lrlab/error.hpp"
#include "lrlab/io.hpp"

namespace lrlab::bench {

// Parses a benchmark's options as the lrlab command does: --help prints and exits 0, a bad option
// is one line starting with `error:` and exit status 2. Returns the exit status, or -1 to go on.
inline int parse_options(CLI::App& app, int argc, char** argv) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "error: %s\n", lrlab::detail::one_line(e.what()).c_str());
    return 2;
  }
  return -1;
}

// Reads one whitespace-separated number for the replay tools. strtod rather than `>>`, so `nan`
// and `inf` read as the values they name (a diverged loss is part of what the tools replay).
inline double read_number(std::istream& in, const char* what) {
  std::string token;
  LRLAB_REQUIRE(static_cast<bool>(in >> token), "standard input: expected ", what, " (a number)");
  char* end = nullptr;
  const double v = std::strtod(token.c_str(), &end);
  LRLAB_REQUIRE(end != token.c_str() && *end == '\0', "standard input: expected ", what, " (a number), got '",
                token, "'");
  return v;
}

inline double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Median seconds of `fn` over `reps` timed runs after `warmup` untimed ones; stops early once
// `budget_s` is spent (at least 3 samples).
inline double median_seconds(const std::function<void()>& fn, int warmup, int reps, double budget_s = 5.0) {
  for (int i = 0; i < warmup; ++i) fn();
  std::vector<double> t;
  double start = now_s();
  for (int i = 0; i < reps; ++i) {
    double t0 = now_s();
    fn();
    t.push_back(now_s() - t0);
    if (t.size() >= 3 && now_s() - start > budget_s) break;
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// A parallel memcpy with the same threads the optimizer uses: the host's copy bandwidth.
inline void parallel_copy(float* dst, const float* src, size_t n) {
#pragma omp parallel
  {
    int nt = omp_get_num_threads(), id = omp_get_thread_num();
    size_t chunk = (n + nt - 1) / nt;
    size_t b = std::min(n, chunk * id), e = std::min(n, b + chunk);
    if (e > b) std::memcpy(dst + b, src + b, (e - b) * sizeof(float));
  }
}

inline std::string today() {
  std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d", std::gmtime(&t));
  return buf;
}

inline std::string cpu_model() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  return "unknown";
}

// A benchmark's JSON document: to `path` (atomically) when given, else to standard output. Adds the
// date and the CPU, so every result says when and where it was measured.
inline void write_report(nlohmann::json doc, const std::string& path) {
  doc["date"] = today();
  doc["cpu"] = cpu_model();
  if (!path.empty()) write_file_atomic(path, doc.dump(2) + "\n");
  else std::cout << doc.dump(2) << "\n";
}

}  // namespace lrlab::bench
