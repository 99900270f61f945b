#include "cuda/ops/adamw.hpp"

#include <cmath>
#include <type_traits>
#include <vector>

#include "cuda/ops/convert.cuh"
#include "cuda/ops/elementwise.hpp"
#include "trainer/ops/check.hpp"

namespace upcycle::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int64_t kNormChunk = 8192;  // elements per partial sum of the norm (32 per thread)

// The step's scalars, rounded to fp32 on the host as the CPU's float update rounds them.
struct AdamWScalars {
  float b1, b2, eps, step_size, inv_sqrt_correction2, keep;
};

// One thread per element.
template <class T>
__global__ void adamw_kernel(float* param, T* copy, const float* grad, float* m, float* v, int64_t n, AdamWScalars s) {
  const int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  if (i >= n) return;
  const float g = grad[i];
  const float mi = s.b1 * m[i] + (1.f - s.b1) * g;
  const float vi = s.b2 * v[i] + (1.f - s.b2) * g * g;
  const float p = param[i] * s.keep - s.step_size * mi / (sqrtf(vi) * s.inv_sqrt_correction2 + s.eps);
  m[i] = mi;
  v[i] = vi;
  param[i] = p;
  if (copy) copy[i] = from_float<T>(p);
}

// Σ of v over the block's kThreads threads, the same tree every run: shuffles within each warp,
// then the warps' sums by the first warp; thread 0 gets the total. Called once per kernel.
__device__ double block_sum(double v) {
  static_assert(kThreads % 32 == 0 && kThreads <= 1024);
  __shared__ double warp_sums[kThreads / 32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  v = 0;
  if (warp == 0) {
    v = lane < kThreads / 32 ? warp_sums[lane] : 0.0;
    for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
  }
  return v;
}

// block b: partial[b] = Σ x² over elements [b·kNormChunk, (b+1)·kNormChunk) ∩ [0, n), in double.
__global__ void sum_squares_kernel(double* partial, const float* x, int64_t n) {
  const int64_t begin = int64_t(blockIdx.x) * kNormChunk, end = min(n, begin + kNormChunk);
  double s = 0;
  for (int64_t i = begin + threadIdx.x; i < end; i += kThreads) s += double(x[i]) * double(x[i]);
  s = block_sum(s);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

// One block: thread t sums partials t, t + kThreads, ... in order, then the fixed tree.
__global__ void sum_partials_kernel(double* total, const double* partial, int64_t count) {
  double s = 0;
  for (int64_t i = threadIdx.x; i < count; i += kThreads) s += partial[i];
  s = block_sum(s);
  if (threadIdx.x == 0) *total = s;
}

}  // namespace

template <class T>
void adamw_step(float* param, T* copy, const float* grad, float* m, float* v, int64_t n, const ops::AdamWConfig& c,
                int64_t t, bool decay, cudaStream_t stream) {
  ops::require_arg(t >= 1, "adamw", "steps count from 1");
  ops::require_arg(n >= 0, "adamw", "negative size");
  if (n == 0) return;
  const AdamWScalars s{float(c.beta1),
                       float(c.beta2),
                       float(c.eps),
                       float(c.lr / (1.0 - std::pow(c.beta1, double(t)))),
                       float(1.0 / std::sqrt(1.0 - std::pow(c.beta2, double(t)))),
                       float(decay ? 1.0 - c.lr * c.weight_decay : 1.0)};
  adamw_kernel<<<blocks_for(n, kThreads), kThreads, 0, stream>>>(param, copy, grad, m, v, n, s);
  UPCYCLE_CUDA_LAUNCHED("adamw_step");
}

double global_norm(const float* const* tensors, const int64_t* sizes, int64_t count, cudaStream_t stream) {
  ops::require_arg(count >= 0, "global_norm", "negative tensor count");
  std::vector<int64_t> first(size_t(count) + 1, 0);  // each tensor's first partial
  for (int64_t i = 0; i < count; ++i) {
    ops::require_arg(sizes[i] >= 0, "global_norm", "negative tensor size");
    first[size_t(i) + 1] = first[size_t(i)] + (sizes[i] + kNormChunk - 1) / kNormChunk;
  }
  const int64_t partials = first.back();
  if (partials == 0) return 0;
  // Fixed chunks per tensor, then every partial in tensor order: the same bits every run.
  DeviceBuffer<double> sums(size_t(partials) + 1, stream);  // the partials, then the total
  for (int64_t i = 0; i < count; ++i) {
    if (sizes[i] == 0) continue;
    const int64_t blocks = first[size_t(i) + 1] - first[size_t(i)];
    sum_squares_kernel<<<unsigned(blocks), kThreads, 0, stream>>>(sums.data() + first[size_t(i)], tensors[i], sizes[i]);
    UPCYCLE_CUDA_LAUNCHED("sum_squares");
  }
  sum_partials_kernel<<<1, kThreads, 0, stream>>>(sums.data() + partials, sums.data(), partials);
  UPCYCLE_CUDA_LAUNCHED("sum_partials");
  double total = 0;
  UPCYCLE_CUDA(cudaMemcpyAsync(&total, sums.data() + partials, sizeof(double), cudaMemcpyDeviceToHost, stream));
  UPCYCLE_CUDA(cudaStreamSynchronize(stream));
  return std::sqrt(total);
}

double clip_global_norm(float* const* tensors, const int64_t* sizes, int64_t count, double max_norm,
                        cudaStream_t stream) {
  const double norm = global_norm(tensors, sizes, count, stream);
  if (norm <= max_norm) return norm;
  const float factor = float(max_norm / (norm + 1e-6));
  for (int64_t i = 0; i < count; ++i) scale(tensors[i], factor, sizes[i], stream);
  return norm;
}

template void adamw_step(float*, float*, const float*, float*, float*, int64_t, const ops::AdamWConfig&, int64_t, bool,
                         cudaStream_t);
template void adamw_step(float*, bf16*, const float*, float*, float*, int64_t, const ops::AdamWConfig&, int64_t, bool,
                         cudaStream_t);

}  // namespace upcycle::cuda
