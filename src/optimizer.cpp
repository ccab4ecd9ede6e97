#include "lrlab/optimizer.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <limits>
#include <utility>

#include "lrlab/cuda_check.hpp"
#include "lrlab/device_buffer.hpp"
#include "lrlab/error.hpp"
#include "lrlab/serialize.hpp"
#include "lrlab/spec.hpp"
#include "optimizer_kernels.hpp"

namespace lrlab {

namespace {

// A setting as the kernels hold it, in fp32: a value that fp32 cannot hold is an error, not a
// silent 0 (clip=1e-50 would turn clipping off) or inf.
float to_float(spec::ArgReader& r, const std::string& key, double v) {
  if (std::fabs(v) > std::numeric_limits<float>::max()) r.fail_value(key, "too large for fp32");
  const float f = static_cast<float>(v);
  if (v != 0 && !std::isnormal(f)) r.fail_value(key, "too close to zero for fp32 (use 0)");
  return f;
}

float setting(spec::ArgReader& r, const std::string& key, double fallback) {
  return to_float(r, key, r.number(key, fallback));
}

float fraction(spec::ArgReader& r, const std::string& key, float fallback, bool closed) {
  double v = r.number(key, fallback);
  if (closed ? v > 1.0 : v >= 1.0) r.fail_value(key, closed ? "must be in [0, 1]" : "must be in [0, 1)");
  const float f = to_float(r, key, v);
  if (!closed && f == 1.0f) r.fail_value(key, "rounds to 1 in fp32; must be below 1");
  return f;
}

// A table's largest multiplier: what the rate checks multiply by (no table: a constant 1).
float largest_multiplier(const std::vector<float>& table) {
  return table.empty() ? 1.0f : *std::max_element(table.begin(), table.end());
}

}  // namespace

OptimizerHyper parse_optimizer(const std::string& text) {
  auto segs = spec::parse(text, "optimizer");
  LRLAB_REQUIRE(segs.size() == 1, "optimizer spec '", text, "' has ", segs.size(),
                " parts; '+' composes schedules, not optimizers");
  const spec::Segment& seg = segs[0];
  spec::ArgReader r(seg, "optimizer");
  OptimizerHyper h;
  const std::string& n = seg.name;
  if (n == "sgd") h.kind = OptimKind::SGD;
  else if (n == "adam") h.kind = OptimKind::Adam;
  else if (n == "adamw") h.kind = OptimKind::AdamW;
  else if (n == "rmsprop") h.kind = OptimKind::RMSprop;
  else if (n == "adagrad") h.kind = OptimKind::Adagrad;
  else
    LRLAB_FAIL("unknown optimizer '", n, "' at position ", seg.pos,
               " (expected sgd, adam, adamw, rmsprop or adagrad)");

  // Keras's forms take Keras's defaults: epsilon 1e-7 (1e-8 and 1e-10 in PyTorch), RMSprop's rho
  // 0.9 (alpha 0.99), Adagrad's accumulator from 0.1 (0), AdamW's weight decay 0.004 (0.01).
  const bool keras = r.boolean("keras", false);
  h.keras = keras;
  const char* wd_key = r.has("weight_decay") ? "weight_decay" : "wd";
  LRLAB_REQUIRE(!(r.has("weight_decay") && r.has("wd")), "optimizer '", n,
                "': give wd or weight_decay, not both");
  h.weight_decay = setting(r, wd_key, h.kind == OptimKind::AdamW ? (keras ? 4e-3 : 1e-2) : 0.0);
  h.maximize = r.boolean("maximize", false);
  h.max_grad_norm = setting(r, "clip", 0.0);
  h.check_finite = r.boolean("check_finite", false);
  const double eps = keras ? 1e-7 : h.kind == OptimKind::Adagrad ? 1e-10 : 1e-8;
  switch (h.kind) {
    case OptimKind::SGD:
      h.momentum = setting(r, "momentum", 0.0);
      h.dampening = fraction(r, "dampening", 0.0f, true);
      h.nesterov = r.boolean("nesterov", false);
      if (h.nesterov && (h.momentum <= 0.0f || h.dampening != 0.0f))
        r.fail_value("nesterov", "Nesterov momentum needs momentum > 0 and dampening = 0");
      if (keras && h.dampening != 0.0f) r.fail_value("dampening", "Keras's SGD has no dampening (keras=true)");
      break;
    case OptimKind::Adam:
    case OptimKind::AdamW:
      h.beta1 = fraction(r, "beta1", 0.9f, false);
      h.beta2 = fraction(r, "beta2", 0.999f, false);
      h.eps = setting(r, "eps", eps);
      h.amsgrad = r.boolean("amsgrad", false);
      break;
    case OptimKind::RMSprop:
      h.alpha = fraction(r, "alpha", keras ? 0.9f : 0.99f, true);
      h.eps = setting(r, "eps", eps);
      h.momentum = setting(r, "momentum", 0.0);
      h.centered = r.boolean("centered", false);
      break;
    case OptimKind::Adagrad:
      h.lr_decay = setting(r, "lr_decay", 0.0);
      h.eps = setting(r, "eps", eps);
      h.initial_accumulator = setting(
          r, r.has("initial_accumulator_value") ? "initial_accumulator_value" : "initial_accumulator", keras ? 0.1 : 0.0);
      if (keras && h.lr_decay != 0.0f) r.fail_value("lr_decay", "Keras's Adagrad has no lr_decay (keras=true)");
      break;
  }
  r.finish();
  return h;
}

const char* optimizer_name(OptimKind kind) {
  switch (kind) {
    case OptimKind::SGD: return "sgd";
    case OptimKind::Adam: return "adam";
    case OptimKind::AdamW: return "adamw";
    case OptimKind::RMSprop: return "rmsprop";
    case OptimKind::Adagrad: return "adagrad";
  }
  return "?";
}

int bytes_per_param(const OptimizerHyper& h) { return 12 + 8 * state_buffers(h); }

struct Optimizer::Impl {
  OptimizerHyper h;
  Device dev = Device::CPU;
  int64_t n = 0, K = 1;
  ReplicaPacking pk{1, 1};  // where each replica's parameters, gradients and moments lie
  std::vector<ParamGroup> groups;
  detail::GroupTable gt;
  cudaStream_t stream = nullptr;
  int nstate = 0;
  bool scaled_grads = false;

  // Host copies: authoritative on the CPU path; on the CUDA path the device holds the truth and
  // these tables are kept only so that save() can write them.
  std::vector<ReplicaState> states;
  std::vector<std::vector<float>> tables;
  std::vector<float> table_max;  // the largest multiplier of each replica's table (1 without one)
  float max_group_mult = 1.0f;
  std::vector<float> host_buf[3];
  std::vector<double> host_grad_sq;
  std::vector<double> host_grad_blocks;  // the CPU path's partial sums of squares

