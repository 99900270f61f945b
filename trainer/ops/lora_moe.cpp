#include "trainer/ops/lora_moe.hpp"

#include <algorithm>
#include <numeric>

#include "trainer/ops/onednn_product.hpp"
#include "trainer/ops/swiglu.hpp"

namespace upcycle::ops {

namespace {

int64_t expert_rows(const LoraMoeSaved& s, int64_t e) { return s.offsets[size_t(e + 1)] - s.offsets[size_t(e)]; }

// rows[r] = src[token of row r]: [N·k, C] in permuted order from [N, C].
void gather(std::vector<float>& rows, const float* src, const std::vector<int32_t>& order, int64_t k, int64_t C) {
  const int64_t count = int64_t(order.size());
  rows.resize(size_t(count * C));
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < count; ++r) std::copy_n(src + order[size_t(r)] / k * C, C, rows.data() + r * C);
}

// dst[n] += Σ_j w[n,j]·rows[row of slot n·k+j] (w null: weights of 1), per token: each row of dst
// has one writer, summing in slot order.
void combine(float* dst, const std::vector<float>& rows, const std::vector<int32_t>& row_of, const float* w,
             int64_t N, int64_t k, int64_t C) {
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < N; ++t) {
    float* d = dst + t * C;
    for (int64_t j = 0; j < k; ++j) {
      const float weight = w ? w[t * k + j] : 1.0f;
      const float* src = rows.data() + row_of[size_t(t * k + j)] * C;
      for (int64_t c = 0; c < C; ++c) d[c] += weight * src[c];
    }
  }
}

// rows[r] = w[slot of r]·src[token of r]: [N·k, C], the routing weight applied to a token's
// gradient for each of its experts.
std::vector<float> weighted_rows(const float* src, const float* w, const std::vector<int32_t>& order, int64_t k,
                                 int64_t C) {
  const int64_t count = int64_t(order.size());
  std::vector<float> rows(size_t(count * C));
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < count; ++r) {
    const int64_t slot = order[size_t(r)];
    const float* g = src + slot / k * C;
    for (int64_t c = 0; c < C; ++c) rows[size_t(r * C + c)] = w[slot] * g[c];
  }
  return rows;
}

// Each expert's term on its rows: out[rows, O] += term_e(in[rows, I]).
void terms_forward(std::vector<float>& out, const std::vector<float>& in, const LowRankTerm* terms,
                   const LoraMoeSaved& s, int64_t E, int64_t I, int64_t O) {
  const VaryingRows varying;  // each expert's row count changes from call to call
  for (int64_t e = 0; e < E; ++e) {
    const LowRankTerm& t = terms[e];
    const int64_t n = expert_rows(s, e), first = s.offsets[size_t(e)];
    if (n == 0 || !t.a) continue;
    lora_forward(out.data() + first * O, in.data() + first * I, t.a, t.b, t.scale, n, I, O, t.rank, t.dropout);
  }
}

// Their backward: d_in[rows, I] (null: not wanted) and each term's gradients added into.
void terms_backward(float* d_in, const std::vector<float>& d_out, const std::vector<float>& in,
                    const LowRankTerm* terms, const LoraMoeSaved& s, int64_t E, int64_t I, int64_t O) {
  const VaryingRows varying;
  for (int64_t e = 0; e < E; ++e) {
    const LowRankTerm& t = terms[e];
    const int64_t n = expert_rows(s, e), first = s.offsets[size_t(e)];
    if (n == 0 || !t.a) continue;
    lora_backward(d_in ? d_in + first * I : nullptr, t.d_a, t.d_b, d_out.data() + first * O, in.data() + first * I,
                  t.a, t.b, t.scale, n, I, O, t.rank, t.dropout);
  }
}

std::vector<float> activations(const LoraMoeSaved& s) {
  std::vector<float> act(s.gate.size());
  swiglu_forward(act.data(), s.gate.data(), s.up.data(), int64_t(act.size()));
  return act;
}

}  // namespace

