// The shared expert's sigmoid gate on the GPU against the CPU op in double on the same inputs
// (rows rounded to bf16 for a bf16 run, logits fp32 either way).
#include <doctest/doctest.h>

#include <cmath>
#include <stdexcept>

#include "cuda/ops/sigmoid_gate.hpp"
#include "cuda_check.hpp"
#include "trainer/ops/sigmoid_gate.hpp"

namespace upcycle::test {

namespace {

using cuda::bf16;

// Logits uniform in [-reach, reach); out starts random (added into), d_y and d_logit poisoned
// (written).
template <class T>
void check_sigmoid_gate(int64_t N, int64_t H, float reach, uint64_t seed) {
  const size_t rows = size_t(N * H);
  const std::vector<float> y = stored<T>(uniform(rows, seed)), d_out = stored<T>(uniform(rows, seed + 1)),
                           out0 = stored<T>(uniform(rows, seed + 2)),
                           logit = uniform(size_t(N), seed + 3, -reach, reach);
  const std::vector<double> y64 = widen(y), d_out64 = widen(d_out), logit64 = widen(logit);
  std::vector<double> out = widen(out0), d_y(rows), d_logit(static_cast<size_t>(N));
  ops::sigmoid_gate_forward(out.data(), y64.data(), logit64.data(), N, H);
  ops::sigmoid_gate_backward(d_y.data(), d_logit.data(), d_out64.data(), y64.data(), logit64.data(), N, H);

  const auto g_y = to_device<T>(y), g_d_out = to_device<T>(d_out);
  const auto g_logit = to_device<float>(logit);
  auto g_out = to_device<T>(out0);
  auto g_d_y = poisoned<T>(rows);
  auto g_d_logit = poisoned<float>(size_t(N));
  cuda::sigmoid_gate_forward<T>(g_out.data(), g_y.data(), g_logit.data(), N, H);
  cuda::sigmoid_gate_backward<T>(g_d_y.data(), g_d_logit.data(), g_d_out.data(), g_y.data(), g_logit.data(), N, H);
  if (rows > 0) {
    check_close(widen(to_host(g_out)), out, tolerance<T>(), "out");
    check_close(widen(to_host(g_d_y)), d_y, tolerance<T>(), "d_y");
  }
  // d_logit is fp32 from the same (rounded) inputs: the sum's order is all that differs.
  check_close(widen(to_host(g_d_logit)), d_logit, tolerance<float>(), "d_logit");
}

}  // namespace

TEST_CASE("sigmoid_gate: forward and backward against the CPU in float and bf16") {
  // 37 · 129 elements: a partial last block of the forward; 1000 columns: rows wider than the
  // backward's block; 300 rows of one column.
  check_sigmoid_gate<float>(37, 129, 4, 1);
  check_sigmoid_gate<bf16>(37, 129, 4, 2);
  check_sigmoid_gate<float>(3, 1000, 4, 3);
  check_sigmoid_gate<bf16>(3, 1000, 4, 4);
  check_sigmoid_gate<float>(300, 1, 4, 5);
  check_sigmoid_gate<bf16>(1, 7, 4, 6);
}

TEST_CASE("sigmoid_gate: logits far out saturate without NaN") {
  // exp overflows here: σ must come out 0 or 1 and σ·(1 − σ) 0, never inf/inf.
  check_sigmoid_gate<float>(1000, 16, 200, 10);
  check_sigmoid_gate<bf16>(1000, 16, 200, 11);
}

TEST_CASE("sigmoid_gate: rows of no columns write d_logit = 0, no rows do nothing") {
  check_sigmoid_gate<float>(5, 0, 4, 20);
  CHECK_NOTHROW(cuda::sigmoid_gate_forward<float>(nullptr, nullptr, nullptr, 0, 16));
  CHECK_NOTHROW(cuda::sigmoid_gate_backward<bf16>(nullptr, nullptr, nullptr, nullptr, nullptr, 0, 16));
  UPCYCLE_CUDA(cudaDeviceSynchronize());
  CHECK_THROWS_AS(cuda::sigmoid_gate_forward<float>(nullptr, nullptr, nullptr, -1, 16), std::invalid_argument);
}

}  // namespace upcycle::test
