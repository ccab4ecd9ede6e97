#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <limits>
#include <type_traits>
#include <utility>

#include "lrlab/error.hpp"
#include "lrlab/optimizer.hpp"
#include "lrlab/rng.hpp"
#include "lrlab/serialize.hpp"
#include "lrlab/spec.hpp"
#include "optim_long_run.hpp"
#include "optim_reference.hpp"
#include "optimizer_kernels.hpp"
#include "test_util.hpp"

using namespace lrlab;
using lrlab::testing::expect_tracks_float64;
using lrlab::testing::kLongRunVariants;
using lrlab::testing::LongRunVariant;
using lrlab::testing::maxnorm_rel_error;
using lrlab::testing::RefOptimizer;
using lrlab::testing::error_of;
using lrlab::testing::throws_error_containing;

namespace {

// save() and save_replica() end with a CRC-32 of what precedes it: a test that edits a state takes
// it off, edits, and puts a new one on.
std::string unsealed(const std::string& state) { return state.substr(0, state.size() - 4); }
std::string sealed(const std::string& body) {
  ByteWriter w;
  w.put_bytes(body.data(), body.size());
  put_crc32(w);
  return w.take();
}

std::vector<float> normal_vector(size_t n, Rng& rng, double scale = 1.0) {
  std::vector<float> v(n);
  for (float& x : v) x = static_cast<float>(rng.normal() * scale);
  return v;
}

class OptimizerReference : public ::testing::TestWithParam<LongRunVariant> {};

// The problem and the tolerances: tests/optim_long_run.hpp (OptimizerReferenceGpu runs the same).
TEST_P(OptimizerReference, ThousandStepsTrackFloat64) {
  expect_tracks_float64(GetParam(), Device::CPU,
                        [](Optimizer& opt, std::vector<float>& p, const std::vector<float>& g) { opt.step(p, g); });
}

INSTANTIATE_TEST_SUITE_P(AllRules, OptimizerReference, ::testing::ValuesIn(kLongRunVariants));

TEST(OptimizerReplicas, EachReplicaHasItsOwnRateTableAndStep) {
  const int64_t n = 257, K = 3, ld = 260;
  Rng rng(7);
  std::vector<float> p(K * ld, 0.0f), g(K * ld, 0.0f);
  for (int64_t r = 0; r < K; ++r)
    for (int64_t i = 0; i < n; ++i) p[r * ld + i] = static_cast<float>(rng.normal());
  const std::vector<float> p_start = p;
  OptimizerSetup setup;
  setup.replicas = K;
  setup.replica_stride = ld;
  Optimizer opt("adam()", Device::CPU, n, setup);
  const float rates[K] = {1e-3f, 1e-2f, 3e-2f};
  for (int64_t r = 0; r < K; ++r) opt.set_lr(rates[r], r);
  opt.set_schedule({1.0f, 0.5f, 0.25f}, 1);
  opt.set_step(5, 2);
  std::vector<RefOptimizer> refs;
  for (int64_t r = 0; r < K; ++r)
    refs.emplace_back(opt.hyper(), std::vector<float>(p.begin() + r * ld, p.begin() + r * ld + n));
  refs[2].t = 5;
  for (int step = 0; step < 20; ++step) {
    for (int64_t r = 0; r < K; ++r)
      for (int64_t i = 0; i < n; ++i) g[r * ld + i] = static_cast<float>(rng.normal());
    opt.step(p, g);
    for (int64_t r = 0; r < K; ++r) {
      double mult = r == 1 ? (step == 0 ? 1.0 : step == 1 ? 0.5 : 0.25) : 1.0;
      std::vector<float> gr(g.begin() + r * ld, g.begin() + r * ld + n);
      refs[r].step(gr, std::vector<double>(n, rates[r] * mult), std::vector<double>(n, 0.0));
    }
  }
  EXPECT_EQ(opt.step_count(0), 20);
  EXPECT_EQ(opt.step_count(2), 25);
  for (int64_t r = 0; r < K; ++r) EXPECT_LT(maxnorm_rel_error(p.data() + r * ld, refs[r].p), 1e-5) << r;
  // Padding between replicas is never touched.
  for (int64_t r = 0; r < K; ++r)
    for (int64_t i = n; i < ld; ++i) EXPECT_EQ(p[r * ld + i], p_start[r * ld + i]);
}

// A replica at scale 0 (a sweep's diverged configuration) is frozen: no weight, moment or count
// moves, even where an update at rate 0 would move them (Adam's moments; Keras's momentum forms,
// whose buffer moves the weights), while the other replicas train on; a scale above 0 thaws it.
// Its gradients are NaN while frozen, as a diverged run's are: the finite check does not count
// them as skipped steps, nor mark them as such (a dynamic loss scale would fall for them).
TEST(OptimizerReplicas, ScaleZeroFreezesItsReplica) {
  const int64_t n = 37, ld = 40, K = 3;
  for (const char* spec : {"adam()", "sgd(keras=true,momentum=0.9)", "rmsprop(keras=true,momentum=0.9,centered=true)",
                           "adamw(check_finite=true,clip=1)"}) {
    Rng rng(23);
    OptimizerSetup setup;
    setup.replicas = K;
    setup.replica_stride = ld;
    Optimizer opt(spec, Device::CPU, n, setup);
    std::vector<float> p = normal_vector(K * ld, rng);
    auto steps = [&](int count) {
      for (int i = 0; i < count; ++i) {
        std::vector<float> g = normal_vector(K * ld, rng);
        if (opt.replica_state(1).scale == 0.0f) std::fill(g.begin() + ld, g.begin() + 2 * ld, NAN);
        opt.step(p, g);
      }
    };
    auto replica = [&](const std::vector<float>& v, int64_t r) {
      return std::vector<float>(v.begin() + r * ld, v.begin() + r * ld + n);
    };
    auto frozen_part = [&] {
      std::vector<std::vector<float>> parts = {replica(p, 1)};
      for (int k = 0; k < opt.num_state_buffers(); ++k) parts.push_back(replica(opt.state_buffer(k), 1));
      return parts;
    };
    steps(2);
    opt.set_scale(0.0f, 1);
    const std::vector<std::vector<float>> before = frozen_part();
    const std::vector<float> other_before = replica(p, 0);
    steps(3);
    EXPECT_EQ(frozen_part(), before) << spec;
    EXPECT_NE(replica(p, 0), other_before) << spec;
    EXPECT_EQ(opt.step_count(1), 2) << spec;
    EXPECT_EQ(opt.step_count(0), 5) << spec;
    EXPECT_EQ(opt.replica_state(1).skipped_total, 0) << spec;
    EXPECT_EQ(opt.replica_state(1).skipped, kSkippedFrozen) << spec;
    EXPECT_EQ(opt.replica_state(0).skipped, 0) << spec;
    opt.set_scale(1.0f, 1);
    steps(1);
    EXPECT_EQ(opt.step_count(1), 3) << spec;
    EXPECT_NE(replica(p, 1), before[0]) << spec;
  }
}

// Thawing checks the moments a frozen replica kept, as load() does: NaN moments (a run that took
// NaN gradients without the finite check) are refused, and the replica stays frozen.
TEST(OptimizerReplicas, ThawingRefusesNaNMoments) {
  OptimizerSetup setup;
  setup.replicas = 2;
  Optimizer opt("adam()", Device::CPU, 5, setup);
  std::vector<float> p(10, 1.0f), g(10, 0.5f);
  g[7] = NAN;
  opt.step(p, g);
  opt.set_scale(0.0f, 1);
  EXPECT_TRUE(throws_error_containing([&] { opt.set_scale(0.5f, 1); },
                                      "thawing a frozen replica: replica 1, parameter 2: state buffer 0 holds"));
  EXPECT_EQ(opt.replica_state(1).scale, 0.0f);
  // All replicas at once: refused for the frozen one's sake, and none changes.
  EXPECT_TRUE(throws_error_containing([&] { opt.set_scale(0.5f); }, "thawing a frozen replica: replica 1"));
  EXPECT_EQ(opt.replica_state(0).scale, 1.0f);
  opt.set_scale(0.5f, 0);  // a live replica with healthy moments
  EXPECT_EQ(opt.replica_state(0).scale, 0.5f);
}

// The CPU update shares the elements of all groups of all live replicas evenly among threads, so
// shares start and end inside groups and replicas; every split must give the same bits.
TEST(OptimizerReplicas, ThreadSharesGiveTheOneThreadResult) {
  const int64_t n = 30011, ld = 30016, K = 3;  // 3 x 30011 floats: above the parallel threshold
  OptimizerSetup setup;
  setup.replicas = K;
  setup.replica_stride = ld;
  setup.groups = {{0, 20000, 1.0f, -1.0f}, {20004, n, 0.5f, 0.0f}};  // a gap of 4 between them
  auto run = [&](int threads, std::vector<float>& p, std::vector<uint16_t>& bf, std::string& state) {
    lrlab::testing::OmpThreads team(threads);
    Rng rng(11);
    p.assign(K * ld, 0.0f);
    for (float& v : p) v = static_cast<float>(rng.normal());
    bf.assign(K * ld, 0);
    // Clipping too: the norm is a sum over all elements, which threads must not reorder.
    Optimizer opt("adamw(weight_decay=0.1,check_finite=true,clip=1)", Device::CPU, n, setup);
    for (int64_t r = 0; r < K; ++r) opt.set_lr(1e-3f * (r + 1), r);
    std::vector<float> g(K * ld);
    for (int step = 0; step < 3; ++step) {
      for (float& v : g) v = static_cast<float>(rng.normal());
      if (step == 1) g[1 * ld + 5] = std::numeric_limits<float>::infinity();  // replica 1 skips
      opt.step(p.data(), g.data(), bf.data());
    }
    EXPECT_EQ(opt.step_count(1), 2);
    state = opt.save();
  };
  std::vector<float> p1;
  std::vector<uint16_t> bf1;
  std::string s1;
  run(1, p1, bf1, s1);
  for (int threads : {2, 3, 5}) {
    std::vector<float> p;
    std::vector<uint16_t> bf;
    std::string s;
    run(threads, p, bf, s);
    EXPECT_EQ(p, p1) << threads << " threads";
    EXPECT_EQ(bf, bf1) << threads << " threads";
    EXPECT_TRUE(s == s1) << "optimizer state differs with " << threads << " threads";
  }
  // Untouched: the gap between the groups and the padding between replicas.
  Rng rng(11);
  std::vector<float> start(K * ld);
  for (float& v : start) v = static_cast<float>(rng.normal());
  for (int64_t r = 0; r < K; ++r) {
    for (int64_t i = 20000; i < 20004; ++i) EXPECT_EQ(p1[r * ld + i], start[r * ld + i]);
    for (int64_t i = n; i < ld; ++i) EXPECT_EQ(p1[r * ld + i], start[r * ld + i]);
    EXPECT_NE(p1[r * ld + 19999], start[r * ld + 19999]);
    EXPECT_NE(p1[r * ld + 20004], start[r * ld + 20004]);
  }
}

// What cpu_grad_sq reads: K replicas' gradients of n floats, `ld` floats apart, as one block.
detail::FusedArgs grad_sq_args(const std::vector<float>& g, int64_t n, int64_t ld, int64_t K) {
  detail::FusedArgs a;
  a.g = g.data();
  a.n = n;
  a.replicas = K;
  a.blocks.count = 1;
  a.blocks.end[0] = n;
  a.blocks.stride[0] = ld;
  return a;
}

// The clipping norm's sum of squares in double: a float result hides most orderings, so check the
// sum itself, on values where the order of additions shows (1e16 swallows a lone 1 but not 8192).
TEST(OptimizerClip, SumOfSquaresIsTheSameForAnyThreadCount) {
  const int64_t n = 70001, ld = 70004, K = 2;
  std::vector<float> g(K * ld, 1.0f);
  g[0] = 1e8f;
  g[ld + 40000] = 1e8f;
  const detail::FusedArgs a = grad_sq_args(g, n, ld, K);
  auto sums = [&](int threads) {
    lrlab::testing::OmpThreads team(threads);
    std::vector<double> blocks, out(K);
    detail::cpu_grad_sq(a, blocks, out.data());
    return out;
  };
  const std::vector<double> one = sums(1);
  EXPECT_GT(one[0], 1e16 + n / 2.0);  // the ones were not all lost
  for (int threads : {2, 3, 7}) {
    const std::vector<double> many = sums(threads);
    for (int64_t r = 0; r < K; ++r) EXPECT_EQ(many[r], one[r]) << threads << " threads, replica " << r;
  }
}

TEST(OptimizerSkip, NonFiniteGradientsSkipTheWholeStep) {
  const size_t n = 64;
  Rng rng(3);
  std::vector<float> p = normal_vector(n, rng), g = normal_vector(n, rng);
  Optimizer opt("adam(check_finite=true)", Device::CPU, n);
  opt.step(p, g);
  const std::vector<float> before = p;
  const std::vector<float> m_before = opt.state_buffer(0);
  g[17] = std::numeric_limits<float>::infinity();
  opt.step(p, g);
  EXPECT_EQ(p, before);
  EXPECT_EQ(opt.state_buffer(0), m_before);
  EXPECT_EQ(opt.step_count(), 1);
  EXPECT_EQ(opt.replica_state().skipped, 1);
  g[17] = std::numeric_limits<float>::quiet_NaN();
  opt.step(p, g);
  EXPECT_EQ(p, before);
  EXPECT_EQ(opt.replica_state().skipped_total, 2);
  g[17] = 0.5f;
  opt.step(p, g);
  EXPECT_NE(p, before);
  EXPECT_EQ(opt.step_count(), 2);
}

TEST(OptimizerSkip, GradScaleUnscalesInTheUpdate) {
  const size_t n = 100;
  Rng rng(5);
  std::vector<float> p1 = normal_vector(n, rng), g = normal_vector(n, rng);
  std::vector<float> p2 = p1, g_scaled = g;
  for (float& x : g_scaled) x *= 1024.0f;  // a power of two: scaling is exact
  Optimizer plain("adam()", Device::CPU, n);
  Optimizer scaled("adam()", Device::CPU, n);
  scaled.set_grad_scale(1024.0f);
  for (int i = 0; i < 5; ++i) {
    plain.step(p1, g);
    scaled.step(p2, g_scaled);
  }
  EXPECT_EQ(p1, p2);
  // A scale turns the finite check on.
  g_scaled[3] = std::numeric_limits<float>::infinity();
  scaled.step(p2, g_scaled);
  EXPECT_EQ(scaled.step_count(), 5);
}

TEST(OptimizerClip, GlobalNormClippingMatchesClippedGradients) {
  const size_t n = 300;
  Rng rng(9);
  std::vector<float> p = normal_vector(n, rng);
  Optimizer opt("sgd(clip=1.0)", Device::CPU, n, {0.1f});
  RefOptimizer ref(opt.hyper(), p);
  for (int step = 0; step < 10; ++step) {
    std::vector<float> g = normal_vector(n, rng, step % 2 ? 0.001 : 3.0);
    double norm = 0;
    for (float x : g) norm += static_cast<double>(x) * x;
    norm = std::sqrt(norm);
    double coef = std::min(1.0, 1.0 / (norm + 1e-6));
    opt.step(p, g);
    ref.step(g, std::vector<double>(n, 0.1), std::vector<double>(n, 0.0), coef);
  }
  EXPECT_LT(maxnorm_rel_error(p.data(), ref.p), 1e-6);
}

// torch.nn.utils.clip_grad_norm_ scales by max_norm / (norm + 1e-6): for norms near 1e-6 that 1e-6
// is a third of the divisor, not a rounding detail.
TEST(OptimizerClip, NormCarriesTorchsEpsilon) {
  std::vector<float> p = {0.0f, 0.0f}, g = {1.2e-6f, 1.6e-6f};
  Optimizer opt("sgd(clip=1e-6)", Device::CPU, 2, {1.0f});
  opt.step(p, g);
  const double norm = std::hypot(static_cast<double>(g[0]), static_cast<double>(g[1]));  // 2e-6
  const double coef = static_cast<double>(1e-6f) / (norm + 1e-6);                        // about 1/3
  for (int i = 0; i < 2; ++i) EXPECT_NEAR(p[i], -coef * g[i], 1e-5 * g[i]) << i;
}

// With a loss scale, PyTorch's recipe is scaler.unscale_() and then clip_grad_norm_(): clipping
// compares max_norm with the norm of the unscaled gradients, whatever the scale.
TEST(OptimizerClip, ClipsTheUnscaledNorm) {
  const float scale = 1024.0f;
  for (const std::vector<float>& g : {std::vector<float>{0.3f, -0.4f}, std::vector<float>{3.0f, -4.0f}}) {
    std::vector<float> p = {1.0f, 2.0f}, scaled = g;
    for (float& x : scaled) x *= scale;
    Optimizer opt("sgd(clip=1)", Device::CPU, 2, {0.1f});
    opt.set_grad_scale(scale);
    opt.step(p, scaled);
    const double norm = std::hypot(static_cast<double>(g[0]), static_cast<double>(g[1]));  // 0.5, then 5
    const double coef = std::min(1.0, 1.0 / (norm + 1e-6));
    EXPECT_NEAR(p[0], 1.0 - 0.1 * coef * g[0], 1e-6) << norm;
    EXPECT_NEAR(p[1], 2.0 - 0.1 * coef * g[1], 1e-6) << norm;
  }
}

// Each replica is clipped by its own norm (the norm is per replica, PyTorch's one model per
// configuration): replicas whose gradients differ in size get different coefficients.
TEST(OptimizerClip, EachReplicaClipsByItsOwnNorm) {
  const int64_t n = 300, K = 3;
  Rng rng(31);
  std::vector<float> p = normal_vector(K * n, rng), g(K * n);
  OptimizerSetup setup;
  setup.lr = 0.1f;
  setup.replicas = K;
  Optimizer opt("sgd(clip=1.0)", Device::CPU, n, setup);
  std::vector<RefOptimizer> refs;
  for (int64_t r = 0; r < K; ++r) refs.emplace_back(opt.hyper(), std::vector<float>(p.begin() + r * n, p.begin() + (r + 1) * n));
  const double sizes[K] = {3.0, 0.001, 0.5};  // clipped, not clipped, clipped by another factor
  for (int64_t r = 0; r < K; ++r) {
    std::vector<float> gr = normal_vector(n, rng, sizes[r]);
    std::copy(gr.begin(), gr.end(), g.begin() + r * n);
  }
  opt.step(p, g);
  for (int64_t r = 0; r < K; ++r) {
    std::vector<float> gr(g.begin() + r * n, g.begin() + (r + 1) * n);
    double norm = 0;
    for (float x : gr) norm += static_cast<double>(x) * x;
    norm = std::sqrt(norm);
    refs[r].step(gr, std::vector<double>(n, 0.1), std::vector<double>(n, 0.0), std::min(1.0, 1.0 / (norm + 1e-6)));
    EXPECT_LT(maxnorm_rel_error(p.data() + r * n, refs[r].p), 1e-6) << "replica " << r;
  }
}

TEST(OptimizerBf16, CopyWrittenInTheSamePass) {
  const size_t n = 203;
  Rng rng(11);
  std::vector<float> p = normal_vector(n, rng), g = normal_vector(n, rng);
  std::vector<uint16_t> bf(n, 0xFFFF);
  Optimizer opt("adamw()", Device::CPU, n);
  opt.step(p.data(), g.data(), bf.data());
  for (size_t i = 0; i < n; ++i) {
    ASSERT_EQ(bf[i], float_to_bf16(p[i]));
    EXPECT_LE(std::abs(bf16_to_float(bf[i]) - p[i]), std::abs(p[i]) * (1.0f / 256));
  }
}

TEST(OptimizerBf16, RoundsToNearestEven) {
  EXPECT_EQ(float_to_bf16(1.0f), 0x3F80);
  // 1 + 2^-8 lies exactly between two bf16 values: ties go to the even one (1.0).
  EXPECT_EQ(float_to_bf16(1.00390625f), 0x3F80);
  // 1 + 3*2^-8 ties between 1+2^-7 (odd) and 1+2^-6 (even).
  EXPECT_EQ(float_to_bf16(1.01171875f), 0x3F82);
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(std::numeric_limits<float>::quiet_NaN()))));
}

