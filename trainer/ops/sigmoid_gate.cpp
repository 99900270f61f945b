#include "trainer/ops/sigmoid_gate.hpp"

#include "trainer/ops/vector_math.hpp"

namespace upcycle::ops {

template <class T, class S>
void sigmoid_gate_forward(T* out, const T* y, const S* logit, int64_t N, int64_t H) {
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    const T s = T(logistic(double(logit[n])));
    for (int64_t h = 0; h < H; ++h) out[n * H + h] += s * y[n * H + h];
  }
}

template <class T, class S>
void sigmoid_gate_backward(T* d_y, S* d_logit, const T* d_out, const T* y, const S* logit, int64_t N, int64_t H) {
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    const double s = logistic(double(logit[n]));
    double dot = 0;  // Σ_h d_out·y, summed in double in order
    for (int64_t h = 0; h < H; ++h) {
      dot += double(d_out[n * H + h]) * double(y[n * H + h]);
      d_y[n * H + h] = T(s * double(d_out[n * H + h]));
    }
    d_logit[n] = S(s * (1 - s) * dot);
  }
}

template void sigmoid_gate_forward(float*, const float*, const float*, int64_t, int64_t);
template void sigmoid_gate_forward(double*, const double*, const double*, int64_t, int64_t);
template void sigmoid_gate_backward(float*, float*, const float*, const float*, const float*, int64_t, int64_t);
template void sigmoid_gate_backward(double*, double*, const double*, const double*, const double*, int64_t, int64_t);

}  // namespace upcycle::ops
