// Linear layers over stored-dtype weights: every dtype and both paths (the dot products of
// decoding, the widened panels of longer inputs) against the f32 op on the same values widened,
// and the dot path's bits the same for any thread count.
#include <doctest/doctest.h>

#include <omp.h>

#include <cmath>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "core/quant.hpp"
#include "tests/common/fixtures.hpp"
#include "tests/common/gguf_writer.hpp"
#include "trainer/ops/matmul.hpp"
#include "trainer/ops/stored_matmul.hpp"

using namespace upcycle;
using namespace upcycle::ops;

namespace {

// W's values stored as t (tests/common's encoder: Q8_0 by round-to-nearest blocks).
std::vector<std::byte> stored(DType t, const std::vector<float>& w) {
  using namespace test::ggml;
  const uint32_t type = t == DType::F32 ? F32 : t == DType::BF16 ? BF16 : t == DType::F16 ? F16 : t == DType::Q8_0 ? Q8_0
                        : t == DType::Q4_0 ? Q4_0 : t == DType::Q4_1 ? Q4_1 : t == DType::Q4_K ? Q4_K : Q6_K;
  const std::string bytes = test::encode(type, w);
  const auto* first = reinterpret_cast<const std::byte*>(bytes.data());
  return {first, first + bytes.size()};
}

double max_relative_error(const std::vector<float>& a, const std::vector<float>& b) {
  double worst = 0, scale = 0;
  for (float x : b) scale = std::max(scale, double(std::fabs(x)));
  for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::fabs(double(a[i]) - b[i]) / scale);
  return worst;
}

}  // namespace

const DType kAll[] = {DType::F32, DType::BF16, DType::F16, DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q4_K, DType::Q6_K};

TEST_CASE("stored_matmul: every dtype and both paths compute the f32 product of the stored values") {
  for (DType t : kAll)
    for (int64_t I : {96, 100, 512})
      for (int64_t N : {int64_t(1), int64_t(3), kDotRows, kDotRows + 1, int64_t(37)}) {
        if (I % int64_t(dtype_info(t).block_elems)) continue;
        const int64_t O = kPanelRows + 44;  // a panel and a part
        CAPTURE(dtype_name(t));
        CAPTURE(I);
        CAPTURE(N);
        const std::vector<float> w = test::random_values(size_t(O * I), 1), x = test::random_values(size_t(N * I), 2),
                                 bias = test::random_values(size_t(O), 3);
        const std::vector<std::byte> bytes = stored(t, w);
        std::vector<float> widened(w.size()), want(size_t(N * O)), got(size_t(N * O));
        dequantize(t, bytes.data(), bytes.size(), widened.data(), w.size());
        matmul_forward<float>(want.data(), x.data(), widened.data(), bias.data(), N, I, O);
        const StoredMatrix W{t, bytes.data(), O, I};
        stored_matmul_forward(got.data(), x.data(), W, bias.data(), N);
        CHECK(max_relative_error(got, want) < 1e-5);
        if (t != DType::F32) CHECK(max_relative_error(widened, w) > 0);  // the stored values are not w's: a test of the dtype
      }
}

TEST_CASE("stored_matmul: bf16 products of every dtype (bf16 in place, others a panel at a time) follow the f32 product of the bf16 values") {
  const int64_t O = kPanelRows + 44, I = 512, N = 37;
  // v rounded to bf16 and back.
  auto rounded = [](const std::vector<float>& v) {
    std::vector<uint16_t> b(v.size());
    std::vector<float> out(v.size());
    convert(DType::F32, v.data(), DType::BF16, b.data(), v.size());
    convert(DType::BF16, b.data(), DType::F32, out.data(), v.size());
    return out;
  };
  for (DType t : kAll) {
    CAPTURE(dtype_name(t));
    const std::vector<float> w = test::random_values(size_t(O * I), 4), x = test::random_values(size_t(N * I), 5),
                             d_out = test::random_values(size_t(N * O), 6);
    const std::vector<std::byte> bytes = stored(t, w);
    std::vector<float> widened(w.size());
    dequantize(t, bytes.data(), bytes.size(), widened.data(), w.size());
    const std::vector<float> w16 = rounded(widened);
    const StoredMatrix W{t, bytes.data(), O, I, true};

    std::vector<float> want(size_t(N * O)), got(want.size());
    matmul_forward<float>(want.data(), rounded(x).data(), w16.data(), nullptr, N, I, O);
    stored_matmul_forward(got.data(), x.data(), W, nullptr, N);
    CHECK(max_relative_error(got, want) < 1e-5);

    std::vector<float> want_in = test::random_values(size_t(N * I), 7), got_in = want_in;  // added into
    matmul_backward<float>(want_in.data(), nullptr, nullptr, rounded(d_out).data(), nullptr, w16.data(), N, I, O);
    stored_matmul_backward_input(got_in.data(), d_out.data(), W, N);
    CHECK(max_relative_error(got_in, want_in) < 1e-5);
  }
}

