#include "trainer/ops/matmul.hpp"

#include <type_traits>

#include <Eigen/Core>

#include "trainer/ops/stored_matmul.hpp"

namespace upcycle::ops {

namespace {
template <class T>
using Rows = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using RowVec = Eigen::Matrix<T, 1, Eigen::Dynamic>;
}  // namespace

template <class T>
void matmul_forward(T* out, const T* in, const T* W, const T* bias, int64_t N, int64_t I, int64_t O) {
  if constexpr (std::is_same_v<T, float>) {
    if (N <= kDotRows) {  // decoding: the stored matmul's dot path on f32 rows
      return stored_matmul_forward(out, in, {DType::F32, reinterpret_cast<const std::byte*>(W), O, I}, bias, N);
    }
  }
  Eigen::Map<const Rows<T>> x(in, N, I), w(W, O, I);
  Eigen::Map<Rows<T>> y(out, N, O);
  y.noalias() = x * w.transpose();
  if (bias) y.rowwise() += Eigen::Map<const RowVec<T>>(bias, O);
}

template <class T>
void matmul_backward(T* d_in, T* d_W, T* d_bias, const T* d_out, const T* in, const T* W, int64_t N, int64_t I,
                     int64_t O) {
  Eigen::Map<const Rows<T>> dy(d_out, N, O), x(in, N, I), w(W, O, I);
  if (d_in) Eigen::Map<Rows<T>>(d_in, N, I).noalias() += dy * w;
  if (d_W) Eigen::Map<Rows<T>>(d_W, O, I).noalias() += dy.transpose() * x;
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
