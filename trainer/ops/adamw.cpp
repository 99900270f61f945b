#include "trainer/ops/adamw.hpp"

#include <algorithm>
#include <bit>
#include <cmath>
#include <span>
#include <type_traits>

#include "core/dtype.hpp"
#include "core/random.hpp"
#include "core/simd.hpp"
#include "trainer/ops/check.hpp"
#include "trainer/ops/ordered_sum.hpp"

namespace upcycle::ops {

namespace {

// The update's constants at step t.
template <class T>
struct Update {
  T b1, b2, eps, step_size, inv_sqrt_correction2, keep, grad_scale;
  Update(const AdamWConfig& c, int64_t t, bool decay, T scale)
      : b1(T(c.beta1)),
        b2(T(c.beta2)),
        eps(T(c.eps)),
        step_size(T(c.lr / (1.0 - std::pow(c.beta1, double(t))))),
        inv_sqrt_correction2(T(1.0 / std::sqrt(1.0 - std::pow(c.beta2, double(t))))),
        keep(T(decay ? 1.0 - c.lr * c.weight_decay : 1.0)),
        grad_scale(scale) {}
  // Elements [0, n) of one block.
  void operator()(T* param, const T* grad, T* m, T* v, int64_t n) const {
    for (int64_t i = 0; i < n; ++i) {
      const T g = grad[i] * grad_scale;
      m[i] = b1 * m[i] + (T(1) - b1) * g;
      v[i] = b2 * v[i] + (T(1) - b2) * g * g;
      param[i] = param[i] * keep - step_size * m[i] / (std::sqrt(v[i]) * inv_sqrt_correction2 + eps);
    }
  }
};

// A block at a time, so that the bf16 copy rounds values still in cache.
constexpr int64_t kBlock = 4096;

// x rounded to bf16, up with probability (x − lower) / (upper − lower) for the 16 random bits
// `r`: they are added below the bf16 mantissa and the sum truncated. Non-finite values round to
// nearest (a carry would change their kind).
uint16_t round_stochastic(float x, uint32_t r) {
  if (!std::isfinite(x)) return f32_to_bf16(x);
  return uint16_t((std::bit_cast<uint32_t>(x) + (r & 0xffffu)) >> 16);
}

}  // namespace

template <class T>
void adamw_step(T* param, const T* grad, T* m, T* v, int64_t n, const AdamWConfig& c, int64_t t, bool decay,
                T grad_scale, uint16_t* bf16_copy) {
  require_arg(t >= 1, "adamw", "steps count from 1");
  require_arg(!bf16_copy || std::is_same_v<T, float>, "adamw", "a bf16 copy is of f32 values");
  const Update<T> update(c, t, decay, grad_scale);
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < n; b += kBlock) {
    const int64_t count = std::min(n, b + kBlock) - b;
    update(param + b, grad + b, m + b, v + b, count);
    if constexpr (std::is_same_v<T, float>)
      if (bf16_copy) convert(DType::F32, param + b, DType::BF16, bf16_copy + b, size_t(count));
  }
}

void adamw_step_bf16_moments(float* param, const float* grad, uint16_t* m, uint16_t* v, int64_t n,
                             const AdamWConfig& c, int64_t t, bool decay, float grad_scale, uint16_t* bf16_copy,
                             uint64_t seed) {
  require_arg(t >= 1, "adamw", "steps count from 1");
  const Update<float> update(c, t, decay, grad_scale);
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < n; b += kBlock) {
    const int64_t count = std::min(n, b + kBlock) - b;
    float m32[kBlock], v32[kBlock];
    convert(DType::BF16, m + b, DType::F32, m32, size_t(count));
    convert(DType::BF16, v + b, DType::F32, v32, size_t(count));
    update(param + b, grad + b, m32, v32, count);
    for (int64_t i = 0; i < count; ++i) {
      const uint64_t r = Rng(seed + uint64_t(b + i) * 0x9e3779b97f4a7c15ull).next();  // element b+i's draw
      m[b + i] = round_stochastic(m32[i], uint32_t(r));
      v[b + i] = round_stochastic(v32[i], uint32_t(r >> 16));
    }
    if (bf16_copy) convert(DType::F32, param + b, DType::BF16, bf16_copy + b, size_t(count));
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
