// LoRA's low-rank term on the GPU (trainer/ops/lora.hpp): out[N,O] += scale·(x·Aᵀ)·Bᵀ with
// x = dropout(in), applied unmerged beside the base product.
// Types: in, out, d_out and d_in are T (float or bf16), as the backend's activations are; A [r,I],
// B [O,r] and their gradients d_A, d_B are fp32, since the factors are trained masters (the
// optimizer steps them in fp32). The products whose sum runs over I, O or N go through cuBLAS on
// T operands with fp32 sums: for bf16 the factors are rounded to bf16 copies at each call (r·(I+O)
// values, small beside the N·I activations), and the [N,r] factor that meets a bf16 activation is
// rounded too. The products over r (the ones that write out and d_in) run in fp32 on the fp32
// factors and round once into T, with the dropout's mask applied in the same pass.
#pragma once
#include <cstdint>

#include "cuda/runtime.hpp"
#include "trainer/ops/lora.hpp"

namespace upcycle::cuda {

// As ops::lora_dropout: out[i] = in[i]·mask[i]/(1 − p), in place allowed; the mask is the CPU's bit
// for bit (the splitmix64 draw of (seed, i), core/random.hpp), so the two drop the same elements.
template <class T>
void lora_dropout(T* out, const T* in, int64_t n, const ops::LoraDropout& drop, cudaStream_t stream = nullptr);

// As ops::lora_forward / lora_backward, with the same shapes:
// forward:  out[N,O]  += scale · (x·Aᵀ)·Bᵀ
// backward: d_in[N,I] += dropout(d_down·A),  d_A[r,I] += d_downᵀ·x,  d_B[O,r] += scale · d_outᵀ·(x·Aᵀ)
//           with d_down = scale · d_out·B [N,r]
// d_in, d_A and d_B may be null (not wanted). N = 0 does nothing; a dropout that keeps nothing
// (p >= 1) adds nothing. std::invalid_argument for sizes cuBLAS cannot take.
template <class T>
void lora_forward(T* out, const T* in, const float* A, const float* B, float scale, int64_t N, int64_t I, int64_t O,
                  int64_t r, const ops::LoraDropout& drop = {}, cudaStream_t stream = nullptr);
template <class T>
void lora_backward(T* d_in, float* d_A, float* d_B, const T* d_out, const T* in, const float* A, const float* B,
                   float scale, int64_t N, int64_t I, int64_t O, int64_t r, const ops::LoraDropout& drop = {},
                   cudaStream_t stream = nullptr);

}  // namespace upcycle::cuda
