// The LoRA-MoE block (ops/lora_moe.hpp) against the MoE block over each expert's merged matrices
// W + scale·B_e·A_e (ops/moe.hpp, itself checked against finite differences): outputs, the
// input's and routing weights' gradients, and A's and B's by the chain rule from the merged
// weights'; A's and B's also against central differences.
#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <numeric>

#include "tests/common/fixtures.hpp"
#include "tests/trainer/gradcheck.hpp"
#include "tests/trainer/lora_reference.hpp"
#include "trainer/ops/lora_moe.hpp"
#include "trainer/ops/moe.hpp"

using namespace upcycle;
using test::max_relative_error;

namespace {

constexpr int64_t N = 7, H = 6, I = 5, E = 3, K = 2, R = 2;
constexpr float kScale = 0.8f;

ops::StoredMatrix f32_matrix(const std::vector<float>& W, int64_t rows, int64_t cols) {
  return {DType::F32, reinterpret_cast<const std::byte*>(W.data()), rows, cols};
}

// A base FFN and three experts' terms: expert 1 has none on down, expert 2 gets no tokens.
struct Block {
  std::vector<float> gate = test::random_values(size_t(I * H), 1), up = test::random_values(size_t(I * H), 2),
                     down = test::random_values(size_t(H * I), 3);
  // [matrix: gate, up, down][expert] A and B, and their gradients (added into)
  std::array<std::array<std::vector<float>, E>, 3> a, b, d_a, d_b;
  std::array<std::array<ops::LowRankTerm, E>, 3> terms;
  std::vector<float> x = test::random_values(size_t(N * H), 4), w = test::random_values(size_t(N * K), 5),
                     d_out = test::random_values(size_t(N * H), 6);
  std::vector<int32_t> idx = {0, 1, 1, 0, 0, 1, 1, 0, 0, 1, 1, 0, 0, 1};  // [N,K], never expert 2

  Block() {
    const std::array<std::pair<int64_t, int64_t>, 3> io = {{{H, I}, {H, I}, {I, H}}};  // in, out
    uint64_t seed = 10;
    for (size_t m = 0; m < 3; ++m)
      for (size_t e = 0; e < size_t(E); ++e) {
        const auto [in, out] = io[m];
        a[m][e] = test::random_values(size_t(R * in), seed++);
        b[m][e] = test::random_values(size_t(out * R), seed++);
        d_a[m][e] = test::random_values(a[m][e].size(), seed++);
        d_b[m][e] = test::random_values(b[m][e].size(), seed++);
        if (m == 2 && e == 1) continue;  // no term
        terms[m][e] = {a[m][e].data(), b[m][e].data(), kScale, R, d_a[m][e].data(), d_b[m][e].data(), {}};
      }
    for (float& v : w) v = std::fabs(v);
  }
  ops::LoraExperts experts() const {
    return {f32_matrix(gate, I, H), f32_matrix(up, I, H), f32_matrix(down, H, I), terms[0].data(), terms[1].data(),
            terms[2].data()};
  }
  ops::MoeShape shape() const { return {N, H, I, E, K}; }
  // Expert e's matrix m merged (the base alone where it has no term).
  std::vector<float> merged(size_t m, size_t e) const {
    const std::vector<float>& W = m == 0 ? gate : m == 1 ? up : down;
    if (!terms[m][e].a) return W;
    return m == 2 ? test::merged(W, a[m][e], b[m][e], kScale, I, H, R) : test::merged(W, a[m][e], b[m][e], kScale, H, I, R);
  }
  std::vector<float> forward() const {
    std::vector<float> out(size_t(N * H));
    ops::LoraMoeSaved saved;
    ops::lora_moe_forward(out.data(), saved, x.data(), idx.data(), w.data(), experts(), shape());
    return out;
  }
};

}  // namespace

