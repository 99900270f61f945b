// Linear layer as PyTorch's nn.Linear: the weight is stored [out_features, in_features].
#pragma once
#include <cstdint>
#include <string>

#include "trainer/ops/onednn_product.hpp"

namespace upcycle::ops {

// out[N,M] (+)= a[N,K] · B[K,M] in f32, a and b as onednn_product takes them: on oneDNN where
// f32_products_on_onednn, else on OpenBLAS through Eigen.
void f32_product(float* out, int64_t out_stride, const float* a, int64_t a_row_stride, int64_t a_col_stride,
                 const float* b, BLayout b_layout, int64_t N, int64_t K, int64_t M, bool accumulate);

// What runs f32_product here: "oneDNN (avx512_core_bf16)", or "OpenBLAS (Haswell)".
std::string f32_product_impl();

// forward:  out[N,O] = in[N,I] · W[O,I]ᵀ + bias[O]         bias may be null
// backward: d_in[N,I] += d_out[N,O] · W[O,I]
//           d_W[O,I]  += d_out[N,O]ᵀ · in[N,I]
//           d_bias[O] += Σ_n d_out[n,:]
// Any of d_in, d_W, d_bias may be null: that gradient is not wanted (a frozen weight, an input
// that is data). float products run on oneDNN where it has AVX-512 kernels here
// (ops::f32_products_on_onednn), on OpenBLAS elsewhere and for double; the bits depend on the CPU
// and the thread count. The float forward of at most kDotRows inputs (decoding) runs
// stored_matmul's dot path instead: both threads stream W once and the bits are the same for any
// thread count. Call these outside OpenMP parallel regions.
template <class T>
void matmul_forward(T* out, const T* in, const T* W, const T* bias, int64_t N, int64_t I, int64_t O);
template <class T>
void matmul_backward(T* d_in, T* d_W, T* d_bias, const T* d_out, const T* in, const T* W, int64_t N, int64_t I,
                     int64_t O);

}  // namespace upcycle::ops
