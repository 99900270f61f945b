#include "trainer/ops/stored_matmul.hpp"

#include <algorithm>
#include <bit>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include <Eigen/Core>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define UPCYCLE_HAVE_AVX512_DOTS 1
#endif

#include "core/quant.hpp"
#include "core/simd.hpp"
#include "trainer/buffer.hpp"
#include "trainer/ops/bf16_matmul.hpp"
#include "trainer/ops/matmul.hpp"

namespace upcycle::ops {

namespace {

constexpr int kLanes = kSimdLanes;
constexpr int64_t kQ8Block = 32, kQ8Bytes = 34;
constexpr int64_t kMaxBlock = 256;  // the largest quantization block (the K types')

// ⟨w, x⟩ over n values, w's widened by `widen`, lane l taking the values at l mod 16; the tail
// past the last whole 16 goes to its lanes in order. Inlined into each dtype's SIMD clones, so
// each is vectorised for its width.
template <class W, class Widen>
[[gnu::always_inline]] inline float dot_lanes(const W* w, const float* x, int64_t n, Widen widen) {
  float acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int l = 0; l < kLanes; ++l) acc[l] += widen(w[i + l]) * x[i + l];
  for (; i < n; ++i) acc[i % kLanes] += widen(w[i]) * x[i];
  return lane_sum(acc);
}

UPCYCLE_SIMD_CLONES
float dot_f32(const float* w, const float* x, int64_t n) {
  return dot_lanes(w, x, n, [](float v) { return v; });
}

UPCYCLE_SIMD_CLONES
float dot_bf16(const uint16_t* w, const float* x, int64_t n) {
  return dot_lanes(w, x, n, [](uint16_t v) { return std::bit_cast<float>(uint32_t(v) << 16); });
}

UPCYCLE_SIMD_CLONES
float dot_f16(const uint16_t* w, const float* x, int64_t n) {
  return dot_lanes(w, x, n, [](uint16_t v) { return float(std::bit_cast<_Float16>(v)); });
}

// Per block: s[l] = q[l]·x[l] + q[l+16]·x[l+16], then acc[l] += d·s[l].
UPCYCLE_SIMD_CLONES
float dot_q8_0(const std::byte* w, const float* x, int64_t n) {
  float acc[kLanes] = {};
  for (int64_t b = 0; b < n / kQ8Block; ++b, w += kQ8Bytes, x += kQ8Block) {
    uint16_t h;
    std::memcpy(&h, w, sizeof h);
    const float d = float(std::bit_cast<_Float16>(h));
    int8_t q[kQ8Block];
    std::memcpy(q, w + 2, sizeof q);
    float qx[kQ8Block];  // whole-block loops, which vectorise where per-lane ones of int8 do not
    for (int i = 0; i < kQ8Block; ++i) qx[i] = float(q[i]) * x[i];
    float s[kLanes];
    for (int l = 0; l < kLanes; ++l) s[l] = qx[l] + qx[l + kLanes];
    for (int l = 0; l < kLanes; ++l) acc[l] += d * s[l];
  }
  return lane_sum(acc);
}

// Q4_0 and Q4_1 blocks (18 and 20 bytes per 32 values: f16 d (and m), then 16 bytes whose low
// nibbles are values 0-15 and high ones 16-31), widened as core's dequantize widens them
// (d·(q − 8); d·q + m).
[[gnu::always_inline]] inline float f16_at(const std::byte* p) {
  uint16_t h;
  std::memcpy(&h, p, sizeof h);
  return float(std::bit_cast<_Float16>(h));
}
[[gnu::always_inline]] inline void widen_q4_0(const std::byte* b, float* v) {
  const float d = f16_at(b);
  const auto* qs = reinterpret_cast<const uint8_t*>(b + 2);
  for (int i = 0; i < 16; ++i) v[i] = d * float(int(qs[i] & 0x0f) - 8);
  for (int i = 0; i < 16; ++i) v[i + 16] = d * float(int(qs[i] >> 4) - 8);
}
[[gnu::always_inline]] inline void widen_q4_1(const std::byte* b, float* v) {
  const float d = f16_at(b), m = f16_at(b + 2);
  const auto* qs = reinterpret_cast<const uint8_t*>(b + 4);
  for (int i = 0; i < 16; ++i) v[i] = d * float(qs[i] & 0x0f) + m;
  for (int i = 0; i < 16; ++i) v[i + 16] = d * float(qs[i] >> 4) + m;
}

// GGUF's 4- and 6-bit types: each block widened (Q4_0 and Q4_1 inline, the K types by core's
// dequantize, 256 values a call), then its runs of 16 values taken in turn by two sets of lanes
// (even runs, odd runs: two chains of additions, not one, where widening leaves the adds the
// bound), the sets added lane by lane at the end, then the lanes pairwise.
template <class Widen>
[[gnu::always_inline]] inline float dot_widened(const std::byte* w, const float* x, int64_t n, int64_t block,
                                                int64_t block_bytes, Widen widen) {
  float acc[2][kLanes] = {};
  float values[kMaxBlock];
  for (int64_t b = 0; b < n / block; ++b, w += block_bytes, x += block) {
    widen(w, values);
    for (int64_t i = 0; i < block; i += kLanes)
      for (int l = 0; l < kLanes; ++l) acc[(i / kLanes) % 2][l] += values[i + l] * x[i + l];
  }
  for (int l = 0; l < kLanes; ++l) acc[0][l] += acc[1][l];
  return lane_sum(acc[0]);
}

UPCYCLE_SIMD_CLONES
float dot_q4_0(const std::byte* w, const float* x, int64_t n) { return dot_widened(w, x, n, 32, 18, widen_q4_0); }

UPCYCLE_SIMD_CLONES
float dot_q4_1(const std::byte* w, const float* x, int64_t n) { return dot_widened(w, x, n, 32, 20, widen_q4_1); }

UPCYCLE_SIMD_CLONES
float dot_k_blocks(DType t, const std::byte* w, const float* x, int64_t n) {
  const DTypeInfo& info = dtype_info(t);
  return dot_widened(w, x, n, info.block_elems, info.block_bytes, [&](const std::byte* b, float* v) {
    dequantize(t, b, info.block_bytes, v, info.block_elems);
  });
}

#ifdef UPCYCLE_HAVE_AVX512_DOTS
// The same sums written with AVX-512 where the compiler's vectorisation of the loops above falls
// short (int8, 4-bit, f16 and bf16 conversions): one register is the 16 lanes, each operation the loop's, in
// its order (products and sums apart, as -ffp-contract=off keeps them), so the bits are the same.
#define UPCYCLE_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,f16c")))
// GCC 12's AVX-512 headers start conversions from _mm512_undefined_*, which it then reports.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

UPCYCLE_AVX512 float dot_f16_avx512(const uint16_t* w, const float* x, int64_t n) {
  __m512 acc = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    const __m512 wf = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + i)));
    acc = _mm512_add_ps(acc, _mm512_mul_ps(wf, _mm512_loadu_ps(x + i)));
  }
  alignas(64) float lanes[kLanes];
  _mm512_store_ps(lanes, acc);
  for (; i < n; ++i) lanes[i % kLanes] += _cvtsh_ss(w[i]) * x[i];
  return lane_sum(lanes);
}

