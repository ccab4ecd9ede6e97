// Training checkpoints: one versioned binary file with a CRC-32 over its payload, written to a
// temporary file, flushed and renamed, so a crash during a save leaves the previous one intact.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "lrlab/plateau.hpp"
#include "lrlab/smoothed_loss.hpp"

namespace lrlab {

struct GuardState {
  double scale = 1.0;      // the guard's factor on the rate
  int64_t events = 0;
  SmoothedLoss loss;       // the training loss it watches
  double start = 0;        // the run's first smoothed loss (0: unknown)
};

struct Checkpoint {
  std::string model;         // JSON: the architecture and data the weights belong to
  int64_t epochs_done = 0;   // completed epochs: the next epoch's data order follows from it
  int64_t step = 0;
  uint64_t data_seed = 0;
  std::vector<float> params;
  std::string optimizer;     // Optimizer::save()
  GuardState guard;
  bool has_plateau = false;
  PlateauState plateau;
  // What the step count and the data order mean: a resumed run must cut the same minibatches from
  // the same split. 0: not recorded (files before version 4).
  int64_t batch = 0;
  int64_t train_samples = 0, val_samples = 0, test_samples = 0;
};

// 2: the optimizer state records how its replicas are packed (packing.hpp).
// 3: the guard records the run's first loss (GuardState::start).
// 4: the batch size and the sizes of the split. Versions 2 and 3 are still read.
constexpr uint32_t kCheckpointVersion = 4;

std::string encode_checkpoint(const Checkpoint& c);
// `name` appears in errors. Throws lrlab::Error for a foreign, corrupt, truncated or newer file.
Checkpoint decode_checkpoint(const std::string& bytes, const std::string& name);

void save_checkpoint(const std::string& path, const Checkpoint& c);
Checkpoint load_checkpoint(const std::string& path);

}  // namespace lrlab
