// AdamW on the GPU against trainer/ops in double over three steps; the global norm and clipping
// against the CPU's, the same bits run after run.
#include <doctest/doctest.h>

#include <span>
#include <stdexcept>
#include <type_traits>

#include "cuda/ops/adamw.hpp"
#include "cuda_check.hpp"
#include "trainer/ops/adamw.hpp"

namespace upcycle::test {

namespace {

template <class T>
void check_adamw(bool decay, bool with_copy) {
  const ops::AdamWConfig config{.lr = 1e-2, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.1};
  const int64_t n = 70001;  // many blocks of 256, the last partial
  // m and v carry history from earlier steps; v is a mean of squares, so positive.
  const std::vector<float> p0 = uniform(n, 1), m0 = uniform(n, 2, -0.1f, 0.1f), v0 = uniform(n, 3, 1e-4f, 1e-2f);
  cuda::DeviceBuffer<float> param = to_device<float>(p0), m = to_device<float>(m0), v = to_device<float>(v0);
  std::vector<double> want_p = widen(p0), want_m = widen(m0), want_v = widen(v0);
  for (int64_t t = 1; t <= 3; ++t) {
    const std::vector<float> g = uniform(n, 10 + uint64_t(t));
    const cuda::DeviceBuffer<float> grad = to_device<float>(g);
    cuda::DeviceBuffer<T> copy = poisoned<T>(with_copy ? n : 0);
    cuda::adamw_step<T>(param.data(), with_copy ? copy.data() : nullptr, grad.data(), m.data(), v.data(), n, config, t,
                        decay);
    ops::adamw_step(want_p.data(), widen(g).data(), want_m.data(), want_v.data(), n, config, t, decay);
    const std::vector<float> got_p = to_host(param);
    // fp32 state whatever T: float's tolerance.
    check_close(widen(got_p), want_p, tolerance<float>(), "param");
    check_close(widen(to_host(m)), want_m, tolerance<float>(), "m");
    check_close(widen(to_host(v)), want_v, tolerance<float>(), "v");
    // The copy is the new param rounded to T, exactly.
    if (with_copy) check_close(to_host(copy), stored<T>(got_p), 0, "copy");
  }
}

}  // namespace

TEST_CASE("adamw: three steps against the CPU's update, with and without decay and copy") {
  SUBCASE("float") {
    check_adamw<float>(true, true);
    check_adamw<float>(false, false);
  }
  SUBCASE("bf16") {
    check_adamw<cuda::bf16>(true, true);
    check_adamw<cuda::bf16>(false, true);
  }
  const ops::AdamWConfig config;
  CHECK_THROWS_AS(cuda::adamw_step<float>(nullptr, nullptr, nullptr, nullptr, nullptr, 1, config, 0, false),
                  std::invalid_argument);
}

TEST_CASE("adamw: global norm and clipping over tensors of odd sizes, the same bits every run") {
  // 20001: three chunks of 8192, the last partial; 3000001: 367 partial sums, more than the
  // final sum's 256 threads; an empty tensor among them.
  const std::vector<int64_t> sizes = {5, 300, 0, 20001, 3000001};
  const int64_t count = int64_t(sizes.size());
  std::vector<std::vector<float>> host;
  std::vector<cuda::DeviceBuffer<float>> device;
  std::vector<float*> pointers;
  for (int64_t i = 0; i < count; ++i) {
    host.push_back(uniform(size_t(sizes[size_t(i)]), 20 + uint64_t(i)));
    device.push_back(to_device<float>(host.back()));
    pointers.push_back(device.back().data());
  }
  std::vector<std::vector<double>> wide;
  for (const auto& h : host) wide.push_back(widen(h));
  const std::vector<std::span<const double>> views(wide.begin(), wide.end());
  const double want = ops::global_norm<double>(views);

  const std::vector<const float*> readonly(pointers.begin(), pointers.end());
  const double norm = cuda::global_norm(readonly.data(), sizes.data(), count);
  // Squares of floats are exact in double; only the order of the sums differs from the CPU's.
  CHECK(norm == doctest::Approx(want).epsilon(1e-12));
  CHECK(cuda::global_norm(readonly.data(), sizes.data(), count) == norm);

  // Under the limit: untouched.
  CHECK(cuda::clip_global_norm(pointers.data(), sizes.data(), count, 2 * want) == norm);
  for (int64_t i = 0; i < count; ++i) CHECK(to_host(device[size_t(i)]) == host[size_t(i)]);

  // Over it: scaled by max_norm / (norm + 1e-6), as the CPU scales.
  CHECK(cuda::clip_global_norm(pointers.data(), sizes.data(), count, 0.5) == norm);
  const double scale = ops::clip_scale(want, 0.5);
  for (auto& w : wide)
    for (double& x : w) x *= scale;
  for (int64_t i = 0; i < count; ++i)
    check_close(widen(to_host(device[size_t(i)])), wide[size_t(i)], tolerance<float>(), "clipped");
  CHECK(cuda::global_norm(readonly.data(), sizes.data(), count) == doctest::Approx(0.5).epsilon(1e-5));

  CHECK(cuda::global_norm(nullptr, nullptr, 0) == 0);
  const int64_t negative = -1;
  CHECK_THROWS_AS(cuda::global_norm(readonly.data(), &negative, 1), std::invalid_argument);
}

}  // namespace upcycle::test
