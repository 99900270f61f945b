// Load-balancing, z- and UpIT's router BCE losses: values against the formulas written out
// naively, gradients on the router logits against central differences.
#include <doctest/doctest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>

#include "tests/trainer/gradcheck.hpp"
#include "tests/trainer/router_inputs.hpp"
#include "trainer/ops/router.hpp"
#include "trainer/ops/router_losses.hpp"

using namespace upcycle::ops;
using namespace upcycle::test;

namespace {

// transformers' load_balancing_loss_func: one_hot(selected) [N,k,E] averaged over tokens -> [k,E],
// probs averaged over tokens -> [E], coef·E·Σ_{k,E} of their product.
double naive_load_balancing(const Vec& probs, const std::vector<int32_t>& idx, int64_t N, int64_t E, int64_t k,
                            double coef) {
  double total = 0;
  for (int64_t j = 0; j < k; ++j)
    for (int64_t e = 0; e < E; ++e) {
      double tokens_per_expert = 0, prob_per_expert = 0;
      for (int64_t n = 0; n < N; ++n) {
        tokens_per_expert += (idx[n * k + j] == e) / double(N);
        prob_per_expert += probs[n * E + e] / double(N);
      }
      total += tokens_per_expert * prob_per_expert;
    }
  return coef * double(E) * total;
}

struct Routed {
  std::vector<int32_t> idx;
  Vec w, probs;
};
Routed route(const Vec& logits, int64_t N, int64_t E, int64_t k) {
  Routed r{std::vector<int32_t>(N * k), Vec(N * k), Vec(N * E)};
  router_forward(r.idx.data(), r.w.data(), r.probs.data(), logits.data(), nullptr, N, E, k, true);
  return r;
}

// BCE of each expert's sigmoid against its binary label, written as the textbook formula:
// −[y·log p + (1 − y)·log(1 − p)], averaged over counted tokens and experts.
double naive_router_bce(const Vec& logits, const std::vector<int32_t>& targets, int64_t N, int64_t E, double coef) {
  double sum = 0;
  int64_t M = 0;
  for (int64_t n = 0; n < N; ++n) {
    if (targets[n] < 0) continue;
    ++M;
    for (int64_t e = 0; e < E; ++e) {
      const double p = 1.0 / (1.0 + std::exp(-logits[n * E + e]));
      sum -= e == targets[n] ? std::log(p) : std::log(1.0 - p);
    }
  }
  return M ? coef * sum / double(M * E) : 0.0;
}

// Each token's expert, every fourth one -1 (a token of no seed sample).
std::vector<int32_t> bce_targets(int64_t N, int64_t E) {
  std::vector<int32_t> t(static_cast<size_t>(N));
  for (int64_t n = 0; n < N; ++n) t[size_t(n)] = n % 4 == 3 ? -1 : int32_t((n * 7 + n / 5) % E);
  return t;
}

bool same_bits(const Vec& a, const Vec& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(double)) == 0;
}

// Restores the OpenMP thread count a test changed.
struct ThreadCount {
  int saved = omp_get_max_threads();
  ~ThreadCount() { omp_set_num_threads(saved); }
};

}  // namespace

TEST_CASE("load balancing loss: value as transformers computes it, gradient through P") {
  const int64_t N = 7, E = 4, k = 2;
  const double coef = 0.02;
  Vec logits = separated_logits(N, E, 1);
  const Routed r = route(logits, N, E, k);
  const double loss = load_balancing_loss_forward(r.probs.data(), r.idx.data(), N, E, k, coef);
  CHECK(loss == doctest::Approx(naive_load_balancing(r.probs, r.idx, N, E, k, coef)).epsilon(1e-14));
  const auto probs_f = as<float>(r.probs);
  CHECK(load_balancing_loss_forward(probs_f.data(), r.idx.data(), N, E, k, coef) ==
        doctest::Approx(loss).epsilon(1e-5));

  // Perfect balance (uniform probabilities, every expert picked equally often) gives coef·k.
  const Vec uniform(4 * E, 1.0 / E);
  const std::vector<int32_t> balanced = {0, 1, 2, 3, 1, 0, 3, 2};
  CHECK(load_balancing_loss_forward(uniform.data(), balanced.data(), 4, E, k, coef) == doctest::Approx(coef * k));

  // FD through router_forward: probs move with the logits, the selection (f) stays put because
  // the logits are well separated, which is exactly the gradient the op defines.
  const double d_loss = 1.7;
  GradBuffer d_logits(N * E, 2);
  load_balancing_loss_backward(d_logits.data(), r.probs.data(), r.idx.data(), N, E, k, coef, d_loss);
  auto f = [&] {
    const Routed now = route(logits, N, E, k);
    return d_loss * load_balancing_loss_forward(now.probs.data(), now.idx.data(), N, E, k, coef);
  };
  check_gradient("d_logits", d_logits.added(), numeric_gradient(logits, f));
}

