// Fused softmax cross-entropy: loss against a naive log-softmax, gradient against central
// differences, ignored targets, in-place backward, a real-size vocabulary.
#include <doctest/doctest.h>

#include <cmath>
#include <stdexcept>

#include "tests/trainer/gradcheck.hpp"
#include "trainer/ops/cross_entropy.hpp"

using namespace upcycle::ops;
using namespace upcycle::test;

namespace {

// mean over counted tokens of −log_softmax(logits[n])[target]
double naive_cross_entropy(const Vec& logits, const std::vector<int32_t>& targets, int64_t V) {
  double sum = 0;
  int count = 0;
  for (size_t n = 0; n < targets.size(); ++n) {
    if (targets[n] == kIgnoreIndex) continue;
    const double* x = logits.data() + n * size_t(V);
    double z = 0;
    for (int64_t v = 0; v < V; ++v) z += std::exp(x[v]);
    sum -= x[targets[n]] - std::log(z);
    ++count;
  }
  return sum / count;
}

}  // namespace

TEST_CASE("cross entropy: loss, float against double, gradient, ignored targets") {
  const int64_t N = 6, V = 11;
  const std::vector<int32_t> targets = {3, kIgnoreIndex, 0, 10, 7, 3};
  Vec logits = random_vec(N * V, 1, 4.0);
  auto forward = [&]<class T>(std::type_identity<T>) {
    const auto x = as<T>(logits);
    std::vector<T> lse(N);
    return cross_entropy_forward(lse.data(), x.data(), targets.data(), N, V);
  };
  const CrossEntropyLoss loss = forward(kDouble);
  CHECK(loss.count == 5);
  CHECK(loss.mean == doctest::Approx(naive_cross_entropy(logits, targets, V)).epsilon(1e-14));
  CHECK(forward(kFloat).mean == doctest::Approx(loss.mean).epsilon(1e-5));

  // Backward writes (not adds) d_loss·(softmax − onehot)/count; FD of d_loss·mean loss.
  const double d_loss = 0.7;
  Vec lse(N), d_logits(N * V, 123.0);
  cross_entropy_forward(lse.data(), logits.data(), targets.data(), N, V);
  cross_entropy_backward(d_logits.data(), logits.data(), lse.data(), targets.data(), N, V, loss.count, d_loss);
  for (int64_t v = 0; v < V; ++v) CHECK(d_logits[1 * V + v] == 0.0);  // the ignored row
  check_gradient("d_logits", d_logits, numeric_gradient(logits, [&] { return d_loss * forward(kDouble).mean; }));

  // In place: the logits buffer becomes the gradient.
  Vec in_place = logits;
  cross_entropy_backward(in_place.data(), in_place.data(), lse.data(), targets.data(), N, V, loss.count, d_loss);
  CHECK(in_place == d_logits);

  const std::vector<int32_t> none(N, kIgnoreIndex);
  const CrossEntropyLoss empty = cross_entropy_forward(lse.data(), logits.data(), none.data(), N, V);
  CHECK(empty.count == 0);
  CHECK(empty.mean == 0.0);
  const std::vector<int32_t> bad = {0, 0, 0, 0, 0, 11};
  CHECK_THROWS_AS(cross_entropy_forward(lse.data(), logits.data(), bad.data(), N, V), std::invalid_argument);
}

TEST_CASE("cross entropy: a SmolLM2-size vocabulary (49152) in float against a double reference") {
  const int64_t N = 3, V = 49152;
  const std::vector<int32_t> targets = {17, 49151, 30000};
  const Vec logits = random_vec(N * V, 7, 8.0);
  const auto logits_f = as<float>(logits);
  std::vector<float> lse(N);
  const CrossEntropyLoss loss = cross_entropy_forward(lse.data(), logits_f.data(), targets.data(), N, V);
  CHECK(loss.mean == doctest::Approx(naive_cross_entropy(logits, targets, V)).epsilon(1e-5));
  std::vector<float> grad(N * V);
  cross_entropy_backward(grad.data(), logits_f.data(), lse.data(), targets.data(), N, V, loss.count, 1.0);
  for (int64_t n = 0; n < N; ++n) {  // each row of softmax − onehot sums to 0
    double row = 0;
    for (int64_t v = 0; v < V; ++v) row += grad[n * V + v];
    CHECK(std::abs(row) < 1e-6);
  }
}
