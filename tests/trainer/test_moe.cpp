// MoE expert computation: the permutation, the forward against a per-token naive sum, every
// gradient against central differences, identical experts equal to the dense FFN, and the whole
// routed block (router, experts, auxiliary losses) differentiated end to end.
#include <doctest/doctest.h>

#include <cmath>
#include <stdexcept>

#include "tests/trainer/gradcheck.hpp"
#include "tests/trainer/router_inputs.hpp"
#include "trainer/ops/matmul.hpp"
#include "trainer/ops/moe.hpp"
#include "trainer/ops/router.hpp"
#include "trainer/ops/router_losses.hpp"
#include "trainer/ops/swiglu.hpp"

using namespace upcycle::ops;
using namespace upcycle::test;

namespace {

// E experts' weights as separate tensors, the way checkpoints hold them.
struct Experts {
  Experts(int64_t E, int64_t H, int64_t I, uint64_t seed) {
    for (int64_t e = 0; e < E; ++e) {
      gate.push_back(random_vec(I * H, seed + 3 * e));
      up.push_back(random_vec(I * H, seed + 3 * e + 1));
      down.push_back(random_vec(H * I, seed + 3 * e + 2));
    }
  }
  std::vector<Vec> gate, up, down;
};

// Pointer arrays over Experts (or over gradient buffers), in precision T.
template <class T>
struct ExpertPointers {
  ExpertPointers(const std::vector<Vec>& g, const std::vector<Vec>& u, const std::vector<Vec>& d) {
    for (size_t e = 0; e < g.size(); ++e) {
      store.push_back(as<T>(g[e]));
      store.push_back(as<T>(u[e]));
      store.push_back(as<T>(d[e]));
    }
    for (size_t e = 0; e < g.size(); ++e) {
      gate.push_back(store[3 * e].data());
      up.push_back(store[3 * e + 1].data());
      down.push_back(store[3 * e + 2].data());
    }
  }
  ExpertWeights<T> weights() const { return {gate.data(), up.data(), down.data()}; }
  std::vector<std::vector<T>> store;
  std::vector<const T*> gate, up, down;
};

// FFN_e(x) for one token, by plain loops.
Vec naive_ffn(const Experts& ex, int64_t e, const double* x, int64_t H, int64_t I) {
  Vec act(I), y(H, 0.0);
  for (int64_t i = 0; i < I; ++i) {
    double g = 0, u = 0;
    for (int64_t h = 0; h < H; ++h) {
      g += ex.gate[e][i * H + h] * x[h];
      u += ex.up[e][i * H + h] * x[h];
    }
    act[i] = g / (1 + std::exp(-g)) * u;
  }
  for (int64_t h = 0; h < H; ++h)
    for (int64_t i = 0; i < I; ++i) y[h] += ex.down[e][h * I + i] * act[i];
  return y;
}

template <class T>
Vec run_moe(const Experts& ex, const Vec& x, const std::vector<int32_t>& idx, const Vec& w, const MoeShape& shape) {
  const ExpertPointers<T> p(ex.gate, ex.up, ex.down);
  const auto xt = as<T>(x), wt = as<T>(w);
  std::vector<T> out(x.size());
  MoeSaved<T> saved;
  moe_forward(out.data(), saved, xt.data(), idx.data(), wt.data(), p.weights(), shape);
  return widen(out);
}

// Per-token weights that sum to 1.
Vec normalised_weights(int64_t N, int64_t k, uint64_t seed) {
  Vec w = random_vec(N * k, seed);
  for (int64_t n = 0; n < N; ++n) {
    double sum = 0;
    for (int64_t j = 0; j < k; ++j) sum += (w[n * k + j] = std::abs(w[n * k + j]) + 0.1);
    for (int64_t j = 0; j < k; ++j) w[n * k + j] /= sum;
  }
  return w;
}

}  // namespace

