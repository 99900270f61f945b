#include "cuda/ops/moe.hpp"

#include <algorithm>
#include <cub/device/device_radix_sort.cuh>

#include "cuda/ops/convert.cuh"
#include "cuda/ops/matmul.hpp"
#include "cuda/ops/moe_rows.cuh"
#include "cuda/ops/swiglu.hpp"
#include "trainer/ops/check.hpp"

namespace upcycle::cuda {

namespace {

constexpr int kThreads = 256;

// ---- group_by_expert: a stable radix sort of the slots by expert ----

__global__ void iota(int32_t* x, int64_t n) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) x[i] = int32_t(i);
}

// row_of[order[r]] = r
__global__ void invert(int32_t* row_of, const int32_t* order, int64_t n) {
  const int64_t r = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r < n) row_of[order[r]] = int32_t(r);
}

// offsets[e] = how many sorted experts are below e (binary search), e <= E; offsets[E] = n.
__global__ void expert_offsets(int64_t* offsets, const uint32_t* sorted, int64_t n, int64_t E) {
  const int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e > E) return;
  int64_t lo = 0, hi = n;
  while (lo < hi) {
    const int64_t mid = (lo + hi) / 2;
    if (int64_t(sorted[mid]) < e)
      lo = mid + 1;
    else
      hi = mid;
  }
  offsets[e] = lo;
}

// ---- backward (the rows' kernels both directions use are in moe_rows.cuh) ----

// Σ over the block's kThreads threads in a fixed tree (the same bits every run); valid in thread 0.
__device__ float block_sum(float v) {
  __shared__ float warp_sums[kThreads / 32];
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
  if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = v;
  __syncthreads();
  if (threadIdx.x >= 32) return 0;
  v = threadIdx.x < kThreads / 32 ? warp_sums[threadIdx.x] : 0.f;
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
  return v;
}

// d_w[s] += d_out[s / k,:]·y[row_of[s],:]: a block per slot.   d_w [N·k]
template <class T>
__global__ void weight_grad(float* d_w, const T* d_out, const T* y, const int32_t* row_of, int64_t k, int64_t H) {
  const int64_t s = blockIdx.x;
  const T* g = d_out + s / k * H;
  const T* ys = y + row_of[s] * H;
  float dot = 0;
  for (int64_t c = threadIdx.x; c < H; c += blockDim.x) dot += to_float(g[c]) * to_float(ys[c]);
  dot = block_sum(dot);
  if (threadIdx.x == 0) d_w[s] += dot;
}

// Before anything is allocated for the N·k rows.
void check_shape(const ops::MoeShape& s) {
  ops::require_arg(s.tokens >= 0 && s.hidden > 0 && s.inter > 0 && s.experts > 0 && s.top_k > 0, "moe",
                   "sizes must be positive (tokens may be 0)");
  ops::require_arg(s.tokens * s.top_k < (int64_t(1) << 31), "moe", "too many token slots for 32-bit slot ids");
}

template <class T>
void zero(T* p, int64_t n, cudaStream_t stream) {
  UPCYCLE_CUDA(cudaMemsetAsync(p, 0, size_t(n) * sizeof(T), stream));  // all-zero bits: 0 in float and bf16
}

}  // namespace

