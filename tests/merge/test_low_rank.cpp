// LoRA deltas in their factors against the same deltas materialised: inner products, distances
// and cosines from r x r products; linear merges concatenated exactly; truncation to rank r
// recovering a rank-r delta exactly and, for any other, the Eckart–Young error with the
// discarded energy it reports; a DARE child of two deltas, merged densely, brought back to rank r;
// a weighted sum truncated from its factors alone as the dense sum is.
#include <doctest/doctest.h>

#include <cmath>
#include <stdexcept>

#include <Eigen/Dense>

#include "merge/low_rank.hpp"
#include "merge/merge.hpp"
#include "tests/common/fixtures.hpp"

using namespace upcycle;
using namespace upcycle::merge;

namespace {

constexpr int64_t kOut = 12, kIn = 9;

LowRankFactors random_term(int64_t rank, double scale, uint64_t seed) {
  return {test::random_values(size_t(rank * kIn), seed), test::random_values(size_t(kOut * rank), seed + 100), rank,
          scale};
}

double dense_inner(const std::vector<float>& x, const std::vector<float>& y) {
  double s = 0;
  for (size_t i = 0; i < x.size(); ++i) s += double(x[i]) * y[i];
  return s;
}

double max_error(const std::vector<float>& got, const std::vector<float>& want) {
  double worst = 0, scale = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    worst = std::max(worst, std::fabs(double(got[i]) - want[i]));
    scale = std::max(scale, std::fabs(double(want[i])));
  }
  return worst / scale;
}

}  // namespace

TEST_CASE("low rank: inner products, distances and cosines from r x r products equal the materialised deltas'") {
  const LowRankFactors x = random_term(3, 2.0, 1), y = random_term(5, 0.5, 2);
  const auto dx = dense_delta(x.view(), kOut, kIn), dy = dense_delta(y.view(), kOut, kIn);
  CHECK(delta_inner(x.view(), y.view(), kOut, kIn) == doctest::Approx(dense_inner(dx, dy)).epsilon(1e-6));
  CHECK(delta_inner(x.view(), x.view(), kOut, kIn) == doctest::Approx(dense_inner(dx, dx)).epsilon(1e-6));
  std::vector<float> diff(dx.size());
  for (size_t i = 0; i < dx.size(); ++i) diff[i] = dx[i] - dy[i];
  CHECK(delta_l2_distance(x.view(), y.view(), kOut, kIn) == doctest::Approx(std::sqrt(dense_inner(diff, diff))).epsilon(1e-6));
  CHECK(delta_cosine(x.view(), y.view(), kOut, kIn) ==
        doctest::Approx(dense_inner(dx, dy) / std::sqrt(dense_inner(dx, dx) * dense_inner(dy, dy))).epsilon(1e-6));
  CHECK(delta_l2_distance(x.view(), x.view(), kOut, kIn) == doctest::Approx(0.0).epsilon(1e-6));
  CHECK(delta_cosine(x.view(), x.view(), kOut, kIn) == doctest::Approx(1.0));
  LowRankFactors zero = x;
  std::fill(zero.b.begin(), zero.b.end(), 0.0f);
  CHECK(delta_cosine(x.view(), zero.view(), kOut, kIn) == 0.0);
  LowRankFactors bad = x;
  bad.a.pop_back();
  CHECK_THROWS_AS(delta_inner(bad.view(), y.view(), kOut, kIn), std::invalid_argument);
}

TEST_CASE("low rank: a linear merge concatenated is the weighted sum of the deltas, at the summed rank") {
  const LowRankFactors x = random_term(3, 2.0, 3), y = random_term(2, 0.5, 4);
  const std::vector<LowRankView> terms = {x.view(), y.view()};
  const std::vector<double> w = {0.3, 0.7};
  const LowRankFactors c = concat_deltas(terms, w, kOut, kIn);
  CHECK(c.rank == 5);
  const auto dx = dense_delta(x.view(), kOut, kIn), dy = dense_delta(y.view(), kOut, kIn);
  std::vector<float> want(dx.size());
  for (size_t i = 0; i < dx.size(); ++i) want[i] = float(0.3 * dx[i] + 0.7 * dy[i]);
  CHECK(max_error(dense_delta(c.view(), kOut, kIn), want) < 1e-6);
  CHECK_THROWS_AS(concat_deltas(terms, std::vector<double>{1.0}, kOut, kIn), std::invalid_argument);
}

