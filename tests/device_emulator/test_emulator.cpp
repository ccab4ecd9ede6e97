// The device emulator's own tests: what its README says it catches, it must catch. Built only in
// emulator builds (LRLAB_DEVICE_EMULATOR=ON), where these headers are the emulator's.
#include <cub/block/block_reduce.cuh>
#include <cub/device/device_reduce.cuh>
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <functional>
#include <vector>

#include "../../kernels/launch.cuh"
#include "gpu.hpp"

namespace {

template <typename T>
T* device_alloc(size_t n) {
  void* p = nullptr;
  EXPECT_EQ(cudaMalloc(&p, n * sizeof(T)), cudaSuccess);
  return static_cast<T*>(p);
}

template <typename T>
std::vector<T> download(const T* d, size_t n) {
  std::vector<T> v(n);
  EXPECT_EQ(cudaMemcpy(v.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
  return v;
}

__global__ void fill_index(int* out, int n) {
  const int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  if (i < n) out[i] = i;
}

// Thread 0 publishes a value the others read; `sync` puts the barrier between the two.
__global__ void publish(int* out, bool sync) {
  LRLAB_SHARED(int, cell);
  if (threadIdx.x == 0) cell = 7;
  if (sync) __syncthreads();
  out[threadIdx.x] = cell;
}

// What a block's shared memory holds before the block writes it, and then its own block index.
__global__ void shared_per_block(float* before, float* own) {
  LRLAB_SHARED(float[4], slot);
  if (threadIdx.x == 0) before[blockIdx.x] = slot[blockIdx.x % 4];
  __syncthreads();
  if (threadIdx.x == 0) slot[blockIdx.x % 4] = static_cast<float>(blockIdx.x);
  __syncthreads();
  own[blockIdx.x * blockDim.x + threadIdx.x] = slot[blockIdx.x % 4];
}

__global__ void early_return_then_barrier(int* out) {
  if (threadIdx.x == 5) return;
  __syncthreads();
  out[threadIdx.x] = 1;
}

__global__ void early_return_then_shuffle(float* out) {
  if (threadIdx.x == 3) return;
  out[threadIdx.x] = __shfl_down_sync(0xffffffffu, 1.0f, 1);
}

// Half of the second warp shuffles while everyone else waits at __syncthreads.
__global__ void split_barriers(float* out) {
  float v = 1.0f;
  if (threadIdx.x >= 32 && threadIdx.x < 48)
    v = __shfl_down_sync(0xffffffffu, v, 1);
  else
    __syncthreads();
  out[threadIdx.x] = v;
}

__global__ void too_much_shared(float* out) {
  LRLAB_SHARED(float[13 * 1024], big);  // 52 KiB
  big[threadIdx.x] = 1.0f;
  out[threadIdx.x] = big[threadIdx.x];
}

__global__ void count_with_atomics(int* out) { atomicAdd(out, 1); }

__global__ void past_a_shared_int(int* out) {
  LRLAB_SHARED(int, cell);
  cell = 1;
  out[0] = (&cell)[1];
}

__global__ void misaligned_vector_load(const float* in, float* out) {
  const float4 v = *reinterpret_cast<const float4*>(in + 1);
  out[0] = v.x;
}

__global__ void warp_sum(float* out) {
  float v = static_cast<float>(threadIdx.x);
  for (int step = 16; step > 0; step /= 2) v += __shfl_down_sync(0xffffffffu, v, step);
  if (threadIdx.x % 32 == 0) out[threadIdx.x / 32] = v;
}

__global__ void block_sum(const float* in, float* out) {
  using Reduce = cub::BlockReduce<float, 64>;
  LRLAB_SHARED(typename Reduce::TempStorage, tmp);
  const float total = Reduce(tmp).Sum(in[threadIdx.x]);
  if (threadIdx.x == 0) *out = total;
}

TEST(EmulatorKernels, GridsAndBlocksCoverEveryThread) {
  const int n = 1000;
  int* d = device_alloc<int>(n);
  LRLAB_LAUNCH((n + 127) / 128, 128, nullptr, fill_index)(d, n);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  const std::vector<int> v = download(d, n);
  for (int i = 0; i < n; ++i) ASSERT_EQ(v[i], i);
  cudaFree(d);
}

TEST(EmulatorKernels, BadLaunchConfigurationIsALaunchError) {
  int* d = device_alloc<int>(4);
  LRLAB_LAUNCH(1, 2048, nullptr, fill_index)(d, 4);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);  // not sticky
  LRLAB_LAUNCH(dim3(1, 70000), 32, nullptr, fill_index)(d, 4);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  cudaFree(d);
}

TEST(EmulatorKernels, OccupancyIsAFullMultiprocessorOfThreads) {
  int blocks = -1;
  ASSERT_EQ(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, fill_index, 256, 0), cudaSuccess);
  EXPECT_EQ(blocks, 8);
  ASSERT_EQ(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, fill_index, 1024, 0), cudaSuccess);
  EXPECT_EQ(blocks, 2);
  EXPECT_EQ(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, fill_index, 2048, 0), cudaErrorInvalidValue);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue);
}

