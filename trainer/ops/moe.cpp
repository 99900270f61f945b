#include "trainer/ops/moe.hpp"

#include <algorithm>
#include <numeric>

#include "trainer/ops/check.hpp"
#include "trainer/ops/matmul.hpp"
#include "trainer/ops/onednn_product.hpp"
#include "trainer/ops/swiglu.hpp"

namespace upcycle::ops {

void group_by_expert(int32_t* order, int32_t* row_of, int64_t* offsets, const int32_t* idx, int64_t N, int64_t k,
                     int64_t E) {
  require_arg(N * k < (int64_t(1) << 31), "moe", "too many token slots for 32-bit slot ids");
  // Counting sort: count each expert's slots, prefix-sum into offsets, place in slot order.
  std::fill_n(offsets, E + 1, 0);
  for (int64_t s = 0; s < N * k; ++s) {
    require_arg(idx[s] >= 0 && idx[s] < E, "moe", "expert index outside [0, E)");
    ++offsets[idx[s] + 1];
  }
  std::partial_sum(offsets, offsets + E + 1, offsets);
  std::vector<int64_t> next(offsets, offsets + E);
  for (int64_t s = 0; s < N * k; ++s) {
    const int64_t r = next[size_t(idx[s])]++;
    order[r] = int32_t(s);
    row_of[s] = int32_t(r);
  }
}

namespace {

// Expert e's rows of a permuted [N·k, cols] buffer; null for a buffer not kept.
template <class T>
T* expert_rows(std::vector<T>& buf, const MoeSaved<T>& saved, int64_t e, int64_t cols) {
  return buf.empty() ? nullptr : buf.data() + saved.offsets[size_t(e)] * cols;
}
template <class T>
const T* expert_rows(const std::vector<T>& buf, const MoeSaved<T>& saved, int64_t e, int64_t cols) {
  return buf.empty() ? nullptr : buf.data() + saved.offsets[size_t(e)] * cols;
}

int64_t expert_count(const std::vector<int64_t>& offsets, int64_t e) {
  return offsets[size_t(e + 1)] - offsets[size_t(e)];
}

// One expert's linear layer over its n rows: out[n,O] = in[n,I]·Wᵀ, and its backward (d_in and
// d_W added into; either may be null).
template <class T>
void expert_forward(T* out, const T* in, const T* W, int64_t n, int64_t I, int64_t O) {
  matmul_forward<T>(out, in, W, nullptr, n, I, O);
}
void expert_forward(float* out, const float* in, const StoredMatrix& W, int64_t n, int64_t, int64_t) {
  stored_matmul_forward(out, in, W, nullptr, n);
}
template <class T>
void expert_backward(T* d_in, T* d_W, const T* d_out, const T* in, const T* W, int64_t n, int64_t I, int64_t O) {
  matmul_backward<T>(d_in, d_W, nullptr, d_out, in, W, n, I, O);
}
void expert_backward(float* d_in, float* d_W, const float* d_out, const float* in, const StoredMatrix& W, int64_t n,
                     int64_t, int64_t) {
  if (d_in) stored_matmul_backward_input(d_in, d_out, W, n);
  if (d_W) stored_matmul_backward_weight(d_W, nullptr, d_out, in, W, n);
}

template <class T, class M>
void forward_impl(T* out, MoeSaved<T>& s, const T* x, const int32_t* idx, const T* w, const ExpertsOf<M>& experts,
                  const MoeShape& shape) {
  const VaryingRows varying;  // each expert's row count changes from call to call
  const int64_t N = shape.tokens, H = shape.hidden, I = shape.inter, E = shape.experts, k = shape.top_k;
  const int64_t rows = N * k;
  s.order.resize(size_t(rows));
  s.row_of.resize(size_t(rows));
  s.offsets.resize(size_t(E + 1));
  group_by_expert(s.order.data(), s.row_of.data(), s.offsets.data(), idx, N, k, E);
  s.x.resize(size_t(rows * H));
  s.gate.resize(size_t(rows * I));
  s.up.resize(size_t(rows * I));
  s.act.resize(size_t(rows * I));
  s.y.resize(size_t(rows * H));

#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) std::copy_n(x + s.order[size_t(r)] / k * H, H, s.x.data() + r * H);
  for (int64_t e = 0; e < E; ++e) {
    const int64_t n = expert_count(s.offsets, e);
    if (n == 0) continue;
    const T* xe = expert_rows(s.x, s, e, H);
    expert_forward(expert_rows(s.gate, s, e, I), xe, experts.gate[e], n, H, I);
    expert_forward(expert_rows(s.up, s, e, I), xe, experts.up[e], n, H, I);
  }
  swiglu_forward(s.act.data(), s.gate.data(), s.up.data(), rows * I);
  for (int64_t e = 0; e < E; ++e) {
    const int64_t n = expert_count(s.offsets, e);
    if (n == 0) continue;
    expert_forward(expert_rows(s.y, s, e, H), expert_rows(s.act, s, e, I), experts.down[e], n, I, H);
  }
  // Combine per token (not per row): each output row has one writer, summing in slot order.
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < N; ++t) {
    T* o = out + t * H;
    std::fill_n(o, H, T(0));
    for (int64_t j = 0; j < k; ++j) {
      const T weight = w[t * k + j];
      const T* y = s.y.data() + s.row_of[size_t(t * k + j)] * H;
      for (int64_t c = 0; c < H; ++c) o[c] += weight * y[c];
    }
  }
}

template <class T, class M>
void backward_impl(T* d_x, T* d_w, const ExpertGrads<T>& d_experts, const T* d_out, const T* w,
                   const ExpertsOf<M>& experts, const MoeSaved<T>& s, const MoeShape& shape) {
  const VaryingRows varying;
  const int64_t N = shape.tokens, H = shape.hidden, I = shape.inter, E = shape.experts, k = shape.top_k;
  const int64_t rows = N * k;
  if (d_w) {
#pragma omp parallel for schedule(static)
    for (int64_t slot = 0; slot < rows; ++slot) {
      const T* y = s.y.data() + s.row_of[size_t(slot)] * H;
      d_w[slot] += std::inner_product(y, y + H, d_out + slot / k * H, T(0));
    }
  }
  std::vector<T> d_y(size_t(rows * H));
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t slot = s.order[size_t(r)];
    const T* g = d_out + slot / k * H;
    for (int64_t c = 0; c < H; ++c) d_y[size_t(r * H + c)] = w[slot] * g[c];
  }