TEST_CASE("low rank: truncation keeps a rank-r delta exactly and otherwise discards what Eckart-Young says") {
  const LowRankFactors x = random_term(3, 2.0, 5);
  const auto dx = dense_delta(x.view(), kOut, kIn);
  const LowRankFactors same = truncate_delta(dx, kOut, kIn, 3, 0.25);
  CHECK(same.scale == 0.25);
  CHECK(max_error(dense_delta(same.view(), kOut, kIn), dx) < 1e-5);
  CHECK(same.discarded < 1e-10);

  // A full-rank delta: the squared error of the rank-4 factors is the discarded share of ‖dW‖².
  const std::vector<float> dw = test::random_values(size_t(kOut * kIn), 6);
  const LowRankFactors t = truncate_delta(dw, kOut, kIn, 4, 1.0);
  const auto approx = dense_delta(t.view(), kOut, kIn);
  std::vector<float> residual(dw.size());
  for (size_t i = 0; i < dw.size(); ++i) residual[i] = dw[i] - approx[i];
  CHECK(t.discarded > 0.1);
  CHECK(t.discarded < 1.0);
  CHECK(dense_inner(residual, residual) / dense_inner(dw, dw) == doctest::Approx(t.discarded).epsilon(1e-4));
  // ... the smallest error any rank-4 matrix has: against an independent SVD (Jacobi).
  Eigen::MatrixXd m(kOut, kIn);
  for (int64_t o = 0; o < kOut; ++o)
    for (int64_t i = 0; i < kIn; ++i) m(o, i) = dw[size_t(o * kIn + i)];
  const Eigen::VectorXd s = Eigen::JacobiSVD<Eigen::MatrixXd>(m).singularValues();
  CHECK(t.discarded == doctest::Approx(s.tail(kIn - 4).squaredNorm() / s.squaredNorm()).epsilon(1e-6));
  for (int64_t bad : {0, 10}) CHECK_THROWS_AS(truncate_delta(dw, kOut, kIn, bad, 1.0), std::invalid_argument);
  CHECK_THROWS_AS(truncate_delta(dw, kOut, kIn, 2, 0.0), std::invalid_argument);
}

TEST_CASE("low rank: a DARE child of two deltas, merged densely, comes back at rank r with its discarded energy") {
  const LowRankFactors x = random_term(2, 1.0, 7), y = random_term(2, 1.0, 8);
  const auto dx = dense_delta(x.view(), kOut, kIn), dy = dense_delta(y.view(), kOut, kIn);
  Options o;
  o.method = Method::Dare;
  o.weights = {0.5, 0.5};
  o.drop_rate = 0.5;
  o.seed = 3;
  std::vector<float> child(dx.size());
  const std::vector<std::span<const float>> parents = {dx, dy};
  merge_tensor(child, parents, std::vector<float>(dx.size(), 0.0f), o, "layers.0.q_proj");
  const LowRankFactors t = truncate_delta(child, kOut, kIn, 2, 1.0);
  CHECK(t.discarded > 0.0);  // dropping elements raised the rank
  CHECK(t.discarded < 1.0);
  CHECK(t.a.size() == size_t(2 * kIn));
  CHECK(t.b.size() == size_t(kOut * 2));
}

