// The MoE feed-forward block on the GPU (trainer/ops/moe.hpp): slots sorted by expert on the
// device (stable, so the same routing gives the same order), gathered, each expert's group run
// through cuBLAS GEMMs (one per expert and projection, sizes from the offsets copied back once
// per call), SwiGLU, and combined per token in slot order.
#pragma once
#include <cstdint>
#include <vector>

#include "cuda/runtime.hpp"
#include "trainer/ops/moe.hpp"

namespace upcycle::cuda {

// As ops::group_by_expert, on device arrays: order[N·k], row_of[N·k], offsets[E+1] (int64).
void group_by_expert(int32_t* order, int32_t* row_of, int64_t* offsets, const int32_t* idx, int64_t N, int64_t k,
                     int64_t E, cudaStream_t stream = nullptr);

// What forward keeps for backward, rows in permuted (expert) order, as ops::MoeSaved;
// host_offsets is the offsets' host copy that sizes the GEMMs.
template <class T>
struct MoeSaved {
  DeviceBuffer<int32_t> order, row_of;  // [N·k]
  DeviceBuffer<int64_t> offsets;        // [E+1]
  std::vector<int64_t> host_offsets;    // [E+1]
  DeviceBuffer<T> x;                    // [N·k, H]
  DeviceBuffer<T> gate, up, act;        // [N·k, I]
  DeviceBuffer<T> y;                    // [N·k, H]
};

// ops::ExpertWeights / ExpertGrads with T = the storage type: host arrays of E device pointers.
// Gradients are fp32 (added into); a null array: frozen.
template <class T>
using ExpertWeights = ops::ExpertWeights<T>;
struct ExpertGrads {
  float* const* gate = nullptr;
  float* const* up = nullptr;
  float* const* down = nullptr;
};

// As ops::moe_forward / moe_backward; idx [N,k] must be in [0, E) (the router's output);
// w and d_w are fp32 [N,k]; d_x and d_w are added into and may be null.
template <class T>
void moe_forward(T* out, MoeSaved<T>& saved, const T* x, const int32_t* idx, const float* w,
                 const ExpertWeights<T>& experts, const ops::MoeShape& shape, cudaStream_t stream = nullptr);
template <class T>
void moe_backward(T* d_x, float* d_w, const ExpertGrads& d_experts, const T* d_out, const float* w,
                  const ExpertWeights<T>& experts, const MoeSaved<T>& saved, const ops::MoeShape& shape,
                  cudaStream_t stream = nullptr);

}  // namespace upcycle::cuda
