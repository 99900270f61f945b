#include "cuda/ops/embedding.hpp"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cub/device/device_radix_sort.cuh>
#include <limits>
#include <type_traits>

#include "cuda/ops/convert.cuh"
#include "trainer/ops/check.hpp"

namespace upcycle::cuda {

namespace {

constexpr int kThreads = 256;  // columns per block
constexpr int64_t kMaxInt = std::numeric_limits<int32_t>::max();

// The ids live on the device, so the caller checks them (the CPU op does); an id outside
// [0, V) still never reaches memory outside the table: its row reads as NaN in the forward
// (the loss shows it) and it adds nothing in the backward.

// block (n, column chunk), thread: one column of token n's row.
template <class T>
__global__ void embedding_forward_kernel(T* out, const T* table, const int32_t* ids, int64_t H, int64_t V) {
  const int64_t n = blockIdx.x, c = int64_t(blockIdx.y) * kThreads + threadIdx.x;
  if (c >= H) return;
  const int32_t id = ids[n];
  out[n * H + c] = id >= 0 && id < V ? table[int64_t(id) * H + c] : from_float<T>(NAN);
}

// keys[n] = ids[n], or V for an id outside the table; positions[n] = n (the sort's values).
__global__ void embedding_keys_kernel(int32_t* keys, int32_t* positions, const int32_t* ids, int64_t N, int64_t V) {
  const int64_t n = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  if (n >= N) return;
  const int32_t id = ids[n];
  keys[n] = id >= 0 && id < V ? id : int32_t(V);
  positions[n] = int32_t(n);
}

// keys [N] sorted, stably, so each id's tokens form a run in token order; positions [N] the
// token of each. Block (i, column chunk): when entry i starts a run, each thread adds the run's
// rows of d_out to its column of the id's row, one token after another. Each element of d_table
// has one writer and a fixed order of additions (that of the CPU op).
template <class T>
__global__ void embedding_backward_kernel(float* d_table, const T* d_out, const int32_t* keys, const int32_t* positions,
                                          int64_t N, int64_t H, int64_t V) {
  const int64_t i = blockIdx.x, c = int64_t(blockIdx.y) * kThreads + threadIdx.x;
  const int32_t id = keys[i];
  if (c >= H || id == V || (i > 0 && keys[i - 1] == id)) return;
  float* dst = d_table + int64_t(id) * H + c;
  float acc = *dst;
  for (int64_t j = i; j < N && keys[j] == id; ++j) acc += to_float(d_out[int64_t(positions[j]) * H + c]);
  *dst = acc;
}

void check_sizes(int64_t N, int64_t H, int64_t V) {
  ops::require_arg(N >= 0 && H >= 0 && V >= 0, "embedding", "negative size");
  // Tokens index the grid's x (and int32 positions), column chunks its y; V is the backward's
  // key for ids outside the table.
  ops::require_arg(N <= kMaxInt && V <= kMaxInt, "embedding", "more than 2^31 - 1 tokens or ids");
  ops::require_arg(blocks_for(H, kThreads) <= 65535, "embedding", "rows too wide for the grid");
}

}  // namespace

template <class T>
void embedding_forward(T* out, const T* table, const int32_t* ids, int64_t N, int64_t H, int64_t V,
                       cudaStream_t stream) {
  check_sizes(N, H, V);
  if (N == 0 || H == 0) return;
  embedding_forward_kernel<<<dim3(unsigned(N), blocks_for(H, kThreads)), kThreads, 0, stream>>>(out, table, ids, H, V);
  UPCYCLE_CUDA_LAUNCHED("embedding_forward");
}

template <class T>
void embedding_backward(float* d_table, const T* d_out, const int32_t* ids, int64_t N, int64_t H, int64_t V,
                        cudaStream_t stream) {
  check_sizes(N, H, V);
  if (N == 0 || H == 0) return;
  // The keys need the bits of V (the out-of-table key) and no more: fewer radix passes.
  const int end_bit = std::max(1, int(std::bit_width(uint32_t(V))));
  const int num_items = int(N);
  size_t sort_bytes = 0;
  UPCYCLE_CUDA(cub::DeviceRadixSort::SortPairs(nullptr, sort_bytes, static_cast<const int32_t*>(nullptr),
                                               static_cast<int32_t*>(nullptr), static_cast<const int32_t*>(nullptr),
                                               static_cast<int32_t*>(nullptr), num_items, 0, end_bit, stream));
  // One allocation: keys, positions, sorted keys, sorted positions, then the sort's scratch;
  // each part starts on a 256-byte boundary, as the allocation itself.
  const int64_t stride = (N + 63) / 64 * 64;
  DeviceBuffer<int32_t> scratch(size_t(4 * stride) + (sort_bytes + 3) / 4, stream);
  int32_t* keys = scratch.data();
  int32_t* positions = keys + stride;
  int32_t* sorted_keys = positions + stride;
  int32_t* sorted_positions = sorted_keys + stride;
  embedding_keys_kernel<<<blocks_for(N, kThreads), kThreads, 0, stream>>>(keys, positions, ids, N, V);
  UPCYCLE_CUDA_LAUNCHED("embedding_keys");
  UPCYCLE_CUDA(cub::DeviceRadixSort::SortPairs(sorted_positions + stride, sort_bytes, keys, sorted_keys, positions,
                                               sorted_positions, num_items, 0, end_bit, stream));
  embedding_backward_kernel<<<dim3(unsigned(N), blocks_for(H, kThreads)), kThreads, 0, stream>>>(
      d_table, d_out, sorted_keys, sorted_positions, N, H, V);
  UPCYCLE_CUDA_LAUNCHED("embedding_backward");
  // The scratch is freed on return, in stream order: after the kernels queued here.
}

template void embedding_forward(float*, const float*, const int32_t*, int64_t, int64_t, int64_t, cudaStream_t);
template void embedding_forward(bf16*, const bf16*, const int32_t*, int64_t, int64_t, int64_t, cudaStream_t);
template void embedding_backward(float*, const float*, const int32_t*, int64_t, int64_t, int64_t, cudaStream_t);
template void embedding_backward(float*, const bf16*, const int32_t*, int64_t, int64_t, int64_t, cudaStream_t);

}  // namespace upcycle::cuda
