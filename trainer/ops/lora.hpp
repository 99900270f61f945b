// LoRA's low-rank term on a linear layer W [O,I] (Hu et al., 2021): the layer computes
// W + scale·B·A with A [r,I] and B [O,r], applied unmerged, so that the base product keeps W as
// stored and the term costs (I + O)·r per row.
#pragma once
#include <cstdint>

namespace upcycle::ops {

// forward:  out[N,O]  += scale · (in[N,I]·Aᵀ)·Bᵀ
// backward: with down = in·Aᵀ [N,r] and d_down = scale · d_out[N,O]·B [N,r],
//           d_in[N,I] += d_down·A
//           d_A[r,I]  += d_downᵀ·in
//           d_B[O,r]  += scale · d_outᵀ·down
// Any of d_in, d_A, d_B may be null (not wanted; `in` is read only for d_A and d_B). In f32 on
// OpenBLAS; call outside OpenMP parallel regions.
void lora_forward(float* out, const float* in, const float* A, const float* B, float scale, int64_t N, int64_t I,
                  int64_t O, int64_t r);
void lora_backward(float* d_in, float* d_A, float* d_B, const float* d_out, const float* in, const float* A,
                   const float* B, float scale, int64_t N, int64_t I, int64_t O, int64_t r);

}  // namespace upcycle::ops