  DeviceBuffer<ReplicaState> d_states;
  DeviceBuffer<float> d_buf[3];
  // stash(): the spare copy (host vectors on the CPU path, device arrays on the CUDA path).
  std::vector<ReplicaState> stash_states;
  std::vector<float> stash_host[3];
  DeviceBuffer<ReplicaState> d_stash_states;
  DeviceBuffer<float> d_stash_buf[3];
  bool stashed = false;
  bool captured = false;  // step() has been recorded into a CUDA graph
  std::vector<DeviceBuffer<float>> d_tables;  // each at least as long as tables[r]
  std::vector<DeviceBuffer<float>> orphaned_tables;  // install_tables' memory after a failed copy
  DeviceBuffer<double> d_grad_sq;
  DeviceBuffer<char> d_scratch;
  size_t scratch_bytes = 0;
  int num_sms = 1;
  int update_unroll = detail::kDefaultUpdateUnroll;
  int64_t update_blocks = 1;  // cuda_update_resident_blocks()
  int64_t grad_chunk = 0;  // FusedArgs::grad_chunk and grad_parts
  int grad_parts = 1;

  bool cuda() const { return dev == Device::CUDA; }
  bool stats() const { return h.max_grad_norm > 0.0f || h.check_finite || scaled_grads; }

  ~Impl() {
    // Steps in flight still read the buffers the members free; errors of a dying context are ignored.
    if (cuda() && stream) cudaStreamSynchronize(stream);
  }

  // The first gradient scale adds the finite check to the step; a graph captured before
  // would not contain it. Later changes of the scale are read from device memory: no recapture.
  void turn_on_scaled_grads(bool on, const char* what) {
    check_scaled_grads(on, what);
    scaled_grads = scaled_grads || on;
  }
  void check_scaled_grads(bool on, const char* what) const {
    LRLAB_REQUIRE(!(on && captured && !stats()), what, " before capturing step() in a CUDA graph");
  }

  // Each factor of a step's rate is checked on its own; their product must also stay an fp32
  // number, or the step writes inf and NaN into the weights.
  // r < 0: every replica (a setting they share).
  void check_rate_product(int64_t r, double base_lr, double scale, double table_max_r,
                          const char* source = "") const {
    const double rate = base_lr * scale * table_max_r * max_group_mult;
    LRLAB_REQUIRE(rate <= std::numeric_limits<float>::max(), source,
                  r < 0 ? std::string("every replica") : "replica " + std::to_string(r), ": learning rate ",
                  base_lr, " x scale ", scale, " x schedule multiplier ", table_max_r, " x group multiplier ",
                  max_group_mult, " overflows fp32");
  }

  void check_replica(int64_t r) const {
    LRLAB_REQUIRE(r >= -1 && r < K, "replica ", r, " out of range (optimizer has ", K, ")");
  }

  template <typename F>
  void each_replica(int64_t r, F&& f) {
    check_replica(r);
    if (r >= 0) f(r);
    else
      for (int64_t i = 0; i < K; ++i) f(i);
  }

  // Writes one field of one replica's state (r = -1: of all) where the update reads it. Only that
  // field moves: the device's counters run ahead of the host copies.
  template <typename T>
  void set_field(int64_t replica, T ReplicaState::*field, T value) {
    each_replica(replica, [&](int64_t r) {
      states[r].*field = value;
      if (!cuda()) return;
      char* base = reinterpret_cast<char*>(d_states.get() + r);
      size_t off = static_cast<size_t>(reinterpret_cast<char*>(&(states[r].*field)) -
                                       reinterpret_cast<char*>(&states[r]));
      LRLAB_CUDA_CHECK(cudaMemcpyAsync(base + off, &(states[r].*field), sizeof(T),
                                       cudaMemcpyHostToDevice, stream));
    });
    // Settings change between steps, not inside them: one wait keeps the host copy and the device
    // copy in step and costs nothing on the hot path.
    if (cuda()) LRLAB_CUDA_CHECK(cudaStreamSynchronize(stream));
  }

  // A table to install for a replica: its host copy, and device memory when the memory the replica
  // has is too short. Callers that install several tables prepare them all first, so that running
  // out of memory (host or device) leaves every replica with its old table.
  struct NewTable {
    int64_t replica = 0;
    std::vector<float> host;
    DeviceBuffer<float> room;
  };
  std::vector<NewTable> prepare_tables(std::vector<NewTable> ready) const {
    if (!cuda()) return ready;
    size_t need = 0, longest = 0;
    int64_t short_of_room = 0;
    for (const NewTable& t : ready)
      if (t.host.size() > d_tables[t.replica].size()) {
        need += t.host.size() * sizeof(float);
        longest = std::max(longest, t.host.size());
        ++short_of_room;
      }
    if (!need) return ready;
    // One query for all: a sweep installs a table for each of its replicas.
    size_t free_bytes = 0, total_bytes = 0;
    LRLAB_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
    LRLAB_REQUIRE(need < free_bytes, short_of_room == 1 ? "a schedule table of " : "schedule tables of up to ",
                  longest, " steps", short_of_room == 1 ? "" : " (" + std::to_string(short_of_room) + " of them)",
                  " do", short_of_room == 1 ? "es" : "", " not fit in device memory (", need, " bytes needed, ",
                  free_bytes, " free)");
    for (NewTable& t : ready)
      if (t.host.size() > d_tables[t.replica].size()) t.room = DeviceBuffer<float>(t.host.size());
    return ready;
  }

  // Points each replica at its prepared table; allocates nothing. A table that fits where the old
  // one was reuses its device memory: swapping tables (a range test's ramp and back) then allocates
  // and frees nothing, and cudaFree, which synchronises the device, must not run while another
  // thread's engine is capturing a graph. One wait for all the copies.
  void install_tables(std::vector<NewTable> ready) {
    if (cuda()) {
      // A copy that fails (a broken context) may leave replicas already pointed at their new memory
      // on the device: that memory is kept, not freed, so that no device pointer dangles.
      struct KeepRooms {
        std::vector<NewTable>& ready;
        std::vector<DeviceBuffer<float>>& kept;
        bool done = false;
        ~KeepRooms() {
          if (done) return;
          for (NewTable& t : ready)
            if (t.room.size()) kept.push_back(std::move(t.room));
        }
      } keep{ready, orphaned_tables};
      for (NewTable& t : ready) {
        const int64_t len = static_cast<int64_t>(t.host.size());
        // Steps in flight may still read the old table: the copy into reused memory waits for them
        // in stream order, and memory replaced here is freed only after the wait below.
        DeviceBuffer<float>& dst = t.room.size() ? t.room : d_tables[t.replica];
        const float* dev_table = len ? dst.get() : nullptr;
        // From pageable memory: each copy takes its source before it returns.
        if (len)
          LRLAB_CUDA_CHECK(cudaMemcpyAsync(dst.get(), t.host.data(), t.host.size() * sizeof(float),
                                           cudaMemcpyHostToDevice, stream));
        char* base = reinterpret_cast<char*>(d_states.get() + t.replica);
        LRLAB_CUDA_CHECK(cudaMemcpyAsync(base + offsetof(ReplicaState, table), &dev_table, sizeof dev_table,
                                         cudaMemcpyHostToDevice, stream));
        LRLAB_CUDA_CHECK(cudaMemcpyAsync(base + offsetof(ReplicaState, table_len), &len, sizeof len,
                                         cudaMemcpyHostToDevice, stream));
      }
      LRLAB_CUDA_CHECK(cudaStreamSynchronize(stream));
      keep.done = true;
      for (NewTable& t : ready)
        if (t.room.size()) std::swap(d_tables[t.replica], t.room);
    }
    for (NewTable& t : ready) {
      const int64_t r = t.replica;
      tables[r] = std::move(t.host);
      table_max[r] = largest_multiplier(tables[r]);
      states[r].table = tables[r].empty() ? nullptr : tables[r].data();
      states[r].table_len = static_cast<int64_t>(tables[r].size());
    }
  }

