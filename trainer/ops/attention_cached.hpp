// Causal grouped-query attention of a few new tokens against a key/value cache: the decoding
// counterpart of attention_forward, for one sequence whose earlier keys and values are stored.
#pragma once
#include <cstdint>

#include "trainer/ops/attention.hpp"

namespace upcycle::ops {

// The n = shape.tokens new queries sit at positions p0 .. p0+n-1; the cache holds the keys and
// values of positions 0 .. p0+n-1, the new tokens' included, one row per position (its rows
// past p0+n-1 are not read). shape.heads, kv_heads, head_dim and window as in attention_forward;
// shape.tile is unused.
//   q [n,nH,D], k_cache and v_cache [≥ p0+n, nKV, D], out [n,nH,D]
//   out[i,h,:] = Σ_j softmax_j(q[i,h]·k_cache[j,g] / sqrt(D)) v_cache[j,g],  g = h / (nH / nKV),
//   over p - W < j <= p with p = p0 + i (0 <= j <= p without a window).
// Work is split over (query, kv head): the nH / nKV query heads sharing a kv head read its
// cached rows once, as one small matrix product.
template <class T>
void attention_cached(T* out, const T* q, const T* k_cache, const T* v_cache, int64_t p0, const AttentionShape& shape);

}  // namespace upcycle::ops