TEST(OptimizerState, SaveLoadContinuesBitIdentically) {
  const size_t n = 77;
  for (const char* spec : {"adam(amsgrad=true)", "rmsprop(momentum=0.9,centered=true)", "sgd(momentum=0.9)", "adagrad()"}) {
    Rng rng(13);
    std::vector<float> p = normal_vector(n, rng);
    std::vector<std::vector<float>> grads;
    for (int i = 0; i < 20; ++i) grads.push_back(normal_vector(n, rng));
    std::vector<float> straight = p, resumed = p;
    Optimizer a(spec, Device::CPU, n);
    a.set_schedule({1.0f, 0.9f, 0.8f, 0.7f});
    a.set_scale(0.5f);
    for (auto& g : grads) a.step(straight, g);

    Optimizer b(spec, Device::CPU, n);
    b.set_schedule({1.0f, 0.9f, 0.8f, 0.7f});
    b.set_scale(0.5f);
    for (int i = 0; i < 10; ++i) b.step(resumed, grads[i]);
    std::string saved = b.save();
    Optimizer c(spec, Device::CPU, n);
    c.load(saved);
    EXPECT_EQ(c.step_count(), 10);
    for (int i = 10; i < 20; ++i) c.step(resumed, grads[i]);
    EXPECT_EQ(straight, resumed) << spec;
  }
}

