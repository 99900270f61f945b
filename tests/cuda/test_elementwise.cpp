// Element-wise ops against the same arithmetic in double on the host; casts exactly.
#include <doctest/doctest.h>

#include <stdexcept>
#include <type_traits>

#include "cuda/ops/elementwise.hpp"
#include "cuda_check.hpp"

namespace upcycle::test {

namespace {

// Many blocks of 256, the last one partial.
constexpr int64_t kN = 70001;

template <class T>
void check_add_into() {
  const std::vector<float> a = stored<T>(uniform(kN, 1)), b = stored<T>(uniform(kN, 2));
  cuda::DeviceBuffer<T> d_a = to_device<T>(a);
  const cuda::DeviceBuffer<T> d_b = to_device<T>(b);
  cuda::add_into(d_a.data(), d_b.data(), kN);
  std::vector<double> want(kN);
  for (int64_t i = 0; i < kN; ++i) want[i] = double(a[i]) + double(b[i]);
  const std::vector<float> got = to_host(d_a);
  // bf16: the sum rounded once to bf16, 2^-9 relative.
  check_close(std::vector<double>(got.begin(), got.end()), want, tolerance<T>(), "a");
}

}  // namespace

TEST_CASE("elementwise: add_into adds b into a, float and bf16") {
  SUBCASE("float") { check_add_into<float>(); }
  SUBCASE("bf16") { check_add_into<cuda::bf16>(); }
}

TEST_CASE("elementwise: cast rounds float to bf16 to nearest even and widens bf16 exactly") {
  std::vector<float> x = uniform(kN, 3);
  // Ties between two bf16 values (8 significant bits) go to the even one: down, then up.
  x[0] = 1.f + 1.f / 256;
  x[1] = 1.f + 3.f / 256;
  const cuda::DeviceBuffer<float> d_x = to_device<float>(x);
  cuda::DeviceBuffer<cuda::bf16> narrow = poisoned<cuda::bf16>(kN);
  cuda::cast(narrow.data(), d_x.data(), kN);
  const std::vector<float> got = to_host(narrow);
  check_close(got, round_bf16(x), 0, "float to bf16");
  CHECK(got[0] == 1.f);
  CHECK(got[1] == 1.f + 4.f / 256);

  cuda::DeviceBuffer<float> wide = poisoned<float>(kN);
  cuda::cast(wide.data(), narrow.data(), kN);
  check_close(to_host(wide), round_bf16(x), 0, "bf16 to float");
}

TEST_CASE("elementwise: scale multiplies in place") {
  const std::vector<float> x = uniform(kN, 4);
  const float factor = 0.37f;
  cuda::DeviceBuffer<float> d_x = to_device<float>(x);
  cuda::scale(d_x.data(), factor, kN);
  std::vector<double> want(kN);
  for (int64_t i = 0; i < kN; ++i) want[i] = double(x[i]) * double(factor);
  const std::vector<float> got = to_host(d_x);
  check_close(std::vector<double>(got.begin(), got.end()), want, tolerance<float>(), "x");
}

TEST_CASE("elementwise: no elements is a no-op, a negative count is refused") {
  CHECK_NOTHROW(cuda::add_into<float>(nullptr, nullptr, 0));
  CHECK_NOTHROW(cuda::cast<cuda::bf16, float>(nullptr, nullptr, 0));
  CHECK_NOTHROW(cuda::scale(nullptr, 2.f, 0));
  CHECK_THROWS_AS(cuda::add_into<cuda::bf16>(nullptr, nullptr, -1), std::invalid_argument);
  CHECK_THROWS_AS(cuda::scale(nullptr, 2.f, -1), std::invalid_argument);
  UPCYCLE_CUDA(cudaDeviceSynchronize());
}

}  // namespace upcycle::test
