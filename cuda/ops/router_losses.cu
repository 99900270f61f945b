#include <climits>
#include <string>

#include "cuda/ops/reduce.cuh"
#include "cuda/ops/router.hpp"
#include "trainer/ops/check.hpp"

namespace upcycle::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int64_t kRowsPerBlock = 128;  // fixed, so the order of every sum depends on N alone

// What a forward brings back to the host in one copy. Counts are integers, added with integer
// atomics (exact, so in any order the same); the sum is reduced in a fixed tree.
struct Totals {
  double sum;
  unsigned long long counted;  // BCE: tokens with a target
  unsigned long long bad;      // indices or targets out of range
};

Totals fetch(const Totals* d, cudaStream_t stream) {
  Totals h;
  UPCYCLE_CUDA(cudaMemcpyAsync(&h, d, sizeof(Totals), cudaMemcpyDeviceToHost, stream));
  UPCYCLE_CUDA(cudaStreamSynchronize(stream));
  return h;
}


// logsumexp of a row of E logits, warp-uniform; lanes stride over the experts.
__device__ float warp_logsumexp(const float* x, int64_t E, int lane) {
  float mx = -INFINITY;
  for (int64_t e = lane; e < E; e += 32) mx = fmaxf(mx, x[e]);
  mx = warp_max(mx);
  float sum = 0.f;
  for (int64_t e = lane; e < E; e += 32) sum += expf(x[e] - mx);
  return mx + logf(warp_sum(sum));
}