TEST(OptimizerState, ReplicaMovesBetweenOptimizers) {
  const int64_t n = 50;
  Rng rng(17);
  OptimizerSetup three;
  three.replicas = 3;
  Optimizer a("adam()", Device::CPU, n, three);
  a.set_lr(0.02f, 2);
  a.set_schedule({1.0f, 0.5f}, 2);
  std::vector<float> p = normal_vector(3 * n, rng);
  for (int i = 0; i < 4; ++i) {
    std::vector<float> g = normal_vector(3 * n, rng);
    a.step(p, g);
  }
  Optimizer b("adam()", Device::CPU, n);
  b.load_replica(0, a.save_replica(2));
  std::vector<float> p3(p.begin() + 2 * n, p.end());
  std::vector<float> q(p.begin() + 2 * n, p.end());
  std::vector<float> g = normal_vector(3 * n, rng);
  std::vector<float> g3(g.begin() + 2 * n, g.end());
  a.step(p, g);
  b.step(q, g3);
  EXPECT_EQ(std::vector<float>(p.begin() + 2 * n, p.end()), q);
  EXPECT_EQ(b.step_count(), 5);
  Optimizer c("sgd(momentum=0.9)", Device::CPU, n);
  EXPECT_THROW(c.load_replica(0, a.save_replica(0)), Error);
}

// The gradient scale is the receiving optimizer's (set_grad_scale sets every replica): a replica
// moved in from an optimizer that used another loss scale is unscaled as its new neighbours are.
TEST(OptimizerState, MovedReplicaKeepsTheReceiversGradScale) {
  const int64_t n = 20;
  Optimizer from("adam()", Device::CPU, n);
  from.set_grad_scale(1024.0f);
  OptimizerSetup two;
  two.replicas = 2;
  Optimizer to("adam()", Device::CPU, n, two);
  to.set_grad_scale(8.0f);
  to.load_replica(1, from.save_replica(0));
  EXPECT_EQ(to.replica_state(1).inv_grad_scale, 1.0f / 8.0f);
  EXPECT_EQ(to.replica_state(0).inv_grad_scale, 1.0f / 8.0f);
}

// A saved state is checked whole before any of it is taken: a bad table entry for the last replica
// leaves every replica as it was.
TEST(OptimizerState, LoadOfABadTableChangesNothing) {
  const int64_t n = 12;
  OptimizerSetup two;
  two.replicas = 2;
  Optimizer a("adam()", Device::CPU, n, two);
  a.set_step(3, 0);
  a.set_schedule({0.125f, 0.375f}, 1);
  std::string s = a.save();
  const float marker = 0.375f, nan = std::numeric_limits<float>::quiet_NaN();
  const size_t at = s.find(std::string(reinterpret_cast<const char*>(&marker), sizeof marker));
  ASSERT_NE(at, std::string::npos);
  s.replace(at, sizeof nan, reinterpret_cast<const char*>(&nan), sizeof nan);
  Optimizer b("adam()", Device::CPU, n, two);
  const std::string before = b.save();
  EXPECT_THROW(b.load(s), Error);
  EXPECT_EQ(b.save(), before);
}

TEST(OptimizerState, UnstashRollsBackToTheStash) {
  const size_t n = 40;
  Rng rng(23);
  std::vector<float> p = normal_vector(n, rng);
  Optimizer opt("adam(amsgrad=true)", Device::CPU, n);
  EXPECT_THROW(opt.unstash(), Error);
  std::vector<float> g = normal_vector(n, rng);
  opt.step(p, g);
  opt.stash();
  const std::vector<float> m = opt.state_buffer(0), v = opt.state_buffer(2);
  for (int i = 0; i < 3; ++i) opt.step(p, g);
  opt.set_scale(0.25f);
  opt.unstash();
  EXPECT_EQ(opt.step_count(), 1);
  EXPECT_EQ(opt.replica_state().scale, 1.0f);
  EXPECT_EQ(opt.state_buffer(0), m);
  EXPECT_EQ(opt.state_buffer(2), v);
}

// unstash() rolls back counters and moments but keeps the schedule installed since the stash (a
// range test swaps its ramp in and out around one): the next step reads the current table.
TEST(OptimizerState, UnstashKeepsTheCurrentTable) {
  std::vector<float> p = {1.0f}, g = {1.0f};
  Optimizer opt("sgd()", Device::CPU, 1, {0.1f});
  opt.stash();  // without a table
  opt.set_schedule({0.25f});
  opt.unstash();
  EXPECT_FLOAT_EQ(opt.next_lr(), 0.025f);
  opt.step(p, g);
  EXPECT_FLOAT_EQ(p[0], 0.975f);
}

