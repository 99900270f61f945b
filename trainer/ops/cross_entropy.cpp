#include "trainer/ops/cross_entropy.hpp"

#include <algorithm>
#include <cmath>
#include <type_traits>

#include <Eigen/Core>

#include "trainer/ops/check.hpp"
#include "trainer/ops/ordered_sum.hpp"
#include "trainer/ops/vector_math.hpp"

namespace upcycle::ops {

namespace {

void check_targets(const int32_t* targets, int64_t N, int64_t V) {
  for (int64_t n = 0; n < N; ++n)
    require_arg(targets[n] == kIgnoreIndex || (targets[n] >= 0 && targets[n] < V), "cross entropy",
                "target " + std::to_string(targets[n]) + " outside the vocabulary");
}

template <class T>
using Row = Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>;

// Two passes over the row: the max, then the exponentials summed per chunk, the chunk sums in
// double, since 49152 terms summed in float would lose about 1e-5 (vector_math's for float).
template <class T>
double logsumexp(const T* x, int64_t V) {
  if constexpr (std::is_same_v<T, float>) {
    const float mx = max_of(x, V);
    return double(mx) + std::log(sum_exp_shifted(x, V, mx));
  } else {
    constexpr int64_t kChunk = 512;
    const Row<T> row(x, V);
    const T mx = row.maxCoeff();
    double sum = 0;
    for (int64_t c0 = 0; c0 < V; c0 += kChunk) sum += (row.segment(c0, std::min(kChunk, V - c0)) - mx).exp().sum();
    return double(mx) + std::log(sum);
  }
}

}  // namespace

template <class T>
CrossEntropyLoss cross_entropy_forward(T* lse, const T* logits, const int32_t* targets, int64_t N, int64_t V) {
  check_targets(targets, N, V);
  const int64_t count = std::count_if(targets, targets + N, [](int32_t t) { return t != kIgnoreIndex; });
  const double sum = ordered_sum(N, [&](int64_t n) {
    const T* x = logits + n * V;
    const double z = logsumexp(x, V);
    lse[n] = T(z);
    return targets[n] == kIgnoreIndex ? 0.0 : z - double(x[targets[n]]);
  }, 1);
  return {count ? sum / double(count) : 0.0, count};
}

template <class T>
void cross_entropy_backward(T* d_logits, const T* logits, const T* lse, const int32_t* targets, int64_t N, int64_t V,
                            int64_t count, double d_loss) {
  check_targets(targets, N, V);
  const T scale = T(count ? d_loss / double(count) : 0.0);
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>> dx(d_logits + n * V, V);
    const int32_t t = targets[n];
    if (t == kIgnoreIndex) {
      dx.setZero();
      continue;
    }
    // Element by element, so in place is safe.
    if constexpr (std::is_same_v<T, float>) exp_shifted(dx.data(), logits + n * V, V, lse[n], scale);
    else dx = scale * (Row<T>(logits + n * V, V) - lse[n]).exp();
    dx[t] -= scale;
  }
}

template CrossEntropyLoss cross_entropy_forward(float*, const float*, const int32_t*, int64_t, int64_t);
template CrossEntropyLoss cross_entropy_forward(double*, const double*, const int32_t*, int64_t, int64_t);
template void cross_entropy_backward(float*, const float*, const float*, const int32_t*, int64_t, int64_t, int64_t,
                                     double);
template void cross_entropy_backward(double*, const double*, const double*, const int32_t*, int64_t, int64_t, int64_t,
                                     double);

}  // namespace upcycle::ops