void lora_moe_forward(float* out, LoraMoeSaved& s, const float* x, const int32_t* idx, const float* w,
                      const LoraExperts& experts, const MoeShape& shape) {
  const int64_t N = shape.tokens, H = shape.hidden, I = shape.inter, E = shape.experts, k = shape.top_k;
  s.order.resize(size_t(N * k));
  s.row_of.resize(size_t(N * k));
  s.offsets.resize(size_t(E + 1));
  group_by_expert(s.order.data(), s.row_of.data(), s.offsets.data(), idx, N, k, E);
  gather(s.x, x, s.order, k, H);

  std::vector<float> base(size_t(N * I));  // [N,I] the base's gate, then up, product
  stored_matmul_forward(base.data(), x, experts.gate, nullptr, N);
  gather(s.gate, base.data(), s.order, k, I);
  stored_matmul_forward(base.data(), x, experts.up, nullptr, N);
  gather(s.up, base.data(), s.order, k, I);
  terms_forward(s.gate, s.x, experts.gate_terms, s, E, H, I);
  terms_forward(s.up, s.x, experts.up_terms, s, E, H, I);
  const std::vector<float> act = activations(s);  // [N·k, I]

  std::fill(base.begin(), base.end(), 0.0f);  // now Σ_j w·act, the down product's input
  combine(base.data(), act, s.row_of, w, N, k, I);
  stored_matmul_forward(out, base.data(), experts.down, nullptr, N);
  s.y.assign(size_t(N * k * H), 0.0f);
  terms_forward(s.y, act, experts.down_terms, s, E, I, H);
  combine(out, s.y, s.row_of, w, N, k, H);
}

void lora_moe_backward(float* d_x, float* d_w, const float* d_out, const float* w, const LoraExperts& experts,
                       const LoraMoeSaved& s, const MoeShape& shape) {
  const int64_t N = shape.tokens, H = shape.hidden, I = shape.inter, E = shape.experts, k = shape.top_k;
  std::vector<float> d_mixed(size_t(N * I), 0.0f);  // [N,I] gradient of Σ_j w·act
  stored_matmul_backward_input(d_mixed.data(), d_out, experts.down, N);
  const std::vector<float> act = activations(s);
  if (d_w) {
    // d_out·FFN_e(x) = d_out·(act·downᵀ) + d_out·y = d_mixed·act + d_out·y
#pragma omp parallel for schedule(static)
    for (int64_t slot = 0; slot < N * k; ++slot) {
      const int64_t r = s.row_of[size_t(slot)], t = slot / k;
      const float* a = act.data() + r * I;
      const float* y = s.y.data() + r * H;
      d_w[slot] += std::inner_product(a, a + I, d_mixed.data() + t * I, 0.0f) +
                   std::inner_product(y, y + H, d_out + t * H, 0.0f);
    }
  }
  std::vector<float> d_act = weighted_rows(d_mixed.data(), w, s.order, k, I);  // [N·k, I]
  terms_backward(d_act.data(), weighted_rows(d_out, w, s.order, k, H), act, experts.down_terms, s, E, I, H);
  std::vector<float> d_gate(d_act.size(), 0.0f), d_up(d_act.size(), 0.0f);  // [N·k, I]
  swiglu_backward(d_gate.data(), d_up.data(), d_act.data(), s.gate.data(), s.up.data(), int64_t(d_act.size()));

  std::vector<float> d_rows(d_x ? size_t(N * k * H) : 0, 0.0f);  // [N·k, H] the terms' input gradients
  float* d_terms_in = d_x ? d_rows.data() : nullptr;
  terms_backward(d_terms_in, d_gate, s.x, experts.gate_terms, s, E, H, I);
  terms_backward(d_terms_in, d_up, s.x, experts.up_terms, s, E, H, I);
  if (!d_x) return;
  std::vector<float> d_base(size_t(N * I));  // [N,I] the base gate's, then up's, output gradient
  for (const auto& [d_rows_of, W] : {std::pair{&d_gate, &experts.gate}, std::pair{&d_up, &experts.up}}) {
    std::fill(d_base.begin(), d_base.end(), 0.0f);
    combine(d_base.data(), *d_rows_of, s.row_of, nullptr, N, k, I);
    stored_matmul_backward_input(d_x, d_base.data(), *W, N);
  }
  combine(d_x, d_rows, s.row_of, nullptr, N, k, H);
}

}  // namespace upcycle::ops
