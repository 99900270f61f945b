#include "cuda/ops/cross_entropy.hpp"

#include <climits>
#include <string>
#include <type_traits>

#include "cuda/ops/convert.cuh"
#include "cuda/ops/reduce.cuh"
#include "trainer/ops/check.hpp"

namespace upcycle::cuda {

namespace {

constexpr int kThreads = 512;         // per row: V up to 262144 is 512 elements a thread
constexpr int kTotalsThreads = 1024;  // the single block that reduces the per-row terms

// What the forward brings back to the host in one copy.
struct Totals {
  double sum;                  // Σ of the counted rows' lse − logit[target]
  unsigned long long counted;  // targets in [0, V)
  unsigned long long bad;      // targets outside [0, V) other than kIgnoreIndex
};

// Running softmax statistics: the max m and Σ exp(x − m). An empty state is (−inf, 0); a NaN
// logit makes s NaN (m never becomes NaN), so a NaN row gives a NaN lse instead of hiding.
__device__ __forceinline__ void absorb(float& m, float& s, float x) {
  if (x > m) {
    s = s * expf(m - x) + 1.f;  // m = −inf: expf(−inf) = 0 and s = 0
    m = x;
  } else {
    s += x == -INFINITY ? 0.f : expf(x - m);  // −inf − (−inf) would be NaN
  }
}
__device__ __forceinline__ void merge(float& m, float& s, float m2, float s2) {
  const float mm = fmaxf(m, m2);
  s = (s == 0.f ? 0.f : s * expf(m - mm)) + (s2 == 0.f ? 0.f : s2 * expf(m2 - mm));
  m = mm;
}

// One block per row of logits [N,V]: each thread folds v = t, t + kThreads, ... in order, then a
// fixed tree (shuffles within warps, warps in order), so the bits never change. Thread 0 writes
// lse[n] and the row's loss term (0 for an ignored or out-of-range target).
template <class T>
__global__ void cross_entropy_forward_kernel(float* lse, double* terms, const T* logits, const int32_t* targets,
                                             int64_t V) {
  const int64_t n = blockIdx.x;
  const T* x = logits + n * V;
  float m = -INFINITY, s = 0.f;
  for (int64_t v = threadIdx.x; v < V; v += kThreads) absorb(m, s, to_float(x[v]));
  for (int o = 16; o > 0; o >>= 1) merge(m, s, __shfl_down_sync(kAllLanes, m, o), __shfl_down_sync(kAllLanes, s, o));
  __shared__ float warp_m[kThreads / 32], warp_s[kThreads / 32];
  if ((threadIdx.x & 31) == 0) warp_m[threadIdx.x >> 5] = m, warp_s[threadIdx.x >> 5] = s;
  __syncthreads();
  if (threadIdx.x != 0) return;
  for (int w = 1; w < kThreads / 32; ++w) merge(m, s, warp_m[w], warp_s[w]);
  const float l = m + logf(s);
  lse[n] = l;
  const int32_t t = targets[n];
  terms[n] = t >= 0 && t < V ? double(l) - double(to_float(x[t])) : 0.0;
}

// One block: thread i sums terms i, i + blockDim, ... in order, then the tree. The counts are
// integers (atomics on integers give the same total in any order); totals starts zeroed.
__global__ void cross_entropy_totals(Totals* totals, const double* terms, const int32_t* targets, int64_t N,
                                     int64_t V) {
  double acc = 0;
  unsigned long long counted = 0, bad = 0;
  for (int64_t i = threadIdx.x; i < N; i += blockDim.x) {
    acc += terms[i];
    const int32_t t = targets[i];
    counted += t >= 0 && t < V;
    bad += t != ops::kIgnoreIndex && (t < 0 || t >= V);
  }
  const double sum = block_sum(acc);
  if (threadIdx.x == 0) totals->sum = sum;
  if (counted) atomicAdd(&totals->counted, counted);
  if (bad) atomicAdd(&totals->bad, bad);
}

// One block per row, each element read and then written by the same thread, so d_logits may be
// logits. Ignored (and out-of-range) targets give a zero row.
template <class T>
__global__ void cross_entropy_backward_kernel(T* d_logits, const T* logits, const float* lse, const int32_t* targets,
                                              int64_t V, float scale) {
  const int64_t n = blockIdx.x;
  const int32_t t = targets[n];
  T* d = d_logits + n * V;
  const T* x = logits + n * V;
  if (t < 0 || t >= V) {
    for (int64_t v = threadIdx.x; v < V; v += kThreads) d[v] = from_float<T>(0.f);
    return;
  }
  const float l = lse[n];
  for (int64_t v = threadIdx.x; v < V; v += kThreads) {
    const float g = scale * expf(to_float(x[v]) - l);
    d[v] = from_float<T>(v == t ? g - scale : g);
  }
}

void require_sizes(int64_t N, int64_t V) {
  ops::require_arg(N >= 0 && N <= INT_MAX && V >= 1, "cross entropy", "rows must be in [0, 2^31) and V >= 1");
}

}  // namespace

template <class T>
ops::CrossEntropyLoss cross_entropy_forward(float* lse, const T* logits, const int32_t* targets, int64_t N, int64_t V,
                                            cudaStream_t stream) {
  require_sizes(N, V);
  if (N == 0) return {};
  DeviceBuffer<double> terms(size_t(N), stream);
  DeviceBuffer<Totals> totals(1, stream);
  UPCYCLE_CUDA(cudaMemsetAsync(totals.data(), 0, sizeof(Totals), stream));
  cross_entropy_forward_kernel<<<unsigned(N), kThreads, 0, stream>>>(lse, terms.data(), logits, targets, V);
  UPCYCLE_CUDA_LAUNCHED("cross_entropy_forward");
  cross_entropy_totals<<<1, kTotalsThreads, 0, stream>>>(totals.data(), terms.data(), targets, N, V);
  UPCYCLE_CUDA_LAUNCHED("cross_entropy_totals");
  Totals h;
  UPCYCLE_CUDA(cudaMemcpyAsync(&h, totals.data(), sizeof(Totals), cudaMemcpyDeviceToHost, stream));
  UPCYCLE_CUDA(cudaStreamSynchronize(stream));
  ops::require_arg(h.bad == 0, "cross entropy", std::to_string(h.bad) + " targets outside the vocabulary");
  const int64_t count = int64_t(h.counted);
  return {count ? h.sum / double(count) : 0.0, count};
}

template <class T>
void cross_entropy_backward(T* d_logits, const T* logits, const float* lse, const int32_t* targets, int64_t N,
                            int64_t V, int64_t count, double d_loss, cudaStream_t stream) {
  require_sizes(N, V);
  if (N == 0) return;
  const float scale = float(count ? d_loss / double(count) : 0.0);
  cross_entropy_backward_kernel<<<unsigned(N), kThreads, 0, stream>>>(d_logits, logits, lse, targets, V, scale);
  UPCYCLE_CUDA_LAUNCHED("cross_entropy_backward");
}

template ops::CrossEntropyLoss cross_entropy_forward(float*, const float*, const int32_t*, int64_t, int64_t,
                                                     cudaStream_t);
template ops::CrossEntropyLoss cross_entropy_forward(float*, const bf16*, const int32_t*, int64_t, int64_t,
                                                     cudaStream_t);
template void cross_entropy_backward(float*, const float*, const float*, const int32_t*, int64_t, int64_t, int64_t,
                                     double, cudaStream_t);
template void cross_entropy_backward(bf16*, const bf16*, const float*, const int32_t*, int64_t, int64_t, int64_t,
                                     double, cudaStream_t);

}  // namespace upcycle::cuda
