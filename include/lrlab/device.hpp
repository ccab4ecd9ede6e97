// Where lrlab can run: the CPU always, a CUDA GPU when one is present and usable.
#pragma once

#include <string>

namespace lrlab {

enum class Device { CPU, CUDA };

// Number of usable CUDA devices; 0 with the reason in *why (no driver, no device, ...).
int cuda_device_count(std::string* why = nullptr);
inline bool cuda_available(std::string* why = nullptr) { return cuda_device_count(why) > 0; }

// "auto" picks CUDA when available. Throws lrlab::Error for "cuda" without a GPU or an unknown name.
Device parse_device(const std::string& name);
const char* device_name(Device d);

// CUDA's current device is per host thread, and new threads start on device 0. Code that builds GPU
// engines on one thread and runs them on workers records the builder's GPU (an MPI rank picks its
// local one on its main thread) and has each worker adopt it. Both throw lrlab::CudaError on failure.
int current_gpu();
void use_gpu(int gpu);

}  // namespace lrlab