  // How the GPU cuts the gradients for their statistics: one replica in one block is a single
  // reduction over the whole grid; otherwise each thread block of the segmented reduction takes one
  // piece, and the pieces give the GPU several blocks per multiprocessor however few the replicas,
  // while none is so small that its block mostly waits. The cut depends on the GPU's multiprocessor
  // count and on K, so the last bits of a clipping norm can differ between GPU models, and between
  // a replica trained alone and in a sweep (as cuBLAS's GEMMs can); not between runs.
  void choose_grad_parts() {
    const detail::BlockTable bt = detail::block_table(pk);
    if (K == 1 && bt.count == 1) {
      grad_chunk = n;
      grad_parts = 1;
      return;
    }
    constexpr int64_t kMinPiece = 16384;
    const int64_t want = std::max<int64_t>(1, (int64_t{4} * num_sms + K - 1) / K);
    grad_chunk = std::max(kMinPiece, (n + want - 1) / want);
    const int64_t parts = detail::grad_parts(bt, grad_chunk);
    // CUB counts segments in int.
    LRLAB_REQUIRE(K * parts <= std::numeric_limits<int>::max(), "too many replicas for the gradient statistics (",
                  K, " x ", parts, " pieces)");
    grad_parts = static_cast<int>(parts);
  }

  // The spare copy for stash(), allocated at the first stash (a trainer that never stashes does not
  // pay for it), all or nothing.
  void allocate_stash() {
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    LRLAB_CUDA_CHECK(cudaStreamIsCapturing(stream, &capture));
    LRLAB_REQUIRE(capture == cudaStreamCaptureStatusNone,
                  "the first stash() allocates device memory: call it once before capturing it in a CUDA graph");
    DeviceBuffer<ReplicaState> st(K);
    DeviceBuffer<float> buf[3];
    for (int k = 0; k < nstate; ++k) buf[k] = DeviceBuffer<float>(pk.span());
    d_stash_states = std::move(st);
    for (int k = 0; k < nstate; ++k) d_stash_buf[k] = std::move(buf[k]);
  }

  void pull_states() {
    if (!cuda()) return;
    d_states.download(states.data(), K, stream);
    // Device table pointers are meaningless on the host; keep host pointers for the CPU view.
    for (int64_t r = 0; r < K; ++r) states[r].table = tables[r].empty() ? nullptr : tables[r].data();
  }

  void push_states() {
    if (!cuda()) return;
    std::vector<ReplicaState> dev_view = states;
    for (int64_t r = 0; r < K; ++r) dev_view[r].table = tables[r].empty() ? nullptr : d_tables[r].get();
    d_states.upload(dev_view.data(), K, stream);
  }

  // State buffer k as it lies in memory (all replicas, in the packing's order), as host values.
  std::vector<float> read_all(int k) const {
    if (!cuda()) return host_buf[k];
    return d_buf[k].to_host(stream);
  }

  // One replica's part of state buffer k, in the order of its parameters.
  std::vector<float> read_replica(int k, int64_t r) const {
    std::vector<float> out(static_cast<size_t>(n));
    if (!cuda()) {
      pk.gather(host_buf[k].data(), r, out.data());
      return out;
    }
    for (const ReplicaBlock& b : pk.blocks())
      d_buf[k].download(out.data() + b.begin, static_cast<size_t>(b.end - b.begin), stream,
                        static_cast<size_t>(b.offset + r * b.stride));
    return out;
  }

  // Host values (one replica's, in the order of its parameters) into state buffer k.
  void write_replica(int k, int64_t r, const std::vector<float>& src) {
    if (!cuda()) {
      pk.scatter(src.data(), r, host_buf[k].data());
      return;
    }
    for (const ReplicaBlock& b : pk.blocks())
      d_buf[k].upload(src.data() + b.begin, static_cast<size_t>(b.end - b.begin), stream,
                      static_cast<size_t>(b.offset + r * b.stride));
  }

  // Moments of replicas [r0, r1) to their initial values: Adagrad's accumulator starts at
  // initial_accumulator, every other moment at zero. All replicas: the whole buffer, gaps included,
  // so that saved states and state_buffer() hold no leftover device memory. Some: a block whose
  // copies lie end to end is one fill for them; otherwise the gaps between copies may belong to
  // other replicas.
  void fill_initial(int64_t r0, int64_t r1) {
    const float init0 = h.kind == OptimKind::Adagrad ? h.initial_accumulator : 0.0f;
    for (int k = 0; k < nstate; ++k) {
      const float v = k == 0 ? init0 : 0.0f;
      if (r0 == 0 && r1 == K) {
        if (cuda())
          detail::cuda_fill(d_buf[k].get(), pk.span(), v, stream);
        else
          std::fill(host_buf[k].begin(), host_buf[k].end(), v);
        continue;
      }
      for (const ReplicaBlock& b : pk.blocks()) {
        const int64_t len = b.end - b.begin;
        const bool dense = b.stride == len;
        for (int64_t r = r0; r < r1; r += dense ? r1 - r0 : 1) {
          const int64_t at = b.offset + r * b.stride, count = dense ? (r1 - r0) * len : len;
          if (cuda())
            detail::cuda_fill(d_buf[k].get() + at, count, v, stream);
          else
            std::fill(host_buf[k].begin() + at, host_buf[k].begin() + at + count, v);
        }
      }
    }
    if (cuda()) LRLAB_CUDA_CHECK(cudaStreamSynchronize(stream));
  }

