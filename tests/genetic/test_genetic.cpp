// Expert expansion: distances between FFN deltas, the farthest-point choice, the genetic search's
// children and their determinism, and drop-upcycling's re-drawn neurons.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>

#include "core/error.hpp"
#include "genetic/expand.hpp"
#include "tests/common/fixtures.hpp"

using namespace upcycle;
using namespace upcycle::genetic;

namespace {

struct Checkpoints {
  std::vector<std::unique_ptr<Checkpoint>> owned;
  std::vector<const Checkpoint*> ptrs;
  explicit Checkpoints(std::vector<uint64_t> seeds, const ModelConfig& config = test::tiny_config("llama")) {
    for (uint64_t s : seeds) {
      owned.push_back(test::random_checkpoint(config, s));
      ptrs.push_back(owned.back().get());
    }
  }
};

// The search's options for these tests: E experts, `candidates` per round, a seed; no progress line.
ExpansionOptions search_options(int experts, int candidates = ExpansionOptions{}.candidates, uint64_t seed = 0) {
  ExpansionOptions o;
  o.experts = experts;
  o.candidates = candidates;
  o.seed = seed;
  o.progress = false;
  return o;
}

// A (layer, role) of the pool made whole: one block of the whole tensor.
struct WholeTensor {
  PoolTensor tensor;
  PoolBlock block;
  WholeTensor(const FfnSource& src, const Pool& pool, int layer, Role role, const merge::Options& merge)
      : tensor(src, pool, layer, role, merge, uint64_t(1) << 40), block(tensor) {
    block.seek(0, tensor.numel());
  }
  std::vector<float> expert(size_t e) {
    const auto x = block.expert(e);
    return {x.begin(), x.end()};
  }
};

// 1 − cos of two experts' deltas over one layer's gate, up and down, averaged over layers,
// computed from the tensors directly.
double reference_cosine(const FfnSource& src, WholeTensor* const per_layer_role[][3], size_t i, size_t j) {
  double sum = 0;
  for (int l = 0; l < src.layers(); ++l) {
    double ij = 0, ii = 0, jj = 0;
    for (int r = 0; r < 3; ++r) {
      WholeTensor& t = *per_layer_role[l][r];
      const auto a = t.expert(i), b = t.expert(j);
      const auto base = t.block.base();
      for (size_t n = 0; n < a.size(); ++n) {
        const double x = double(a[n]) - base[n], y = double(b[n]) - base[n];
        ij += x * y, ii += x * x, jj += y * y;
      }
    }
    sum += 1 - ij / std::sqrt(ii * jj);
  }
  return sum / src.layers();
}

}  // namespace

TEST_CASE("genetic: the pool grows by children of distant parents, and the distances are those of their deltas") {
  Checkpoints c({1, 2, 3});
  const FfnSource src(c.ptrs, nullptr);
  ExpansionOptions o = search_options(5, 4, 11);
  const Expansion x = expand_pool(src, o);
  REQUIRE(x.pool.size() == 5);
  for (int k = 0; k < 3; ++k) CHECK(x.pool[size_t(k)].checkpoint == k);
  for (size_t e = 3; e < 5; ++e) {
    const ExpertRecipe& r = x.pool[e];
    CHECK(r.is_child());
    CHECK(r.parent_a < int(e));
    CHECK(r.parent_b < int(e));
    CHECK(r.parent_a != r.parent_b);
    CHECK(r.weight_a + r.weight_b == doctest::Approx(1.0));
  }
  // Every distance, before and after, recomputed from the materialised tensors.
  std::vector<std::unique_ptr<WholeTensor>> keep;
  WholeTensor* table[2][3];
  for (int l = 0; l < 2; ++l)
    for (int r = 0; r < 3; ++r) {
      keep.push_back(std::make_unique<WholeTensor>(src, x.pool, l, kFfnRoles[r], o.merge));
      table[l][r] = keep.back().get();
    }
  REQUIRE(x.after.size() == 5);
  for (size_t i = 0; i < 5; ++i) {
    CHECK(x.after[i][i] == 0);
    for (size_t j = 0; j < i; ++j) {
      CHECK(x.after[i][j] == doctest::Approx(reference_cosine(src, table, i, j)).epsilon(1e-6));  // float deltas
      CHECK(x.after[i][j] == x.after[j][i]);
    }
  }
  for (size_t i = 0; i < 3; ++i)
    for (size_t j = 0; j < 3; ++j) CHECK(x.before[i][j] == doctest::Approx(x.after[i][j]).epsilon(1e-12));
  // A child's DARE merge drops half of each delta: it is neither parent.
  CHECK(table[0][0]->expert(3) != table[0][0]->expert(size_t(x.pool[3].parent_a)));

  // The same seed gives the same recipes; another seed other ones.
  const Expansion again = expand_pool(src, o);
  for (size_t e = 3; e < 5; ++e) {
    CHECK(again.pool[e].seed == x.pool[e].seed);
    CHECK(again.pool[e].weight_a == x.pool[e].weight_a);
  }
  o.seed = 12;
  CHECK(expand_pool(src, o).pool[3].seed != x.pool[3].seed);
}

