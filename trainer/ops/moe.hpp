// The MoE feed-forward block on the CPU: each token's k chosen experts (idx, w from the router)
// run on it and their outputs are summed with the routing weights. Tokens are permuted so that
// each expert's tokens sit together, and each expert runs as dense matmuls on its group.
#pragma once
#include <cstdint>
#include <vector>

#include "trainer/ops/stored_matmul.hpp"

namespace upcycle::ops {

struct MoeShape {
  int64_t tokens = 0;   // N
  int64_t hidden = 0;   // H
  int64_t inter = 0;    // I, each expert's FFN width
  int64_t experts = 0;  // E
  int64_t top_k = 0;    // k
};

// Expert e's SwiGLU FFN, one matrix M per expert: gate[e] [I,H], up[e] [I,H], down[e] [H,I]
// (Mixtral's w1, w3, w2). M is a pointer to T values, or a StoredMatrix (weights in their stored
// dtype, frozen: the inference model's).
template <class M>
struct ExpertsOf {
  const M* gate;
  const M* up;
  const M* down;
};
template <class T>
using ExpertWeights = ExpertsOf<const T*>;
using StoredExperts = ExpertsOf<StoredMatrix>;
// Their gradients, added into; a null array: that weight is frozen.
template <class T>
struct ExpertGrads {
  T* const* gate = nullptr;
  T* const* up = nullptr;
  T* const* down = nullptr;
};

// The token-slot permutation. Slot s = n·k + j is token n's j-th choice, expert idx[s]. Sorting
// the N·k slots by expert (stably, so token order within an expert) gives
//   order[N·k]     slot of each permuted row; expert e's rows are [offsets[e], offsets[e+1])
//   row_of[N·k]    the inverse: permuted row of each slot
//   offsets[E+1]
void group_by_expert(int32_t* order, int32_t* row_of, int64_t* offsets, const int32_t* idx, int64_t N, int64_t k,
                     int64_t E);

// What forward keeps for backward, rows in permuted (expert) order.
template <class T>
struct MoeSaved {
  std::vector<int32_t> order, row_of;  // [N·k]
  std::vector<int64_t> offsets;        // [E+1]
  std::vector<T> x;                    // [N·k, H]  the gathered inputs (empty for stored experts)
  std::vector<T> gate, up, act;        // [N·k, I]  x·gateᵀ, x·upᵀ, silu(gate) ⊙ up (act: the same)
  std::vector<T> y;                    // [N·k, H]  act·downᵀ, each expert's output
};

// forward:  x [N,H], idx [N,k], w [N,k]
//           out[n,:] = Σ_j w[n,j] · FFN_{idx[n,j]}(x[n,:]),  FFN_e(x) = (silu(x·gate_eᵀ) ⊙ x·up_eᵀ)·down_eᵀ
// backward: d_w[n,j] += d_out[n,:]·FFN_{idx[n,j]}(x[n,:])        (feeds router_backward)
//           then each expert's FFN backward on d_y[row] = w[slot]·d_out[token], and
//           d_x[n,:] += Σ_j (the d_x of slot n·k+j);  expert gradients added into d_experts.
// d_x or d_w may be null (not wanted). Stored experts train only when `trained` (their values f32
// masters, their products as stored_matmul's, bf16 ones included): only then does the forward
// keep the inputs and activations that their gradients need; frozen ones take no d_experts
// (std::invalid_argument from stored_matmul_backward_weight for a weight not in f32).
template <class T>
void moe_forward(T* out, MoeSaved<T>& saved, const T* x, const int32_t* idx, const T* w,
                 const ExpertWeights<T>& experts, const MoeShape& shape);
void moe_forward(float* out, MoeSaved<float>& saved, const float* x, const int32_t* idx, const float* w,
                 const StoredExperts& experts, const MoeShape& shape, bool trained = false);
template <class T>
void moe_backward(T* d_x, T* d_w, const ExpertGrads<T>& d_experts, const T* d_out, const T* w,
                  const ExpertWeights<T>& experts, const MoeSaved<T>& saved, const MoeShape& shape);
void moe_backward(float* d_x, float* d_w, const ExpertGrads<float>& d_experts, const float* d_out, const float* w,
                  const StoredExperts& experts, const MoeSaved<float>& saved, const MoeShape& shape);

}  // namespace upcycle::ops
