#include "lrlab/train_engine.hpp"

#include <algorithm>
#include <cmath>

#include "lrlab/device.hpp"
#include "lrlab/device_buffer.hpp"
#include "lrlab/error.hpp"
#include "lrlab/schedule.hpp"
#include "train_kernels.hpp"

namespace lrlab {

namespace {

struct DeviceSplit {
  DeviceBuffer<float> x, y;
  DeviceBuffer<int32_t> labels;
};

DeviceSplit upload_split(const Dataset& d, cudaStream_t s) {
  DeviceSplit out;
  out.x = DeviceBuffer<float>::from(d.x, s);
  out.y = DeviceBuffer<float>::from(d.y, s);
  out.labels = DeviceBuffer<int32_t>::from(d.labels, s);
  return out;
}

std::vector<ParamGroup> make_groups(const MlpLayout& layout, bool bias_decay) {
  if (bias_decay) return {};
  std::vector<ParamGroup> groups;
  for (const ParamRange& r : layout.weight_ranges()) groups.push_back({r.begin, r.end, 1.0f, -1.0f});
  for (const ParamRange& r : layout.bias_ranges()) groups.push_back({r.begin, r.end, 1.0f, 0.0f});
  LRLAB_REQUIRE(static_cast<int>(groups.size()) <= kMaxParamGroups, "a network of ", groups.size() / 2,
                " layers has too many parameter groups to exempt biases from decay (at most ",
                kMaxParamGroups / 2, " layers)");
  return groups;
}

}  // namespace

class DeviceData {
 public:
  const DataSplits* source;
  int device;
  DeviceSplit train, val, test;

  const DeviceSplit& split(Split which) const {
    return which == Split::Train ? train : which == Split::Val ? val : test;
  }
};

std::shared_ptr<const DeviceData> upload_to_device(const DataSplits& data) {
  require_cuda("an upload of the data to the GPU");
  auto out = std::make_shared<DeviceData>();
  out->source = &data;
  out->device = current_gpu();
  // The legacy default stream: the copies from pageable memory are complete once it is idle.
  out->train = upload_split(data.train, nullptr);
  out->val = upload_split(data.val, nullptr);
  out->test = upload_split(data.test, nullptr);
  LRLAB_CUDA_CHECK(cudaStreamSynchronize(nullptr));
  return out;
}

struct TrainEngine::Impl {
  EngineConfig cfg;
  const DataSplits& data;
  MlpLayout layout;
  int64_t K, P, spe, total;
  int64_t epoch = -1, cursor = 0;
  // Where stash() was called: unstash() trains the minibatches after it again.
  int64_t stash_epoch = -1, stash_cursor = 0;
  std::vector<std::vector<float>> tables;
  // Created by make_optimizer(); declared before everything that uses it, so destroyed after them.
  struct OwnedStream {
    cudaStream_t s = nullptr;
    ~OwnedStream() {
      if (s) cudaStreamDestroy(s);
    }
  } owned_stream;
  cudaStream_t stream = nullptr;
  Optimizer opt;
  // Where each replica's parameters lie in params/d_params (and grads): mlp_packing's order. The
  // public API speaks replica after replica.
  ReplicaPacking packing;

  // CPU path
  std::unique_ptr<MlpCpu> cpu;
  std::vector<float> params, grads, xb, yb, loss;
  std::vector<int32_t> lb, perm;

  // CUDA path
  std::unique_ptr<MlpCuda> gpu;
  DeviceBuffer<float> d_params, d_grads, d_xb, d_yb, d_loss, d_ring, d_stash;
  std::vector<float> stash_params;
  DeviceBuffer<int32_t> d_lb, d_perm;
  DeviceBuffer<int64_t> d_cursor, d_stash_cursor;
  std::shared_ptr<const DeviceData> d_data;  // the data set on the device, maybe shared
  cudaGraphExec_t graph_full = nullptr, graph_last = nullptr;
  int eager_full = 0, eager_last = 0;
  int64_t graph_launches = 0;

  Impl(EngineConfig c, const DataSplits& d, std::shared_ptr<const DeviceData> shared)
      : cfg(std::move(c)),
        data(d),
        layout(cfg.model),
        K(static_cast<int64_t>(cfg.replicas.size())),
        P(layout.size()),
        spe(0),
        total(0),
        opt(make_optimizer()),
        packing(opt.packing()),
        d_data(std::move(shared)) {}

