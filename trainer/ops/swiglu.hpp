// SwiGLU, the gated activation of the Llama FFN: silu(gate) ⊙ up.
#pragma once
#include <cstdint>

namespace upcycle::ops {

// All arrays hold `count` elements (N·I for [N,I] activations); σ is the logistic sigmoid.
// forward:  out = silu(gate) ⊙ up,  silu(x) = x·σ(x)
// backward: d_gate += d_out ⊙ up ⊙ σ(gate)·(1 + gate·(1 − σ(gate)))
//           d_up   += d_out ⊙ silu(gate)
template <class T>
void swiglu_forward(T* out, const T* gate, const T* up, int64_t count);
template <class T>
void swiglu_backward(T* d_gate, T* d_up, const T* d_out, const T* gate, const T* up, int64_t count);

}  // namespace upcycle::ops
