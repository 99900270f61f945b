// Dequantization of GGUF's block types. Each block holds a fixed number of values and one or two
// f16 scales; the layouts follow llama.cpp's ggml-common.h. Within a block the arithmetic is done
// in f32 and grouped as the reference does ((d * scale) * q - dmin * min), so the results are
// bit-identical to llama.cpp's and to the python gguf package's.
#include "core/quant.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

namespace upcycle {

namespace {

float load_f16(const std::byte* p) {
  uint16_t h;
  std::memcpy(&h, p, sizeof h);  // blocks are packed: fields may be unaligned
  return f16_to_f32(h);
}

const uint8_t* bytes_u8(const std::byte* p) { return reinterpret_cast<const uint8_t*>(p); }

// Q8_0, 34 bytes per 32 values: f16 d, int8 q[32]; x = d * q.
void dequantize_q8_0(const std::byte* src, float* dst, uint64_t blocks) {
  for (uint64_t b = 0; b < blocks; ++b, src += 34, dst += 32) {
    const float d = load_f16(src);
    const auto* q = reinterpret_cast<const int8_t*>(src + 2);
    for (int i = 0; i < 32; ++i) dst[i] = d * float(q[i]);
  }
}

// Q4_0, 18 bytes per 32 values: f16 d, 16 bytes of nibbles. Byte i holds value i in its low
// nibble and value i + 16 in its high one; x = d * (nibble - 8).
void dequantize_q4_0(const std::byte* src, float* dst, uint64_t blocks) {
  for (uint64_t b = 0; b < blocks; ++b, src += 18, dst += 32) {
    const float d = load_f16(src);
    const uint8_t* qs = bytes_u8(src + 2);
    for (int i = 0; i < 16; ++i) dst[i] = d * float(int(qs[i] & 0x0f) - 8);
    for (int i = 0; i < 16; ++i) dst[i + 16] = d * float(int(qs[i] >> 4) - 8);
  }
}

// Q4_1, 20 bytes per 32 values: f16 d, f16 m, 16 bytes of nibbles as in Q4_0; x = d * q + m.
void dequantize_q4_1(const std::byte* src, float* dst, uint64_t blocks) {
  for (uint64_t b = 0; b < blocks; ++b, src += 20, dst += 32) {
    const float d = load_f16(src), m = load_f16(src + 2);
    const uint8_t* qs = bytes_u8(src + 4);
    for (int i = 0; i < 16; ++i) dst[i] = d * float(qs[i] & 0x0f) + m;
    for (int i = 0; i < 16; ++i) dst[i + 16] = d * float(qs[i] >> 4) + m;
  }
}

// Q4_K's eight 6-bit scales and mins, packed in 12 bytes: bytes 0-3 hold scales 0-3 in their low
// six bits, bytes 4-7 mins 0-3; bytes 8-11 hold the low four bits of scales 4-7 (low nibble) and
// mins 4-7 (high nibble), whose top two bits sit in the spare top bits of bytes 0-3 and 4-7.
void unpack_q4_k_scales(const uint8_t* s, uint8_t scale[8], uint8_t min[8]) {
  for (int j = 0; j < 4; ++j) {
    scale[j] = s[j] & 0x3f;
    min[j] = s[j + 4] & 0x3f;
    scale[j + 4] = uint8_t((s[j + 8] & 0x0f) | ((s[j] >> 6) << 4));
    min[j + 4] = uint8_t((s[j + 8] >> 4) | ((s[j + 4] >> 6) << 4));
  }
}

// Q4_K, 144 bytes per 256 values: f16 d, f16 dmin, 12 bytes of scales/mins, 128 bytes of nibbles.
// Eight sub-blocks of 32: sub-block 2c takes the low nibbles of bytes 32c..32c+31, sub-block
// 2c+1 their high nibbles; x = (d * scale) * q - dmin * min.
void dequantize_q4_k(const std::byte* src, float* dst, uint64_t blocks) {
  for (uint64_t b = 0; b < blocks; ++b, src += 144, dst += 256) {
    const float d = load_f16(src), dmin = load_f16(src + 2);
    uint8_t scale[8], min[8];
    unpack_q4_k_scales(bytes_u8(src + 4), scale, min);
    const uint8_t* qs = bytes_u8(src + 16);
    for (int c = 0; c < 4; ++c, qs += 32) {
      const float d_lo = d * float(scale[2 * c]), m_lo = dmin * float(min[2 * c]);
      const float d_hi = d * float(scale[2 * c + 1]), m_hi = dmin * float(min[2 * c + 1]);
      float* y = dst + 64 * c;
      for (int i = 0; i < 32; ++i) y[i] = d_lo * float(qs[i] & 0x0f) - m_lo;
      for (int i = 0; i < 32; ++i) y[i + 32] = d_hi * float(qs[i] >> 4) - m_hi;
    }
  }
}

// Q6_K, 210 bytes per 256 values: ql[128] (low four bits), qh[64] (high two bits), int8
// scales[16] (one per 16 values), f16 d. Each half of 128 values uses 64 ql and 32 qh bytes:
// value 32k + i (k = 0..3) takes the low (k even) or high (k odd) nibble of ql[i + 32 * (k & 1)]
// and bits 2k, 2k+1 of qh[i]; x = (d * scale) * (q - 32).
void dequantize_q6_k(const std::byte* src, float* dst, uint64_t blocks) {
  for (uint64_t b = 0; b < blocks; ++b, src += 210, dst += 256) {
    const uint8_t* ql = bytes_u8(src);
    const uint8_t* qh = bytes_u8(src + 128);
    const auto* scales = reinterpret_cast<const int8_t*>(src + 192);
    const float d = load_f16(src + 208);
    for (int half = 0; half < 2; ++half, ql += 64, qh += 32, scales += 8) {
      float* y = dst + 128 * half;
      for (int k = 0; k < 4; ++k) {
        const uint8_t* low = ql + 32 * (k & 1);
        const int shift = k < 2 ? 0 : 4;
        for (int g = 0; g < 2; ++g) {  // a scale per 16 values
          const float ds = d * float(scales[2 * k + g]);
          for (int i = 16 * g; i < 16 * g + 16; ++i) {
            const int q = int(((low[i] >> shift) & 0x0f) | (((qh[i] >> (2 * k)) & 0x03) << 4)) - 32;
            y[32 * k + i] = ds * float(q);
          }
        }
      }
    }
  }
}

}  // namespace

void dequantize(DType t, const std::byte* src, uint64_t nbytes, float* dst, uint64_t elements) {
  auto want = dtype_bytes(t, elements);
  if (!want || *want != nbytes)
    throw std::logic_error("dequantize: " + std::to_string(nbytes) + " bytes do not hold " +
                           std::to_string(elements) + " elements of " + std::string(dtype_name(t)));
  const uint64_t blocks = elements / dtype_info(t).block_elems;
  switch (t) {
    case DType::Q8_0: return dequantize_q8_0(src, dst, blocks);
    case DType::Q4_0: return dequantize_q4_0(src, dst, blocks);
    case DType::Q4_1: return dequantize_q4_1(src, dst, blocks);
    case DType::Q4_K: return dequantize_q4_k(src, dst, blocks);
    case DType::Q6_K: return dequantize_q6_k(src, dst, blocks);
    default: return convert(t, src, DType::F32, dst, size_t(elements));
  }
}

void quantize_q8_0(const float* src, uint64_t elements, std::byte* dst) {
  if (elements % 32 != 0) throw std::logic_error("quantize_q8_0: " + std::to_string(elements) + " values are not whole blocks");
  for (uint64_t b = 0; b < elements / 32; ++b, src += 32, dst += 34) {
    float amax = 0;
    for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(src[i]));
    const float d = amax / 127, id = d != 0 ? 1 / d : 0;
    const uint16_t h = f32_to_f16(d);
    std::memcpy(dst, &h, sizeof h);
    for (int i = 0; i < 32; ++i) {
      const float q = std::round(src[i] * id);  // within [-127, 127] unless a value is not finite
      dst[2 + i] = std::byte(uint8_t(int8_t(std::isfinite(q) ? q : 0)));
    }
  }
}

}  // namespace upcycle
