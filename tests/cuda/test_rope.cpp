// Rotary embeddings on the GPU against trainer/ops in double, rotating by the same fp32 table.
#include <doctest/doctest.h>

#include <cmath>
#include <type_traits>

#include "cuda/ops/rope.hpp"
#include "cuda_check.hpp"
#include "trainer/ops/rope.hpp"

namespace upcycle::test {

namespace {

constexpr int64_t kMaxPositions = 64;
constexpr double kTheta = 10000;

// The CPU's double table holding the fp32 table's values, so both sides turn by the same angles.
ops::RopeTable<double> widened(const ops::RopeTable<float>& table) {
  ops::RopeTable<double> wide(table.head_dim, table.max_positions, kTheta);
  wide.cos.assign(table.cos.begin(), table.cos.end());
  wide.sin.assign(table.sin.begin(), table.sin.end());
  return wide;
}

template <class T>
void check_rope(int64_t N, int64_t n_heads, int64_t D, uint64_t seed) {
  const ops::RopeTable<float> host(D, kMaxPositions, kTheta);
  const cuda::RopeTable table(host);
  const ops::RopeTable<double> ref = widened(host);
  const size_t size = size_t(N * n_heads * D);
  const std::vector<int32_t> pos = uniform_ints(size_t(N), seed, 0, int32_t(kMaxPositions));
  const std::vector<float> x = stored<T>(uniform(size, seed + 1)), d_out = stored<T>(uniform(size, seed + 2));
  const cuda::DeviceBuffer<int32_t> d_pos = to_device_ints(pos);
  const cuda::DeviceBuffer<T> d_x = to_device<T>(x), d_d_out = to_device<T>(d_out);

  cuda::DeviceBuffer<T> out = poisoned<T>(size);
  cuda::rope_forward(out.data(), d_x.data(), d_pos.data(), table, N, n_heads);
  std::vector<double> want_out(size);
  ops::rope_forward(want_out.data(), widen(x).data(), pos.data(), ref, N, n_heads);
  const std::vector<float> got_out = to_host(out);
  check_close(widen(got_out), want_out, tolerance<T>(), "out");

  // In place: the same bits.
  cuda::DeviceBuffer<T> in_place = to_device<T>(x);
  cuda::rope_forward(in_place.data(), in_place.data(), d_pos.data(), table, N, n_heads);
  CHECK(to_host(in_place) == got_out);

  // backward, into a random start
  const std::vector<float> start = stored<T>(uniform(size, seed + 3));
  cuda::DeviceBuffer<T> d_in = to_device<T>(start);
  cuda::rope_backward(d_in.data(), d_d_out.data(), d_pos.data(), table, N, n_heads);
  std::vector<double> want_in = widen(start);
  ops::rope_backward(want_in.data(), widen(d_out).data(), pos.data(), ref, N, n_heads);
  check_close(widen(to_host(d_in)), want_in, tolerance<T>(), "d_in");
}

}  // namespace

TEST_CASE("rope: forward (also in place) and backward, float and bf16") {
  // D = 10: five pairs a head; 5 heads of D = 128: 320 pairs a token, more than a block's 256.
  SUBCASE("float") {
    check_rope<float>(37, 3, 10, 1);
    check_rope<float>(5, 5, 128, 2);
  }
  SUBCASE("bf16") {
    check_rope<cuda::bf16>(37, 3, 10, 3);
    check_rope<cuda::bf16>(5, 5, 128, 4);
  }
}

TEST_CASE("rope: a position outside the table turns by NaN") {
  const int64_t D = 8, n_heads = 2;
  const ops::RopeTable<float> host(D, kMaxPositions, kTheta);
  const cuda::RopeTable table(host);
  const std::vector<int32_t> pos = {1, int32_t(kMaxPositions)};
  const std::vector<float> x = uniform(size_t(2 * n_heads * D), 5);
  const cuda::DeviceBuffer<int32_t> d_pos = to_device_ints(pos);
  const cuda::DeviceBuffer<float> d_x = to_device<float>(x);
  cuda::DeviceBuffer<float> out = poisoned<float>(x.size());
  cuda::rope_forward(out.data(), d_x.data(), d_pos.data(), table, 2, n_heads);
  const std::vector<float> got = to_host(out);
  std::vector<double> want(size_t(n_heads * D));
  ops::rope_forward(want.data(), widen(x).data(), pos.data(), widened(host), 1, n_heads);
  check_close(widen(std::vector<float>(got.begin(), got.begin() + n_heads * D)), want, tolerance<float>(), "token 0");
  for (int64_t i = n_heads * D; i < 2 * n_heads * D; ++i) CHECK(std::isnan(got[size_t(i)]));
}

}  // namespace upcycle::test
