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

TEST_CASE("bf16_matmul: the f32 product of the bf16 values, the same bits every call") {
  Rng rng(1);
  for (auto [N, I, O] : std::vector<std::array<int64_t, 3>>{{1, 64, 48}, {37, 96, 130}, {256, 576, 200}}) {
    CAPTURE(N);
    CAPTURE(I);
    CAPTURE(O);
    std::vector<uint16_t> in(size_t(N * I)), w(size_t(O * I));
    for (auto* v : {&in, &w})
      for (uint16_t& b : *v) b = f32_to_bf16(float(rng.uniform() * 2 - 1));
    std::vector<float> in32(in.size()), w32(w.size()), want(size_t(N * O)), got(want.size()), again(want.size());
    convert(DType::BF16, in.data(), DType::F32, in32.data(), in.size());
    convert(DType::BF16, w.data(), DType::F32, w32.data(), w.size());
    matmul_forward<float>(want.data(), in32.data(), w32.data(), nullptr, N, I, O);
    bf16_matmul_forward(got.data(), in.data(), w.data(), N, I, O);
    double worst = 0;
    for (size_t i = 0; i < want.size(); ++i) worst = std::max(worst, double(std::fabs(got[i] - want[i])) / std::sqrt(double(I)));
    CHECK(worst < 1e-5);  // f32 sums of exact products, in another order
    bf16_matmul_forward(again.data(), in.data(), w.data(), N, I, O);
    CHECK(std::memcmp(got.data(), again.data(), got.size() * sizeof(float)) == 0);
  }
  std::vector<float> out(6, 1.0f);
  bf16_matmul_forward(out.data(), nullptr, nullptr, 2, 0, 3);  // no inner dimension: zeros
  CHECK(out == std::vector<float>(6, 0.0f));
  CHECK(!bf16_matmul_isa().empty());
}

TEST_CASE("bf16_matmul: the backward to the inputs adds the f32 product of the bf16 values, the same bits every call") {
  Rng rng(2);
  for (auto [N, I, O] : std::vector<std::array<int64_t, 3>>{{1, 64, 48}, {37, 96, 130}, {256, 576, 200}}) {
    CAPTURE(N);
    CAPTURE(I);
    CAPTURE(O);
    std::vector<uint16_t> dy(size_t(N * O)), w(size_t(O * I));
    for (auto* v : {&dy, &w})
      for (uint16_t& b : *v) b = f32_to_bf16(float(rng.uniform() * 2 - 1));
    std::vector<float> dy32(dy.size()), w32(w.size()), start(size_t(N * I));
    convert(DType::BF16, dy.data(), DType::F32, dy32.data(), dy.size());
    convert(DType::BF16, w.data(), DType::F32, w32.data(), w.size());
    for (float& v : start) v = float(rng.uniform());
    std::vector<float> want = start, got = start, again = start;  // added into
    matmul_backward<float>(want.data(), nullptr, nullptr, dy32.data(), nullptr, w32.data(), N, I, O);
    bf16_matmul_backward_input(got.data(), dy.data(), w.data(), N, I, O);
    double worst = 0;
    for (size_t i = 0; i < want.size(); ++i) worst = std::max(worst, double(std::fabs(got[i] - want[i])) / std::sqrt(double(O)));
    CHECK(worst < 1e-5);
    bf16_matmul_backward_input(again.data(), dy.data(), w.data(), N, I, O);
    CHECK(std::memcmp(got.data(), again.data(), got.size() * sizeof(float)) == 0);
  }
  std::vector<float> d_in(6, 1.0f);
  bf16_matmul_backward_input(d_in.data(), nullptr, nullptr, 2, 3, 0);  // no inner dimension: nothing added
  CHECK(d_in == std::vector<float>(6, 1.0f));
}