// An emulator build runs the CPU path's tests with CUDA_VISIBLE_DEVICES empty (tests/CMakeLists.txt):
// as under a real runtime, nothing may then see a device or use one, not even for work that would do
// nothing. The child process sets it; exit code 0 means every check held, k the k-th failed.
TEST(EmulatorDevice, AnEmptyCudaVisibleDevicesHidesIt) {
  EXPECT_EXIT(
      {
        auto expect = [](int check, bool ok) {
          if (!ok) std::exit(check);
        };
        setenv("CUDA_VISIBLE_DEVICES", "", 1);
        int n = -1;
        void* p = reinterpret_cast<void*>(1);
        cudaStream_t s = nullptr;
        cudaEvent_t e = nullptr;
        cublasHandle_t blas = nullptr;
        expect(1, cudaGetDeviceCount(&n) == cudaErrorNoDevice && n == 0);
        expect(2, cudaMalloc(&p, 16) == cudaErrorNoDevice && p == nullptr);
        expect(3, cudaStreamCreate(&s) == cudaErrorNoDevice && cudaEventCreate(&e) == cudaErrorNoDevice);
        expect(4, cublasCreate(&blas) != CUBLAS_STATUS_SUCCESS);
        expect(5, cudaFree(nullptr) == cudaErrorNoDevice && cudaStreamSynchronize(nullptr) == cudaErrorNoDevice &&
                      cudaDeviceSynchronize() == cudaErrorNoDevice);
        expect(6, cudaMemcpyAsync(nullptr, nullptr, 0, cudaMemcpyDeviceToHost, nullptr) == cudaErrorNoDevice);
        // The calls above left cudaErrorNoDevice as the last error: clear it, so that only the
        // launch can set it again.
        expect(7, cudaGetLastError() == cudaErrorNoDevice && cudaGetLastError() == cudaSuccess);
        LRLAB_LAUNCH(1, 32, nullptr, fill_index)(nullptr, 0);
        expect(7, cudaGetLastError() == cudaErrorNoDevice);
        expect(8, !lrlab::cuda_available() && lrlab::parse_device("auto") == lrlab::Device::CPU);
        setenv("CUDA_VISIBLE_DEVICES", "1,0", 1);  // the first entry names a device the machine lacks
        expect(9, cudaGetDeviceCount(&n) == cudaErrorNoDevice);
        for (const char* visible : {"0", "0,1", "GPU-8c3f1a2e"}) {
          setenv("CUDA_VISIBLE_DEVICES", visible, 1);
          expect(10, cudaGetDeviceCount(&n) == cudaSuccess && n == 1);
        }
        std::exit(0);
      },
      ::testing::ExitedWithCode(0), "");
}

TEST(EmulatorKernels, FreshDeviceMemoryIsNaN) {
  float* d = device_alloc<float>(16);
  for (float x : download(d, 16)) EXPECT_TRUE(std::isnan(x));
  cudaFree(d);
}

// Successive launches release threads in different orders: without the barrier, some launch reads
// shared memory before thread 0 wrote it.
#if !defined(__SANITIZE_THREAD__)  // where ThreadSanitizer reports the race (EmulatorRaces)
TEST(EmulatorKernels, AMissingBarrierShowsInSomeLaunch) {
  int* d = device_alloc<int>(64);
  bool wrong = false;
  for (int sync = 1; sync >= 0; --sync)
    for (int launch = 0; launch < 4; ++launch) {
      LRLAB_LAUNCH(1, 64, nullptr, publish)(d, sync == 1);
      for (int x : download(d, 64)) {
        if (sync) ASSERT_EQ(x, 7) << "with the barrier, launch " << launch;
        wrong = wrong || x != 7;
      }
    }
  EXPECT_TRUE(wrong);
  cudaFree(d);
}
#endif

