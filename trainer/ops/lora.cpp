#include "trainer/ops/lora.hpp"

#include <vector>

#include <Eigen/Dense>

#include "core/random.hpp"
#include "trainer/ops/matmul.hpp"

namespace upcycle::ops {

namespace {

using Rows = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// The term's input: `in` itself, or its dropped-out copy in `buffer`.
const float* dropped(const float* in, int64_t n, const LoraDropout& drop, std::vector<float>& buffer) {
  if (!drop.active()) return in;
  buffer.resize(size_t(n));
  lora_dropout(buffer.data(), in, n, drop);
  return buffer.data();
}

}  // namespace

void lora_dropout(float* out, const float* in, int64_t n, const LoraDropout& drop) {
  const float keep = 1.0f - drop.p, inverse = 1.0f / keep;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    // The splitmix64 stream's i-th number: a counter-based draw, independent of the order.
    Rng draw(drop.seed + uint64_t(i) * 0x9e3779b97f4a7c15ull);
    out[i] = draw.uniform() < double(keep) ? in[i] * inverse : 0.0f;
  }
}

// Every product on ops::f32_product (oneDNN where it has AVX-512 kernels), the scale applied to
// the [N,r] factor in between.
void lora_forward(float* out, const float* in, const float* A, const float* B, float scale, int64_t N, int64_t I,
                  int64_t O, int64_t r, const LoraDropout& drop) {
  std::vector<float> buffer;
  const float* x = dropped(in, N * I, drop, buffer);
  Rows down(N, r);  // scale · x·Aᵀ [N,r]
  f32_product(down.data(), r, x, I, 1, A, BLayout::Transposed, N, I, r, false);
  down *= scale;
  f32_product(out, O, down.data(), r, 1, B, BLayout::Transposed, N, r, O, true);
}

void lora_backward(float* d_in, float* d_A, float* d_B, const float* d_out, const float* in, const float* A,
                   const float* B, float scale, int64_t N, int64_t I, int64_t O, int64_t r,
                   const LoraDropout& drop) {
  Rows d_down(N, r);  // scale · d_out·B [N,r]
  f32_product(d_down.data(), r, d_out, O, 1, B, BLayout::Plain, N, O, r, false);
  d_down *= scale;
  if (d_in && !drop.active()) {
    f32_product(d_in, I, d_down.data(), r, 1, A, BLayout::Plain, N, r, I, true);
  } else if (d_in) {
    Rows d_x(N, I);  // d_down·A [N,I], through the dropout's mask below
    f32_product(d_x.data(), I, d_down.data(), r, 1, A, BLayout::Plain, N, r, I, false);
    lora_dropout(d_x.data(), d_x.data(), N * I, drop);
    Eigen::Map<Rows>(d_in, N, I) += d_x;
  }
  if (!d_A && !d_B) return;
  std::vector<float> buffer;
  const float* x = dropped(in, N * I, drop, buffer);
  if (d_A) f32_product(d_A, I, d_down.data(), 1, r, x, BLayout::Plain, r, N, I, true);  // d_downᵀ read in place
  if (!d_B) return;
  Rows xa(N, r);  // scale · x·Aᵀ [N,r]
  f32_product(xa.data(), r, x, I, 1, A, BLayout::Transposed, N, I, r, false);
  xa *= scale;
  f32_product(d_B, r, d_out, 1, O, xa.data(), BLayout::Plain, O, N, r, true);  // d_outᵀ read in place
}

}  // namespace upcycle::ops