TEST_CASE("stored_matmul: the dot path gives the same bits for any thread count, and bad shapes are refused") {
  const int64_t O = 300, I = 128, N = 2;
  const std::vector<float> w = test::random_values(size_t(O * I), 4), x = test::random_values(size_t(N * I), 5);
  const std::vector<std::byte> bytes = stored(DType::BF16, w);
  const StoredMatrix W{DType::BF16, bytes.data(), O, I};
  std::vector<float> one(size_t(N * O)), two(size_t(N * O));
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  stored_matmul_forward(one.data(), x.data(), W, nullptr, N);
  omp_set_num_threads(2);
  stored_matmul_forward(two.data(), x.data(), W, nullptr, N);
  omp_set_num_threads(threads);
  CHECK(std::memcmp(one.data(), two.data(), one.size() * sizeof(float)) == 0);

  CHECK_THROWS_AS(stored_matmul_forward(one.data(), x.data(), {DType::Q8_0, bytes.data(), O, 100}, nullptr, 1), std::invalid_argument);
  CHECK_THROWS_AS(stored_matmul_forward(one.data(), x.data(), {DType::Q4_K, bytes.data(), O, 100}, nullptr, 1), std::invalid_argument);
  CHECK_THROWS_AS(stored_matmul_forward(one.data(), x.data(), {DType::F64, bytes.data(), O, I}, nullptr, 1), std::invalid_argument);
  CHECK_THROWS_AS(stored_matmul_forward(one.data(), x.data(), {DType::BF16, nullptr, O, I}, nullptr, 1), std::invalid_argument);
}

TEST_CASE("stored_matmul: f32 weights give the f32 matmul's bits on both paths") {
  const int64_t O = 70, I = 96;
  const std::vector<float> w = test::random_values(size_t(O * I), 8), bias = test::random_values(size_t(O), 9);
  const StoredMatrix W{DType::F32, reinterpret_cast<const std::byte*>(w.data()), O, I};
  for (int64_t N : {int64_t(1), kDotRows + 3}) {
    CAPTURE(N);
    const std::vector<float> x = test::random_values(size_t(N * I), 10);
    std::vector<float> want(size_t(N * O)), got(size_t(N * O));
    matmul_forward<float>(want.data(), x.data(), w.data(), bias.data(), N, I, O);
    stored_matmul_forward(got.data(), x.data(), W, bias.data(), N);
    CHECK(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)) == 0);
  }
}

TEST_CASE("stored_matmul: the AVX-512 dot products give the portable loops' bits") {
  for (DType t : kAll)
    for (int64_t n : {int64_t(32), int64_t(4096), int64_t(4100)}) {
      if (n % int64_t(dtype_info(t).block_elems)) continue;
      CAPTURE(dtype_name(t));
      CAPTURE(n);
      const std::vector<float> w = test::random_values(size_t(n), 6), x = test::random_values(size_t(n), 7);
      const std::vector<std::byte> bytes = stored(t, w);
      const float fast = detail::row_dot(t, bytes.data(), x.data(), n), portable = detail::row_dot(t, bytes.data(), x.data(), n, true);
      CHECK(std::memcmp(&fast, &portable, sizeof fast) == 0);
    }
}