TEST(EmulatorKernels, SharedMemoryIsEachBlocksOwnAndStartsAsNaN) {
  const int blocks = 6, threads = 32;
  float* before = device_alloc<float>(blocks);
  float* own = device_alloc<float>(blocks * threads);
  LRLAB_LAUNCH(blocks, threads, nullptr, shared_per_block)(before, own);
  for (float x : download(before, blocks)) EXPECT_TRUE(std::isnan(x));
  const std::vector<float> v = download(own, blocks * threads);
  for (int i = 0; i < blocks * threads; ++i) ASSERT_EQ(v[i], static_cast<float>(i / threads));
  cudaFree(before);
  cudaFree(own);
}

TEST(EmulatorKernels, WarpShuffleAndBlockReduceSum) {
  float* out = device_alloc<float>(2);
  LRLAB_LAUNCH(1, 64, nullptr, warp_sum)(out);
  const std::vector<float> w = download(out, 2);
  EXPECT_EQ(w[0], 496.0f);         // 0 + ... + 31
  EXPECT_EQ(w[1], 496.0f + 1024);  // 32 + ... + 63
  std::vector<float> ones(64, 1.0f);
  float* in = device_alloc<float>(64);
  ASSERT_EQ(cudaMemcpy(in, ones.data(), 64 * sizeof(float), cudaMemcpyHostToDevice), cudaSuccess);
  LRLAB_LAUNCH(1, 64, nullptr, block_sum)(in, out);
  EXPECT_EQ(download(out, 1)[0], 64.0f);
  cudaFree(in);
  cudaFree(out);
}

using EmulatorFaults = ::testing::Test;

// The kernel `launch` queues stops the process, with a message matching `what`, when it runs.
void expect_device_fault(const std::function<void()>& launch, const char* what) {
  EXPECT_DEATH(
      {
        launch();
        cudaDeviceSynchronize();
      },
      what);
}

TEST(EmulatorFaults, ABarrierThatReturnedThreadsMiss) {
  int* d = device_alloc<int>(32);
  expect_device_fault([&] { LRLAB_LAUNCH(1, 32, nullptr, early_return_then_barrier)(d); },
                      "threads which already returned");
  cudaFree(d);
}

TEST(EmulatorFaults, AShuffleAfterLanesOfTheWarpReturned) {
  float* d = device_alloc<float>(32);
  expect_device_fault([&] { LRLAB_LAUNCH(1, 32, nullptr, early_return_then_shuffle)(d); },
                      "after some lanes of the warp exited");
  cudaFree(d);
}

TEST(EmulatorFaults, ThreadsWaitingAtDifferentBarriers) {
  float* d = device_alloc<float>(64);
  expect_device_fault([&] { LRLAB_LAUNCH(1, 64, nullptr, split_barriers)(d); }, "wait at different barriers");
  cudaFree(d);
}

TEST(EmulatorFaults, MoreSharedMemoryThanABlockHas) {
  float* d = device_alloc<float>(32);
  expect_device_fault([&] { LRLAB_LAUNCH(1, 32, nullptr, too_much_shared)(d); }, "exceeds 48 KiB");
  cudaFree(d);
}

#if defined(__SANITIZE_ADDRESS__)  // built with UBSan too (LRLAB_SANITIZE)
TEST(EmulatorFaults, AMisalignedVectorLoad) {
  float* d = device_alloc<float>(8);
  expect_device_fault([&] { LRLAB_LAUNCH(1, 1, nullptr, misaligned_vector_load)(d, d); }, "misaligned address");
  cudaFree(d);
}
#endif

TEST(EmulatorFaults, AHostPointerGivenToAKernel) {
  std::vector<int> host(8);
  EXPECT_DEATH(LRLAB_LAUNCH(1, 8, nullptr, fill_index)(host.data(), 8), "argument 0 is not device memory");
}

TEST(EmulatorFaults, HostCodeTouchingDeviceMemory) {
  int* d = device_alloc<int>(4);
  EXPECT_DEATH(
      {
        volatile int x = d[0];
        (void)x;
      },
      "host code touched device memory");
  EXPECT_DEATH(d[1] = 0, "host code touched device memory");
  cudaFree(d);
}

// Device memory is watched by AddressSanitizer: past the bytes asked for is out of bounds. A pointer
// to freed memory is no device memory any more.
TEST(EmulatorFaults, AKernelPastItsAllocationOrOnFreedMemory) {
  int* d = device_alloc<int>(30);
#if defined(__SANITIZE_ADDRESS__)
  expect_device_fault([&] { LRLAB_LAUNCH(1, 32, nullptr, fill_index)(d, 32); }, "use-after-poison");
  expect_device_fault([&] { LRLAB_LAUNCH(1, 1, nullptr, past_a_shared_int)(d); }, "heap-buffer-overflow");
#endif
  cudaFree(d);
  EXPECT_DEATH(LRLAB_LAUNCH(1, 32, nullptr, fill_index)(d, 30), "argument 0 is not device memory");
}

