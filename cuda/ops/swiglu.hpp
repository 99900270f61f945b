// SwiGLU on the GPU (trainer/ops/swiglu.hpp).
#pragma once
#include <cstdint>

#include "cuda/runtime.hpp"

namespace upcycle::cuda {

// forward:  out = silu(gate) ⊙ up                    (count elements each)
// backward: d_gate += d_out ⊙ up ⊙ σ(gate)·(1 + gate·(1 − σ(gate))),  d_up += d_out ⊙ silu(gate)
template <class T>
void swiglu_forward(T* out, const T* gate, const T* up, int64_t count, cudaStream_t stream = nullptr);
template <class T>
void swiglu_backward(T* d_gate, T* d_up, const T* d_out, const T* gate, const T* up, int64_t count,
                     cudaStream_t stream = nullptr);

}  // namespace upcycle::cuda
