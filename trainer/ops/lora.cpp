#include "trainer/ops/lora.hpp"

#include <Eigen/Dense>

namespace upcycle::ops {

namespace {
using Rows = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
}  // namespace

void lora_forward(float* out, const float* in, const float* A, const float* B, float scale, int64_t N, int64_t I,
                  int64_t O, int64_t r) {
  const Eigen::Map<const Rows> x(in, N, I), a(A, r, I), b(B, O, r);
  const Rows down = x * a.transpose();  // [N,r]
  Eigen::Map<Rows>(out, N, O).noalias() += scale * (down * b.transpose());
}

void lora_backward(float* d_in, float* d_A, float* d_B, const float* d_out, const float* in, const float* A,
                   const float* B, float scale, int64_t N, int64_t I, int64_t O, int64_t r) {
  const Eigen::Map<const Rows> dy(d_out, N, O), a(A, r, I), b(B, O, r);
  const Rows d_down = scale * (dy * b);  // [N,r]
  if (d_in) Eigen::Map<Rows>(d_in, N, I).noalias() += d_down * a;
  if (!d_A && !d_B) return;
  const Eigen::Map<const Rows> x(in, N, I);
  if (d_A) Eigen::Map<Rows>(d_A, r, I).noalias() += d_down.transpose() * x;
  if (d_B) Eigen::Map<Rows>(d_B, O, r).noalias() += scale * (dy.transpose() * (x * a.transpose()));
}

}  // namespace upcycle::ops