  detail::FusedArgs args(float* p, const float* g, uint16_t* bf16) {
    detail::FusedArgs a;
    a.h = h;
    a.groups = gt;
    a.p = p;
    a.g = g;
    for (int k = 0; k < nstate; ++k) a.s[k] = cuda() ? d_buf[k].get() : host_buf[k].data();
    a.bf16 = bf16;
    a.n = n;
    a.replicas = K;
    a.blocks = detail::block_table(pk);
    bool blocks_aligned = true;
    for (const ReplicaBlock& rb : pk.blocks())
      blocks_aligned = blocks_aligned && rb.begin % 4 == 0 && rb.offset % 4 == 0 && (K == 1 || rb.stride % 4 == 0);
    a.grad_chunk = grad_chunk;
    a.grad_parts = grad_parts;
    a.nstate = nstate;
    a.unroll = update_unroll;
    a.stats = stats();
    auto aligned = [](const void* q, size_t b) { return reinterpret_cast<uintptr_t>(q) % b == 0; };
    a.vec = blocks_aligned && aligned(p, 16) && aligned(g, 16) && aligned(bf16, 8);
    for (int k = 0; k < nstate; ++k) a.vec = a.vec && aligned(a.s[k], 16);
    return a;
  }
};

namespace {

// The part of a replica's state that saved states carry; the rest is recomputed every step.
void put_counters(ByteWriter& w, const ReplicaState& s) {
  w.put(s.step);
  w.put(s.base_lr);
  w.put(s.scale);
  w.put(s.inv_grad_scale);
  w.put(s.skipped_total);
}

// Far beyond any run, and every count up to it is exact in the double the bias corrections use.
// set_step() takes counts up to kMaxSetStep; a state may hold more, counted on from there.
constexpr int64_t kMaxSetStep = int64_t{1} << 52;
constexpr int64_t kMaxStep = int64_t{1} << 53;

ReplicaState get_counters(ByteReader& rd) {
  ReplicaState s;
  s.step = rd.get<int64_t>();
  s.base_lr = rd.get<float>();
  s.scale = rd.get<float>();
  s.inv_grad_scale = rd.get<float>();
  s.skipped_total = rd.get<int64_t>();
  LRLAB_REQUIRE(s.step >= 0 && s.step <= kMaxStep && s.skipped_total >= 0 && std::isfinite(s.base_lr) &&
                    s.base_lr >= 0 &&
                    std::isfinite(s.scale) && s.scale >= 0 && std::isfinite(s.inv_grad_scale) && s.inv_grad_scale > 0,
                rd.what(), ": invalid counters or scales at offset ", rd.offset());
  return s;
}

void copy_counters(ReplicaState& dst, const ReplicaState& src) {
  dst.step = src.step;
  dst.base_lr = src.base_lr;
  dst.scale = src.scale;
  dst.inv_grad_scale = src.inv_grad_scale;
  dst.skipped_total = src.skipped_total;
}

void validate_groups(std::vector<ParamGroup>& groups, int64_t n, float default_wd) {
  if (groups.empty()) groups.push_back({0, n, 1.0f, -1.0f});
  LRLAB_REQUIRE(static_cast<int>(groups.size()) <= kMaxParamGroups, "too many parameter groups (",
                groups.size(), "; at most ", kMaxParamGroups, ")");
  std::sort(groups.begin(), groups.end(),
            [](const ParamGroup& a, const ParamGroup& b) { return a.begin < b.begin; });
  int64_t prev_end = 0;
  for (size_t i = 0; i < groups.size(); ++i) {
    ParamGroup& g = groups[i];
    LRLAB_REQUIRE(g.begin >= 0 && g.begin < g.end && g.end <= n, "parameter group ", i, " [", g.begin,
                  ", ", g.end, ") is empty or outside the ", n, " parameters");
    LRLAB_REQUIRE(g.begin >= prev_end, "parameter groups overlap at parameter ", g.begin);
    LRLAB_REQUIRE(std::isfinite(g.lr_mult) && g.lr_mult >= 0.0f, "parameter group ", i,
                  ": rate multiplier must be finite and non-negative");
    LRLAB_REQUIRE(std::isfinite(g.weight_decay), "parameter group ", i, ": weight decay must be finite");
    if (g.weight_decay < 0.0f) g.weight_decay = default_wd;
    prev_end = g.end;
  }
}

// The checks parse_optimizer makes, for hyperparameters built in code: a value the rules cannot use
// is an error here, not NaN weights (beta1 = 1 divides by a zero bias correction) or a step that
// does nothing (an unknown kind).
void validate_hyper(const OptimizerHyper& h) {
  const char* name = optimizer_name(h.kind);
  LRLAB_REQUIRE(std::string(name) != "?", "unknown optimizer kind ", static_cast<int>(h.kind));
  const std::pair<const char*, float> values[] = {
      {"beta1", h.beta1},       {"beta2", h.beta2},       {"eps", h.eps},
      {"weight_decay", h.weight_decay}, {"momentum", h.momentum}, {"dampening", h.dampening},
      {"alpha", h.alpha},       {"lr_decay", h.lr_decay}, {"initial_accumulator", h.initial_accumulator},
      {"max_grad_norm", h.max_grad_norm}};
  for (const auto& [key, v] : values)
    LRLAB_REQUIRE(std::isfinite(v) && v >= 0.0f, "optimizer ", name, ": ", key,
                  " must be finite and non-negative (got ", v, ")");
  LRLAB_REQUIRE(h.beta1 < 1.0f && h.beta2 < 1.0f, "optimizer ", name, ": beta1 and beta2 must be in [0, 1) (got ",
                h.beta1, ", ", h.beta2, ")");
  LRLAB_REQUIRE(h.alpha <= 1.0f && h.dampening <= 1.0f, "optimizer ", name,
                ": alpha and dampening must be in [0, 1] (got ", h.alpha, ", ", h.dampening, ")");
  LRLAB_REQUIRE(!h.nesterov || h.kind != OptimKind::SGD || (h.momentum > 0.0f && h.dampening == 0.0f),
                "optimizer ", name, ": Nesterov momentum needs momentum > 0 and dampening = 0");
  LRLAB_REQUIRE(!h.keras || (h.dampening == 0.0f && h.lr_decay == 0.0f), "optimizer ", name,
                ": Keras's rules (keras) have no dampening or lr_decay");
}

// Moments of one replica (in the order of its parameters) that a state may hold: first moments and
// momentum finite; running squares (Adam's v and its maximum, RMSprop's square average, Adagrad's
// sum) not NaN and not negative, since the next step takes their square root, but +inf, a state
// training reaches (the square of a gradient beyond 1.8e19) and steps on from. A replica whose
// scale is 0 is frozen (a sweep's diverged configuration; prepare_step skips its steps): its
// moments are not used while it stays so, whatever they hold.
void require_moments(const OptimizerHyper& h, int k, const float* values, int64_t n, const ReplicaState& s,
                     int64_t replica, const char* what) {
  if (s.scale == 0.0f) return;
  const bool squares = ((h.kind == OptimKind::Adam || h.kind == OptimKind::AdamW) && k >= 1) ||
                       ((h.kind == OptimKind::RMSprop || h.kind == OptimKind::Adagrad) && k == 0);
  for (int64_t i = 0; i < n; ++i)
    LRLAB_REQUIRE(squares ? !std::isnan(values[i]) && values[i] >= 0.0f : std::isfinite(values[i]), what,
                  ": replica ", replica, ", parameter ", i, ": state buffer ", k, " holds ", values[i]);
}

void require_rate(float v, const char* what) {
  LRLAB_REQUIRE(std::isfinite(v) && v >= 0.0f, what, " must be finite and non-negative (got ", v, ")");
}

// `whose`: a prefix naming the replica where the table is one of several ("replica 2: ").
void require_table(const std::vector<float>& table, const std::string& whose = {}) {
  for (size_t i = 0; i < table.size(); ++i)
    LRLAB_REQUIRE(std::isfinite(table[i]) && table[i] >= 0.0f, whose, "schedule table entry ", i,
                  " is negative or not finite");
}

}  // namespace

Optimizer::Optimizer(const std::string& spec, Device device, int64_t n_params, OptimizerSetup setup)
    : Optimizer(parse_optimizer(spec), device, n_params, std::move(setup)) {}

Optimizer::Optimizer(const OptimizerHyper& hyper, Device device, int64_t n_params, OptimizerSetup setup)
    : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  LRLAB_REQUIRE(n_params > 0, "an optimizer needs at least one parameter (got ", n_params, ")");
  LRLAB_REQUIRE(setup.replicas >= 1, "replicas must be at least 1 (got ", setup.replicas, ")");
  LRLAB_REQUIRE(setup.replica_stride == 0 || setup.replica_stride >= n_params, "replica stride ",
                setup.replica_stride, " is smaller than the ", n_params, " parameters of a replica");
  LRLAB_REQUIRE(setup.blocks.empty() || setup.replica_stride == 0,
                "give a replica stride or packing blocks, not both");
  LRLAB_REQUIRE(setup.replicas <= kMaxReplicas, "at most ", kMaxReplicas, " replicas (got ", setup.replicas, ")");
  require_rate(setup.lr, "learning rate");
  validate_hyper(hyper);
  m.h = hyper;
  m.dev = device;
  m.n = n_params;
  m.K = setup.replicas;
  m.pk = setup.blocks.empty() ? ReplicaPacking(n_params, m.K, setup.replica_stride)
                              : ReplicaPacking(n_params, m.K, std::move(setup.blocks));
  m.stream = setup.stream;
  m.nstate = state_buffers(hyper);
  m.groups = std::move(setup.groups);
  validate_groups(m.groups, n_params, hyper.weight_decay);
  m.gt.count = static_cast<int>(m.groups.size());
  m.max_group_mult = 0.0f;
  for (int i = 0; i < m.gt.count; ++i) {
    m.gt.begin[i] = m.groups[i].begin;
    m.gt.end[i] = m.groups[i].end;
    m.gt.lr_mult[i] = m.groups[i].lr_mult;
    m.gt.wd[i] = m.groups[i].weight_decay;
    m.max_group_mult = std::max(m.max_group_mult, m.groups[i].lr_mult);
  }
  m.table_max.assign(m.K, 1.0f);
  m.check_rate_product(-1, setup.lr, 1.0, 1.0);
  LRLAB_REQUIRE(setup.lrs.empty() || static_cast<int64_t>(setup.lrs.size()) == m.K, "OptimizerSetup::lrs: ",
                setup.lrs.size(), " learning rates for ", m.K, " replicas");
  LRLAB_REQUIRE(setup.tables.empty() || static_cast<int64_t>(setup.tables.size()) == m.K, "OptimizerSetup::tables: ",
                setup.tables.size(), " schedule tables for ", m.K, " replicas");
  m.states.assign(m.K, ReplicaState{});
  for (int64_t r = 0; r < m.K; ++r) {
    const float lr = setup.lrs.empty() ? setup.lr : setup.lrs[r];
    const std::string replica = "replica " + std::to_string(r) + ": ";
    require_rate(lr, (replica + "learning rate").c_str());
    float table_max = 1.0f;
    if (!setup.tables.empty()) {
      require_table(setup.tables[r], replica);
      table_max = largest_multiplier(setup.tables[r]);
    }
    m.check_rate_product(r, lr, 1.0, table_max);
    m.states[r].base_lr = lr;
  }
  m.tables.assign(m.K, {});
  m.host_grad_sq.assign(m.K, 0.0);
  if (m.cuda()) require_cuda("CUDA optimizer");
  // A state that cannot fit is refused with its size, rather than as a bad_alloc, a failed
  // cudaMalloc, or a host allocation the kernel grants and then kills the process for touching.
  require_memory(device, static_cast<double>(m.nstate) * static_cast<double>(m.pk.span()) * sizeof(float),
                 "the optimizer's state (" + std::to_string(m.nstate) + " buffers of " +
                     std::to_string(m.pk.span()) + " floats)",
                 "fewer parameters or replicas");
  if (m.cuda()) {
    int dev_id = 0;
    LRLAB_CUDA_CHECK(cudaGetDevice(&dev_id));
    LRLAB_CUDA_CHECK(cudaDeviceGetAttribute(&m.num_sms, cudaDevAttrMultiProcessorCount, dev_id));
    m.update_blocks =
        detail::cuda_update_resident_blocks(m.h.kind, m.h.keras != 0, m.nstate, m.update_unroll, m.num_sms);
    m.d_tables.resize(m.K);
    m.d_states = DeviceBuffer<ReplicaState>(m.K);
    for (int k = 0; k < m.nstate; ++k) m.d_buf[k] = DeviceBuffer<float>(m.pk.span());
    m.choose_grad_parts();
    m.d_grad_sq = DeviceBuffer<double>(m.K * m.grad_parts);
    detail::FusedArgs probe = m.args(nullptr, nullptr, nullptr);
    m.scratch_bytes = detail::cuda_grad_sq_scratch(probe);
    m.d_scratch = DeviceBuffer<char>(std::max<size_t>(m.scratch_bytes, 16));
    m.push_states();
  } else {
    for (int k = 0; k < m.nstate; ++k) m.host_buf[k].resize(static_cast<size_t>(m.pk.span()));
  }
  if (!setup.tables.empty()) {
    std::vector<Impl::NewTable> ready;
    for (int64_t r = 0; r < m.K; ++r) ready.push_back({r, std::move(setup.tables[r]), {}});
    m.install_tables(m.prepare_tables(std::move(ready)));
  }
  m.fill_initial(0, m.K);
}

