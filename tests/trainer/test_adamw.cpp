// AdamW against torch.optim.AdamW's update written out; global norm and clipping.
#include <doctest/doctest.h>

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <span>
#include <stdexcept>
#include <vector>

#include "core/dtype.hpp"
#include "core/error.hpp"
#include "formats/safetensors.hpp"
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

TEST_CASE("adamw with bf16 moments: v decays where rounding to nearest would hold it, unbiased over elements") {
  // One gradient, then zeros: v should fall as β2^t. Each step's change (0.001 of v) is under
  // half a bf16 step, so rounding to nearest would never move it; stochastic rounding does in
  // expectation. 4096 elements of one value: their mean is the expectation to about 0.3%.
  const AdamWConfig config{.lr = 1e-3, .beta1 = 0.9, .beta2 = 0.999};
  const int64_t n = 4096, steps = 700;
  std::vector<float> p(n, 1.0f), g(n, 1.0f), zero(n, 0.0f);
  std::vector<uint16_t> m(n, 0), v(n, 0);
  adamw_step_bf16_moments(p.data(), g.data(), m.data(), v.data(), n, config, 1, false, 1.0f, nullptr, 1);
  for (int64_t t = 2; t <= steps; ++t)
    adamw_step_bf16_moments(p.data(), zero.data(), m.data(), v.data(), n, config, t, false, 1.0f, nullptr,
                            uint64_t(t));
  double mean = 0;
  for (uint16_t x : v) mean += upcycle::bf16_to_f32(x) / double(n);
  const double want = 0.001 * std::pow(0.999, double(steps - 1));  // 0.497 of the first step's v
  CHECK(std::abs(mean / want - 1) < 0.01);
}

TEST_CASE("adamw with bf16 moments: close to f32 moments over many steps, the same bits for any thread count") {
  const AdamWConfig config{.lr = 1e-2, .weight_decay = 0.1};
  const int64_t n = 10000;  // blocks of 4096 and a partial one
  const std::vector<float> start = as<float>(random_vec(n, 21));
  std::vector<float> p = start, m(n, 0.0f), v(n, 0.0f);
  auto run_bf16 = [&](int threads) {
    std::vector<float> q = start;
    std::vector<uint16_t> m16(n, 0), v16(n, 0), copy(n, 0);
    const int before = omp_get_max_threads();
    omp_set_num_threads(threads);
    for (int64_t t = 1; t <= 50; ++t) {
      const std::vector<float> g = as<float>(random_vec(n, 100 + uint64_t(t)));
      adamw_step_bf16_moments(q.data(), g.data(), m16.data(), v16.data(), n, config, t, true, 1.0f, copy.data(),
                              uint64_t(t));
    }
    omp_set_num_threads(before);
    for (int64_t i = 0; i < n; ++i) REQUIRE(copy[size_t(i)] == upcycle::f32_to_bf16(q[size_t(i)]));
    return q;
  };
  for (int64_t t = 1; t <= 50; ++t) {
    const std::vector<float> g = as<float>(random_vec(n, 100 + uint64_t(t)));
    adamw_step(p.data(), g.data(), m.data(), v.data(), n, config, t, true);
  }
  const std::vector<float> q = run_bf16(1);
  CHECK(q == run_bf16(2));
  // The run moved each value by about 50 steps of lr: the moments' rounding changes that by a
  // few parts in a thousand (a wrong update would differ by the whole movement).
  double moved = 0, apart = 0;
  for (int64_t i = 0; i < n; ++i) {
    moved = std::max(moved, double(std::abs(p[size_t(i)] - start[size_t(i)])));
    apart = std::max(apart, double(std::abs(q[size_t(i)] - p[size_t(i)])));
  }
  CHECK(moved > 0.1);
  CHECK(apart < 0.02 * moved);
}

TEST_CASE("AdamW: bf16 moments save and load as bf16, resume the same bits, and refuse the other dtype") {
  const int64_t n = 3000;
  const std::vector<float> g = as<float>(random_vec(n, 31)), start = as<float>(random_vec(n, 32));
  const upcycle::ops::AdamWConfig bf16{.lr = 1e-2, .bf16_moments = true}, f32{.lr = 1e-2};
  const auto file = std::filesystem::temp_directory_path() / "upcycle_test_bf16_moments.safetensors";
  std::vector<float> p = start, grad = g;
  upcycle::AdamW straight({{"w", {n}, p, grad, true}}, bf16);
  for (int i = 0; i < 3; ++i) straight.step(1e-2);
  std::vector<float> q = start, grad2 = g;
  {
    upcycle::AdamW first({{"w", {n}, q, grad2, true}}, bf16);
    first.step(1e-2);
    first.save(file);
  }
  upcycle::AdamW resumed({{"w", {n}, q, grad2, true}}, bf16);
  resumed.load(file);
  CHECK(resumed.steps() == 1);
  resumed.step(1e-2);
  resumed.step(1e-2);
  CHECK(p == q);
  CHECK(upcycle::SafetensorsFile::open(file).entries()[0].info.dtype == upcycle::DType::BF16);
  upcycle::AdamW other({{"w", {n}, q, grad2, true}}, f32);
  CHECK_THROWS_WITH_AS(other.load(file), doctest::Contains("resume with --bf16-moments"), upcycle::InputError);
  std::filesystem::remove(file);
}