  bool cuda() const { return cfg.device == Device::CUDA; }
  int64_t last_batch() const {
    int64_t rem = data.train.n % cfg.batch;
    return rem ? rem : cfg.batch;
  }

  Optimizer make_optimizer() {
    if (cfg.device == Device::CUDA) require_cuda("CUDA training");
    LRLAB_REQUIRE(K >= 1, "training needs at least one configuration");
    LRLAB_REQUIRE(cfg.batch >= 1, "batch size must be at least 1 (got ", cfg.batch, ")");
    LRLAB_REQUIRE(cfg.epochs >= 1, "epochs must be at least 1 (got ", cfg.epochs, ")");
    const Dataset& tr = data.train;
    validate_dataset(tr, "training set");
    validate_dataset(data.val, "validation set");
    validate_dataset(data.test, "test set");
    LRLAB_REQUIRE(tr.n >= 1, "the training set is empty");
    for (const auto& [split, name] : {std::pair{&data.val, "validation"}, std::pair{&data.test, "test"}})
      LRLAB_REQUIRE(split->n == 0 || (split->dim == tr.dim && split->targets_dim == tr.targets_dim &&
                                       split->num_classes == tr.num_classes),
                    "the ", name, " set's shape (", split->dim, " features, ", split->num_classes, " classes, ",
                    split->targets_dim, " targets) differs from the training set's (", tr.dim, ", ",
                    tr.num_classes, ", ", tr.targets_dim, ")");
    // A minibatch larger than the training set is the whole set, as PyTorch's DataLoader gives it
    // (and buffers are not sized for samples that do not exist).
    cfg.batch = std::min(cfg.batch, tr.n);
    LRLAB_REQUIRE(tr.dim == cfg.model.inputs, "the model takes ", cfg.model.inputs,
                  " inputs but the data has ", tr.dim, " features");
    if (tr.is_regression())
      LRLAB_REQUIRE(cfg.model.loss == LossKind::MeanSquaredError && tr.targets_dim == cfg.model.outputs,
                    "regression data with ", tr.targets_dim, " targets needs an mse model with as many outputs");
    else
      LRLAB_REQUIRE(cfg.model.loss == LossKind::SoftmaxCrossEntropy && tr.num_classes == cfg.model.outputs,
                    "classification data with ", tr.num_classes, " classes needs a cross-entropy model with as many outputs");
    spe = (tr.n + cfg.batch - 1) / cfg.batch;
    LRLAB_REQUIRE(cfg.epochs <= kMaxTableSteps / spe, "training for ", cfg.epochs, " epochs of ", spe,
                  " steps exceeds the schedule table limit of ", kMaxTableSteps, " steps");
    total = spe * cfg.epochs;
    for (const ReplicaSpec& r : cfg.replicas) {
      LRLAB_REQUIRE(std::isfinite(r.lr) && r.lr > 0, "learning rate must be positive and finite (got ", r.lr, ")");
      tables.push_back(Schedule::parse(r.schedule, static_cast<double>(spe)).table(total, r.lr));
    }
    require_room();
    if (cfg.device == Device::CUDA) {
      LRLAB_CUDA_CHECK(cudaStreamCreateWithFlags(&owned_stream.s, cudaStreamNonBlocking));
      stream = owned_stream.s;
    }
    OptimizerSetup setup;
    setup.lr = cfg.replicas[0].lr;
    setup.replicas = K;
    for (const ReplicaSpec& r : cfg.replicas) setup.lrs.push_back(r.lr);
    setup.tables = tables;
    setup.blocks = mlp_packing(layout, K).blocks();
    setup.groups = make_groups(layout, cfg.bias_decay);
    setup.stream = stream;
    return Optimizer(cfg.optimizer, cfg.device, layout.size(), std::move(setup));
  }

  // What the engine holds at the least: every replica's weights and gradients, and a minibatch's
  // activations forward and back (the optimizer's moments come on top). A model that cannot fit is
  // refused before anything of it is allocated.
  void require_room() const {
    const std::vector<LayerView>& layers = layout.layers();
    double activations = 0;  // per sample and replica: pre-activations and their gradients, outputs of hidden layers
    for (size_t l = 0; l < layers.size(); ++l) activations += (l + 1 < layers.size() ? 3.0 : 2.0) * layers[l].out;
    const double floats = 2.0 * static_cast<double>(mlp_packing(layout, K).span()) +
                          static_cast<double>(K) * static_cast<double>(cfg.batch) * activations;
    std::string what = "a model of " + std::to_string(P) + " parameters";
    if (K > 1) what = std::to_string(K) + " replicas of " + what;
    require_memory(cfg.device, floats * sizeof(float), what + " at batch " + std::to_string(cfg.batch),
                   K > 1 ? "a smaller --hidden or --batch, or --mode streams" : "a smaller --hidden or --batch");
  }

