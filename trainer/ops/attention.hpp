// Causal grouped-query attention over packed sequences, computed tile by tile with an online
// softmax (flash-attention style): no [N, N] score matrix is ever held, per head or at all.
#pragma once
#include <cstdint>

namespace upcycle::ops {

struct AttentionShape {
  int64_t tokens = 0;    // N: the batch's sequences packed back to back
  int64_t heads = 0;     // nH query heads
  int64_t kv_heads = 0;  // nKV key/value heads, dividing nH; query head h reads kv head h / (nH / nKV)
  int64_t head_dim = 0;  // D; scores are scaled by 1/sqrt(D)
  int64_t window = 0;    // sliding window W (Mistral): token p sees p' when p - W < p' <= p; 0: no window
  int64_t tile = 64;     // rows of the query and key tiles
};

// Packing: cu_seqlens[S+1] holds the offsets of the S sequences (flash-attention's varlen
// convention): sequence s is tokens [cu_seqlens[s], cu_seqlens[s+1]), cu_seqlens[0] = 0 and
// cu_seqlens[S] = N. A token sees the tokens of its own sequence at or before it (and inside the
// window); the rows of a batch are simply separate sequences.
//
// forward:  q [N,nH,D], k [N,nKV,D], v [N,nKV,D]
//           out[n,h,:] = Σ_j softmax_j(q[n,h]·k[j,g] / sqrt(D)) v[j,g]   over the visible j
//           lse[h,n]   = log Σ_j exp(q[n,h]·k[j,g] / sqrt(D))            [nH,N], kept for backward
// backward: P recomputed tile by tile as exp(scores − lse); with delta[n,h] = d_out[n,h]·out[n,h]
//           d_v += Pᵀ·d_out,  dS = P ⊙ (d_out·vᵀ − delta),  d_q += dS·k/sqrt(D),  d_k += dSᵀ·q/sqrt(D)
//           d_q [N,nH,D], d_k and d_v [N,nKV,D]
// Work is split over (sequence, head) in forward and over (sequence, kv head) in backward, where
// the query heads sharing a kv head all add into its d_k and d_v.
template <class T>
void attention_forward(T* out, T* lse, const T* q, const T* k, const T* v, const int32_t* cu_seqlens, int64_t n_seqs,
                       const AttentionShape& shape);
template <class T>
void attention_backward(T* d_q, T* d_k, T* d_v, const T* d_out, const T* q, const T* k, const T* v, const T* out,
                        const T* lse, const int32_t* cu_seqlens, int64_t n_seqs, const AttentionShape& shape);

}  // namespace upcycle::ops