#if defined(__SANITIZE_THREAD__)
__global__ void count_without_atomics(int* out) { *out += 1; }

__global__ void every_block_writes(int* out) {
  if (threadIdx.x == 0) *out = static_cast<int>(blockIdx.x);
}

// Blocks (x, 0) and (x, 1) write the same cell: blocks gridDim.x apart in the run.
__global__ void column_writes(int* out) {
  if (threadIdx.x == 0) out[blockIdx.x] = static_cast<int>(blockIdx.y);
}

// With ThreadSanitizer every warp is a thread of its own: what the emulator's scheduling happens to
// order, and a GPU does not, is a race.
void expect_race(const std::function<void()>& launch) { expect_device_fault(launch, "ThreadSanitizer: data race"); }

TEST(EmulatorRaces, ThreadsOfABlockWithoutABarrier) {
  int* d = device_alloc<int>(64);
  expect_race([&] { LRLAB_LAUNCH(1, 64, nullptr, publish)(d, false); });
  LRLAB_LAUNCH(1, 64, nullptr, publish)(d, true);  // with the barrier: no race
  for (int x : download(d, 64)) EXPECT_EQ(x, 7);
  cudaFree(d);
}

TEST(EmulatorRaces, UnsynchronisedUpdatesOfOneLocation) {
  int* d = device_alloc<int>(1);
  expect_race([&] { LRLAB_LAUNCH(1, 64, nullptr, count_without_atomics)(d); });
  cudaFree(d);
}

TEST(EmulatorRaces, BlocksWritingOneLocation) {
  int* d = device_alloc<int>(1);
  expect_race([&] { LRLAB_LAUNCH(2, 32, nullptr, every_block_writes)(d); });
  LRLAB_LAUNCH(1, 32, nullptr, every_block_writes)(d);  // one block: no race
  LRLAB_LAUNCH(1, 32, nullptr, every_block_writes)(d);  // nor between launches
  EXPECT_EQ(download(d, 1)[0], 0);
  cudaFree(d);
}

// Atomics are what they are on a GPU: no race, and every update counts.
TEST(EmulatorRaces, AtomicUpdatesOfOneLocation) {
  int* d = device_alloc<int>(1);
  ASSERT_EQ(cudaMemset(d, 0, sizeof(int)), cudaSuccess);
  LRLAB_LAUNCH(2, 64, nullptr, count_with_atomics)(d);
  EXPECT_EQ(download(d, 1)[0], 128);
  cudaFree(d);
}

// Blocks an even distance apart in the run share a set of TSan fibers in some launches; over as many
// launches as it takes bits to number the blocks, every pair is apart in one.
TEST(EmulatorRaces, BlocksAnEvenDistanceApart) {
  int* d = device_alloc<int>(4);
  expect_race([&] {
    for (int launch = 0; launch < 3; ++launch) LRLAB_LAUNCH(dim3(4, 2), 32, nullptr, column_writes)(d);
  });
  cudaFree(d);
}
#endif

TEST(EmulatorFaults, ADestroyedStream) {
  cudaStream_t s = nullptr;
  ASSERT_EQ(cudaStreamCreate(&s), cudaSuccess);
  ASSERT_EQ(cudaStreamDestroy(s), cudaSuccess);
  EXPECT_DEATH(cudaStreamSynchronize(s), "destroyed");
}

TEST(EmulatorFaults, AGemmOperandPastItsAllocation) {
  cublasHandle_t h = nullptr;
  ASSERT_EQ(cublasCreate(&h), CUBLAS_STATUS_SUCCESS);
  float* a = device_alloc<float>(4 * 4);
  float* c = device_alloc<float>(4 * 4);
  const float one = 1, zero = 0;
  // 4 x 5 times 5 x 4 reads a fifth column of A that is not there.
  EXPECT_DEATH(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 4, 4, 5, &one, a, 4, c, 5, &zero, c, 4), "operand A");
  EXPECT_EQ(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 4, 4, 4, &one, a, 3, a, 4, &zero, c, 4),
            CUBLAS_STATUS_INVALID_VALUE);  // lda below the rows of A
  cudaFree(a);
  cudaFree(c);
  cublasDestroy(h);
}

