#include "trainer/ops/matmul.hpp"

#include <type_traits>

#include <Eigen/Core>

#include "trainer/ops/blas_core.hpp"
#include "trainer/ops/onednn_product.hpp"
#include "trainer/ops/stored_matmul.hpp"

namespace upcycle::ops {

namespace {
template <class T>
using Rows = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using RowVec = Eigen::Matrix<T, 1, Eigen::Dynamic>;

// f(the [rows, cols] matrix at p, element (i, j) at p[i·row_stride + j·col_stride]), as a row-major
// map or the transpose of one (one of the strides is 1), so that Eigen hands it to BLAS.
template <class F>
void as_matrix(const float* p, int64_t rows, int64_t cols, int64_t row_stride, int64_t col_stride, F f) {
  using Map = Eigen::Map<const Rows<float>, 0, Eigen::OuterStride<>>;
  if (col_stride == 1) f(Map(p, rows, cols, Eigen::OuterStride<>(row_stride)));
  else f(Map(p, cols, rows, Eigen::OuterStride<>(col_stride)).transpose());
}
}  // namespace

void f32_product(float* out, int64_t out_stride, const float* a, int64_t a_row_stride, int64_t a_col_stride,
                 const float* b, BLayout b_layout, int64_t N, int64_t K, int64_t M, bool accumulate) {
  if (f32_products_on_onednn())
    return onednn_product(out, out_stride, a, a_row_stride, a_col_stride, b, b_layout, ProductType::F32, N, K, M,
                          accumulate);
  Eigen::Map<Rows<float>, 0, Eigen::OuterStride<>> y(out, N, M, Eigen::OuterStride<>(out_stride));
  const bool plain = b_layout == BLayout::Plain;
  as_matrix(a, N, K, a_row_stride, a_col_stride, [&](const auto& A) {
    as_matrix(b, K, M, plain ? M : 1, plain ? 1 : K, [&](const auto& B) {
      if (accumulate) y.noalias() += A * B;
      else y.noalias() = A * B;
    });
  });
}

std::string f32_product_impl() {
  return f32_products_on_onednn() ? "oneDNN (" + onednn_isa() + ")" : "OpenBLAS (" + blas_core() + ")";
}

template <class T>
void matmul_forward(T* out, const T* in, const T* W, const T* bias, int64_t N, int64_t I, int64_t O) {
  if constexpr (std::is_same_v<T, float>) {
    if (N <= kDotRows) {  // decoding: the stored matmul's dot path on f32 rows
      return stored_matmul_forward(out, in, {DType::F32, reinterpret_cast<const std::byte*>(W), O, I}, bias, N);
    }
  }
  Eigen::Map<Rows<T>> y(out, N, O);
  if constexpr (std::is_same_v<T, float>) f32_product(out, O, in, I, 1, W, BLayout::Transposed, N, I, O, false);
  else y.noalias() = Eigen::Map<const Rows<T>>(in, N, I) * Eigen::Map<const Rows<T>>(W, O, I).transpose();
  if (bias) y.rowwise() += Eigen::Map<const RowVec<T>>(bias, O);
}

template <class T>
void matmul_backward(T* d_in, T* d_W, T* d_bias, const T* d_out, const T* in, const T* W, int64_t N, int64_t I,
                     int64_t O) {
  Eigen::Map<const Rows<T>> dy(d_out, N, O), x(in, N, I), w(W, O, I);
  if constexpr (std::is_same_v<T, float>) {
    if (d_in) f32_product(d_in, I, d_out, O, 1, W, BLayout::Plain, N, O, I, true);
    if (d_W) f32_product(d_W, I, d_out, 1, O, in, BLayout::Plain, O, N, I, true);  // d_outᵀ read in place
  } else {
    if (d_in) Eigen::Map<Rows<T>>(d_in, N, I).noalias() += dy * w;
    if (d_W) Eigen::Map<Rows<T>>(d_W, O, I).noalias() += dy.transpose() * x;
  }
  // A sum over every token: in double, as N runs to thousands.
  if (d_bias) Eigen::Map<RowVec<T>>(d_bias, O) += dy.template cast<double>().colwise().sum().template cast<T>();
}

template void matmul_forward(float*, const float*, const float*, const float*, int64_t, int64_t, int64_t);
template void matmul_forward(double*, const double*, const double*, const double*, int64_t, int64_t, int64_t);
template void matmul_backward(float*, float*, float*, const float*, const float*, const float*, int64_t, int64_t,
                              int64_t);
template void matmul_backward(double*, double*, double*, const double*, const double*, const double*, int64_t, int64_t,
                              int64_t);

}  // namespace upcycle::ops
