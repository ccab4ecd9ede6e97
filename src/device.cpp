#include "lrlab/device.hpp"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include "lrlab/cuda_check.hpp"
#include "lrlab/error.hpp"

namespace lrlab {

int cuda_device_count(std::string* why) {
  int n = 0;
  cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    // Clear the sticky error so later, unrelated runtime calls do not report it.
    cudaGetLastError();
    if (why) {
      // cudart reports a missing driver as an "insufficient" one; tell the two apart.
      int driver = 0, runtime = 0;
      cudaDriverGetVersion(&driver);
      cudaRuntimeGetVersion(&runtime);
      auto version = [](int v) { return std::to_string(v / 1000) + "." + std::to_string(v % 1000 / 10); };
      if (err == cudaErrorInsufficientDriver && driver == 0)
        *why = "no NVIDIA driver is installed (no GPU can be used)";
      else if (err == cudaErrorInsufficientDriver)
        *why = "the NVIDIA driver supports CUDA " + version(driver) + ", older than this build's CUDA " +
               version(runtime) + "; update the driver";
      else if (err == cudaErrorNoDevice)
        *why = "no NVIDIA GPU found";
      else
        *why = std::string("no usable CUDA device: ") + cudaGetErrorString(err);
    }
    return 0;
  }
  if (n == 0 && why) *why = "no CUDA device found";
  return n;
}

Device parse_device(const std::string& name) {
  if (name == "cpu") return Device::CPU;
  std::string why;
  if (name == "cuda" || name == "gpu") {
    LRLAB_REQUIRE(cuda_available(&why), "--device ", name, " requested but ", why);
    return Device::CUDA;
  }
  LRLAB_REQUIRE(name == "auto", "unknown device '", name, "' (expected auto, cpu or cuda)");
  return cuda_available() ? Device::CUDA : Device::CPU;
}

namespace {
// The first number on the line of /proc/meminfo (kB) or in a cgroup file that starts with `key`;
// -1 when absent or unlimited ("max").
double number_in(const std::string& path, const std::string& key) {
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);)
    if (line.rfind(key, 0) == 0) {
      const std::string rest = line.substr(key.size());
      char* end = nullptr;
      const double v = std::strtod(rest.c_str(), &end);
      return end == rest.c_str() ? -1 : v;
    }
  return -1;
}
}  // namespace

size_t available_memory(Device d) {
  if (d == Device::CUDA) {
    size_t free_bytes = 0, total_bytes = 0;
    LRLAB_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
    return free_bytes;
  }
  const double kb = number_in("/proc/meminfo", "MemAvailable:");
  if (kb < 0) return 0;
  double bytes = kb * 1024;
  // cgroup v2, where the container's limit is set.
  const double limit = number_in("/sys/fs/cgroup/memory.max", ""), used = number_in("/sys/fs/cgroup/memory.current", "");
  if (limit > 0 && used >= 0) bytes = std::min(bytes, std::max(0.0, limit - used));
  return static_cast<size_t>(bytes);
}

void require_memory(Device d, double bytes, const std::string& what, const std::string& advice) {
  const size_t room = available_memory(d);
  if (room == 0) return;
  auto gb = [](double b) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.3g", b / 1e9);
    return std::string(buf);
  };
  LRLAB_REQUIRE(bytes <= static_cast<double>(room), what, " needs at least ", gb(bytes), " GB of ",
                d == Device::CUDA ? "GPU" : "host", " memory, and ", gb(static_cast<double>(room)),
                " GB is available (", advice, ")");
}

const char* device_name(Device d) { return d == Device::CUDA ? "cuda" : "cpu"; }

int current_gpu() {
  int gpu = 0;
  LRLAB_CUDA_CHECK(cudaGetDevice(&gpu));
  return gpu;
}

void use_gpu(int gpu) { LRLAB_CUDA_CHECK(cudaSetDevice(gpu)); }

}  // namespace lrlab
