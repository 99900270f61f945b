// GGUF's block-quantized types, dequantized to f32 (the block layouts of ggml-common.h), and Q8_0
// quantized from f32 for the GGUF writer.
#pragma once
#include <cstddef>
#include <cstdint>

#include "core/dtype.hpp"

namespace upcycle {

// Dequantizes `elements` values stored in `nbytes` bytes of type t (a quantized type, or any
// plain float type) into dst. The caller has checked nbytes == dtype_bytes(t, elements).
void dequantize(DType t, const std::byte* src, uint64_t nbytes, float* dst, uint64_t elements);

// Q8_0 blocks of `elements` values (a multiple of 32) into dst (34 bytes a block), as ggml's
// reference quantizer and the gguf package make them, bit for bit: d = max|x| / 127 stored as f16,
// q = x · (1/d) rounded half away from zero.
void quantize_q8_0(const float* src, uint64_t elements, std::byte* dst);

}  // namespace upcycle