  auto grad_of = [](T* const* grads, int64_t e) { return grads ? grads[e] : nullptr; };
  std::vector<T> d_act(size_t(rows * I), T(0));
  for (int64_t e = 0; e < E; ++e) {
    const int64_t n = expert_count(s.offsets, e);
    if (n == 0) continue;
    expert_backward(expert_rows(d_act, s, e, I), grad_of(d_experts.down, e), expert_rows(d_y, s, e, H),
                    expert_rows(s.act, s, e, I), experts.down[e], n, I, H);
  }
  std::vector<T> d_gate(size_t(rows * I), T(0)), d_up(size_t(rows * I), T(0));
  swiglu_backward(d_gate.data(), d_up.data(), d_act.data(), s.gate.data(), s.up.data(), rows * I);

  std::vector<T> d_xs(d_x ? size_t(rows * H) : 0, T(0));
  for (int64_t e = 0; e < E; ++e) {
    const int64_t n = expert_count(s.offsets, e);
    if (n == 0) continue;
    T* d_xe = d_x ? expert_rows(d_xs, s, e, H) : nullptr;
    const T* xe = expert_rows(s.x, s, e, H);
    expert_backward(d_xe, grad_of(d_experts.gate, e), expert_rows(d_gate, s, e, I), xe, experts.gate[e], n, H, I);
    expert_backward(d_xe, grad_of(d_experts.up, e), expert_rows(d_up, s, e, I), xe, experts.up[e], n, H, I);
  }
  if (!d_x) return;
  // Scatter back per token: each d_x row has one writer.
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < N; ++t) {
    for (int64_t j = 0; j < k; ++j) {
      const T* g = d_xs.data() + s.row_of[size_t(t * k + j)] * H;
      for (int64_t c = 0; c < H; ++c) d_x[t * H + c] += g[c];
    }
  }
}

}  // namespace

template <class T>
void moe_forward(T* out, MoeSaved<T>& s, const T* x, const int32_t* idx, const T* w, const ExpertWeights<T>& experts,
                 const MoeShape& shape) {
  forward_impl(out, s, x, idx, w, experts, shape);
}
void moe_forward(float* out, MoeSaved<float>& s, const float* x, const int32_t* idx, const float* w,
                 const StoredExperts& experts, const MoeShape& shape, bool trained) {
  forward_impl(out, s, x, idx, w, experts, shape);
  if (trained) return;
  // Frozen experts' backward needs neither their inputs nor the activations (the weights'
  // gradients would): gate and up (the SwiGLU's backward) and y (the gate weights') are kept.
  s.x = {};
  s.act = {};
}
template <class T>
void moe_backward(T* d_x, T* d_w, const ExpertGrads<T>& d_experts, const T* d_out, const T* w,
                  const ExpertWeights<T>& experts, const MoeSaved<T>& s, const MoeShape& shape) {
  backward_impl(d_x, d_w, d_experts, d_out, w, experts, s, shape);
}
void moe_backward(float* d_x, float* d_w, const ExpertGrads<float>& d_experts, const float* d_out, const float* w,
                  const StoredExperts& experts, const MoeSaved<float>& s, const MoeShape& shape) {
  auto none = [&](float* const* grads) {
    return !grads || std::all_of(grads, grads + shape.experts, [](const float* g) { return g == nullptr; });
  };
  const bool kept = !s.x.empty() || shape.tokens == 0;
  require_arg(kept || (none(d_experts.gate) && none(d_experts.up) && none(d_experts.down)), "moe",
              "the experts' gradients need a forward that kept their inputs (trained)");
  backward_impl(d_x, d_w, d_experts, d_out, w, experts, s, shape);
}

template void moe_forward(float*, MoeSaved<float>&, const float*, const int32_t*, const float*,
                          const ExpertWeights<float>&, const MoeShape&);
template void moe_forward(double*, MoeSaved<double>&, const double*, const int32_t*, const double*,
                          const ExpertWeights<double>&, const MoeShape&);
template void moe_backward(float*, float*, const ExpertGrads<float>&, const float*, const float*,
                           const ExpertWeights<float>&, const MoeSaved<float>&, const MoeShape&);
template void moe_backward(double*, double*, const ExpertGrads<double>&, const double*, const double*,
                           const ExpertWeights<double>&, const MoeSaved<double>&, const MoeShape&);

}  // namespace upcycle::ops