TEST(EmulatorMemory, CopiesMustMatchTheirKindAndStayInBounds) {
  float* d = device_alloc<float>(8);
  std::vector<float> h(16);
  EXPECT_EQ(cudaMemcpy(d, h.data(), 8 * sizeof(float), cudaMemcpyDeviceToHost), cudaErrorInvalidValue);
  EXPECT_EQ(cudaMemcpy(d, h.data(), 16 * sizeof(float), cudaMemcpyHostToDevice), cudaErrorInvalidValue);
  EXPECT_EQ(cudaMemcpy(d, h.data(), 8 * sizeof(float), cudaMemcpyHostToDevice), cudaSuccess);
  cudaFree(d);
  // Freed device memory is not host memory either.
  EXPECT_EQ(cudaMemcpy(h.data(), d, 8 * sizeof(float), cudaMemcpyDeviceToHost), cudaErrorInvalidValue);
  EXPECT_EQ(cudaMemcpy(d, h.data(), 8 * sizeof(float), cudaMemcpyHostToHost), cudaErrorInvalidValue);
  (void)cudaGetLastError();
}

TEST(EmulatorMemory, RunningOutIsAnAllocationError) {
  size_t free_bytes = 0, total = 0;
  ASSERT_EQ(cudaMemGetInfo(&free_bytes, &total), cudaSuccess);
  void* p = nullptr;
  EXPECT_EQ(cudaMalloc(&p, free_bytes + 1), cudaErrorMemoryAllocation);
  EXPECT_EQ(p, nullptr);
  EXPECT_EQ(cudaGetLastError(), cudaErrorMemoryAllocation);
}

TEST(EmulatorCub, ScratchSizedForASmallerProblemIsRefused) {
  const int n = 100000;
  float* in = device_alloc<float>(n);
  float* out = device_alloc<float>(1);
  size_t small = 0, big = 0;
  ASSERT_EQ(cub::DeviceReduce::Reduce(nullptr, small, in, out, 10, std::plus<float>{}, 0.0f), cudaSuccess);
  ASSERT_EQ(cub::DeviceReduce::Reduce(nullptr, big, in, out, n, std::plus<float>{}, 0.0f), cudaSuccess);
  ASSERT_LT(small, big);
  char* scratch = device_alloc<char>(small);
  EXPECT_EQ(cub::DeviceReduce::Reduce(scratch, small, in, out, n, std::plus<float>{}, 0.0f), cudaErrorInvalidValue);
  cudaFree(scratch);
  cudaFree(in);
  cudaFree(out);
}

// Streams run their work only when the host waits for it, so code that reads results it did not
// wait for sees what the memory held before.
TEST(EmulatorStreams, WorkRunsOnlyOnceTheHostWaitsForIt) {
  const TestStream st;  // non-blocking: the legacy stream does not wait for it
  const int n = 64;
  int* d = device_alloc<int>(n);
  LRLAB_LAUNCH(1, n, st.get(), fill_index)(d, n);
  for (int x : download(d, n)) ASSERT_EQ(x, -1) << "a copy on the legacy stream ran before the kernel";
  st.sync();
  const std::vector<int> v = download(d, n);
  for (int i = 0; i < n; ++i) ASSERT_EQ(v[i], i);
  cudaFree(d);
}

TEST(EmulatorStreams, BlockingStreamsAndTheLegacyStreamWaitForEachOther) {
  cudaStream_t blocking = nullptr;
  ASSERT_EQ(cudaStreamCreate(&blocking), cudaSuccess);
  const int n = 64;
  int* d = device_alloc<int>(n);
  LRLAB_LAUNCH(1, n, blocking, fill_index)(d, n);
  std::vector<int> v = download(d, n);  // the legacy stream's copy waits for the kernel
  for (int i = 0; i < n; ++i) ASSERT_EQ(v[i], i);
  ASSERT_EQ(cudaMemsetAsync(d, 0, n * sizeof(int), nullptr), cudaSuccess);
  ASSERT_EQ(cudaMemcpyAsync(v.data(), d, n * sizeof(int), cudaMemcpyDeviceToHost, blocking), cudaSuccess);
  for (int x : v) ASSERT_EQ(x, 0) << "the blocking stream's copy did not wait for the legacy stream";
  cudaFree(d);
  ASSERT_EQ(cudaStreamDestroy(blocking), cudaSuccess);
}

TEST(EmulatorStreams, PageableSourcesAreStagedWhenTheCopyIsMade) {
  const TestStream st;
  int* d = device_alloc<int>(4);
  std::vector<int> h = {1, 2, 3, 4};
  ASSERT_EQ(cudaMemcpyAsync(d, h.data(), 4 * sizeof(int), cudaMemcpyHostToDevice, st.get()), cudaSuccess);
  h.assign(4, 99);
  st.sync();
  EXPECT_EQ(download(d, 4), (std::vector<int>{1, 2, 3, 4}));
  cudaFree(d);
}