// reset_replica() makes one replica a fresh optimizer: its count restarts (Adam's bias corrections
// with it) and its moments return to their initial values, while the other replicas go on as they were.
TEST(OptimizerState, ResetReplicaStartsItAfresh) {
  const int64_t n = 33, ld = 36, K = 2;
  OptimizerSetup setup;
  setup.lr = 0.01f;
  setup.replicas = K;
  setup.replica_stride = ld;
  Optimizer opt("adam()", Device::CPU, n, setup);
  Rng rng(37);
  std::vector<float> p(K * ld, 0.0f), g(K * ld, 0.0f);
  for (int64_t r = 0; r < K; ++r)
    for (int64_t i = 0; i < n; ++i) p[r * ld + i] = static_cast<float>(rng.normal());
  std::vector<RefOptimizer> refs;
  for (int64_t r = 0; r < K; ++r) refs.emplace_back(opt.hyper(), std::vector<float>(p.begin() + r * ld, p.begin() + r * ld + n));
  auto step = [&] {
    for (int64_t r = 0; r < K; ++r)
      for (int64_t i = 0; i < n; ++i) g[r * ld + i] = static_cast<float>(rng.normal());
    opt.step(p, g);
    for (int64_t r = 0; r < K; ++r)
      refs[r].step(std::vector<float>(g.begin() + r * ld, g.begin() + r * ld + n), std::vector<double>(n, 0.01),
                   std::vector<double>(n, 0.0));
  };
  for (int i = 0; i < 5; ++i) step();
  opt.reset_replica(1);
  refs[1] = RefOptimizer(opt.hyper(), std::vector<float>(p.begin() + ld, p.begin() + ld + n));
  EXPECT_EQ(opt.step_count(1), 0);
  EXPECT_EQ(opt.step_count(0), 5);
  for (int k = 0; k < 2; ++k)
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(opt.state_buffer(k)[ld + i], 0.0f) << "buffer " << k << ", " << i;
  for (int i = 0; i < 3; ++i) step();
  EXPECT_EQ(opt.step_count(1), 3);
  for (int64_t r = 0; r < K; ++r) EXPECT_LT(maxnorm_rel_error(p.data() + r * ld, refs[r].p), 1e-5) << "replica " << r;
}

// A state whose buffers mean other things is refused, though kind and buffer count agree: RMSprop
// keeps (v, buf) with momentum and (v, ga) centered. Loaded, the momentum buffer would be read as
// the mean gradient, and v - ga^2 clamped at 0 would step by g / eps.
TEST(OptimizerState, LoadRefusesBuffersThatMeanOtherThings) {
  Optimizer a("rmsprop(momentum=0.9)", Device::CPU, 4);
  std::vector<float> p = {1, 2, 3, 4}, g = {0.5f, -0.5f, 0.25f, 1};
  a.step(p, g);
  Optimizer b("rmsprop(centered=true)", Device::CPU, 4);
  const std::string message = "is for rmsprop keeping (v, buf), not rmsprop keeping (v, ga)";
  EXPECT_TRUE(throws_error_containing([&] { b.load(a.save()); }, message));
  EXPECT_TRUE(throws_error_containing([&] { b.load_replica(0, a.save_replica(0)); }, message));
  // Other hyperparameters may change (a resumed run's new alpha, say).
  Optimizer c("rmsprop(momentum=0.5,alpha=0.9)", Device::CPU, 4);
  c.load(a.save());
  c.load_replica(0, a.save_replica(0));
  // Adam and AdamW keep the same moments: a run may switch, as PyTorch allows. With amsgrad on one
  // side only, the buffers differ.
  Optimizer adam("adam()", Device::CPU, 4), adamw("adamw(wd=0.1)", Device::CPU, 4);
  adam.step(p, g);
  adamw.load(adam.save());
  EXPECT_EQ(adamw.step_count(), 1);
  EXPECT_EQ(adamw.state_buffer(1), adam.state_buffer(1));
  Optimizer amsgrad("adamw(amsgrad=true)", Device::CPU, 4);
  EXPECT_TRUE(throws_error_containing([&] { amsgrad.load(adam.save()); },
                                      "is for adam keeping (m, v), not adamw keeping (m, v, vmax)"));
}

// The state ends with a CRC-32: a byte changed anywhere is refused. The previous formats, which
// older checkpoints hold, still load: version 3, whose hyperparameters end before `keras`, and
// version 2, which also has no CRC-32.
TEST(OptimizerState, LoadChecksTheChecksumAndReadsTheOlderFormats) {
  Optimizer a("adam(amsgrad=true)", Device::CPU, 6);
  std::vector<float> p = {1, 2, 3, 4, 5, 6}, g = {0.5f, -0.5f, 0.25f, 1, 2, -3};
  a.step(p, g);
  const std::string s = a.save();
  Optimizer b("adam(amsgrad=true)", Device::CPU, 6);
  for (size_t at : {size_t(9), s.size() / 3, s.size() / 2, s.size() - 5, s.size() - 1}) {
    std::string bad = s;
    bad[at] = static_cast<char>(bad[at] ^ 0x40);
    EXPECT_TRUE(throws_error_containing([&] { b.load(bad); }, "optimizer state: checksum mismatch")) << at;
  }
  // The hyperparameters follow the 8-byte magic; `keras` is their last 4 bytes.
  std::string v3 = unsealed(s);
  ASSERT_EQ(v3.compare(0, 8, "lrlbopt4"), 0);
  v3.erase(8 + offsetof(OptimizerHyper, keras), sizeof(int32_t));
  v3[7] = '3';
  b.load(sealed(v3));
  EXPECT_EQ(b.save(), s);
  std::string v2 = v3;
  v2[7] = '2';
  Optimizer c("adam(amsgrad=true)", Device::CPU, 6);
  c.load(v2);
  EXPECT_EQ(c.save(), s);
  // A version 3 state is PyTorch's rules, whatever its last hyperparameter bytes would say as v4.
  Optimizer keras_sgd("sgd(keras=true,momentum=0.9)", Device::CPU, 6);
  std::string old_sgd = unsealed(keras_sgd.save());
  old_sgd.erase(8 + offsetof(OptimizerHyper, keras), sizeof(int32_t));
  old_sgd[7] = '3';
  EXPECT_TRUE(throws_error_containing([&] { keras_sgd.load(sealed(old_sgd)); }, "is for sgd keeping (buf)"));
  std::string replica_v2 = unsealed(a.save_replica(0));
  ASSERT_EQ(replica_v2.compare(0, 8, "lrlblrp3"), 0);
  replica_v2.erase(8 + offsetof(OptimizerHyper, keras), sizeof(int32_t));
  replica_v2[7] = '2';
  c.load_replica(0, sealed(replica_v2));
  EXPECT_EQ(c.save(), s);
  std::string replica = a.save_replica(0);
  replica[replica.size() / 2] ^= 0x01;
  EXPECT_TRUE(
      throws_error_containing([&] { b.load_replica(0, replica); }, "optimizer replica state: checksum mismatch"));
}

// SGD with momentum keeps a buffer that plain SGD has not: a state moving between them is refused
// in either direction, and the message says what each side keeps.
TEST(OptimizerState, SgdWithAndWithoutMomentumRefuseEachOthersState) {
  Optimizer momentum("sgd(momentum=0.9)", Device::CPU, 3), plain("sgd()", Device::CPU, 3);
  std::vector<float> p = {1, 2, 3}, g = {0.5f, -1, 2};
  momentum.step(p, g);
  EXPECT_TRUE(throws_error_containing([&] { plain.load(momentum.save()); },
                                      "is for sgd keeping (buf), not sgd keeping (none)"));
  EXPECT_TRUE(throws_error_containing([&] { momentum.load_replica(0, plain.save_replica(0)); },
                                      "is for sgd keeping (none), not sgd keeping (buf)"));
}

// The buffer count a state gives must be its kind's: an Adam state (m, v) cut to one buffer, its
// count edited to match and its CRC-32 redone (or an older state, which has no CRC-32), would load
// m and leave v as it was.
TEST(OptimizerState, LoadRefusesABufferCountOtherThanItsKinds) {
  const int64_t n = 64;
  Optimizer a("adam()", Device::CPU, n);
  Rng rng(5);
  std::vector<float> p = normal_vector(n, rng), g = normal_vector(n, rng);
  a.step(p, g);
  std::string body = unsealed(a.save());
  // magic, hyperparameters, n, K, the block count and blocks, then the buffer count.
  const size_t at_blocks = sizeof(uint64_t) + sizeof(OptimizerHyper) + 2 * sizeof(int64_t);
  int32_t nblocks = 0, nstate = 0;
  std::memcpy(&nblocks, &body[at_blocks], sizeof nblocks);
  const size_t at_nstate = at_blocks + sizeof(int32_t) + static_cast<size_t>(nblocks) * sizeof(ReplicaBlock);
  std::memcpy(&nstate, &body[at_nstate], sizeof nstate);
  ASSERT_EQ(nstate, 2) << "the layout read here is not the state's";
  // The last buffer: its length, then its n values.
  const size_t last = sizeof(uint64_t) + n * sizeof(float);
  uint64_t count = 0;
  std::memcpy(&count, &body[body.size() - last], sizeof count);
  ASSERT_EQ(count, static_cast<uint64_t>(n)) << "the layout read here is not the state's";
  body.resize(body.size() - last);
  nstate = 1;
  std::memcpy(&body[at_nstate], &nstate, sizeof nstate);
  Optimizer b("adam()", Device::CPU, n);
  EXPECT_TRUE(throws_error_containing([&] { b.load(sealed(body)); }, "1 state buffers for m, v"));
  EXPECT_EQ(b.step_count(), 0);
}

