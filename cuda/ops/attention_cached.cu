// attention_cached on the GPU: decoding against a key/value cache, one block per (query, head).
#include "cuda/ops/attention.hpp"

#include <cmath>

#include "cuda/ops/attention_tiles.cuh"

namespace upcycle::cuda {

namespace {

using namespace attn;

constexpr int kWarps = 8;

// block: query i (blockIdx.x) at position p = p0 + i, head h (blockIdx.y), reading kv head g.
// Its warps take the visible keys round robin, each keeping its own online softmax (max m, sum l
// and Σ exp(s − m)·v over its lanes' dims d = lane + 32c); the warps' partials are merged in warp
// order at the end, so the result does not depend on timing.
template <class T, int D>
__global__ void __launch_bounds__(kWarps * 32)
    attention_cached_kernel(T* out, const T* q, const T* k_cache, const T* v_cache, int64_t p0, int nH, int nKV,
                            int64_t window, float scale) {
  constexpr int C = (D + 31) / 32;
  const int64_t i = blockIdx.x, p = p0 + i;
  const int h = int(blockIdx.y), g = h / (nH / nKV), warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t first = window ? max(int64_t(0), p - window + 1) : 0;

  float qs[C], acc[C];
#pragma unroll
  for (int c = 0; c < C; ++c) {
    const int d = lane + 32 * c;
    qs[c] = d < D ? to_float(q[(i * nH + h) * D + d]) * scale : 0.f;
    acc[c] = 0.f;
  }
  float m = -INFINITY, l = 0.f;
  for (int64_t j = first + warp; j <= p; j += kWarps) {
    const T* kj = k_cache + (j * nKV + g) * D;
    const T* vj = v_cache + (j * nKV + g) * D;
    float s = 0.f;
#pragma unroll
    for (int c = 0; c < C; ++c)
      if (lane + 32 * c < D) s += qs[c] * to_float(kj[lane + 32 * c]);
    for (int offset = 16; offset > 0; offset /= 2) s += __shfl_xor_sync(0xffffffffu, s, offset);
    const float m_new = fmaxf(m, s), rescale = expf(m - m_new), e = expf(s - m_new);  // rescale 0 at the first key
    l = l * rescale + e;
#pragma unroll
    for (int c = 0; c < C; ++c)
      if (lane + 32 * c < D) acc[c] = acc[c] * rescale + e * to_float(vj[lane + 32 * c]);
    m = m_new;
  }

  __shared__ float warp_m[kWarps], warp_l[kWarps], warp_acc[kWarps][D];
  if (lane == 0) warp_m[warp] = m, warp_l[warp] = l;
#pragma unroll
  for (int c = 0; c < C; ++c)
    if (lane + 32 * c < D) warp_acc[warp][lane + 32 * c] = acc[c];
  __syncthreads();
  // Warps that got no key hold m = −inf and weigh 0; the first key (j = first) always has one.
  float M = -INFINITY;
  for (int w = 0; w < kWarps; ++w) M = fmaxf(M, warp_m[w]);
  float weight[kWarps], sum = 0.f;
  for (int w = 0; w < kWarps; ++w) {
    weight[w] = expf(warp_m[w] - M);
    sum += warp_l[w] * weight[w];
  }
  for (int d = threadIdx.x; d < D; d += kWarps * 32) {
    float o = 0.f;
    for (int w = 0; w < kWarps; ++w) o += warp_acc[w][d] * weight[w];
    out[(i * nH + h) * D + d] = from_float<T>(o / sum);
  }
}

}  // namespace

template <class T>
void attention_cached(T* out, const T* q, const T* k_cache, const T* v_cache, int64_t p0,
                      const ops::AttentionShape& shape, cudaStream_t stream) {
  constexpr const char* op = "cuda::attention_cached";
  using ops::require_arg;
  require_arg(shape.heads > 0 && shape.kv_heads > 0 && shape.heads % shape.kv_heads == 0, op,
              "kv_heads must divide heads");
  require_arg(supported_head_dim(shape.head_dim), op, "head_dim must be 32, 64, 80, 96, 128 or 256");
  require_arg(shape.window >= 0 && shape.tokens >= 0 && p0 >= 0, op, "bad sizes");
  require_arg(shape.tokens <= INT_MAX && shape.heads <= 65535, op, "too many tokens or heads for the grid");
  if (shape.tokens == 0) return;
  const float scale = float(1 / std::sqrt(double(shape.head_dim)));
  with_head_dim(op, shape.head_dim, [&](auto head_dim) {
    constexpr int D = decltype(head_dim)::value;
    attention_cached_kernel<T, D><<<dim3(unsigned(shape.tokens), unsigned(shape.heads)), kWarps * 32, 0, stream>>>(
        out, q, k_cache, v_cache, p0, int(shape.heads), int(shape.kv_heads), shape.window, scale);
    UPCYCLE_CUDA_LAUNCHED("attention_cached_kernel");
  });
}

template void attention_cached(float*, const float*, const float*, const float*, int64_t, const ops::AttentionShape&,
                               cudaStream_t);
template void attention_cached(bf16*, const bf16*, const bf16*, const bf16*, int64_t, const ops::AttentionShape&,
                               cudaStream_t);

}  // namespace upcycle::cuda
