// exp over float arrays, vectorised by the compiler for each build of core/simd.hpp (SSE2, AVX2,
// AVX-512) with the same bits in all of them: the softmaxes of attention and the loss, and
// SwiGLU's logistic, spend most of their time here. libm's expf does not vectorise, and Eigen's
// exp rounds differently where the CPU has FMA; this one is Cephes' expf written as plain float
// arithmetic (no FMA under -ffp-contract=off), so only the vector width changes between builds.
// Also the logistic in double, for the ops that take it a row at a time.
#pragma once
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>

namespace upcycle::ops {

// e^x within 2 ulp on [-86, 88.72]; exactly 0 below −86 (e^−86 ≈ 4e−38: nothing a sum of
// softmax terms, each ≥ e^0 at its max, can see), +inf above 88.72, NaN for NaN.
// x = k·ln2 + r with |r| ≤ ln2/2 (ln2 in two parts, so r is exact), e^r by Cephes' degree-7
// polynomial, and 2^k put into the exponent bits.
[[gnu::always_inline]] inline float exp_f32(float x) {
  constexpr float kLog2e = 1.44269504088896341f, kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
  constexpr float kRound = 12582912.0f;  // 1.5·2^23: adding and subtracting it rounds to an integer
  const float xc = x < -86.0f ? -86.0f : (x > 88.72283905f ? 88.72283905f : x);
  const float k = (xc * kLog2e + kRound) - kRound;  // in [-124, 128]
  const float r = (xc - k * kLn2Hi) - k * kLn2Lo;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float er = p * (r * r) + r + 1.0f;
  // 2^k as 2^(k−1)·2, so that k = 128 stays inside the exponent's range.
  const float y = er * std::bit_cast<float>((int32_t(k) + 126) << 23) * 2.0f;
  if (x != x) return x;
  if (x < -86.0f) return 0.0f;
  if (x > 88.72283905f) return std::numeric_limits<float>::infinity();
  return y;
}

// 1 / (1 + e^−x) in double, saturating to exactly 0 and 1 far out (never e^x over e^x).
inline double logistic(double x) {
  if (x >= 0) return 1 / (1 + std::exp(-x));
  const double e = std::exp(x);
  return e / (1 + e);
}

// out[i] = scale · e^(in[i] − shift); in place is allowed.
void exp_shifted(float* out, const float* in, int64_t n, float shift, float scale = 1.0f);
// max_i x[i] (−inf for n = 0).
float max_of(const float* x, int64_t n);
// Σ_i e^(x[i] − shift): 16 lanes in float over each run of 512 terms, the runs summed in double
// (49152 terms summed in float would lose about 1e−5).
double sum_exp_shifted(const float* x, int64_t n, float shift);

}  // namespace upcycle::ops