// The stable sort: keys are the experts (nonnegative, so read as unsigned over their low bits),
// values the slot ids in increasing order, so equal experts keep slot order. idx is on the device:
// that it lies in [0, E) is the caller's to ensure (the router's output does).
void group_by_expert(int32_t* order, int32_t* row_of, int64_t* offsets, const int32_t* idx, int64_t N, int64_t k,
                     int64_t E, cudaStream_t stream) {
  ops::require_arg(N >= 0 && k > 0 && E > 0 && E <= INT32_MAX, "moe", "need N >= 0, k > 0 and 0 < E < 2^31");
  ops::require_arg(N * k < (int64_t(1) << 31), "moe", "too many token slots for 32-bit slot ids");
  const int64_t rows = N * k;
  if (rows == 0) {
    zero(offsets, E + 1, stream);
    return;
  }
  int bits = 1;
  while ((int64_t(1) << bits) < E) ++bits;

  DeviceBuffer<int32_t> slots(size_t(rows), stream);
  DeviceBuffer<uint32_t> sorted(size_t(rows), stream);
  iota<<<blocks_for(rows, kThreads), kThreads, 0, stream>>>(slots.data(), rows);
  UPCYCLE_CUDA_LAUNCHED("iota");
  const auto* keys = reinterpret_cast<const uint32_t*>(idx);
  size_t temp_bytes = 0;
  UPCYCLE_CUDA(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, keys, sorted.data(), slots.data(), order,
                                               int(rows), 0, bits, stream));
  DeviceBuffer<unsigned char> temp(std::max<size_t>(temp_bytes, 1), stream);
  UPCYCLE_CUDA(cub::DeviceRadixSort::SortPairs(temp.data(), temp_bytes, keys, sorted.data(), slots.data(), order,
                                               int(rows), 0, bits, stream));
  invert<<<blocks_for(rows, kThreads), kThreads, 0, stream>>>(row_of, order, rows);
  UPCYCLE_CUDA_LAUNCHED("invert");
  expert_offsets<<<blocks_for(E + 1, kThreads), kThreads, 0, stream>>>(offsets, sorted.data(), rows, E);
  UPCYCLE_CUDA_LAUNCHED("expert_offsets");
}

template <class T>
void moe_forward(T* out, MoeSaved<T>& s, const T* x, const int32_t* idx, const float* w,
                 const ExpertWeights<T>& experts, const ops::MoeShape& shape, cudaStream_t stream) {
  check_shape(shape);
  const int64_t N = shape.tokens, H = shape.hidden, I = shape.inter, E = shape.experts, k = shape.top_k;
  const int64_t rows = N * k;
  if (N == 0) return;
  s.gate.resize(size_t(rows * I));
  s.up.resize(size_t(rows * I));
  s.act.resize(size_t(rows * I));
  s.y.resize(size_t(rows * H));
  group_rows(s, x, idx, N, k, E, H, stream);
  const std::vector<int64_t>& at = s.host_offsets;

  for (int64_t e = 0; e < E; ++e) {
    const int64_t n = at[e + 1] - at[e];
    if (n == 0) continue;
    const T* xe = s.x.data() + at[e] * H;
    matmul_forward<T, T>(s.gate.data() + at[e] * I, xe, experts.gate[e], nullptr, n, H, I, stream);
    matmul_forward<T, T>(s.up.data() + at[e] * I, xe, experts.up[e], nullptr, n, H, I, stream);
  }
  swiglu_forward(s.act.data(), s.gate.data(), s.up.data(), rows * I, stream);
  for (int64_t e = 0; e < E; ++e) {
    const int64_t n = at[e + 1] - at[e];
    if (n == 0) continue;
    matmul_forward<T, T>(s.y.data() + at[e] * H, s.act.data() + at[e] * I, experts.down[e], nullptr, n, I, H, stream);
  }
  combine_rows<<<unsigned(N), kThreads, 0, stream>>>(out, s.y.data(), s.row_of.data(), w, k, H, false);
  UPCYCLE_CUDA_LAUNCHED("moe combine");
}

