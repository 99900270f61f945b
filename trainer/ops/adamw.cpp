#include "trainer/ops/adamw.hpp"

#include <algorithm>
#include <cmath>
#include <span>
#include <type_traits>

#include "core/dtype.hpp"
#include "core/simd.hpp"
#include "trainer/ops/check.hpp"
#include "trainer/ops/ordered_sum.hpp"

namespace upcycle::ops {

template <class T>
void adamw_step(T* param, const T* grad, T* m, T* v, int64_t n, const AdamWConfig& c, int64_t t, bool decay,
                T grad_scale, uint16_t* bf16_copy) {
  require_arg(t >= 1, "adamw", "steps count from 1");
  require_arg(!bf16_copy || std::is_same_v<T, float>, "adamw", "a bf16 copy is of f32 values");
  const T b1 = T(c.beta1), b2 = T(c.beta2), eps = T(c.eps);
  const T step_size = T(c.lr / (1.0 - std::pow(c.beta1, double(t))));
  const T inv_sqrt_correction2 = T(1.0 / std::sqrt(1.0 - std::pow(c.beta2, double(t))));
  const T keep = T(decay ? 1.0 - c.lr * c.weight_decay : 1.0);
  // A block at a time, so that the copy rounds values still in cache.
  constexpr int64_t kBlock = 4096;
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < n; b += kBlock) {
    const int64_t end = std::min(n, b + kBlock);
    for (int64_t i = b; i < end; ++i) {
      const T g = grad[i] * grad_scale;
      m[i] = b1 * m[i] + (T(1) - b1) * g;
      v[i] = b2 * v[i] + (T(1) - b2) * g * g;
      param[i] = param[i] * keep - step_size * m[i] / (std::sqrt(v[i]) * inv_sqrt_correction2 + eps);
    }
    if constexpr (std::is_same_v<T, float>)
      if (bf16_copy) convert(DType::F32, param + b, DType::BF16, bf16_copy + b, size_t(end - b));
  }
}

namespace {

// Σ x² over one block in double: 8 lanes (independent sums, which vectorise), then the lanes in
// order. The block's start is a multiple of 8, so a value's lane is fixed.
UPCYCLE_SIMD_CLONES
double block_squares(const float* x, int64_t n) {
  constexpr int kLanes = 8;
  double acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int l = 0; l < kLanes; ++l) acc[l] += double(x[i + l]) * double(x[i + l]);
  for (; i < n; ++i) acc[i % kLanes] += double(x[i]) * double(x[i]);
  double s = 0;
  for (double a : acc) s += a;
  return s;
}
double block_squares(const double* x, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += x[i] * x[i];
  return s;
}

}  // namespace

template <class T>
double global_norm(std::span<const std::span<const T>> tensors) {
  constexpr int64_t kBlock = 4096;
  double sum = 0;
  for (const auto& x : tensors) {
    const int64_t n = int64_t(x.size());
    sum += ordered_sum(
        (n + kBlock - 1) / kBlock,
        [&](int64_t b) { return block_squares(x.data() + b * kBlock, std::min(kBlock, n - b * kBlock)); }, 1);
  }
  return std::sqrt(sum);
}

double clip_scale(double norm, double max_norm) { return norm > max_norm ? max_norm / (norm + 1e-6) : 1.0; }

template void adamw_step(float*, const float*, float*, float*, int64_t, const AdamWConfig&, int64_t, bool, float,
                         uint16_t*);
template void adamw_step(double*, const double*, double*, double*, int64_t, const AdamWConfig&, int64_t, bool, double,
                         uint16_t*);
template double global_norm(std::span<const std::span<const float>>);
template double global_norm(std::span<const std::span<const double>>);

}  // namespace upcycle::ops
