// ops::f32_product (oneDNN where it has AVX-512 kernels, else OpenBLAS) against a double product,
// for each layout of b, a read transposed in place, accumulating or not, with strided rows, and
// under VaryingRows (one primitive for every row count) at row counts that change call to call.
#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/random.hpp"
#include "trainer/ops/matmul.hpp"
#include "trainer/ops/onednn_product.hpp"

using namespace upcycle;
using namespace upcycle::ops;

namespace {

std::vector<float> random_values(Rng& rng, int64_t n) {
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = float(rng.uniform() * 2 - 1);
  return v;
}

// One product's operands and its double reference: out[N,M] (+)= a[N,K]·B[K,M], out's rows
// `pad` wider than M, a stored as [N,K] or as [K,N] (read transposed), B as [K,M] or [M,K].
struct Case {
  int64_t N, K, M, pad;
  bool a_transposed;
  BLayout b_layout;
  bool accumulate;
};

// The largest |got − want| over out's [N, M] part, and whether the padding kept its values.
struct Result {
  double worst = 0;
  bool padding_kept = true;
};

Result run(const Case& c, Rng& rng) {
  const std::vector<float> a = random_values(rng, c.N * c.K), b = random_values(rng, c.K * c.M);
  const int64_t stride = c.M + c.pad;
  std::vector<float> out = random_values(rng, c.N * stride);
  const std::vector<float> before = out;
  const int64_t a_row = c.a_transposed ? 1 : c.K, a_col = c.a_transposed ? c.N : 1;
  f32_product(out.data(), stride, a.data(), a_row, a_col, b.data(), c.b_layout, c.N, c.K, c.M, c.accumulate);
  Result r;
  for (int64_t n = 0; n < c.N; ++n) {
    for (int64_t m = 0; m < c.M; ++m) {
      double want = c.accumulate ? before[size_t(n * stride + m)] : 0.0;
      for (int64_t k = 0; k < c.K; ++k) {
        const double bv = c.b_layout == BLayout::Plain ? b[size_t(k * c.M + m)] : b[size_t(m * c.K + k)];
        want += double(a[size_t(n * a_row + k * a_col)]) * bv;
      }
      r.worst = std::max(r.worst, std::fabs(out[size_t(n * stride + m)] - want));
    }
    for (int64_t m = c.M; m < stride; ++m) r.padding_kept &= out[size_t(n * stride + m)] == before[size_t(n * stride + m)];
  }
  return r;
}

}  // namespace

TEST_CASE("f32_product: every layout, a read transposed, strided rows, accumulating or not, as a double product") {
  Rng rng(11);
  CHECK(!f32_product_impl().empty());
  for (const bool a_transposed : {false, true})
    for (const BLayout layout : {BLayout::Plain, BLayout::Transposed})
      for (const bool accumulate : {false, true})
        for (const auto& [N, K, M] : {std::array<int64_t, 3>{1, 7, 5}, {37, 96, 130}, {256, 576, 200}}) {
          const Case c{N, K, M, 3, a_transposed, layout, accumulate};
          CAPTURE(N);
          CAPTURE(K);
          CAPTURE(M);
          CAPTURE(a_transposed);
          CAPTURE(accumulate);
          const Result r = run(c, rng);
          CHECK(r.worst < 1e-5 * std::sqrt(double(K)));
          CHECK(r.padding_kept);
        }
}

TEST_CASE("f32_product: under VaryingRows, row and inner counts that change call to call, each right and the same bits every call") {
  Rng rng(12);
  CHECK(!VaryingRows::active());
  {
    const VaryingRows outer;
    {
      const VaryingRows nested;
      CHECK(VaryingRows::active());
    }
    CHECK(VaryingRows::active());  // nested guards count
    for (const int64_t rows : {1, 5, 64, 129, 300, 0}) {
      CAPTURE(rows);
      // An expert's forward (rows vary) and its weight gradient (the inner count varies).
      for (const Case& c : {Case{rows, 96, 130, 0, false, BLayout::Transposed, false},
                            Case{130, rows, 96, 0, true, BLayout::Plain, true}}) {
        const Result r = run(c, rng);
        CHECK(r.worst < 1e-5 * std::sqrt(double(std::max<int64_t>(c.K, 1))));
      }
    }
  }
  CHECK(!VaryingRows::active());
  // The same inputs give the same bits on every call under the guard.
  const std::vector<float> a = random_values(rng, 40 * 96), b = random_values(rng, 130 * 96);
  std::vector<float> first(40 * 130), again(first.size());
  const VaryingRows varying;
  f32_product(first.data(), 130, a.data(), 96, 1, b.data(), BLayout::Transposed, 40, 96, 130, false);
  f32_product(again.data(), 130, a.data(), 96, 1, b.data(), BLayout::Transposed, 40, 96, 130, false);
  CHECK(std::memcmp(first.data(), again.data(), first.size() * sizeof(float)) == 0);
}
