// Rotary position embeddings on the GPU (trainer/ops/rope.hpp), from the CPU's table of cos and
// sin copied to the device once.
#pragma once
#include <cstdint>

#include "cuda/runtime.hpp"
#include "trainer/ops/rope.hpp"

namespace upcycle::cuda {

struct RopeTable {
  explicit RopeTable(const ops::RopeTable<float>& host);  // uploads cos and sin
  int64_t head_dim, max_positions;
  DeviceBuffer<float> cos, sin;  // [max_positions, head_dim/2]
};

// x [N, n_heads, D], 0 <= pos[n] < max_positions (checked by the caller).
// forward:  the rotate-half rotation, out may be in
// backward: the transposed rotation added into d_in, d_in must not be d_out
template <class T>
void rope_forward(T* out, const T* in, const int32_t* pos, const RopeTable& table, int64_t N, int64_t n_heads,
                  cudaStream_t stream = nullptr);
template <class T>
void rope_backward(T* d_in, const T* d_out, const int32_t* pos, const RopeTable& table, int64_t N, int64_t n_heads,
                   cudaStream_t stream = nullptr);

}  // namespace upcycle::cuda
