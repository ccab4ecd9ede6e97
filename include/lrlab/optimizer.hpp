// Fused optimizers: one call updates every parameter of K replicas (K = 1 for plain training), each
// replica with its own step counter, schedule table, base rate and scale, in one pass over memory
// (one kernel launch on the GPU). Parameters are a flat fp32 buffer, replicas back to back or in any
// packing of packing.hpp.
//
//   lrlab::OptimizerSetup setup;
//   setup.lr = 1e-3f;
//   lrlab::Optimizer opt("adamw(wd=0.01)", lrlab::Device::CUDA, n_params, setup);
//   opt.set_schedule(lrlab::Schedule::parse("warmup(steps=100)+cosine(steps=900)").table(1000, 1e-3));
//   opt.step(d_params, d_grads);   // capturable in a CUDA graph
//
// Errors (bad settings, sizes, states) throw lrlab::Error and leave the optimizer as it was. One
// optimizer is not safe to use from several threads at once, not even through its const members:
// on the CUDA path they refresh the host's copy of the counters. A moved-from optimizer throws on
// every call until a new one is assigned to it.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "lrlab/device.hpp"
#include "lrlab/packing.hpp"
#include "lrlab/update_rules.hpp"

namespace lrlab {

namespace detail {
struct OptimizerAccess;  // the library's and its benchmarks' view of the kernel set-up
}  // namespace detail

// Parses "adam(beta1=0.9,beta2=0.999,eps=1e-8,wd=0,amsgrad=false)" and the other names of
// docs/OPTIMIZERS.md (sgd, adam, adamw, rmsprop, adagrad). Keys every optimizer accepts: wd (alias
// weight_decay), maximize, clip (max global gradient norm), check_finite, keras (Keras's rules and
// defaults instead of PyTorch's).
OptimizerHyper parse_optimizer(const std::string& spec);
const char* optimizer_name(OptimKind kind);
// Bytes one fp32 step must move per parameter (docs/OPTIMIZERS.md's bandwidth floor).
int bytes_per_param(const OptimizerHyper& h);

// A range of each replica's parameters with its own rate multiplier and weight decay (for example
// no decay on biases, or a lower rate for early layers). Parameters outside every group are not
// updated, but their gradients still count in the clipping norm and the finite check, which cover
// the whole buffer given to step().
struct ParamGroup {
  int64_t begin = 0, end = 0;
  float lr_mult = 1.0f;
  float weight_decay = -1.0f;  // < 0: the optimizer's default
};
constexpr int kMaxParamGroups = 16;

struct OptimizerSetup {
  float lr = 1e-3f;                // base rate of every replica (when lrs is empty; checked either way)
  int64_t replicas = 1;
  // Per replica, as set_lr(lrs[r], r) and set_schedule(tables[r], r) after construction would set
  // them, with one wait for the device instead of one per call. Empty: lr for every replica, and
  // no table (a constant 1).
  std::vector<float> lrs;
  std::vector<std::vector<float>> tables;
  int64_t replica_stride = 0;      // floats between replicas; 0 = n_params
  std::vector<ReplicaBlock> blocks;  // or any packing (packing.hpp); empty: back to back
  std::vector<ParamGroup> groups;  // empty: one group over all parameters
  cudaStream_t stream = nullptr;   // CUDA path: every launch and copy goes on this stream
};

class Optimizer {
 public:
  Optimizer(const std::string& spec, Device device, int64_t n_params, OptimizerSetup setup = {});
  Optimizer(const OptimizerHyper& hyper, Device device, int64_t n_params, OptimizerSetup setup = {});
  ~Optimizer();
  Optimizer(Optimizer&&) noexcept;
  Optimizer& operator=(Optimizer&&) noexcept;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  // One step over all replicas. params/grads hold packing().span() floats, in host memory
  // for Device::CPU and device memory for Device::CUDA. bf16_copy (optional, same shape) receives
  // the updated weights rounded to bf16 in the same pass. Only what the step updates is written, as
  // with Apex's model copies: weights outside every group, and every weight of a replica whose step
  // is skipped (the finite check, a frozen replica), keep what the copy held, so fill it from the
  // weights before the first step. On the CUDA path this enqueues work on the stream and never
  // synchronises, so it can be captured in a CUDA graph. Launch such a graph
  // on that same stream: the host-side calls below (setters, reads, save) order themselves after
  // the work of that stream only.
  void step(float* params, const float* grads, uint16_t* bf16_copy = nullptr);
  // Checked form for host buffers: each holds at least packing().span() floats (K x stride, say);
  // floats past the span are not read or written.
  void step(std::vector<float>& params, const std::vector<float>& grads);

