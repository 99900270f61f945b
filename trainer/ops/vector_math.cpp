#include "trainer/ops/vector_math.hpp"

#include <algorithm>

#include "core/simd.hpp"

namespace upcycle::ops {

UPCYCLE_SIMD_CLONES
void exp_shifted(float* out, const float* in, int64_t n, float shift, float scale) {
  for (int64_t i = 0; i < n; ++i) out[i] = scale * exp_f32(in[i] - shift);
}

UPCYCLE_SIMD_CLONES
float max_of(const float* x, int64_t n) {
  float m[kSimdLanes];
  std::fill(m, m + kSimdLanes, -std::numeric_limits<float>::infinity());
  int64_t i = 0;
  for (; i + kSimdLanes <= n; i += kSimdLanes)
    for (int l = 0; l < kSimdLanes; ++l) m[l] = x[i + l] > m[l] ? x[i + l] : m[l];
  for (; i < n; ++i) m[0] = x[i] > m[0] ? x[i] : m[0];
  return *std::max_element(m, m + kSimdLanes);
}

UPCYCLE_SIMD_CLONES
double sum_exp_shifted(const float* x, int64_t n, float shift) {
  constexpr int64_t kRun = 512;
  double sum = 0;
  for (int64_t r0 = 0; r0 < n; r0 += kRun) {
    const int64_t r1 = std::min(n, r0 + kRun);
    float acc[kSimdLanes] = {};
    int64_t i = r0;
    for (; i + kSimdLanes <= r1; i += kSimdLanes)
      for (int l = 0; l < kSimdLanes; ++l) acc[l] += exp_f32(x[i + l] - shift);
    for (; i < r1; ++i) acc[(i - r0) % kSimdLanes] += exp_f32(x[i] - shift);
    sum += double(lane_sum(acc));
  }
  return sum;
}

}  // namespace upcycle::ops
