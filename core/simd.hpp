// Hot loops built three times, for the baseline x86-64, for AVX2 (x86-64-v3) and for AVX-512
// (x86-64-v4), the best picked at load time. They give the same bits in every build: the loops'
// order of operations is written out (explicit lanes, no reassociation without -ffast-math) and
// the project compiles with -ffp-contract=off, so only the vector width changes.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define UPCYCLE_SIMD_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define UPCYCLE_SIMD_CLONES
#endif

namespace upcycle {

// Sums written in this many lanes (lane l takes terms l, l + 16, ...) vectorise at every width
// and keep one order of additions.
inline constexpr int kSimdLanes = 16;

// The lanes added pairwise (8 + 8, 4 + 4, ...): a fixed order whatever the vector width.
inline float lane_sum(float* acc) {
  for (int w = kSimdLanes / 2; w > 0; w /= 2)
    for (int l = 0; l < w; ++l) acc[l] += acc[l + w];
  return acc[0];
}

}  // namespace upcycle
