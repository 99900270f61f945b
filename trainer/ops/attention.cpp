#include "trainer/ops/attention.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <type_traits>

#include <Eigen/Core>

#include "trainer/ops/blas_threads.hpp"
#include "trainer/ops/check.hpp"
#include "trainer/ops/vector_math.hpp"

namespace upcycle::ops {

namespace {

// Each tile is copied into contiguous row-major buffers and multiplied as a GEMM (OpenBLAS,
// through Eigen), single-threaded inside the OpenMP region (SingleThreadedBlas).
template <class T>
using Rows = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using HeadRows = Eigen::Map<Rows<T>, 0, Eigen::OuterStride<>>;
template <class T>
using ConstHeadRows = Eigen::Map<const Rows<T>, 0, Eigen::OuterStride<>>;

// Tokens [t0, t1) of head h of a [N, n_heads, D] tensor, as a (t1 - t0) × D matrix.
template <class T>
HeadRows<T> head_rows(T* x, int64_t n_heads, int64_t h, int64_t D, int64_t t0, int64_t t1) {
  return HeadRows<T>(x + (t0 * n_heads + h) * D, t1 - t0, D, Eigen::OuterStride<>(n_heads * D));
}
template <class T>
ConstHeadRows<T> head_rows(const T* x, int64_t n_heads, int64_t h, int64_t D, int64_t t0, int64_t t1) {
  return ConstHeadRows<T>(x + (t0 * n_heads + h) * D, t1 - t0, D, Eigen::OuterStride<>(n_heads * D));
}

// The keys query i sees, in its sequence starting at token a: [first_key, i].
int64_t first_key(int64_t i, int64_t a, int64_t window) { return window ? std::max(a, i - window + 1) : a; }

void check_shape(const int32_t* cu_seqlens, int64_t n_seqs, const AttentionShape& s) {
  require_arg(s.heads > 0 && s.kv_heads > 0 && s.heads % s.kv_heads == 0, "attention", "kv_heads must divide heads");
  require_arg(s.head_dim > 0 && s.tile > 0 && s.window >= 0 && s.tokens >= 0, "attention", "bad sizes");
  require_arg(n_seqs >= 1 && cu_seqlens[0] == 0 && cu_seqlens[n_seqs] == s.tokens, "attention",
              "cu_seqlens must run from 0 to the token count");
  for (int64_t i = 0; i < n_seqs; ++i)
    require_arg(cu_seqlens[i] <= cu_seqlens[i + 1], "attention", "cu_seqlens must not decrease");
}

// Query i's visible keys inside the key tile [k0, k0 + nk), as tile columns [lo, hi); empty
// when lo >= hi.
struct Visible {
  int64_t lo, hi;
  bool empty() const { return lo >= hi; }
};
Visible visible_keys(int64_t i, int64_t k0, int64_t nk, int64_t a, int64_t window) {
  return {std::max(k0, first_key(i, a, window)) - k0, std::min(k0 + nk, i + 1) - k0};
}

// A score row becomes exp(score − ref) on its visible columns and exactly 0 elsewhere (the
// masked columns are never exponentiated: no −inf mask goes through exp).
template <class Row, class T>
void exp_visible(Row row, T ref, Visible vis) {
  if (vis.empty()) {
    row.setZero();
    return;
  }
  row.head(vis.lo).setZero();
  if constexpr (std::is_same_v<T, float>) exp_shifted(row.data() + vis.lo, row.data() + vis.lo, vis.hi - vis.lo, ref);
  else row.segment(vis.lo, vis.hi - vis.lo) = (row.segment(vis.lo, vis.hi - vis.lo).array() - ref).exp().matrix();
  row.tail(row.size() - vis.hi).setZero();
}

template <class T>
using Column = Eigen::Array<T, Eigen::Dynamic, 1>;

// Sequence [a, b), query head h. Per query row the online softmax keeps m (the running max
// score), l (the running Σ exp(score − m)) and acc (the running Σ exp(score − m)·v); a new key
// tile raising the max rescales l and acc by exp(m_old − m_new).
template <class T>
void forward_head(T* out, T* lse, const T* q, const T* k, const T* v, int64_t a, int64_t b, int64_t h,
                  const AttentionShape& sh) {
  const int64_t D = sh.head_dim, B = sh.tile, g = h / (sh.heads / sh.kv_heads);
  const T scale = T(1 / std::sqrt(double(D)));
  Rows<T> scores(B, B), acc(B, D), Q, K, V;
  Column<T> m(B), l(B);
  for (int64_t q0 = a; q0 < b; q0 += B) {
    const int64_t q1 = std::min(b, q0 + B), nq = q1 - q0;
    Q = head_rows(q, sh.heads, h, D, q0, q1);
    acc.setZero();
    m.setConstant(-std::numeric_limits<T>::infinity());
    l.setZero();
    for (int64_t k0 = first_key(q0, a, sh.window); k0 < q1; k0 += B) {
      const int64_t k1 = std::min(q1, k0 + B), nk = k1 - k0;
      K = head_rows(k, sh.kv_heads, g, D, k0, k1);
      V = head_rows(v, sh.kv_heads, g, D, k0, k1);
      auto S = scores.topLeftCorner(nq, nk);
      S.noalias() = scale * (Q * K.transpose());
      for (int64_t r = 0; r < nq; ++r) {
        const Visible vis = visible_keys(q0 + r, k0, nk, a, sh.window);
        if (vis.empty()) {
          S.row(r).setZero();
          continue;
        }
        const T m_new = std::max(m[r], S.row(r).segment(vis.lo, vis.hi - vis.lo).maxCoeff());
        exp_visible(S.row(r), m_new, vis);
        const T rescale = std::exp(m[r] - m_new);  // 0 while m is still -inf
        l[r] = l[r] * rescale + S.row(r).sum();
        acc.row(r) *= rescale;
        m[r] = m_new;
      }
      acc.topRows(nq).noalias() += S * V;
    }
    auto O = head_rows(out, sh.heads, h, D, q0, q1);
    for (int64_t r = 0; r < nq; ++r) {
      O.row(r) = acc.row(r) / l[r];
      lse[h * sh.tokens + q0 + r] = m[r] + std::log(l[r]);
    }
  }
}

// Sequence [a, b), kv head g and the query heads that read it. Key tiles outside, query tiles
// inside: d_k and d_v of a key tile gather over every query that sees it.
template <class T>
void backward_kv_head(T* d_q, T* d_k, T* d_v, const T* d_out, const T* q, const T* k, const T* v, const T* out,
                      const T* lse, int64_t a, int64_t b, int64_t g, const AttentionShape& sh) {
  const int64_t D = sh.head_dim, B = sh.tile, group = sh.heads / sh.kv_heads;
  const T scale = T(1 / std::sqrt(double(D)));
  Rows<T> probs(B, B), d_scores(B, B), K, V, Q, dO;
  Column<T> delta(b - a);
  for (int64_t h = g * group; h < (g + 1) * group; ++h) {
    // delta[i] = Σ_j P_ij dP_ij = d_out[i]·out[i], the softmax backward's row term.
    for (int64_t i = a; i < b; ++i) {
      const T* dy = d_out + (i * sh.heads + h) * D;
      delta[i - a] = std::inner_product(dy, dy + D, out + (i * sh.heads + h) * D, T(0));
    }
    const T* lse_h = lse + h * sh.tokens;
    for (int64_t k0 = a; k0 < b; k0 += B) {
      const int64_t k1 = std::min(b, k0 + B), nk = k1 - k0;
      K = head_rows(k, sh.kv_heads, g, D, k0, k1);
      V = head_rows(v, sh.kv_heads, g, D, k0, k1);
      auto dK = head_rows(d_k, sh.kv_heads, g, D, k0, k1), dV = head_rows(d_v, sh.kv_heads, g, D, k0, k1);
      const int64_t q_end = sh.window ? std::min(b, k1 - 1 + sh.window) : b;
      for (int64_t q0 = k0; q0 < q_end; q0 += B) {
        const int64_t q1 = std::min(q_end, q0 + B), nq = q1 - q0;
        Q = head_rows(q, sh.heads, h, D, q0, q1);
        dO = head_rows(d_out, sh.heads, h, D, q0, q1);
        auto dQ = head_rows(d_q, sh.heads, h, D, q0, q1);
        auto P = probs.topLeftCorner(nq, nk);
        auto dS = d_scores.topLeftCorner(nq, nk);
        P.noalias() = scale * (Q * K.transpose());
        for (int64_t r = 0; r < nq; ++r)
          exp_visible(P.row(r), lse_h[q0 + r], visible_keys(q0 + r, k0, nk, a, sh.window));
        dV.noalias() += P.transpose() * dO;
        dS.noalias() = dO * V.transpose();
        // The gradient of the unscaled q·k, so the scale is paid once per tile.
        dS.array() = scale * P.array() * (dS.array().colwise() - delta.segment(q0 - a, nq));
        dQ.noalias() += dS * K;
        dK.noalias() += dS.transpose() * Q;
      }
    }
  }
}

}  // namespace

template <class T>
void attention_forward(T* out, T* lse, const T* q, const T* k, const T* v, const int32_t* cu_seqlens, int64_t n_seqs,
                       const AttentionShape& shape) {
  check_shape(cu_seqlens, n_seqs, shape);
  const SingleThreadedBlas single;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t task = 0; task < n_seqs * shape.heads; ++task) {
    const int64_t s = task / shape.heads, h = task % shape.heads;
    forward_head(out, lse, q, k, v, cu_seqlens[s], cu_seqlens[s + 1], h, shape);
  }
}

