// lrlab's device emulator: this header stands in for the CUDA runtime's when lrlab is configured
// with LRLAB_DEVICE_EMULATOR=ON. See ../README.md for what it checks and what it cannot.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>

// ---- Language: the qualifiers mean nothing on the host. Shared memory is declared with
// LRLAB_SHARED (kernels/launch.cuh), which gives each block storage of its own.
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ _Pragma("GCC error \"declare shared memory with LRLAB_SHARED(type, name) from kernels/launch.cuh\"")

struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
};
struct alignas(16) float4 {
  float x, y, z, w;
};
struct alignas(8) ushort4 {
  unsigned short x, y, z, w;
};
inline ushort4 make_ushort4(unsigned short x, unsigned short y, unsigned short z, unsigned short w) {
  return {x, y, z, w};
}
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }

// The built-in variables of the thread the emulator is running. __thread rather than thread_local:
// these need no initialisation, and with thread_local GCC 12 reaches them through a TLS wrapper
// whose UBSan null check tests stale flags (a false "null pointer" report after a loop).
extern __thread uint3 threadIdx;
extern __thread uint3 blockIdx;
extern __thread dim3 blockDim;
extern __thread dim3 gridDim;

// ---- Runtime types.
enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInsufficientDriver = 35,
  cudaErrorNoDevice = 100,
  cudaErrorInvalidDevice = 101,
  cudaErrorInvalidResourceHandle = 400,
  cudaErrorIllegalState = 401,
  cudaErrorNotReady = 600,
  cudaErrorStreamCaptureUnsupported = 900,
  cudaErrorStreamCaptureInvalidated = 901,
  cudaErrorStreamCaptureImplicit = 906,
  cudaErrorStreamCaptureWrongThread = 908,
};
using cudaError = cudaError_t;

enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4,
};
enum cudaStreamCaptureMode {
  cudaStreamCaptureModeGlobal = 0,
  cudaStreamCaptureModeThreadLocal = 1,
  cudaStreamCaptureModeRelaxed = 2,
};
enum cudaStreamCaptureStatus {
  cudaStreamCaptureStatusNone = 0,
  cudaStreamCaptureStatusActive = 1,
  cudaStreamCaptureStatusInvalidated = 2,
};
enum cudaDeviceAttr {
  cudaDevAttrMultiProcessorCount = 16,
  cudaDevAttrL2CacheSize = 38,
};
constexpr unsigned cudaStreamDefault = 0;
constexpr unsigned cudaStreamNonBlocking = 1;

struct cudaUUID_t {
  char bytes[16];
};
struct cudaDeviceProp {
  char name[256];
  cudaUUID_t uuid;
  size_t totalGlobalMem;
  int multiProcessorCount;
  int major, minor;
  int l2CacheSize;
  int warpSize;
  int maxThreadsPerBlock;
};

namespace lrlab_emu {
struct Stream;
struct Graph;
struct Event;
}  // namespace lrlab_emu
using cudaStream_t = lrlab_emu::Stream*;
using cudaGraph_t = lrlab_emu::Graph*;
using cudaGraphExec_t = lrlab_emu::Graph*;
using cudaEvent_t = lrlab_emu::Event*;

// ---- Runtime API: the subset lrlab uses, with the real signatures.
cudaError_t cudaGetDeviceCount(int* count);
cudaError_t cudaDriverGetVersion(int* version);
cudaError_t cudaRuntimeGetVersion(int* version);
cudaError_t cudaGetDevice(int* device);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device);
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device);
// Blocks of `block_size` threads that one multiprocessor holds at once (2048 threads' worth here).
// Stricter than CUDA: a block size outside [1, 1024] or any dynamic shared memory, which lrlab never
// asks for, is an invalid value.
cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* blocks, const void* kernel, int block_size,
                                                         size_t dynamic_shared_bytes);
template <typename... P>
cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* blocks, void (*kernel)(P...), int block_size,
                                                         size_t dynamic_shared_bytes) {
  return cudaOccupancyMaxActiveBlocksPerMultiprocessor(blocks, reinterpret_cast<const void*>(kernel), block_size,
                                                       dynamic_shared_bytes);
}
cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
const char* cudaGetErrorName(cudaError_t err);
const char* cudaGetErrorString(cudaError_t err);
cudaError_t cudaMalloc(void** ptr, size_t bytes);
template <typename T>
cudaError_t cudaMalloc(T** ptr, size_t bytes) {
  return cudaMalloc(reinterpret_cast<void**>(ptr), bytes);
}
cudaError_t cudaFree(void* ptr);
cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes);
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t stream = nullptr);
cudaError_t cudaMemset(void* ptr, int value, size_t bytes);
cudaError_t cudaMemsetAsync(void* ptr, int value, size_t bytes, cudaStream_t stream = nullptr);
cudaError_t cudaDeviceSynchronize();
cudaError_t cudaStreamCreate(cudaStream_t* stream);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t stream);
cudaError_t cudaStreamSynchronize(cudaStream_t stream);
cudaError_t cudaStreamBeginCapture(cudaStream_t stream, cudaStreamCaptureMode mode);
cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t* graph);
cudaError_t cudaStreamIsCapturing(cudaStream_t stream, cudaStreamCaptureStatus* status);
cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long flags = 0);
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream);
cudaError_t cudaGraphDestroy(cudaGraph_t graph);
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec);
cudaError_t cudaEventCreate(cudaEvent_t* event);
cudaError_t cudaEventDestroy(cudaEvent_t event);
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream = nullptr);
cudaError_t cudaEventSynchronize(cudaEvent_t event);
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end);

