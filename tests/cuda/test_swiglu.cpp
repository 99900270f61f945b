// SwiGLU on the GPU against the CPU op in double on the same (bf16-rounded) inputs.
#include <doctest/doctest.h>

#include <type_traits>

#include "cuda/ops/swiglu.hpp"
#include "cuda_check.hpp"
#include "trainer/ops/swiglu.hpp"

namespace upcycle::test {

namespace {

using cuda::bf16;

// Gates uniform in [-reach, reach).
template <class T>
void check_swiglu(int64_t count, float reach, uint64_t seed) {
  const size_t n = size_t(count);
  const std::vector<float> gate = stored<T>(uniform(n, seed, -reach, reach)), up = stored<T>(uniform(n, seed + 1)),
                           d_out = stored<T>(uniform(n, seed + 2));
  // Added into: they start random.
  const std::vector<float> d_gate0 = stored<T>(uniform(n, seed + 3)), d_up0 = stored<T>(uniform(n, seed + 4));
  const std::vector<double> gate64 = widen(gate), up64 = widen(up), d_out64 = widen(d_out);
  std::vector<double> out(n), d_gate = widen(d_gate0), d_up = widen(d_up0);
  ops::swiglu_forward(out.data(), gate64.data(), up64.data(), count);
  ops::swiglu_backward(d_gate.data(), d_up.data(), d_out64.data(), gate64.data(), up64.data(), count);

  const auto g_gate = to_device<T>(gate), g_up = to_device<T>(up), g_d_out = to_device<T>(d_out);
  auto g_out = poisoned<T>(n);
  auto g_d_gate = to_device<T>(d_gate0), g_d_up = to_device<T>(d_up0);
  cuda::swiglu_forward<T>(g_out.data(), g_gate.data(), g_up.data(), count);
  cuda::swiglu_backward<T>(g_d_gate.data(), g_d_up.data(), g_d_out.data(), g_gate.data(), g_up.data(), count);
  check_close(widen(to_host(g_out)), out, tolerance<T>(), "out");
  check_close(widen(to_host(g_d_gate)), d_gate, tolerance<T>(), "d_gate");
  check_close(widen(to_host(g_d_up)), d_up, tolerance<T>(), "d_up");
}

}  // namespace

TEST_CASE("swiglu: forward and backward against the CPU in float and bf16") {
  check_swiglu<float>(37 * 129, 6, 1);
  check_swiglu<bf16>(37 * 129, 6, 2);
  check_swiglu<float>(1, 6, 3);
}

TEST_CASE("swiglu: gates far out saturate without NaN") {
  // exp overflows here: σ must come out 0 or 1 (e^x / (1 + e^x) would give inf/inf = NaN).
  check_swiglu<float>(1000, 200, 10);
  check_swiglu<bf16>(1000, 200, 11);
}

TEST_CASE("swiglu: count 0 does nothing") {
  CHECK_NOTHROW(cuda::swiglu_forward<float>(nullptr, nullptr, nullptr, 0));
  CHECK_NOTHROW(cuda::swiglu_backward<bf16>(nullptr, nullptr, nullptr, nullptr, nullptr, 0));
}

}  // namespace upcycle::test