TEST_CASE("genetic: with one distant pair allowed, every child's parents are the most distant pair") {
  Checkpoints c({4, 5, 6, 7});
  const FfnSource src(c.ptrs, nullptr);
  ExpansionOptions o = search_options(5, 3);
  o.distant_pairs = 1;
  const Expansion x = expand_pool(src, o);
  size_t bi = 0, bj = 1;
  for (size_t i = 0; i < 4; ++i)
    for (size_t j = i + 1; j < 4; ++j)
      if (x.before[i][j] > x.before[bi][bj]) bi = i, bj = j;
  CHECK(x.pool[4].parent_a == int(bi));
  CHECK(x.pool[4].parent_b == int(bj));
}

TEST_CASE("genetic: choosing E <= K keeps the checkpoints farthest apart") {
  // Checkpoint 2 is checkpoint 0 with a tiny change: the pair (0, 2) must not both be kept.
  auto a = test::random_checkpoint(test::tiny_config("llama"), 1);
  auto b = test::random_checkpoint(test::tiny_config("llama"), 2);
  auto cfg = a->config();
  std::vector<TensorInfo> infos = a->tensors();
  const Checkpoint* base = a.get();
  ComputedCheckpoint near(cfg, infos, [base](const TensorInfo& info) {
    std::vector<float> v = base->load(info.name).to_f32_vector();
    v[0] += 1e-3f;
    return Tensor::from_f32(info.shape, v);
  });
  auto d = test::random_checkpoint(test::tiny_config("llama"), 3);
  const FfnSource src({a.get(), b.get(), &near, d.get()}, nullptr);
  const ExpansionOptions o = search_options(3);
  const Expansion x = expand_pool(src, o);
  REQUIRE(x.pool.size() == 3);
  std::vector<int> kept;
  for (const auto& r : x.pool) kept.push_back(r.checkpoint);
  CHECK(kept.size() == 3);
  CHECK_FALSE((std::count(kept.begin(), kept.end(), 0) && std::count(kept.begin(), kept.end(), 2)));
  CHECK(x.after.size() == 3);
}

TEST_CASE("genetic: checkpoints of different shapes, or MoE ones, are refused by name") {
  auto a = test::random_checkpoint(test::tiny_config("llama"), 1);
  auto m = test::random_checkpoint(test::tiny_config("mixtral"), 1);
  CHECK_THROWS_WITH_AS(FfnSource({a.get(), m.get()}, nullptr), doctest::Contains("MoE"), InputError);
  ModelConfig wide = test::tiny_config("llama");
  wide.intermediate_size = 32;
  auto w = test::random_checkpoint(wide, 1);
  CHECK_THROWS_WITH_AS(FfnSource({a.get(), w.get()}, nullptr), doctest::Contains("same architecture and shape"),
                       InputError);
}

// FFN tensors of 300 x 16 = 4800 elements: two dot blocks, the second ragged.
TEST_CASE("genetic: the search's distances and choices do not depend on the block size") {
  ModelConfig cfg = test::tiny_config("llama");
  cfg.intermediate_size = 300;
  Checkpoints c({21, 22, 23}, cfg);
  const FfnSource src(c.ptrs, nullptr);
  ExpansionOptions o = search_options(6, 3, 4);
  const Expansion whole = expand_pool(src, o);  // one block per tensor
  o.block_elements = kDotBlock;
  const Expansion blocks = expand_pool(src, o);
  CHECK(blocks.before == whole.before);  // bit for bit
  CHECK(blocks.after == whole.after);
  for (size_t e = 0; e < whole.pool.size(); ++e) CHECK(describe(blocks.pool[e]) == describe(whole.pool[e]));
  o.block_elements = 1000;
  CHECK_THROWS_AS(expand_pool(src, o), std::invalid_argument);
}

TEST_CASE("genetic: a sampled search estimates the distances from a seeded share of each tensor") {
  ModelConfig cfg = test::tiny_config("llama");
  cfg.intermediate_size = 16384;  // [16384, 16]: 64 dot blocks per FFN tensor
  Checkpoints c({31, 32, 33}, cfg);
  const FfnSource src(c.ptrs, nullptr);
  ExpansionOptions o = search_options(5, 4, 9);
  for (Distance d : {Distance::Cosine, Distance::L2}) {
    CAPTURE(distance_name(d));
    o.distance = d;
    o.sample_elements = 0;
    o.block_elements = PoolTensor::kBlockElements;
    const Expansion exact = expand_pool(src, o);
    o.sample_elements = 65536;  // 16 of the 64 dot blocks
    const Expansion sampled = expand_pool(src, o);
    for (size_t i = 0; i < 5; ++i)
      for (size_t j = 0; j < 5; ++j) {
        if (i == j) continue;
        // 16 of 64 blocks of 4096 random values: within a few per cent; L2 too, as the sums are
        // scaled to the whole tensor (unscaled, L2 would be half the exact one).
        if (i < 3 && j < 3) CHECK(sampled.before[i][j] == doctest::Approx(exact.before[i][j]).epsilon(0.03));
        if (i < 3 && j < 3) CHECK(sampled.before[i][j] != exact.before[i][j]);  // a sample, not everything
      }
    // Seeded: the same bits again, and whatever the block size (runs of drawn blocks are cut at
    // block boundaries, their sums added in order).
    CHECK(expand_pool(src, o).after == sampled.after);
    o.block_elements = kDotBlock;
    const Expansion small_blocks = expand_pool(src, o);
    CHECK(small_blocks.after == sampled.after);
    for (size_t e = 0; e < 5; ++e) CHECK(describe(small_blocks.pool[e]) == describe(sampled.pool[e]));
  }
  // A sample of the whole tensor is no sample: the exact bits.
  o.block_elements = PoolTensor::kBlockElements;
  o.distance = Distance::Cosine;
  o.sample_elements = 0;
  const Expansion exact = expand_pool(src, o);
  o.sample_elements = 65536 * 4;
  CHECK(expand_pool(src, o).after == exact.after);
}

