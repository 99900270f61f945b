// Token embedding lookup.
#pragma once
#include <cstdint>

namespace upcycle::ops {

// forward:  out[N,H] = table[ids[n], :]            table [V,H], ids [N] in [0, V)
// backward: d_table[ids[n], :] += d_out[n, :]      a repeated id sums its rows
template <class T>
void embedding_forward(T* out, const T* table, const int32_t* ids, int64_t N, int64_t H, int64_t V);
template <class T>
void embedding_backward(T* d_table, const T* d_out, const int32_t* ids, int64_t N, int64_t H, int64_t V);

}  // namespace upcycle::ops
