// Where lrlab can run: the CPU always, a CUDA GPU when one is present and usable.
#pragma once

#include <optional>
#include <string>

namespace lrlab {

enum class Device { CPU, CUDA };

// Number of usable CUDA devices; 0 with the reason in *why (no driver, no device, ...).
int cuda_device_count(std::string* why = nullptr);
inline bool cuda_available(std::string* why = nullptr) { return cuda_device_count(why) > 0; }

// Throws lrlab::Error ("<what> requested but <why>", e.g. "CUDA training requested but no CUDA
// device found") where no GPU is usable: every entry point that takes Device::CUDA checks this
// before its first CUDA call, whose own error would name a runtime function instead.
void require_cuda(const std::string& what);

// "auto" picks CUDA when available. Throws lrlab::Error for "cuda" without a GPU or an unknown name.
Device parse_device(const std::string& name);
const char* device_name(Device d);

// Bytes that new allocations can take now: for the CPU, the kernel's MemAvailable, lowered to the
// room left under the limit of the process's cgroup (cgroup v2, a container's own group); for CUDA,
// the current device's free memory. Nothing when it cannot be told (for CUDA: no usable GPU).
std::optional<double> available_memory(Device d);
// Throws lrlab::Error ("<what> needs at least N GB of <device> memory, and M GB is available
// (<advice>)") when `bytes` exceed available_memory(d). On Linux an allocation beyond the memory
// succeeds and the kernel kills the process when its pages are touched, with no message: a job that
// cannot fit is refused before it allocates.
void require_memory(Device d, double bytes, const std::string& what, const std::string& advice);

namespace detail {
// available_memory's host figure from a meminfo file and a cgroup v2 folder (memory.max,
// memory.current, memory.stat), which tests give as files of their own.
std::optional<double> host_memory_available(const std::string& meminfo, const std::string& cgroup);
}  // namespace detail

// CUDA's current device is per host thread, and new threads start on device 0. Code that builds GPU
// engines on one thread and runs them on workers records the builder's GPU (an MPI rank picks its
// local one on its main thread) and has each worker adopt it. Both throw lrlab::CudaError on failure.
int current_gpu();
void use_gpu(int gpu);
// The GPU's UUID as nvidia-smi writes it ("GPU-8f6c...-..."): the same GPU in every process, however
// CUDA_VISIBLE_DEVICES numbers it there.
std::string gpu_uuid(int gpu);

}  // namespace lrlab
