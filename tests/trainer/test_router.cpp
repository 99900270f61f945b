// Top-k router: softmax, selection and renormalisation against the definitions; backward through
// the (renormalised or unnormalised) weights and the softmax against central differences.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "tests/trainer/gradcheck.hpp"
#include "tests/trainer/router_inputs.hpp"
#include "trainer/ops/router.hpp"
#include "trainer/selection_bias.hpp"

using namespace upcycle::ops;
using namespace upcycle::test;

TEST_CASE("router: softmax, top-k and renormalised weights, float against double") {
  const int64_t N = 6, E = 5, k = 2;
  const Vec logits = separated_logits(N, E, 1);
  std::vector<int32_t> idx(N * k);
  Vec w(N * k), probs(N * E);
  router_forward(idx.data(), w.data(), probs.data(), logits.data(), nullptr, N, E, k, true);
  for (int64_t n = 0; n < N; ++n) {
    const double* x = logits.data() + n * E;
    double sum = 0;
    for (int64_t e = 0; e < E; ++e) sum += std::exp(x[e]);
    for (int64_t e = 0; e < E; ++e) CHECK(std::abs(probs[n * E + e] - std::exp(x[e]) / sum) < 1e-15);
    std::vector<int32_t> by_prob(E);
    std::iota(by_prob.begin(), by_prob.end(), 0);
    std::sort(by_prob.begin(), by_prob.end(), [&](int32_t a, int32_t b) { return x[a] > x[b]; });
    double kept = 0;
    for (int64_t j = 0; j < k; ++j) {
      CHECK(idx[n * k + j] == by_prob[j]);
      kept += std::exp(x[by_prob[j]]) / sum;
    }
    for (int64_t j = 0; j < k; ++j) CHECK(std::abs(w[n * k + j] - std::exp(x[by_prob[j]]) / sum / kept) < 1e-15);
  }

  const auto logits_f = as<float>(logits);
  std::vector<int32_t> idx_f(N * k);
  std::vector<float> w_f(N * k), probs_f(N * E);
  router_forward(idx_f.data(), w_f.data(), probs_f.data(), logits_f.data(), nullptr, N, E, k, true);
  CHECK(idx_f == idx);
  CHECK(relative_error(widen(w_f), w) < 1e-5);
  CHECK(relative_error(widen(probs_f), probs) < 1e-5);

  // Ties go to the lower index.
  const double tied[4] = {1, 3, 3, 0};
  int32_t tied_idx[2];
  double tied_w[2], tied_p[4];
  router_forward(tied_idx, tied_w, tied_p, tied, nullptr, 1, 4, 2, true);
  CHECK(tied_idx[0] == 1);
  CHECK(tied_idx[1] == 2);
}

TEST_CASE("router: unnormalised, the weights are the chosen experts' softmax probabilities as they are") {
  const int64_t N = 6, E = 5, k = 2;
  const Vec logits = separated_logits(N, E, 1);
  std::vector<int32_t> idx(N * k), idx_renormalised(N * k);
  Vec w(N * k), probs(N * E), w_renormalised(N * k);
  router_forward(idx.data(), w.data(), probs.data(), logits.data(), nullptr, N, E, k, false);
  router_forward(idx_renormalised.data(), w_renormalised.data(), probs.data(), logits.data(), nullptr, N, E, k, true);
  CHECK(idx == idx_renormalised);
  for (int64_t n = 0; n < N; ++n) {
    double kept = 0;
    for (int64_t j = 0; j < k; ++j) {
      CHECK(w[n * k + j] == probs[n * E + idx[n * k + j]]);
      kept += w[n * k + j];
    }
    CHECK(kept < 1);  // the others' share is lost, as Qwen2-MoE computes it
    for (int64_t j = 0; j < k; ++j) CHECK(std::abs(w_renormalised[n * k + j] - w[n * k + j] / kept) < 1e-15);
  }
}