Optimizer::~Optimizer() = default;

Optimizer::Impl& Optimizer::self() const {
  LRLAB_REQUIRE(impl_, "this optimizer was moved from; assign a new one to it before use");
  return *impl_;
}
Optimizer::Optimizer(Optimizer&&) noexcept = default;
Optimizer& Optimizer::operator=(Optimizer&&) noexcept = default;

void Optimizer::step(float* params, const float* grads, uint16_t* bf16_copy) {
  Impl& m = self();
  LRLAB_REQUIRE(params && grads, "optimizer step needs parameter and gradient buffers");
  detail::FusedArgs a = m.args(params, grads, bf16_copy);
  if (m.cuda()) {
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    LRLAB_CUDA_CHECK(cudaStreamIsCapturing(m.stream, &capture));
    m.captured = m.captured || capture != cudaStreamCaptureStatusNone;
    if (a.stats) detail::cuda_grad_sq(a, m.d_grad_sq.get(), m.d_scratch.get(), m.scratch_bytes, m.stream);
    detail::cuda_prepare(m.d_states.get(), m.d_grad_sq.get(), a.grad_parts, m.h, a.stats, m.K, m.stream);
    detail::cuda_update(a, m.d_states.get(), m.update_blocks, m.stream);
  } else {
    if (a.stats) detail::cpu_grad_sq(a, m.host_grad_blocks, m.host_grad_sq.data());
    for (int64_t r = 0; r < m.K; ++r) prepare_step(m.states[r], m.h, a.stats, m.host_grad_sq[r]);
    detail::cpu_update(a, m.states.data());
  }
}