// bf16 widened by shifting into the high half (exact), as dot_bf16 does; GCC vectorises that
// loop 8 lanes a register, which held bf16 decoding below f32's here.
UPCYCLE_AVX512 float dot_bf16_avx512(const uint16_t* w, const float* x, int64_t n) {
  __m512 acc = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    const __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + i)));
    const __m512 wf = _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
    acc = _mm512_add_ps(acc, _mm512_mul_ps(wf, _mm512_loadu_ps(x + i)));
  }
  alignas(64) float lanes[kLanes];
  _mm512_store_ps(lanes, acc);
  for (; i < n; ++i) lanes[i % kLanes] += std::bit_cast<float>(uint32_t(w[i]) << 16) * x[i];
  return lane_sum(lanes);
}

// 16 int8 as f32.
UPCYCLE_AVX512 inline __m512 int8_lanes(const std::byte* q) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q))));
}

UPCYCLE_AVX512 float dot_q8_0_avx512(const std::byte* w, const float* x, int64_t n) {
  __m512 acc = _mm512_setzero_ps();
  for (int64_t b = 0; b < n / kQ8Block; ++b, w += kQ8Bytes, x += kQ8Block) {
    uint16_t h;
    std::memcpy(&h, w, sizeof h);
    const __m512 d = _mm512_set1_ps(_cvtsh_ss(h));
    const __m512 s = _mm512_add_ps(_mm512_mul_ps(int8_lanes(w + 2), _mm512_loadu_ps(x)),
                                   _mm512_mul_ps(int8_lanes(w + 2 + kLanes), _mm512_loadu_ps(x + kLanes)));
    acc = _mm512_add_ps(acc, _mm512_mul_ps(d, s));
  }
  alignas(64) float lanes[kLanes];
  _mm512_store_ps(lanes, acc);
  return lane_sum(lanes);
}

