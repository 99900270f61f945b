// Element types: the float types we compute and store in, and GGUF's block-quantized types,
// which are only ever read (and dequantized to f32).
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace upcycle {

enum class DType : uint8_t { F32, F16, BF16, F64, Q8_0, Q4_0, Q4_1, Q4_K, Q6_K };

struct DTypeInfo {
  std::string_view name;         // ours and the CLI's: "f32", "bf16", "q4_k", ...
  std::string_view safetensors;  // "F32", "BF16", ...; empty when safetensors has no such type
  uint32_t block_elems;          // elements per block (1 for plain types)
  uint32_t block_bytes;          // bytes per block
};

const DTypeInfo& dtype_info(DType t);
inline std::string_view dtype_name(DType t) { return dtype_info(t).name; }
inline bool is_quantized(DType t) { return dtype_info(t).block_elems > 1; }

std::optional<DType> dtype_from_name(std::string_view name);         // "f32", "bf16", "f16", ...
// A storage dtype for outputs: f32, bf16 or f16; UsageError otherwise.
DType parse_storage_dtype(const std::string& name);
std::optional<DType> dtype_from_safetensors(std::string_view name);  // "F32", "BF16", ...

// Bytes taken by `elements` elements of type t, or nullopt when the count is not a whole number
// of blocks or the product overflows. Every reader sizes its checks with this.
std::optional<uint64_t> dtype_bytes(DType t, uint64_t elements);

// Scalar conversions: round to nearest even, NaN kept NaN, overflow to infinity.
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);
float bf16_to_f32(uint16_t b);
uint16_t f32_to_bf16(float f);

// Converts n elements between the plain float types (f32, f16, bf16, f64). Quantized sources
// go through dequantize() in core/quant.hpp instead.
void convert(DType from, const void* src, DType to, void* dst, size_t n);

}  // namespace upcycle