void Optimizer::step(std::vector<float>& params, const std::vector<float>& grads) {
  const Impl& m = self();
  LRLAB_REQUIRE(m.dev == Device::CPU, "the std::vector form of step() is for the CPU optimizer");
  const size_t want = static_cast<size_t>(m.pk.span());
  LRLAB_REQUIRE(params.size() >= want && grads.size() >= want, "optimizer over ", want,
                " parameters got ", params.size(), " parameters and ", grads.size(), " gradients");
  step(params.data(), grads.data());
}

void Optimizer::set_lr(float base_lr, int64_t replica) {
  require_rate(base_lr, "learning rate");
  Impl& m = self();
  m.each_replica(replica, [&](int64_t r) { m.check_rate_product(r, base_lr, m.states[r].scale, m.table_max[r]); });
  m.set_field(replica, &ReplicaState::base_lr, base_lr);
}

void Optimizer::set_scale(float scale, int64_t replica) {
  require_rate(scale, "rate scale");
  Impl& m = self();
  m.each_replica(replica, [&](int64_t r) { m.check_rate_product(r, m.states[r].base_lr, scale, m.table_max[r]); });
  // A frozen replica's moments went unchecked (a diverged run's, or a loaded state's): its first
  // step after thawing must not turn them into NaN weights.
  std::vector<int64_t> thawing;
  m.each_replica(replica, [&](int64_t r) {
    if (scale > 0.0f && m.states[r].scale == 0.0f) thawing.push_back(r);
  });
  if (!thawing.empty()) {
    // Plateau and the guard call this every epoch: only a thaw pays for a replica-sized buffer.
    std::vector<float> values(static_cast<size_t>(m.n));
    for (int k = 0; k < m.nstate; ++k) {
      const std::vector<float> all = m.read_all(k);
      for (int64_t r : thawing) {
        ReplicaState thawed = m.states[r];
        thawed.scale = scale;
        m.pk.gather(all.data(), r, values.data());
        require_moments(m.h, k, values.data(), m.n, thawed, r, "thawing a frozen replica");
      }
    }
  }
  m.set_field(replica, &ReplicaState::scale, scale);
}

void Optimizer::set_step(int64_t step, int64_t replica) {
  LRLAB_REQUIRE(step >= 0 && step <= kMaxSetStep, "step must be in [0, 2^52] (got ", step, ")");
  self().set_field(replica, &ReplicaState::step, step);
}

void Optimizer::set_grad_scale(float scale) {
  const float inv = 1.0f / scale;
  LRLAB_REQUIRE(std::isfinite(scale) && scale > 0.0f && std::isfinite(inv) && inv > 0.0f,
                "gradient scale must be positive, finite and have a finite fp32 reciprocal (got ", scale, ")");
  Impl& m = self();
  m.turn_on_scaled_grads(true, "set a gradient scale (or check_finite=true)");
  m.set_field(int64_t{-1}, &ReplicaState::inv_grad_scale, inv);
}

void Optimizer::set_schedule(const std::vector<float>& table, int64_t replica) {
  require_table(table);
  Impl& m = self();
  const float table_max = largest_multiplier(table);
  m.each_replica(replica,
                 [&](int64_t r) { m.check_rate_product(r, m.states[r].base_lr, m.states[r].scale, table_max); });
  // Every replica's copy first: a failure leaves every replica as it was.
  std::vector<Impl::NewTable> ready;
  m.each_replica(replica, [&](int64_t r) { ready.push_back({r, table, {}}); });
  m.install_tables(m.prepare_tables(std::move(ready)));
}

void Optimizer::reset_replica(int64_t replica) {
  Impl& m = self();
  LRLAB_REQUIRE(replica >= 0 && replica < m.K, "replica ", replica, " out of range (optimizer has ", m.K, ")");
  m.pull_states();
  ReplicaState& s = m.states[replica];
  s.step = 0;
  s.skipped = 0;
  s.skipped_total = 0;
  m.push_states();
  m.fill_initial(replica, replica + 1);
}

ReplicaState Optimizer::replica_state(int64_t replica) const {
  Impl& m = self();
  LRLAB_REQUIRE(replica >= 0 && replica < m.K, "replica ", replica, " out of range (optimizer has ", m.K, ")");
  m.pull_states();
  return m.states[replica];
}

float Optimizer::next_lr(int64_t replica) const {
  ReplicaState s = replica_state(replica);
  float mult = 1.0f;
  const std::vector<float>& t = self().tables[replica];
  if (!t.empty()) mult = t[std::min<int64_t>(s.step, static_cast<int64_t>(t.size()) - 1)];
  return s.base_lr * mult * s.scale;
}

std::vector<float> Optimizer::state_buffer(int index) const {
  const Impl& m = self();
  LRLAB_REQUIRE(index >= 0 && index < m.nstate, "state buffer ", index, " does not exist (",
                optimizer_name(m.h.kind), " keeps ", m.nstate, ")");
  return m.read_all(index);
}

