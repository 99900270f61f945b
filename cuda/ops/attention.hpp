// Causal grouped-query attention over packed sequences on the GPU (trainer/ops/attention.hpp),
// flash-attention style: query and key tiles in shared memory, an online softmax in fp32, no
// [N, N] score matrix anywhere. The backward recomputes the probabilities from lse and is
// deterministic: d_k and d_v are summed by the block that owns a key tile (over every query
// tile and every query head of its group), d_q by the block that owns a query tile, so no
// atomics are needed.
#pragma once
#include <cstdint>

#include "cuda/runtime.hpp"
#include "trainer/ops/attention.hpp"

namespace upcycle::cuda {

// As ops::attention_forward / attention_backward, with cu_seqlens[n_seqs+1] in device memory
// and max_seqlen (host) the longest sequence, which sizes the grid; shape.tile is ignored (the
// kernels choose their tiles). lse is fp32 [nH, N]. The backward ADDS into d_q, d_k, d_v.
// Head dims 32, 64, 80, 96, 128 and 256 are supported; others: std::invalid_argument.
template <class T>
void attention_forward(T* out, float* lse, const T* q, const T* k, const T* v, const int32_t* cu_seqlens,
                       int64_t n_seqs, int64_t max_seqlen, const ops::AttentionShape& shape,
                       cudaStream_t stream = nullptr);
template <class T>
void attention_backward(T* d_q, T* d_k, T* d_v, const T* d_out, const T* q, const T* k, const T* v, const T* out,
                        const float* lse, const int32_t* cu_seqlens, int64_t n_seqs, int64_t max_seqlen,
                        const ops::AttentionShape& shape, cudaStream_t stream = nullptr);

// Decoding, as ops::attention_cached: shape.tokens new queries at positions p0 .. p0+n-1
// against a cache holding positions 0 .. p0+n-1.
template <class T>
void attention_cached(T* out, const T* q, const T* k_cache, const T* v_cache, int64_t p0,
                      const ops::AttentionShape& shape, cudaStream_t stream = nullptr);

}  // namespace upcycle::cuda
