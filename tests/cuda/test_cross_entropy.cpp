// Fused softmax cross-entropy on the GPU, float and bf16 logits, against the CPU op run in double
// on the same (for bf16, rounded) inputs: loss, count, lse, gradient; ignored and out-of-range
// targets; in-place backward; vocabularies up to 262144; reproducible bits.
#include <doctest/doctest.h>

#include <cstring>
#include <stdexcept>
#include <type_traits>

#include "cuda/ops/cross_entropy.hpp"
#include "cuda_check.hpp"
#include "trainer/ops/cross_entropy.hpp"

namespace upcycle::test {

namespace {

using Doubles = std::vector<double>;
using ops::kIgnoreIndex;

// Targets [N] in [0, V), the first and last ids included, every fifth row ignored.
std::vector<int32_t> targets_for(int64_t N, int64_t V, uint64_t seed) {
  std::vector<int32_t> t = uniform_ints(size_t(N), seed, 0, int32_t(V));
  t[0] = 0;
  t[1] = int32_t(V - 1);
  for (int64_t n = 2; n < N; n += 5) t[size_t(n)] = kIgnoreIndex;
  return t;
}

// The CPU op in double: lse, loss, and the gradient for d_loss.
struct Reference {
  Doubles lse, grad;
  ops::CrossEntropyLoss loss;
};
Reference cpu_reference(const std::vector<float>& logits, const std::vector<int32_t>& targets, int64_t N, int64_t V,
                        double d_loss) {
  const Doubles x = widen(logits);
  Reference r{Doubles(size_t(N)), Doubles(size_t(N * V)), {}};
  r.loss = ops::cross_entropy_forward(r.lse.data(), x.data(), targets.data(), N, V);
  ops::cross_entropy_backward(r.grad.data(), x.data(), r.lse.data(), targets.data(), N, V, r.loss.count, d_loss);
  return r;
}

template <class T>
std::vector<T> raw(const cuda::DeviceBuffer<T>& d) {
  return d.download();
}
// Forward and backward on the GPU against the CPU. lse and the loss are fp32 arithmetic on
// exactly the CPU's inputs whatever T, so they are held to the float tolerance; the gradient is
// stored as T. The non-target entries (the softmax alone) are checked once more on their own,
// since the −scale at each target sets the RMS floor of the whole gradient far above them.
template <class T>
void check_against_cpu(int64_t N, int64_t V, const std::vector<float>& logits, const std::vector<int32_t>& targets) {
  const double d_loss = 0.7;
  const Reference want = cpu_reference(logits, targets, N, V, d_loss);
  const auto x = to_device<T>(logits);
  const auto t = to_device_ints(targets);
  auto lse = poisoned<float>(size_t(N));
  const ops::CrossEntropyLoss loss = cuda::cross_entropy_forward(lse.data(), x.data(), t.data(), N, V);
  CHECK(loss.count == want.loss.count);
  check_close(Doubles{loss.mean}, Doubles{want.loss.mean}, tolerance<float>(), "loss");
  check_close(to_host(lse), narrow(want.lse), tolerance<float>(), "lse");

  auto d = poisoned<T>(size_t(N * V));
  cuda::cross_entropy_backward(d.data(), x.data(), lse.data(), t.data(), N, V, loss.count, d_loss);
  const std::vector<float> got = to_host(d);
  check_close(got, narrow(want.grad), tolerance<T>(), "d_logits");
  std::vector<float> got_soft, want_soft;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t v = 0; v < V; ++v)
      if (v != targets[size_t(n)]) {
        got_soft.push_back(got[size_t(n * V + v)]);
        want_soft.push_back(float(want.grad[size_t(n * V + v)]));
      }
  check_close(got_soft, want_soft, tolerance<T>(), "d_logits off the targets");
  size_t nonzero = 0;  // in ignored rows, which must be exactly 0
  for (int64_t n = 0; n < N; ++n)
    if (targets[size_t(n)] == kIgnoreIndex)
      for (int64_t v = 0; v < V; ++v) nonzero += got[size_t(n * V + v)] != 0.f;
  CHECK(nonzero == 0);
}

}  // namespace

TEST_CASE_TEMPLATE("cross_entropy: loss, lse and gradient as the CPU op", T, float, cuda::bf16) {
  const int64_t N = 37;
  for (int64_t V : {1000, 50001}) {
    CAPTURE(V);
    const std::vector<float> logits = stored<T>(uniform(size_t(N * V), uint64_t(V), -4.f, 4.f));
    check_against_cpu<T>(N, V, logits, targets_for(N, V, uint64_t(V + 1)));
  }
}

TEST_CASE_TEMPLATE("cross_entropy: a 262144-entry vocabulary", T, float, cuda::bf16) {
  const int64_t N = 4, V = 262144;
  const std::vector<float> logits = stored<T>(uniform(size_t(N * V), 7, -8.f, 8.f));
  check_against_cpu<T>(N, V, logits, {17, int32_t(V - 1), kIgnoreIndex, 200000});
}

