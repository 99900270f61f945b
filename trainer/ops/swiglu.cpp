#include "trainer/ops/swiglu.hpp"

#include <algorithm>
#include <type_traits>

#include <Eigen/Core>

#include "core/simd.hpp"
#include "trainer/ops/vector_math.hpp"

namespace upcycle::ops {

namespace {

template <class T>
using Array = Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>;
template <class T>
using ConstArray = Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>;

// Threads take chunks; within a chunk the float loops below are vectorised for each build
// (vector_math's exp), and Eigen does double's. Both logistics saturate to exactly 0 and 1 far
// out rather than overflowing.
constexpr int64_t kChunk = 4096;

[[gnu::always_inline]] inline float logistic(float g) { return 1.0f / (1.0f + exp_f32(-g)); }

UPCYCLE_SIMD_CLONES
void swiglu_forward_f32(float* out, const float* g, const float* u, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = g[i] * logistic(g[i]) * u[i];
}

UPCYCLE_SIMD_CLONES
void swiglu_backward_f32(float* d_gate, float* d_up, const float* dy, const float* g, const float* u, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float s = logistic(g[i]);
    d_gate[i] += dy[i] * u[i] * s * (1.0f + g[i] * (1.0f - s));
    d_up[i] += dy[i] * g[i] * s;
  }
}

}  // namespace

template <class T>
void swiglu_forward(T* out, const T* gate, const T* up, int64_t count) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < count; i += kChunk) {
    const int64_t n = std::min(kChunk, count - i);
    if constexpr (std::is_same_v<T, float>) {
      swiglu_forward_f32(out + i, gate + i, up + i, n);
    } else {
      const ConstArray<T> g(gate + i, n), u(up + i, n);
      Array<T>(out + i, n) = g * g.logistic() * u;
    }
  }
}

template <class T>
void swiglu_backward(T* d_gate, T* d_up, const T* d_out, const T* gate, const T* up, int64_t count) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < count; i += kChunk) {
    const int64_t n = std::min(kChunk, count - i);
    if constexpr (std::is_same_v<T, float>) {
      swiglu_backward_f32(d_gate + i, d_up + i, d_out + i, gate + i, up + i, n);
    } else {
      const ConstArray<T> g(gate + i, n), u(up + i, n), dy(d_out + i, n);
      const Eigen::Array<T, Eigen::Dynamic, 1> s = g.logistic();
      Array<T>(d_gate + i, n) += dy * u * s * (T(1) + g * (T(1) - s));
      Array<T>(d_up + i, n) += dy * g * s;
    }
  }
}

template void swiglu_forward(float*, const float*, const float*, int64_t);
template void swiglu_forward(double*, const double*, const double*, int64_t);
template void swiglu_backward(float*, float*, const float*, const float*, const float*, int64_t);
template void swiglu_backward(double*, double*, const double*, const double*, const double*, int64_t);

}  // namespace upcycle::ops
