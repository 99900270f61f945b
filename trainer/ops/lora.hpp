// LoRA's low-rank term on a linear layer W [O,I] (Hu et al., 2021): the layer computes
// W + scale·B·A with A [r,I] and B [O,r], applied unmerged, so that the base product keeps W as
// stored and the term costs (I + O)·r per row.
#pragma once
#include <cstdint>

namespace upcycle::ops {

// forward:  out[N,O]  += scale · (in[N,I]·Aᵀ)·Bᵀ
// backward: d_in[N,I] += scale · (d_out[N,O]·B)·A
// In f32 on OpenBLAS; call outside OpenMP parallel regions.
void lora_forward(float* out, const float* in, const float* A, const float* B, float scale, int64_t N, int64_t I,
                  int64_t O, int64_t r);
void lora_backward_input(float* d_in, const float* d_out, const float* A, const float* B, float scale, int64_t N,
                         int64_t I, int64_t O, int64_t r);

}  // namespace upcycle::ops
