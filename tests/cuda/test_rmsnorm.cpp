// RMSNorm on the GPU against trainer/ops in double: forward, backward with either gradient
// alone, the same bits run after run.
#include <doctest/doctest.h>

#include <stdexcept>
#include <type_traits>

#include "cuda/ops/rmsnorm.hpp"
#include "cuda_check.hpp"
#include "trainer/ops/rmsnorm.hpp"

namespace upcycle::test {

namespace {

template <class T>
void check_rmsnorm(int64_t N, int64_t C, uint64_t seed) {
  const double eps = 1e-5;
  const size_t NC = size_t(N * C);
  const std::vector<float> x = stored<T>(uniform(NC, seed, -2.f, 2.f));
  const std::vector<float> weight = stored<T>(uniform(size_t(C), seed + 1, 0.5f, 1.5f));
  const std::vector<float> d_out = stored<T>(uniform(NC, seed + 2));
  const cuda::DeviceBuffer<T> d_x = to_device<T>(x), d_weight_in = to_device<T>(weight), d_d_out = to_device<T>(d_out);

  cuda::DeviceBuffer<T> out = poisoned<T>(NC);
  cuda::DeviceBuffer<float> rstd = poisoned<float>(size_t(N));
  cuda::rmsnorm_forward(out.data(), rstd.data(), d_x.data(), d_weight_in.data(), N, C, eps);
  std::vector<double> want_out(NC), want_rstd(static_cast<size_t>(N));
  ops::rmsnorm_forward(want_out.data(), want_rstd.data(), widen(x).data(), widen(weight).data(), N, C, eps);
  // bf16: x̂ rounded to bf16 before the weight multiplies it (as transformers), then the product:
  // two roundings of at most 2^-9 each.
  check_close(widen(to_host(out)), want_out, tolerance<T>(), "out");
  // rstd is fp32 from inputs held exactly, whatever T: float's tolerance.
  check_close(widen(to_host(rstd)), want_rstd, tolerance<float>(), "rstd");

  // backward, from the reference's rstd rounded to fp32 (the same on both sides), into random starts
  const std::vector<float> r(want_rstd.begin(), want_rstd.end());
  const cuda::DeviceBuffer<float> d_r = to_device<float>(r);
  const std::vector<float> d_in_start = stored<T>(uniform(NC, seed + 3)), d_weight_start = uniform(size_t(C), seed + 4);
  cuda::DeviceBuffer<T> d_in = to_device<T>(d_in_start);
  cuda::DeviceBuffer<float> d_weight = to_device<float>(d_weight_start);
  cuda::rmsnorm_backward(d_in.data(), d_weight.data(), d_d_out.data(), d_x.data(), d_weight_in.data(), d_r.data(), N,
                         C);
  std::vector<double> want_in = widen(d_in_start), want_weight = widen(d_weight_start);
  ops::rmsnorm_backward(want_in.data(), want_weight.data(), widen(d_out).data(), widen(x).data(), widen(weight).data(),
                        widen(r).data(), N, C);
  const std::vector<float> got_in = to_host(d_in), got_weight = to_host(d_weight);
  // bf16 d_in: the fp32 sum rounded once to bf16.
  check_close(widen(got_in), want_in, tolerance<T>(), "d_in");
  // fp32 sums of inputs held exactly, whatever T: float's tolerance.
  check_close(widen(got_weight), want_weight, tolerance<float>(), "d_weight");

  // Each gradient alone (the other null), from the same starts: the same bits.
  cuda::DeviceBuffer<T> d_in_again = to_device<T>(d_in_start);
  cuda::rmsnorm_backward(d_in_again.data(), static_cast<float*>(nullptr), d_d_out.data(), d_x.data(),
                         d_weight_in.data(), d_r.data(), N, C);
  CHECK(to_host(d_in_again) == got_in);
  cuda::DeviceBuffer<float> d_weight_again = to_device<float>(d_weight_start);
  cuda::rmsnorm_backward(static_cast<T*>(nullptr), d_weight_again.data(), d_d_out.data(), d_x.data(),
                         d_weight_in.data(), d_r.data(), N, C);
  CHECK(to_host(d_weight_again) == got_weight);
}

}  // namespace

TEST_CASE("rmsnorm: forward and backward, float and bf16, odd shapes") {
  // C = 300, 129, 1000: rows of 256 threads, the last pass partial; N = 150: d_weight's row
  // chunks of 64, the last partial.
  SUBCASE("float") {
    check_rmsnorm<float>(37, 300, 1);
    check_rmsnorm<float>(150, 129, 2);
    check_rmsnorm<float>(2, 1000, 3);
  }
  SUBCASE("bf16") {
    check_rmsnorm<cuda::bf16>(37, 300, 4);
    check_rmsnorm<cuda::bf16>(150, 129, 5);
    check_rmsnorm<cuda::bf16>(2, 1000, 6);
  }
}

TEST_CASE("rmsnorm: negative sizes are refused") {
  CHECK_THROWS_AS(cuda::rmsnorm_forward<float>(nullptr, nullptr, nullptr, nullptr, -1, 8, 1e-5), std::invalid_argument);
  CHECK_THROWS_AS(cuda::rmsnorm_backward<cuda::bf16>(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 8, -1),
                  std::invalid_argument);
}

}  // namespace upcycle::test
