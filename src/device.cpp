#include "lrlab/device.hpp"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <optional>
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

void require_cuda(const std::string& what) {
  std::string why;
  LRLAB_REQUIRE(cuda_available(&why), what, " requested but ", why);
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
// The number after `key` on the first line of the file that starts with it; nothing when the file
// or the line is missing, or says "max" (a cgroup without a limit).
std::optional<double> number_in(const std::string& path, const std::string& key) {
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);)
    if (line.rfind(key, 0) == 0) {
      const std::string rest = line.substr(key.size());
      char* end = nullptr;
      const double v = std::strtod(rest.c_str(), &end);
      if (end == rest.c_str()) return std::nullopt;
      return v;
    }
  return std::nullopt;
}
}  // namespace

namespace detail {
std::optional<double> host_memory_available(const std::string& meminfo, const std::string& cgroup) {
  const std::optional<double> kb = number_in(meminfo, "MemAvailable:");
  if (!kb) return std::nullopt;
  double bytes = *kb * 1024;
  // The cgroup's limit less what it holds; the page cache of files not in use (inactive_file) is
  // counted in its usage but is given back before the kernel kills anything, so it counts as room.
  const std::optional<double> limit = number_in(cgroup + "/memory.max", "");
  const std::optional<double> used = number_in(cgroup + "/memory.current", "");
  if (limit && used) {
    const double cache = number_in(cgroup + "/memory.stat", "inactive_file ").value_or(0);
    bytes = std::min(bytes, *limit - std::max(0.0, *used - cache));
  }
  return std::max(0.0, bytes);
}
}  // namespace detail

std::optional<double> available_memory(Device d) {
  if (d == Device::CUDA) {
    if (!cuda_available()) return std::nullopt;
    size_t free_bytes = 0, total_bytes = 0;
    LRLAB_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
    return static_cast<double>(free_bytes);
  }
  // cgroup v2 as a container sees it: its own group at the root of its namespace. Elsewhere (cgroup
  // v1, a process in a sub-group) the files are missing or the host's, and MemAvailable alone counts.
  return detail::host_memory_available("/proc/meminfo", "/sys/fs/cgroup");
}

void require_memory(Device d, double bytes, const std::string& what, const std::string& advice) {
  const std::optional<double> room = available_memory(d);
  if (!room) return;
  auto gb = [](double b) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.3g", b / 1e9);
    return std::string(buf);
  };
  LRLAB_REQUIRE(bytes <= *room, what, " needs at least ", gb(bytes), " GB of ", d == Device::CUDA ? "GPU" : "host",
                " memory, and ", gb(*room), " GB is available (", advice, ")");
}

const char* device_name(Device d) { return d == Device::CUDA ? "cuda" : "cpu"; }

int current_gpu() {
  int gpu = 0;
  LRLAB_CUDA_CHECK(cudaGetDevice(&gpu));
  return gpu;
}

void use_gpu(int gpu) { LRLAB_CUDA_CHECK(cudaSetDevice(gpu)); }

std::string gpu_uuid(int gpu) {
  cudaDeviceProp prop{};
  LRLAB_CUDA_CHECK(cudaGetDeviceProperties(&prop, gpu));
  std::string text = "GPU";
  for (int i = 0; i < 16; ++i) {
    char hex[4];
    std::snprintf(hex, sizeof hex, "%02x", static_cast<unsigned char>(prop.uuid.bytes[i]));
    if (i == 0 || i == 4 || i == 6 || i == 8 || i == 10) text += '-';
    text += hex;
  }
  return text;
}

}  // namespace lrlab
