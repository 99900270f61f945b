// The merge methods' loops, behind merge_tensor (which validates everything first: every span
// here has out.size() elements, and the coefficients are finite). Internal to merge/.
//
// Threads: each loop is split into fixed chunks of kChunk elements and every element is computed
// by the same expression whichever thread runs its chunk, with sums over inputs in input order,
// so the output is bit-identical for any OpenMP thread count. `out` may be exactly one of the
// inputs or the base (not a shifted overlap): a chunk is read in full before it is written.
#pragma once
#include <algorithm>
#include <bit>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

namespace upcycle::merge::detail {

using Inputs = std::span<const std::span<const float>>;

inline constexpr size_t kChunk = 2048;  // elements; a chunk's accumulators stay in L1

// f(lo, len) for each chunk [lo, lo + len) of [0, n), chunks spread over the OpenMP threads.
template <class F>
void for_chunks(size_t n, F&& f) {
  const int64_t chunks = int64_t((n + kChunk - 1) / kChunk);
#pragma omp parallel for schedule(static) if (chunks > 1)
  for (int64_t c = 0; c < chunks; ++c) {
    const size_t lo = size_t(c) * kChunk;
    f(lo, std::min(kChunk, n - lo));
  }
}

// DARE's drop decisions for one input k: element i survives when its uniform draw u_i in [0, 1)
// is at least p. The draws are counter-based and b bits wide, b the fewest of 1, 2, 4, 8, 16 and
// 32 that hold p exactly (p = 0.5: one bit), else 32 (p in effect rounded up to a multiple of
// 2⁻³²). With s the first number of Rng::stream(seed, "<key>/input <k>"), z_j = Rng(s + j·γ).next()
// (splitmix64 number j from state s, γ its increment) holds the draws of elements jm .. jm+m−1,
// m = 64/b: element i's is the b bits of z_{i div m} from bit b·(i mod m), over 2^b. So a draw
// depends on (seed, key, k, i) alone, any part of a tensor is drawn by itself, and the default
// p = 0.5 costs one hash per 64 elements.
class DropMask {
 public:
  // For a part of the tensor starting at its element `first`: lo below counts from there.
  DropMask(uint64_t seed, std::string_view key, size_t k, double p, uint64_t first = 0);
  // mask[j] = all ones if element first + lo + j survives, else 0 (to AND with its bits), j < len.
  void fill(size_t lo, size_t len, uint32_t* mask) const;

 private:
  uint64_t state_;
  int bits_;        // b
  uint64_t cut_;    // u < p ⟺ the b bits < p·2^b (rounded up)
  uint64_t first_;
};

// v where mask is all ones, +0 where it is 0: a select on bits, which vectorises where a float
// select (or a bool-to-float conversion) would compile to a branch, mispredicted on random masks.
inline float masked(float v, uint32_t mask) { return std::bit_cast<float>(std::bit_cast<uint32_t>(v) & mask); }

// out = Σ coef_k x_k  (linear, with coef already normalised)
void weighted_mean(std::span<float> out, Inputs inputs, std::span<const float> coef);

// out = base + Σ coef_k d̃_k with d_k = x_k − base, d̃_k = d_k, or 0 where masks[k] drops it
// (task arithmetic: masks empty, coef = λw; DARE: coef = λw/(1−p)).
void delta_sum(std::span<float> out, Inputs inputs, std::span<const float> base, std::span<const float> coef,
               std::span<const DropMask> masks);

// Which elements of one input's delta survive TIES's trim: those whose magnitude, as its bit
// pattern (an integer ordered as non-negative floats are), is at least `bits` at indices up to
// `last_tie` and above `bits` after it. So of the elements tied at the threshold magnitude, the
// first ones by index survive.
struct Trim {
  int64_t bits;  // 64 bits, so that bits + 1 cannot overflow (kKeepNone)
  int64_t last_tie;
  // d[j] = x[j] − b[j] if element lo + j survives, else 0; j < len.
  void fill(size_t lo, size_t len, const float* x, const float* b, float* d) const;
};
inline constexpr Trim kKeepAll{-1, -1}, kKeepNone{INT32_MAX, -1};

// TIES's trim of each input's delta to its `keep` largest elements by magnitude. Exactly `keep`
// survive: elements that tie at the threshold magnitude are taken in index order.
std::vector<Trim> top_magnitudes(Inputs inputs, std::span<const float> base, size_t keep);

// Sign election and disjoint mean over survivors d̃_k = scale·d_k (trims[k] for TIES with
// scale 1, masks[k] for DARE-TIES with scale 1/(1−p); exactly one of the two is non-empty):
// out = base + λ Σ_{k agrees} w_k d̃_k / Σ_{k agrees} w_k, where k agrees when d̃_k ≠ 0 has the
// sign of Σ_k w_k d̃_k; base where none agrees (that sum 0 included) or the agreeing weights sum
// to 0.
void sign_elect(std::span<float> out, Inputs inputs, std::span<const float> base, std::span<const float> weights,
                float lambda, float scale, std::span<const Trim> trims, std::span<const DropMask> masks);

// out = a·x0 + b·x1 with a, b from the spherical interpolation at t of the flattened tensors;
// a = 1 − t, b = t when either is zero or they are nearly parallel (|cos Ω| > 0.9995).
void slerp(std::span<float> out, std::span<const float> x0, std::span<const float> x1, double t);

}  // namespace upcycle::merge::detail
