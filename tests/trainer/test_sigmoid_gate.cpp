// Qwen2-MoE's shared-expert gate: forward against out + σ(logit)·y, backward against central
// differences; far-out logits saturate rather than giving NaN.
#include <doctest/doctest.h>

#include <cmath>

#include "tests/trainer/gradcheck.hpp"
#include "trainer/ops/sigmoid_gate.hpp"

using namespace upcycle::ops;
using namespace upcycle::test;

TEST_CASE("sigmoid_gate: forward adds σ(logit)·y, float against double, backward against central differences") {
  const int64_t N = 5, H = 7;
  Vec y = random_vec(N * H, 1), logit = random_vec(N, 2, 3.0), base = random_vec(N * H, 3), R = random_vec(N * H, 4);
  auto forward = [&]<class T>(std::type_identity<T>) {
    auto out = as<T>(base);
    const auto yt = as<T>(y), lt = as<T>(logit);
    sigmoid_gate_forward(out.data(), yt.data(), lt.data(), N, H);
    return widen(out);
  };
  const Vec out = forward(kDouble);
  Vec naive(N * H);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t h = 0; h < H; ++h) naive[n * H + h] = base[n * H + h] + y[n * H + h] / (1 + std::exp(-logit[n]));
  CHECK(relative_error(out, naive) < 1e-14);
  CHECK(relative_error(forward(kFloat), out) < 1e-6);

  Vec d_y(N * H, 99.0), d_logit(N, 99.0);  // written, not added into
  sigmoid_gate_backward(d_y.data(), d_logit.data(), R.data(), y.data(), logit.data(), N, H);
  auto loss = [&] { return dot(forward(kDouble), R); };
  check_gradient("d_y", d_y, numeric_gradient(y, loss));
  check_gradient("d_logit", d_logit, numeric_gradient(logit, loss));

  // Far out the gate is exactly shut or open, its gradient exactly 0.
  const float far[2] = {-800.0f, 800.0f}, ones[2] = {1.0f, 1.0f};
  float o[2] = {0.0f, 0.0f}, dy[2], dl[2];
  sigmoid_gate_forward(o, ones, far, 2, 1);
  CHECK(o[0] == 0.0f);
  CHECK(o[1] == 1.0f);
  sigmoid_gate_backward(dy, dl, ones, ones, far, 2, 1);
  CHECK(dl[0] == 0.0f);
  CHECK(dl[1] == 0.0f);
}
