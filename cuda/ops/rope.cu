#include "cuda/ops/rope.hpp"

#include <cmath>
#include <limits>
#include <type_traits>

#include "cuda/ops/convert.cuh"
#include "trainer/ops/check.hpp"

namespace upcycle::cuda {

RopeTable::RopeTable(const ops::RopeTable<float>& host) : head_dim(host.head_dim), max_positions(host.max_positions) {
  const size_t n = size_t(max_positions * (head_dim / 2));
  ops::require_arg(host.cos.size() == n && host.sin.size() == n, "rope", "table sizes disagree with its shape");
  cos.upload(host.cos);
  sin.upload(host.sin);
}

namespace {

constexpr int kThreads = 256;

// block: token n; threads stride over its n_heads · half pairs (i, i + half), each pair read and
// written by one thread, so y may be x. cos, sin [max_positions, half]. A position outside the
// table (the caller checks them: they live on the device) turns by NaN, which the loss shows,
// rather than reading outside the table.
template <bool Backward, class T>
__global__ void rope_kernel(T* y, const T* x, const int32_t* pos, const float* cos, const float* sin, int n_heads,
                            int half, int64_t max_positions) {
  const int64_t n = blockIdx.x;
  const int32_t p = pos[n];
  const bool inside = p >= 0 && p < max_positions;
  for (int j = threadIdx.x; j < n_heads * half; j += kThreads) {
    const int h = j / half, i = j % half;
    const int64_t first = (n * n_heads + h) * 2 * half + i, second = first + half;
    const float c = inside ? cos[int64_t(p) * half + i] : NAN, s = inside ? sin[int64_t(p) * half + i] : NAN;
    const float x1 = to_float(x[first]), x2 = to_float(x[second]);
    if constexpr (Backward) {
      y[first] = from_float<T>(to_float(y[first]) + (x1 * c + x2 * s));
      y[second] = from_float<T>(to_float(y[second]) + (x2 * c - x1 * s));
    } else {
      y[first] = from_float<T>(x1 * c - x2 * s);
      y[second] = from_float<T>(x2 * c + x1 * s);
    }
  }
}

template <bool Backward, class T>
void rotate(T* y, const T* x, const int32_t* pos, const RopeTable& table, int64_t N, int64_t n_heads,
            cudaStream_t stream) {
  ops::require_arg(N >= 0 && n_heads >= 0, "rope", "negative size");
  ops::require_arg(N <= std::numeric_limits<int32_t>::max(), "rope", "more than 2^31 - 1 tokens");
  const int64_t half = table.head_dim / 2;
  ops::require_arg(n_heads * half <= std::numeric_limits<int32_t>::max(), "rope", "too many heads");
  if (N == 0 || n_heads * half == 0) return;
  rope_kernel<Backward><<<unsigned(N), kThreads, 0, stream>>>(y, x, pos, table.cos.data(), table.sin.data(),
                                                              int(n_heads), int(half), table.max_positions);
  UPCYCLE_CUDA_LAUNCHED(Backward ? "rope_backward" : "rope_forward");
}

}  // namespace

template <class T>
void rope_forward(T* out, const T* in, const int32_t* pos, const RopeTable& table, int64_t N, int64_t n_heads,
                  cudaStream_t stream) {
  rotate<false>(out, in, pos, table, N, n_heads, stream);
}

template <class T>
void rope_backward(T* d_in, const T* d_out, const int32_t* pos, const RopeTable& table, int64_t N, int64_t n_heads,
                   cudaStream_t stream) {
  rotate<true>(d_in, d_out, pos, table, N, n_heads, stream);
}

template void rope_forward(float*, const float*, const int32_t*, const RopeTable&, int64_t, int64_t, cudaStream_t);
template void rope_forward(bf16*, const bf16*, const int32_t*, const RopeTable&, int64_t, int64_t, cudaStream_t);
template void rope_backward(float*, const float*, const int32_t*, const RopeTable&, int64_t, int64_t, cudaStream_t);
template void rope_backward(bf16*, const bf16*, const int32_t*, const RopeTable&, int64_t, int64_t, cudaStream_t);

}  // namespace upcycle::cuda
