// AdamW against torch.optim.AdamW's update written out; global norm and clipping.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <span>
#include <stdexcept>
#include <vector>

#include "core/dtype.hpp"
#include "tests/trainer/gradcheck.hpp"
#include "trainer/ops/adamw.hpp"
#include "trainer/optimizer.hpp"

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
    adamw_step(p.data(), g.data(), m.data(), v.data(), n, config, t, true, 1.0f, copy.data());
    adamw_step(p2.data(), g.data(), m2.data(), v2.data(), n, config, t, true);
  }
  CHECK(p == p2);
  for (int64_t i = 0; i < n; ++i) REQUIRE(copy[size_t(i)] == upcycle::f32_to_bf16(p[size_t(i)]));
  std::vector<double> d(1);
  CHECK_THROWS_AS(adamw_step(d.data(), d.data(), d.data(), d.data(), 1, config, 1, false, 1.0, copy.data()),
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
  // float: blocks and lanes, a tail past the last whole lane set and the last whole block.
  const std::vector<float> c = as<float>(random_vec(3 * 4096 + 13, 3));
  const std::vector<std::span<const float>> floats = {c};
  double want = 0;
  for (float x : c) want += double(x) * double(x);
  CHECK(global_norm<float>(floats) == doctest::Approx(std::sqrt(want)).epsilon(1e-14));

  CHECK(clip_scale(naive, 2 * naive) == 1.0);  // under the limit: untouched
  CHECK(clip_scale(naive, 0.5) == 0.5 / (naive + 1e-6));
}

TEST_CASE("adamw: a step given clip's scale is the step on the gradients scaled first, bit for bit") {
  const AdamWConfig config{.lr = 1e-2, .weight_decay = 0.1};
  const int64_t n = 5000;
  const std::vector<float> g = as<float>(random_vec(n, 8));
  const float scale = float(clip_scale(40.0, 1.0));
  std::vector<float> scaled = g;
  for (float& x : scaled) x *= scale;
  std::vector<float> p = as<float>(random_vec(n, 9)), m(n, 0.0f), v(n, 0.0f), p2 = p, m2 = m, v2 = v;
  for (int64_t t = 1; t <= 2; ++t) {
    adamw_step(p.data(), g.data(), m.data(), v.data(), n, config, t, true, scale);
    adamw_step(p2.data(), scaled.data(), m2.data(), v2.data(), n, config, t, true);
  }
  CHECK(p == p2);
  CHECK(m == m2);
  CHECK(v == v2);
}

TEST_CASE("AdamW: clip's scale reaches the steps until zero_grads, and the norm is the one before it") {
  const int64_t n = 3000;
  const std::vector<float> g0 = as<float>(random_vec(n, 11)), start = as<float>(random_vec(n, 12));
  double want_norm = 0;
  for (float x : g0) want_norm += double(x) * double(x);
  want_norm = std::sqrt(want_norm);
  auto run = [&](bool clip_first, bool prescale) {
    std::vector<float> p = start, g = g0;
    if (prescale)
      for (float& x : g) x *= float(clip_scale(want_norm, 0.1));
    upcycle::AdamW opt({{"w", {n}, p, g, true}}, {.lr = 1e-2});
    if (clip_first) CHECK(opt.clip(0.1) == doctest::Approx(want_norm).epsilon(1e-12));
    opt.step(1e-2);
    opt.step(1e-2);
    opt.zero_grads();  // the scale goes with the gradients
    std::copy(g0.begin(), g0.end(), g.begin());
    opt.step(1e-2);
    return p;
  };
  const std::vector<float> clipped = run(true, false);
  CHECK(clipped == run(false, true));
  CHECK(clipped != run(false, false));
}
