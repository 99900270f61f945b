// What the CUDA tests share: seeded random inputs (never zeros), bf16 rounding so the CPU
// reference sees exactly the GPU's inputs, device copies, outputs poisoned with NaN before a
// kernel runs (an element it fails to write shows), and the comparison against the CPU op.
#pragma once
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "cuda/runtime.hpp"

namespace upcycle::test {

// Seeded values uniform in [lo, hi).
std::vector<float> uniform(size_t n, uint64_t seed, float lo = -1.f, float hi = 1.f);
// Seeded integers uniform in [lo, hi).
std::vector<int32_t> uniform_ints(size_t n, uint64_t seed, int32_t lo, int32_t hi);

// Each token's k distinct experts, drawn from all but `idle`, which gets no tokens: the MoE
// blocks' tests' routing [N, k].
std::vector<int32_t> routing(int64_t N, int64_t k, int64_t E, int32_t idle, uint64_t seed);

// Each value rounded to bf16 (nearest even) and back: the CPU reference's inputs for a bf16 run.
std::vector<float> round_bf16(const std::vector<float>& x);

// The values a device array of T holds for x: what the CPU reference must see for the inputs
// to be the same.
template <class T>
std::vector<float> stored(const std::vector<float>& x) {
  if constexpr (std::is_same_v<T, cuda::bf16>)
    return round_bf16(x);
  else
    return x;
}

// float values as the double the CPU reference computes in, and back.
inline std::vector<double> widen(const std::vector<float>& x) { return {x.begin(), x.end()}; }
inline std::vector<float> narrow(const std::vector<double>& x) { return {x.begin(), x.end()}; }

// Whether two arrays hold the same bits: the determinism checks.
template <class T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

// Host values to device storage T (float or bf16), and back to float.
template <class T>
cuda::DeviceBuffer<T> to_device(const std::vector<float>& x);
template <class T>
std::vector<float> to_host(const cuda::DeviceBuffer<T>& d);
cuda::DeviceBuffer<int32_t> to_device_ints(const std::vector<int32_t>& x);

// A device buffer of n elements of T, every byte 0xFF (NaN for float and bf16, -1 for ints).
template <class T>
cuda::DeviceBuffer<T> poisoned(size_t n);

// The tolerance of a storage type: 1e-5 for float, 1e-2 for bf16 (the bounds).
template <class T>
double tolerance();

// CHECKs every element: |got − want| <= tol · max(|want|, rms(want)) (the RMS floor keeps
// elements near zero from demanding more than the tensor's scale allows), and no NaN. Reports
// the first few offenders with `what`.
void check_close(const std::vector<float>& got, const std::vector<float>& want, double tol, const std::string& what);
void check_close(const std::vector<double>& got, const std::vector<double>& want, double tol, const std::string& what);

}  // namespace upcycle::test
