// TIES and DARE-TIES: survivors per input (magnitude trim or DARE mask), then each element's
// sign election and the disjoint mean of the inputs that agree with it.
#include <algorithm>
#include <bit>
#include <cmath>

#include "merge/method_loops.hpp"

namespace upcycle::merge::detail {

namespace {

// |d|'s bit pattern, an integer ordered as the magnitudes are (NaN above +inf).
int32_t magnitude_bits(float d) { return int32_t(std::bit_cast<uint32_t>(d) & 0x7fffffffu); }

// The trim that keeps `keep` elements of x − base, by a radix select on the magnitudes' 31 bits:
// a histogram of the top 16 bits finds the threshold's high digit, a second one of the low 15
// bits among the elements with that digit finds the rest. Two streaming passes and no copy of
// the tensor (std::nth_element on a copy of the magnitudes was several times slower).
Trim trim_one(std::span<const float> x, std::span<const float> base, size_t keep) {
  const size_t n = x.size();
  if (keep >= n) return kKeepAll;
  if (keep == 0) return kKeepNone;
  uint32_t threshold = 0;  // its digits found so far
  size_t wanted = keep;    // how many of the elements that match those digits survive
  size_t matching = 0;     // how many elements match all the digits (at the end: equal threshold)
  std::vector<uint64_t> hist;
  int high = 31;  // the digits found so far are the bits from `high` up
  for (const int low : {15, 0}) {
    const uint32_t bins = 1u << (high - low), found = threshold >> high;
    hist.assign(bins, 0);
    for (size_t i = 0; i < n; ++i) {
      const uint32_t m = uint32_t(magnitude_bits(x[i] - base[i]));
      if ((m >> high) == found) ++hist[(m >> low) & (bins - 1)];
    }
    uint32_t digit = bins - 1;  // from the largest magnitudes down to the wanted-th survivor
    while (hist[digit] < wanted) wanted -= hist[digit--];
    threshold |= digit << low;
    matching = hist[digit];
    high = low;
  }
  const auto t = int32_t(threshold);
  if (wanted == matching) return {t, int64_t(n)};  // every element equal to t survives
  for (size_t i = 0;; ++i)  // else the first `wanted` of them by index
    if (magnitude_bits(x[i] - base[i]) == t && --wanted == 0) return {t, int64_t(i)};
}

// d[j] = x[j] − b[j] where its magnitude bits are at least `min_bits`, else 0.
void survivors(const float* x, const float* b, float* d, size_t len, int64_t min_bits) {
  if (min_bits > INT32_MAX) {
    std::fill_n(d, len, 0.0f);
    return;
  }
  const int32_t t = int32_t(std::max<int64_t>(min_bits, 0));
  for (size_t j = 0; j < len; ++j) {
    const float v = x[j] - b[j];
    d[j] = magnitude_bits(v) >= t ? v : 0.0f;
  }
}

}  // namespace

void Trim::fill(size_t lo, size_t len, const float* x, const float* b, float* d) const {
  // Up to last_tie the threshold magnitude itself survives, after it only larger ones: two
  // plain loops rather than an index test per element.
  const size_t split = size_t(std::clamp<int64_t>(last_tie + 1 - int64_t(lo), 0, int64_t(len)));
  survivors(x, b, d, split, bits);
  survivors(x + split, b + split, d + split, len - split, bits + 1);
}

std::vector<Trim> top_magnitudes(Inputs inputs, std::span<const float> base, size_t keep) {
  std::vector<Trim> trims(inputs.size());
  const int64_t count = int64_t(inputs.size());
  // One input per thread: each select is a serial pass, and integer counts make it exact anyway.
#pragma omp parallel for schedule(dynamic, 1) if (count > 1 && base.size() > kChunk)
  for (int64_t k = 0; k < count; ++k) trims[size_t(k)] = trim_one(inputs[size_t(k)], base, keep);
  return trims;
}

void sign_elect(std::span<float> out, Inputs inputs, std::span<const float> base, std::span<const float> weights,
                float lambda, float scale, std::span<const Trim> trims, std::span<const DropMask> masks) {
  const size_t n = out.size(), count = inputs.size();
  const int64_t chunks = int64_t((n + kChunk - 1) / kChunk);
#pragma omp parallel if (chunks > 1)
  {
    std::vector<float> kept(count * kChunk);  // the chunk's survivors d̃_k, input by input
#pragma omp for schedule(static)
    for (int64_t c = 0; c < chunks; ++c) {
      const size_t lo = size_t(c) * kChunk, len = std::min(kChunk, n - lo);
      const float* b = base.data() + lo;
      float elect[kChunk] = {}, sign[kChunk], num[kChunk] = {}, den[kChunk] = {};
      for (size_t k = 0; k < count; ++k) {
        const float* x = inputs[k].data() + lo;
        float* d = kept.data() + k * kChunk;
        if (!trims.empty()) {
          trims[k].fill(lo, len, x, b, d);
        } else {
          uint32_t keep[kChunk];
          masks[k].fill(lo, len, keep);
          for (size_t i = 0; i < len; ++i) d[i] = masked(scale * (x[i] - b[i]), keep[i]);
        }
        const float w = weights[k];
        for (size_t i = 0; i < len; ++i) elect[i] += w * d[i];
      }
      for (size_t i = 0; i < len; ++i) sign[i] = float((elect[i] > 0) - (elect[i] < 0));
      // k agrees where d̃_k·sign > 0 (exact: sign is -1, 0 or 1), tested on the product's bits
      // read as an integer: GCC does not vectorise a float compare here under its default
      // -ftrapping-math.
      for (size_t k = 0; k < count; ++k) {
        const float* d = kept.data() + k * kChunk;
        const float w = weights[k];
        for (size_t i = 0; i < len; ++i) {
          const uint32_t agree = -uint32_t(std::bit_cast<int32_t>(d[i] * sign[i]) > 0);
          num[i] += masked(w * d[i], agree);
          den[i] += masked(w, agree);
        }
      }
      float* o = out.data() + lo;
      for (size_t i = 0; i < len; ++i) {
        const float divisor = den[i] != 0 ? den[i] : INFINITY;  // finite / ∞ = 0: base where none agrees
        o[i] = b[i] + lambda * (num[i] / divisor);
      }
    }
  }
}

}  // namespace upcycle::merge::detail