TEST_CASE("router: backward through the top-k weights, renormalised or not, against central differences") {
  const int64_t N = 6, E = 5;
  for (bool renormalise : {true, false}) {
    for (int64_t k : {1, 2, 3}) {
      CAPTURE(renormalise);
      CAPTURE(k);
      Vec logits = separated_logits(N, E, 2 + uint64_t(k));
      const Vec R = random_vec(N * k, 10);
      std::vector<int32_t> idx(N * k);
      Vec w(N * k), probs(N * E);
      auto loss = [&] {
        router_forward(idx.data(), w.data(), probs.data(), logits.data(), nullptr, N, E, k, renormalise);
        return dot(w, R);
      };
      loss();
      GradBuffer d_logits(N * E, 11);
      router_backward(d_logits.data(), R.data(), w.data(), probs.data(), idx.data(), N, E, k, renormalise);
      const Vec numeric = numeric_gradient(logits, loss);
      if (k == 1 && renormalise) {
        // One expert: its weight is always 1, so no logit has any gradient.
        for (double g : numeric) CHECK(std::abs(g) < 1e-9);
        CHECK(d_logits.added() == Vec(N * E, 0.0));
      } else {
        check_gradient("d_logits", d_logits.added(), numeric);
      }
    }
  }
}

TEST_CASE("router: a selection bias moves the choice, the weights stay the unbiased probabilities renormalised") {
  const int64_t E = 4, k = 2;
  const std::vector<float> logits = {2.f, 1.f, 0.f, -1.f};  // expert 0 then 1 without a bias
  const std::vector<float> bias = {0.f, 0.f, 0.f, 1.f};     // expert 3's probability + 1 beats everything
  std::vector<int32_t> idx(k);
  std::vector<float> w(k), probs(E);
  router_forward(idx.data(), w.data(), probs.data(), logits.data(), bias.data(), 1, E, k, true);
  CHECK(idx == std::vector<int32_t>{3, 0});
  CHECK(w[0] == doctest::Approx(probs[3] / (probs[3] + probs[0])));
  CHECK(w[1] == doctest::Approx(probs[0] / (probs[3] + probs[0])));
  router_forward(idx.data(), w.data(), probs.data(), logits.data(), nullptr, 1, E, k, true);
  CHECK(idx == std::vector<int32_t>{0, 1});
}

TEST_CASE("router: bias balancing brings a skewed router within 10% of even load in a bounded number of steps") {
  // 512 tokens whose router favours expert 0 strongly (its logit +2), then 1, with noise.
  const int64_t N = 512, E = 8, k = 2;
  std::vector<float> logits(size_t(N * E));
  uint64_t state = 7;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t e = 0; e < E; ++e) {
      state = state * 6364136223846793005ull + 1442695040888963407ull;
      const float noise = float(int64_t(state >> 40) % 1000) / 1000.f;
      logits[size_t(n * E + e)] = (e == 0 ? 2.f : e == 1 ? 1.f : 0.f) + noise;
    }
  upcycle::SelectionBias bias(1, std::vector<float>(E, 0.f));
  std::vector<int32_t> idx(size_t(N * k));
  std::vector<float> w(size_t(N * k)), probs(size_t(N * E));
  auto loads = [&] {
    router_forward(idx.data(), w.data(), probs.data(), logits.data(), bias[0].data(), N, E, k, true);
    std::vector<std::vector<int64_t>> counts(1, std::vector<int64_t>(E, 0));
    for (int32_t e : idx) ++counts[0][size_t(e)];
    return counts;
  };
  const double even = double(N * k) / double(E);
  auto worst = [&](const std::vector<std::vector<int64_t>>& c) {
    double off = 0;
    for (int64_t x : c[0]) off = std::max(off, std::fabs(double(x) - even) / even);
    return off;
  };
  CHECK(worst(loads()) > 1.0);  // skewed to start: expert 0 gets over twice its share
  int steps = 0;
  for (; steps < 400 && worst(loads()) > 0.1; ++steps) upcycle::nudge_selection_bias(bias, loads(), 1e-3);
  CHECK_MESSAGE(steps < 400, "still off by " << worst(loads()));
  CHECK(worst(loads()) <= 0.1);
}