// Q4_0 and Q4_1 as widen_q4_0 / widen_q4_1 and dot_widened compute them: the low nibbles are
// values 0-15 (the even run), the high ones 16-31 (the odd run).
template <bool kQ4_1>
UPCYCLE_AVX512 float dot_q4_avx512(const std::byte* w, const float* x, int64_t n) {
  constexpr int64_t block_bytes = kQ4_1 ? 20 : 18;
  __m512 even = _mm512_setzero_ps(), odd = _mm512_setzero_ps();
  for (int64_t b = 0; b < n / 32; ++b, w += block_bytes, x += 32) {
    uint16_t h[2];
    std::memcpy(h, w, kQ4_1 ? 4 : 2);
    const __m512 d = _mm512_set1_ps(_cvtsh_ss(h[0]));
    const __m512i q = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + (kQ4_1 ? 4 : 2))));
    __m512i lo = _mm512_and_si512(q, _mm512_set1_epi32(0x0f)), hi = _mm512_srli_epi32(q, 4);
    __m512 v_lo, v_hi;
    if constexpr (kQ4_1) {
      const __m512 m = _mm512_set1_ps(_cvtsh_ss(h[1]));
      v_lo = _mm512_add_ps(_mm512_mul_ps(d, _mm512_cvtepi32_ps(lo)), m);
      v_hi = _mm512_add_ps(_mm512_mul_ps(d, _mm512_cvtepi32_ps(hi)), m);
    } else {
      const __m512i eight = _mm512_set1_epi32(8);
      v_lo = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_sub_epi32(lo, eight)));
      v_hi = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_sub_epi32(hi, eight)));
    }
    even = _mm512_add_ps(even, _mm512_mul_ps(v_lo, _mm512_loadu_ps(x)));
    odd = _mm512_add_ps(odd, _mm512_mul_ps(v_hi, _mm512_loadu_ps(x + kLanes)));
  }
  alignas(64) float lanes[kLanes];
  _mm512_store_ps(lanes, _mm512_add_ps(even, odd));
  return lane_sum(lanes);
}

bool has_avx512_dots() {
  static const bool yes = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                          __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("f16c");
  return yes;
}
#else
bool has_avx512_dots() { return false; }
#endif

}  // namespace

float detail::row_dot(DType t, const std::byte* row, const float* x, int64_t n, bool portable) {
#ifdef UPCYCLE_HAVE_AVX512_DOTS
  if (!portable && has_avx512_dots()) {
    if (t == DType::BF16) return dot_bf16_avx512(reinterpret_cast<const uint16_t*>(row), x, n);
    if (t == DType::F16) return dot_f16_avx512(reinterpret_cast<const uint16_t*>(row), x, n);
    if (t == DType::Q8_0) return dot_q8_0_avx512(row, x, n);
    if (t == DType::Q4_0) return dot_q4_avx512<false>(row, x, n);
    if (t == DType::Q4_1) return dot_q4_avx512<true>(row, x, n);
  }
#endif
  switch (t) {
    case DType::F32: return dot_f32(reinterpret_cast<const float*>(row), x, n);
    case DType::BF16: return dot_bf16(reinterpret_cast<const uint16_t*>(row), x, n);
    case DType::F16: return dot_f16(reinterpret_cast<const uint16_t*>(row), x, n);
    case DType::Q8_0: return dot_q8_0(row, x, n);
    case DType::Q4_0: return dot_q4_0(row, x, n);
    case DType::Q4_1: return dot_q4_1(row, x, n);
    case DType::Q4_K:
    case DType::Q6_K: return dot_k_blocks(t, row, x, n);
    default: throw std::logic_error("row_dot: no dot path for " + std::string(dtype_name(t)));
  }
}