TEST_CASE("moe: token-slot permutation groups by expert, stably") {
  // 3 tokens, top-2, 4 experts; expert 3 gets nothing.
  const std::vector<int32_t> idx = {2, 0, 0, 1, 2, 1};
  std::vector<int32_t> order(6), row_of(6);
  std::vector<int64_t> offsets(5);
  group_by_expert(order.data(), row_of.data(), offsets.data(), idx.data(), 3, 2, 4);
  CHECK(offsets == std::vector<int64_t>{0, 2, 4, 6, 6});
  CHECK(order == std::vector<int32_t>{1, 2, 3, 5, 0, 4});
  for (int32_t s = 0; s < 6; ++s) CHECK(order[row_of[s]] == s);
  const std::vector<int32_t> bad = {0, 4};
  CHECK_THROWS_AS(group_by_expert(order.data(), row_of.data(), offsets.data(), bad.data(), 1, 2, 4),
                  std::invalid_argument);
}

TEST_CASE("moe: forward against the naive sum, float against double, every gradient by central differences") {
  const MoeShape shape{.tokens = 7, .hidden = 6, .inter = 5, .experts = 4, .top_k = 2};
  const int64_t N = shape.tokens, H = shape.hidden, I = shape.inter, E = shape.experts, k = shape.top_k;
  // Expert 3 is never chosen (its group is empty); expert 0 serves most tokens.
  const std::vector<int32_t> idx = {0, 1, 2, 0, 0, 2, 1, 0, 0, 2, 2, 1, 0, 1};
  Experts ex(E, H, I, 100);
  Vec x = random_vec(N * H, 1), w = random_vec(N * k, 2), R = random_vec(N * H, 3);

  const Vec out = run_moe<double>(ex, x, idx, w, shape);
  Vec naive(N * H, 0.0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t j = 0; j < k; ++j) {
      const Vec y = naive_ffn(ex, idx[n * k + j], x.data() + n * H, H, I);
      for (int64_t h = 0; h < H; ++h) naive[n * H + h] += w[n * k + j] * y[h];
    }
  CHECK(relative_error(out, naive) < 1e-13);
  CHECK(relative_error(run_moe<float>(ex, x, idx, w, shape), out) < 1e-5);

  std::vector<GradBuffer> d_gate, d_up, d_down;
  for (int64_t e = 0; e < E; ++e) {
    d_gate.emplace_back(I * H, 10 + e);
    d_up.emplace_back(I * H, 20 + e);
    d_down.emplace_back(H * I, 30 + e);
  }
  std::vector<double*> dg, du, dd;
  for (int64_t e = 0; e < E; ++e) {
    dg.push_back(d_gate[e].data());
    du.push_back(d_up[e].data());
    dd.push_back(d_down[e].data());
  }
  GradBuffer d_x(N * H, 4), d_w(N * k, 5);
  {
    const ExpertPointers<double> p(ex.gate, ex.up, ex.down);
    MoeSaved<double> saved;
    Vec y(N * H);
    moe_forward(y.data(), saved, x.data(), idx.data(), w.data(), p.weights(), shape);
    moe_backward(d_x.data(), d_w.data(), ExpertGrads<double>{dg.data(), du.data(), dd.data()}, R.data(), w.data(),
                 p.weights(), saved, shape);
  }
  auto loss = [&] { return dot(run_moe<double>(ex, x, idx, w, shape), R); };
  check_gradient("d_x", d_x.added(), numeric_gradient(x, loss));
  check_gradient("d_w", d_w.added(), numeric_gradient(w, loss));
  for (int64_t e = 0; e < 3; ++e) {
    check_gradient("d_gate", d_gate[e].added(), numeric_gradient(ex.gate[e], loss));
    check_gradient("d_up", d_up[e].added(), numeric_gradient(ex.up[e], loss));
    check_gradient("d_down", d_down[e].added(), numeric_gradient(ex.down[e], loss));
  }
  // The unused expert's gradients are untouched.
  CHECK(d_gate[3].added() == Vec(I * H, 0.0));
  CHECK(d_down[3].added() == Vec(H * I, 0.0));
}