TEST_CASE_TEMPLATE("cross_entropy: backward in place gives the bits of out of place", T, float, cuda::bf16) {
  const int64_t N = 37, V = 1000;
  const std::vector<float> logits = stored<T>(uniform(size_t(N * V), 11, -4.f, 4.f));
  const auto t = to_device_ints(targets_for(N, V, 12));
  auto x = to_device<T>(logits);
  auto lse = poisoned<float>(size_t(N));
  const int64_t count = cuda::cross_entropy_forward(lse.data(), x.data(), t.data(), N, V).count;
  auto d = poisoned<T>(size_t(N * V));
  cuda::cross_entropy_backward(d.data(), x.data(), lse.data(), t.data(), N, V, count, 0.7);
  cuda::cross_entropy_backward(x.data(), x.data(), lse.data(), t.data(), N, V, count, 0.7);
  CHECK(same_bits(raw(x), raw(d)));
}

TEST_CASE_TEMPLATE("cross_entropy: every target ignored counts nothing and gives a zero gradient", T, float,
                   cuda::bf16) {
  const int64_t N = 6, V = 1000;
  const std::vector<float> logits = stored<T>(uniform(size_t(N * V), 13, -4.f, 4.f));
  const std::vector<int32_t> none(size_t(N), kIgnoreIndex);
  const Reference want = cpu_reference(logits, none, N, V, 1.0);
  const auto x = to_device<T>(logits);
  const auto t = to_device_ints(none);
  auto lse = poisoned<float>(size_t(N));
  const ops::CrossEntropyLoss loss = cuda::cross_entropy_forward(lse.data(), x.data(), t.data(), N, V);
  CHECK(loss.count == 0);
  CHECK(loss.mean == 0.0);
  check_close(to_host(lse), narrow(want.lse), tolerance<float>(), "lse");  // written for every row
  auto d = poisoned<T>(size_t(N * V));
  cuda::cross_entropy_backward(d.data(), x.data(), lse.data(), t.data(), N, V, 0, 1.0);
  CHECK(to_host(d) == std::vector<float>(size_t(N * V), 0.f));

  CHECK(cuda::cross_entropy_forward<T>(nullptr, nullptr, nullptr, 0, V).count == 0);
  cuda::cross_entropy_backward<T>(nullptr, nullptr, nullptr, nullptr, 0, V, 0, 1.0);
}

TEST_CASE_TEMPLATE("cross_entropy: a target outside the vocabulary throws in forward, zeroes its row in backward", T,
                   float, cuda::bf16) {
  const int64_t N = 4, V = 1000;
  const std::vector<float> logits = stored<T>(uniform(size_t(N * V), 14, -4.f, 4.f));
  const auto x = to_device<T>(logits);
  auto lse = poisoned<float>(size_t(N));
  for (int32_t bad : {-1, int32_t(V), 1 << 30}) {
    CAPTURE(bad);
    const auto t = to_device_ints({5, bad, kIgnoreIndex, 999});
    CHECK_THROWS_AS(cuda::cross_entropy_forward(lse.data(), x.data(), t.data(), N, V), std::invalid_argument);
    auto d = poisoned<T>(size_t(N * V));
    cuda::cross_entropy_backward(d.data(), x.data(), lse.data(), t.data(), N, V, 2, 1.0);
    const std::vector<float> got = to_host(d);
    CHECK(std::vector<float>(got.begin() + V, got.begin() + 2 * V) == std::vector<float>(size_t(V), 0.f));
  }
}

TEST_CASE_TEMPLATE("cross_entropy: the same bits on every run", T, float, cuda::bf16) {
  const int64_t N = 37, V = 50001;
  const auto x = to_device<T>(uniform(size_t(N * V), 15, -4.f, 4.f));
  const auto t = to_device_ints(targets_for(N, V, 16));
  struct Run {
    ops::CrossEntropyLoss loss;
    std::vector<float> lse;
    std::vector<T> grad;
  };
  auto run = [&] {
    auto lse = poisoned<float>(size_t(N));
    auto d = poisoned<T>(size_t(N * V));
    const ops::CrossEntropyLoss loss = cuda::cross_entropy_forward(lse.data(), x.data(), t.data(), N, V);
    cuda::cross_entropy_backward(d.data(), x.data(), lse.data(), t.data(), N, V, loss.count, 0.7);
    return Run{loss, raw(lse), raw(d)};
  };
  const Run a = run(), b = run();
  CHECK(std::memcmp(&a.loss.mean, &b.loss.mean, sizeof(double)) == 0);
  CHECK(a.loss.count == b.loss.count);
  CHECK(same_bits(a.lse, b.lse));
  CHECK(same_bits(a.grad, b.grad));
}

}  // namespace upcycle::test