// ---- Device functions.
void __syncthreads();
inline unsigned __float_as_uint(float f) {
  unsigned u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}
inline float __uint_as_float(unsigned u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
// Relaxed, as CUDA's are; real atomics, so that ThreadSanitizer knows them for what they are.
inline int atomicCAS(int* address, int compare, int value) {
  __atomic_compare_exchange_n(address, &compare, value, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
  return compare;
}
inline int atomicAdd(int* address, int value) { return __atomic_fetch_add(address, value, __ATOMIC_RELAXED); }

namespace lrlab_emu {

// Work for a stream: queued, to run when the host waits for it, or recorded into the graph the
// stream is capturing. An error (the stream's capture was invalidated, or the work would join a
// capture implicitly) is also recorded for cudaGetLastError, as for a launch.
cudaError_t submit(cudaStream_t stream, std::function<void()> work);
// Marks the capture under way on the stream, if any, as invalidated.
void invalidate_capture(cudaStream_t stream);

// What the calling host thread has asked of the device so far, for tests that only an emulator
// build runs: how often the host waited for the device (a synchronisation, or a copy to pageable
// host memory, which waits for the stream), how many pieces of work (kernels, copies, GEMMs) it
// submitted outside graphs, and how many graphs it launched.
struct Counters {
  long long host_waits = 0;
  long long direct_work = 0;
  long long graph_launches = 0;
};
Counters counters();
// The calling thread's next `count` cudaGraphInstantiate calls fail with cudaErrorMemoryAllocation and
// leave a handle no graph has in *exec, which CUDA does not promise to leave alone: for tests of
// what a caller does after a failed instantiation.
void fail_graph_instantiations(int count);
// The calling thread's captures fail at their piece of work number `item` (from 0, counted over the
// captures that follow): that submission invalidates the capture and fails with
// cudaErrorStreamCaptureInvalidated, as work after an illegal call during a capture does, and so does
// the rest until the capture ends. -1 fails none.
void fail_capture_at(int item);
// Stops the process with a message: the emulator's equivalent of a device fault.
[[noreturn]] void fault(const char* what, const void* kernel = nullptr);
// Runs one grid; `thread` runs the kernel body for the current thread.
void run_grid(const void* kernel, dim3 grid, dim3 block, const std::function<void()>& thread);
// Records a launch error (a bad configuration) for cudaGetLastError; true when the launch may run.
bool check_launch(dim3 grid, dim3 block);
// The running block's storage for the shared-memory variable `key` (LRLAB_SHARED): one for all threads
// of the block, new and filled with NaNs (all bits set) for each block.
void* shared_storage(const void* key, size_t bytes, size_t align);
template <typename T>
T& shared_memory(const void* key) {
  static_assert(std::is_trivially_default_constructible_v<T> && std::is_trivially_destructible_v<T>,
                "shared memory holds trivial types only");
  return *static_cast<T*>(shared_storage(key, sizeof(T), alignof(T)));
}
// Exchange a value with lane (own lane + delta) of the warp; every live lane of the warp must call it.
void warp_shuffle_down(void* value, size_t size, unsigned delta, unsigned mask);
// True when [p, p + bytes) lies inside one device allocation.
bool is_device_range(const void* p, size_t bytes);
// Stops with a fault unless p is null or points into (or just past) a device allocation: a kernel
// given a host pointer would fault on the GPU.
void check_kernel_pointer(const void* p, size_t argument);

template <typename Tuple, size_t... I>
void check_kernel_pointers(const Tuple& args, std::index_sequence<I...>) {
  auto one = [](const auto& v, size_t i) {
    if constexpr (std::is_pointer_v<std::decay_t<decltype(v)>>) check_kernel_pointer(v, i);
  };
  (one(std::get<I>(args), I), ...);
}

template <typename... P>
struct Launch {
  void (*kernel)(P...);
  dim3 grid, block;
  cudaStream_t stream;
  template <typename... A>
  void operator()(A&&... args) const {
    if (!check_launch(grid, block)) {
      invalidate_capture(stream);
      return;
    }
    // Arguments are copied at launch, as the device takes them, and a captured launch keeps them.
    std::tuple<std::decay_t<P>...> values(std::forward<A>(args)...);
    check_kernel_pointers(values, std::index_sequence_for<P...>{});
    auto fn = kernel;
    const dim3 g = grid, b = block;
    submit(stream, [fn, g, b, values]() {
      run_grid(reinterpret_cast<const void*>(fn), g, b, [&]() { std::apply(fn, values); });
    });
  }
};

template <typename... P>
Launch<P...> launch(dim3 grid, dim3 block, cudaStream_t stream, void (*kernel)(P...)) {
  return Launch<P...>{kernel, grid, block, stream};
}

}  // namespace lrlab_emu

template <typename T>
T __shfl_down_sync(unsigned mask, T value, unsigned delta) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 8, "shuffle of a type the device cannot shuffle");
  lrlab_emu::warp_shuffle_down(&value, sizeof(T), delta, mask);
  return value;
}
