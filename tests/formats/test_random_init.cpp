// Seeded random streams and random initialisation.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>

#include "core/output_file.hpp"
#include "core/random.hpp"
#include "formats/checkpoint_writer.hpp"
#include "formats/random_init.hpp"
#include "tests/common/fixtures.hpp"

using namespace upcycle;

TEST_CASE("random streams: reproducible, independent per label, right moments") {
  Rng a = Rng::stream(5, "x"), b = Rng::stream(5, "x"), c = Rng::stream(5, "y"), d = Rng::stream(6, "x");
  uint64_t va = a.next();
  CHECK(va == b.next());
  CHECK(va != c.next());
  CHECK(va != d.next());
  // Known first value: a change of generator would silently change every seeded output.
  CHECK(Rng(0).next() == 0xe220a8397b1dcdafull);

  Rng r(42);
  const int n = 200000;
  double sum = 0, sq = 0, usum = 0, umin = 1, umax = 0;
  for (int i = 0; i < n; ++i) {
    double x = r.normal();
    sum += x, sq += x * x;
    double u = r.uniform();
    usum += u, umin = std::min(umin, u), umax = std::max(umax, u);
  }
  CHECK(umin >= 0.0);
  CHECK(umax < 1.0);
  CHECK(std::abs(sum / n) < 0.01);
  CHECK(std::abs(sq / n - 1.0) < 0.01);
  CHECK(std::abs(usum / n - 0.5) < 0.005);
}

TEST_CASE("random_init: norms one, biases zero, weights normal(0, initializer_range), order-free") {
  ModelConfig c = test::tiny_config("qwen2");
  auto m = random_init(c, 9);
  CHECK(m->load("model.norm.weight").to_f32_vector() == std::vector<float>(16, 1.0f));
  CHECK(m->load("model.layers.0.self_attn.q_proj.bias").to_f32_vector() == std::vector<float>(16, 0.0f));
  auto w = m->load("model.embed_tokens.weight").to_f32_vector();
  double sum = 0, sq = 0;
  for (float x : w) sum += x, sq += double(x) * x;
  CHECK(std::abs(sum / w.size()) < 0.004);
  CHECK(std::sqrt(sq / w.size()) == doctest::Approx(0.02).epsilon(0.1));
  // Loading in another order, or again, gives the same bytes.
  auto again = random_init(c, 9);
  Tensor late = again->load("lm_head.weight");
  again->load("model.embed_tokens.weight");
  CHECK(test::same_tensor(late, m->load("lm_head.weight")));
  CHECK_FALSE(test::same_tensor(random_init(c, 10)->load("lm_head.weight"), late));
}

TEST_CASE("write_converted: pieces cover the tensor in order, converted, those after the first on file pages") {
  const std::vector<float> values = test::random_values(30000, 3);
  const Tensor stored = Tensor::from_f32({3, 10000}, values);
  const Tensor computed = Tensor::computed({3, 10000}, [&](uint64_t first, std::span<float> out) {
    std::copy_n(values.begin() + ptrdiff_t(first), out.size(), out.begin());
  });
  for (const Tensor* t : {&stored, &computed})
    for (DType out : {DType::F32, DType::BF16, DType::F16})
      for (uint64_t at : {uint64_t(0), uint64_t(5 * 4096 - 12)}) {
        CAPTURE(out);
        CAPTURE(at);
        std::vector<std::byte> got;
        uint64_t expect_next = 0;
        int pieces = 0;
        const uint64_t element_bytes = dtype_info(out).block_bytes;
        write_converted(*t, out, [&](std::span<const std::byte> bytes, uint64_t first) {
          CHECK(first == expect_next);
          if (pieces > 0) CHECK((at + first * element_bytes) % OutputFile::kPage == 0);
          expect_next += bytes.size() / element_bytes;
          got.insert(got.end(), bytes.begin(), bytes.end());
          ++pieces;
        }, at, /*max_bytes=*/16384);
        CHECK(pieces >= 7);
        const Tensor whole = stored.to(out);
        REQUIRE(got.size() == whole.nbytes());
        CHECK(std::equal(got.begin(), got.end(), whole.bytes().begin()));
      }
  CHECK(page_cut(4090, 2) == 3);
  CHECK(page_cut(4090, 4) == 0);  // no count of 4-byte elements lands on a page
  CHECK(page_cut(4096 - 64, 2, 32) == 32);
}
