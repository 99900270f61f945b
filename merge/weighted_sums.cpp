// linear, task arithmetic and DARE: weighted sums over the inputs, chunk by chunk.
#include <cmath>
#include <string>

#include "core/random.hpp"
#include "core/simd.hpp"
#include "merge/method_loops.hpp"

namespace upcycle::merge::detail {

namespace {

// The fewest bits of 1, 2, 4, 8, 16 that hold p exactly, else 32.
int draw_bits(double p) {
  for (int b = 1; b < 32; b *= 2)
    if (std::ldexp(p, b) == std::floor(std::ldexp(p, b))) return b;
  return 32;
}

// z[j] = draw j0 + j, j < n
UPCYCLE_SIMD_CLONES
void hash_draws(uint64_t state, uint64_t j0, size_t n, uint64_t* z) {
  for (size_t j = 0; j < n; ++j) z[j] = Rng(state + (j0 + j) * 0x9e3779b97f4a7c15ull).next();
}

// mask[jm + t] for the m = 64/B draws in each z[j], j < n: each 32-bit half of z[j] in turn, so
// that the shifts are of 32-bit lanes (AVX2 has those, not 64-bit ones).
template <int B>
inline void split_draws(const uint64_t* z, size_t n, uint64_t cut, uint32_t* mask) {
  constexpr int per_half = 32 / B;
  constexpr uint32_t low = uint32_t((uint64_t(1) << B) - 1);
  if constexpr (B == 32) {
    for (size_t j = 0; j < n; ++j) {
      mask[2 * j] = -uint32_t(uint32_t(z[j]) >= cut);
      mask[2 * j + 1] = -uint32_t((z[j] >> 32) >= cut);
    }
    return;
  }
  for (size_t h = 0; h < 2 * n; ++h) {
    const uint32_t word = uint32_t(z[h / 2] >> (32 * (h % 2)));
    for (int t = 0; t < per_half; ++t) mask[h * per_half + t] = -uint32_t(((word >> (t * B)) & low) >= cut);
  }
}

UPCYCLE_SIMD_CLONES
void split_draws(int bits, const uint64_t* z, size_t n, uint64_t cut, uint32_t* mask) {
  switch (bits) {
    case 1: return split_draws<1>(z, n, cut, mask);
    case 2: return split_draws<2>(z, n, cut, mask);
    case 4: return split_draws<4>(z, n, cut, mask);
    case 8: return split_draws<8>(z, n, cut, mask);
    case 16: return split_draws<16>(z, n, cut, mask);
    default: return split_draws<32>(z, n, cut, mask);
  }
}

}  // namespace

DropMask::DropMask(uint64_t seed, std::string_view key, size_t k, double p, uint64_t first)
    : state_(Rng::stream(seed, std::string(key) + "/input " + std::to_string(k)).next()),
      bits_(draw_bits(p)),
      cut_(uint64_t(std::ceil(std::ldexp(p, bits_)))),
      first_(first) {}

// Draws are hashed a group at a time into z (so the AVX-512 build's 64-bit vector multiplies
// apply), split into a whole group's masks, and the wanted ones copied out.
void DropMask::fill(size_t lo, size_t len, uint32_t* mask) const {
  constexpr size_t kGroup = 64;  // draws
  const uint64_t m = 64 / uint64_t(bits_);
  uint64_t z[kGroup];
  uint32_t group[kGroup * 64];
  for (uint64_t i = first_ + lo, end = i + len; i < end;) {
    const uint64_t j0 = i / m, j1 = std::min((end + m - 1) / m, j0 + kGroup);
    hash_draws(state_, j0, j1 - j0, z);
    split_draws(bits_, z, j1 - j0, cut_, group);
    const uint64_t stop = std::min(end, j1 * m);
    mask = std::copy(group + (i - j0 * m), group + (stop - j0 * m), mask);
    i = stop;
  }
}

namespace {

// acc[i] += c·x[i]
UPCYCLE_SIMD_CLONES
void add_scaled(float* acc, const float* x, float c, size_t len) {
  for (size_t i = 0; i < len; ++i) acc[i] += c * x[i];
}

// acc[i] += c·(x[i] − b[i]), where keep[i] is all ones when keep is given
UPCYCLE_SIMD_CLONES
void add_delta(float* acc, const float* x, const float* b, float c, const uint32_t* keep, size_t len) {
  if (keep) {
    for (size_t i = 0; i < len; ++i) acc[i] += masked(c * (x[i] - b[i]), keep[i]);
  } else {
    for (size_t i = 0; i < len; ++i) acc[i] += c * (x[i] - b[i]);
  }
}

}  // namespace

void weighted_mean(std::span<float> out, Inputs inputs, std::span<const float> coef) {
  for_chunks(out.size(), [&](size_t lo, size_t len) {
    float acc[kChunk] = {};
    for (size_t k = 0; k < inputs.size(); ++k) add_scaled(acc, inputs[k].data() + lo, coef[k], len);
    std::copy_n(acc, len, out.data() + lo);
  });
}

void delta_sum(std::span<float> out, Inputs inputs, std::span<const float> base, std::span<const float> coef,
               std::span<const DropMask> masks) {
  for_chunks(out.size(), [&](size_t lo, size_t len) {
    float acc[kChunk] = {};
    const float* b = base.data() + lo;
    uint32_t keep[kChunk];
    for (size_t k = 0; k < inputs.size(); ++k) {
      if (!masks.empty()) masks[k].fill(lo, len, keep);
      add_delta(acc, inputs[k].data() + lo, b, coef[k], masks.empty() ? nullptr : keep, len);
    }
    float* o = out.data() + lo;
    for (size_t i = 0; i < len; ++i) o[i] = b[i] + acc[i];
  });
}

}  // namespace upcycle::merge::detail
