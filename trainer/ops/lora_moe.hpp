// The MoE feed-forward block of a LoRA-MoE (MixLoRA's): every expert is one shared base FFN,
// frozen in its stored dtype, plus the expert's own LoRA terms on gate, up and down, so expert e
// computes with W + scale·B_e·A_e. The base products run once per token, as in the dense model:
// gate and up on every token, and down once on the routing-weighted sum of the experts'
// activations (it is linear); each chosen expert adds only its low-rank terms on its tokens.
#pragma once
#include <cstdint>
#include <vector>

#include "trainer/ops/lora.hpp"
#include "trainer/ops/moe.hpp"
#include "trainer/ops/stored_matmul.hpp"

namespace upcycle::ops {

// One expert's LoRA term on one matrix [O,I]: A [r,I], B [O,r] (f32), their gradients added into
// by the backward (null: not wanted). A null `a`: the expert has no term there (the base alone).
struct LowRankTerm {
  const float* a = nullptr;
  const float* b = nullptr;
  float scale = 0;
  int64_t rank = 0;
  float* d_a = nullptr;
  float* d_b = nullptr;
  LoraDropout dropout;
};

// The shared base, gate [I,H], up [I,H], down [H,I], and each expert's terms on them ([E] each).
struct LoraExperts {
  StoredMatrix gate, up, down;
  const LowRankTerm* gate_terms;
  const LowRankTerm* up_terms;
  const LowRankTerm* down_terms;
};

// What forward keeps for backward, rows in permuted (expert) order as ops::group_by_expert
// gives them.
struct LoraMoeSaved {
  std::vector<int32_t> order, row_of;  // [N·k]
  std::vector<int64_t> offsets;        // [E+1]
  std::vector<float> x;                // [N·k, H]  each row's input (what the A terms multiply)
  std::vector<float> gate, up;         // [N·k, I]  each expert's gate and up products
  std::vector<float> y;                // [N·k, H]  each expert's down term on its activation
};

// forward:  x [N,H], idx [N,k], w [N,k]; with a_{n,j} = silu(g) ⊙ u the activation of token n's
//           j-th expert e (g = x·gateᵀ + its gate term, u likewise):
//           out[n] = (Σ_j w[n,j]·a_{n,j})·downᵀ + Σ_j w[n,j]·down term_e(a_{n,j})
//           which is Σ_j w[n,j]·FFN_e(x[n]) with FFN_e's matrices W + scale·B_e·A_e.
// backward: d_w[n,j] += d_out[n]·FFN_e(x[n])  (feeds router_backward), d_x [N,H] added into,
//           the terms' d_a and d_b added into. d_x or d_w may be null. Activations are
//           recomputed from the kept gate and up. The base takes no gradient.
// Call outside OpenMP parallel regions.
void lora_moe_forward(float* out, LoraMoeSaved& saved, const float* x, const int32_t* idx, const float* w,
                      const LoraExperts& experts, const MoeShape& shape);
void lora_moe_backward(float* d_x, float* d_w, const float* d_out, const float* w, const LoraExperts& experts,
                       const LoraMoeSaved& saved, const MoeShape& shape);

}  // namespace upcycle::ops
