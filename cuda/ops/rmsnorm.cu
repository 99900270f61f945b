#include "cuda/ops/rmsnorm.hpp"

#include <limits>
#include <type_traits>

#include "cuda/ops/convert.cuh"
#include "trainer/ops/check.hpp"

namespace upcycle::cuda {

namespace {

constexpr int kThreads = 256;       // a row's threads; also the columns of a d_weight block
constexpr int64_t kChunkRows = 64;  // rows per partial sum of d_weight

// Σ of v over the block's kThreads threads, the same tree every run: shuffles within each warp,
// then the warps' sums by the first warp; every thread gets the total. Every thread of the block
// calls it, at most once per kernel (the shared slots are not reused).
__device__ float block_sum(float v) {
  static_assert(kThreads % 32 == 0 && kThreads <= 1024);
  __shared__ float warp_sums[kThreads / 32];
  __shared__ float total;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < kThreads / 32 ? warp_sums[lane] : 0.f;
    for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
    if (lane == 0) total = v;
  }
  __syncthreads();
  return total;
}

// block: row n; threads stride over its C columns.
template <class T>
__global__ void rmsnorm_forward_kernel(T* out, float* rstd, const T* in, const T* weight, int64_t C, float eps) {
  const int64_t n = blockIdx.x;
  const T* x = in + n * C;
  T* y = out + n * C;
  float sum_sq = 0;
  for (int64_t c = threadIdx.x; c < C; c += kThreads) sum_sq += to_float(x[c]) * to_float(x[c]);
  const float r = 1.f / sqrtf(block_sum(sum_sq) / float(C) + eps);
  if (threadIdx.x == 0) rstd[n] = r;
  // Normalise, round to T, then weigh: transformers casts x̂ to the input dtype before the
  // weight multiplies it (a no-op for float).
  for (int64_t c = threadIdx.x; c < C; c += kThreads) {
    const float x_hat = to_float(from_float<T>(to_float(x[c]) * r));
    y[c] = from_float<T>(to_float(weight[c]) * x_hat);
  }
}

// block: row n. d_in += r·g − r³·x·(Σ_c g⊙x)/C, the CPU's expanded form.
template <class T>
__global__ void rmsnorm_backward_input_kernel(T* d_in, const T* d_out, const T* in, const T* weight, const float* rstd,
                                              int64_t C) {
  const int64_t n = blockIdx.x;
  const T* x = in + n * C;
  const T* dy = d_out + n * C;
  T* dx = d_in + n * C;
  float gx = 0;
  for (int64_t c = threadIdx.x; c < C; c += kThreads) gx += to_float(dy[c]) * to_float(weight[c]) * to_float(x[c]);
  gx = block_sum(gx);
  const float r = rstd[n];
  const float coef = r * r * r * gx / float(C);
  for (int64_t c = threadIdx.x; c < C; c += kThreads)
    dx[c] = from_float<T>(to_float(dx[c]) + r * (to_float(dy[c]) * to_float(weight[c])) - coef * to_float(x[c]));
}

// block (row chunk k, column block), thread: column c. partial[k, c] = Σ over the chunk's rows,
// in order, of d_out ⊙ x̂ (coalesced: neighbouring threads read neighbouring columns).
template <class T>
__global__ void rmsnorm_weight_partial_kernel(float* partial, const T* d_out, const T* in, const float* rstd, int64_t N,
                                              int64_t C) {
  const int64_t k = blockIdx.x, c = int64_t(blockIdx.y) * kThreads + threadIdx.x;
  if (c >= C) return;
  const int64_t end = min(N, (k + 1) * kChunkRows);
  float acc = 0;
  for (int64_t n = k * kChunkRows; n < end; ++n)
    acc += to_float(d_out[n * C + c]) * (to_float(in[n * C + c]) * rstd[n]);
  partial[k * C + c] = acc;
}

// thread: column c. d_weight[c] += Σ_k partial[k, c], the chunks in order.
__global__ void rmsnorm_weight_sum_kernel(float* d_weight, const float* partial, int64_t chunks, int64_t C) {
  const int64_t c = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  if (c >= C) return;
  float acc = 0;
  for (int64_t k = 0; k < chunks; ++k) acc += partial[k * C + c];
  d_weight[c] += acc;
}

void check_sizes(int64_t N, int64_t C) {
  ops::require_arg(N >= 0 && C >= 0, "rmsnorm", "negative size");
  // Rows (and chunks of rows) index the grid's x, column blocks its y.
  ops::require_arg(N <= std::numeric_limits<int32_t>::max(), "rmsnorm", "more than 2^31 - 1 rows");
  ops::require_arg(blocks_for(C, kThreads) <= 65535, "rmsnorm", "rows too wide for the grid");
}

}  // namespace

template <class T>
void rmsnorm_forward(T* out, float* rstd, const T* in, const T* weight, int64_t N, int64_t C, double eps,
                     cudaStream_t stream) {
  check_sizes(N, C);
  if (N == 0) return;
  rmsnorm_forward_kernel<<<unsigned(N), kThreads, 0, stream>>>(out, rstd, in, weight, C, float(eps));
  UPCYCLE_CUDA_LAUNCHED("rmsnorm_forward");
}

template <class T>
void rmsnorm_backward(T* d_in, float* d_weight, const T* d_out, const T* in, const T* weight, const float* rstd,
                      int64_t N, int64_t C, cudaStream_t stream) {
  check_sizes(N, C);
  if (N == 0 || C == 0) return;
  if (d_in) {
    rmsnorm_backward_input_kernel<<<unsigned(N), kThreads, 0, stream>>>(d_in, d_out, in, weight, rstd, C);
    UPCYCLE_CUDA_LAUNCHED("rmsnorm_backward_input");
  }
  if (d_weight) {
    // Fixed chunks of rows, then the chunks in order: the same sums whatever the device.
    const int64_t chunks = (N + kChunkRows - 1) / kChunkRows;
    DeviceBuffer<float> partial(size_t(chunks * C), stream);
    rmsnorm_weight_partial_kernel<<<dim3(unsigned(chunks), blocks_for(C, kThreads)), kThreads, 0, stream>>>(
        partial.data(), d_out, in, rstd, N, C);
    UPCYCLE_CUDA_LAUNCHED("rmsnorm_weight_partial");
    rmsnorm_weight_sum_kernel<<<blocks_for(C, kThreads), kThreads, 0, stream>>>(d_weight, partial.data(), chunks, C);
    UPCYCLE_CUDA_LAUNCHED("rmsnorm_weight_sum");
    // partial is freed on return, in stream order: after the kernels queued here.
  }
}

template void rmsnorm_forward(float*, float*, const float*, const float*, int64_t, int64_t, double, cudaStream_t);
template void rmsnorm_forward(bf16*, float*, const bf16*, const bf16*, int64_t, int64_t, double, cudaStream_t);
template void rmsnorm_backward(float*, float*, const float*, const float*, const float*, const float*, int64_t, int64_t,
                               cudaStream_t);
template void rmsnorm_backward(bf16*, float*, const bf16*, const bf16*, const bf16*, const float*, int64_t, int64_t,
                               cudaStream_t);

}  // namespace upcycle::cuda
