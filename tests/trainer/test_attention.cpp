// Attention: the tiled online-softmax forward against a plain softmax(q·kᵀ/sqrt(D) + mask)·v with
// the whole score matrix and an explicit mask; the tiled backward against central differences;
// float against double.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <stdexcept>

#include "tests/trainer/gradcheck.hpp"
#include "trainer/ops/attention.hpp"

using namespace upcycle::ops;
using namespace upcycle::test;

namespace {

struct Case {
  std::vector<int32_t> cu_seqlens;  // packed sequence offsets
  int64_t heads, kv_heads, head_dim, window, tile;
};

AttentionShape shape_of(const Case& c) {
  return {.tokens = c.cu_seqlens.back(),
          .heads = c.heads,
          .kv_heads = c.kv_heads,
          .head_dim = c.head_dim,
          .window = c.window,
          .tile = c.tile};
}

// Full [N, N] scores per head, masked to -inf where token i must not see token j.
Vec naive_attention(const Case& c, const Vec& q, const Vec& k, const Vec& v, Vec& lse) {
  const int64_t N = c.cu_seqlens.back(), D = c.head_dim, nH = c.heads, nKV = c.kv_heads;
  std::vector<int> seq(N);
  for (size_t s = 0; s + 1 < c.cu_seqlens.size(); ++s)
    for (int32_t t = c.cu_seqlens[s]; t < c.cu_seqlens[s + 1]; ++t) seq[t] = int(s);
  auto visible = [&](int64_t i, int64_t j) {
    return seq[i] == seq[j] && j <= i && (c.window == 0 || i - j < c.window);
  };
  Vec out(N * nH * D, 0.0);
  lse.assign(nH * N, 0.0);
  for (int64_t h = 0; h < nH; ++h) {
    const int64_t g = h / (nH / nKV);
    for (int64_t i = 0; i < N; ++i) {
      Vec s(N, -std::numeric_limits<double>::infinity());
      double mx = s[0];
      for (int64_t j = 0; j < N; ++j) {
        if (!visible(i, j)) continue;
        s[j] = 0;
        for (int64_t d = 0; d < D; ++d) s[j] += q[(i * nH + h) * D + d] * k[(j * nKV + g) * D + d];
        s[j] /= std::sqrt(double(D));
        mx = std::max(mx, s[j]);
      }
      double sum = 0;
      for (int64_t j = 0; j < N; ++j) sum += std::exp(s[j] - mx);
      for (int64_t j = 0; j < N; ++j)
        for (int64_t d = 0; d < D; ++d)
          out[(i * nH + h) * D + d] += std::exp(s[j] - mx) / sum * v[(j * nKV + g) * D + d];
      lse[h * N + i] = mx + std::log(sum);
    }
  }
  return out;
}

void check_attention(const Case& c) {
  const AttentionShape shape = shape_of(c);
  const int64_t N = shape.tokens, S = int64_t(c.cu_seqlens.size()) - 1;
  Vec q = random_vec(N * c.heads * c.head_dim, 1, 2.0), k = random_vec(N * c.kv_heads * c.head_dim, 2, 2.0),
      v = random_vec(N * c.kv_heads * c.head_dim, 3), R = random_vec(q.size(), 4);
  auto forward = [&]<class T>(std::type_identity<T>, Vec* lse_out = nullptr) {
    const auto qt = as<T>(q), kt = as<T>(k), vt = as<T>(v);
    std::vector<T> out(q.size()), lse(c.heads * N);
    attention_forward(out.data(), lse.data(), qt.data(), kt.data(), vt.data(), c.cu_seqlens.data(), S, shape);
    if (lse_out) *lse_out = widen(lse);
    return widen(out);
  };
  Vec lse, naive_lse;
  const Vec out = forward(kDouble, &lse);
  CHECK(relative_error(out, naive_attention(c, q, k, v, naive_lse)) < 1e-13);
  CHECK(relative_error(lse, naive_lse) < 1e-13);
  CHECK(relative_error(forward(kFloat), out) < 1e-5);

  GradBuffer d_q(q.size(), 5), d_k(k.size(), 6), d_v(v.size(), 7);
  attention_backward(d_q.data(), d_k.data(), d_v.data(), R.data(), q.data(), k.data(), v.data(), out.data(), lse.data(),
                     c.cu_seqlens.data(), S, shape);
  auto loss = [&] { return dot(forward(kDouble), R); };
  check_gradient("d_q", d_q.added(), numeric_gradient(q, loss));
  check_gradient("d_k", d_k.added(), numeric_gradient(k, loss));
  check_gradient("d_v", d_v.added(), numeric_gradient(v, loss));

  // float against double: the lse, and the gradients added into buffers that already hold values.
  Vec lse_f;
  const Vec out_f = forward(kFloat, &lse_f);
  CHECK(relative_error(lse_f, lse) < 1e-5);
  const auto fq = as<float>(q), fk = as<float>(k), fv = as<float>(v), fR = as<float>(R), fout = as<float>(out_f),
             flse = as<float>(lse_f);
  std::vector<float> gq = as<float>(random_vec(q.size(), 5)), gk = as<float>(random_vec(k.size(), 6)),
                     gv = as<float>(random_vec(v.size(), 7));
  const Vec gq0 = widen(gq), gk0 = widen(gk), gv0 = widen(gv);
  attention_backward(gq.data(), gk.data(), gv.data(), fR.data(), fq.data(), fk.data(), fv.data(), fout.data(),
                     flse.data(), c.cu_seqlens.data(), S, shape);
  auto added = [](const std::vector<float>& after, const Vec& before) {
    Vec d = widen(after);
    for (size_t i = 0; i < d.size(); ++i) d[i] -= before[i];
    return d;
  };
  CHECK(relative_error(added(gq, gq0), d_q.added()) < 1e-4);
  CHECK(relative_error(added(gk, gk0), d_k.added()) < 1e-4);
  CHECK(relative_error(added(gv, gv0), d_v.added()) < 1e-4);
}

}  // namespace