TEST_CASE("low rank: a weighted sum truncated from its factors equals the dense sum truncated") {
  const LowRankFactors x = random_term(2, 0.5, 21), y = random_term(3, 2.0, 22), z = random_term(2, 1.0, 23);
  const std::vector<LowRankView> terms = {x.view(), y.view(), z.view()};
  const std::vector<double> weights = {0.5, 0.3, 0.2};
  std::vector<float> dw(size_t(kOut * kIn), 0.0f);  // Σ w_k·dW_k, materialised
  for (size_t k = 0; k < terms.size(); ++k) {
    const auto d = dense_delta(terms[k], kOut, kIn);
    for (size_t i = 0; i < dw.size(); ++i) dw[i] += float(weights[k]) * d[i];
  }
  // The sum's rank is 7 (< kIn = 9): kept whole at 7, truncated below it, zero-padded above it.
  for (int64_t rank : {2, 4, 7, 9}) {
    CAPTURE(rank);
    const LowRankFactors got = truncate_sum(terms, weights, kOut, kIn, rank, 0.5);
    const LowRankFactors want = truncate_delta(dw, kOut, kIn, rank, 0.5);
    CHECK(got.rank == rank);
    CHECK(got.scale == 0.5);
    CHECK(max_error(dense_delta(got.view(), kOut, kIn), dense_delta(want.view(), kOut, kIn)) < 1e-4);
    CHECK(got.discarded == doctest::Approx(want.discarded).epsilon(1e-5));
    if (rank >= 7) CHECK(max_error(dense_delta(got.view(), kOut, kIn), dw) < 1e-5);
  }
  CHECK(truncate_sum(terms, weights, kOut, kIn, 2, 1.0).discarded > 0.05);
  CHECK_THROWS_AS(truncate_sum(terms, weights, kOut, kIn, 10, 1.0), std::invalid_argument);
  CHECK_THROWS_AS(truncate_sum(terms, std::vector<double>{1.0}, kOut, kIn, 2, 1.0), std::invalid_argument);
}

TEST_CASE("low rank: the sketched truncation recovers a low-rank delta and nears Eckart-Young on a noisy one") {
  // [60, 80]: room for the sketch (rank + 10 columns) to be smaller than the matrix.
  constexpr int64_t out = 60, in = 80;
  const LowRankFactors x{test::random_values(size_t(4 * in), 31), test::random_values(size_t(out * 4), 32), 4, 1.0};
  const auto dx = dense_delta(x.view(), out, in);
  const LowRankFactors same = sketch_delta(dx, out, in, 4, 0.5, 1);
  CHECK(same.scale == 0.5);
  CHECK(max_error(dense_delta(same.view(), out, in), dx) < 1e-4);
  CHECK(same.discarded < 1e-6);

  // The delta plus small full-rank noise (a DARE child's shape): the discarded share reported is
  // the factors' own squared error, and within 2% of the optimum's.
  std::vector<float> noisy = dx;
  const std::vector<float> noise = test::random_values(noisy.size(), 33);
  for (size_t i = 0; i < noisy.size(); ++i) noisy[i] += 0.05f * noise[i];
  const LowRankFactors s = sketch_delta(noisy, out, in, 4, 1.0, 2), best = truncate_delta(noisy, out, in, 4, 1.0);
  const auto approx = dense_delta(s.view(), out, in);
  std::vector<float> residual(noisy.size());
  for (size_t i = 0; i < noisy.size(); ++i) residual[i] = noisy[i] - approx[i];
  CHECK(dense_inner(residual, residual) / dense_inner(noisy, noisy) == doctest::Approx(s.discarded).epsilon(1e-3));
  CHECK(s.discarded >= best.discarded * (1 - 1e-3));  // f32 products: to their rounding
  CHECK(s.discarded <= best.discarded * 1.02);
  // The same seed, the same bits.
  const LowRankFactors again = sketch_delta(noisy, out, in, 4, 1.0, 2);
  CHECK(again.a == s.a);
  CHECK(again.b == s.b);
  CHECK_THROWS_AS(sketch_delta(noisy, out, in, 0, 1.0, 2), std::invalid_argument);
}
