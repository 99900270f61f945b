// Matrix products in bf16 with f32 accumulation: on oneDNN where the CPU has AMX tiles or
// AVX512-BF16 dot products (oneDNN picks at run time); elsewhere the bf16 values widened to f32
// and multiplied by sgemm (products of bf16 values are exact in f32: the same arithmetic, where
// oneDNN's own emulation ran at a quarter of sgemm's speed). The compute of the bf16 path ("CPU
// speed and memory"): weights and activations as bf16, sums in f32.
#pragma once
#include <cstdint>
#include <string>

namespace upcycle::ops {

// out[N,O] = in[N,I] · W[O,I]ᵀ: in and W as bf16 bits (row major, W as nn.Linear stores it),
// out in f32. The same bits on every call for a fixed CPU and thread count (oneDNN's kernels are
// deterministic for a fixed ISA and threads); other CPUs may round the sums differently. Call
// outside OpenMP parallel regions.
void bf16_matmul_forward(float* out, const uint16_t* in, const uint16_t* W, int64_t N, int64_t I, int64_t O);
// d_in[N,I] += d_out[N,O] · W[O,I]: the same product's backward to its inputs, W read in place.
void bf16_matmul_backward_input(float* d_in, const uint16_t* d_out, const uint16_t* W, int64_t N, int64_t I,
                                int64_t O);
// d_W[O,I] += d_out[N,O]ᵀ · in[N,I]: the product's backward to a trained weight (f32 sums into
// the f32 gradient).
void bf16_matmul_backward_weight(float* d_W, const uint16_t* d_out, const uint16_t* in, int64_t N, int64_t I,
                                 int64_t O);

// The same on a panel of W's rows [r0, r0 + P) (Wp [P,I], bf16): out's columns r0.. of rows
// `out_stride` apart (the forward), or d_in += d_out's columns r0.. (rows `in_stride` apart) · Wp.
void bf16_matmul_forward_panel(float* out, int64_t out_stride, const uint16_t* in, const uint16_t* Wp, int64_t N,
                               int64_t I, int64_t P);
void bf16_matmul_backward_input_panel(float* d_in, const uint16_t* d_out, int64_t in_stride, const uint16_t* Wp,
                                      int64_t N, int64_t I, int64_t P);

// What runs these here: oneDNN's "avx512_core_amx" or "avx512_core_bf16", or "sgemm (...)".
std::string bf16_matmul_isa();

}  // namespace upcycle::ops