namespace {
constexpr uint64_t kOptimizerMagicV2 = 0x3274706F626C726CULL;  // "lrlbopt2": with the packing's blocks
constexpr uint64_t kOptimizerMagicV3 = 0x3374706F626C726CULL;  // "lrlbopt3": and a CRC-32 at the end
constexpr uint64_t kOptimizerMagic = 0x3474706F626C726CULL;    // "lrlbopt4": and OptimizerHyper::keras

// What each state buffer holds, which the kind and the buffer count alone do not fix: RMSprop keeps
// two with momentum (v, buf) and two centered (v, ga), and Keras's momentum buffer holds steps, the
// rate in them, where PyTorch's holds gradients.
std::string buffer_names(const OptimizerHyper& h) {
  const char* buf = h.keras ? "keras buf" : "buf";
  switch (h.kind) {
    case OptimKind::SGD: return h.momentum != 0.0f ? buf : "none";
    case OptimKind::Adam:
    case OptimKind::AdamW: return h.amsgrad ? "m, v, vmax" : "m, v";
    case OptimKind::RMSprop:
      return std::string("v") + (h.momentum > 0.0f ? std::string(", ") + buf : "") + (h.centered ? ", ga" : "");
    case OptimKind::Adagrad: return "sum";
  }
  return "?";
}

// The hyperparameters as a state holds them. Fields are only ever added at the end of
// OptimizerHyper, so an older state holds a prefix of it (`bytes` long) and the fields it lacks keep
// their defaults: before `keras` (versions 2 and 3 of a state, 2 of a replica's), PyTorch's rules.
constexpr size_t kHyperBytesBeforeKeras = offsetof(OptimizerHyper, keras);
static_assert(kHyperBytesBeforeKeras == 64, "the older states' hyperparameters are 64 bytes");
OptimizerHyper get_hyper(ByteReader& rd, size_t bytes) {
  OptimizerHyper h;
  rd.get_bytes(&h, bytes);
  return h;
}

// A saved state fits an optimizer whose buffers mean the same; its other hyperparameters may
// differ (a resumed run may change them). Adam and AdamW keep the same moments, so a run may switch
// between them, as PyTorch's load_state_dict allows.
void require_same_buffers(const OptimizerHyper& saved, const OptimizerHyper& mine, const char* what) {
  auto family = [](OptimKind k) { return k == OptimKind::AdamW ? OptimKind::Adam : k; };
  LRLAB_REQUIRE(family(saved.kind) == family(mine.kind) && buffer_names(saved) == buffer_names(mine), what, " is for ",
                optimizer_name(saved.kind), " keeping (", buffer_names(saved), "), not ", optimizer_name(mine.kind),
                " keeping (", buffer_names(mine), ")");
}
}  // namespace

std::string Optimizer::save() const {
  Impl& m = self();
  m.pull_states();
  ByteWriter w;
  w.put(kOptimizerMagic);
  w.put(m.h);
  w.put(m.n);
  w.put(m.K);
  w.put<int32_t>(static_cast<int32_t>(m.pk.blocks().size()));
  for (const ReplicaBlock& b : m.pk.blocks()) w.put(b);
  w.put<int32_t>(m.nstate);
  w.put<int32_t>(m.scaled_grads);
  for (int64_t r = 0; r < m.K; ++r) {
    put_counters(w, m.states[r]);
    w.put_vector(m.tables[r]);
  }
  for (int k = 0; k < m.nstate; ++k) w.put_vector(state_buffer(k));
  put_crc32(w);
  return w.take();
}

void Optimizer::load(const std::string& bytes) {
  Impl& m = self();
  ByteReader rd(bytes, "optimizer state");
  const uint64_t magic = rd.get<uint64_t>();
  LRLAB_REQUIRE(magic == kOptimizerMagic || magic == kOptimizerMagicV3 || magic == kOptimizerMagicV2,
                "optimizer state: not an lrlab optimizer state");
  if (magic != kOptimizerMagicV2) check_crc32(bytes, rd);  // version 2, in older checkpoints, has none
  OptimizerHyper h = get_hyper(rd, magic == kOptimizerMagic ? sizeof(OptimizerHyper) : kHyperBytesBeforeKeras);
  int64_t n = rd.get<int64_t>(), K = rd.get<int64_t>();
  const int32_t nblocks = rd.get<int32_t>();
  LRLAB_REQUIRE(nblocks >= 1 && nblocks <= kMaxReplicaBlocks, "optimizer state: bad block count ", nblocks,
                " at offset ", rd.offset());
  std::vector<ReplicaBlock> blocks(static_cast<size_t>(nblocks));
  for (ReplicaBlock& b : blocks) b = rd.get<ReplicaBlock>();
  int32_t nstate = rd.get<int32_t>();
  int32_t scaled = rd.get<int32_t>();
  require_same_buffers(h, m.h, "optimizer state");
  LRLAB_REQUIRE(nstate == m.nstate, "optimizer state: ", nstate, " state buffers for ", buffer_names(h));
  LRLAB_REQUIRE(n == m.n && K == m.K, "optimizer state is for ", K, " x ", n, " parameters, not ", m.K,
                " x ", m.n);
  LRLAB_REQUIRE(blocks == m.pk.blocks(), "optimizer state: its replicas are packed differently from this optimizer's");
  std::vector<ReplicaState> states(K);
  std::vector<std::vector<float>> tables(K);
  for (int64_t r = 0; r < K; ++r) {
    states[r] = get_counters(rd);
    tables[r] = rd.get_vector<float>();
  }
  std::vector<std::vector<float>> bufs(nstate);
  for (int k = 0; k < nstate; ++k) {
    bufs[k] = rd.get_vector<float>();
    LRLAB_REQUIRE(static_cast<int64_t>(bufs[k].size()) == m.pk.span(), "optimizer state: buffer ", k, " has ",
                  bufs[k].size(), " values, expected ", m.pk.span());
  }
  rd.expect_end();
  std::vector<float> values(static_cast<size_t>(n));
  for (int64_t r = 0; r < K; ++r) {
    require_table(tables[r]);
    const float table_max = largest_multiplier(tables[r]);
    m.check_rate_product(r, states[r].base_lr, states[r].scale, table_max, "optimizer state: ");
    for (int k = 0; k < nstate; ++k) {
      m.pk.gather(bufs[k].data(), r, values.data());
      require_moments(m.h, k, values.data(), n, states[r], r, "optimizer state");
    }
  }
  // Everything read and checked: now commit. Hyperparameters keep the values of this optimizer's
  // spec (a resumed run may change them), the counters and moments come from the file.
  // All that can fail first (as in set_schedule), then the changes.
  m.check_scaled_grads(scaled, "load a state with a gradient scale");
  std::vector<Impl::NewTable> ready;
  for (int64_t r = 0; r < K; ++r) ready.push_back({r, std::move(tables[r]), {}});
  ready = m.prepare_tables(std::move(ready));
  m.turn_on_scaled_grads(scaled, "load a state with a gradient scale");
  m.install_tables(std::move(ready));
  for (int64_t r = 0; r < K; ++r) copy_counters(m.states[r], states[r]);
  m.push_states();
  for (int k = 0; k < nstate; ++k) {
    if (m.cuda())
      m.d_buf[k].upload(bufs[k].data(), bufs[k].size(), m.stream);
    else
      m.host_buf[k] = std::move(bufs[k]);
  }
}

void Optimizer::stash() {
  Impl& m = self();
  const size_t bytes = sizeof(float) * m.pk.span();
  if (!m.cuda()) {
    m.stash_states = m.states;
    for (int k = 0; k < m.nstate; ++k) m.stash_host[k] = m.host_buf[k];
  } else {
    if (!m.d_stash_states.size()) m.allocate_stash();
    LRLAB_CUDA_CHECK(cudaMemcpyAsync(m.d_stash_states.get(), m.d_states.get(), sizeof(ReplicaState) * m.K,
                                     cudaMemcpyDeviceToDevice, m.stream));
    for (int k = 0; k < m.nstate; ++k)
      LRLAB_CUDA_CHECK(cudaMemcpyAsync(m.d_stash_buf[k].get(), m.d_buf[k].get(), bytes, cudaMemcpyDeviceToDevice, m.stream));
  }
  m.stashed = true;
}

