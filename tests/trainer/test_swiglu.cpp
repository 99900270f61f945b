// SwiGLU: forward against silu(g)·u, backward against central differences.
#include <doctest/doctest.h>

#include <cmath>

#include "tests/trainer/gradcheck.hpp"
#include "trainer/ops/swiglu.hpp"

using namespace upcycle::ops;
using namespace upcycle::test;

TEST_CASE("swiglu: forward, float against double, d_gate and d_up against central differences") {
  const int64_t count = 60;
  Vec gate = random_vec(count, 1, 5.0), up = random_vec(count, 2), R = random_vec(count, 3);
  auto forward = [&]<class T>(std::type_identity<T>) {
    const auto g = as<T>(gate), u = as<T>(up);
    std::vector<T> out(count);
    swiglu_forward(out.data(), g.data(), u.data(), count);
    return widen(out);
  };
  const Vec out = forward(kDouble);
  Vec naive(count);
  for (int64_t i = 0; i < count; ++i) naive[i] = gate[i] / (1 + std::exp(-gate[i])) * up[i];
  CHECK(relative_error(out, naive) < 1e-14);
  CHECK(relative_error(forward(kFloat), out) < 1e-5);

  GradBuffer d_gate(count, 4), d_up(count, 5);
  swiglu_backward(d_gate.data(), d_up.data(), R.data(), gate.data(), up.data(), count);
  auto loss = [&] { return dot(forward(kDouble), R); };
  check_gradient("d_gate", d_gate.added(), numeric_gradient(gate, loss));
  check_gradient("d_up", d_up.added(), numeric_gradient(up, loss));

  // The float backward (vector_math's logistic) against the double one.
  const auto gf = as<float>(gate), uf = as<float>(up), rf = as<float>(R);
  std::vector<float> dgf(count, 0.0f), duf(count, 0.0f);
  Vec dg(count, 0.0), du(count, 0.0);
  swiglu_backward(dgf.data(), duf.data(), rf.data(), gf.data(), uf.data(), count);
  swiglu_backward(dg.data(), du.data(), R.data(), gate.data(), up.data(), count);
  CHECK(relative_error(widen(dgf), dg) < 1e-5);
  CHECK(relative_error(widen(duf), du) < 1e-5);

  // Far into the negative the sigmoid underflows to 0 rather than producing NaN.
  const float big[2] = {-200.0f, 200.0f}, one[2] = {1.0f, 1.0f};
  float y[2];
  swiglu_forward(y, big, one, 2);
  CHECK(y[0] == 0.0f);
  CHECK(y[1] == 200.0f);
}
