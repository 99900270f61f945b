#include "trainer/ops/swiglu.hpp"

#include <algorithm>

#include <Eigen/Core>

namespace upcycle::ops {

namespace {

template <class T>
using Array = Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>;
template <class T>
using ConstArray = Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>;

// Threads take chunks; within a chunk Eigen vectorises, its logistic included (which saturates
// to exactly 0 and 1 far out rather than overflowing).
constexpr int64_t kChunk = 4096;

}  // namespace

template <class T>
void swiglu_forward(T* out, const T* gate, const T* up, int64_t count) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < count; i += kChunk) {
    const int64_t n = std::min(kChunk, count - i);
    const ConstArray<T> g(gate + i, n), u(up + i, n);
    Array<T>(out + i, n) = g * g.logistic() * u;
  }
}

template <class T>
void swiglu_backward(T* d_gate, T* d_up, const T* d_out, const T* gate, const T* up, int64_t count) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < count; i += kChunk) {
    const int64_t n = std::min(kChunk, count - i);
    const ConstArray<T> g(gate + i, n), u(up + i, n), dy(d_out + i, n);
    const Eigen::Array<T, Eigen::Dynamic, 1> s = g.logistic();
    Array<T>(d_gate + i, n) += dy * u * s * (T(1) + g * (T(1) - s));
    Array<T>(d_up + i, n) += dy * g * s;
  }
}

template void swiglu_forward(float*, const float*, const float*, int64_t);
template void swiglu_forward(double*, const double*, const double*, int64_t);
template void swiglu_backward(float*, float*, const float*, const float*, const float*, int64_t);
template void swiglu_backward(double*, double*, const double*, const double*, const double*, int64_t);

}  // namespace upcycle::ops
