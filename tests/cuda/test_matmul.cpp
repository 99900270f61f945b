// nn.Linear through cuBLAS against the CPU op in double on the same (bf16-rounded) inputs.
#include <doctest/doctest.h>

#include <cstring>
#include <tuple>
#include <type_traits>

#include "cuda/ops/matmul.hpp"
#include "cuda_check.hpp"
#include "trainer/ops/matmul.hpp"

namespace upcycle::test {

namespace {

using cuda::bf16;

// fp32 results (router logits, weight and bias gradients). From bf16 inputs the products are
// exact in fp32 and only the fp32 accumulation differs from double: 1e-4, far inside bf16's
// 1e-2, so an output rounded to bf16 on the way would show.
template <class T>
double fp32_tolerance() {
  return std::is_same_v<T, bf16> ? 1e-4 : tolerance<float>();
}

template <class T, class Out = T>
void check_forward(int64_t N, int64_t I, int64_t O, bool with_bias, uint64_t seed) {
  const std::vector<float> in = stored<T>(uniform(size_t(N * I), seed)), W = stored<T>(uniform(size_t(O * I), seed + 1)),
                           bias = stored<T>(uniform(size_t(O), seed + 2));
  const std::vector<double> in64 = widen(in), W64 = widen(W), bias64 = widen(bias);
  std::vector<double> want(size_t(N * O));
  ops::matmul_forward(want.data(), in64.data(), W64.data(), with_bias ? bias64.data() : nullptr, N, I, O);

  const auto d_in = to_device<T>(in), d_W = to_device<T>(W), d_bias = to_device<T>(bias);
  auto out = poisoned<Out>(size_t(N * O));
  cuda::matmul_forward<T, Out>(out.data(), d_in.data(), d_W.data(), with_bias ? d_bias.data() : nullptr, N, I, O);
  const double tol = std::is_same_v<Out, float> ? fp32_tolerance<T>() : tolerance<T>();
  check_close(widen(to_host(out)), want, tol, with_bias ? "out" : "out without bias");
}

struct Wanted {
  bool in = true, W = true, bias = true;
};

template <class T>
void check_backward(int64_t N, int64_t I, int64_t O, Wanted wanted, uint64_t seed) {
  const std::vector<float> in = stored<T>(uniform(size_t(N * I), seed)), W = stored<T>(uniform(size_t(O * I), seed + 1)),
                           d_out = stored<T>(uniform(size_t(N * O), seed + 2));
  // Added into: they start random.
  const std::vector<float> d_in0 = stored<T>(uniform(size_t(N * I), seed + 3)), d_W0 = uniform(size_t(O * I), seed + 4),
                           d_bias0 = uniform(size_t(O), seed + 5);
  const std::vector<double> in64 = widen(in), W64 = widen(W), d_out64 = widen(d_out);
  std::vector<double> d_in = widen(d_in0), d_W = widen(d_W0), d_bias = widen(d_bias0);
  ops::matmul_backward(wanted.in ? d_in.data() : nullptr, wanted.W ? d_W.data() : nullptr,
                       wanted.bias ? d_bias.data() : nullptr, d_out64.data(), in64.data(), W64.data(), N, I, O);

  const auto g_in = to_device<T>(in), g_W = to_device<T>(W), g_d_out = to_device<T>(d_out);
  auto g_d_in = to_device<T>(d_in0);
  auto g_d_W = to_device<float>(d_W0), g_d_bias = to_device<float>(d_bias0);
  cuda::matmul_backward<T>(wanted.in ? g_d_in.data() : nullptr, wanted.W ? g_d_W.data() : nullptr,
                           wanted.bias ? g_d_bias.data() : nullptr, g_d_out.data(), g_in.data(), g_W.data(), N, I, O);
  if (wanted.in) check_close(widen(to_host(g_d_in)), d_in, tolerance<T>(), "d_in");
  if (wanted.W) check_close(widen(to_host(g_d_W)), d_W, fp32_tolerance<T>(), "d_W");
  if (wanted.bias) check_close(widen(to_host(g_d_bias)), d_bias, fp32_tolerance<T>(), "d_bias");
}

}  // namespace

TEST_CASE("matmul: forward against the CPU in float and bf16, odd sizes, with and without bias") {
  check_forward<float>(37, 300, 129, true, 1);
  check_forward<float>(37, 300, 129, false, 2);
  check_forward<bf16>(37, 300, 129, true, 3);
  check_forward<bf16>(37, 300, 129, false, 4);
  check_forward<float>(1, 5, 3, true, 5);
}

TEST_CASE("matmul: bf16 inputs with an fp32 output (the router's logits)") {
  check_forward<bf16, float>(37, 300, 8, false, 10);
  check_forward<bf16, float>(37, 300, 129, true, 11);
}

TEST_CASE("matmul: backward against the CPU in float and bf16, every gradient added into") {
  check_backward<float>(37, 300, 129, {}, 20);
  check_backward<bf16>(37, 300, 129, {}, 21);
}

TEST_CASE("matmul: gradients not wanted (null d_in, d_W, d_bias) are skipped") {
  check_backward<float>(37, 300, 129, {.in = false, .W = true, .bias = false}, 30);
  check_backward<float>(37, 300, 129, {.in = true, .W = false, .bias = false}, 31);
  check_backward<bf16>(37, 300, 129, {.in = false, .W = false, .bias = true}, 32);
  check_backward<bf16>(37, 300, 129, {.in = true, .W = false, .bias = true}, 33);
}

TEST_CASE("matmul: N = 0 does nothing") {
  const std::vector<float> start = uniform(12, 40);
  auto d_W = to_device<float>(start), d_bias = to_device<float>(start);
  cuda::matmul_forward<bf16, float>(nullptr, nullptr, nullptr, nullptr, 0, 3, 4);
  cuda::matmul_backward<bf16>(nullptr, d_W.data(), d_bias.data(), nullptr, nullptr, nullptr, 0, 3, 4);
  CHECK(to_host(d_W) == start);
  CHECK(to_host(d_bias) == start);
}

TEST_CASE("matmul: the same inputs give the same bits") {
  // Long enough sums over N for cuBLAS to consider split-K on d_W.
  const int64_t N = 2048, I = 256, O = 192;
  auto run = [&]<class T>(std::type_identity<T>) {
    const auto in = to_device<T>(uniform(size_t(N * I), 50)), W = to_device<T>(uniform(size_t(O * I), 51)),
               bias = to_device<T>(uniform(size_t(O), 52)), d_out = to_device<T>(uniform(size_t(N * O), 53));
    auto out = poisoned<T>(size_t(N * O));
    auto d_in = to_device<T>(uniform(size_t(N * I), 54));
    auto d_W = to_device<float>(uniform(size_t(O * I), 55)), d_bias = to_device<float>(uniform(size_t(O), 56));
    cuda::matmul_forward<T, T>(out.data(), in.data(), W.data(), bias.data(), N, I, O);
    cuda::matmul_backward<T>(d_in.data(), d_W.data(), d_bias.data(), d_out.data(), in.data(), W.data(), N, I, O);
    return std::tuple(out.download(), d_in.download(), d_W.download(), d_bias.download());
  };
  const auto check_twice = [&]<class T>(std::type_identity<T> type) {
    const auto [out1, d_in1, d_W1, d_bias1] = run(type);
    const auto [out2, d_in2, d_W2, d_bias2] = run(type);
    CHECK(same_bits(out1, out2));
    CHECK(same_bits(d_in1, d_in2));
    CHECK(same_bits(d_W1, d_W2));
    CHECK(same_bits(d_bias1, d_bias2));
  };
  check_twice(std::type_identity<float>{});
  check_twice(std::type_identity<bf16>{});
}

}  // namespace upcycle::test