TEST_CASE("moe: experts that are all the same FFN equal the dense SwiGLU FFN") {
  const MoeShape shape{.tokens = 9, .hidden = 8, .inter = 12, .experts = 4, .top_k = 2};
  const int64_t N = shape.tokens, H = shape.hidden, I = shape.inter, E = shape.experts, k = shape.top_k;
  const Experts one(1, H, I, 7);
  Experts ex = one;
  ex.gate.assign(E, one.gate[0]);
  ex.up.assign(E, one.up[0]);
  ex.down.assign(E, one.down[0]);
  const Vec x = random_vec(N * H, 1);
  const Vec logits = separated_logits(N, E, 2);
  std::vector<int32_t> idx(N * k);
  Vec w(N * k), probs(N * E);
  router_forward(idx.data(), w.data(), probs.data(), logits.data(), nullptr, N, E, k, true);

  Vec gate(N * I), up(N * I), act(N * I), dense(N * H);
  matmul_forward(gate.data(), x.data(), ex.gate[0].data(), static_cast<const double*>(nullptr), N, H, I);
  matmul_forward(up.data(), x.data(), ex.up[0].data(), static_cast<const double*>(nullptr), N, H, I);
  swiglu_forward(act.data(), gate.data(), up.data(), N * I);
  matmul_forward(dense.data(), act.data(), ex.down[0].data(), static_cast<const double*>(nullptr), N, I, H);

  CHECK(relative_error(run_moe<double>(ex, x, idx, w, shape), dense) < 1e-14);
  // Any weights that sum to 1 per token, not only the router's.
  CHECK(relative_error(run_moe<double>(ex, x, idx, normalised_weights(N, k, 3), shape), dense) < 1e-14);
}

TEST_CASE("moe: router, experts and auxiliary losses differentiated end to end through the logits") {
  const MoeShape shape{.tokens = 6, .hidden = 5, .inter = 4, .experts = 4, .top_k = 2};
  const int64_t N = shape.tokens, H = shape.hidden, E = shape.experts, k = shape.top_k;
  const double lb_coef = 0.05, z_coef = 0.01;
  const Experts ex(E, H, shape.inter, 50);
  const ExpertPointers<double> p(ex.gate, ex.up, ex.down);
  const Vec x = random_vec(N * H, 1), R = random_vec(N * H, 2);
  Vec logits = separated_logits(N, E, 3);

  // loss = Σ moe(x) ⊙ R + load balancing + z-loss, all as functions of the router logits.
  std::vector<int32_t> idx(N * k);
  Vec w(N * k), probs(N * E), out(N * H);
  MoeSaved<double> saved;
  auto loss = [&] {
    router_forward(idx.data(), w.data(), probs.data(), logits.data(), nullptr, N, E, k, true);
    moe_forward(out.data(), saved, x.data(), idx.data(), w.data(), p.weights(), shape);
    return dot(out, R) + load_balancing_loss_forward(probs.data(), idx.data(), N, E, k, lb_coef) +
           router_z_loss_forward(logits.data(), N, E, z_coef);
  };
  loss();
  Vec d_w(N * k, 0.0);
  GradBuffer d_logits(N * E, 4);
  moe_backward(static_cast<double*>(nullptr), d_w.data(), ExpertGrads<double>{}, R.data(), w.data(), p.weights(), saved,
               shape);
  router_backward(d_logits.data(), d_w.data(), w.data(), probs.data(), idx.data(), N, E, k, true);
  load_balancing_loss_backward(d_logits.data(), probs.data(), idx.data(), N, E, k, lb_coef, 1.0);
  router_z_loss_backward(d_logits.data(), logits.data(), N, E, z_coef, 1.0);
  check_gradient("d_logits", d_logits.added(), numeric_gradient(logits, loss));
}
