// Expert expansion over LoRA adapters: the distances from the factors equal the materialised
// deltas', the farthest-point choice, concatenated children exactly the linear merge, DARE children
// refactored to the pool's rank with their discarded energy, the same bits for a seed at any thread
// count, and the refusals.
#include <doctest/doctest.h>

#include <cmath>
#include <stdexcept>

#include <omp.h>

#include "genetic/lora_expand.hpp"
#include "merge/merge.hpp"
#include "tests/common/fixtures.hpp"

using namespace upcycle;
using namespace upcycle::genetic;

namespace {

constexpr int kLayers = 2;
constexpr int64_t kHidden = 24, kInter = 40;

// K adapters' FFN terms of rank `rank`, random; adapter k's terms share a common part (so that
// some pairs are nearer than others) and its own.
LoraFfnPool random_pool(int adapters, int64_t rank) {
  LoraFfnPool p;
  p.layers = kLayers;
  p.rank = rank;
  p.shapes = {{{kInter, kHidden}, {kInter, kHidden}, {kHidden, kInter}}};
  for (int k = 0; k < adapters; ++k) {
    LoraTerms& e = p.experts.emplace_back();
    for (int t = 0; t < kLayers * kLoraFfnModules; ++t) {
      const auto [out, in] = p.shapes[size_t(t % kLoraFfnModules)];
      const uint64_t seed = uint64_t(1000 * k + 10 * t);
      e.push_back({test::random_values(size_t(rank * in), seed), test::random_values(size_t(out * rank), seed + 1), rank,
                   0.5 + 0.25 * k});
    }
  }
  return p;
}

ExpansionOptions options(int experts, merge::Method method = merge::Method::Dare) {
  ExpansionOptions o;
  o.experts = experts;
  o.candidates = 4;
  o.merge.method = method;
  o.seed = 7;
  o.progress = false;
  return o;
}

// Term t of an expert, materialised.
std::vector<float> dense(const LoraFfnPool& p, const LoraTerms& e, size_t t) {
  const auto [out, in] = p.shapes[t % kLoraFfnModules];
  return merge::dense_delta(e[t].view(), out, in);
}

double inner(const std::vector<float>& x, const std::vector<float>& y) {
  double s = 0;
  for (size_t i = 0; i < x.size(); ++i) s += double(x[i]) * y[i];
  return s;
}

// The cosine distance of two experts from their materialised deltas: per layer over gate, up and
// down together, then the mean over layers.
double dense_cosine_distance(const LoraFfnPool& p, const LoraTerms& x, const LoraTerms& y) {
  double sum = 0;
  for (int l = 0; l < kLayers; ++l) {
    double xy = 0, xx = 0, yy = 0;
    for (int m = 0; m < kLoraFfnModules; ++m) {
      const size_t t = size_t(l * kLoraFfnModules + m);
      const auto dx = dense(p, x, t), dy = dense(p, y, t);
      xy += inner(dx, dy), xx += inner(dx, dx), yy += inner(dy, dy);
    }
    sum += 1 - xy / std::sqrt(xx * yy);
  }
  return sum / kLayers;
}

}  // namespace

TEST_CASE("lora expand: the distances from the factors equal the materialised deltas', and E <= K keeps the farthest") {
  const LoraFfnPool p = random_pool(4, 3);
  const LoraExpansion x = expand_lora_pool(p, options(2), LoraChild::Svd);
  REQUIRE(x.before.size() == 4);
  for (size_t i = 0; i < 4; ++i)
    for (size_t j = 0; j < 4; ++j)
      CHECK(x.before[i][j] == doctest::Approx(i == j ? 0.0 : dense_cosine_distance(p, p.experts[i], p.experts[j])).epsilon(1e-6));
  CHECK(x.pool.size() == 2);
  const Pool farthest = choose_farthest(x.before, 2);
  for (size_t e = 0; e < 2; ++e) CHECK(x.pool[e].checkpoint == farthest[e].checkpoint);
  for (size_t e = 0; e < 2; ++e) CHECK(x.experts[e][0].a == p.experts[size_t(x.pool[e].checkpoint)][0].a);
  CHECK(x.after == submatrix(x.before, x.pool));
}

