// Linear layer: forward against the naive triple loop, backward against central differences.
#include <doctest/doctest.h>

#include "tests/trainer/gradcheck.hpp"
#include "trainer/ops/matmul.hpp"

using namespace upcycle::ops;
using namespace upcycle::test;

TEST_CASE("matmul: forward, float against double, and every gradient against central differences") {
  // N + I + O >= 20, so Eigen hands these products to OpenBLAS rather than its small-size path.
  const int64_t N = 8, I = 7, O = 6;
  Vec x = random_vec(N * I, 1), W = random_vec(O * I, 2), bias = random_vec(O, 3), R = random_vec(N * O, 4);
  auto forward = [&]<class T>(std::type_identity<T>) {
    const auto xt = as<T>(x), Wt = as<T>(W), bt = as<T>(bias);
    std::vector<T> out(N * O);
    matmul_forward(out.data(), xt.data(), Wt.data(), bt.data(), N, I, O);
    return widen(out);
  };
  const Vec out = forward(kDouble);
  Vec naive(N * O);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < O; ++o) {
      naive[n * O + o] = bias[o];
      for (int64_t i = 0; i < I; ++i) naive[n * O + o] += x[n * I + i] * W[o * I + i];
    }
  CHECK(relative_error(out, naive) < 1e-13);
  CHECK(relative_error(forward(kFloat), out) < 1e-5);

  Vec no_bias(N * O);
  matmul_forward(no_bias.data(), x.data(), W.data(), static_cast<const double*>(nullptr), N, I, O);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < O; ++o) naive[n * O + o] -= bias[o];
  CHECK(relative_error(no_bias, naive) < 1e-13);

  GradBuffer d_in(N * I, 5), d_W(O * I, 6), d_bias(O, 7);
  matmul_backward(d_in.data(), d_W.data(), d_bias.data(), R.data(), x.data(), W.data(), N, I, O);
  auto loss = [&] { return dot(forward(kDouble), R); };
  check_gradient("d_in", d_in.added(), numeric_gradient(x, loss));
  check_gradient("d_W", d_W.added(), numeric_gradient(W, loss));
  check_gradient("d_bias", d_bias.added(), numeric_gradient(bias, loss));

  // Gradients not wanted are skipped.
  GradBuffer only_W(O * I, 8);
  matmul_backward(static_cast<double*>(nullptr), only_W.data(), static_cast<double*>(nullptr), R.data(), x.data(),
                  W.data(), N, I, O);
  CHECK(relative_error(only_W.added(), d_W.added()) < 1e-13);
}
