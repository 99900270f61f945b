#include "trainer/ops/router_losses.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

#include "trainer/ops/check.hpp"
#include "trainer/ops/ordered_sum.hpp"
#include "trainer/ops/vector_math.hpp"

namespace upcycle::ops {

namespace {

// f[e]: the fraction of tokens that picked expert e in any of their k slots: this batch's, or
// counts[e] / counted_tokens when counts is given (global-batch balancing).
std::vector<double> selection_fractions(const int32_t* idx, int64_t N, int64_t E, int64_t k, const int64_t* counts,
                                        int64_t counted_tokens) {
  std::vector<double> f(size_t(E), 0.0);
  if (counts) {
    require_arg(counted_tokens > 0, "load balancing loss", "global-batch counts need a positive token count");
    for (int64_t e = 0; e < E; ++e) f[size_t(e)] = double(counts[e]) / double(counted_tokens);
    return f;
  }
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

// M: the tokens with a target; throws on a target outside [-1, E).
int64_t counted_targets(const int32_t* targets, int64_t N, int64_t E) {
  int64_t M = 0;
  for (int64_t n = 0; n < N; ++n) {
    require_arg(targets[n] >= -1 && targets[n] < E, "router BCE loss", "target outside [-1, E)");
    M += targets[n] >= 0;
  }
  return M;
}

// log(1 + e^z) without overflow, and without losing the small values for very negative z.
double softplus(double z) { return std::max(z, 0.0) + std::log1p(std::exp(-std::abs(z))); }

}  // namespace

template <class T>
double load_balancing_loss_forward(const T* probs, const int32_t* idx, int64_t N, int64_t E, int64_t k, double coef,
                                   const int64_t* counts, int64_t counted_tokens) {
  if (N == 0) return 0.0;
  const std::vector<double> f = selection_fractions(idx, N, E, k, counts, counted_tokens);
  std::vector<double> P(size_t(E), 0.0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t e = 0; e < E; ++e) P[size_t(e)] += probs[n * E + e];
  double dot = 0;
  for (int64_t e = 0; e < E; ++e) dot += f[size_t(e)] * P[size_t(e)] / double(N);
  return coef * double(E) * dot;
}

template <class T>
void load_balancing_loss_backward(T* d_logits, const T* probs, const int32_t* idx, int64_t N, int64_t E, int64_t k,
                                  double coef, double d_loss, const int64_t* counts, int64_t counted_tokens) {
  if (N == 0) return;
  std::vector<double> g = selection_fractions(idx, N, E, k, counts, counted_tokens);
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

template <class T>
double router_bce_loss_forward(const T* logits, const int32_t* targets, int64_t N, int64_t E, double coef) {
  const int64_t M = counted_targets(targets, N, E);
  if (M == 0) return 0.0;
  const double sum = ordered_sum(N, [&](int64_t n) {
    if (targets[n] < 0) return 0.0;
    const T* z = logits + n * E;
    double s = 0;
    for (int64_t e = 0; e < E; ++e) s += softplus(double(z[e])) - (e == targets[n] ? double(z[e]) : 0.0);
    return s;
  });
  return coef * sum / (double(M) * double(E));
}

template <class T>
void router_bce_loss_backward(T* d_logits, const T* logits, const int32_t* targets, int64_t N, int64_t E, double coef,
                              double d_loss) {
  const int64_t M = counted_targets(targets, N, E);
  if (M == 0) return;
  const double scale = d_loss * coef / (double(M) * double(E));
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    if (targets[n] < 0) continue;
    const T* z = logits + n * E;
    for (int64_t e = 0; e < E; ++e)
      d_logits[n * E + e] += T(scale * (logistic(double(z[e])) - (e == targets[n] ? 1.0 : 0.0)));
  }
}

template double load_balancing_loss_forward(const float*, const int32_t*, int64_t, int64_t, int64_t, double, const int64_t*,
                                            int64_t);
template double load_balancing_loss_forward(const double*, const int32_t*, int64_t, int64_t, int64_t, double, const int64_t*,
                                            int64_t);
template void load_balancing_loss_backward(float*, const float*, const int32_t*, int64_t, int64_t, int64_t, double,
                                           double, const int64_t*, int64_t);
template void load_balancing_loss_backward(double*, const double*, const int32_t*, int64_t, int64_t, int64_t, double,
                                           double, const int64_t*, int64_t);
template double router_z_loss_forward(const float*, int64_t, int64_t, double);
template double router_z_loss_forward(const double*, int64_t, int64_t, double);
template void router_z_loss_backward(float*, const float*, int64_t, int64_t, double, double);
template void router_z_loss_backward(double*, const double*, int64_t, int64_t, double, double);
template double router_bce_loss_forward(const float*, const int32_t*, int64_t, int64_t, double);
template double router_bce_loss_forward(const double*, const int32_t*, int64_t, int64_t, double);
template void router_bce_loss_backward(float*, const float*, const int32_t*, int64_t, int64_t, double, double);
template void router_bce_loss_backward(double*, const double*, const int32_t*, int64_t, int64_t, double, double);

}  // namespace upcycle::ops
