// bf16 products on oneDNN against the f32 op on the same bf16-rounded values, and their bits
// the same on every call.
#include <doctest/doctest.h>

#include <array>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/dtype.hpp"
#include "core/random.hpp"
#include "trainer/ops/bf16_matmul.hpp"
#include "trainer/ops/matmul.hpp"

using namespace upcycle;
using namespace upcycle::ops;

namespace {

const std::vector<std::array<int64_t, 3>> kShapes = {{1, 64, 48}, {37, 96, 130}, {256, 576, 200}};  // N, I, O

// n random bf16 values in [-1, 1), and the same as f32.
struct Bf16Values {
  std::vector<uint16_t> bits;
  std::vector<float> f32;
  Bf16Values(Rng& rng, int64_t n) : bits(size_t(n)), f32(size_t(n)) {
    for (uint16_t& b : bits) b = f32_to_bf16(float(rng.uniform() * 2 - 1));
    convert(DType::BF16, bits.data(), DType::F32, f32.data(), bits.size());
  }
};

// The largest |got - want| over sqrt(sum length): f32 sums of exact products, in another order.
double worst_error(const std::vector<float>& got, const std::vector<float>& want, int64_t summed) {
  double worst = 0;
  for (size_t i = 0; i < want.size(); ++i) worst = std::max(worst, double(std::fabs(got[i] - want[i])) / std::sqrt(double(summed)));
  return worst;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

}  // namespace

TEST_CASE("bf16_matmul: the f32 product of the bf16 values, the same bits every call") {
  Rng rng(1);
  for (auto [N, I, O] : kShapes) {
    CAPTURE(N);
    CAPTURE(I);
    CAPTURE(O);
    const Bf16Values in(rng, N * I), w(rng, O * I);
    std::vector<float> want(size_t(N * O)), got(want.size()), again(want.size());
    matmul_forward<float>(want.data(), in.f32.data(), w.f32.data(), nullptr, N, I, O);
    bf16_matmul_forward(got.data(), in.bits.data(), w.bits.data(), N, I, O);
    CHECK(worst_error(got, want, I) < 1e-5);
    bf16_matmul_forward(again.data(), in.bits.data(), w.bits.data(), N, I, O);
    CHECK(same_bits(got, again));
  }
  std::vector<float> out(6, 1.0f);
  bf16_matmul_forward(out.data(), nullptr, nullptr, 2, 0, 3);  // no inner dimension: zeros
  CHECK(out == std::vector<float>(6, 0.0f));
  CHECK(!bf16_matmul_isa().empty());
}

TEST_CASE("bf16_matmul: the backward to the inputs adds the f32 product of the bf16 values, the same bits every call") {
  Rng rng(2);
  for (auto [N, I, O] : kShapes) {
    CAPTURE(N);
    CAPTURE(I);
    CAPTURE(O);
    const Bf16Values dy(rng, N * O), w(rng, O * I), start(rng, N * I);
    std::vector<float> want = start.f32, got = start.f32, again = start.f32;  // added into
    matmul_backward<float>(want.data(), nullptr, nullptr, dy.f32.data(), nullptr, w.f32.data(), N, I, O);
    bf16_matmul_backward_input(got.data(), dy.bits.data(), w.bits.data(), N, I, O);
    CHECK(worst_error(got, want, O) < 1e-5);
    bf16_matmul_backward_input(again.data(), dy.bits.data(), w.bits.data(), N, I, O);
    CHECK(same_bits(got, again));
  }
  std::vector<float> d_in(6, 1.0f);
  bf16_matmul_backward_input(d_in.data(), nullptr, nullptr, 2, 3, 0);  // no inner dimension: nothing added
  CHECK(d_in == std::vector<float>(6, 1.0f));
}

TEST_CASE("bf16_matmul: the backward to the weight adds the f32 product of the bf16 values, the same bits every call") {
  Rng rng(3);
  for (auto [N, I, O] : kShapes) {
    CAPTURE(N);
    CAPTURE(I);
    CAPTURE(O);
    const Bf16Values dy(rng, N * O), in(rng, N * I), start(rng, O * I);
    std::vector<float> want = start.f32, got = start.f32, again = start.f32;  // added into
    matmul_backward<float>(nullptr, want.data(), nullptr, dy.f32.data(), in.f32.data(), nullptr, N, I, O);
    bf16_matmul_backward_weight(got.data(), dy.bits.data(), in.bits.data(), N, I, O);
    CHECK(worst_error(got, want, N) < 1e-5);
    bf16_matmul_backward_weight(again.data(), dy.bits.data(), in.bits.data(), N, I, O);
    CHECK(same_bits(got, again));
  }
  std::vector<float> d_W(6, 1.0f);
  bf16_matmul_backward_weight(d_W.data(), nullptr, nullptr, 0, 3, 2);  // no tokens: nothing added
  CHECK(d_W == std::vector<float>(6, 1.0f));
}
