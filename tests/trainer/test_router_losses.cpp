// Load-balancing and z-losses: values against transformers' formulas written out naively,
// gradients on the router logits against central differences.
#include <doctest/doctest.h>

#include <cmath>

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
  router_forward(r.idx.data(), r.w.data(), r.probs.data(), logits.data(), N, E, k);
  return r;
}

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
