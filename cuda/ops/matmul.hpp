// nn.Linear on the GPU through cuBLAS (trainer/ops/matmul.hpp): W stored [out, in] row major.
// bf16 inputs run on tensor cores with fp32 accumulation; weight gradients are fp32.
#pragma once
#include <cstdint>

#include "cuda/runtime.hpp"

namespace upcycle::cuda {

// forward:  out[N,O] = in[N,I] · W[O,I]ᵀ + bias[O]    Out is T, or float (the router's logits)
// backward: d_in[N,I] += d_out[N,O] · W[O,I]           (T)
//           d_W[O,I]  += d_out[N,O]ᵀ · in[N,I]          (fp32)
//           d_bias[O] += Σ_n d_out[n,:]                 (fp32)
// bias, d_in, d_W and d_bias may be null. N = 0 does nothing.
template <class T, class Out>
void matmul_forward(Out* out, const T* in, const T* W, const T* bias, int64_t N, int64_t I, int64_t O,
                    cudaStream_t stream = nullptr);
template <class T>
void matmul_backward(T* d_in, float* d_W, float* d_bias, const T* d_out, const T* in, const T* W, int64_t N, int64_t I,
                     int64_t O, cudaStream_t stream = nullptr);

}  // namespace upcycle::cuda
