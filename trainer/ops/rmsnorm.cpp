#include "trainer/ops/rmsnorm.hpp"

#include <algorithm>
#include <array>
#include <cmath>

namespace upcycle::ops {

template <class T>
void rmsnorm_forward(T* out, T* rstd, const T* in, const T* weight, int64_t N, int64_t C, double eps) {
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    const T* x = in + n * C;
    T* y = out + n * C;
    double sum_sq = 0;
    for (int64_t c = 0; c < C; ++c) sum_sq += double(x[c]) * double(x[c]);
    const T r = T(1.0 / std::sqrt(sum_sq / double(C) + eps));
    rstd[n] = r;
    // Normalise first, then weigh: the order (and rounding) of transformers.
    for (int64_t c = 0; c < C; ++c) y[c] = weight[c] * (x[c] * r);
  }
}

namespace {

// d_in[n,:] += r·g − r³·x·(Σ_c g⊙x)/C, the expanded form of r·(g − x̂·mean(g⊙x̂)).
template <class T>
void rmsnorm_backward_input(T* d_in, const T* d_out, const T* in, const T* weight, const T* rstd, int64_t N,
                            int64_t C) {
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    const T* x = in + n * C;
    const T* dy = d_out + n * C;
    T* dx = d_in + n * C;
    double gx = 0;
    for (int64_t c = 0; c < C; ++c) gx += double(dy[c]) * double(weight[c]) * double(x[c]);
    const double r = rstd[n];
    const T coef = T(r * r * r * gx / double(C));
    for (int64_t c = 0; c < C; ++c) dx[c] += T(r) * (dy[c] * weight[c]) - coef * x[c];
  }
}

// A sum over all tokens per column: threads split the columns (no shared writes) and each column
// accumulates in double, since N runs to thousands.
template <class T>
void rmsnorm_backward_weight(T* d_weight, const T* d_out, const T* in, const T* rstd, int64_t N, int64_t C) {
  constexpr int64_t kCols = 64;
#pragma omp parallel for schedule(static)
  for (int64_t c0 = 0; c0 < C; c0 += kCols) {
    const int64_t width = std::min(C - c0, kCols);
    std::array<double, kCols> acc{};
    for (int64_t n = 0; n < N; ++n) {
      const T* x = in + n * C + c0;
      const T* dy = d_out + n * C + c0;
      for (int64_t c = 0; c < width; ++c) acc[c] += double(dy[c]) * double(x[c] * rstd[n]);
    }
    for (int64_t c = 0; c < width; ++c) d_weight[c0 + c] += T(acc[c]);
  }
}

}  // namespace

template <class T>
void rmsnorm_backward(T* d_in, T* d_weight, const T* d_out, const T* in, const T* weight, const T* rstd, int64_t N,
                      int64_t C) {
  if (d_in) rmsnorm_backward_input(d_in, d_out, in, weight, rstd, N, C);
  if (d_weight) rmsnorm_backward_weight(d_weight, d_out, in, rstd, N, C);
}

template void rmsnorm_forward(float*, float*, const float*, const float*, int64_t, int64_t, double);
template void rmsnorm_forward(double*, double*, const double*, const double*, int64_t, int64_t, double);
template void rmsnorm_backward(float*, float*, const float*, const float*, const float*, const float*, int64_t,
                               int64_t);
template void rmsnorm_backward(double*, double*, const double*, const double*, const double*, const double*, int64_t,
                               int64_t);

}  // namespace upcycle::ops