TEST(EmulatorStreams, EventsMarkAPointInTheirStream) {
  const TestStream st;
  const int n = 32;
  int* d = device_alloc<int>(n);
  cudaEvent_t start = nullptr, end = nullptr;
  ASSERT_EQ(cudaEventCreate(&start), cudaSuccess);
  ASSERT_EQ(cudaEventCreate(&end), cudaSuccess);
  ASSERT_EQ(cudaEventRecord(start, st.get()), cudaSuccess);
  LRLAB_LAUNCH(1, n, st.get(), fill_index)(d, n);
  ASSERT_EQ(cudaEventRecord(end, st.get()), cudaSuccess);
  ASSERT_EQ(cudaMemsetAsync(d, 0, n * sizeof(int), st.get()), cudaSuccess);  // after the event
  float ms = 0;
  EXPECT_EQ(cudaEventElapsedTime(&ms, start, end), cudaErrorNotReady);
  (void)cudaGetLastError();
  ASSERT_EQ(cudaEventSynchronize(end), cudaSuccess);
  EXPECT_EQ(cudaEventElapsedTime(&ms, start, end), cudaSuccess);
  const std::vector<int> v = download(d, n);
  for (int i = 0; i < n; ++i) ASSERT_EQ(v[i], i) << "the wait went past the event";
  st.sync();
  for (int x : download(d, n)) ASSERT_EQ(x, 0);
  // Recorded again, then destroyed before the stream reaches either record.
  ASSERT_EQ(cudaEventRecord(end, st.get()), cudaSuccess);
  ASSERT_EQ(cudaEventRecord(start, st.get()), cudaSuccess);
  ASSERT_EQ(cudaEventSynchronize(end), cudaSuccess);
  cudaEventDestroy(start);
  cudaEventDestroy(end);
  st.sync();
  cudaFree(d);
}

// Freeing memory waits for the whole device; a graph destroyed while its launch is queued still runs.
TEST(EmulatorStreams, FreeingWaitsForEveryStreamAndQueuedGraphsOutliveTheirHandles) {
  const TestStream st;
  const int n = 32;
  int* d = device_alloc<int>(n);
  int* other = device_alloc<int>(1);
  cudaGraph_t g = nullptr;
  cudaGraphExec_t e = nullptr;
  ASSERT_EQ(cudaStreamBeginCapture(st.get(), cudaStreamCaptureModeThreadLocal), cudaSuccess);
  LRLAB_LAUNCH(1, n, st.get(), fill_index)(d, n);
  ASSERT_EQ(cudaStreamEndCapture(st.get(), &g), cudaSuccess);
  ASSERT_EQ(cudaGraphInstantiate(&e, g, 0), cudaSuccess);
  ASSERT_EQ(cudaGraphLaunch(e, st.get()), cudaSuccess);
  cudaGraphExecDestroy(e);
  cudaGraphDestroy(g);
  cudaFree(other);
  const std::vector<int> v = download(d, n);
  for (int i = 0; i < n; ++i) ASSERT_EQ(v[i], i);
  cudaFree(d);
}

// LRLAB_EMULATOR_EAGER=1 (set for these tests by tests/CMakeLists.txt): work runs as it is submitted,
// so a kernel's fault stops the process at its launch.
TEST(EmulatorEager, WorkRunsAsItIsSubmitted) {
  ASSERT_STREQ(std::getenv("LRLAB_EMULATOR_EAGER"), "1");
  const TestStream st;
  const int n = 64;
  int* d = device_alloc<int>(n);
  LRLAB_LAUNCH(1, n, st.get(), fill_index)(d, n);
  const std::vector<int> v = download(d, n);  // no wait for st: the kernel ran already
  for (int i = 0; i < n; ++i) ASSERT_EQ(v[i], i);
  EXPECT_DEATH(LRLAB_LAUNCH(1, 32, st.get(), early_return_then_barrier)(d), "threads which already returned");
  cudaFree(d);
}