void Optimizer::unstash() {
  Impl& m = self();
  LRLAB_REQUIRE(m.stashed, "unstash() without a stash()");
  const size_t bytes = sizeof(float) * m.pk.span();
  if (!m.cuda()) {
    // Tables and their pointers may have been replaced since; keep the current ones.
    for (int64_t r = 0; r < m.K; ++r) {
      const float* table = m.states[r].table;
      const int64_t len = m.states[r].table_len;
      m.states[r] = m.stash_states[r];
      m.states[r].table = table;
      m.states[r].table_len = len;
    }
    for (int k = 0; k < m.nstate; ++k) m.host_buf[k] = m.stash_host[k];
    return;
  }
  for (int k = 0; k < m.nstate; ++k)
    LRLAB_CUDA_CHECK(cudaMemcpyAsync(m.d_buf[k].get(), m.d_stash_buf[k].get(), bytes, cudaMemcpyDeviceToDevice, m.stream));
  // Counters and scales come back; the table fields keep their current values (a table swapped after
  // the stash stays).
  std::vector<ReplicaState> now(m.K), then(m.K);
  LRLAB_CUDA_CHECK(cudaMemcpyAsync(now.data(), m.d_states.get(), sizeof(ReplicaState) * m.K, cudaMemcpyDeviceToHost, m.stream));
  LRLAB_CUDA_CHECK(cudaMemcpyAsync(then.data(), m.d_stash_states.get(), sizeof(ReplicaState) * m.K,
                                   cudaMemcpyDeviceToHost, m.stream));
  LRLAB_CUDA_CHECK(cudaStreamSynchronize(m.stream));
  for (int64_t r = 0; r < m.K; ++r) {
    then[r].table = now[r].table;
    then[r].table_len = now[r].table_len;
  }
  m.d_states.upload(then.data(), m.K, m.stream);
  m.pull_states();
}

namespace {
constexpr uint64_t kReplicaMagicV2 = 0x3270726C626C726CULL;  // "lrlblrp2": the hyperparameters and a CRC-32
constexpr uint64_t kReplicaMagic = 0x3370726C626C726CULL;    // "lrlblrp3": and OptimizerHyper::keras
}

std::string Optimizer::save_replica(int64_t replica) const {
  const Impl& m = self();
  ReplicaState s = replica_state(replica);
  ByteWriter w;
  w.put(kReplicaMagic);
  w.put(m.h);
  w.put<int32_t>(m.nstate);
  w.put(m.n);
  put_counters(w, s);
  w.put_vector(m.tables[replica]);
  for (int k = 0; k < m.nstate; ++k) w.put_vector(m.read_replica(k, replica));
  put_crc32(w);
  return w.take();
}

void Optimizer::load_replica(int64_t replica, const std::string& bytes) {
  Impl& m = self();
  LRLAB_REQUIRE(replica >= 0 && replica < m.K, "replica ", replica, " out of range (optimizer has ", m.K, ")");
  ByteReader rd(bytes, "optimizer replica state");
  const uint64_t magic = rd.get<uint64_t>();
  LRLAB_REQUIRE(magic == kReplicaMagic || magic == kReplicaMagicV2, "optimizer replica state: not an lrlab replica state");
  check_crc32(bytes, rd);
  const OptimizerHyper h = get_hyper(rd, magic == kReplicaMagic ? sizeof(OptimizerHyper) : kHyperBytesBeforeKeras);
  int32_t nstate = rd.get<int32_t>();
  int64_t n = rd.get<int64_t>();
  require_same_buffers(h, m.h, "optimizer replica state");
  LRLAB_REQUIRE(nstate == m.nstate && n == m.n, "optimizer replica state is for ", nstate, " buffers over ", n,
                " parameters, not ", m.nstate, " over ", m.n);
  const ReplicaState s = get_counters(rd);
  std::vector<float> table = rd.get_vector<float>();
  std::vector<std::vector<float>> bufs(nstate);
  for (int k = 0; k < nstate; ++k) {
    bufs[k] = rd.get_vector<float>();
    LRLAB_REQUIRE(static_cast<int64_t>(bufs[k].size()) == n, "optimizer replica state: buffer ", k, " has ",
                  bufs[k].size(), " values, expected ", n);
    require_moments(m.h, k, bufs[k].data(), n, s, replica, "optimizer replica state");
  }
  rd.expect_end();
  require_table(table);
  m.check_rate_product(replica, s.base_lr, s.scale,
                       largest_multiplier(table),
                       "optimizer replica state: ");
  std::vector<Impl::NewTable> ready;
  ready.push_back({replica, std::move(table), {}});
  m.install_tables(m.prepare_tables(std::move(ready)));
  m.pull_states();
  // The gradient scale belongs to this optimizer (set_grad_scale sets it for every replica), not to
  // the replica that moves in.
  const float inv_grad_scale = m.states[replica].inv_grad_scale;
  copy_counters(m.states[replica], s);
  m.states[replica].inv_grad_scale = inv_grad_scale;
  m.push_states();
  for (int k = 0; k < nstate; ++k) m.write_replica(k, replica, bufs[k]);
}

const OptimizerHyper& Optimizer::hyper() const { return self().h; }
Device Optimizer::device() const { return self().dev; }
int64_t Optimizer::n_params() const { return self().n; }
int64_t Optimizer::replicas() const { return self().K; }
const ReplicaPacking& Optimizer::packing() const { return self().pk; }
int Optimizer::num_state_buffers() const { return self().nstate; }
const std::vector<ParamGroup>& Optimizer::groups() const { return self().groups; }

namespace detail {

int OptimizerAccess::update_unroll(const Optimizer& opt) { return opt.self().update_unroll; }

void OptimizerAccess::set_update_unroll(Optimizer& opt, int unroll) {
  Optimizer::Impl& m = opt.self();
  LRLAB_REQUIRE(unroll == 1 || unroll == 2, "the update's unroll is 1 or 2, not ", unroll);
  LRLAB_REQUIRE(m.cuda(), "the update's unroll is a setting of the CUDA optimizer");
  LRLAB_REQUIRE(!m.captured, "the update's unroll cannot change once step() is in a CUDA graph");
  m.update_unroll = unroll;
  m.update_blocks = cuda_update_resident_blocks(m.h.kind, m.h.keras != 0, m.nstate, unroll, m.num_sms);
}

int64_t OptimizerAccess::update_blocks_per_sm(const Optimizer& opt) {
  const Optimizer::Impl& m = opt.self();
  return m.cuda() ? m.update_blocks / m.num_sms : 0;
}

}  // namespace detail

}  // namespace lrlab