namespace {

// out[n·O + r] = ⟨W_r, in_n⟩ for every row r and input n < N.
void dots(float* out, const float* in, const StoredMatrix& W, int64_t N, size_t row_bytes) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < W.rows; ++r) {
    const std::byte* row = W.data + size_t(r) * row_bytes;
    for (int64_t n = 0; n < N; ++n) out[n * W.rows + r] = detail::row_dot(W.dtype, row, in + n * W.cols, W.cols);
  }
}

using Rows = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// W's rows in panels of kPanelRows widened to f32: use(r0, panel [rows, I]) for each in turn.
template <class Use>
void for_each_panel(const StoredMatrix& W, size_t row_bytes, Use use) {
  const int64_t I = W.cols, O = W.rows;
  std::vector<float> panel(size_t(std::min(kPanelRows, O) * I));
  for (int64_t r0 = 0; r0 < O; r0 += kPanelRows) {
    const int64_t rows = std::min(kPanelRows, O - r0);
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; ++r)
      dequantize(W.dtype, W.data + size_t(r0 + r) * row_bytes, row_bytes, panel.data() + r * I, uint64_t(I));
    use(r0, Eigen::Map<const Rows>(panel.data(), rows, I));
  }
}

// Each panel multiplied by the f32 matmul into its columns of out.
void panels(float* out, const float* in, const StoredMatrix& W, int64_t N, size_t row_bytes) {
  for_each_panel(W, row_bytes, [&](int64_t r0, const Eigen::Map<const Rows>& w) {
    f32_product(out + r0, W.rows, in, W.cols, 1, w.data(), BLayout::Transposed, N, W.cols, w.rows(), false);
  });
}

// Activations rounded to bf16 for the products: unset when allocated and rounded by every
// thread a range at a time (an [N, I] input is megabytes, each linear layer's in turn).
Buffer<uint16_t> to_bf16(const float* values, size_t n) {
  constexpr size_t kRange = size_t(1) << 16;
  Buffer<uint16_t> out(n);
#pragma omp parallel for schedule(static) if (n > kRange)
  for (size_t i = 0; i < n; i += kRange)
    convert(DType::F32, values + i, DType::BF16, out.data() + i, std::min(kRange, n - i));
  return out;
}

// W's rows in panels of kPanelRows rounded to bf16: use(r0, panel [rows, I]) for each in turn.
template <class Use>
void for_each_bf16_panel(const StoredMatrix& W, size_t row_bytes, Use use) {
  std::vector<uint16_t> bf16(size_t(std::min(kPanelRows, W.rows) * W.cols));
  for_each_panel(W, row_bytes, [&](int64_t r0, const Eigen::Map<const Rows>& w) {
    convert(DType::F32, w.data(), DType::BF16, bf16.data(), size_t(w.size()));
    use(r0, w.rows(), bf16.data());
  });
}

// W's values in bf16, whole: bf16 ones in place, or the copy an f32 master keeps; null for others.
const uint16_t* whole_bf16(const StoredMatrix& W) {
  return W.dtype == DType::BF16 ? reinterpret_cast<const uint16_t*>(W.data) : W.bf16_copy;
}

// The inputs rounded to bf16, times the weights in bf16 on oneDNN: whole where whole_bf16 has
// them, others a panel rounded at a time (never a bf16 copy of the whole matrix).
void bf16_products(float* out, const float* in, const StoredMatrix& W, int64_t N, size_t row_bytes) {
  const Buffer<uint16_t> x = to_bf16(in, size_t(N * W.cols));
  if (const uint16_t* w = whole_bf16(W)) return bf16_matmul_forward(out, x.data(), w, N, W.cols, W.rows);
  for_each_bf16_panel(W, row_bytes, [&](int64_t r0, int64_t rows, const uint16_t* panel) {
    bf16_matmul_forward_panel(out + r0, W.rows, x.data(), panel, N, W.cols, rows);
  });
}

// d_in += d_out rounded to bf16 times the weights in bf16, as bf16_products takes them.
void bf16_products_backward_input(float* d_in, const float* d_out, const StoredMatrix& W, int64_t N, size_t row_bytes) {
  const Buffer<uint16_t> dy = to_bf16(d_out, size_t(N * W.rows));
  if (const uint16_t* w = whole_bf16(W)) return bf16_matmul_backward_input(d_in, dy.data(), w, N, W.cols, W.rows);
  for_each_bf16_panel(W, row_bytes, [&](int64_t r0, int64_t rows, const uint16_t* panel) {
    bf16_matmul_backward_input_panel(d_in, dy.data() + r0, W.rows, panel, N, W.cols, rows);
  });
}

