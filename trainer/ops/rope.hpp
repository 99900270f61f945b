// Rotary position embeddings in Hugging Face's rotate-half layout: within each head, dimension i
// pairs with i + D/2 and the pair turns by the angle pos · inv_freq[i].
#pragma once
#include <cstdint>
#include <vector>

#include "core/config.hpp"

namespace upcycle::ops {

using RopeScaling = upcycle::RopeScaling;  // config.json's rope_scaling (core/config.hpp)
using upcycle::rope_inv_freq;

// cos and sin of every (position, frequency) angle, angle[p,i] = p · inv_freq[i] rounded to fp32
// the way transformers (and the models' own training code) compute it, so long positions turn
// by the same slightly rounded angles the model was trained with.
template <class T>
struct RopeTable {
  RopeTable(int64_t head_dim, int64_t max_positions, double theta, const RopeScaling& scaling = {});
  int64_t head_dim, max_positions;
  std::vector<T> cos, sin;  // [max_positions, head_dim/2]
};

// x is [N, n_heads, D] (q with nH heads or k with nKV heads); token n sits at position pos[n]
// (positions restart in each packed sequence), 0 <= pos[n] < table.max_positions.
// forward:  out[n,h,i]     = x[n,h,i]·cos − x[n,h,i+D/2]·sin          (i < D/2)
//           out[n,h,i+D/2] = x[n,h,i+D/2]·cos + x[n,h,i]·sin          out may be in itself
// backward: the inverse (transposed) rotation,
//           d_in[n,h,i]     += d_out[n,h,i]·cos + d_out[n,h,i+D/2]·sin
//           d_in[n,h,i+D/2] += d_out[n,h,i+D/2]·cos − d_out[n,h,i]·sin  d_in must not be d_out
template <class T>
void rope_forward(T* out, const T* in, const int32_t* pos, const RopeTable<T>& table, int64_t N, int64_t n_heads);
template <class T>
void rope_backward(T* d_in, const T* d_out, const int32_t* pos, const RopeTable<T>& table, int64_t N, int64_t n_heads);

}  // namespace upcycle::ops
