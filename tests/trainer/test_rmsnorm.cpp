// RMSNorm: forward against transformers' formula, backward against central differences.
#include <doctest/doctest.h>

#include <cmath>

#include "tests/trainer/gradcheck.hpp"
#include "trainer/ops/rmsnorm.hpp"

using namespace upcycle::ops;
using namespace upcycle::test;

TEST_CASE("rmsnorm: forward, float against double, d_in and d_weight against central differences") {
  // C = 70 spans two of the weight gradient's 64-column chunks.
  const int64_t N = 3, C = 70;
  const double eps = 1e-5;
  Vec x = random_vec(N * C, 1, 2.0), weight = random_vec(C, 2), R = random_vec(N * C, 3);
  auto forward = [&]<class T>(std::type_identity<T>) {
    const auto xt = as<T>(x), wt = as<T>(weight);
    std::vector<T> out(N * C), rstd(N);
    rmsnorm_forward(out.data(), rstd.data(), xt.data(), wt.data(), N, C, eps);
    return widen(out);
  };
  const Vec out = forward(kDouble);
  Vec naive(N * C);
  for (int64_t n = 0; n < N; ++n) {
    double ms = 0;
    for (int64_t c = 0; c < C; ++c) ms += x[n * C + c] * x[n * C + c] / C;
    for (int64_t c = 0; c < C; ++c) naive[n * C + c] = weight[c] * x[n * C + c] / std::sqrt(ms + eps);
  }
  CHECK(relative_error(out, naive) < 1e-13);
  CHECK(relative_error(forward(kFloat), out) < 1e-5);

  Vec y(N * C), rstd(N);
  rmsnorm_forward(y.data(), rstd.data(), x.data(), weight.data(), N, C, eps);
  GradBuffer d_in(N * C, 4), d_weight(C, 5);
  rmsnorm_backward(d_in.data(), d_weight.data(), R.data(), x.data(), weight.data(), rstd.data(), N, C);
  auto loss = [&] { return dot(forward(kDouble), R); };
  check_gradient("d_in", d_in.added(), numeric_gradient(x, loss));
  check_gradient("d_weight", d_weight.added(), numeric_gradient(weight, loss));
}