// Every piece of every replica's gradient is in its sum of squares (the norm that clipping uses),
// checked against a double-precision sum over vectors long enough for many pieces per thread.
TEST(OptimizerClip, SumOfSquaresCoversTheWholeGradient) {
  const int64_t n = 300007, ld = 300032, K = 2;
  Rng rng(13);
  std::vector<float> g = normal_vector(static_cast<size_t>(K * ld), rng);
  const detail::FusedArgs a = grad_sq_args(g, n, ld, K);
  for (int threads : {1, 2, 3}) {
    lrlab::testing::OmpThreads team(threads);
    std::vector<double> pieces, out(K);
    detail::cpu_grad_sq(a, pieces, out.data());
    for (int64_t r = 0; r < K; ++r) {
      double want = 0;
      for (int64_t i = 0; i < n; ++i) want += static_cast<double>(g[r * ld + i]) * g[r * ld + i];
      EXPECT_NEAR(out[r], want, 1e-12 * want) << threads << " threads, replica " << r;
    }
  }
}

TEST(OptimizerState, LoadRefusesForeignOrTruncatedState) {
  Optimizer a("adam()", Device::CPU, 10);
  std::string s = a.save();
  Optimizer other_kind("sgd(momentum=0.9)", Device::CPU, 10);
  EXPECT_THROW(other_kind.load(s), Error);
  Optimizer other_size("adam()", Device::CPU, 11);
  EXPECT_THROW(other_size.load(s), Error);
  Optimizer same("adam()", Device::CPU, 10);
  for (size_t cut : {size_t(0), size_t(5), s.size() / 2, s.size() - 1})
    EXPECT_THROW(same.load(s.substr(0, cut)), Error) << cut;
  EXPECT_THROW(same.load(s + "x"), Error);
}

TEST(OptimizerManual, SetLrTakesEffectAtTheNextStep) {
  std::vector<float> p(4, 1.0f), g(4, 1.0f);
  Optimizer opt("sgd()", Device::CPU, 4, {0.1f});
  opt.step(p, g);
  EXPECT_FLOAT_EQ(p[0], 0.9f);
  opt.set_lr(0.01f);
  opt.step(p, g);
  EXPECT_FLOAT_EQ(p[0], 0.89f);
  opt.set_scale(0.5f);
  opt.step(p, g);
  EXPECT_FLOAT_EQ(p[0], 0.885f);
}

// maximize negates the gradient before anything else reads it (weight decay, moments), as PyTorch's
// `grad = -grad if maximize`: one SGD step worked by hand, then every rule against the float64
// reference.
TEST(OptimizerManual, MaximizeAscendsForEveryRule) {
  std::vector<float> p(1, 1.0f), g(1, 0.5f);
  Optimizer sgd("sgd(maximize=true)", Device::CPU, 1, {0.1f});
  sgd.step(p, g);
  EXPECT_FLOAT_EQ(p[0], 1.05f);
  for (const char* spec : {"sgd(momentum=0.9,wd=0.01,maximize=true)", "adam(wd=0.01,amsgrad=true,maximize=true)",
                           "adamw(maximize=true)", "rmsprop(momentum=0.5,centered=true,maximize=true)",
                           "adagrad(lr_decay=0.01,wd=0.01,maximize=true)"}) {
    const size_t n = 37;
    Rng rng(29);
    std::vector<float> q = normal_vector(n, rng);
    Optimizer opt(spec, Device::CPU, n, {0.01f});
    RefOptimizer ref(opt.hyper(), q);
    for (int step = 0; step < 50; ++step) {
      std::vector<float> gr = normal_vector(n, rng);
      opt.step(q, gr);
      ref.step(gr, std::vector<double>(n, 0.01), std::vector<double>(n, opt.hyper().weight_decay));
    }
    EXPECT_LT(maxnorm_rel_error(q.data(), ref.p), 1e-5) << spec;
  }
}

// next_lr() is the rate the next step uses: base x table[min(step, T-1)] x scale (docs/OPTIMIZERS.md),
// the scale included.
TEST(OptimizerManual, NextLrIncludesTheScale) {
  Optimizer opt("sgd()", Device::CPU, 1, {0.1f});
  opt.set_schedule({1.0f, 0.5f});
  opt.set_scale(0.25f);
  EXPECT_FLOAT_EQ(opt.next_lr(), 0.025f);
  std::vector<float> p = {1.0f}, g = {1.0f};
  opt.step(p, g);
  EXPECT_FLOAT_EQ(p[0], 0.975f);
  EXPECT_FLOAT_EQ(opt.next_lr(), 0.0125f);
}
TEST(OptimizerSpec, ParsesEveryNameWithDefaults) {
  OptimizerHyper a = parse_optimizer("adam()");
  EXPECT_EQ(a.kind, OptimKind::Adam);
  EXPECT_FLOAT_EQ(a.beta1, 0.9f);
  EXPECT_FLOAT_EQ(a.beta2, 0.999f);
  EXPECT_FLOAT_EQ(a.eps, 1e-8f);
  EXPECT_FLOAT_EQ(a.weight_decay, 0.0f);
  EXPECT_FLOAT_EQ(parse_optimizer("adamw").weight_decay, 0.01f);
  OptimizerHyper r = parse_optimizer(" rmsprop( momentum = 0.9 , centered=true ) ");
  EXPECT_EQ(r.kind, OptimKind::RMSprop);
  EXPECT_FLOAT_EQ(r.alpha, 0.99f);
  EXPECT_FLOAT_EQ(r.momentum, 0.9f);
  EXPECT_EQ(r.centered, 1);
  EXPECT_EQ(state_buffers(r), 3);
  OptimizerHyper ag = parse_optimizer("adagrad(lr_decay=0.1,initial_accumulator_value=0.1)");
  EXPECT_FLOAT_EQ(ag.eps, 1e-10f);
  EXPECT_FLOAT_EQ(ag.initial_accumulator, 0.1f);
  OptimizerHyper s = parse_optimizer("sgd(momentum=0.9,nesterov=true,weight_decay=5e-4,clip=1)");
  EXPECT_EQ(s.nesterov, 1);
  EXPECT_FLOAT_EQ(s.weight_decay, 5e-4f);
  EXPECT_FLOAT_EQ(s.max_grad_norm, 1.0f);
  EXPECT_EQ(bytes_per_param(parse_optimizer("adam()")), 28);
  EXPECT_EQ(bytes_per_param(parse_optimizer("adam(amsgrad=true)")), 36);
  EXPECT_EQ(bytes_per_param(parse_optimizer("sgd()")), 12);
  EXPECT_EQ(bytes_per_param(parse_optimizer("rmsprop(momentum=0.9)")), 28);
}

void expect_error(const std::string& spec, const std::string& fragment) {
  EXPECT_TRUE(throws_error_containing([&] { parse_optimizer(spec); }, fragment)) << spec;
}

TEST(OptimizerSpec, RejectsBadSpecsNamingTheProblem) {
  expect_error("adamm()", "unknown optimizer 'adamm'");
  // Values fp32 cannot hold are errors, not a silent 0 (clipping off) or inf.
  expect_error("sgd(clip=1e-50)", "clip=1e-50 at position 10: too close to zero for fp32 (use 0)");
  expect_error("adam(eps=1e39)", "eps=1e39 at position 10: too large for fp32");
  expect_error("adam(eps=1e-400)", "eps=1e-400 at position 10: too close to zero to represent");
  expect_error("adam(eps=0x10)", "eps=0x10 at position 10: not a decimal number");
  expect_error("adam(beta=0.9)", "unknown key 'beta'");
  expect_error("adam(beta1=1)", "beta1");
  expect_error("adam(eps=-1)", "negative");
  expect_error("adam(eps=inf)", "finite");
  expect_error("adam(eps=1e400)", "finite");
  expect_error("adam(eps=abc)", "not a number");
  expect_error("sgd(nesterov=true)", "Nesterov");
  expect_error("adam(amsgrad=maybe)", "true or false");
  expect_error("adam()+sgd()", "composes schedules");
  expect_error("adam(", "position");
  expect_error("", "empty");
}