TEST_CASE("load balancing loss: two layers collapsed onto opposite experts look balanced together, not per layer") {
  // E = 2, k = 1, 2 tokens per layer. Layer 0 sends both to expert 0 (probs 0.9/0.1), layer 1
  // both to expert 1 (0.1/0.9). Per layer: f = (1, 0), P = (0.9, 0.1), E·Σ f·P = 1.8 each, mean
  // 1.8. Concatenated (transformers' value): f = P = (0.5, 0.5), E·Σ f·P = 1.0, as if balanced.
  const std::vector<double> probs = {0.9, 0.1, 0.9, 0.1, 0.1, 0.9, 0.1, 0.9};
  const std::vector<int32_t> idx = {0, 0, 1, 1};
  const double global = load_balancing_loss_forward(probs.data(), idx.data(), 4, 2, 1, 1.0);
  double per_layer = 0;
  for (int l = 0; l < 2; ++l) per_layer += load_balancing_loss_forward(probs.data() + 4 * l, idx.data() + 2 * l, 2, 2, 1, 0.5);
  CHECK(global == doctest::Approx(1.0).epsilon(1e-15));
  CHECK(per_layer == doctest::Approx(1.8).epsilon(1e-15));
  CHECK(per_layer > global);
}

TEST_CASE("load balancing loss: global-batch counts replace the batch's f, P stays the batch's") {
  const int64_t N = 7, E = 4, k = 2;
  const double coef = 0.02;
  Vec logits = separated_logits(N, E, 3);
  const Routed r = route(logits, N, E, k);
  // The batch's own counts give the plain loss.
  std::vector<int64_t> own(E, 0);
  for (int32_t e : r.idx) ++own[size_t(e)];
  const double plain = load_balancing_loss_forward(r.probs.data(), r.idx.data(), N, E, k, coef);
  CHECK(load_balancing_loss_forward(r.probs.data(), r.idx.data(), N, E, k, coef, own.data(), N) ==
        doctest::Approx(plain).epsilon(1e-14));
  // A step of 20 tokens whose counts differ: coef·E·Σ_e (C_e / 20)·P_e with P the batch's mean.
  const std::vector<int64_t> step = {16, 10, 8, 6};
  double want = 0;
  for (int64_t e = 0; e < E; ++e) {
    double P = 0;
    for (int64_t n = 0; n < N; ++n) P += r.probs[size_t(n * E + e)] / double(N);
    want += double(step[size_t(e)]) / 20.0 * P;
  }
  CHECK(load_balancing_loss_forward(r.probs.data(), r.idx.data(), N, E, k, coef, step.data(), 20) ==
        doctest::Approx(coef * double(E) * want).epsilon(1e-14));
  // Its gradient against central differences (the counts are fixed, so the loss is smooth in the logits).
  const double d_loss = 1.3;
  GradBuffer d_logits(N * E, 2);
  load_balancing_loss_backward(d_logits.data(), r.probs.data(), r.idx.data(), N, E, k, coef, d_loss, step.data(), 20);
  auto f = [&] {
    const Routed now = route(logits, N, E, k);
    return d_loss * load_balancing_loss_forward(now.probs.data(), now.idx.data(), N, E, k, coef, step.data(), 20);
  };
  check_gradient("d_logits", d_logits.added(), numeric_gradient(logits, f));
  CHECK_THROWS_AS(load_balancing_loss_forward(r.probs.data(), r.idx.data(), N, E, k, coef, step.data(), 0),
                  std::invalid_argument);
}

TEST_CASE("router z-loss: value and gradient") {
  const int64_t N = 5, E = 6;
  const double coef = 1e-3, d_loss = 0.8;
  Vec logits = random_vec(N * E, 3, 3.0);
  double naive = 0;
  for (int64_t n = 0; n < N; ++n) {
    double sum = 0;
    for (int64_t e = 0; e < E; ++e) sum += std::exp(logits[n * E + e]);
    naive += std::log(sum) * std::log(sum) / double(N);
  }
  const double loss = router_z_loss_forward(logits.data(), N, E, coef);
  CHECK(loss == doctest::Approx(coef * naive).epsilon(1e-14));
  const auto logits_f = as<float>(logits);
  CHECK(router_z_loss_forward(logits_f.data(), N, E, coef) == doctest::Approx(loss).epsilon(1e-5));

  GradBuffer d_logits(N * E, 4);
  router_z_loss_backward(d_logits.data(), logits.data(), N, E, coef, d_loss);
  check_gradient("d_logits", d_logits.added(),
                 numeric_gradient(logits, [&] { return d_loss * router_z_loss_forward(logits.data(), N, E, coef); }));
}

