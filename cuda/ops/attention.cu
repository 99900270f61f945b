#include "cuda/ops/attention.hpp"

#include <cmath>

#include "cuda/ops/attention_tiles.cuh"

namespace upcycle::cuda {

namespace {

using namespace attn;

// Max and sum over the `width` adjacent lanes that share a row (width a power of two, <= 32);
// every one of them gets the result.
template <int width>
__device__ __forceinline__ float row_max(float v) {
#pragma unroll
  for (int offset = width / 2; offset > 0; offset /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}
template <int width>
__device__ __forceinline__ float row_sum(float v) {
#pragma unroll
  for (int offset = width / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// block (query tile, sequence s) in blockIdx.x, the last tiles first (they see the most keys),
// head h in blockIdx.y. The tile's queries are [q0, q1); its key tiles run from the first key
// its first query sees up to q1. Per key tile [k0, k1):
//   S = scale · Q Kᵀ, −inf where masked               [Bq, Bk]  thread micro-tiles
//   per row: m' = max(m, max S), P = exp(S − m'),     TPR threads a row
//            l = l·exp(m − m') + Σ P
//   O = O·exp(m − m') + P V                           [Bq, D]   thread micro-tiles, in registers
// then out = O / l and lse = m + log l.
// Shared: Q [Bq][D+1], K and V [Bk][D+1], S (then P) [Bq][Bk+1], a factor per row [Bq].
template <class T, int D>
__global__ void __launch_bounds__(kThreads)
    attention_forward_kernel(T* out, float* lse, const T* q, const T* k, const T* v, const int32_t* cu_seqlens,
                             int n_seqs, int n_tiles, int N, int nH, int nKV, int window, float scale) {
  constexpr int Bq = Tiles<D>::Bq, Bk = Tiles<D>::Bk, LD = Tiles<D>::LD, LS = Tiles<D>::LS;
  constexpr int TPR = kThreads / Bq, CPT = Bk / TPR;  // threads per row, columns per thread
  const int s = int(blockIdx.x) % n_seqs, h = int(blockIdx.y);
  const int a = cu_seqlens[s], b = cu_seqlens[s + 1];
  const int q0 = a + (n_tiles - 1 - int(blockIdx.x) / n_seqs) * Bq;
  if (q0 >= b) return;
  const int q1 = min(b, q0 + Bq), g = h / (nH / nKV);
  const int tx = threadIdx.x % kSide, ty = threadIdx.x / kSide;

  extern __shared__ float smem[];
  float* Qs = smem;
  float* Ks = Qs + Bq * LD;
  float* Vs = Ks + Bk * LD;
  float* Ss = Vs + Bk * LD;
  float* row_factor = Ss + Bq * LS;
  load_rows<D>(Qs, q, q0, Bq, q1, nH, h);

  // Row `row`'s running max m and sum l, held alike by its TPR threads, which own its columns
  // [c0, c0 + CPT) in the softmax step.
  const int row = threadIdx.x / TPR, c0 = threadIdx.x % TPR * CPT;
  float m = -INFINITY, l = 0.f;
  float acc[Bq / kSide][D / kSide] = {};
  for (int k0 = window ? max(a, q0 - window + 1) : a; k0 < q1; k0 += Bk) {
    const int k1 = min(q1, k0 + Bk);
    __syncthreads();  // the previous tile's K, V and P have been read (and Q is loaded)
    load_rows<D>(Ks, k, k0, Bk, k1, nKV, g);
    load_rows<D>(Vs, v, k0, Bk, k1, nKV, g);
    __syncthreads();
    float sc[Bq / kSide][Bk / kSide] = {};
    tile_product<LD, 1, 1, LD, D>(sc, Qs, Ks);
#pragma unroll
    for (int i = 0; i < Bq / kSide; ++i)
#pragma unroll
      for (int j = 0; j < Bk / kSide; ++j) {
        const int r = ty + kSide * i, c = tx + kSide * j;
        const bool visible = q0 + r < q1 && k0 + c < k1 && sees(q0 + r, k0 + c, window);
        Ss[r * LS + c] = visible ? sc[i][j] * scale : -INFINITY;
      }
    __syncthreads();

    float* S_row = Ss + row * LS;
    float mx = -INFINITY;
#pragma unroll
    for (int c = c0; c < c0 + CPT; ++c) mx = fmaxf(mx, S_row[c]);
    const float m_new = fmaxf(m, row_max<TPR>(mx));
    const float ref = m_new == -INFINITY ? 0.f : m_new;  // a row with no visible key yet keeps P = 0
    float sum = 0.f;
#pragma unroll
    for (int c = c0; c < c0 + CPT; ++c) {
      const float p = expf(S_row[c] - ref);
      S_row[c] = p;
      sum += p;
    }
    const float rescale = expf(m - ref);  // 0 while m is −inf (then O and l are 0 anyway)
    l = l * rescale + row_sum<TPR>(sum);
    m = m_new;
    if (c0 == 0) row_factor[row] = rescale;
    __syncthreads();

#pragma unroll
    for (int i = 0; i < Bq / kSide; ++i)
#pragma unroll
      for (int j = 0; j < D / kSide; ++j) acc[i][j] *= row_factor[ty + kSide * i];
    tile_product<LS, 1, LD, 1, Bk>(acc, Ss, Vs);
  }

  __syncthreads();  // every thread has read the last tile's row factors
  // A row inside the sequence sees at least its own key, so l >= 1 there.
  if (c0 == 0) {
    const bool valid = q0 + row < q1;
    row_factor[row] = valid ? 1.f / l : 0.f;
    if (valid) lse[int64_t(h) * N + q0 + row] = m + logf(l);
  }
  __syncthreads();
#pragma unroll
  for (int i = 0; i < Bq / kSide; ++i) {
    const int r = ty + kSide * i;
    if (q0 + r >= q1) continue;
    T* o = out + (int64_t(q0 + r) * nH + h) * D;
#pragma unroll
    for (int j = 0; j < D / kSide; ++j) o[tx + kSide * j] = from_float<T>(acc[i][j] * row_factor[r]);
  }
}

}  // namespace

template <class T>
void attention_forward(T* out, float* lse, const T* q, const T* k, const T* v, const int32_t* cu_seqlens,
                       int64_t n_seqs, int64_t max_seqlen, const ops::AttentionShape& shape, cudaStream_t stream) {
  constexpr const char* op = "cuda::attention_forward";
  if (!check_shape(op, n_seqs, max_seqlen, shape)) return;
  const float scale = float(1 / std::sqrt(double(shape.head_dim)));
  with_head_dim(op, shape.head_dim, [&](auto head_dim) {
    constexpr int D = decltype(head_dim)::value;
    const auto kernel = attention_forward_kernel<T, D>;
    const dim3 grid(tile_blocks(op, max_seqlen, Tiles<D>::Bq, n_seqs), unsigned(shape.heads));
    allow_smem(kernel, Tiles<D>::forward_smem);
    kernel<<<grid, kThreads, Tiles<D>::forward_smem, stream>>>(
        out, lse, q, k, v, cu_seqlens, int(n_seqs), int((max_seqlen + Tiles<D>::Bq - 1) / Tiles<D>::Bq),
        int(shape.tokens), int(shape.heads), int(shape.kv_heads), kernel_window(shape), scale);
    UPCYCLE_CUDA_LAUNCHED("attention_forward_kernel");
  });
}

template void attention_forward(float*, float*, const float*, const float*, const float*, const int32_t*, int64_t,
                                int64_t, const ops::AttentionShape&, cudaStream_t);
template void attention_forward(bf16*, float*, const bf16*, const bf16*, const bf16*, const int32_t*, int64_t, int64_t,
                                const ops::AttentionShape&, cudaStream_t);

}  // namespace upcycle::cuda
