#include "trainer/ops/adamw.hpp"

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "core/dtype.hpp"

#include "trainer/ops/check.hpp"
#include "trainer/ops/ordered_sum.hpp"

namespace upcycle::ops {

template <class T>
void adamw_step(T* param, const T* grad, T* m, T* v, int64_t n, const AdamWConfig& c, int64_t t, bool decay,
                uint16_t* bf16_copy) {
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
      const T g = grad[i];
      m[i] = b1 * m[i] + (T(1) - b1) * g;
      v[i] = b2 * v[i] + (T(1) - b2) * g * g;
      param[i] = param[i] * keep - step_size * m[i] / (std::sqrt(v[i]) * inv_sqrt_correction2 + eps);
    }
    if constexpr (std::is_same_v<T, float>)
      if (bf16_copy) convert(DType::F32, param + b, DType::BF16, bf16_copy + b, size_t(end - b));
  }
}

template <class T>
double global_norm(std::span<const std::span<const T>> tensors) {
  double sum = 0;
  for (const auto& x : tensors) {
    sum += ordered_sum(int64_t(x.size()), [&](int64_t i) { return double(x[size_t(i)]) * double(x[size_t(i)]); });
  }
  return std::sqrt(sum);
}

template <class T>
double clip_global_norm(std::span<const std::span<T>> grads, double max_norm) {
  const std::vector<std::span<const T>> views(grads.begin(), grads.end());
  const double norm = global_norm<T>(views);
  if (norm <= max_norm) return norm;
  const T scale = T(max_norm / (norm + 1e-6));
  for (const auto& g : grads) {
    const int64_t n = int64_t(g.size());
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) g[size_t(i)] *= scale;
  }
  return norm;
}

template void adamw_step(float*, const float*, float*, float*, int64_t, const AdamWConfig&, int64_t, bool, uint16_t*);
template void adamw_step(double*, const double*, double*, double*, int64_t, const AdamWConfig&, int64_t, bool,
                         uint16_t*);
template double global_norm(std::span<const std::span<const float>>);
template double global_norm(std::span<const std::span<const double>>);
template double clip_global_norm(std::span<const std::span<float>>, double);
template double clip_global_norm(std::span<const std::span<double>>, double);

}  // namespace upcycle::ops