TEST_CASE("lora expand: a concatenated child is its parents' linear merge exactly, at their summed rank") {
  const LoraFfnPool p = random_pool(3, 2);
  const LoraExpansion x = expand_lora_pool(p, options(5, merge::Method::Linear), LoraChild::Concat);
  REQUIRE(x.experts.size() == 5);
  for (size_t e = 3; e < 5; ++e) {
    const ExpertRecipe& r = x.pool[e];
    REQUIRE(r.is_child());
    CHECK(x.discarded[e] == 0.0);
    const LoraTerms &a = x.experts[size_t(r.parent_a)], &b = x.experts[size_t(r.parent_b)];
    for (size_t t = 0; t < x.experts[e].size(); ++t) {
      CHECK(x.experts[e][t].rank == a[t].rank + b[t].rank);
      const auto got = dense(p, x.experts[e], t), da = dense(p, a, t), db = dense(p, b, t);
      double worst = 0, scale = 0;
      for (size_t i = 0; i < got.size(); ++i) {
        worst = std::max(worst, std::fabs(got[i] - (r.weight_a * da[i] + r.weight_b * db[i])));
        scale = std::max(scale, std::fabs(double(got[i])));
      }
      CHECK(worst <= 1e-5 * scale);
    }
  }
  // The distances after are those of the experts kept, as the materialised deltas give them.
  for (size_t i = 0; i < 5; ++i)
    for (size_t j = i + 1; j < 5; ++j)
      CHECK(x.after[i][j] == doctest::Approx(dense_cosine_distance(p, x.experts[i], x.experts[j])).epsilon(1e-5));
}

TEST_CASE("lora expand: DARE children come back at the pool's rank with their discarded energy, the same bits at any thread count") {
  const LoraFfnPool p = random_pool(3, 2);
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  const LoraExpansion one = expand_lora_pool(p, options(6), LoraChild::Svd);
  omp_set_num_threads(2);
  const LoraExpansion two = expand_lora_pool(p, options(6), LoraChild::Svd);
  omp_set_num_threads(threads);
  REQUIRE(one.experts.size() == 6);
  for (size_t e = 0; e < 6; ++e) {
    CHECK(one.pool[e].parent_a == two.pool[e].parent_a);
    for (size_t t = 0; t < one.experts[e].size(); ++t) {
      CHECK(one.experts[e][t].a == two.experts[e][t].a);
      CHECK(one.experts[e][t].b == two.experts[e][t].b);
    }
  }
  for (size_t e = 3; e < 6; ++e) {
    CHECK(one.experts[e][0].rank == 2);
    CHECK(one.discarded[e] > 0.0);  // DARE's drop raised the rank
    CHECK(one.discarded[e] < 1.0);
  }
  CHECK(one.after == two.after);
  // Another seed, other children.
  ExpansionOptions other = options(6);
  other.seed = 8;
  CHECK(expand_lora_pool(p, other, LoraChild::Svd).experts[3][0].a != one.experts[3][0].a);
}

TEST_CASE("lora expand: what it cannot do is refused") {
  const LoraFfnPool p = random_pool(2, 2);
  ExpansionOptions by_function = options(3);
  by_function.fitness = Fitness::Function;
  CHECK_THROWS_AS(expand_lora_pool(p, by_function, LoraChild::Svd), std::invalid_argument);
  CHECK_THROWS_AS(expand_lora_pool(p, options(3), LoraChild::Concat), std::invalid_argument);  // DARE is not linear
  CHECK_THROWS_AS(expand_lora_pool(random_pool(1, 2), options(2), LoraChild::Svd), std::invalid_argument);
  LoraFfnPool misshapen = p;
  misshapen.experts[1][2].a.pop_back();
  CHECK_THROWS_AS(expand_lora_pool(misshapen, options(2), LoraChild::Svd), std::invalid_argument);
}
