#include "cuda/ops/elementwise.hpp"

#include <type_traits>

#include "cuda/ops/convert.cuh"
#include "trainer/ops/check.hpp"

namespace upcycle::cuda {

namespace {

constexpr int kThreads = 256;

// One thread per element; the index in int64, since n may pass 2^31.
__device__ __forceinline__ int64_t element() { return int64_t(blockIdx.x) * blockDim.x + threadIdx.x; }

template <class T>
__global__ void add_into_kernel(T* a, const T* b, int64_t n) {
  const int64_t i = element();
  if (i < n) a[i] = from_float<T>(to_float(a[i]) + to_float(b[i]));
}

template <class To, class From>
__global__ void cast_kernel(To* out, const From* in, int64_t n) {
  const int64_t i = element();
  if (i < n) out[i] = from_float<To>(to_float(in[i]));
}

__global__ void scale_kernel(float* x, float scale, int64_t n) {
  const int64_t i = element();
  if (i < n) x[i] *= scale;
}

}  // namespace

template <class T>
void add_into(T* a, const T* b, int64_t n, cudaStream_t stream) {
  ops::require_arg(n >= 0, "add_into", "negative size");
  if (n == 0) return;
  add_into_kernel<<<blocks_for(n, kThreads), kThreads, 0, stream>>>(a, b, n);
  UPCYCLE_CUDA_LAUNCHED("add_into");
}

template <class To, class From>
void cast(To* out, const From* in, int64_t n, cudaStream_t stream) {
  ops::require_arg(n >= 0, "cast", "negative size");
  if (n == 0) return;
  cast_kernel<<<blocks_for(n, kThreads), kThreads, 0, stream>>>(out, in, n);
  UPCYCLE_CUDA_LAUNCHED("cast");
}

void scale(float* x, float scale, int64_t n, cudaStream_t stream) {
  ops::require_arg(n >= 0, "scale", "negative size");
  if (n == 0) return;
  scale_kernel<<<blocks_for(n, kThreads), kThreads, 0, stream>>>(x, scale, n);
  UPCYCLE_CUDA_LAUNCHED("scale");
}

template void add_into(float*, const float*, int64_t, cudaStream_t);
template void add_into(bf16*, const bf16*, int64_t, cudaStream_t);
template void cast(bf16*, const float*, int64_t, cudaStream_t);
template void cast(float*, const bf16*, int64_t, cudaStream_t);

}  // namespace upcycle::cuda
