// Seeded random numbers that are the same on every platform and standard library (std::
// distributions are not): splitmix64 streams, one per (seed, purpose) so that each tensor or
// stage draws from its own stream whatever order the work runs in.
#pragma once
#include <cmath>
#include <cstdint>
#include <string_view>

namespace upcycle {

class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  // A stream for one purpose: the same (seed, label) always gives the same numbers.
  static Rng stream(uint64_t seed, std::string_view label) {
    uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a of the label, mixed with the seed
    for (char c : label) h = (h ^ uint8_t(c)) * 0x100000001b3ull;
    return Rng(mix(seed ^ mix(h)));
  }

  uint64_t next() {
    state_ += 0x9e3779b97f4a7c15ull;
    return mix(state_);
  }
  // Uniform in [0, 1) with 53 random bits.
  double uniform() { return double(next() >> 11) * 0x1.0p-53; }
  // Standard normal by Box-Muller (the spare value is kept for the next call).
  double normal() {
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    double u1 = 1.0 - uniform(), u2 = uniform();  // u1 in (0, 1]: log is finite
    double r = std::sqrt(-2.0 * std::log(u1)), a = 2.0 * M_PI * u2;
    spare_ = r * std::sin(a);
    has_spare_ = true;
    return r * std::cos(a);
  }
  // Uniform integer in [0, n).
  uint64_t below(uint64_t n) { return n ? uint64_t(uniform() * double(n)) % n : 0; }

 private:
  static uint64_t mix(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  uint64_t state_;
  double spare_ = 0;
  bool has_spare_ = false;
};

}  // namespace upcycle
