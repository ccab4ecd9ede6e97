// ReplicaPacking (where K replicas' parameters lie), the MLP's packing, and the optimizer over a
// packing: the same replica must get the same update wherever its floats lie.
#include <gtest/gtest.h>

#include <algorithm>
#include <limits>
#include <numeric>

#include "lrlab/error.hpp"
#include "lrlab/mlp.hpp"
#include "lrlab/optimizer.hpp"
#include "lrlab/packing.hpp"
#include "lrlab/rng.hpp"
#include "optimizer_kernels.hpp"
#include "test_util.hpp"

using namespace lrlab;
using lrlab::testing::error_of;

namespace {

std::vector<float> normal_vector(size_t n, Rng& rng) {
  std::vector<float> v(n);
  for (float& x : v) x = static_cast<float>(rng.normal());
  return v;
}

TEST(ReplicaPacking, BackToBackIndexesAndSpan) {
  const ReplicaPacking plain(10, 3);
  EXPECT_TRUE(plain.back_to_back());
  EXPECT_TRUE(plain.dense());
  EXPECT_EQ(plain.span(), 30);
  EXPECT_EQ(plain.index(2, 7), 27);
  const ReplicaPacking padded(10, 3, 12);
  EXPECT_FALSE(padded.back_to_back());
  EXPECT_FALSE(padded.dense());
  EXPECT_EQ(padded.span(), 34);  // no padding after the last replica
  EXPECT_EQ(padded.index(2, 7), 31);
}

TEST(ReplicaPacking, BlocksThatContinueEachOtherMerge) {
  // The plain layout written as three blocks is one block again.
  const ReplicaPacking p(10, 2, {{0, 4, 0, 10}, {4, 6, 4, 10}, {6, 10, 6, 10}});
  ASSERT_EQ(p.blocks().size(), 1u);
  EXPECT_TRUE(p.back_to_back());
  // With one replica any blocks in order are the layout itself.
  const ReplicaPacking one(10, 1, {{0, 4, 0, 4}, {4, 10, 4, 6}});
  EXPECT_TRUE(one.back_to_back());
  EXPECT_EQ(one, ReplicaPacking(10, 1));
}

// Blocks merge only when they continue each other in every replica: here they do in replica 0
// (offsets 0 and 4) but not in replica 1 (strides 10 and 20), so they stay two blocks.
TEST(ReplicaPacking, BlocksWithDifferentStridesStaySeparate) {
  const ReplicaPacking p(10, 2, {{0, 4, 0, 10}, {4, 10, 4, 20}});
  EXPECT_EQ(p.blocks().size(), 2u);
  EXPECT_EQ(p.index(0, 5), 5);
  EXPECT_EQ(p.index(1, 3), 13);
  EXPECT_EQ(p.index(1, 5), 25);  // 4 + 20 + (5 - 4)
  EXPECT_EQ(p.span(), 30);
}

TEST(ReplicaPacking, GatherAndScatterRoundTrip) {
  // Block 0 of all replicas first (a tensor-major block), then the rest of each replica.
  const int64_t K = 3;
  const ReplicaPacking p(7, K, {{0, 3, 0, 3}, {3, 7, 9, 4}});
  EXPECT_TRUE(p.dense());
  EXPECT_EQ(p.index(1, 2), 5);
  EXPECT_EQ(p.index(1, 3), 13);
  std::vector<int> rows(K * 7);
  std::iota(rows.begin(), rows.end(), 100);
  const std::vector<int> packed = p.from_replica_major(rows);
  for (int64_t k = 0; k < K; ++k)
    for (int64_t i = 0; i < 7; ++i) EXPECT_EQ(packed[p.index(k, i)], rows[k * 7 + i]);
  EXPECT_EQ(p.to_replica_major(packed), rows);
  std::vector<int> one(7, -1);
  p.gather(packed.data(), 2, one.data());
  EXPECT_EQ(one, std::vector<int>(rows.begin() + 14, rows.end()));
}

TEST(ReplicaPacking, RejectsBadBlocks) {
  EXPECT_NE(error_of([] { ReplicaPacking(10, 2, {{0, 4, 0, 4}, {5, 10, 8, 5}}); }).find("does not continue"),
            std::string::npos);
  EXPECT_NE(error_of([] { ReplicaPacking(10, 2, {{0, 4, 0, 4}}); }).find("cover 4 of the 10"), std::string::npos);
  EXPECT_NE(error_of([] { ReplicaPacking(10, 2, {{0, 10, 0, 9}}); }).find("smaller than its 10"),
            std::string::npos);
  // Replica 1's block 0 lands on replica 0's block 1.
  EXPECT_NE(error_of([] { ReplicaPacking(10, 2, {{0, 4, 0, 6}, {4, 10, 6, 10}}); }).find("overlap"),
            std::string::npos);
  EXPECT_THROW(ReplicaPacking(10, 2, {{0, 10, -1, 10}}), Error);
  EXPECT_THROW(ReplicaPacking(0, 2), Error);
  EXPECT_THROW(ReplicaPacking(10, 0), Error);
  std::vector<ReplicaBlock> many;
  for (int64_t i = 0; i < 9; ++i) many.push_back({i, i + 1, 2 * i, 1});
  EXPECT_NE(error_of([&] { ReplicaPacking(9, 1, many); }), "");  // 9 blocks with gaps, even for K = 1
}

TEST(MlpPacking, FirstLayerWeightsOfAllReplicasFormOneMatrix) {
  const MlpLayout layout(lrlab::testing::make_config(12, {5, 3}, 4));
  const int64_t K = 4;
  const ReplicaPacking p = mlp_packing(layout, K);
  EXPECT_TRUE(p.dense());
  EXPECT_EQ(p.span(), K * layout.size());
  // Row j of replica k's W0 is row k * out + j of one [K*out x in] matrix.
  const LayerView l0 = layout.layers()[0];
  for (int64_t k = 0; k < K; ++k)
    for (int64_t j = 0; j < l0.out; ++j)
      for (int64_t i = 0; i < l0.in; ++i)
        ASSERT_EQ(p.index(k, l0.w_offset + j * l0.in + i), (k * l0.out + j) * l0.in + i);
  // Every other tensor of a replica stays whole and 16-byte aligned.
  for (size_t l = 1; l < layout.layers().size(); ++l)
    for (int64_t k = 0; k < K; ++k) {
      const LayerView v = layout.layers()[l];
      EXPECT_EQ(p.index(k, v.w_offset + v.in * v.out - 1) - p.index(k, v.w_offset), v.in * v.out - 1);
      EXPECT_EQ(p.index(k, v.w_offset) % 4, 0);
      EXPECT_EQ(p.index(k, v.b_offset) % 4, 0);
    }
  EXPECT_TRUE(mlp_packing(layout, 1).back_to_back());
}

// An optimizer over a packing gives every replica exactly the update it gets back to back: the
// same bits, with clipping (a sum over blocks), parameter groups that cross the block edges, a
// replica that skips a step, and the bf16 copy.
TEST(OptimizerPacking, SameBitsAsBackToBack) {
  const int64_t n = 1003, K = 3;
  const std::vector<ReplicaBlock> blocks = {{0, 400, 0, 400}, {400, 1003, K * 400, 603}};
  const ReplicaPacking pk(n, K, blocks);
  for (const char* spec : {"adamw(clip=1,check_finite=true)", "sgd(momentum=0.9,nesterov=true,check_finite=true)",
                           "adagrad(initial_accumulator=0.1,check_finite=true)"}) {
    OptimizerSetup plain_setup, packed_setup;
    plain_setup.replicas = packed_setup.replicas = K;
    plain_setup.groups = packed_setup.groups = {{0, 401, 1.0f, -1.0f}, {403, n, 0.5f, 0.0f}};
    packed_setup.blocks = blocks;
    Optimizer plain(spec, Device::CPU, n, plain_setup), packed(spec, Device::CPU, n, packed_setup);
    EXPECT_EQ(packed.packing(), pk);
    Rng rng(9);
    std::vector<float> rows = normal_vector(K * n, rng);
    std::vector<float> p = pk.from_replica_major(rows);
    std::vector<uint16_t> bf_rows(K * n, 0), bf(K * n, 0);
    for (int64_t r = 0; r < K; ++r) {
      plain.set_lr(0.01f * (r + 1), r);
      packed.set_lr(0.01f * (r + 1), r);
    }
    for (int step = 0; step < 4; ++step) {
      std::vector<float> g_rows = normal_vector(K * n, rng);
      if (step == 1) g_rows[1 * n + 900] = std::numeric_limits<float>::infinity();
      const std::vector<float> g = pk.from_replica_major(g_rows);
      plain.step(rows.data(), g_rows.data(), bf_rows.data());
      packed.step(p.data(), g.data(), bf.data());
    }
    EXPECT_EQ(pk.to_replica_major(p), rows) << spec;
    EXPECT_EQ(pk.to_replica_major(bf), bf_rows) << spec;
    for (int k = 0; k < plain.num_state_buffers(); ++k)
      EXPECT_EQ(pk.to_replica_major(packed.state_buffer(k)), plain.state_buffer(k)) << spec << " state " << k;
    for (int64_t r = 0; r < K; ++r) EXPECT_EQ(packed.step_count(r), plain.step_count(r)) << spec;
    EXPECT_EQ(packed.step_count(1), 3) << spec;

    // A replica's state moves between the two layouts unchanged.
    plain.load_replica(0, packed.save_replica(2));
    EXPECT_EQ(plain.save_replica(0), packed.save_replica(2)) << spec;
    // A whole state is tied to its packing.
    EXPECT_NE(error_of([&] { plain.load(packed.save()); }).find("packed differently"), std::string::npos);
    Optimizer again(spec, Device::CPU, n, packed_setup);
    again.load(packed.save());
    EXPECT_EQ(again.state_buffer(0), packed.state_buffer(0));
  }
}

// The GPU cuts each replica's gradients into pieces for its segmented norm reduction; the pieces of
// all replicas must cover every parameter of every replica exactly once and nothing else.
TEST(OptimizerPacking, GradientPiecesCoverEachParameterOnce) {
  const int64_t n = 1003;
  const std::vector<std::vector<ReplicaBlock>> packings = {
      {{0, 1003, 0, 1003}}, {{0, 400, 0, 400}, {400, 1003, 3 * 400, 603}}, {{0, 602, 1, 1012}, {602, 1003, 606, 1012}}};
  for (const auto& blocks : packings) {
    const int64_t K = 3;
    const ReplicaPacking pk(n, K, blocks);
    const detail::BlockTable bt = detail::block_table(pk);
    for (int64_t chunk : {1, 7, 100, 400, 5000}) {
      const int parts = static_cast<int>(detail::grad_parts(bt, chunk));
      const detail::GradSegmentEdge first{bt, chunk, parts, false}, last{bt, chunk, parts, true};
      std::vector<int> hits(pk.span(), 0);
      for (int64_t s = 0; s < K * parts; ++s) {
        ASSERT_LT(first(s), last(s)) << "empty piece " << s;
        ASSERT_LE(last(s) - first(s), chunk);
        for (int64_t i = first(s); i < last(s); ++i) ++hits[i];
      }
      for (int64_t r = 0; r < K; ++r)
        for (int64_t i = 0; i < n; ++i) {
          ASSERT_EQ(hits[pk.index(r, i)], 1) << "chunk " << chunk << " replica " << r << " float " << i;
          hits[pk.index(r, i)] = 0;
        }
      EXPECT_EQ(std::count(hits.begin(), hits.end(), 0), pk.span()) << "a piece covers a gap, chunk " << chunk;
    }
  }
}

TEST(OptimizerPacking, RejectsStrideAndBlocksTogether) {
  OptimizerSetup setup;
  setup.replicas = 2;
  setup.replica_stride = 12;
  setup.blocks = {{0, 10, 0, 10}};
  EXPECT_NE(error_of([&] { Optimizer("adam()", Device::CPU, 10, setup); }).find("not both"), std::string::npos);
  setup.replica_stride = 0;
  setup.blocks = {{0, 10, 0, 5}};
  EXPECT_THROW(Optimizer("adam()", Device::CPU, 10, setup), Error);
  setup.blocks = {{0, 10, 0, 10}};
  Optimizer opt("adam()", Device::CPU, 10, setup);
  std::vector<float> p(19), g(19);
  EXPECT_THROW(opt.step(p, g), Error);  // 2 x 10 floats needed
}

}  // namespace
