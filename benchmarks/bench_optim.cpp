// Fused optimizer throughput: step time and achieved GB/s (docs/OPTIMIZERS.md's bytes per parameter) for
// each optimizer and size, on the CPU and the GPU, each next to a plain copy of the same bytes
// measured in the same run. Writes JSON.
#include <cuda_runtime.h>

#include <CLI/CLI.hpp>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <nlohmann/json.hpp>

#include "../src/optimizer_kernels.hpp"
#include "bench_common.hpp"
#include "lrlab/cuda_check.hpp"
#include "lrlab/device.hpp"
#include "lrlab/error.hpp"
#include "lrlab/io.hpp"
#include "lrlab/optimizer.hpp"
#include "lrlab/rng.hpp"

using namespace lrlab;
using nlohmann::json;

namespace {

struct Case {
  std::string label;
  int64_t n;        // parameters (flat, including padding of the tensor layout)
  int64_t tensors;  // tensors packed into the flat buffer
};

// 1000 tensors of log-uniform sizes between 1K and 64K floats, each starting 16-byte aligned,
// packed into one flat buffer: what a real model's parameter list looks like to the fused step.
Case mixed_tensors() {
  Rng rng(1);
  int64_t total = 0;
  for (int i = 0; i < 1000; ++i) {
    int64_t sz = static_cast<int64_t>(std::exp(rng.uniform(std::log(1024.0), std::log(65536.0))));
    total += (sz + 3) / 4 * 4;
  }
  return {"1000 tensors", total, 1000};
}

std::vector<Case> cases_from(const std::string& sizes) {
  std::vector<Case> out;
  size_t start = 0;
  while (start <= sizes.size()) {
    size_t comma = sizes.find(',', start);
    std::string tok = sizes.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    if (tok == "mixed") {
      out.push_back(mixed_tensors());
    } else {
      const std::string given = tok;
      double mult = 1;
      const char suffix = tok.empty() ? '\0' : tok.back();
      if (suffix == 'M') mult = 1 << 20;
      if (suffix == 'K') mult = 1 << 10;
      if (suffix == 'M' || suffix == 'K') tok.pop_back();
      char* end = nullptr;
      const double v = tok.empty() ? 0 : std::strtod(tok.c_str(), &end) * mult;
      // 2^32 floats is 16 GiB per buffer: past any size this benchmark is meant for.
      LRLAB_REQUIRE(!tok.empty() && end && *end == '\0' && std::isfinite(v) && v >= 1 && v <= 4294967296.0,
                    "--sizes: '", given, "' is not a parameter count from 1 to 4G (such as 4096, 16M or 'mixed')");
      out.push_back({tok + (suffix == 'M' ? "M" : suffix == 'K' ? "K" : ""), static_cast<int64_t>(v), 1});
    }
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

json run_cpu(const std::vector<std::string>& specs, const Case& c, int reps) {
  const size_t n = static_cast<size_t>(c.n);
  std::vector<float> p(n), g(n);
  // Touch pages with the same threads that will use them (first-touch placement).
#pragma omp parallel for
  for (size_t i = 0; i < n; ++i) {
    p[i] = 0.01f * static_cast<float>(i % 1000);
    g[i] = 1e-3f * static_cast<float>(i % 777) - 0.3f;
  }
  json rows = json::array();
  for (const std::string& spec : specs) {
    Optimizer opt(spec, Device::CPU, c.n);
    const double bytes = static_cast<double>(bytes_per_param(opt.hyper())) * c.n;
    double t = bench::median_seconds([&] { opt.step(p.data(), g.data()); }, 2, reps);
    // The yardstick: copying bytes/2 reads and writes the same total.
    size_t copy_n = static_cast<size_t>(bytes / 2 / sizeof(float));
    std::vector<float> src(copy_n), dst(copy_n);
    bench::parallel_copy(src.data(), dst.data(), copy_n);
    double tc = bench::median_seconds([&] { bench::parallel_copy(dst.data(), src.data(), copy_n); }, 2, reps);
    rows.push_back({{"device", "cpu"}, {"optimizer", spec}, {"case", c.label}, {"params", c.n},
                    {"tensors", c.tensors}, {"bytes_per_param", bytes_per_param(opt.hyper())},
                    {"step_ms", t * 1e3}, {"gbps", bytes / t / 1e9}, {"copy_gbps", bytes / tc / 1e9},
                    {"fraction_of_copy", tc / t}});
    std::fprintf(stderr, "cpu  %-28s %-13s %8.3f ms  %6.1f GB/s  copy %6.1f GB/s  %.3f of copy\n",
                 spec.c_str(), c.label.c_str(), t * 1e3, bytes / t / 1e9, bytes / tc / 1e9, tc / t);
  }
  return rows;
}

// GPU timing: CUDA events around `reps` launches, L2 flushed before each (nvbench's method).
double gpu_median_ms(const std::function<void()>& fn, cudaStream_t s, float* flush, size_t flush_bytes, int reps) {
  for (int i = 0; i < 3; ++i) fn();
  cudaEvent_t a, b;
  LRLAB_CUDA_CHECK(cudaEventCreate(&a));
  LRLAB_CUDA_CHECK(cudaEventCreate(&b));
  std::vector<float> t;
  for (int i = 0; i < reps; ++i) {
    LRLAB_CUDA_CHECK(cudaMemsetAsync(flush, i & 0xff, flush_bytes, s));
    LRLAB_CUDA_CHECK(cudaEventRecord(a, s));
    fn();
    LRLAB_CUDA_CHECK(cudaEventRecord(b, s));
    LRLAB_CUDA_CHECK(cudaEventSynchronize(b));
    float ms = 0;
    LRLAB_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    t.push_back(ms);
  }
  LRLAB_CUDA_CHECK(cudaEventDestroy(a));
  LRLAB_CUDA_CHECK(cudaEventDestroy(b));
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// The update kernel's forms to time: `unroll` (0: the library's), then with `variants` the other.
struct Forms {
  int unroll = 0;
  bool variants = false;
};

json run_gpu(const std::vector<std::string>& specs, const Case& c, int reps, Forms forms) {
  cudaStream_t s;
  LRLAB_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  int dev = 0, l2 = 0;
  LRLAB_CUDA_CHECK(cudaGetDevice(&dev));
  LRLAB_CUDA_CHECK(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, dev));
  size_t flush_bytes = static_cast<size_t>(std::max(l2, 1 << 20)) * 2;
  float *p, *g, *flush;
  LRLAB_CUDA_CHECK(cudaMalloc(&p, c.n * sizeof(float)));
  LRLAB_CUDA_CHECK(cudaMalloc(&g, c.n * sizeof(float)));
  LRLAB_CUDA_CHECK(cudaMalloc(&flush, flush_bytes));
  LRLAB_CUDA_CHECK(cudaMemsetAsync(p, 0, c.n * sizeof(float), s));
  LRLAB_CUDA_CHECK(cudaMemsetAsync(g, 0, c.n * sizeof(float), s));
  json rows = json::array();
  cudaDeviceProp prop;
  LRLAB_CUDA_CHECK(cudaGetDeviceProperties(&prop, dev));
  for (const std::string& spec : specs) {
    OptimizerSetup setup;
    setup.stream = s;
    Optimizer opt(spec, Device::CUDA, c.n, setup);
    const double bytes = static_cast<double>(bytes_per_param(opt.hyper())) * c.n;
    size_t copy_bytes = static_cast<size_t>(bytes / 2);
    void *src, *dst;
    LRLAB_CUDA_CHECK(cudaMalloc(&src, copy_bytes));
    LRLAB_CUDA_CHECK(cudaMalloc(&dst, copy_bytes));
    double cms = gpu_median_ms(
        [&] { LRLAB_CUDA_CHECK(cudaMemcpyAsync(dst, src, copy_bytes, cudaMemcpyDeviceToDevice, s)); }, s,
        flush, flush_bytes, reps);
    LRLAB_CUDA_CHECK(cudaFree(src));
    LRLAB_CUDA_CHECK(cudaFree(dst));
    // The library's form of the kernel (or --unroll's) first; with --variants, then the other on the
    // same buffers, each row saying which it is and how many of its blocks one multiprocessor holds
    // (the grid is one wave of them, and the fraction of a copy followed that count when it was
    // not: BENCHMARKS.md).
    const int lib_unroll = detail::OptimizerAccess::update_unroll(opt);
    const int first = forms.unroll ? forms.unroll : lib_unroll;
    std::vector<int> unrolls = {first};
    if (forms.variants) unrolls.push_back(first == 1 ? 2 : 1);
    for (int unroll : unrolls) {
      detail::OptimizerAccess::set_update_unroll(opt, unroll);
      const double ms = gpu_median_ms([&] { opt.step(p, g); }, s, flush, flush_bytes, reps);
      const int64_t blocks_per_sm = detail::OptimizerAccess::update_blocks_per_sm(opt);
      json row = {{"device", "cuda"}, {"gpu", prop.name}, {"optimizer", spec}, {"case", c.label},
                  {"params", c.n}, {"tensors", c.tensors}, {"bytes_per_param", bytes_per_param(opt.hyper())},
                  {"step_ms", ms}, {"gbps", bytes / ms / 1e6}, {"copy_gbps", bytes / cms / 1e6},
                  {"fraction_of_copy", cms / ms}, {"update_blocks_per_sm", blocks_per_sm},
                  {"update_unroll", unroll}};
      // Rows of a kernel the library does not use are marked, so that comparisons and the
      // headline figure skip them.
      if (unroll != lib_unroll) row["variant"] = "unroll " + std::to_string(unroll);
      rows.push_back(row);
      std::fprintf(stderr,
                   "cuda %-28s %-13s %8.3f ms  %7.1f GB/s  copy %7.1f GB/s  %.3f of copy  %lld blocks/SM  "
                   "unroll %d%s\n",
                   spec.c_str(), c.label.c_str(), ms, bytes / ms / 1e6, bytes / cms / 1e6, cms / ms,
                   static_cast<long long>(blocks_per_sm), unroll, unroll != lib_unroll ? " (variant)" : "");
    }
  }
  LRLAB_CUDA_CHECK(cudaFree(p));
  LRLAB_CUDA_CHECK(cudaFree(g));
  LRLAB_CUDA_CHECK(cudaFree(flush));
  LRLAB_CUDA_CHECK(cudaStreamDestroy(s));
  return rows;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"bench_optim: fused optimizer step time and bandwidth against a copy of the same bytes"};
  std::string sizes = "1M,16M,256M,mixed";
  std::string device = "all";
  std::string out;
  int reps = 20;
  std::vector<std::string> specs = {"sgd()", "sgd(momentum=0.9)", "adam()", "adamw()", "adam(amsgrad=true)",
                                    "rmsprop()", "rmsprop(momentum=0.9,centered=true)", "adagrad()"};
  app.add_option("--sizes", sizes, "comma-separated parameter counts (K, M suffixes) and 'mixed'")
      ->capture_default_str();
  app.add_option("--device", device, "cpu, cuda or all")
      ->check(CLI::IsMember({"cpu", "cuda", "all"}))
      ->capture_default_str();
  app.add_option("--optimizers", specs, "optimizer specs")->capture_default_str();
  app.add_option("--reps", reps, "timed repetitions")->check(CLI::Range(3, 10000))->capture_default_str();
  app.add_option("--json", out, "write results here");
  Forms forms;
  app.add_option("--unroll", forms.unroll,
                 "on the GPU, time the update kernel's form with this many quads per thread and "
                 "iteration (1 or 2; 0: the library's); rows of a form the library does not use are "
                 "marked \"variant\"")
      ->check(CLI::Range(0, 2))
      ->capture_default_str();
  app.add_flag("--variants", forms.variants,
               "on the GPU, also time the update kernel the library does not use (the other unroll), "
               "in rows marked \"variant\"");
  if (const int status = bench::parse_options(app, argc, argv); status >= 0) return status;
  try {
    json rows = json::array();
    std::vector<Case> cases = cases_from(sizes);
    std::string why;
    bool gpu = device != "cpu" && cuda_available(&why);
    if (device == "cuda" && !gpu) {
      std::fprintf(stderr, "error: %s\n", why.c_str());
      return 2;
    }
    if (!gpu && device == "all") std::fprintf(stderr, "GPU part skipped: %s\n", why.c_str());
    for (const Case& c : cases) {
      if (device != "cuda")
        for (auto& r : run_cpu(specs, c, reps)) rows.push_back(r);
      if (gpu)
        for (auto& r : run_gpu(specs, c, reps, forms)) rows.push_back(r);
    }
    bench::write_report({{"benchmark", "bench_optim"}, {"threads", omp_get_max_threads()}, {"results", rows}}, out);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
  return 0;
}
