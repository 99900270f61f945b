// AdamW against torch.optim.AdamW's update written out; global norm and clipping.
#include <doctest/doctest.h>

#include <cmath>
#include <span>
#include <stdexcept>
#include <vector>

#include "core/dtype.hpp"
#include "tests/trainer/gradcheck.hpp"
#include "trainer/ops/adamw.hpp"

using namespace upcycle::ops;
using namespace upcycle::test;

TEST_CASE("adamw: three steps against PyTorch's formulas, with and without decay") {
  const AdamWConfig config{.lr = 1e-2, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.1};
  const int64_t n = 9;
  for (bool decay : {true, false}) {
    Vec p = random_vec(n, 1), m(n, 0.0), v(n, 0.0);
    Vec ref_p = p, ref_m = m, ref_v = v;
    std::vector<float> pf = as<float>(p), mf(n, 0.0f), vf(n, 0.0f);
    for (int64_t t = 1; t <= 3; ++t) {
      const Vec g = random_vec(n, 10 + uint64_t(t));
      adamw_step(p.data(), g.data(), m.data(), v.data(), n, config, t, decay);
      const auto gf = as<float>(g);
      adamw_step(pf.data(), gf.data(), mf.data(), vf.data(), n, config, t, decay);
      for (int64_t i = 0; i < n; ++i) {
        if (decay) ref_p[i] *= 1 - config.lr * config.weight_decay;
        ref_m[i] = config.beta1 * ref_m[i] + (1 - config.beta1) * g[i];
        ref_v[i] = config.beta2 * ref_v[i] + (1 - config.beta2) * g[i] * g[i];
        const double m_hat = ref_m[i] / (1 - std::pow(config.beta1, t));
        const double v_hat = ref_v[i] / (1 - std::pow(config.beta2, t));
        ref_p[i] -= config.lr * m_hat / (std::sqrt(v_hat) + config.eps);
      }
    }
    CHECK(relative_error(p, ref_p) < 1e-14);
    CHECK(relative_error(m, ref_m) < 1e-14);
    CHECK(relative_error(v, ref_v) < 1e-14);
    CHECK(relative_error(widen(pf), ref_p) < 1e-6);
  }
  Vec x(1);
  CHECK_THROWS_AS(adamw_step(x.data(), x.data(), x.data(), x.data(), 1, config, 0, false), std::invalid_argument);
}

TEST_CASE("adamw: the bf16 copy is the updated values rounded, over several blocks, the values unchanged") {
  const AdamWConfig config{.lr = 1e-2, .weight_decay = 0.1};
  const int64_t n = 10000;  // blocks of 4096 and a partial one
  std::vector<float> p = as<float>(random_vec(n, 3)), g = as<float>(random_vec(n, 4)), m(n, 0.0f), v(n, 0.0f);
  std::vector<float> p2 = p, m2 = m, v2 = v;
  std::vector<uint16_t> copy(n, 0);
  for (int64_t t = 1; t <= 2; ++t) {
    adamw_step(p.data(), g.data(), m.data(), v.data(), n, config, t, true, copy.data());
    adamw_step(p2.data(), g.data(), m2.data(), v2.data(), n, config, t, true);
  }
  CHECK(p == p2);
  for (int64_t i = 0; i < n; ++i) REQUIRE(copy[size_t(i)] == upcycle::f32_to_bf16(p[size_t(i)]));
  std::vector<double> d(1);
  CHECK_THROWS_AS(adamw_step(d.data(), d.data(), d.data(), d.data(), 1, config, 1, false, copy.data()),
                  std::invalid_argument);
}

TEST_CASE("global gradient norm and clipping") {
  Vec a = random_vec(5, 1), b = random_vec(300, 2);
  double naive = 0;
  for (double x : a) naive += x * x;
  for (double x : b) naive += x * x;
  naive = std::sqrt(naive);
  const std::vector<std::span<const double>> views = {a, b};
  CHECK(global_norm<double>(views) == doctest::Approx(naive).epsilon(1e-14));

  const std::vector<std::span<double>> grads = {a, b};
  const Vec a0 = a;
  CHECK(clip_global_norm<double>(grads, 2 * naive) == doctest::Approx(naive).epsilon(1e-14));
  CHECK(a == a0);  // under the limit: untouched
  CHECK(clip_global_norm<double>(grads, 0.5) == doctest::Approx(naive).epsilon(1e-14));
  CHECK(global_norm<double>(views) == doctest::Approx(0.5 * naive / (naive + 1e-6)).epsilon(1e-12));
  CHECK(a[0] == doctest::Approx(a0[0] * 0.5 / (naive + 1e-6)).epsilon(1e-14));
}
