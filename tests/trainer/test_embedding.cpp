// Embedding lookup: rows copied; backward sums repeated tokens into their row.
#include <doctest/doctest.h>

#include <stdexcept>

#include "tests/trainer/gradcheck.hpp"
#include "trainer/ops/embedding.hpp"

using namespace upcycle::ops;
using namespace upcycle::test;

TEST_CASE("embedding: lookup, and its backward against central differences") {
  // H = 70 spans two of the backward's 64-column chunks; id 2 repeats, id 1 is never used.
  const int64_t N = 5, H = 70, V = 4;
  const std::vector<int32_t> ids = {2, 0, 2, 3, 2};
  Vec table = random_vec(V * H, 1), R = random_vec(N * H, 2);
  auto forward = [&] {
    Vec out(N * H);
    embedding_forward(out.data(), table.data(), ids.data(), N, H, V);
    return out;
  };
  const Vec out = forward();
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < H; ++c) REQUIRE(out[n * H + c] == table[ids[n] * H + c]);

  // loss = Σ out ⊙ R is linear in the table: central differences are exact up to rounding.
  GradBuffer d_table(V * H, 3);
  embedding_backward(d_table.data(), R.data(), ids.data(), N, H, V);
  check_gradient("d_table", d_table.added(), numeric_gradient(table, [&] { return dot(forward(), R); }));

  const std::vector<int32_t> bad = {0, 4};
  Vec small(2 * H);
  CHECK_THROWS_AS(embedding_forward(small.data(), table.data(), bad.data(), 2, H, V), std::invalid_argument);
}
