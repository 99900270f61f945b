#include "cuda_check.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>

namespace upcycle::test {

std::vector<float> uniform(size_t n, uint64_t seed, float lo, float hi) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> x(n);
  for (float& v : x) v = dist(rng);
  return x;
}

std::vector<int32_t> routing(int64_t N, int64_t k, int64_t E, int32_t idle, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> experts;
  for (int32_t e = 0; e < E; ++e)
    if (e != idle) experts.push_back(e);
  std::vector<int32_t> idx;
  for (int64_t n = 0; n < N; ++n) {
    std::shuffle(experts.begin(), experts.end(), rng);
    idx.insert(idx.end(), experts.begin(), experts.begin() + k);
  }
  return idx;
}

std::vector<int32_t> uniform_ints(size_t n, uint64_t seed, int32_t lo, int32_t hi) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> dist(lo, hi - 1);
  std::vector<int32_t> x(n);
  for (int32_t& v : x) v = dist(rng);
  return x;
}

std::vector<float> round_bf16(const std::vector<float>& x) {
  std::vector<float> out(x.size());
  for (size_t i = 0; i < x.size(); ++i) out[i] = __bfloat162float(__float2bfloat16_rn(x[i]));
  return out;
}

template <class T>
cuda::DeviceBuffer<T> to_device(const std::vector<float>& x) {
  std::vector<T> host(x.size());
  for (size_t i = 0; i < x.size(); ++i) host[i] = T(x[i]);
  cuda::DeviceBuffer<T> d;
  d.upload(host);
  return d;
}

template <class T>
std::vector<float> to_host(const cuda::DeviceBuffer<T>& d) {
  const std::vector<T> host = d.download();
  std::vector<float> out(host.size());
  for (size_t i = 0; i < host.size(); ++i) out[i] = float(host[i]);
  return out;
}

cuda::DeviceBuffer<int32_t> to_device_ints(const std::vector<int32_t>& x) {
  cuda::DeviceBuffer<int32_t> d;
  d.upload(x);
  return d;
}

template <class T>
cuda::DeviceBuffer<T> poisoned(size_t n) {
  cuda::DeviceBuffer<T> d(n);
  if (n) UPCYCLE_CUDA(cudaMemset(d.data(), 0xFF, n * sizeof(T)));
  return d;
}

template <>
double tolerance<float>() {
  return 1e-5;
}
template <>
double tolerance<cuda::bf16>() {
  return 1e-2;
}

namespace {

template <class F>
void check_close_impl(const std::vector<F>& got, const std::vector<F>& want, double tol, const std::string& what) {
  REQUIRE_MESSAGE(got.size() == want.size(), what << ": " << got.size() << " elements, expected " << want.size());
  double sq = 0;
  for (F w : want) sq += double(w) * double(w);
  const double rms = want.empty() ? 0 : std::sqrt(sq / double(want.size()));
  int reported = 0;
  size_t bad = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double g = double(got[i]), w = double(want[i]);
    const double bound = tol * std::max(std::fabs(w), rms);
    if (std::isfinite(g) && std::fabs(g - w) <= bound) continue;
    ++bad;
    if (reported++ < 5) MESSAGE(what << "[" << i << "]: got " << g << ", expected " << w << " (bound " << bound << ")");
  }
  CHECK_MESSAGE(bad == 0, what << ": " << bad << " of " << got.size() << " elements outside tolerance " << tol);
}

}  // namespace

void check_close(const std::vector<float>& got, const std::vector<float>& want, double tol, const std::string& what) {
  check_close_impl(got, want, tol, what);
}
void check_close(const std::vector<double>& got, const std::vector<double>& want, double tol,
                 const std::string& what) {
  check_close_impl(got, want, tol, what);
}

template cuda::DeviceBuffer<float> to_device<float>(const std::vector<float>&);
template cuda::DeviceBuffer<cuda::bf16> to_device<cuda::bf16>(const std::vector<float>&);
template std::vector<float> to_host<float>(const cuda::DeviceBuffer<float>&);
template std::vector<float> to_host<cuda::bf16>(const cuda::DeviceBuffer<cuda::bf16>&);
template cuda::DeviceBuffer<float> poisoned<float>(size_t);
template cuda::DeviceBuffer<cuda::bf16> poisoned<cuda::bf16>(size_t);
template cuda::DeviceBuffer<int32_t> poisoned<int32_t>(size_t);
template cuda::DeviceBuffer<int64_t> poisoned<int64_t>(size_t);

}  // namespace upcycle::test
