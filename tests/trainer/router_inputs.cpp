#include "tests/trainer/router_inputs.hpp"

#include <algorithm>
#include <numeric>
#include <random>

namespace upcycle::test {

Vec separated_logits(int64_t N, int64_t E, uint64_t seed) {
  std::mt19937_64 rng(seed);
  const Vec noise = random_vec(size_t(N * E), seed, 0.1);
  Vec logits(size_t(N * E));
  std::vector<int> rank(static_cast<size_t>(E));
  for (int64_t n = 0; n < N; ++n) {
    std::iota(rank.begin(), rank.end(), 0);
    std::shuffle(rank.begin(), rank.end(), rng);
    for (int64_t e = 0; e < E; ++e) logits[size_t(n * E + e)] = 0.37 * rank[size_t(e)] - 0.5 + noise[size_t(n * E + e)];
  }
  return logits;
}

}  // namespace upcycle::test
