#include "trainer/ops/router_losses.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

#include "trainer/ops/check.hpp"
#include "trainer/ops/ordered_sum.hpp"

namespace upcycle::ops {

namespace {

// f[e]: the fraction of tokens that picked expert e in any of their k slots.
std::vector<double> selection_fractions(const int32_t* idx, int64_t N, int64_t E, int64_t k) {
  std::vector<double> f(size_t(E), 0.0);
  for (int64_t s = 0; s < N * k; ++s) {
    require_arg(idx[s] >= 0 && idx[s] < E, "load balancing loss", "expert index outside [0, E)");
    f[size_t(idx[s])] += 1.0;
  }
  for (double& x : f) x /= double(N);
  return f;
}

template <class T>
double logsumexp(const T* x, int64_t E) {
  const double mx = *std::max_element(x, x + E);
  double sum = 0;
  for (int64_t e = 0; e < E; ++e) sum += std::exp(double(x[e]) - mx);
  return mx + std::log(sum);
}

}  // namespace

template <class T>
double load_balancing_loss_forward(const T* probs, const int32_t* idx, int64_t N, int64_t E, int64_t k, double coef) {
  if (N == 0) return 0.0;
  const std::vector<double> f = selection_fractions(idx, N, E, k);
  std::vector<double> P(size_t(E), 0.0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t e = 0; e < E; ++e) P[size_t(e)] += probs[n * E + e];
  double dot = 0;
  for (int64_t e = 0; e < E; ++e) dot += f[size_t(e)] * P[size_t(e)] / double(N);
  return coef * double(E) * dot;
}

template <class T>
void load_balancing_loss_backward(T* d_logits, const T* probs, const int32_t* idx, int64_t N, int64_t E, int64_t k,
                                  double coef, double d_loss) {
  if (N == 0) return;
  std::vector<double> g = selection_fractions(idx, N, E, k);
  for (double& x : g) x *= d_loss * coef * double(E) / double(N);
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    const T* p = probs + n * E;
    double gp = 0;
    for (int64_t e = 0; e < E; ++e) gp += g[size_t(e)] * double(p[e]);
    for (int64_t e = 0; e < E; ++e) d_logits[n * E + e] += T(double(p[e]) * (g[size_t(e)] - gp));
  }
}

template <class T>
double router_z_loss_forward(const T* logits, int64_t N, int64_t E, double coef) {
  if (N == 0) return 0.0;
  const double sum = ordered_sum(N, [&](int64_t n) {
    const double z = logsumexp(logits + n * E, E);
    return z * z;
  });
  return coef * sum / double(N);
}

template <class T>
void router_z_loss_backward(T* d_logits, const T* logits, int64_t N, int64_t E, double coef, double d_loss) {
  if (N == 0) return;
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    const T* x = logits + n * E;
    const double z = logsumexp(x, E);
    const double scale = d_loss * coef * 2.0 * z / double(N);
    for (int64_t e = 0; e < E; ++e) d_logits[n * E + e] += T(scale * std::exp(double(x[e]) - z));
  }
}

template double load_balancing_loss_forward(const float*, const int32_t*, int64_t, int64_t, int64_t, double);
template double load_balancing_loss_forward(const double*, const int32_t*, int64_t, int64_t, int64_t, double);
template void load_balancing_loss_backward(float*, const float*, const int32_t*, int64_t, int64_t, int64_t, double,
                                           double);
template void load_balancing_loss_backward(double*, const double*, const int32_t*, int64_t, int64_t, int64_t, double,
                                           double);
template double router_z_loss_forward(const float*, int64_t, int64_t, double);
template double router_z_loss_forward(const double*, int64_t, int64_t, double);
template void router_z_loss_backward(float*, const float*, int64_t, int64_t, double, double);
template void router_z_loss_backward(double*, const double*, int64_t, int64_t, double, double);

}  // namespace upcycle::ops
