// What both MoE blocks on the GPU (cuda/ops/moe.cu, cuda/ops/lora_moe.cu) do with their slots'
// rows: slots sorted by expert (group_by_expert), token rows gathered into that order, rows
// weighted, and each token's rows summed back in slot order. A block per row or token, each the
// only writer of its row, so the same bits every run.
#pragma once
#include <cstdint>
#include <vector>

#include "cuda/ops/convert.cuh"
#include "cuda/ops/moe.hpp"

namespace upcycle::cuda {

inline constexpr int kRowThreads = 256;

// rows[r,:] = src[order[r] / k,:]: each permuted row is its slot's token's row.
//   rows [N·k, C], src [N, C]
template <class T>
__global__ void gather_rows(T* rows, const T* src, const int32_t* order, int64_t k, int64_t C) {
  const int64_t r = blockIdx.x;
  const T* s = src + order[r] / k * C;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) rows[r * C + c] = s[c];
}

// dst[t,:] = (add ? dst[t,:] : 0) + Σ_j w[t,j]·rows[row_of[t·k+j],:] (w null: weights of 1), j in
// slot order as the CPU's combine sums.   dst [N, C], rows [N·k, C]
template <class T>
__global__ void combine_rows(T* dst, const T* rows, const int32_t* row_of, const float* w, int64_t k, int64_t C,
                             bool add) {
  const int64_t t = blockIdx.x;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    float acc = add ? to_float(dst[t * C + c]) : 0.f;
    for (int64_t j = 0; j < k; ++j) acc += (w ? w[t * k + j] : 1.f) * to_float(rows[row_of[t * k + j] * C + c]);
    dst[t * C + c] = from_float<T>(acc);
  }
}

// rows[r,:] = w[s]·src[s / k,:], s = order[r]: a token's gradient for each of its experts, weighted
// by the routing weight.   rows [N·k, C], src [N, C]
template <class T>
__global__ void weighted_rows(T* rows, const T* src, const float* w, const int32_t* order, int64_t k, int64_t C) {
  const int64_t r = blockIdx.x, s = order[r];
  const float weight = w[s];
  const T* g = src + s / k * C;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) rows[r * C + c] = from_float<T>(weight * to_float(g[c]));
}

// A forward's first steps, into its saved state `s` (order, row_of, offsets [E+1], host_offsets,
// x [N·k, H]): the slots grouped by expert, each slot's token row of x gathered in that order,
// and the offsets copied to the host, the call's one sync: they size the experts' products.
template <class T, class Saved>
void group_rows(Saved& s, const T* x, const int32_t* idx, int64_t N, int64_t k, int64_t E, int64_t H,
                cudaStream_t stream) {
  const int64_t rows = N * k;
  s.order.resize(size_t(rows));
  s.row_of.resize(size_t(rows));
  s.offsets.resize(size_t(E + 1));
  s.x.resize(size_t(rows * H));
  group_by_expert(s.order.data(), s.row_of.data(), s.offsets.data(), idx, N, k, E, stream);
  gather_rows<<<unsigned(rows), kRowThreads, 0, stream>>>(s.x.data(), x, s.order.data(), k, H);
  UPCYCLE_CUDA_LAUNCHED("moe gather");
  s.host_offsets.resize(size_t(E + 1));
  UPCYCLE_CUDA(cudaMemcpyAsync(s.host_offsets.data(), s.offsets.data(), size_t(E + 1) * sizeof(int64_t),
                               cudaMemcpyDeviceToHost, stream));
  UPCYCLE_CUDA(cudaStreamSynchronize(stream));
}

}  // namespace upcycle::cuda
