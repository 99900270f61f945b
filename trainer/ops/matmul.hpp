// Linear layer as PyTorch's nn.Linear: the weight is stored [out_features, in_features].
#pragma once
#include <cstdint>

namespace upcycle::ops {

// forward:  out[N,O] = in[N,I] · W[O,I]ᵀ + bias[O]         bias may be null
// backward: d_in[N,I] += d_out[N,O] · W[O,I]
//           d_W[O,I]  += d_out[N,O]ᵀ · in[N,I]
//           d_bias[O] += Σ_n d_out[n,:]
// Any of d_in, d_W, d_bias may be null: that gradient is not wanted (a frozen weight, an input
// that is data). The products run on OpenBLAS, except the float forward of at most kDotRows
// inputs (decoding), which runs stored_matmul's dot path: both threads stream W once (OpenBLAS
// runs such a product on one thread) and the bits are the same for any thread count. Call these
// outside OpenMP parallel regions.
template <class T>
void matmul_forward(T* out, const T* in, const T* W, const T* bias, int64_t N, int64_t I, int64_t O);
template <class T>
void matmul_backward(T* d_in, T* d_W, T* d_bias, const T* d_out, const T* in, const T* W, int64_t N, int64_t I,
                     int64_t O);

}  // namespace upcycle::ops