// keras=true against Keras's own tests (keras/src/optimizers/*_test.py), their values and
// tolerances: one step at lr 0.5 from [1, 2, 3, 4] with gradients [1, 6, 7, 2] (test_single_step);
// weight decay 0.004 at lr 1 with zero gradients, three fresh optimizers one after another (Keras
// decays every kind's weights decoupled, PyTorch adds an L2 term: Adam's step on that term alone
// would move the weight by about the rate); and the golden trajectories, a first step with gradients
// 0.01 then 0.1, 0.2, ... 1.0 from ones (test_correctness_with_golden). The defaults are Keras's.
TEST(OptimizerKeras, MatchesKerasOwnTests) {
  auto single_step = [](const char* spec) {
    std::vector<float> p = {1, 2, 3, 4}, g = {1, 6, 7, 2};
    Optimizer opt(spec, Device::CPU, 4, {0.5f});
    opt.step(p, g);
    return p;
  };
  auto expect_close = [](const std::vector<float>& got, const std::vector<double>& want, double tol,
                         const char* what) {
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < want.size(); ++i)
      EXPECT_LE(std::abs(got[i] - want[i]), tol + tol * std::abs(want[i])) << what << " [" << i << "]";
  };
  expect_close(single_step("adam(keras=true)"), {0.5, 1.5, 2.5, 3.5}, 1e-4, "adam single step");
  expect_close(single_step("rmsprop(keras=true)"), {-0.5811, 0.4189, 1.4189, 2.4189}, 1e-4, "rmsprop single step");
  expect_close(single_step("adagrad(keras=true)"), {0.5233, 1.5007, 2.5005, 3.5061}, 1e-4, "adagrad single step");
  expect_close(single_step("sgd(keras=true)"), {0.5, -1.0, -0.5, 3.0}, 1e-4, "sgd single step");

  for (const char* spec : {"adam(keras=true,wd=0.004)", "rmsprop(keras=true,wd=0.004)", "adagrad(keras=true,wd=0.004)",
                           "sgd(keras=true,wd=0.004)", "adamw(keras=true)"}) {
    std::vector<float> p = {2.0f}, g = {0.0f};
    for (int i = 0; i < 3; ++i) {
      Optimizer opt(spec, Device::CPU, 1, {1.0f});
      opt.step(p, g);
    }
    EXPECT_NEAR(p[0], 1.9760959, 1e-6) << spec;
  }

  auto golden = [&](const char* spec, float lr, const std::vector<std::vector<double>>& rows) {
    std::vector<float> x(10, 1.0f), first(10, 0.01f), grads(10);
    for (int i = 0; i < 10; ++i) grads[i] = 0.1f * static_cast<float>(i + 1);
    Optimizer opt(spec, Device::CPU, 10, {lr});
    opt.step(x, first);
    for (const std::vector<double>& row : rows) {
      expect_close(x, row.size() == 1 ? std::vector<double>(10, row[0]) : row, 5e-4, spec);
      opt.step(x, grads);
    }
  };
  golden("adam(keras=true,amsgrad=true)", 1e-3f, {{0.999}, {0.9982}, {0.9974}, {0.9965}, {0.9955}});
  golden("rmsprop(keras=true,centered=true)", 1e-3f, {{0.9967}, {0.9933}, {0.9908}, {0.9885}, {0.9864}});
  golden("adagrad(keras=true,initial_accumulator_value=0.3,eps=1e-6)", 0.2f,
         {{0.9963, 0.9963, 0.9963, 0.9963, 0.9963, 0.9963, 0.9963, 0.9963, 0.9963, 0.9963},
          {0.9604, 0.9278, 0.9003, 0.8784, 0.8615, 0.8487, 0.8388, 0.8313, 0.8255, 0.8209},
          {0.9251, 0.8629, 0.8137, 0.7768, 0.7497, 0.7298, 0.7151, 0.704, 0.6956, 0.6891},
          {0.8903, 0.8012, 0.7342, 0.6862, 0.6521, 0.6277, 0.6099, 0.5967, 0.5867, 0.579},
          {0.856, 0.7422, 0.6604, 0.6037, 0.5644, 0.5367, 0.5168, 0.5021, 0.491, 0.4825}});
  // Keras's SGD(nesterov=True) at its default momentum 0 is plain SGD at its default rate 0.01.
  golden("sgd(keras=true)", 0.01f,
         {{0.9999},
          {0.9989, 0.9979, 0.9969, 0.9959, 0.9949, 0.9939, 0.9929, 0.9919, 0.9909, 0.9899},
          {0.9979, 0.9959, 0.9939, 0.9919, 0.9899, 0.9879, 0.9859, 0.9839, 0.9819, 0.9799},
          {0.9969, 0.9939, 0.9909, 0.9879, 0.9849, 0.9819, 0.9789, 0.9759, 0.9729, 0.9699},
          {0.9959, 0.9919, 0.9879, 0.9839, 0.9799, 0.9759, 0.9719, 0.9679, 0.9639, 0.9599}});

  // The example in RMSprop's docstring: var 10, loss var^2 / 2, rate 0.1.
  std::vector<float> var = {10.0f}, grad = {10.0f};
  Optimizer rms("rmsprop(keras=true)", Device::CPU, 1, {0.1f});
  rms.step(var, grad);
  EXPECT_NEAR(var[0], 9.683772, 1e-6);
}

// PyTorch's SGD buffer starts from the first step's gradient, so a count set back to 0 restarts
// it; Keras's is a variable that starts at zero and carries on. Rate 0.1, momentum 0.9, gradient 1
// twice from 1: a restarted buffer steps 0.1 again (0.8), a continued one 0.19 (0.71).
TEST(OptimizerKeras, SetStepZeroRestartsOnlyPyTorchsMomentum) {
  for (const auto& [spec, want] : {std::pair<const char*, float>{"sgd(momentum=0.9)", 0.8f},
                                   std::pair<const char*, float>{"sgd(keras=true,momentum=0.9)", 0.71f}}) {
    std::vector<float> p = {1.0f}, g = {1.0f};
    Optimizer opt(spec, Device::CPU, 1, {0.1f});
    opt.step(p, g);
    opt.set_step(0);
    opt.step(p, g);
    EXPECT_NEAR(p[0], want, 1e-6) << spec;
  }
}

// Keras's forms take Keras's defaults where PyTorch's differ, and only with keras=true; what Keras
// has no form of is refused.
TEST(OptimizerKeras, DefaultsAreKerasAndMissingFormsAreRefused) {
  EXPECT_FLOAT_EQ(parse_optimizer("adam(keras=true)").eps, 1e-7f);
  EXPECT_FLOAT_EQ(parse_optimizer("adamw(keras=true)").weight_decay, 0.004f);
  EXPECT_FLOAT_EQ(parse_optimizer("adamw(keras=true)").eps, 1e-7f);
  const OptimizerHyper r = parse_optimizer("rmsprop(keras=true)");
  EXPECT_FLOAT_EQ(r.alpha, 0.9f);
  EXPECT_FLOAT_EQ(r.eps, 1e-7f);
  const OptimizerHyper a = parse_optimizer("adagrad(keras=true)");
  EXPECT_FLOAT_EQ(a.initial_accumulator, 0.1f);
  EXPECT_FLOAT_EQ(a.eps, 1e-7f);
  EXPECT_EQ(a.keras, 1);
  EXPECT_EQ(parse_optimizer("adagrad(keras=false)").keras, 0);
  EXPECT_FLOAT_EQ(parse_optimizer("rmsprop(keras=true,alpha=0.95,eps=1e-6)").alpha, 0.95f);
  EXPECT_FLOAT_EQ(parse_optimizer("rmsprop(keras=true,alpha=0.95,eps=1e-6)").eps, 1e-6f);
  EXPECT_FLOAT_EQ(parse_optimizer("rmsprop(keras=false)").alpha, 0.99f);
  expect_error("sgd(keras=true,momentum=0.9,dampening=0.1)", "Keras's SGD has no dampening");
  expect_error("adagrad(keras=true,lr_decay=0.1)", "Keras's Adagrad has no lr_decay");
  expect_error("adam(keras=yes)", "true or false");
  OptimizerHyper h = parse_optimizer("sgd(momentum=0.9,dampening=0.5)");
  h.keras = 1;
  EXPECT_TRUE(throws_error_containing([&] { Optimizer(h, Device::CPU, 4); }, "no dampening or lr_decay"));
}

// Keras's momentum buffer holds steps (the rate in them), PyTorch's gradients: a state moves between
// the two forms only where the buffers mean the same.
TEST(OptimizerKeras, StatesMoveBetweenFormsOnlyWhereTheBuffersAgree) {
  std::vector<float> p = {1, 2, 3}, g = {0.5f, -1, 2};
  Optimizer keras_sgd("sgd(keras=true,momentum=0.9)", Device::CPU, 3), sgd("sgd(momentum=0.9)", Device::CPU, 3);
  keras_sgd.step(p, g);
  EXPECT_TRUE(throws_error_containing([&] { sgd.load(keras_sgd.save()); },
                                      "is for sgd keeping (keras buf), not sgd keeping (buf)"));
  EXPECT_TRUE(throws_error_containing([&] { keras_sgd.load_replica(0, sgd.save_replica(0)); },
                                      "is for sgd keeping (buf), not sgd keeping (keras buf)"));
  Optimizer keras_rms("rmsprop(keras=true,momentum=0.9,centered=true)", Device::CPU, 3),
      rms("rmsprop(momentum=0.9,centered=true)", Device::CPU, 3);
  EXPECT_TRUE(throws_error_containing([&] { rms.load(keras_rms.save()); }, "(v, keras buf, ga)"));
  // Adam's moments are the same in both: a run may switch form, as between Adam and AdamW.
  Optimizer keras_adam("adam(keras=true)", Device::CPU, 3), adam("adam()", Device::CPU, 3);
  keras_adam.step(p, g);
  adam.load(keras_adam.save());
  EXPECT_EQ(adam.step_count(), 1);
  EXPECT_EQ(adam.hyper().keras, 0);
  EXPECT_EQ(adam.state_buffer(1), keras_adam.state_buffer(1));
}