template <class T>
void attention_backward(T* d_q, T* d_k, T* d_v, const T* d_out, const T* q, const T* k, const T* v, const T* out,
                        const T* lse, const int32_t* cu_seqlens, int64_t n_seqs, const AttentionShape& shape) {
  check_shape(cu_seqlens, n_seqs, shape);
  const SingleThreadedBlas single;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t task = 0; task < n_seqs * shape.kv_heads; ++task) {
    const int64_t s = task / shape.kv_heads, g = task % shape.kv_heads;
    backward_kv_head(d_q, d_k, d_v, d_out, q, k, v, out, lse, cu_seqlens[s], cu_seqlens[s + 1], g, shape);
  }
}

template void attention_forward(float*, float*, const float*, const float*, const float*, const int32_t*, int64_t,
                                const AttentionShape&);
template void attention_forward(double*, double*, const double*, const double*, const double*, const int32_t*, int64_t,
                                const AttentionShape&);
template void attention_backward(float*, float*, float*, const float*, const float*, const float*, const float*,
                                 const float*, const float*, const int32_t*, int64_t, const AttentionShape&);
template void attention_backward(double*, double*, double*, const double*, const double*, const double*, const double*,
                                 const double*, const double*, const int32_t*, int64_t, const AttentionShape&);

}  // namespace upcycle::ops
