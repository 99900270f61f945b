#include "cuda/ops/sigmoid_gate.hpp"

#include <limits>

#include "cuda/ops/convert.cuh"
#include "cuda/ops/reduce.cuh"
#include "cuda/ops/sigmoid.cuh"
#include "trainer/ops/check.hpp"

namespace upcycle::cuda {

namespace {

constexpr int kThreads = 256;  // forward: elements per block; backward: a row's threads

// thread: element i of [N,H], row i / H.
template <class T>
__global__ void forward_kernel(T* out, const T* y, const float* logit, int64_t H, int64_t count) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= count) return;
  const float s = sigmoid(logit[i / H]);
  out[i] = from_float<T>(to_float(out[i]) + s * to_float(y[i]));
}

// block: row n; threads stride over its H columns, each summing its d_out·y in fp32, then the
// block's fixed tree (reduce.cuh) in thread 0. 1 − σ(x) is taken as σ(−x), from its own exp, so
// it keeps the tail a subtraction loses.
template <class T>
__global__ void backward_kernel(T* d_y, float* d_logit, const T* d_out, const T* y, const float* logit, int64_t H) {
  const int64_t n = blockIdx.x;
  const float x = logit[n], s = sigmoid(x);
  const T* dy = d_out + n * H;
  const T* yn = y + n * H;
  T* dyn = d_y + n * H;
  float dot = 0.f;
  for (int64_t h = threadIdx.x; h < H; h += kThreads) {
    const float g = to_float(dy[h]);
    dot += g * to_float(yn[h]);
    dyn[h] = from_float<T>(s * g);
  }
  const double total = block_sum(double(dot));
  if (threadIdx.x == 0) d_logit[n] = s * sigmoid(-x) * float(total);
}

void check_sizes(int64_t N, int64_t H) {
  ops::require_arg(N >= 0 && H >= 0, "sigmoid_gate", "negative size");
  ops::require_arg(N <= std::numeric_limits<int32_t>::max(), "sigmoid_gate", "more than 2^31 - 1 rows");
}

}  // namespace

template <class T>
void sigmoid_gate_forward(T* out, const T* y, const float* logit, int64_t N, int64_t H, cudaStream_t stream) {
  check_sizes(N, H);
  if (N == 0 || H == 0) return;
  forward_kernel<<<blocks_for(N * H, kThreads), kThreads, 0, stream>>>(out, y, logit, H, N * H);
  UPCYCLE_CUDA_LAUNCHED("sigmoid_gate forward");
}

template <class T>
void sigmoid_gate_backward(T* d_y, float* d_logit, const T* d_out, const T* y, const float* logit, int64_t N, int64_t H,
                           cudaStream_t stream) {
  check_sizes(N, H);
  if (N == 0) return;  // H == 0 still writes d_logit = 0, as the CPU op does
  backward_kernel<<<unsigned(N), kThreads, 0, stream>>>(d_y, d_logit, d_out, y, logit, H);
  UPCYCLE_CUDA_LAUNCHED("sigmoid_gate backward");
}

template void sigmoid_gate_forward(float*, const float*, const float*, int64_t, int64_t, cudaStream_t);
template void sigmoid_gate_forward(bf16*, const bf16*, const float*, int64_t, int64_t, cudaStream_t);
template void sigmoid_gate_backward(float*, float*, const float*, const float*, const float*, int64_t, int64_t,
                                    cudaStream_t);
template void sigmoid_gate_backward(bf16*, float*, const bf16*, const bf16*, const float*, int64_t, int64_t,
                                    cudaStream_t);

}  // namespace upcycle::cuda