TEST(EmulatorCapture, GraphsReplayWithTheArgumentsOfTheirCapture) {
  const TestStream st;
  const int n = 8;
  int* d = device_alloc<int>(n);
  cudaGraph_t g = nullptr;
  cudaGraphExec_t e = nullptr;
  ASSERT_EQ(cudaStreamBeginCapture(st.get(), cudaStreamCaptureModeThreadLocal), cudaSuccess);
  int count = n;
  LRLAB_LAUNCH(1, 32, st.get(), fill_index)(d, count);
  count = 0;  // the launch took its value already
  ASSERT_EQ(cudaStreamEndCapture(st.get(), &g), cudaSuccess);
  for (int x : download(d, n)) EXPECT_EQ(x, -1) << "nothing runs during capture (fresh memory is all ones)";
  ASSERT_EQ(cudaGraphInstantiate(&e, g, 0), cudaSuccess);
  ASSERT_EQ(cudaGraphLaunch(e, st.get()), cudaSuccess);
  st.sync();
  const std::vector<int> v = download(d, n);
  for (int i = 0; i < n; ++i) EXPECT_EQ(v[i], i);
  cudaGraphExecDestroy(e);
  cudaGraphDestroy(g);
  cudaFree(d);
}

// Synchronising or allocating while capturing fails and invalidates the capture; the stream then
// refuses work until the capture ends, and ending it reports the invalidation.
TEST(EmulatorCapture, ForbiddenCallsInvalidateTheCapture) {
  const TestStream st;
  int* d = device_alloc<int>(4);
  for (int what = 0; what < 3; ++what) {
    ASSERT_EQ(cudaStreamBeginCapture(st.get(), cudaStreamCaptureModeThreadLocal), cudaSuccess);
    void* p = nullptr;
    std::vector<int> h(4);
    const cudaError_t err = what == 0   ? cudaStreamSynchronize(st.get())
                            : what == 1 ? cudaMalloc(&p, 16)
                                        : cudaMemcpyAsync(h.data(), d, 16, cudaMemcpyDeviceToHost, st.get());
    EXPECT_EQ(err, cudaErrorStreamCaptureUnsupported) << what;
    EXPECT_EQ(cudaMemsetAsync(d, 0, 16, st.get()), cudaErrorStreamCaptureInvalidated) << what;
    cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
    EXPECT_EQ(cudaStreamIsCapturing(st.get(), &status), cudaSuccess);
    EXPECT_EQ(status, cudaStreamCaptureStatusInvalidated);
    cudaGraph_t g = nullptr;
    EXPECT_EQ(cudaStreamEndCapture(st.get(), &g), cudaErrorStreamCaptureInvalidated) << what;
    EXPECT_EQ(g, nullptr);
    (void)cudaGetLastError();
  }
  cudaFree(d);
}

// fail_capture_at(n): the n-th piece of work recorded (from 0, over the captures that follow) fails
// and invalidates its capture; work outside captures does not count, and the next capture records.
TEST(EmulatorCapture, ACaptureFailsAtTheWorkItIsToldTo) {
  const TestStream st;
  int* d = device_alloc<int>(4);
  lrlab_emu::fail_capture_at(2);
  EXPECT_EQ(cudaMemsetAsync(d, 0, 16, st.get()), cudaSuccess) << "not captured: not counted";
  ASSERT_EQ(cudaStreamBeginCapture(st.get(), cudaStreamCaptureModeThreadLocal), cudaSuccess);
  EXPECT_EQ(cudaMemsetAsync(d, 1, 16, st.get()), cudaSuccess);
  cudaGraph_t g = nullptr;
  ASSERT_EQ(cudaStreamEndCapture(st.get(), &g), cudaSuccess);
  ASSERT_EQ(cudaGraphDestroy(g), cudaSuccess);
  ASSERT_EQ(cudaStreamBeginCapture(st.get(), cudaStreamCaptureModeThreadLocal), cudaSuccess);
  EXPECT_EQ(cudaMemsetAsync(d, 2, 16, st.get()), cudaSuccess);
  EXPECT_EQ(cudaMemsetAsync(d, 3, 16, st.get()), cudaErrorStreamCaptureInvalidated);
  EXPECT_EQ(cudaGetLastError(), cudaErrorStreamCaptureInvalidated);
  EXPECT_EQ(cudaMemsetAsync(d, 4, 16, st.get()), cudaErrorStreamCaptureInvalidated) << "and the rest of it";
  EXPECT_EQ(cudaStreamEndCapture(st.get(), &g), cudaErrorStreamCaptureInvalidated);
  (void)cudaGetLastError();
  ASSERT_EQ(cudaStreamBeginCapture(st.get(), cudaStreamCaptureModeThreadLocal), cudaSuccess);
  EXPECT_EQ(cudaMemsetAsync(d, 5, 16, st.get()), cudaSuccess) << "fails once";
  ASSERT_EQ(cudaStreamEndCapture(st.get(), &g), cudaSuccess);
  ASSERT_EQ(cudaGraphDestroy(g), cudaSuccess);
  lrlab_emu::fail_capture_at(-1);
  cudaFree(d);
}