void check_shape(const StoredMatrix& W, int64_t N) {
  if (W.rows < 0 || N < 0 || (W.rows > 0 && !W.data)) throw std::invalid_argument("stored_matmul: a shape W cannot have");
}

const float* f32_values(const StoredMatrix& W) { return reinterpret_cast<const float*>(W.data); }

}  // namespace

bool stored_matmul_supports(DType t) { return t != DType::F64; }

size_t stored_row_bytes(DType t, int64_t cols) {
  if (!stored_matmul_supports(t))
    throw std::invalid_argument("stored_matmul: " + std::string(dtype_name(t)) + " weights are not supported");
  const auto bytes = cols >= 0 ? dtype_bytes(t, uint64_t(cols)) : std::nullopt;
  if (!bytes) throw std::invalid_argument("stored_matmul: a row of " + std::to_string(cols) + " " + std::string(dtype_name(t)) + " values");
  return size_t(*bytes);
}

void stored_matmul_forward(float* out, const float* in, const StoredMatrix& W, const float* bias, int64_t N) {
  const size_t row_bytes = stored_row_bytes(W.dtype, W.cols);
  check_shape(W, N);
  if (W.dtype == DType::F32 && N > kDotRows && !W.bf16_products)
    return matmul_forward<float>(out, in, f32_values(W), bias, N, W.cols, W.rows);
  if (N <= kDotRows) {
    dots(out, in, W, N, row_bytes);
  } else if (W.bf16_products) {
    bf16_products(out, in, W, N, row_bytes);
  } else {
    panels(out, in, W, N, row_bytes);
  }
  if (bias)
    for (int64_t n = 0; n < N; ++n)
      for (int64_t r = 0; r < W.rows; ++r) out[n * W.rows + r] += bias[r];
}

void stored_matmul_backward_input(float* d_in, const float* d_out, const StoredMatrix& W, int64_t N) {
  const size_t row_bytes = stored_row_bytes(W.dtype, W.cols);
  check_shape(W, N);
  if (W.bf16_products && N > kDotRows) return bf16_products_backward_input(d_in, d_out, W, N, row_bytes);
  if (W.dtype == DType::F32)
    return matmul_backward<float>(d_in, nullptr, nullptr, d_out, nullptr, f32_values(W), N, W.cols, W.rows);
  for_each_panel(W, row_bytes, [&](int64_t r0, const Eigen::Map<const Rows>& w) {
    f32_product(d_in, W.cols, d_out + r0, W.rows, 1, w.data(), BLayout::Plain, N, w.rows(), W.cols, true);
  });
}

void stored_matmul_backward_weight(float* d_W, float* d_bias, const float* d_out, const float* in,
                                   const StoredMatrix& W, int64_t N) {
  check_shape(W, N);
  if (W.dtype != DType::F32)
    throw std::invalid_argument("stored_matmul: a weight's gradient needs its values in f32, not " +
                                std::string(dtype_name(W.dtype)));
  const int64_t I = W.cols, O = W.rows;
  if (d_bias) matmul_backward<float>(nullptr, nullptr, d_bias, d_out, nullptr, nullptr, N, I, O);
  if (!d_W || N == 0) return;
  if (!W.bf16_products) return matmul_backward<float>(nullptr, d_W, nullptr, d_out, in, f32_values(W), N, I, O);
  const Buffer<uint16_t> dy = to_bf16(d_out, size_t(N * O)), x = to_bf16(in, size_t(N * I));
  bf16_matmul_backward_weight(d_W, dy.data(), x.data(), N, I, O);
}

void stored_gather_rows(float* out, const StoredMatrix& W, const int32_t* ids, int64_t N) {
  const size_t row_bytes = stored_row_bytes(W.dtype, W.cols);
  check_shape(W, N);
  for (int64_t n = 0; n < N; ++n)
    if (ids[n] < 0 || ids[n] >= W.rows)
      throw std::invalid_argument("embedding: token id " + std::to_string(ids[n]) + " outside the table");
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n)
    dequantize(W.dtype, W.data + size_t(ids[n]) * row_bytes, row_bytes, out + n * W.cols, uint64_t(W.cols));
}

}  // namespace upcycle::ops