// partial[b] = Σ over rows [b·kRowsPerBlock, (b+1)·kRowsPerBlock) of term(n, lane), a warp-collective
// functor returning the lane's share of row n. Warp w takes rows w, w + kWarps, ... of the block.
template <class Term>
__global__ void row_partials(double* partial, Term term, int64_t N) {
  const int lane = threadIdx.x & 31;
  const int64_t first = int64_t(blockIdx.x) * kRowsPerBlock;
  const int64_t end = N < first + kRowsPerBlock ? N : first + kRowsPerBlock;
  double acc = 0;
  for (int64_t n = first + (threadIdx.x >> 5); n < end; n += kWarps) acc += term(n, lane);  // warp-uniform loop
  const double s = block_sum(acc);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

// totals->sum = Σ_b partial[b]: thread t takes b = t, t + blockDim, ... in order, then the tree.
__global__ void sum_partials(Totals* totals, const double* partial, int64_t blocks) {
  double acc = 0;
  for (int64_t b = threadIdx.x; b < blocks; b += blockDim.x) acc += partial[b];
  const double s = block_sum(acc);
  if (threadIdx.x == 0) totals->sum = s;
}

// totals->sum = Σ_n term(n, ·) over N rows.
template <class Term>
void reduce_rows(Totals* totals, const Term& term, int64_t N, cudaStream_t stream) {
  const int64_t blocks = (N + kRowsPerBlock - 1) / kRowsPerBlock;
  DeviceBuffer<double> partial(size_t(blocks), stream);
  row_partials<<<unsigned(blocks), kThreads, 0, stream>>>(partial.data(), term, N);
  UPCYCLE_CUDA_LAUNCHED("router loss row_partials");
  sum_partials<<<1, kThreads, 0, stream>>>(totals, partial.data(), blocks);
  UPCYCLE_CUDA_LAUNCHED("router loss sum_partials");
}

// counts[e] = number of slots with idx = e; slots outside [0, E) are counted in *bad. Lanes
// holding the same expert add once per warp (__match_any_sync), so the atomics do not pile up
// on E addresses.
__global__ void count_selections_kernel(unsigned long long* counts, unsigned long long* bad, const int32_t* idx,
                                        int64_t slots, int E) {
  const int64_t s = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  int key = -1;  // past the end: nothing to count
  if (s < slots) key = idx[s] >= 0 && idx[s] < E ? idx[s] : E;
  const unsigned peers = __match_any_sync(kAllLanes, key);
  if (key >= 0 && int(threadIdx.x & 31) == __ffs(peers) - 1)
    atomicAdd(key < E ? &counts[key] : bad, (unsigned long long)__popc(peers));
}

// counts[E] and *bad, zeroed then counted over the N·k slots of idx.
void count_selections(unsigned long long* counts, unsigned long long* bad, const int32_t* idx, int64_t N, int64_t E,
                      int64_t k, cudaStream_t stream) {
  UPCYCLE_CUDA(cudaMemsetAsync(counts, 0, size_t(E) * sizeof(unsigned long long), stream));
  UPCYCLE_CUDA(cudaMemsetAsync(bad, 0, sizeof(unsigned long long), stream));
  count_selections_kernel<<<blocks_for(N * k, kThreads), kThreads, 0, stream>>>(counts, bad, idx, N * k, int(E));
  UPCYCLE_CUDA_LAUNCHED("count_selections");
}

// BCE targets: totals->counted = #(0 <= t < E), totals->bad = #(t outside [-1, E)); both start at zero.
__global__ void count_targets_kernel(Totals* totals, const int32_t* targets, int64_t N, int64_t E) {
  const int64_t n = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int32_t t = n < N ? targets[n] : -1;
  const int counted = __syncthreads_count(t >= 0 && t < E), bad = __syncthreads_count(t < -1 || t >= E);
  if (threadIdx.x == 0 && counted) atomicAdd(&totals->counted, (unsigned long long)counted);
  if (threadIdx.x == 0 && bad) atomicAdd(&totals->bad, (unsigned long long)bad);
}

void count_targets(Totals* totals, const int32_t* targets, int64_t N, int64_t E, cudaStream_t stream) {
  UPCYCLE_CUDA(cudaMemsetAsync(totals, 0, sizeof(Totals), stream));
  count_targets_kernel<<<blocks_for(N, kThreads), kThreads, 0, stream>>>(totals, targets, N, E);
  UPCYCLE_CUDA_LAUNCHED("count_targets");
}

// Load balancing: Σ_e count[e]·Σ_n probs[n,e] = Σ_n Σ_e count[e]·probs[n,e], summed by rows.
struct BalanceTerm {
  const float* probs;
  const unsigned long long* counts;
  int64_t E;
  __device__ double operator()(int64_t n, int lane) const {
    double s = 0;
    for (int64_t e = lane; e < E; e += 32) s += double(counts[e]) * double(probs[n * E + e]);
    return s;
  }
};

// d_logits[n,e] += p·(g[e] − Σ_e' g[e']·p[e']), g[e] = scale·count[e]; one warp per row.
__global__ void balance_backward(float* d_logits, const float* probs, const unsigned long long* counts, int64_t N,
                                 int64_t E, float scale) {
  const int lane = threadIdx.x & 31;
  const int64_t n = int64_t(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  if (n >= N) return;
  const float* p = probs + n * E;
  float gp = 0.f;
  for (int64_t e = lane; e < E; e += 32) gp += scale * float(counts[e]) * p[e];
  gp = warp_sum(gp);
  for (int64_t e = lane; e < E; e += 32) d_logits[n * E + e] += p[e] * (scale * float(counts[e]) - gp);
}

struct ZTerm {
  const float* logits;
  int64_t E;
  __device__ double operator()(int64_t n, int lane) const {
    const double z = warp_logsumexp(logits + n * E, E, lane);
    return lane == 0 ? z * z : 0.0;
  }
};

// d_logits[n,e] += scale·z[n]·softmax(logits[n])[e], scale = d_loss·coef·2/N; one warp per row.
__global__ void z_backward(float* d_logits, const float* logits, int64_t N, int64_t E, float scale) {
  const int lane = threadIdx.x & 31;
  const int64_t n = int64_t(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  if (n >= N) return;
  const float* x = logits + n * E;
  const float z = warp_logsumexp(x, E, lane);
  for (int64_t e = lane; e < E; e += 32) d_logits[n * E + e] += scale * z * expf(x[e] - z);
}

// log(1 + e^z) without overflow, and without losing the small values for very negative z.
__device__ __forceinline__ float softplus(float z) { return fmaxf(z, 0.f) + log1pf(expf(-fabsf(z))); }
__device__ __forceinline__ float sigmoid(float z) {
  if (z >= 0.f) return 1.f / (1.f + expf(-z));
  const float e = expf(z);
  return e / (1.f + e);
}

// Σ_e softplus(z) − [e == t]·z on counted rows; uncounted and out-of-range targets give 0.
struct BceTerm {
  const float* logits;
  const int32_t* targets;
  int64_t E;
  __device__ double operator()(int64_t n, int lane) const {
    const int32_t t = targets[n];
    if (t < 0 || t >= E) return 0.0;
    double s = 0;
    for (int64_t e = lane; e < E; e += 32) {
      const float z = logits[n * E + e];
      s += double(softplus(z)) - (e == t ? double(z) : 0.0);
    }
    return s;
  }
};

// d_logits[n,e] += d_loss·coef·(sigmoid(z) − y)/(M·E) on counted rows; one thread per element.
// M comes from the device (count_targets), so nothing waits.
__global__ void bce_backward(float* d_logits, const float* logits, const int32_t* targets, const Totals* totals,
                             int64_t N, int64_t E, double d_loss_coef) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= N * E) return;
  const int64_t n = i / E, e = i % E;
  const int32_t t = targets[n];
  if (t < 0 || t >= E) return;
  const float scale = float(d_loss_coef / (double(totals->counted) * double(E)));  // M >= 1: row n counts
  d_logits[i] += scale * (sigmoid(logits[i]) - (e == t ? 1.f : 0.f));
}

void require_sizes(const char* op, int64_t N, int64_t E) {
  ops::require_arg(N >= 0 && E >= 1 && E <= INT_MAX, op, "tokens must be >= 0 and experts in [1, 2^31)");
}

// The global-batch counts [E] on the device, and the tokens they were counted over.
void upload_counts(DeviceBuffer<unsigned long long>& into, const int64_t* counts, int64_t counted_tokens, int64_t E,
                   cudaStream_t stream) {
  ops::require_arg(counted_tokens > 0, "load balancing loss", "global-batch counts need a positive token count");
  into.upload(std::vector<unsigned long long>(counts, counts + E), stream);
}

}  // namespace

