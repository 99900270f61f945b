// GGUF's block-quantized types, dequantized to f32 (the block layouts of ggml-common.h).
#pragma once
#include <cstddef>
#include <cstdint>

#include "core/dtype.hpp"

namespace upcycle {

// Dequantizes `elements` values stored in `nbytes` bytes of type t (a quantized type, or any
// plain float type) into dst. The caller has checked nbytes == dtype_bytes(t, elements).
void dequantize(DType t, const std::byte* src, uint64_t nbytes, float* dst, uint64_t elements);

}  // namespace upcycle
