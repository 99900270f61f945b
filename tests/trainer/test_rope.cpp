// Rotary embeddings: inverse frequencies (default, linear, llama3) against their definitions,
// the rotation against the explicit rotate-half formula, backward against central differences.
#include <doctest/doctest.h>

#include <cmath>
#include <numbers>
#include <stdexcept>

#include "tests/trainer/gradcheck.hpp"
#include "trainer/ops/rope.hpp"

using namespace upcycle::ops;
using namespace upcycle::test;

namespace {

double default_inv_freq(int64_t i, int64_t D, double theta) { return std::pow(theta, -2.0 * double(i) / double(D)); }

// transformers' rule written out per frequency, branch by branch.
double llama3_reference(double f, double factor, double low, double high, double original) {
  const double wavelen = 2 * std::numbers::pi / f;
  if (wavelen < original / high) return f;
  if (wavelen > original / low) return f / factor;
  const double smooth = (original / wavelen - low) / (high - low);
  return (1 - smooth) * f / factor + smooth * f;
}

}  // namespace

TEST_CASE("rope: inverse frequencies, default, linear and llama3") {
  const int64_t D = 128;
  const double theta = 500000;
  const auto plain = rope_inv_freq(D, theta, {});
  const auto linear = rope_inv_freq(D, theta, {.type = RopeScaling::Type::Linear, .factor = 4});
  // Llama 3.1's rope_scaling.
  const RopeScaling l3{.type = RopeScaling::Type::Llama3,
                       .factor = 8,
                       .low_freq_factor = 1,
                       .high_freq_factor = 4,
                       .original_max_position_embeddings = 8192};
  const auto llama3 = rope_inv_freq(D, theta, l3);
  REQUIRE(plain.size() == size_t(D / 2));
  int kept = 0, divided = 0, blended = 0;
  for (int64_t i = 0; i < D / 2; ++i) {
    const double f = default_inv_freq(i, D, theta);
    CHECK(std::abs(plain[i] - f) <= 1e-6 * f);  // fp32, as transformers holds them
    CHECK(std::abs(linear[i] - f / 4) <= 1e-6 * f);
    const double want = llama3_reference(f, 8, 1, 4, 8192);
    CHECK(std::abs(llama3[i] - want) <= 1e-6 * want);
    kept += want == f;
    divided += want == f / 8;
    blended += want != f && want != f / 8;
  }
  // All three bands occur at these settings (i < 29 kept, 29..34 blended, the rest divided).
  CHECK(kept == 29);
  CHECK(blended == 6);
  CHECK(divided == 29);
}

TEST_CASE("rope: rotate-half rotation of q and k, float against double, backward") {
  const int64_t D = 8, N = 7, nH = 4, nKV = 2, half = D / 2;
  const double theta = 10000;
  // Two packed sequences: positions restart.
  const std::vector<int32_t> pos = {0, 1, 2, 3, 0, 1, 2};
  const RopeTable<double> table(D, 16, theta);
  const RopeTable<float> table_f(D, 16, theta);
  Vec q = random_vec(N * nH * D, 1), k = random_vec(N * nKV * D, 2);
  Vec Rq = random_vec(q.size(), 3), Rk = random_vec(k.size(), 4);

  // x·cos(θ) + rotate_half(x)·sin(θ), θ = pos·theta^(-2i/D) in double.
  auto explicit_rope = [&](const Vec& x, int64_t heads) {
    Vec y(x.size());
    for (int64_t n = 0; n < N; ++n)
      for (int64_t h = 0; h < heads; ++h)
        for (int64_t d = 0; d < D; ++d) {
          const double angle = pos[n] * default_inv_freq(d % half, D, theta);
          const double* xh = x.data() + (n * heads + h) * D;
          const double rotated = d < half ? -xh[d + half] : xh[d - half];
          y[(n * heads + h) * D + d] = xh[d] * std::cos(angle) + rotated * std::sin(angle);
        }
    return y;
  };
  auto forward = [&](const Vec& x, int64_t heads) {
    Vec y(x.size());
    rope_forward(y.data(), x.data(), pos.data(), table, N, heads);
    return y;
  };
  // The table's angles are rounded to fp32 (as transformers'), hence 1e-6 rather than 1e-15.
  CHECK(relative_error(forward(q, nH), explicit_rope(q, nH)) < 1e-6);
  CHECK(relative_error(forward(k, nKV), explicit_rope(k, nKV)) < 1e-6);

  const auto qf = as<float>(q);
  std::vector<float> yf(q.size());
  rope_forward(yf.data(), qf.data(), pos.data(), table_f, N, nH);
  CHECK(relative_error(widen(yf), forward(q, nH)) < 1e-5);

  Vec in_place = q;
  rope_forward(in_place.data(), in_place.data(), pos.data(), table, N, nH);
  CHECK(in_place == forward(q, nH));

  GradBuffer d_q(q.size(), 5), d_k(k.size(), 6);
  rope_backward(d_q.data(), Rq.data(), pos.data(), table, N, nH);
  rope_backward(d_k.data(), Rk.data(), pos.data(), table, N, nKV);
  check_gradient("d_q", d_q.added(), numeric_gradient(q, [&] { return dot(forward(q, nH), Rq); }));
  check_gradient("d_k", d_k.added(), numeric_gradient(k, [&] { return dot(forward(k, nKV), Rk); }));

  const std::vector<int32_t> too_far = {16};
  Vec one(D);
  CHECK_THROWS_AS(rope_forward(one.data(), one.data(), too_far.data(), table, 1, 1), std::invalid_argument);
}