TEST(OptimizerSetupChecks, RejectsBadShapesAndRates) {
  EXPECT_THROW(Optimizer("adam()", Device::CPU, 0), Error);
  OptimizerSetup bad_lr;
  bad_lr.lr = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THROW(Optimizer("adam()", Device::CPU, 10, bad_lr), Error);
  OptimizerSetup overlap;
  overlap.groups = {{0, 6, 1.0f, -1.0f}, {5, 10, 1.0f, -1.0f}};
  EXPECT_THROW(Optimizer("adam()", Device::CPU, 10, overlap), Error);
  OptimizerSetup outside;
  outside.groups = {{0, 11, 1.0f, -1.0f}};
  EXPECT_THROW(Optimizer("adam()", Device::CPU, 10, outside), Error);
  OptimizerSetup stride;
  stride.replica_stride = 5;
  EXPECT_THROW(Optimizer("adam()", Device::CPU, 10, stride), Error);
  Optimizer opt("adam()", Device::CPU, 10);
  std::vector<float> p(10), g(9);
  EXPECT_THROW(opt.step(p, g), Error);
  EXPECT_THROW(opt.set_lr(-1.0f), Error);
  EXPECT_THROW(opt.set_schedule({1.0f, std::numeric_limits<float>::infinity()}), Error);
  EXPECT_THROW(opt.set_lr(1.0f, 3), Error);
  EXPECT_THROW(opt.set_grad_scale(0.0f), Error);
}

// Hyperparameters built in code get the checks of the spec parser: each of these ran before,
// giving NaN weights or a step that did nothing.
TEST(OptimizerSetupChecks, HyperparametersInCodeAreCheckedAsSpecsAre) {
  auto refused = [](auto change) {
    OptimizerHyper h = parse_optimizer("adam()");
    change(h);
    return !error_of([&] { Optimizer opt(h, Device::CPU, 4); }).empty();
  };
  EXPECT_TRUE(refused([](OptimizerHyper& h) { h.beta1 = 1.0f; }));
  EXPECT_TRUE(refused([](OptimizerHyper& h) { h.beta2 = 1.0f; }));
  EXPECT_TRUE(refused([](OptimizerHyper& h) { h = parse_optimizer("rmsprop()"), h.alpha = 1.5f; }));
  EXPECT_TRUE(refused([](OptimizerHyper& h) { h = parse_optimizer("sgd(momentum=0.9)"), h.dampening = 3.0f; }));
  EXPECT_TRUE(refused([](OptimizerHyper& h) { h = parse_optimizer("sgd()"), h.nesterov = 1; }));
  EXPECT_TRUE(refused([](OptimizerHyper& h) { h.kind = static_cast<OptimKind>(7); }));
  EXPECT_TRUE(refused([](OptimizerHyper& h) { h.eps = -1e-8f; }));
  EXPECT_FALSE(refused([](OptimizerHyper& h) { h.beta1 = 0.0f, h.beta2 = 0.5f; }));
}

// A beta just below 1 in decimal can round to 1 in fp32, where the bias correction divides by 0.
TEST(OptimizerSpec, ABetaThatRoundsToOneIsRefusedAsSuch) {
  EXPECT_TRUE(throws_error_containing([] { parse_optimizer("adam(beta2=0.99999999)"); }, "rounds to 1 in fp32"));
  EXPECT_FLOAT_EQ(parse_optimizer("adam(beta2=0.9999999)").beta2, 0.9999999f);
}

// Nesterov momentum needs dampening 0 (PyTorch raises "Nesterov momentum requires a momentum and zero
// dampening"): the spec parser refuses it, as the constructor does for hyperparameters built in code.
TEST(OptimizerSpec, NesterovWithDampeningIsRefused) {
  const std::string msg = lrlab::testing::error_of([] { parse_optimizer("sgd(momentum=0.9,nesterov=true,dampening=0.1)"); });
  EXPECT_NE(msg.find("Nesterov"), std::string::npos) << msg;
  EXPECT_EQ(lrlab::testing::error_of([] { parse_optimizer("sgd(momentum=0.9,nesterov=true,dampening=0)"); }), "");
}
// Each factor of the rate can be valid while their product overflows fp32: refused wherever one of
// them is set, instead of inf rates and NaN weights at the next step.
TEST(OptimizerSetupChecks, RatesWhoseProductOverflowsAreRefused) {
  OptimizerSetup setup;
  setup.lr = 3e38f;
  Optimizer opt("sgd()", Device::CPU, 2, setup);
  EXPECT_THROW(opt.set_schedule({1.0f, 2.0f}), Error);
  EXPECT_THROW(opt.set_scale(2.0f), Error);
  opt.set_schedule({0.5f, 1.1f});
  EXPECT_THROW(opt.set_lr(3.2e38f), Error);  // x 1.1
  EXPECT_FLOAT_EQ(opt.next_lr(), 1.5e38f);  // unchanged by the refusals
  setup.lr = 1e38f;
  setup.groups = {{0, 1, 4.0f, -1.0f}, {1, 2, 1.0f, -1.0f}};
  EXPECT_THROW(Optimizer("sgd()", Device::CPU, 2, setup), Error);
  // A saved state whose rates overflow here is refused too.
  OptimizerSetup plain;
  plain.lr = 1e38f;
  Optimizer from("sgd()", Device::CPU, 2, plain);
  from.set_schedule({3.0f});
  setup.lr = 1.0f;
  Optimizer to("sgd()", Device::CPU, 2, setup);  // its group multiplier 4 makes 1.2e39
  EXPECT_THROW(to.load(from.save()), Error);
  EXPECT_FLOAT_EQ(to.next_lr(), 1.0f);
}

// A step count the update rules can count from without overflowing, and a gradient scale whose
// reciprocal exists: each refused, where before the first overflowed a signed integer at the next
// step and the second skipped every step and wrote states that load() refused.
TEST(OptimizerSetupChecks, StepCountsAndGradScalesOutOfRangeAreRefused) {
  Optimizer opt("adam()", Device::CPU, 2);
  EXPECT_THROW(opt.set_step(std::numeric_limits<int64_t>::max()), Error);
  opt.set_step(int64_t{1} << 52);
  EXPECT_EQ(opt.step_count(), int64_t{1} << 52);
  EXPECT_THROW(opt.set_grad_scale(1e-39f), Error);
  EXPECT_THROW(opt.set_grad_scale(std::numeric_limits<float>::infinity()), Error);
  opt.set_grad_scale(1e-30f);
  Optimizer copy("adam()", Device::CPU, 2);
  copy.load(opt.save());
  EXPECT_EQ(copy.replica_state().inv_grad_scale, opt.replica_state().inv_grad_scale);
}

// Replica K is one past the last: every setter that takes a replica refuses it (it would write past
// the replicas' states), and -1 still means all of them.
TEST(OptimizerSetupChecks, ReplicaOnePastTheLastIsRefused) {
  OptimizerSetup two;
  two.replicas = 2;
  Optimizer opt("adam()", Device::CPU, 4, two);
  using lrlab::testing::error_of;
  EXPECT_NE(error_of([&] { opt.set_lr(1e-2f, 2); }).find("replica 2 out of range"), std::string::npos);
  EXPECT_NE(error_of([&] { opt.set_scale(0.5f, 2); }).find("replica 2 out of range"), std::string::npos);
  EXPECT_NE(error_of([&] { opt.set_step(3, 2); }).find("replica 2 out of range"), std::string::npos);
  EXPECT_NE(error_of([&] { opt.set_schedule({1.0f}, 2); }).find("replica 2 out of range"), std::string::npos);
  opt.set_lr(1e-2f, -1);
  EXPECT_FLOAT_EQ(opt.next_lr(0), 1e-2f);
  EXPECT_FLOAT_EQ(opt.next_lr(1), 1e-2f);
}
// Per-replica rates and tables given at construction set what set_lr and set_schedule would.
TEST(OptimizerSetupChecks, PerReplicaRatesAndTablesAtConstruction) {
  const std::vector<float> lrs = {1e-2f, 2e-2f, 3e-2f};
  const std::vector<std::vector<float>> tables = {{1.0f, 0.5f}, {}, {0.25f, 0.125f, 2.0f}};
  OptimizerSetup given;
  given.replicas = 3;
  given.lrs = lrs;
  given.tables = tables;
  OptimizerSetup plain;
  plain.replicas = 3;
  Optimizer a("adam()", Device::CPU, 5, given), b("adam()", Device::CPU, 5, plain);
  for (int64_t r = 0; r < 3; ++r) {
    b.set_lr(lrs[r], r);
    b.set_schedule(tables[r], r);
  }
  EXPECT_EQ(a.save(), b.save());
  EXPECT_FLOAT_EQ(a.next_lr(0), 1e-2f);
  EXPECT_FLOAT_EQ(a.next_lr(1), 2e-2f);
  EXPECT_FLOAT_EQ(a.next_lr(2), 0.25f * 3e-2f);
  std::vector<float> pa(15, 1.0f), pb(15, 1.0f), g(15, 0.5f);
  for (int i = 0; i < 3; ++i) {
    a.step(pa, g);
    b.step(pb, g);
  }
  EXPECT_EQ(pa, pb);
  EXPECT_FLOAT_EQ(a.next_lr(2), 2.0f * 3e-2f);

  using lrlab::testing::error_of;
  auto refused = [](OptimizerSetup s) { return error_of([&] { Optimizer("sgd()", Device::CPU, 5, s); }); };
  OptimizerSetup bad = given;
  bad.lrs.pop_back();
  EXPECT_NE(refused(bad).find("2 learning rates for 3 replicas"), std::string::npos);
  bad = given;
  bad.tables.push_back({});
  EXPECT_NE(refused(bad).find("4 schedule tables for 3 replicas"), std::string::npos);
  bad = given;
  bad.lrs[1] = -1.0f;
  EXPECT_NE(refused(bad).find("replica 1: learning rate must be finite and non-negative"), std::string::npos);
  bad = given;
  bad.tables[2][1] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_NE(refused(bad).find("replica 2: schedule table entry 1 is negative or not finite"), std::string::npos);
  bad = given;
  bad.lrs[2] = 1e30f;
  bad.tables[2] = {1e10f};
  EXPECT_NE(refused(bad).find("replica 2: learning rate"), std::string::npos);
}