// Tiles of 4 rows so that sequences span several query and key tiles and tile edges fall inside
// sequences; a 1-token sequence sits between two longer ones.
TEST_CASE("attention: three packed sequences, grouped-query heads, causal") {
  check_attention({.cu_seqlens = {0, 5, 6, 13}, .heads = 4, .kv_heads = 2, .head_dim = 6, .window = 0, .tile = 4});
}

TEST_CASE("attention: sliding window inside packed sequences") {
  check_attention({.cu_seqlens = {0, 9, 14}, .heads = 4, .kv_heads = 2, .head_dim = 6, .window = 3, .tile = 4});
  // A window wider than a tile, and one wider than the sequences (then it is plain causal).
  check_attention({.cu_seqlens = {0, 11, 14}, .heads = 2, .kv_heads = 1, .head_dim = 4, .window = 6, .tile = 4});
  check_attention({.cu_seqlens = {0, 6, 9}, .heads = 2, .kv_heads = 2, .head_dim = 4, .window = 50, .tile = 4});
}

TEST_CASE("attention: one sequence in a single tile, multi-query and multi-head") {
  check_attention({.cu_seqlens = {0, 10}, .heads = 3, .kv_heads = 1, .head_dim = 5, .window = 0, .tile = 64});
  check_attention({.cu_seqlens = {0, 10}, .heads = 2, .kv_heads = 2, .head_dim = 5, .window = 0, .tile = 3});
}

TEST_CASE("attention: bad shapes are refused") {
  const std::vector<int32_t> cu = {0, 4};
  std::vector<double> x(4 * 3 * 2), lse(12);
  const AttentionShape three_over_two{.tokens = 4, .heads = 3, .kv_heads = 2, .head_dim = 2};
  CHECK_THROWS_AS(attention_forward(x.data(), lse.data(), x.data(), x.data(), x.data(), cu.data(), 1, three_over_two),
                  std::invalid_argument);
  const AttentionShape short_count{.tokens = 5, .heads = 1, .kv_heads = 1, .head_dim = 2};
  CHECK_THROWS_AS(attention_forward(x.data(), lse.data(), x.data(), x.data(), x.data(), cu.data(), 1, short_count),
                  std::invalid_argument);
}
