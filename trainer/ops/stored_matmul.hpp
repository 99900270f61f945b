// Linear layers over weights kept in their stored dtype (f32, bf16, f16, or GGUF's Q8_0, Q4_0,
// Q4_1, Q4_K and Q6_K), read in place from a mapped file or a copy and never widened whole: what inference and frozen
// weights need so that a model is not held in f32 (a bf16 model in half the memory, Q8_0 in
// about a quarter) and so that decoding, which streams every weight once per token, reads fewer
// bytes.
#pragma once
#include <cstddef>
#include <cstdint>

#include "core/dtype.hpp"

namespace upcycle::ops {

// A weight W [rows O, cols I], row major as nn.Linear stores it, borrowed. A quantized row is whole
// blocks (Q8_0: I/32 blocks of 34 bytes, an f16 scale d then 32 int8 q, the value d·q).
struct StoredMatrix {
  DType dtype = DType::F32;
  const std::byte* data = nullptr;
  int64_t rows = 0, cols = 0;
  // Under --precision bf16: products of more than kDotRows inputs, and the backward to them, in
  // bf16 on oneDNN (ops::bf16_matmul), the inputs rounded to bf16 and the sums in f32; bf16
  // weights read in place, or bf16_copy where given, others rounded to bf16 a panel of kPanelRows
  // rows at a time.
  bool bf16_products = false;
  // An f32 W's values rounded to bf16 [rows, cols], borrowed: a trained master's copy, which the
  // optimizer keeps in step, so that training does not round the weights again at every product.
  const uint16_t* bf16_copy = nullptr;
};

bool stored_matmul_supports(DType t);  // every dtype but f64
// The bytes of one row of `cols` values; std::invalid_argument for a dtype not supported or a
// quantized row that is not whole blocks.
size_t stored_row_bytes(DType t, int64_t cols);

// out[N,O] = in[N,I] · Wᵀ + bias[O] (bias may be null), in f32.
// N <= kDotRows (decoding): each row of W is read once and dotted in its stored type with each
//   input (the 4- and 6-bit types a block widened at a time), 16 lanes wide and the lanes added pairwise at the end: the same bits on every CPU and
//   for any thread count. ops::matmul_forward<float> takes this path too, so f32 weights give the
//   f32 model's bits on both paths.
// Larger N: f32 weights go to ops::matmul_forward as they are; others in panels of kPanelRows rows
//   widened to f32 and multiplied by the f32 matmul (ops::f32_product), whose bits depend on the CPU and
//   threads as ops::matmul_forward's do; or, with bf16_products, bf16 products on oneDNN
//   (deterministic for a fixed CPU and thread count).
// Call outside OpenMP parallel regions; std::invalid_argument for a shape W cannot have.
inline constexpr int64_t kDotRows = 4, kPanelRows = 256;
void stored_matmul_forward(float* out, const float* in, const StoredMatrix& W, const float* bias, int64_t N);

// d_in[N,I] += d_out[N,O] · W: the backward to the input, f32 as ops::matmul_backward, others a panel of rows at a time;
// bf16 weights with bf16_products and more than kDotRows rows: d_out rounded to bf16, one bf16
// product on oneDNN.
void stored_matmul_backward_input(float* d_in, const float* d_out, const StoredMatrix& W, int64_t N);

// d_W[O,I] += d_out[N,O]ᵀ · in[N,I] and d_bias[O] += Σ_n d_out[n,:] (either may be null): the
// gradients of a trained weight, whose values are f32 (a master; std::invalid_argument for
// another dtype). As ops::matmul_backward, or with bf16_products, d_out and in rounded to bf16
// and multiplied on oneDNN with f32 sums (the bias's sums stay f32).
void stored_matmul_backward_weight(float* d_W, float* d_bias, const float* d_out, const float* in,
                                   const StoredMatrix& W, int64_t N);

// out[N,I] = W[ids[n], :] widened to f32: an embedding lookup on a stored table.
// std::invalid_argument for an id outside [0, rows).
void stored_gather_rows(float* out, const StoredMatrix& W, const int32_t* ids, int64_t N);

namespace detail {
// One row's dot product with x over n values, as the dot path computes it: with AVX-512 where the
// CPU has it (f16, Q8_0, Q4_0, Q4_1), or the portable loops (`portable`), which give the same bits.
float row_dot(DType t, const std::byte* row, const float* x, int64_t n, bool portable = false);
}  // namespace detail

}  // namespace upcycle::ops