TEST_CASE("genetic: distances in function are the mean absolute loss gap over samples finite under both") {
  const double inf = std::numeric_limits<double>::infinity();
  // Three experts on three samples; sample 2 has no counted token under expert 2.
  const auto d = function_distances({{1.0, 2.0, 0.5}, {1.5, 1.0, 0.5}, {3.0, 2.0, inf}});
  CHECK(d[0][0] == 0);
  CHECK(d[0][1] == doctest::Approx((0.5 + 1.0 + 0.0) / 3));
  CHECK(d[1][0] == d[0][1]);
  CHECK(d[0][2] == doctest::Approx((2.0 + 0.0) / 2));
  CHECK(d[1][2] == doctest::Approx((1.5 + 1.0) / 2));
  CHECK_THROWS_AS(function_distances({{1.0}, {1.0, 2.0}}), std::invalid_argument);
}

namespace {

// A stand-in for the model: checkpoint k scores the one seed sample k / 2, a child its weight on
// parent a. Every call is kept, so the test sees the candidates the search drew.
struct FakeScores {
  std::vector<ExpertRecipe> seen;
  SeedLosses losses() {
    return [this](const Pool& pool, size_t e) {
      const ExpertRecipe& r = pool.at(e);
      seen.push_back(r);
      return std::vector<double>{r.is_child() ? r.weight_a : r.checkpoint / 2.0};
    };
  }
};

}  // namespace

TEST_CASE("genetic: the search in function keeps the candidate whose seed losses make the most diverse pool") {
  Checkpoints c({1, 2});
  const FfnSource src(c.ptrs, nullptr);
  ExpansionOptions o = search_options(3, 6, 5);
  o.fitness = Fitness::Function;
  CHECK_THROWS_AS(expand_pool(src, o), std::invalid_argument);  // no seed_losses
  FakeScores fake;
  o.seed_losses = fake.losses();
  const Expansion x = expand_pool(src, o);
  REQUIRE(fake.seen.size() == 2 + 6);  // the checkpoints, then each candidate once
  // The pool {0, 0.5, w} scores mean + min of {0.5, w, |w − 0.5|}: recomputed for every candidate.
  const auto score = [](double w) { return diversity({{0, 0.5, w}, {0.5, 0, std::fabs(w - 0.5)}, {w, std::fabs(w - 0.5), 0}}).score(); };
  double best = -1;
  for (size_t i = 2; i < fake.seen.size(); ++i) best = std::max(best, score(fake.seen[i].weight_a));
  REQUIRE(x.pool.size() == 3);
  CHECK(score(x.pool[2].weight_a) == best);
  CHECK(x.function_before == std::vector<std::vector<double>>{{0, 0.5}, {0.5, 0}});
  CHECK(x.function_after[2][0] == x.pool[2].weight_a);
  CHECK(x.after.size() == 3);  // the distances in weights are still reported
  // In weights, the same seed draws the same candidates and may keep another: the search's
  // choice is the fitness's.
  ExpansionOptions w = o;
  w.fitness = Fitness::Weights;
  CHECK(expand_pool(src, w).function_after.empty());
}

TEST_CASE("genetic: choosing E <= K in function keeps the checkpoints farthest apart in seed loss") {
  Checkpoints c({1, 2, 3});
  const FfnSource src(c.ptrs, nullptr);
  ExpansionOptions o = search_options(2);
  const Pool in_weights = expand_pool(src, o).pool;
  // The checkpoint the choice in weights leaves out scores the seed data far from the other two,
  // which score it alike: in function it must be kept.
  int left_out = 0;
  while (left_out == in_weights[0].checkpoint || left_out == in_weights[1].checkpoint) ++left_out;
  o.fitness = Fitness::Function;
  o.seed_losses = [&](const Pool& pool, size_t e) {
    const int k = pool[e].checkpoint;
    return std::vector<double>{k == left_out ? 1.0 : 0.01 * k};
  };
  const Expansion x = expand_pool(src, o);
  REQUIRE(x.pool.size() == 2);
  CHECK((x.pool[0].checkpoint == left_out || x.pool[1].checkpoint == left_out));
  CHECK(x.function_after[0][1] >= 0.98);
}
