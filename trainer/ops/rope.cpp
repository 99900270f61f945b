#include "trainer/ops/rope.hpp"

#include <cmath>

#include "trainer/ops/check.hpp"

namespace upcycle::ops {

namespace {

void check_positions(const int32_t* pos, int64_t N, int64_t max_positions) {
  for (int64_t n = 0; n < N; ++n)
    require_arg(pos[n] >= 0 && pos[n] < max_positions, "rope",
                "position " + std::to_string(pos[n]) + " outside the table of " + std::to_string(max_positions));
}

}  // namespace

template <class T>
RopeTable<T>::RopeTable(int64_t head_dim_, int64_t max_positions_, double theta, const RopeScaling& scaling)
    : head_dim(head_dim_), max_positions(max_positions_) {
  const std::vector<float> inv_freq = rope_inv_freq(head_dim, theta, scaling);
  const size_t half = inv_freq.size();
  cos.resize(size_t(max_positions) * half);
  sin.resize(cos.size());
  for (int64_t p = 0; p < max_positions; ++p) {
    for (size_t i = 0; i < half; ++i) {
      const float angle = float(p) * inv_freq[i];
      cos[size_t(p) * half + i] = T(std::cos(double(angle)));
      sin[size_t(p) * half + i] = T(std::sin(double(angle)));
    }
  }
}

namespace {
// Rotates each head's pairs (i, i + D/2) by the angle of its position: y = R(x) forward,
// y += R^T(x) (the inverse rotation, accumulated) for the backward.
template <bool Backward, class T>
void rotate(T* y, const T* x, const int32_t* pos, const RopeTable<T>& table, int64_t N, int64_t n_heads) {
  check_positions(pos, N, table.max_positions);
  const int64_t D = table.head_dim, half = D / 2;
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    const T* c = table.cos.data() + pos[n] * half;
    const T* s = table.sin.data() + pos[n] * half;
    for (int64_t h = 0; h < n_heads; ++h) {
      const T* xh = x + (n * n_heads + h) * D;
      T* yh = y + (n * n_heads + h) * D;
      for (int64_t i = 0; i < half; ++i) {
        const T x1 = xh[i], x2 = xh[i + half];
        if constexpr (Backward) {
          yh[i] += x1 * c[i] + x2 * s[i];
          yh[i + half] += x2 * c[i] - x1 * s[i];
        } else {
          yh[i] = x1 * c[i] - x2 * s[i];
          yh[i + half] = x2 * c[i] + x1 * s[i];
        }
      }
    }
  }
}
}  // namespace

template <class T>
void rope_forward(T* out, const T* in, const int32_t* pos, const RopeTable<T>& table, int64_t N, int64_t n_heads) {
  rotate<false>(out, in, pos, table, N, n_heads);
}

template <class T>
void rope_backward(T* d_in, const T* d_out, const int32_t* pos, const RopeTable<T>& table, int64_t N, int64_t n_heads) {
  rotate<true>(d_in, d_out, pos, table, N, n_heads);
}

template struct RopeTable<float>;
template struct RopeTable<double>;
template void rope_forward(float*, const float*, const int32_t*, const RopeTable<float>&, int64_t, int64_t);
template void rope_forward(double*, const double*, const int32_t*, const RopeTable<double>&, int64_t, int64_t);
template void rope_backward(float*, const float*, const int32_t*, const RopeTable<float>&, int64_t, int64_t);
template void rope_backward(double*, const double*, const int32_t*, const RopeTable<double>&, int64_t, int64_t);

}  // namespace upcycle::ops