  // Manual lowering: the base rate, for one replica or all (replica = -1). Takes effect at the next
  // step, also inside a replayed CUDA graph.
  void set_lr(float base_lr, int64_t replica = -1);
  // Dynamic multiplier (reduce-on-plateau, divergence guard). A scale of 0 freezes the replica:
  // its steps are skipped (skipped = kSkippedFrozen), not counted, and leave weights, moments and
  // bf16 copy as they are (an update at rate 0 would still move the moments, and the weights under
  // Keras's momentum forms). A scale above 0 thaws it, after checking its moments as load() does.
  void set_scale(float scale, int64_t replica = -1);
  // Schedule multipliers table[0..T-1]; the last value holds past T. Empty: constant 1. The table is
  // indexed by the optimizer's step count, as optax's and Keras's schedules are: a table installed
  // after 300 steps starts at its entry 300 (to start a new schedule there, prepend 300 entries).
  // The rates base x table x scale x group multiplier must stay finite in fp32 (checked here and in
  // set_lr and set_scale).
  void set_schedule(const std::vector<float>& table, int64_t replica = -1);
  // Gradients arrive multiplied by this loss scale; they are divided by it in the kernel. The first
  // call turns the finite check on (a step whose gradients hold inf or NaN is skipped and not
  // counted, as with PyTorch's GradScaler), so make it before capturing step() in a CUDA graph;
  // later calls only change the scale. A skipped step does not advance the step count, which is
  // also the schedule's position: the schedule waits too (a PyTorch loop that calls
  // scheduler.step() every iteration moves on). With `clip`, a non-finite gradient norm skips the
  // step the same way, check_finite or not (PyTorch's clip_grad_norm_ would write NaN weights).
  void set_grad_scale(float scale);
  // Sets the step count of a replica (0 to 2^52). It is both the schedule position and the t of
  // the update rules: Adam's bias corrections restart with it, and SGD's momentum buffer is replaced
  // by the gradient at the step after a count of 0 (PyTorch's form; Keras's buffer carries on).
  // Resuming a run restores it with load().
  void set_step(int64_t step, int64_t replica = -1);
  // Zeroes the moments and counters of one replica (step, skipped), as a fresh optimizer starts.
  // Its base rate, scale and table stay: set them for a new configuration.
  void reset_replica(int64_t replica);

  // Host reads (synchronise the stream on the CUDA path; not for the hot loop).
  ReplicaState replica_state(int64_t replica = 0) const;
  int64_t step_count(int64_t replica = 0) const { return replica_state(replica).step; }
  // The rate the next step will use for group 0 (before the group multiplier).
  float next_lr(int64_t replica = 0) const;
  std::vector<float> state_buffer(int index) const;  // all replicas as packed, host copy

  // The whole optimizer state: hyperparameters, counters, scales, tables and moments.
  std::string save() const;
  // Restores a state saved by an optimizer of the same kind (Adam and AdamW count as one), shape and
  // state buffers (rmsprop with momentum keeps other buffers than centered rmsprop); throws
  // lrlab::Error otherwise (also for a checksum that does not match, NaN moments, negative running
  // squares or rates that overflow, except in replicas frozen at scale 0). From the state: each
  // replica's step count, base rate, scale, gradient scale, schedule table and moments, replacing
  // any set before. From this optimizer: the hyperparameters of its spec (a resumed run may change
  // them) and its parameter groups (not part of the state: loading under other groups is not
  // detected).
  void load(const std::string& bytes);
  // One spare copy of the whole state (counters, scales, moments), kept where the state lives: stash()
  // overwrites it, unstash() rolls back to it. On the CUDA path the moments move device to device:
  // stash() is enqueued on the stream without a host sync (a guard can keep a good state every few
  // steps); unstash(), the rare rollback, synchronises once to restore the counters.
  void stash();
  void unstash();
  // One replica's state, to move a replica between optimizers of the same kind and replica size
  // (a sweep compacting its survivors).
  std::string save_replica(int64_t replica) const;
  void load_replica(int64_t replica, const std::string& bytes);

  const OptimizerHyper& hyper() const;
  Device device() const;
  int64_t n_params() const;
  int64_t replicas() const;
  const ReplicaPacking& packing() const;
  int num_state_buffers() const;
  const std::vector<ParamGroup>& groups() const;

  struct Impl;

 private:
  friend struct detail::OptimizerAccess;
  Impl& self() const;  // throws for a moved-from optimizer
  std::unique_ptr<Impl> impl_;
};

}  // namespace lrlab