// Setting a gradient scale, even 1, turns the finite check on, as PyTorch's GradScaler checks at
// every scale: a NaN gradient skips the step instead of reaching the weights.
TEST(OptimizerSkip, AnyGradScaleTurnsTheFiniteCheckOn) {
  Optimizer opt("adam()", Device::CPU, 2);
  opt.set_grad_scale(1.0f);
  std::vector<float> p = {1.0f, 2.0f}, g = {std::numeric_limits<float>::quiet_NaN(), 0.5f};
  opt.step(p, g);
  EXPECT_EQ(p, (std::vector<float>{1.0f, 2.0f}));
  EXPECT_EQ(opt.step_count(), 0);
  EXPECT_EQ(opt.replica_state().skipped_total, 1);
}

// A state whose moments hold NaN, or a negative running square, would put NaN into the weights at
// the next step: load() and load_replica() refuse it and change nothing. +inf in a running square
// is a state training reaches (gradients beyond 1.8e19) and steps on from, and a replica frozen at
// scale 0 (a sweep's diverged configuration) may hold anything.
TEST(OptimizerState, LoadRefusesNaNOrNegativeSquares) {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  for (const char* spec :
       {"adam(amsgrad=true)", "rmsprop(momentum=0.9,centered=true)", "adagrad()", "sgd(momentum=0.9)"}) {
    SCOPED_TRACE(spec);
    const std::string name = spec;
    const int64_t n = 8;
    OptimizerSetup setup;
    setup.replicas = 2;
    Optimizer opt(spec, Device::CPU, n, setup);
    Rng rng(3);
    std::vector<float> p = normal_vector(2 * n, rng), g = normal_vector(2 * n, rng);
    opt.step(p, g);
    const std::string good = opt.save();
    // The moments end the state, before its CRC-32: each buffer a count, then both replicas' values
    // back to back. An edited state gets a new CRC, so that the values are what load() judges.
    auto poke = [&](int k, int64_t r, int64_t i, float v) {
      std::string bad = unsealed(good);
      const size_t later =
          static_cast<size_t>(opt.num_state_buffers() - 1 - k) * (sizeof(uint64_t) + 2 * n * sizeof(float));
      const size_t from_end = later + sizeof(float) * static_cast<size_t>(2 * n - r * n - i);
      std::memcpy(&bad[bad.size() - from_end], &v, sizeof v);
      return sealed(bad);
    };
    Optimizer to(spec, Device::CPU, n, setup);
    to.load(good);
    const std::vector<float> before = to.state_buffer(0);
    const int squares = name.rfind("adam", 0) == 0 ? 1 : name.rfind("sgd", 0) == 0 ? -1 : 0;
    for (int k = 0; k < opt.num_state_buffers(); ++k) {
      EXPECT_THROW(to.load(poke(k, 1, 3, nan)), Error) << "buffer " << k;
      if (squares >= 0 && k >= squares && !(name.rfind("rmsprop", 0) == 0 && k > 0)) {
        to.load(poke(k, 1, 5, inf));
        EXPECT_THROW(to.load(poke(k, 0, 1, -1.0f)), Error) << "buffer " << k;
        EXPECT_THROW(to.load(poke(k, 0, 1, -inf)), Error) << "buffer " << k;
      } else {
        EXPECT_THROW(to.load(poke(k, 1, 5, inf)), Error) << "buffer " << k;  // first moments are finite
        to.load(poke(k, 0, 1, -1.0f));  // and may be negative
      }
    }
    to.load(good);
    EXPECT_EQ(to.state_buffer(0), before);

    // One replica moved alone: the same checks.
    Optimizer single(spec, Device::CPU, n);
    std::string replica = unsealed(opt.save_replica(1));
    std::memcpy(&replica[replica.size() - sizeof(float)], &nan, sizeof nan);
    EXPECT_THROW(single.load_replica(0, sealed(replica)), Error);
    // Frozen at scale 0: whatever its moments hold, it is never stepped again.
    opt.set_scale(0.0f, 1);
    Optimizer frozen(spec, Device::CPU, n, setup);
    std::string frozen_state = unsealed(opt.save());
    std::memcpy(&frozen_state[frozen_state.size() - sizeof(float)], &nan, sizeof nan);
    frozen.load(sealed(frozen_state));
    EXPECT_TRUE(std::isnan(frozen.state_buffer(frozen.num_state_buffers() - 1).back()));
  }
}

// Counts past set_step's bound of 2^52 are states a run reaches and save() writes: load() takes them
// up to 2^53, where double stops counting exactly.
TEST(OptimizerState, LoadTakesTheStepCountsSaveWrites) {
  Optimizer opt("adam()", Device::CPU, 2);
  opt.set_step(int64_t{1} << 52);
  std::vector<float> p = {1.0f, 2.0f}, g = {0.5f, -0.5f};
  opt.step(p, g);
  Optimizer to("adam()", Device::CPU, 2);
  to.load(opt.save());
  EXPECT_EQ(to.step_count(), (int64_t{1} << 52) + 1);
  std::string bad = opt.save();
  const int64_t too_far = (int64_t{1} << 53) + 1;
  // The first replica's counters follow the header: magic, hyperparameters, n, K, one block,
  // nstate, the gradient-scale flag.
  const size_t at = sizeof(uint64_t) + sizeof(OptimizerHyper) + 2 * sizeof(int64_t) + sizeof(int32_t) +
                    sizeof(ReplicaBlock) + 2 * sizeof(int32_t);
  int64_t stored = 0;
  std::memcpy(&stored, &bad[at], sizeof stored);
  ASSERT_EQ(stored, (int64_t{1} << 52) + 1);
  std::memcpy(&bad[at], &too_far, sizeof too_far);
  EXPECT_THROW(to.load(bad), Error);
  EXPECT_EQ(to.step_count(), (int64_t{1} << 52) + 1);
}

// A state saved with a gradient scale turns the finite check on where it is loaded, as
// set_grad_scale() would: a NaN gradient after resuming skips the step instead of reaching the weights.
TEST(OptimizerState, LoadedGradScaleKeepsTheFiniteCheck) {
  Optimizer from("adam()", Device::CPU, 2);
  from.set_grad_scale(2.0f);
  Optimizer to("adam()", Device::CPU, 2);
  to.load(from.save());
  std::vector<float> p = {1.0f, 2.0f}, g = {std::numeric_limits<float>::quiet_NaN(), 0.5f};
  to.step(p, g);
  EXPECT_EQ(p, (std::vector<float>{1.0f, 2.0f}));
  EXPECT_EQ(to.step_count(), 0);
  EXPECT_EQ(to.replica_state().skipped_total, 1);
}
TEST(OptimizerState, AMovedFromOptimizerThrowsInsteadOfCrashing) {
  Optimizer a("adam()", Device::CPU, 4);
  Optimizer b(std::move(a));
  EXPECT_THROW(a.n_params(), Error);  // NOLINT(bugprone-use-after-move): the point of the test
  EXPECT_THROW(a.set_lr(1e-3f), Error);
  EXPECT_EQ(b.n_params(), 4);
  a = Optimizer("sgd()", Device::CPU, 2);
  EXPECT_EQ(a.n_params(), 2);
}

// Readers that keep a reference to their input refuse a temporary at compile time (it was gone
// before the first read).
static_assert(!std::is_constructible_v<ByteReader, std::string&&, std::string>);
static_assert(std::is_constructible_v<ByteReader, const std::string&, std::string>);
static_assert(!std::is_constructible_v<spec::ArgReader, spec::Segment&&, std::string>);
static_assert(std::is_constructible_v<spec::ArgReader, const spec::Segment&, std::string>);

}  // namespace