double load_balancing_loss_forward(const float* probs, const int32_t* idx, int64_t N, int64_t E, int64_t k, double coef,
                                   const int64_t* global_counts, int64_t counted_tokens, cudaStream_t stream) {
  require_sizes("load balancing loss", N, E);
  if (N == 0) return 0.0;
  DeviceBuffer<unsigned long long> counts(size_t(E), stream);
  DeviceBuffer<Totals> totals(1, stream);
  if (global_counts) upload_counts(counts, global_counts, counted_tokens, E, stream);
  else count_selections(counts.data(), &totals.data()->bad, idx, N, E, k, stream);
  reduce_rows(totals.data(), BalanceTerm{probs, counts.data(), E}, N, stream);
  const Totals h = fetch(totals.data(), stream);
  ops::require_arg(h.bad == 0, "load balancing loss", std::to_string(h.bad) + " expert indices outside [0, E)");
  return coef * double(E) * h.sum / (double(N) * double(global_counts ? counted_tokens : N));
}

void load_balancing_loss_backward(float* d_logits, const float* probs, const int32_t* idx, int64_t N, int64_t E,
                                  int64_t k, double coef, double d_loss, const int64_t* global_counts,
                                  int64_t counted_tokens, cudaStream_t stream) {
  require_sizes("load balancing loss", N, E);
  if (N == 0) return;
  DeviceBuffer<unsigned long long> counts(size_t(E) + 1, stream);  // the last: slots outside [0, E), skipped
  if (global_counts) upload_counts(counts, global_counts, counted_tokens, E, stream);  // counts[E] unused
  else count_selections(counts.data(), counts.data() + E, idx, N, E, k, stream);
  const float scale = float(d_loss * coef * double(E) / (double(N) * double(global_counts ? counted_tokens : N)));
  balance_backward<<<blocks_for(N, kWarps), kThreads, 0, stream>>>(d_logits, probs, counts.data(), N, E, scale);
  UPCYCLE_CUDA_LAUNCHED("load_balancing_loss_backward");
}

double router_z_loss_forward(const float* logits, int64_t N, int64_t E, double coef, cudaStream_t stream) {
  require_sizes("router z-loss", N, E);
  if (N == 0) return 0.0;
  DeviceBuffer<Totals> totals(1, stream);
  reduce_rows(totals.data(), ZTerm{logits, E}, N, stream);
  return coef * fetch(totals.data(), stream).sum / double(N);
}

void router_z_loss_backward(float* d_logits, const float* logits, int64_t N, int64_t E, double coef, double d_loss,
                            cudaStream_t stream) {
  require_sizes("router z-loss", N, E);
  if (N == 0) return;
  const float scale = float(d_loss * coef * 2.0 / double(N));
  z_backward<<<blocks_for(N, kWarps), kThreads, 0, stream>>>(d_logits, logits, N, E, scale);
  UPCYCLE_CUDA_LAUNCHED("router_z_loss_backward");
}

double router_bce_loss_forward(const float* logits, const int32_t* targets, int64_t N, int64_t E, double coef,
                               cudaStream_t stream) {
  require_sizes("router BCE loss", N, E);
  if (N == 0) return 0.0;
  DeviceBuffer<Totals> totals(1, stream);
  count_targets(totals.data(), targets, N, E, stream);
  reduce_rows(totals.data(), BceTerm{logits, targets, E}, N, stream);
  const Totals h = fetch(totals.data(), stream);
  ops::require_arg(h.bad == 0, "router BCE loss", std::to_string(h.bad) + " targets outside [-1, E)");
  return h.counted ? coef * h.sum / (double(h.counted) * double(E)) : 0.0;
}

void router_bce_loss_backward(float* d_logits, const float* logits, const int32_t* targets, int64_t N, int64_t E,
                              double coef, double d_loss, cudaStream_t stream) {
  require_sizes("router BCE loss", N, E);
  if (N == 0) return;
  DeviceBuffer<Totals> totals(1, stream);
  count_targets(totals.data(), targets, N, E, stream);
  bce_backward<<<blocks_for(N * E, kThreads), kThreads, 0, stream>>>(d_logits, logits, targets, totals.data(), N, E,
                                                                     d_loss * coef);
  UPCYCLE_CUDA_LAUNCHED("router_bce_loss_backward");
}

}  // namespace upcycle::cuda
