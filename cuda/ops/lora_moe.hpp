// The LoRA-MoE feed-forward block on the GPU (trainer/ops/lora_moe.hpp, MixLoRA's): one shared
// base FFN, frozen, plus each expert's low-rank terms on gate, up and down. As on the CPU, the
// base's gate and up products run once per token and its down product once on the
// routing-weighted sum of the experts' activations; slots are grouped by expert on the device as
// cuda::moe_forward groups them (cuda/ops/moe.hpp), and each expert's terms run through
// cuda::lora_forward / lora_backward (cuda/ops/lora.hpp) on its rows.
#pragma once
#include <cstdint>
#include <vector>

#include "cuda/runtime.hpp"
#include "trainer/ops/lora_moe.hpp"
#include "trainer/ops/moe.hpp"

namespace upcycle::cuda {

// ops::LowRankTerm with device pointers: a [r,I], b [O,r] and their gradients d_a, d_b (added
// into; null: not wanted) all fp32, as cuda::lora_forward takes them. A null `a`: no term there.
using LowRankTerm = ops::LowRankTerm;

// The shared base in T on the device, gate [I,H], up [I,H], down [H,I], and host arrays of each
// expert's terms on them ([E] each).
template <class T>
struct LoraExperts {
  const T* gate = nullptr;
  const T* up = nullptr;
  const T* down = nullptr;
  const LowRankTerm* gate_terms = nullptr;
  const LowRankTerm* up_terms = nullptr;
  const LowRankTerm* down_terms = nullptr;
};

// What forward keeps for backward, as ops::LoraMoeSaved, rows in permuted (expert) order;
// host_offsets is the offsets' host copy that sizes each expert's products.
template <class T>
struct LoraMoeSaved {
  DeviceBuffer<int32_t> order, row_of;  // [N·k]
  DeviceBuffer<int64_t> offsets;        // [E+1]
  std::vector<int64_t> host_offsets;    // [E+1]
  DeviceBuffer<T> x;                    // [N·k, H]  each row's input (what the A terms multiply)
  DeviceBuffer<T> gate, up;             // [N·k, I]  each expert's gate and up products
  DeviceBuffer<T> y;                    // [N·k, H]  each expert's down term on its activation
};

// As ops::lora_moe_forward / lora_moe_backward: x, out, d_out, d_x [N,H] in T; idx [N,k] in
// [0, E) (the router's output); w and d_w fp32 [N,k]. d_x and d_w are added into and may be null;
// the terms' d_a and d_b are added into; the base takes no gradient. Activations are recomputed
// from the kept gate and up. N = 0 does nothing.
template <class T>
void lora_moe_forward(T* out, LoraMoeSaved<T>& saved, const T* x, const int32_t* idx, const float* w,
                      const LoraExperts<T>& experts, const ops::MoeShape& shape, cudaStream_t stream = nullptr);
template <class T>
void lora_moe_backward(T* d_x, float* d_w, const T* d_out, const float* w, const LoraExperts<T>& experts,
                       const LoraMoeSaved<T>& saved, const ops::MoeShape& shape, cudaStream_t stream = nullptr);

}  // namespace upcycle::cuda
