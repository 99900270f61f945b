#include "trainer/ops/lora.hpp"

#include <vector>

#include <Eigen/Dense>

#include "core/random.hpp"

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

void lora_forward(float* out, const float* in, const float* A, const float* B, float scale, int64_t N, int64_t I,
                  int64_t O, int64_t r, const LoraDropout& drop) {
  std::vector<float> buffer;
  const Eigen::Map<const Rows> x(dropped(in, N * I, drop, buffer), N, I), a(A, r, I), b(B, O, r);
  const Rows down = x * a.transpose();  // [N,r]
  Eigen::Map<Rows>(out, N, O).noalias() += scale * (down * b.transpose());
}

void lora_backward(float* d_in, float* d_A, float* d_B, const float* d_out, const float* in, const float* A,
                   const float* B, float scale, int64_t N, int64_t I, int64_t O, int64_t r,
                   const LoraDropout& drop) {
  const Eigen::Map<const Rows> dy(d_out, N, O), a(A, r, I), b(B, O, r);
  const Rows d_down = scale * (dy * b);  // [N,r]
  if (d_in && !drop.active()) {
    Eigen::Map<Rows>(d_in, N, I).noalias() += d_down * a;
  } else if (d_in) {
    Rows d_x = d_down * a;  // [N,I], through the dropout's mask below
    lora_dropout(d_x.data(), d_x.data(), N * I, drop);
    Eigen::Map<Rows>(d_in, N, I) += d_x;
  }
  if (!d_A && !d_B) return;
  std::vector<float> buffer;
  const Eigen::Map<const Rows> x(dropped(in, N * I, drop, buffer), N, I);
  if (d_A) Eigen::Map<Rows>(d_A, r, I).noalias() += d_down.transpose() * x;
  if (d_B) Eigen::Map<Rows>(d_B, O, r).noalias() += scale * (dy.transpose() * (x * a.transpose()));
}

}  // namespace upcycle::ops
