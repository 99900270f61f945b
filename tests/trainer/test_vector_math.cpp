// vector_math: exp within 2 ulp of libm's in double, its limits, the vectorised array functions
// giving the scalar exp's bits (so every build gives the same), and the sums against double.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "tests/trainer/gradcheck.hpp"
#include "trainer/ops/vector_math.hpp"

using namespace upcycle::ops;

namespace {

// |y − e^x| in units of the float spacing at e^x.
double ulp_error(float x, float y) {
  const double ref = std::exp(double(x));
  const float r = float(ref);
  return std::abs(double(y) - ref) / double(std::nextafter(r, std::numeric_limits<float>::infinity()) - r);
}

std::vector<float> sweep(float lo, float hi, int n) {
  std::vector<float> x(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) x[size_t(i)] = lo + (hi - lo) * float(i) / float(n - 1);
  return x;
}

}  // namespace

TEST_CASE("vector_math: exp within 2 ulp on [-86, 88.7], exact 0, inf and NaN outside") {
  double worst = 0;
  for (float x : sweep(-86.0f, 88.7f, 2'000'003)) worst = std::max(worst, ulp_error(x, exp_f32(x)));
  for (float x : sweep(-1e-3f, 1e-3f, 10'001)) worst = std::max(worst, ulp_error(x, exp_f32(x)));
  MESSAGE("worst error " << worst << " ulp");
  CHECK(worst < 2.0);
  CHECK(exp_f32(0.0f) == 1.0f);
  CHECK(exp_f32(-std::numeric_limits<float>::infinity()) == 0.0f);
  CHECK(exp_f32(-86.5f) == 0.0f);
  CHECK(exp_f32(88.8f) == std::numeric_limits<float>::infinity());
  CHECK(std::isnan(exp_f32(std::numeric_limits<float>::quiet_NaN())));
}

TEST_CASE("vector_math: the array functions give the scalar exp's bits, and sums match double") {
  // Lengths around the 16 lanes and the 512-term runs, so every tail is taken.
  for (int64_t n : {1, 15, 16, 17, 511, 513, 49152}) {
    const upcycle::test::Vec r = upcycle::test::random_vec(size_t(n), uint64_t(n), 8.0);
    std::vector<float> x(r.begin(), r.end()), y(static_cast<size_t>(n));
    const float shift = 0.75f, scale = 0.5f;
    exp_shifted(y.data(), x.data(), n, shift, scale);
    double mx = -1e300;
    bool same_bits = true;
    for (int64_t i = 0; i < n; ++i) {
      same_bits &= y[size_t(i)] == scale * exp_f32(x[size_t(i)] - shift);
      mx = std::max(mx, double(x[size_t(i)]));
    }
    CHECK_MESSAGE(same_bits, "n = " << n);
    CHECK(double(max_of(x.data(), n)) == mx);
    // As the loss sums them: shifted by the max, every term at most 1.
    double shifted = 0;
    for (float v : x) shifted += std::exp(double(v) - mx);
    CHECK(std::abs(sum_exp_shifted(x.data(), n, float(mx)) - shifted) <= 1e-6 * shifted);
  }
  CHECK(max_of(nullptr, 0) == -std::numeric_limits<float>::infinity());
  CHECK(sum_exp_shifted(nullptr, 0, 0.0f) == 0.0);
}