template <class T>
void moe_backward(T* d_x, float* d_w, const ExpertGrads& d_experts, const T* d_out, const float* w,
                  const ExpertWeights<T>& experts, const MoeSaved<T>& s, const ops::MoeShape& shape,
                  cudaStream_t stream) {
  check_shape(shape);
  const int64_t N = shape.tokens, H = shape.hidden, I = shape.inter, E = shape.experts, k = shape.top_k;
  const int64_t rows = N * k;
  if (N == 0) return;
  ops::require_arg(s.order.size() == size_t(rows) && s.host_offsets.size() == size_t(E + 1) &&
                       s.y.size() == size_t(rows * H) && s.act.size() == size_t(rows * I),
                   "moe", "saved state is not from a forward of this shape");
  const std::vector<int64_t>& at = s.host_offsets;
  auto grad_of = [](float* const* grads, int64_t e) { return grads ? grads[e] : nullptr; };

  if (d_w) {
    weight_grad<<<unsigned(rows), kThreads, 0, stream>>>(d_w, d_out, s.y.data(), s.row_of.data(), k, H);
    UPCYCLE_CUDA_LAUNCHED("moe weight_grad");
  }
  DeviceBuffer<T> d_y(size_t(rows * H), stream);
  weighted_rows<<<unsigned(rows), kThreads, 0, stream>>>(d_y.data(), d_out, w, s.order.data(), k, H);
  UPCYCLE_CUDA_LAUNCHED("moe weighted_rows");

  // Through down: d_act [N·k, I], added into by the GEMMs, so zeroed first.
  DeviceBuffer<T> d_act(size_t(rows * I), stream);
  zero(d_act.data(), rows * I, stream);
  for (int64_t e = 0; e < E; ++e) {
    const int64_t n = at[e + 1] - at[e];
    if (n == 0) continue;
    matmul_backward<T>(d_act.data() + at[e] * I, grad_of(d_experts.down, e), nullptr, d_y.data() + at[e] * H,
                       s.act.data() + at[e] * I, experts.down[e], n, I, H, stream);
  }
  DeviceBuffer<T> d_gate(size_t(rows * I), stream), d_up(size_t(rows * I), stream);
  zero(d_gate.data(), rows * I, stream);
  zero(d_up.data(), rows * I, stream);
  swiglu_backward(d_gate.data(), d_up.data(), d_act.data(), s.gate.data(), s.up.data(), rows * I, stream);

  // Through gate and up: each slot's d_x row [N·k, H], both projections adding into it.
  DeviceBuffer<T> d_xs(d_x ? size_t(rows * H) : 0, stream);
  if (d_x) zero(d_xs.data(), rows * H, stream);
  for (int64_t e = 0; e < E; ++e) {
    const int64_t n = at[e + 1] - at[e];
    if (n == 0) continue;
    T* d_xe = d_x ? d_xs.data() + at[e] * H : nullptr;
    const T* xe = s.x.data() + at[e] * H;
    matmul_backward<T>(d_xe, grad_of(d_experts.gate, e), nullptr, d_gate.data() + at[e] * I, xe, experts.gate[e], n,
                       H, I, stream);
    matmul_backward<T>(d_xe, grad_of(d_experts.up, e), nullptr, d_up.data() + at[e] * I, xe, experts.up[e], n, H, I,
                       stream);
  }
  if (!d_x) return;
  combine_rows<<<unsigned(N), kThreads, 0, stream>>>(d_x, d_xs.data(), s.row_of.data(), nullptr, k, H, true);
  UPCYCLE_CUDA_LAUNCHED("moe scatter_add");
}

template void moe_forward(float*, MoeSaved<float>&, const float*, const int32_t*, const float*,
                          const ExpertWeights<float>&, const ops::MoeShape&, cudaStream_t);
template void moe_forward(bf16*, MoeSaved<bf16>&, const bf16*, const int32_t*, const float*, const ExpertWeights<bf16>&,
                          const ops::MoeShape&, cudaStream_t);
template void moe_backward(float*, float*, const ExpertGrads&, const float*, const float*, const ExpertWeights<float>&,
                           const MoeSaved<float>&, const ops::MoeShape&, cudaStream_t);
template void moe_backward(bf16*, float*, const ExpertGrads&, const bf16*, const float*, const ExpertWeights<bf16>&,
                           const MoeSaved<bf16>&, const ops::MoeShape&, cudaStream_t);

}  // namespace upcycle::cuda