  void setup_buffers() {
    std::vector<uint64_t> seeds;
    for (const ReplicaSpec& r : cfg.replicas) seeds.push_back(r.init_seed);
    const int64_t B = cfg.batch;
    const int64_t ydim = data.train.targets_dim;
    if (!cuda()) {
      cpu = std::make_unique<MlpCpu>(layout, K, B);
      params.resize(static_cast<size_t>(packing.span()));
      init_params(layout, packing, seeds, params.data());
      grads.assign(params.size(), 0.0f);
      xb.resize(B * data.train.dim);
      yb.resize(B * ydim);
      lb.resize(B);
      loss.resize(K);
      d_data.reset();  // a CPU engine reads the host data
      return;
    }
    gpu = std::make_unique<MlpCuda>(layout, K, B, stream, cfg.tf32);
    // Drawn on the device, where they are used: for 64 replicas of the Fashion-MNIST MLP, drawing
    // them on the host, packing and copying 60 MB was one of the largest parts of a packed sweep's
    // set-up on an H200.
    d_params = DeviceBuffer<float>(packing.span());
    gpu->init_params(d_params.get(), seeds);
    d_grads = DeviceBuffer<float>(packing.span());
    d_xb = DeviceBuffer<float>(B * data.train.dim);
    d_yb = DeviceBuffer<float>(B * ydim);
    d_lb = DeviceBuffer<int32_t>(B);
    d_loss = DeviceBuffer<float>(K);
    d_ring = DeviceBuffer<float>(spe * K);
    d_perm = DeviceBuffer<int32_t>(data.train.n);
    d_cursor = DeviceBuffer<int64_t>(1);
    d_stash_cursor = DeviceBuffer<int64_t>(1);
    if (d_data) {
      LRLAB_REQUIRE(d_data->source == &data && d_data->device == current_gpu(),
                    "TrainEngine: the shared device data was uploaded from other data or to another GPU");
    } else {
      d_data = upload_to_device(data);
    }
  }

  void enqueue_step(int64_t bsz) {
    const Dataset& tr = data.train;
    const DeviceSplit& d_train = d_data->train;
    detail::cuda_gather_batch(d_train.x.get(), tr.is_regression() ? nullptr : d_train.labels.get(),
                              tr.is_regression() ? d_train.y.get() : nullptr, tr.dim, tr.targets_dim,
                              d_perm.get(), d_cursor.get(), cfg.batch, bsz, d_xb.get(), d_lb.get(),
                              d_yb.get(), stream);
    gpu->forward_backward(d_params.get(), d_xb.get(), tr.is_regression() ? nullptr : d_lb.get(),
                          tr.is_regression() ? d_yb.get() : nullptr, bsz, d_grads.get(), d_loss.get());
    opt.step(d_params.get(), d_grads.get());
    detail::cuda_record_and_advance(d_loss.get(), K, d_ring.get(), d_cursor.get(), stream);
  }

  // The first step of each shape runs eagerly (loading kernels outside any capture); later ones
  // replay a graph captured at the second.
  void gpu_step(int64_t bsz) {
    const bool full = bsz == cfg.batch;
    cudaGraphExec_t& exec = full ? graph_full : graph_last;
    int& eager = full ? eager_full : eager_last;
    if (!cfg.graphs || eager == 0) {
      ++eager;
      enqueue_step(bsz);
      return;
    }
    if (!exec) {
      cudaGraph_t graph = nullptr;
      LRLAB_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
      try {
        enqueue_step(bsz);
      } catch (...) {
        // Leave the stream usable: end the capture and drop what was recorded. Ending a broken
        // capture fails too; clear that error so that no later check reports it.
        if (cudaStreamEndCapture(stream, &graph) == cudaSuccess && graph) cudaGraphDestroy(graph);
        (void)cudaGetLastError();
        throw;
      }
      LRLAB_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
      // Into a local: CUDA leaves the handle unspecified when instantiation fails, and a later
      // run() must find no graph (and capture again), not launch that.
      cudaGraphExec_t made = nullptr;
      const cudaError_t err = cudaGraphInstantiate(&made, graph, 0);
      const cudaError_t destroyed = cudaGraphDestroy(graph);
      LRLAB_CUDA_CHECK(err);
      exec = made;
      LRLAB_CUDA_CHECK(destroyed);
    }
    LRLAB_CUDA_CHECK(cudaGraphLaunch(exec, stream));
    ++graph_launches;
  }

