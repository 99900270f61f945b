#include "trainer/ops/attention_cached.hpp"

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include <Eigen/Core>

#include "trainer/ops/blas_threads.hpp"
#include "trainer/ops/check.hpp"
#include "trainer/ops/vector_math.hpp"

namespace upcycle::ops {

namespace {

template <class T>
using Rows = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using ConstStridedRows = Eigen::Map<const Rows<T>, 0, Eigen::OuterStride<>>;

// Query i (position p0 + i), kv head g and its G query heads. scores is scratch for G rows of
// the query's visible keys.
template <class T>
void cached_kv_head(T* out, const T* q, const T* k_cache, const T* v_cache, int64_t p0, int64_t i, int64_t g,
                    const AttentionShape& sh, T* scores) {
  const int64_t D = sh.head_dim, G = sh.heads / sh.kv_heads, p = p0 + i;
  const int64_t first = sh.window ? std::max<int64_t>(0, p - sh.window + 1) : 0, L = p + 1 - first;
  const T scale = T(1 / std::sqrt(double(D)));
  // The group's query heads are adjacent in q and out: a contiguous [G, D] block.
  Eigen::Map<const Rows<T>> Q(q + (i * sh.heads + g * G) * D, G, D);
  Eigen::Map<Rows<T>> O(out + (i * sh.heads + g * G) * D, G, D);
  const ConstStridedRows<T> K(k_cache + (first * sh.kv_heads + g) * D, L, D, Eigen::OuterStride<>(sh.kv_heads * D));
  const ConstStridedRows<T> V(v_cache + (first * sh.kv_heads + g) * D, L, D, Eigen::OuterStride<>(sh.kv_heads * D));
  Eigen::Map<Rows<T>> S(scores, G, L);
  S.noalias() = scale * (Q * K.transpose());
  Eigen::Array<T, Eigen::Dynamic, 1> l(G);
  for (int64_t r = 0; r < G; ++r) {
    // Subtracting the row's max keeps every exp <= 1: no overflow, and l >= 1.
    T* row = S.row(r).data();
    if constexpr (std::is_same_v<T, float>) exp_shifted(row, row, L, max_of(row, L));
    else S.row(r) = (S.row(r).array() - S.row(r).maxCoeff()).exp().matrix();
    l[r] = S.row(r).sum();
  }
  O.noalias() = S * V;
  O.array().colwise() /= l;
}

}  // namespace

template <class T>
void attention_cached(T* out, const T* q, const T* k_cache, const T* v_cache, int64_t p0, const AttentionShape& shape) {
  require_arg(shape.heads > 0 && shape.kv_heads > 0 && shape.heads % shape.kv_heads == 0, "attention_cached",
              "kv_heads must divide heads");
  require_arg(shape.head_dim > 0 && shape.window >= 0 && shape.tokens >= 0 && p0 >= 0, "attention_cached", "bad sizes");
  const int64_t n = shape.tokens, G = shape.heads / shape.kv_heads;
  const int64_t max_keys = shape.window ? std::min(shape.window, p0 + n) : p0 + n;
  const SingleThreadedBlas single;
#pragma omp parallel
  {
    std::vector<T> scores(size_t(G * max_keys));
    // Later queries see more keys: dynamic scheduling evens out a prefill's triangle.
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < n * shape.kv_heads; ++task)
      cached_kv_head(out, q, k_cache, v_cache, p0, task / shape.kv_heads, task % shape.kv_heads, shape, scores.data());
  }
}

template void attention_cached(float*, const float*, const float*, const float*, int64_t, const AttentionShape&);
template void attention_cached(double*, const double*, const double*, const double*, int64_t, const AttentionShape&);

}  // namespace upcycle::ops
