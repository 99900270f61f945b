// LoRA's low-rank term on a linear layer W [O,I] (Hu et al., 2021): the layer computes
// W + scale·B·A with A [r,I] and B [O,r], applied unmerged, so that the base product keeps W as
// stored and the term costs (I + O)·r per row.
#pragma once
#include <cstdint>

namespace upcycle::ops {

// PEFT's lora_dropout on the term's input (training only): each element kept with probability
// 1 − p and scaled by 1/(1 − p), or dropped. The mask is a function of (seed, element index)
// alone, so the backward draws the same one again, and every thread count gives the same bits.
struct LoraDropout {
  float p = 0;
  uint64_t seed = 0;  // 0: none
  bool active() const { return p > 0 && seed != 0; }
};

// out[n] = in[n] · mask[n] / (1 − p); in place is allowed.
void lora_dropout(float* out, const float* in, int64_t n, const LoraDropout& drop);

// With x = dropout(in[N,I]) (x = in without dropout):
// forward:  out[N,O]  += scale · (x·Aᵀ)·Bᵀ
// backward: with down = x·Aᵀ [N,r] and d_down = scale · d_out[N,O]·B [N,r],
//           d_in[N,I] += dropout(d_down·A)      (the same mask and scale)
//           d_A[r,I]  += d_downᵀ·x
//           d_B[O,r]  += scale · d_outᵀ·down
// Any of d_in, d_A, d_B may be null (not wanted; `in` is read only for d_A and d_B). In f32 on
// ops::f32_product; call outside OpenMP parallel regions.
void lora_forward(float* out, const float* in, const float* A, const float* B, float scale, int64_t N, int64_t I,
                  int64_t O, int64_t r, const LoraDropout& drop = {});
void lora_backward(float* d_in, float* d_A, float* d_B, const float* d_out, const float* in, const float* A,
                   const float* B, float scale, int64_t N, int64_t I, int64_t O, int64_t r,
                   const LoraDropout& drop = {});

}  // namespace upcycle::ops