  void cpu_step(int64_t bsz, float* losses_out) {
    const Dataset& tr = data.train;
    const int64_t dim = tr.dim, ydim = tr.targets_dim;
    const int32_t* rows = perm.data() + cursor * cfg.batch;
    for (int64_t b = 0; b < bsz; ++b) {
      const int64_t src = rows[b];
      std::copy(tr.x.begin() + src * dim, tr.x.begin() + (src + 1) * dim, xb.begin() + b * dim);
      if (tr.is_regression())
        std::copy(tr.y.begin() + src * ydim, tr.y.begin() + (src + 1) * ydim, yb.begin() + b * ydim);
      else
        lb[b] = tr.labels[src];
    }
    cpu->forward_backward(params.data(), xb.data(), tr.is_regression() ? nullptr : lb.data(),
                          tr.is_regression() ? yb.data() : nullptr, bsz, grads.data(), losses_out);
    opt.step(params.data(), grads.data());
  }

  ~Impl() {
    if (stream) cudaStreamSynchronize(stream);
    if (graph_full) cudaGraphExecDestroy(graph_full);
    if (graph_last) cudaGraphExecDestroy(graph_last);
  }
};

TrainEngine::TrainEngine(EngineConfig config, const DataSplits& data,
                         std::shared_ptr<const DeviceData> shared)
    : impl_(std::make_unique<Impl>(std::move(config), data, std::move(shared))) {
  impl_->setup_buffers();
}

TrainEngine::~TrainEngine() = default;

int64_t TrainEngine::replicas() const { return impl_->K; }
int64_t TrainEngine::steps_per_epoch() const { return impl_->spe; }
int64_t TrainEngine::total_steps() const { return impl_->total; }
int64_t TrainEngine::graph_launches() const { return impl_->graph_launches; }
const MlpLayout& TrainEngine::layout() const { return impl_->layout; }
const EngineConfig& TrainEngine::config() const { return impl_->cfg; }
Optimizer& TrainEngine::optimizer() { return impl_->opt; }
int64_t TrainEngine::epoch() const { return impl_->epoch; }
int64_t TrainEngine::steps_left_in_epoch() const { return impl_->epoch < 0 ? 0 : impl_->spe - impl_->cursor; }
const std::vector<float>& TrainEngine::table(int64_t replica) const {
  LRLAB_REQUIRE(replica >= 0 && replica < impl_->K, "replica ", replica, " out of range (the engine has ",
                impl_->K, ")");
  return impl_->tables[replica];
}

void TrainEngine::begin_epoch(int64_t epoch) {
  Impl& m = *impl_;
  LRLAB_REQUIRE(epoch >= 0, "epoch must not be negative");
  // A bad label seen by the previous epoch's kernels surfaces here, outside any graph, and before
  // anything changes: the host's cursor must never run ahead of the device's.
  if (m.cuda()) m.gpu->check_labels();
  m.perm = epoch_permutation(m.data.train.n, m.cfg.data_seed, epoch);
  m.epoch = epoch;
  m.cursor = 0;
  if (m.cuda()) {
    m.d_perm.upload(m.perm.data(), m.perm.size(), m.stream);
    LRLAB_CUDA_CHECK(cudaMemsetAsync(m.d_cursor.get(), 0, sizeof(int64_t), m.stream));
  }
}

std::vector<float> TrainEngine::run(int64_t steps) {
  Impl& m = *impl_;
  LRLAB_REQUIRE(m.epoch >= 0, "call begin_epoch() before run()");
  LRLAB_REQUIRE(steps >= 0 && steps <= m.spe - m.cursor, "cannot run ", steps, " steps: ",
                m.spe - m.cursor, " are left in this epoch");
  std::vector<float> losses(static_cast<size_t>(steps * m.K));
  const int64_t first = m.cursor;
  for (int64_t i = 0; i < steps; ++i) {
    const int64_t bsz = m.cursor == m.spe - 1 ? m.last_batch() : m.cfg.batch;
    if (m.cuda()) m.gpu_step(bsz);
    else m.cpu_step(bsz, losses.data() + i * m.K);
    ++m.cursor;
  }
  if (m.cuda()) m.d_ring.download(losses.data(), losses.size(), m.stream, first * m.K);
  return losses;
}

TrainEngine::Eval TrainEngine::evaluate(Split split) {
  Impl& m = *impl_;
  const Dataset& d = split == Split::Train ? m.data.train : split == Split::Val ? m.data.val : m.data.test;
  Eval e;
  e.loss.assign(m.K, std::nan(""));
  e.accuracy.assign(m.K, std::nan(""));
  if (d.n == 0) return e;
  const bool reg = d.is_regression();
  if (!m.cuda()) {
    m.cpu->evaluate(m.params.data(), d.x.data(), reg ? nullptr : d.labels.data(), reg ? d.y.data() : nullptr,
                    d.n, e.loss.data(), e.accuracy.data());
    return e;
  }
  const DeviceSplit& ds = m.d_data->split(split);
  m.gpu->evaluate(m.d_params.get(), ds.x.get(), reg ? nullptr : ds.labels.get(), reg ? ds.y.get() : nullptr,
                  d.n, e.loss.data(), e.accuracy.data());
  return e;
}

std::shared_ptr<const DeviceData> TrainEngine::device_data() const { return impl_->d_data; }

std::vector<float> TrainEngine::params() const {
  const Impl& m = *impl_;
  return m.packing.to_replica_major(m.cuda() ? m.d_params.to_host(m.stream) : m.params);
}

void TrainEngine::set_params(const std::vector<float>& p) {
  Impl& m = *impl_;
  LRLAB_REQUIRE(static_cast<int64_t>(p.size()) == m.K * m.P, "expected ", m.K * m.P, " parameters, got ", p.size());
  for (float v : p) LRLAB_REQUIRE(std::isfinite(v), "parameters must be finite");
  std::vector<float> packed = m.packing.from_replica_major(p);
  if (m.cuda()) m.d_params.upload(packed.data(), packed.size(), m.stream);
  else m.params = std::move(packed);
}

TrainEngine::Snapshot TrainEngine::snapshot() const {
  return {params(), impl_->opt.save()};
}

void TrainEngine::restore(const Snapshot& s) {
  Impl& m = *impl_;
  LRLAB_REQUIRE(static_cast<int64_t>(s.params.size()) == m.K * m.P, "snapshot holds ", s.params.size(),
                " parameters, this engine ", m.K * m.P);
  m.opt.load(s.optimizer);
  std::vector<float> packed = m.packing.from_replica_major(s.params);
  if (m.cuda()) m.d_params.upload(packed.data(), packed.size(), m.stream);
  else m.params = std::move(packed);
}

void TrainEngine::stash() {
  Impl& m = *impl_;
  m.opt.stash();
  m.stash_epoch = m.epoch;
  m.stash_cursor = m.cursor;
  if (!m.cuda()) {
    m.stash_params = m.params;
    return;
  }
  if (!m.d_stash.size()) m.d_stash = DeviceBuffer<float>(m.d_params.size());
  LRLAB_CUDA_CHECK(cudaMemcpyAsync(m.d_stash.get(), m.d_params.get(), m.d_params.size() * sizeof(float),
                                   cudaMemcpyDeviceToDevice, m.stream));
  LRLAB_CUDA_CHECK(cudaMemcpyAsync(m.d_stash_cursor.get(), m.d_cursor.get(), sizeof(int64_t),
                                   cudaMemcpyDeviceToDevice, m.stream));
}

void TrainEngine::unstash() {
  Impl& m = *impl_;
  m.opt.unstash();
  // The step counter went back with the optimizer; the data goes back with it, so the step and the
  // minibatch stay paired (a schedule in epochs ends where the epochs do). A stash from an earlier
  // epoch rewinds to the current one's start.
  const bool same_epoch = m.stash_epoch == m.epoch;
  m.cursor = same_epoch ? m.stash_cursor : 0;
  if (!m.cuda()) {
    m.params = m.stash_params;
    return;
  }
  LRLAB_CUDA_CHECK(cudaMemcpyAsync(m.d_params.get(), m.d_stash.get(), m.d_params.size() * sizeof(float),
                                   cudaMemcpyDeviceToDevice, m.stream));
  if (same_epoch)
    LRLAB_CUDA_CHECK(cudaMemcpyAsync(m.d_cursor.get(), m.d_stash_cursor.get(), sizeof(int64_t),
                                     cudaMemcpyDeviceToDevice, m.stream));
  else
    LRLAB_CUDA_CHECK(cudaMemsetAsync(m.d_cursor.get(), 0, sizeof(int64_t), m.stream));
}

}  // namespace lrlab
