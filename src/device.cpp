#include "lrlab/device.hpp"

#include <cuda_runtime.h>

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

const char* device_name(Device d) { return d == Device::CUDA ? "cuda" : "cpu"; }

int current_gpu() {
  int gpu = 0;
  LRLAB_CUDA_CHECK(cudaGetDevice(&gpu));
  return gpu;
}

void use_gpu(int gpu) { LRLAB_CUDA_CHECK(cudaSetDevice(gpu)); }

}  // namespace lrlab
