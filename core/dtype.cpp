#include "core/dtype.hpp"

#include <bit>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

#include "core/error.hpp"
#include "core/simd.hpp"

namespace upcycle {

namespace {
constexpr DTypeInfo kInfo[] = {
    {"f32", "F32", 1, 4},   {"f16", "F16", 1, 2},  {"bf16", "BF16", 1, 2},
    {"f64", "F64", 1, 8},   {"q8_0", "", 32, 34},  {"q4_0", "", 32, 18},
    {"q4_1", "", 32, 20},   {"q4_k", "", 256, 144}, {"q6_k", "", 256, 210},
};
constexpr DType kAll[] = {DType::F32,  DType::F16,  DType::BF16, DType::F64, DType::Q8_0,
                          DType::Q4_0, DType::Q4_1, DType::Q4_K, DType::Q6_K};
}  // namespace

const DTypeInfo& dtype_info(DType t) { return kInfo[static_cast<size_t>(t)]; }

std::optional<DType> dtype_from_name(std::string_view name) {
  for (DType t : kAll)
    if (dtype_info(t).name == name) return t;
  return std::nullopt;
}

std::optional<DType> dtype_from_safetensors(std::string_view name) {
  for (DType t : kAll)
    if (!dtype_info(t).safetensors.empty() && dtype_info(t).safetensors == name) return t;
  return std::nullopt;
}

std::optional<uint64_t> dtype_bytes(DType t, uint64_t elements) {
  const DTypeInfo& info = dtype_info(t);
  if (elements % info.block_elems != 0) return std::nullopt;
  uint64_t blocks = elements / info.block_elems, bytes = 0;
  if (__builtin_mul_overflow(blocks, uint64_t{info.block_bytes}, &bytes)) return std::nullopt;
  return bytes;
}

float f16_to_f32(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
  uint32_t bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);  // inf or NaN
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  } else if (mant == 0) {
    bits = sign;
  } else {  // subnormal: normalise
    int shift = std::countl_zero(uint16_t(mant)) - 5;  // leading zeros within 10 bits
    mant = (mant << shift) & 0x3ff;
    bits = sign | (uint32_t(113 - shift) << 23) | (mant << 13);
  }
  return std::bit_cast<float>(bits);
}

uint16_t f32_to_f16(float f) {
  uint32_t x = std::bit_cast<uint32_t>(f);
  uint16_t sign = uint16_t((x >> 16) & 0x8000);
  uint32_t ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) return sign | (ax > 0x7f800000u ? 0x7e00 : 0x7c00);  // NaN / inf
  if (ax >= 0x477ff000u) return sign | 0x7c00;                                // rounds to inf
  if (ax < 0x38800000u) {  // below the smallest normal half: subnormal or zero
    float v = std::bit_cast<float>(ax) * 16777216.0f;  // scale by 2^24: the ulp becomes 1
    return sign | uint16_t(std::nearbyint(v));         // default rounding: nearest even
  }
  uint32_t mant_odd = (ax >> 13) & 1;
  ax += 0xfff + mant_odd;  // round to nearest even on the 13 dropped bits
  return sign | uint16_t(((ax >> 13) - (112u << 10)) & 0x7fff);
}

float bf16_to_f32(uint16_t b) { return std::bit_cast<float>(uint32_t(b) << 16); }

uint16_t f32_to_bf16(float f) {
  uint32_t x = std::bit_cast<uint32_t>(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return uint16_t((x >> 16) | 0x40);  // quiet NaN
  x += 0x7fff + ((x >> 16) & 1);
  return uint16_t(x >> 16);
}

namespace {

// The bf16 loops every conversion and write of a model runs, built for each vector width (the
// same bits: integer operations). Branch-free, so that they vectorise.
UPCYCLE_SIMD_CLONES
void f32_to_bf16_n(const float* s, uint16_t* d, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    const uint32_t x = std::bit_cast<uint32_t>(s[i]);
    const uint32_t rounded = (x + 0x7fffu + ((x >> 16) & 1u)) >> 16, quiet_nan = (x >> 16) | 0x40u;
    d[i] = uint16_t((x & 0x7fffffffu) > 0x7f800000u ? quiet_nan : rounded);
  }
}

UPCYCLE_SIMD_CLONES
void bf16_to_f32_n(const uint16_t* s, float* d, size_t n) {
  for (size_t i = 0; i < n; ++i) d[i] = std::bit_cast<float>(uint32_t(s[i]) << 16);
}

// Reads element i of a plain float array as double (exact for every source type).
double load(DType t, const void* p, size_t i) {
  switch (t) {
    case DType::F32: return static_cast<const float*>(p)[i];
    case DType::F64: return static_cast<const double*>(p)[i];
    case DType::F16: return f16_to_f32(static_cast<const uint16_t*>(p)[i]);
    case DType::BF16: return bf16_to_f32(static_cast<const uint16_t*>(p)[i]);
    default: throw std::logic_error("convert: not a plain float type");
  }
}
void store(DType t, void* p, size_t i, double v) {
  switch (t) {
    case DType::F32: static_cast<float*>(p)[i] = float(v); return;
    case DType::F64: static_cast<double*>(p)[i] = v; return;
    case DType::F16: static_cast<uint16_t*>(p)[i] = f32_to_f16(float(v)); return;
    case DType::BF16: static_cast<uint16_t*>(p)[i] = f32_to_bf16(float(v)); return;
    default: throw std::logic_error("convert: not a plain float type");
  }
}
}  // namespace

void convert(DType from, const void* src, DType to, void* dst, size_t n) {
  if (is_quantized(from) || is_quantized(to))
    throw std::logic_error("convert: quantized types go through dequantize()");
  if (from == to) {
    std::memcpy(dst, src, n * dtype_info(from).block_bytes);
    return;
  }
  // The common cases get tight loops; the rest go through double, which is exact.
  if (from == DType::F32 && to == DType::BF16) {
    f32_to_bf16_n(static_cast<const float*>(src), static_cast<uint16_t*>(dst), n);
  } else if (from == DType::BF16 && to == DType::F32) {
    bf16_to_f32_n(static_cast<const uint16_t*>(src), static_cast<float*>(dst), n);
  } else if (from == DType::F32 && to == DType::F16) {
    auto s = static_cast<const float*>(src);
    auto d = static_cast<uint16_t*>(dst);
    for (size_t i = 0; i < n; ++i) d[i] = f32_to_f16(s[i]);
  } else if (from == DType::F16 && to == DType::F32) {
    auto s = static_cast<const uint16_t*>(src);
    auto d = static_cast<float*>(dst);
    for (size_t i = 0; i < n; ++i) d[i] = f16_to_f32(s[i]);
  } else {
    // Rare pairs (f64 involved) go through double; f64 to 16 bits rounds twice (via f32).
    for (size_t i = 0; i < n; ++i) store(to, dst, i, load(from, src, i));
  }
}

DType parse_storage_dtype(const std::string& name) {
  const auto t = dtype_from_name(name);
  if (!t || (*t != DType::F32 && *t != DType::BF16 && *t != DType::F16))
    throw UsageError("'" + name + "' is not one of f32, bf16, f16");
  return *t;
}

}  // namespace upcycle
