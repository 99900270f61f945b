#include "trainer/ops/router.hpp"

#include <algorithm>
#include <cmath>

#include "trainer/ops/check.hpp"

namespace upcycle::ops {

namespace {

template <class T>
void softmax_row(T* p, const T* x, int64_t E) {
  const T mx = *std::max_element(x, x + E);
  double sum = 0;
  for (int64_t e = 0; e < E; ++e) sum += std::exp(double(x[e] - mx));
  for (int64_t e = 0; e < E; ++e) p[e] = T(std::exp(double(x[e] - mx)) / sum);
}

// k passes of "largest p[e] + bias[e] not yet taken": E is small (tens), and the strict > keeps
// the lower index on a tie, as a stable sort would.
template <class T>
void top_k_row(int32_t* idx, const T* p, const T* bias, int64_t E, int64_t k) {
  auto key = [&](int64_t e) { return bias ? p[e] + bias[e] : p[e]; };
  for (int64_t j = 0; j < k; ++j) {
    int32_t best = -1;
    for (int64_t e = 0; e < E; ++e) {
      if (std::find(idx, idx + j, int32_t(e)) != idx + j) continue;
      if (best < 0 || key(e) > key(best)) best = int32_t(e);
    }
    idx[j] = best;
  }
}

}  // namespace

template <class T>
void router_forward(int32_t* idx, T* w, T* probs, const T* logits, const std::type_identity_t<T>* bias, int64_t N, int64_t E,
                    int64_t k, bool renormalise) {
  require_arg(k >= 1 && k <= E, "router", "top_k must be in [1, experts]");
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    T* p = probs + n * E;
    softmax_row(p, logits + n * E, E);
    top_k_row(idx + n * k, p, bias, E, k);
    double kept = 0;
    for (int64_t j = 0; j < k; ++j) kept += p[idx[n * k + j]];
    if (!renormalise) kept = 1;
    for (int64_t j = 0; j < k; ++j) w[n * k + j] = T(p[idx[n * k + j]] / kept);
  }
}

template <class T>
void router_backward(T* d_logits, const T* d_w, const T* w, const T* probs, const int32_t* idx, int64_t N, int64_t E,
                     int64_t k, bool renormalise) {
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    double mean_dw = 0;  // Σ_j d_w·w: the gradient's component along the normalisation
    for (int64_t j = 0; j < k; ++j) mean_dw += double(d_w[n * k + j]) * double(w[n * k + j]);
    if (renormalise) {
      for (int64_t j = 0; j < k; ++j)
        d_logits[n * E + idx[n * k + j]] += T(double(w[n * k + j]) * (double(d_w[n * k + j]) - mean_dw));
      continue;
    }
    for (int64_t e = 0; e < E; ++e) {
      double d_p = 0;  // the gradient of probs[n,e]: d_w where e was chosen
      for (int64_t j = 0; j < k; ++j)
        if (idx[n * k + j] == e) d_p = double(d_w[n * k + j]);
      d_logits[n * E + e] += T(double(probs[n * E + e]) * (d_p - mean_dw));
    }
  }
}

template void router_forward(int32_t*, float*, float*, const float*, const float*, int64_t, int64_t, int64_t, bool);
template void router_forward(int32_t*, double*, double*, const double*, const double*, int64_t, int64_t, int64_t, bool);
template void router_backward(float*, const float*, const float*, const float*, const int32_t*, int64_t, int64_t,
                              int64_t, bool);
template void router_backward(double*, const double*, const double*, const double*, const int32_t*, int64_t, int64_t,
                              int64_t, bool);

}  // namespace upcycle::ops