TEST_CASE("stored_matmul: a 4- or 6-bit row's dot is the f32 dot of the row widened, to rounding") {
  for (DType t : {DType::Q4_0, DType::Q4_1, DType::Q4_K, DType::Q6_K}) {
    CAPTURE(dtype_name(t));
    const int64_t n = 1024;
    const std::vector<float> w = test::random_values(size_t(n), 14), x = test::random_values(size_t(n), 15);
    const std::vector<std::byte> bytes = stored(t, w);
    std::vector<float> widened(static_cast<size_t>(n));
    dequantize(t, bytes.data(), bytes.size(), widened.data(), uint64_t(n));
    double want = 0, scale = 0;
    for (int64_t i = 0; i < n; ++i) want += double(widened[size_t(i)]) * x[size_t(i)], scale += std::fabs(widened[size_t(i)] * x[size_t(i)]);
    CHECK(std::fabs(detail::row_dot(t, bytes.data(), x.data(), n) - want) < 1e-6 * scale);
  }
}

TEST_CASE("stored_matmul: the input's gradient and the row lookup against the f32 ops on the widened values") {
  const int64_t O = kPanelRows + 44, I = 256, N = 5;
  for (DType t : kAll) {
    CAPTURE(dtype_name(t));
    const std::vector<float> w = test::random_values(size_t(O * I), 11), d_out = test::random_values(size_t(N * O), 12);
    const std::vector<std::byte> bytes = stored(t, w);
    std::vector<float> widened(w.size());
    dequantize(t, bytes.data(), bytes.size(), widened.data(), w.size());
    const StoredMatrix W{t, bytes.data(), O, I};

    std::vector<float> want = test::random_values(size_t(N * I), 13), got = want, bf16 = want;  // added into
    matmul_backward<float>(want.data(), nullptr, nullptr, d_out.data(), nullptr, widened.data(), N, I, O);
    stored_matmul_backward_input(got.data(), d_out.data(), W, N);
    CHECK(max_relative_error(got, want) < 1e-5);
    if (t == DType::BF16) {  // bf16 products: d_out rounded to bf16 too
      stored_matmul_backward_input(bf16.data(), d_out.data(), StoredMatrix{t, bytes.data(), O, I, true}, N);
      CHECK(max_relative_error(bf16, want) < 1e-2);
      CHECK(bf16 != got);
    }

    const std::vector<int32_t> ids = {3, int32_t(O - 1), 0, 3};
    std::vector<float> rows(ids.size() * size_t(I));
    stored_gather_rows(rows.data(), W, ids.data(), int64_t(ids.size()));
    for (size_t n = 0; n < ids.size(); ++n)
      CHECK(std::memcmp(rows.data() + n * size_t(I), widened.data() + size_t(ids[n]) * size_t(I), size_t(I) * sizeof(float)) == 0);
    const int32_t bad = int32_t(O);
    CHECK_THROWS_AS(stored_gather_rows(rows.data(), W, &bad, 1), std::invalid_argument);
  }
}

TEST_CASE("stored_matmul: a trained weight's gradients: the f32 op's bits, or bf16 products of the rounded values") {
  const int64_t O = 70, I = 96, N = 13;
  const std::vector<float> w = test::random_values(size_t(O * I), 11), x = test::random_values(size_t(N * I), 12),
                           d_out = test::random_values(size_t(N * O), 13), start = test::random_values(size_t(O * I), 14),
                           bias_start = test::random_values(size_t(O), 15);
  const StoredMatrix W{DType::F32, reinterpret_cast<const std::byte*>(w.data()), O, I};
  std::vector<float> want = start, got = start, want_bias = bias_start, got_bias = bias_start;  // added into
  matmul_backward<float>(nullptr, want.data(), want_bias.data(), d_out.data(), x.data(), w.data(), N, I, O);
  stored_matmul_backward_weight(got.data(), got_bias.data(), d_out.data(), x.data(), W, N);
  CHECK(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)) == 0);
  CHECK(got_bias == want_bias);

  StoredMatrix bf16 = W;
  bf16.bf16_products = true;
  got = start, got_bias = bias_start;
  stored_matmul_backward_weight(got.data(), got_bias.data(), d_out.data(), x.data(), bf16, N);
  CHECK(max_relative_error(got, want) < 1e-2);  // d_out and x rounded to bf16 (8 bits of mantissa)
  CHECK(max_relative_error(got, want) > 0);
  CHECK(got_bias == want_bias);  // the bias's sums stay f32

  const std::vector<std::byte> halves = stored(DType::BF16, w);
  const StoredMatrix frozen{DType::BF16, halves.data(), O, I, true};
  CHECK_THROWS_AS(stored_matmul_backward_weight(got.data(), nullptr, d_out.data(), x.data(), frozen, N),
                  std::invalid_argument);
}