TEST(EmulatorCapture, GemmsNeedAWorkspaceSetAfterTheStream) {
  const TestStream st;
  cublasHandle_t h = nullptr;
  ASSERT_EQ(cublasCreate(&h), CUBLAS_STATUS_SUCCESS);
  void* ws = nullptr;
  ASSERT_EQ(cudaMalloc(&ws, 1 << 20), cudaSuccess);
  ASSERT_EQ(cublasSetWorkspace(h, ws, 1 << 20), CUBLAS_STATUS_SUCCESS);
  ASSERT_EQ(cublasSetStream(h, st.get()), CUBLAS_STATUS_SUCCESS);  // resets the workspace
  float* a = device_alloc<float>(16);
  const float one = 1, zero = 0;
  ASSERT_EQ(cudaStreamBeginCapture(st.get(), cudaStreamCaptureModeThreadLocal), cudaSuccess);
  EXPECT_DEATH(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 4, 4, 4, &one, a, 4, a, 4, &zero, a, 4), "workspace");
  cudaGraph_t g = nullptr;
  ASSERT_EQ(cudaStreamEndCapture(st.get(), &g), cudaSuccess);
  cudaGraphDestroy(g);
  cudaFree(a);
  cudaFree(ws);
  cublasDestroy(h);
}

// Work for the legacy stream would wait for a blocking stream that is capturing: refused, and the
// capture is lost.
TEST(EmulatorCapture, LegacyStreamWorkDuringABlockingCaptureIsRefused) {
  cudaStream_t blocking = nullptr;
  ASSERT_EQ(cudaStreamCreate(&blocking), cudaSuccess);
  int* d = device_alloc<int>(4);
  ASSERT_EQ(cudaStreamBeginCapture(blocking, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  EXPECT_EQ(cudaMemsetAsync(d, 0, 16, nullptr), cudaErrorStreamCaptureImplicit);
  cudaGraph_t g = nullptr;
  EXPECT_EQ(cudaStreamEndCapture(blocking, &g), cudaErrorStreamCaptureInvalidated);
  (void)cudaGetLastError();
  // A non-blocking stream's capture leaves the legacy stream free.
  const TestStream other;
  ASSERT_EQ(cudaStreamBeginCapture(other.get(), cudaStreamCaptureModeThreadLocal), cudaSuccess);
  EXPECT_EQ(cudaMemsetAsync(d, 0, 16, nullptr), cudaSuccess);
  ASSERT_EQ(cudaStreamEndCapture(other.get(), &g), cudaSuccess);
  cudaGraphDestroy(g);
  cudaFree(d);
  cudaStreamDestroy(blocking);
}

TEST(EmulatorFaults, BatchedGemmOutputsThatOverlap) {
  cublasHandle_t h = nullptr;
  ASSERT_EQ(cublasCreate(&h), CUBLAS_STATUS_SUCCESS);
  float* a = device_alloc<float>(64);
  const float one = 1, zero = 0;
  // Two 4 x 4 outputs 8 floats apart share their last two columns.
  EXPECT_DEATH(cublasSgemmStridedBatched(h, CUBLAS_OP_N, CUBLAS_OP_N, 4, 4, 4, &one, a, 4, 0, a, 4, 0, &zero, a, 4, 8,
                                         2),
               "overlap");
  cudaFree(a);
  cublasDestroy(h);
}

TEST(EmulatorCounters, SynchronisationsAndCopiesToTheHostAreWaits) {
  const TestStream st;
  int* d = device_alloc<int>(4);
  std::vector<int> h(4);
  const lrlab_emu::Counters a = lrlab_emu::counters();
  ASSERT_EQ(cudaMemcpyAsync(d, h.data(), 16, cudaMemcpyHostToDevice, st.get()), cudaSuccess);  // staged, no wait
  ASSERT_EQ(cudaMemcpyAsync(d + 2, d, 8, cudaMemcpyDeviceToDevice, st.get()), cudaSuccess);
  const lrlab_emu::Counters b = lrlab_emu::counters();
  EXPECT_EQ(b.host_waits, a.host_waits);
  EXPECT_EQ(b.direct_work, a.direct_work + 2);
  ASSERT_EQ(cudaMemcpyAsync(h.data(), d, 16, cudaMemcpyDeviceToHost, st.get()), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(st.get()), cudaSuccess);
  EXPECT_EQ(lrlab_emu::counters().host_waits, b.host_waits + 2);
  cudaFree(d);
}

}  // namespace
