#include "cuda/ops/router.hpp"

#include <climits>

#include "cuda/ops/reduce.cuh"
#include "trainer/ops/check.hpp"

namespace upcycle::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;  // forward: one warp per token, so 8 tokens per block

// The order top-k walks: probability descending, then index ascending. A NaN probability ranks
// below every number, so NaN logits still give k distinct indices in [0, E).
__device__ __forceinline__ float rank(float p) { return isnan(p) ? -1.f : p; }
__device__ __forceinline__ bool ranks_before(float key, int e, float other_key, int other_e) {
  return key > other_key || (key == other_key && e < other_e);
}

// logits, probs [N,E]; bias [E] or null; idx, w [N,k]. Lanes stride over the experts. Pass j
// takes the first expert in rank order (of probs + bias) after pass j−1's pick, which is the
// CPU's "largest not yet taken" with ties to the lower index, without keeping a taken set.
__global__ void router_forward_kernel(int32_t* idx, float* w, float* probs, const float* logits, const float* bias,
                                      int64_t N, int E, int k, bool renormalise) {
  const int lane = threadIdx.x & 31;
  const int64_t n = int64_t(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  if (n >= N) return;  // the whole warp: no lane is left out of a shuffle
  const float* x = logits + n * E;
  float* p = probs + n * E;

  float mx = -INFINITY;
  for (int e = lane; e < E; e += 32) mx = fmaxf(mx, x[e]);
  mx = warp_max(mx);
  float sum = 0.f;
  for (int e = lane; e < E; e += 32) sum += expf(x[e] - mx);
  sum = warp_sum(sum);
  for (int e = lane; e < E; e += 32) p[e] = expf(x[e] - mx) / sum;  // each lane rereads only its own p[e]

  float prev_key = INFINITY, kept = 0.f;
  int prev_e = -1;
  for (int j = 0; j < k; ++j) {
    float best_key = -INFINITY, best_p = 0.f;  // -INFINITY: nothing eligible yet (ranks are >= -1)
    int best_e = INT_MAX;
    for (int e = lane; e < E; e += 32) {
      const float pe = p[e], key = rank(bias ? pe + bias[e] : pe);
      if (ranks_before(prev_key, prev_e, key, e) && ranks_before(key, e, best_key, best_e))
        best_key = key, best_p = pe, best_e = e;
    }
    for (int o = 16; o > 0; o >>= 1) {
      const float other_key = __shfl_xor_sync(kAllLanes, best_key, o), other_p = __shfl_xor_sync(kAllLanes, best_p, o);
      const int other_e = __shfl_xor_sync(kAllLanes, best_e, o);
      if (ranks_before(other_key, other_e, best_key, best_e)) best_key = other_key, best_p = other_p, best_e = other_e;
    }
    prev_key = best_key, prev_e = best_e;
    kept += best_p;  // in slot order, as the CPU sums
    if (lane == 0) idx[n * k + j] = best_e, w[n * k + j] = best_p;
  }
  if (lane == 0 && renormalise)
    for (int j = 0; j < k; ++j) w[n * k + j] /= kept;  // lane 0 rereads its own writes
}

// Renormalised: one thread per token (k is a handful), the selected logits only. An index
// outside [0, E) is skipped, never written.
__global__ void router_backward_renormalised_kernel(float* d_logits, const float* d_w, const float* w,
                                                    const int32_t* idx, int64_t N, int64_t E, int64_t k) {
  const int64_t n = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (n >= N) return;
  const float* dw = d_w + n * k;
  const float* wn = w + n * k;
  float mean_dw = 0.f;  // Σ_j d_w·w: the gradient's component along the renormalisation
  for (int64_t j = 0; j < k; ++j) mean_dw += dw[j] * wn[j];
  for (int64_t j = 0; j < k; ++j) {
    const int32_t e = idx[n * k + j];
    if (e >= 0 && e < E) d_logits[n * E + e] += wn[j] * (dw[j] - mean_dw);
  }
}

// Not renormalised: one thread per logit (n, e), every logit of the row, through the softmax
// over all E. Each thread sums Σ_j d_w·w itself, in slot order (the same bits for the whole
// row), and takes d_p from the slot that chose e (none: 0; an index outside [0, E) chooses none).
__global__ void router_backward_plain_kernel(float* d_logits, const float* d_w, const float* w, const float* probs,
                                             const int32_t* idx, int64_t N, int64_t E, int64_t k) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= N * E) return;
  const int64_t n = i / E, e = i - n * E;
  const float* dw = d_w + n * k;
  const float* wn = w + n * k;
  const int32_t* in = idx + n * k;
  float mean_dw = 0.f, d_p = 0.f;
  for (int64_t j = 0; j < k; ++j) {
    mean_dw += dw[j] * wn[j];
    if (in[j] == e) d_p = dw[j];
  }
  d_logits[i] += probs[i] * (d_p - mean_dw);
}

}  // namespace

void router_forward(int32_t* idx, float* w, float* probs, const float* logits, const float* bias, int64_t N, int64_t E,
                    int64_t k, bool renormalise, cudaStream_t stream) {
  ops::require_arg(k >= 1 && k <= E, "router", "top_k must be in [1, experts]");
  ops::require_arg(E <= INT_MAX && N >= 0, "router", "experts must fit in int32 and tokens be >= 0");
  if (N == 0) return;
  router_forward_kernel<<<blocks_for(N, kWarps), kThreads, 0, stream>>>(idx, w, probs, logits, bias, N, int(E), int(k),
                                                                         renormalise);
  UPCYCLE_CUDA_LAUNCHED("router_forward");
}

void router_backward(float* d_logits, const float* d_w, const float* w, const float* probs, const int32_t* idx,
                     int64_t N, int64_t E, int64_t k, bool renormalise, cudaStream_t stream) {
  ops::require_arg(N >= 0 && E >= 0, "router backward", "negative size");
  if (N == 0 || E == 0) return;
  if (renormalise) {
    router_backward_renormalised_kernel<<<blocks_for(N, kThreads), kThreads, 0, stream>>>(d_logits, d_w, w, idx, N,
                                                                                          E, k);
  } else {
    router_backward_plain_kernel<<<blocks_for(N * E, kThreads), kThreads, 0, stream>>>(d_logits, d_w, w, probs, idx,
                                                                                       N, E, k);
  }
  UPCYCLE_CUDA_LAUNCHED("router_backward");
}

}  // namespace upcycle::cuda
