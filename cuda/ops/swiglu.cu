#include "cuda/ops/swiglu.hpp"

#include "cuda/ops/convert.cuh"
#include "cuda/ops/sigmoid.cuh"
#include "trainer/ops/check.hpp"

namespace upcycle::cuda {

namespace {

constexpr int kThreads = 256;

template <class T>
__global__ void forward(T* out, const T* gate, const T* up, int64_t count) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= count) return;
  const float g = to_float(gate[i]);
  out[i] = from_float<T>(g * sigmoid(g) * to_float(up[i]));
}

template <class T>
__global__ void backward(T* d_gate, T* d_up, const T* d_out, const T* gate, const T* up, int64_t count) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= count) return;
  const float g = to_float(gate[i]), u = to_float(up[i]), dy = to_float(d_out[i]);
  const float s = sigmoid(g);
  d_gate[i] = from_float<T>(to_float(d_gate[i]) + dy * u * s * (1.f + g * (1.f - s)));
  d_up[i] = from_float<T>(to_float(d_up[i]) + dy * g * s);
}

}  // namespace

template <class T>
void swiglu_forward(T* out, const T* gate, const T* up, int64_t count, cudaStream_t stream) {
  ops::require_arg(count >= 0, "swiglu", "negative count");
  if (count == 0) return;
  forward<<<blocks_for(count, kThreads), kThreads, 0, stream>>>(out, gate, up, count);
  UPCYCLE_CUDA_LAUNCHED("swiglu forward");
}

template <class T>
void swiglu_backward(T* d_gate, T* d_up, const T* d_out, const T* gate, const T* up, int64_t count,
                     cudaStream_t stream) {
  ops::require_arg(count >= 0, "swiglu", "negative count");
  if (count == 0) return;
  backward<<<blocks_for(count, kThreads), kThreads, 0, stream>>>(d_gate, d_up, d_out, gate, up, count);
  UPCYCLE_CUDA_LAUNCHED("swiglu backward");
}

template void swiglu_forward(float*, const float*, const float*, int64_t, cudaStream_t);
template void swiglu_forward(bf16*, const bf16*, const bf16*, int64_t, cudaStream_t);
template void swiglu_backward(float*, float*, const float*, const float*, const float*, int64_t, cudaStream_t);
template void swiglu_backward(bf16*, bf16*, const bf16*, const bf16*, const bf16*, int64_t, cudaStream_t);

}  // namespace upcycle::cuda
