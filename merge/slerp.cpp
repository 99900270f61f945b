// SLERP of two flattened tensors: the angle from three dot products, then one blend pass.
#include <array>
#include <cmath>
#include <vector>

#include "merge/method_loops.hpp"

namespace upcycle::merge::detail {

namespace {

// x0·x0, x1·x1, x0·x1 in double. Each chunk sums into 8 lanes by position (8 short dependency
// chains rather than one long one) and the chunks' sums are added in chunk order: the same bits
// for any thread count.
std::array<double, 3> dots(std::span<const float> x0, std::span<const float> x1) {
  const size_t n = x0.size();
  std::vector<std::array<double, 3>> part((n + kChunk - 1) / kChunk);
  for_chunks(n, [&](size_t lo, size_t len) {
    constexpr size_t L = 8;
    double s00[L] = {}, s11[L] = {}, s01[L] = {};
    const float *a = x0.data() + lo, *b = x1.data() + lo;
    for (size_t i = 0; i < len; ++i) {  // i % L: the lane is fixed by position, not by timing
      const double u = a[i], v = b[i];
      s00[i % L] += u * u;
      s11[i % L] += v * v;
      s01[i % L] += u * v;
    }
    std::array<double, 3> sum{};
    for (size_t j = 0; j < L; ++j) sum = {sum[0] + s00[j], sum[1] + s11[j], sum[2] + s01[j]};
    part[lo / kChunk] = sum;
  });
  std::array<double, 3> total{};
  for (const auto& p : part) total = {total[0] + p[0], total[1] + p[1], total[2] + p[2]};
  return total;
}

}  // namespace

void slerp(std::span<float> out, std::span<const float> x0, std::span<const float> x1, double t) {
  const auto [s00, s11, s01] = dots(x0, x1);
  double a = 1 - t, b = t;
  if (s00 > 0 && s11 > 0) {
    const double cos_omega = std::clamp(s01 / (std::sqrt(s00) * std::sqrt(s11)), -1.0, 1.0);
    if (std::fabs(cos_omega) <= 0.9995) {
      const double omega = std::acos(cos_omega), sin_omega = std::sin(omega);
      a = std::sin((1 - t) * omega) / sin_omega;
      b = std::sin(t * omega) / sin_omega;
    }
  }
  const float fa = float(a), fb = float(b);
  for_chunks(out.size(), [&](size_t lo, size_t len) {
    const float *p = x0.data() + lo, *q = x1.data() + lo;
    float* o = out.data() + lo;
    for (size_t i = 0; i < len; ++i) o[i] = fa * p[i] + fb * q[i];
  });
}

}  // namespace upcycle::merge::detail
