// The attention backward in three kernels, each output element summed by one thread in a fixed
// order (deterministic, no atomics):
//   delta[h, n] = d_out[n, h]·out[n, h]                                  (fp32 scratch)
//   d_k, d_v: a block per key tile, over every query tile and query head that sees it
//   d_q:      a block per query tile, over the key tiles it sees
// Both tiled kernels recompute P = exp(scale·q·k − lse) and dS = scale·P·(dO·v − delta).
#include "cuda/ops/attention.hpp"

#include <cmath>

#include "cuda/ops/attention_tiles.cuh"

namespace upcycle::cuda {

namespace {

using namespace attn;

// block: 8 warps; warp: the row (n, h) = (row / nH, row % nH) of d_out and out, in token-major
// order so that neighbouring warps read neighbouring rows.
constexpr int kDeltaThreads = 256;

template <class T>
__global__ void attention_delta_kernel(float* delta, const T* d_out, const T* out, int64_t N, int nH, int D) {
  const int64_t row = (int64_t(blockIdx.x) * kDeltaThreads + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (row >= N * nH) return;  // the whole warp: row is the same on its lanes
  const T* dy = d_out + row * D;
  const T* y = out + row * D;
  float sum = 0.f;
  for (int d = lane; d < D; d += 32) sum += to_float(dy[d]) * to_float(y[d]);
  for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
  if (lane == 0) delta[row % nH * N + row / nH] = sum;
}

// Shared memory of both tiled kernels: Q, dO [Bq][D+1], K, V [Bk][D+1], P, dS [Bq][Bk+1], and
// lse, delta [Bq] of the query tile.
template <int D>
struct Smem {
  static constexpr int Bq = Tiles<D>::Bq, Bk = Tiles<D>::Bk, LD = Tiles<D>::LD, LS = Tiles<D>::LS;
  float *Q, *dO, *K, *V, *P, *dS, *lse, *delta;
  __device__ explicit Smem(float* base)
      : Q(base),
        dO(Q + Bq * LD),
        K(dO + Bq * LD),
        V(K + Bk * LD),
        P(V + Bk * LD),
        dS(P + Bq * LS),
        lse(dS + Bq * LS),
        delta(lse + Bq) {}
};

// Query rows [q0, q1) of head h into Q, dO, lse and delta (rows past q1: zeros).
template <class T, int D>
__device__ void load_queries(const Smem<D>& sm, const T* q, const T* d_out, const float* lse, const float* delta,
                             int q0, int q1, int N, int nH, int h) {
  load_rows<D>(sm.Q, q, q0, Smem<D>::Bq, q1, nH, h);
  load_rows<D>(sm.dO, d_out, q0, Smem<D>::Bq, q1, nH, h);
  for (int r = threadIdx.x; r < Smem<D>::Bq; r += kThreads) {
    const bool valid = q0 + r < q1;
    sm.lse[r] = valid ? lse[int64_t(h) * N + q0 + r] : 0.f;
    sm.delta[r] = valid ? delta[int64_t(h) * N + q0 + r] : 0.f;
  }
}

// For the thread's elements of the [Bq, Bk] tile of queries [q0, q1) against keys [k0, k1):
//   P  = exp(scale·Q Kᵀ − lse) where the query sees the key, else 0   (into sm.P when with_p)
//   dS = scale · P ⊙ (dO Vᵀ − delta), the gradient of the unscaled q·k   (into sm.dS)
template <int D, bool with_p>
__device__ void probs_and_grads(const Smem<D>& sm, int q0, int q1, int k0, int k1, int window, float scale) {
  constexpr int Bq = Smem<D>::Bq, Bk = Smem<D>::Bk, LD = Smem<D>::LD, LS = Smem<D>::LS;
  float sc[Bq / kSide][Bk / kSide] = {}, dp[Bq / kSide][Bk / kSide] = {};
  tile_product<LD, 1, 1, LD, D>(sc, sm.Q, sm.K);
  tile_product<LD, 1, 1, LD, D>(dp, sm.dO, sm.V);
  const int tx = threadIdx.x % kSide, ty = threadIdx.x / kSide;
#pragma unroll
  for (int i = 0; i < Bq / kSide; ++i)
#pragma unroll
    for (int j = 0; j < Bk / kSide; ++j) {
      const int r = ty + kSide * i, c = tx + kSide * j;
      const bool visible = q0 + r < q1 && k0 + c < k1 && sees(q0 + r, k0 + c, window);
      const float p = visible ? expf(sc[i][j] * scale - sm.lse[r]) : 0.f;
      if constexpr (with_p) sm.P[r * LS + c] = p;
      sm.dS[r * LS + c] = visible ? scale * p * (dp[i][j] - sm.delta[r]) : 0.f;
    }
}

// block (key tile, sequence s) in blockIdx.x, the first tiles first (every later query sees
// them), kv head g in blockIdx.y. The keys [k0, k1) are seen by the queries [k0, q_end) of the
// group's query heads; per query tile and head:
//   P, dS  [Bq, Bk]          (probs_and_grads)
//   dV += Pᵀ dO, dK += dSᵀ Q  [Bk, D]  thread micro-tiles in registers
// then d_k += dK and d_v += dV, each element by one thread.
template <class T, int D>
__global__ void __launch_bounds__(kThreads)
    attention_backward_kv_kernel(T* d_k, T* d_v, const T* d_out, const T* q, const T* k, const T* v,
                                 const float* lse, const float* delta, const int32_t* cu_seqlens, int n_seqs, int N,
                                 int nH, int nKV, int window, float scale) {
  constexpr int Bq = Smem<D>::Bq, Bk = Smem<D>::Bk, LD = Smem<D>::LD, LS = Smem<D>::LS;
  const int s = int(blockIdx.x) % n_seqs, g = int(blockIdx.y), G = nH / nKV;
  const int a = cu_seqlens[s], b = cu_seqlens[s + 1];
  const int k0 = a + int(blockIdx.x) / n_seqs * Bk;
  if (k0 >= b) return;
  const int k1 = min(b, k0 + Bk);
  // The last query that sees key k1 − 1 is k1 − 2 + window (int64: may pass INT_MAX).
  const int q_end = window ? int(min(int64_t(b), int64_t(k1) - 1 + window)) : b;

  extern __shared__ float smem[];
  const Smem<D> sm(smem);
  load_rows<D>(sm.K, k, k0, Bk, k1, nKV, g);
  load_rows<D>(sm.V, v, k0, Bk, k1, nKV, g);
  float dk[Bk / kSide][D / kSide] = {}, dv[Bk / kSide][D / kSide] = {};
  for (int h = g * G; h < (g + 1) * G; ++h)
    for (int q0 = k0; q0 < q_end; q0 += Bq) {
      const int q1 = min(q_end, q0 + Bq);
      __syncthreads();  // the previous query tile's Q, dO, P and dS have been read
      load_queries(sm, q, d_out, lse, delta, q0, q1, N, nH, h);
      __syncthreads();
      probs_and_grads<D, true>(sm, q0, q1, k0, k1, window, scale);
      __syncthreads();
      tile_product<1, LS, LD, 1, Bq>(dv, sm.P, sm.dO);
      tile_product<1, LS, LD, 1, Bq>(dk, sm.dS, sm.Q);
    }

  const int tx = threadIdx.x % kSide, ty = threadIdx.x / kSide;
#pragma unroll
  for (int i = 0; i < Bk / kSide; ++i) {
    const int r = ty + kSide * i;
    if (k0 + r >= k1) continue;
    const int64_t offset = (int64_t(k0 + r) * nKV + g) * D;
#pragma unroll
    for (int j = 0; j < D / kSide; ++j) {
      const int64_t e = offset + tx + kSide * j;
      d_k[e] = from_float<T>(to_float(d_k[e]) + dk[i][j]);
      d_v[e] = from_float<T>(to_float(d_v[e]) + dv[i][j]);
    }
  }
}

// block (query tile, sequence s) in blockIdx.x, the last tiles first (they see the most keys),
// head h in blockIdx.y. Over the key tiles the queries [q0, q1) see, as in the forward:
//   dS  [Bq, Bk]   (probs_and_grads)
//   dQ += dS K     [Bq, D]  thread micro-tiles in registers
// then d_q += dQ, each element by one thread.
template <class T, int D>
__global__ void __launch_bounds__(kThreads)
    attention_backward_q_kernel(T* d_q, const T* d_out, const T* q, const T* k, const T* v, const float* lse,
                                const float* delta, const int32_t* cu_seqlens, int n_seqs, int n_tiles, int N, int nH,
                                int nKV, int window, float scale) {
  constexpr int Bq = Smem<D>::Bq, Bk = Smem<D>::Bk, LD = Smem<D>::LD, LS = Smem<D>::LS;
  const int s = int(blockIdx.x) % n_seqs, h = int(blockIdx.y);
  const int a = cu_seqlens[s], b = cu_seqlens[s + 1];
  const int q0 = a + (n_tiles - 1 - int(blockIdx.x) / n_seqs) * Bq;
  if (q0 >= b) return;
  const int q1 = min(b, q0 + Bq), g = h / (nH / nKV);

  extern __shared__ float smem[];
  const Smem<D> sm(smem);
  load_queries(sm, q, d_out, lse, delta, q0, q1, N, nH, h);
  float dq[Bq / kSide][D / kSide] = {};
  for (int k0 = window ? max(a, q0 - window + 1) : a; k0 < q1; k0 += Bk) {
    const int k1 = min(q1, k0 + Bk);
    __syncthreads();  // the previous tile's K and dS have been read (and the queries are loaded)
    load_rows<D>(sm.K, k, k0, Bk, k1, nKV, g);
    load_rows<D>(sm.V, v, k0, Bk, k1, nKV, g);
    __syncthreads();
    probs_and_grads<D, false>(sm, q0, q1, k0, k1, window, scale);
    __syncthreads();
    tile_product<LS, 1, LD, 1, Bk>(dq, sm.dS, sm.K);
  }

  const int tx = threadIdx.x % kSide, ty = threadIdx.x / kSide;
#pragma unroll
  for (int i = 0; i < Bq / kSide; ++i) {
    const int r = ty + kSide * i;
    if (q0 + r >= q1) continue;
    T* dst = d_q + (int64_t(q0 + r) * nH + h) * D;
#pragma unroll
    for (int j = 0; j < D / kSide; ++j) dst[tx + kSide * j] = from_float<T>(to_float(dst[tx + kSide * j]) + dq[i][j]);
  }
}

}  // namespace

template <class T>
void attention_backward(T* d_q, T* d_k, T* d_v, const T* d_out, const T* q, const T* k, const T* v, const T* out,
                        const float* lse, const int32_t* cu_seqlens, int64_t n_seqs, int64_t max_seqlen,
                        const ops::AttentionShape& shape, cudaStream_t stream) {
  constexpr const char* op = "cuda::attention_backward";
  if (!check_shape(op, n_seqs, max_seqlen, shape)) return;
  const int64_t N = shape.tokens;
  const int nH = int(shape.heads), nKV = int(shape.kv_heads), window = kernel_window(shape);
  const float scale = float(1 / std::sqrt(double(shape.head_dim)));

  DeviceBuffer<float> delta(size_t(N * nH), stream);  // [nH,N], freed in stream order
  attention_delta_kernel<T><<<blocks_for(N * nH, kDeltaThreads / 32), kDeltaThreads, 0, stream>>>(
      delta.data(), d_out, out, N, nH, int(shape.head_dim));
  UPCYCLE_CUDA_LAUNCHED("attention_delta_kernel");

  with_head_dim(op, shape.head_dim, [&](auto head_dim) {
    constexpr int D = decltype(head_dim)::value;
    constexpr int Bq = Tiles<D>::Bq, Bk = Tiles<D>::Bk;
    constexpr size_t smem = Tiles<D>::backward_smem;

    const auto kv_kernel = attention_backward_kv_kernel<T, D>;
    allow_smem(kv_kernel, smem);
    kv_kernel<<<dim3(tile_blocks(op, max_seqlen, Bk, n_seqs), unsigned(nKV)), kThreads, smem, stream>>>(
        d_k, d_v, d_out, q, k, v, lse, delta.data(), cu_seqlens, int(n_seqs), int(N), nH, nKV, window, scale);
    UPCYCLE_CUDA_LAUNCHED("attention_backward_kv_kernel");

    const auto q_kernel = attention_backward_q_kernel<T, D>;
    allow_smem(q_kernel, smem);
    q_kernel<<<dim3(tile_blocks(op, max_seqlen, Bq, n_seqs), unsigned(nH)), kThreads, smem, stream>>>(
        d_q, d_out, q, k, v, lse, delta.data(), cu_seqlens, int(n_seqs), int((max_seqlen + Bq - 1) / Bq), int(N),
        nH, nKV, window, scale);
    UPCYCLE_CUDA_LAUNCHED("attention_backward_q_kernel");
  });
}

template void attention_backward(float*, float*, float*, const float*, const float*, const float*, const float*,
                                 const float*, const float*, const int32_t*, int64_t, int64_t,
                                 const ops::AttentionShape&, cudaStream_t);
template void attention_backward(bf16*, bf16*, bf16*, const bf16*, const bf16*, const bf16*, const bf16*, const bf16*,
                                 const float*, const int32_t*, int64_t, int64_t, const ops::AttentionShape&,
                                 cudaStream_t);

}  // namespace upcycle::cuda