TEST_CASE("lora_moe: forward and backward equal the MoE over each expert's merged matrices") {
  Block blk;
  std::array<std::array<std::vector<float>, E>, 3> W;  // merged, and their gradients
  std::array<std::array<std::vector<float>, E>, 3> d_W;
  std::array<std::array<float*, E>, 3> d_W_ptr;
  std::array<std::array<const float*, E>, 3> W_ptr;
  for (size_t m = 0; m < 3; ++m)
    for (size_t e = 0; e < size_t(E); ++e) {
      W[m][e] = blk.merged(m, e);
      d_W[m][e].assign(W[m][e].size(), 0.0f);
      W_ptr[m][e] = W[m][e].data();
      d_W_ptr[m][e] = d_W[m][e].data();
    }
  const ops::ExpertWeights<float> reference{W_ptr[0].data(), W_ptr[1].data(), W_ptr[2].data()};
  std::vector<float> want(size_t(N * H));
  ops::MoeSaved<float> want_saved;
  ops::moe_forward<float>(want.data(), want_saved, blk.x.data(), blk.idx.data(), blk.w.data(), reference, blk.shape());

  std::vector<float> got(size_t(N * H));
  ops::LoraMoeSaved saved;
  ops::lora_moe_forward(got.data(), saved, blk.x.data(), blk.idx.data(), blk.w.data(), blk.experts(), blk.shape());
  CHECK(max_relative_error(got, want) < 1e-5);

  std::vector<float> want_dx = test::random_values(size_t(N * H), 7), got_dx = want_dx;  // added into
  std::vector<float> want_dw = test::random_values(size_t(N * K), 8), got_dw = want_dw;
  ops::moe_backward<float>(want_dx.data(), want_dw.data(), {d_W_ptr[0].data(), d_W_ptr[1].data(), d_W_ptr[2].data()},
                           blk.d_out.data(), blk.w.data(), reference, want_saved, blk.shape());
  auto want_da = blk.d_a, want_db = blk.d_b;
  for (size_t m = 0; m < 3; ++m)
    for (size_t e = 0; e < size_t(E); ++e) {
      if (!blk.terms[m][e].a) continue;
      const int64_t in = m == 2 ? I : H, out = m == 2 ? H : I;
      test::chain_rule(want_da[m][e], want_db[m][e], d_W[m][e], blk.a[m][e], blk.b[m][e], kScale, in, out, R);
    }
  ops::lora_moe_backward(got_dx.data(), got_dw.data(), blk.d_out.data(), blk.w.data(), blk.experts(), saved,
                         blk.shape());
  CHECK(max_relative_error(got_dx, want_dx) < 1e-5);
  CHECK(max_relative_error(got_dw, want_dw) < 1e-5);
  for (size_t m = 0; m < 3; ++m)
    for (size_t e = 0; e < size_t(E); ++e) {
      CAPTURE(m);
      CAPTURE(e);
      CHECK(max_relative_error(blk.d_a[m][e], want_da[m][e]) < 1e-5);  // untouched where no term or no token
      CHECK(max_relative_error(blk.d_b[m][e], want_db[m][e]) < 1e-5);
    }
}

TEST_CASE("lora_moe: A's and B's gradients match central differences of the projected output") {
  Block blk;
  const auto start_da = blk.d_a, start_db = blk.d_b;
  ops::LoraMoeSaved saved;
  std::vector<float> out(size_t(N * H));
  ops::lora_moe_forward(out.data(), saved, blk.x.data(), blk.idx.data(), blk.w.data(), blk.experts(), blk.shape());
  ops::lora_moe_backward(nullptr, nullptr, blk.d_out.data(), blk.w.data(), blk.experts(), saved, blk.shape());
  for (size_t m = 0; m < 3; ++m)
    for (size_t e = 0; e < 2; ++e) {  // expert 2 has no tokens
      if (!blk.terms[m][e].a) continue;
      for (int side = 0; side < 2; ++side) {
        CAPTURE(m);
        CAPTURE(e);
        CAPTURE(side);
        std::vector<float>& v = side ? blk.b[m][e] : blk.a[m][e];
        const std::vector<float>& got = side ? blk.d_b[m][e] : blk.d_a[m][e];
        const std::vector<float>& start = side ? start_db[m][e] : start_da[m][e];
        // loss = Σ out ⊙ d_out over the f32 op, with v set from x in place (the terms point into
        // it); h large enough for f32's rounding.
        test::Vec x = test::widen(v);
        auto loss = [&] {
          std::copy(x.begin(), x.end(), v.begin());
          const std::vector<float> y = blk.forward();
          return std::inner_product(y.begin(), y.end(), blk.d_out.begin(), 0.0);
        };
        const test::Vec numeric = test::numeric_gradient(x, loss, 1e-2);
        std::copy(x.begin(), x.end(), v.begin());  // x is restored, v not yet
        test::Vec analytic(v.size());
        for (size_t i = 0; i < v.size(); ++i) analytic[i] = double(got[i]) - start[i];
        test::check_gradient("lora_moe term", analytic, numeric, 2e-3);
      }
    }
}
