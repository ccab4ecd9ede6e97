// The training engine: K replicas of one MLP (K = 1 for `lrlab train`, K > 1 for a packed sweep)
// trained on shared minibatches, each replica with its own initial weights, base rate and schedule
// table, all updated by one fused optimizer step. On the GPU the data set lives on the device,
// minibatches are gathered there, and each step (gather, forward, loss, backward, optimizer) is
// replayed from a CUDA graph; the host reads losses once per run() call, not per step.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "lrlab/data.hpp"
#include "lrlab/device.hpp"
#include "lrlab/mlp.hpp"
#include "lrlab/optimizer.hpp"

namespace lrlab {

struct ReplicaSpec {
  float lr = 1e-3f;
  std::string schedule = "constant";
  uint64_t init_seed = 0;
};

struct EngineConfig {
  MlpConfig model;
  std::string optimizer = "adam()";
  std::vector<ReplicaSpec> replicas = {ReplicaSpec{}};
  int64_t batch = 128;
  int64_t epochs = 10;       // with steps per epoch, the horizon of the schedule tables
  uint64_t data_seed = 0;    // the data order: shared by every replica
  Device device = Device::CPU;
  bool tf32 = false;
  bool graphs = true;        // replay steps from CUDA graphs (GPU)
  bool bias_decay = true;    // weight decay on biases too (PyTorch's default); false: weights only
};

enum class Split { Train, Val, Test };

// The data splits of one DataSplits uploaded to the current GPU once, for engines that share them
// (a sweep's streams, the range tests of several optimizers): without it every GPU engine keeps
// its own copy. The upload has finished when upload_to_device returns, so engines on any stream
// of that device may read it; it stays alive while an engine holds it.
class DeviceData;
std::shared_ptr<const DeviceData> upload_to_device(const DataSplits& data);
// The engines recognise their data by its address: a temporary's is gone.
std::shared_ptr<const DeviceData> upload_to_device(DataSplits&&) = delete;

class TrainEngine {
 public:
  // `data` must outlive the engine. Throws lrlab::Error for mismatched shapes (validate_dataset on
  // each split, and the splits against each other and the model) or bad specs. A GPU
  // engine reads `shared` (made from this `data`, on the current device) when given one, and
  // uploads its own copy otherwise; CPU engines ignore it.
  TrainEngine(EngineConfig config, const DataSplits& data,
              std::shared_ptr<const DeviceData> shared = nullptr);
  // It reads `data` in place: a temporary would be gone before the first step.
  TrainEngine(EngineConfig, DataSplits&&, std::shared_ptr<const DeviceData> = nullptr) = delete;
  ~TrainEngine();
  TrainEngine(const TrainEngine&) = delete;
  TrainEngine& operator=(const TrainEngine&) = delete;

  int64_t replicas() const;
  int64_t steps_per_epoch() const;
  int64_t total_steps() const;
  // Steps replayed from a CUDA graph so far (0 on the CPU, or with graphs off).
  int64_t graph_launches() const;
  const MlpLayout& layout() const;
  const EngineConfig& config() const;
  Optimizer& optimizer();

  // Selects the data order of `epoch` and rewinds to its first minibatch.
  void begin_epoch(int64_t epoch);
  int64_t epoch() const;
  int64_t steps_left_in_epoch() const;
  // Trains on the next `steps` minibatches of the epoch (at most steps_left_in_epoch()) and returns
  // their losses, [steps x replicas] row-major.
  std::vector<float> run(int64_t steps);

  struct Eval {
    // Per replica; accuracy NaN for regression, both NaN for an empty split.
    std::vector<double> loss, accuracy;
  };
  Eval evaluate(Split split);

  // The data set on the GPU this engine reads (shared or its own); null on the CPU.
  std::shared_ptr<const DeviceData> device_data() const;

  // Host copies of all replicas' parameters, replica after replica [replicas x layout.size()]
  std::vector<float> params() const;
  void set_params(const std::vector<float>& params);

  // Weights and optimizer state, in memory: the divergence guard's last good state.
  struct Snapshot {
    std::vector<float> params;
    std::string optimizer;
  };
  Snapshot snapshot() const;
  void restore(const Snapshot& s);

  // The same kept in place (device memory on the GPU, no host sync): one spare copy of weights and
  // optimizer state that unstash() rolls back to. For a guard that keeps a good state every few steps.
  // unstash() also rewinds the epoch to the minibatch stash() was called at, so the steps undone
  // train again on the same data (a stash from an earlier epoch rewinds to the current one's start).
  void stash();
  void unstash();

  // The schedule table each replica was given (multipliers over total_steps()).
  const std::vector<float>& table(int64_t replica) const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace lrlab