TEST_CASE("router_losses: UpIT's router BCE, value against the textbook formula and gradient") {
  const int64_t N = 9, E = 4;
  const double coef = 0.5, d_loss = 1.3;
  Vec logits = random_vec(N * E, 5, 3.0);
  const std::vector<int32_t> targets = bce_targets(N, E);
  REQUIRE(std::count(targets.begin(), targets.end(), -1) == 2);
  const double loss = router_bce_loss_forward(logits.data(), targets.data(), N, E, coef);
  CHECK(loss > 0);
  CHECK(loss == doctest::Approx(naive_router_bce(logits, targets, N, E, coef)).epsilon(1e-13));
  const auto logits_f = as<float>(logits);
  CHECK(router_bce_loss_forward(logits_f.data(), targets.data(), N, E, coef) == doctest::Approx(loss).epsilon(1e-5));

  GradBuffer d_logits(N * E, 6);
  router_bce_loss_backward(d_logits.data(), logits.data(), targets.data(), N, E, coef, d_loss);
  const Vec added = d_logits.added();
  check_gradient("d_logits", added, numeric_gradient(logits, [&] {
                   return d_loss * router_bce_loss_forward(logits.data(), targets.data(), N, E, coef);
                 }));
  // Uncounted tokens get nothing at all.
  for (int64_t n = 0; n < N; ++n)
    if (targets[size_t(n)] < 0)
      for (int64_t e = 0; e < E; ++e) CHECK(added[size_t(n * E + e)] == 0.0);

  std::vector<float> d_f(size_t(N * E), 0.0f);
  router_bce_loss_backward(d_f.data(), logits_f.data(), targets.data(), N, E, coef, d_loss);
  check_gradient("float d_logits", widen(d_f), added, 1e-5);
}

TEST_CASE("router_losses: router BCE is stable for logits far beyond exp's range") {
  // y = 1 on a logit of −800 costs 800, y = 0 on +800 costs 800: the mean over E = 2 is 800.
  const std::vector<double> far = {-800, 800};
  const std::vector<int32_t> target = {0};
  CHECK(router_bce_loss_forward(far.data(), target.data(), 1, 2, 1.0) == doctest::Approx(800.0));
  std::vector<double> d = {0, 0};
  router_bce_loss_backward(d.data(), far.data(), target.data(), 1, 2, 1.0, 1.0);
  CHECK(d[0] == doctest::Approx(-0.5));
  CHECK(d[1] == doctest::Approx(0.5));
  // Right on: the loss vanishes without becoming NaN.
  const std::vector<double> right = {800, -800};
  CHECK(router_bce_loss_forward(right.data(), target.data(), 1, 2, 1.0) == doctest::Approx(0.0));
  const std::vector<float> right_f = {80, -80};
  const double loss_f = router_bce_loss_forward(right_f.data(), target.data(), 1, 2, 1.0);
  CHECK(std::isfinite(loss_f));
  CHECK(loss_f < 1e-30);
}

TEST_CASE("router_losses: router BCE without counted tokens is 0 and adds nothing, bad targets throw") {
  const int64_t N = 5, E = 3;
  const Vec logits = random_vec(N * E, 7, 2.0);
  const std::vector<int32_t> none(size_t(N), -1);
  CHECK(router_bce_loss_forward(logits.data(), none.data(), N, E, 0.5) == 0.0);
  GradBuffer d(N * E, 8);
  router_bce_loss_backward(d.data(), logits.data(), none.data(), N, E, 0.5, 1.0);
  CHECK(same_bits(d.value, d.start));
  CHECK(router_bce_loss_forward(logits.data(), none.data(), 0, E, 0.5) == 0.0);

  for (int32_t bad : {-2, int32_t(E), 100}) {
    CAPTURE(bad);
    std::vector<int32_t> t = {0, 1, bad, 2, -1};
    CHECK_THROWS_AS(router_bce_loss_forward(logits.data(), t.data(), N, E, 0.5), std::invalid_argument);
    CHECK_THROWS_AS(router_bce_loss_backward(d.data(), logits.data(), t.data(), N, E, 0.5, 1.0),
                    std::invalid_argument);
  }
  CHECK(same_bits(d.value, d.start));  // a throwing backward wrote nothing
}

TEST_CASE("router_losses: router BCE gives the same bits with 1 and 2 threads") {
  // Enough rows for several of ordered_sum's blocks, so the threads split the sum.
  const int64_t N = 5000, E = 8;
  const Vec logits = random_vec(N * E, 9, 4.0);
  const std::vector<int32_t> targets = bce_targets(N, E);
  ThreadCount restore;
  Vec loss(2), grad[2];
  for (int threads : {1, 2}) {
    omp_set_num_threads(threads);
    loss[size_t(threads - 1)] = router_bce_loss_forward(logits.data(), targets.data(), N, E, 0.5);
    grad[threads - 1].assign(size_t(N * E), 0.25);
    router_bce_loss_backward(grad[threads - 1].data(), logits.data(), targets.data(), N, E, 0.5, 0.7);
  }
  CHECK(same_bits({loss[0]}, {loss[1]}));
  CHECK(same_bits(grad[0], grad[1]));
}
