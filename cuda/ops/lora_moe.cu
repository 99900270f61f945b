#include "cuda/ops/lora_moe.hpp"

#include "cuda/ops/convert.cuh"
#include "cuda/ops/lora.hpp"
#include "cuda/ops/matmul.hpp"
#include "cuda/ops/moe.hpp"
#include "cuda/ops/moe_rows.cuh"
#include "cuda/ops/reduce.cuh"
#include "cuda/ops/swiglu.hpp"
#include "trainer/ops/check.hpp"

namespace upcycle::cuda {

namespace {

constexpr int kThreads = 256;  // a multiple of 32, as block_sum needs

// d_w[s] += act[r,:]·d_mixed[t,:] + y[r,:]·d_out[t,:] with r = row_of[s], t = s / k: token t's
// output gradient dotted with expert e's output act·downᵀ + y, the first through down's
// transpose (d_mixed = d_out·down). A block per slot, summed in block_sum's fixed tree.
//   act [N·k, I], d_mixed [N, I], y [N·k, H], d_out [N, H]
template <class T>
__global__ void weight_grad(float* d_w, const T* act, const T* d_mixed, const T* y, const T* d_out,
                            const int32_t* row_of, int64_t k, int64_t I, int64_t H) {
  const int64_t s = blockIdx.x, r = row_of[s], t = s / k;
  float dot = 0;
  for (int64_t c = threadIdx.x; c < I; c += blockDim.x) dot += to_float(act[r * I + c]) * to_float(d_mixed[t * I + c]);
  for (int64_t c = threadIdx.x; c < H; c += blockDim.x) dot += to_float(y[r * H + c]) * to_float(d_out[t * H + c]);
  const double total = block_sum(dot);
  if (threadIdx.x == 0) d_w[s] += float(total);
}

// Each expert's term on its rows: out[rows of e, O] += term_e(in[rows of e, I]), skipping experts
// without tokens or without a term.
template <class T>
void terms_forward(T* out, const T* in, const LowRankTerm* terms, const std::vector<int64_t>& at, int64_t I,
                   int64_t O, cudaStream_t stream) {
  for (size_t e = 0; e + 1 < at.size(); ++e) {
    const LowRankTerm& t = terms[e];
    const int64_t n = at[e + 1] - at[e];
    if (n == 0 || !t.a) continue;
    lora_forward<T>(out + at[e] * O, in + at[e] * I, t.a, t.b, t.scale, n, I, O, t.rank, t.dropout, stream);
  }
}

// Their backward: d_in[rows, I] (null: not wanted) and each term's d_a, d_b added into.
template <class T>
void terms_backward(T* d_in, const T* d_out, const T* in, const LowRankTerm* terms, const std::vector<int64_t>& at,
                    int64_t I, int64_t O, cudaStream_t stream) {
  for (size_t e = 0; e + 1 < at.size(); ++e) {
    const LowRankTerm& t = terms[e];
    const int64_t n = at[e + 1] - at[e];
    if (n == 0 || !t.a) continue;
    lora_backward<T>(d_in ? d_in + at[e] * I : nullptr, t.d_a, t.d_b, d_out + at[e] * O, in + at[e] * I, t.a, t.b,
                     t.scale, n, I, O, t.rank, t.dropout, stream);
  }
}

template <class T>
void check_args(const LoraExperts<T>& experts, const ops::MoeShape& s) {
  ops::require_arg(s.tokens >= 0 && s.hidden > 0 && s.inter > 0 && s.experts > 0 && s.top_k > 0, "lora_moe",
                   "sizes must be positive (tokens may be 0)");
  ops::require_arg(s.tokens * s.top_k < (int64_t(1) << 31), "lora_moe", "too many token slots for 32-bit slot ids");
  ops::require_arg(experts.gate_terms && experts.up_terms && experts.down_terms, "lora_moe",
                   "each matrix needs its array of E terms (a term with a null a: none)");
}

}  // namespace

template <class T>
void lora_moe_forward(T* out, LoraMoeSaved<T>& s, const T* x, const int32_t* idx, const float* w,
                      const LoraExperts<T>& experts, const ops::MoeShape& shape, cudaStream_t stream) {
  check_args(experts, shape);
  const int64_t N = shape.tokens, H = shape.hidden, I = shape.inter, E = shape.experts, k = shape.top_k;
  const int64_t rows = N * k;
  if (N == 0) return;
  s.gate.resize(size_t(rows * I));
  s.up.resize(size_t(rows * I));
  s.y.resize(size_t(rows * H));
  group_rows(s, x, idx, N, k, E, H, stream);
  const std::vector<int64_t>& at = s.host_offsets;

  DeviceBuffer<T> base(size_t(N * I), stream);  // [N,I] the base's gate, then up, product
  matmul_forward<T, T>(base.data(), x, experts.gate, nullptr, N, H, I, stream);
  gather_rows<<<unsigned(rows), kThreads, 0, stream>>>(s.gate.data(), base.data(), s.order.data(), k, I);
  UPCYCLE_CUDA_LAUNCHED("lora_moe gather");
  matmul_forward<T, T>(base.data(), x, experts.up, nullptr, N, H, I, stream);
  gather_rows<<<unsigned(rows), kThreads, 0, stream>>>(s.up.data(), base.data(), s.order.data(), k, I);
  UPCYCLE_CUDA_LAUNCHED("lora_moe gather");
  terms_forward(s.gate.data(), s.x.data(), experts.gate_terms, at, H, I, stream);
  terms_forward(s.up.data(), s.x.data(), experts.up_terms, at, H, I, stream);
  DeviceBuffer<T> act(size_t(rows * I), stream);  // [N·k, I]
  swiglu_forward(act.data(), s.gate.data(), s.up.data(), rows * I, stream);

  // base is now Σ_j w·act, the down product's input
  combine_rows<<<unsigned(N), kThreads, 0, stream>>>(base.data(), act.data(), s.row_of.data(), w, k, I, false);
  UPCYCLE_CUDA_LAUNCHED("lora_moe combine");
  matmul_forward<T, T>(out, base.data(), experts.down, nullptr, N, I, H, stream);
  s.y.zero(stream);
  terms_forward(s.y.data(), act.data(), experts.down_terms, at, I, H, stream);
  combine_rows<<<unsigned(N), kThreads, 0, stream>>>(out, s.y.data(), s.row_of.data(), w, k, H, true);
  UPCYCLE_CUDA_LAUNCHED("lora_moe combine");
}

template <class T>
void lora_moe_backward(T* d_x, float* d_w, const T* d_out, const float* w, const LoraExperts<T>& experts,
                       const LoraMoeSaved<T>& s, const ops::MoeShape& shape, cudaStream_t stream) {
  check_args(experts, shape);
  const int64_t N = shape.tokens, H = shape.hidden, I = shape.inter, E = shape.experts, k = shape.top_k;
  const int64_t rows = N * k;
  if (N == 0) return;
  ops::require_arg(s.order.size() == size_t(rows) && s.host_offsets.size() == size_t(E + 1) &&
                       s.gate.size() == size_t(rows * I) && s.y.size() == size_t(rows * H),
                   "lora_moe", "saved state is not from a forward of this shape");
  const std::vector<int64_t>& at = s.host_offsets;

  DeviceBuffer<T> d_mixed(size_t(N * I), stream);  // [N,I] gradient of Σ_j w·act, added into
  d_mixed.zero(stream);
  matmul_backward<T>(d_mixed.data(), nullptr, nullptr, d_out, nullptr, experts.down, N, I, H, stream);
  DeviceBuffer<T> act(size_t(rows * I), stream);
  swiglu_forward(act.data(), s.gate.data(), s.up.data(), rows * I, stream);
  if (d_w) {
    weight_grad<<<unsigned(rows), kThreads, 0, stream>>>(d_w, act.data(), d_mixed.data(), s.y.data(), d_out,
                                                         s.row_of.data(), k, I, H);
    UPCYCLE_CUDA_LAUNCHED("lora_moe weight_grad");
  }
  DeviceBuffer<T> d_act(size_t(rows * I), stream), d_y(size_t(rows * H), stream);  // [N·k, I], [N·k, H]
  weighted_rows<<<unsigned(rows), kThreads, 0, stream>>>(d_act.data(), d_mixed.data(), w, s.order.data(), k, I);
  UPCYCLE_CUDA_LAUNCHED("lora_moe weighted_rows");
  weighted_rows<<<unsigned(rows), kThreads, 0, stream>>>(d_y.data(), d_out, w, s.order.data(), k, H);
  UPCYCLE_CUDA_LAUNCHED("lora_moe weighted_rows");
  terms_backward(d_act.data(), d_y.data(), act.data(), experts.down_terms, at, I, H, stream);
  DeviceBuffer<T> d_gate(size_t(rows * I), stream), d_up(size_t(rows * I), stream);  // [N·k, I], added into
  d_gate.zero(stream);
  d_up.zero(stream);
  swiglu_backward(d_gate.data(), d_up.data(), d_act.data(), s.gate.data(), s.up.data(), rows * I, stream);

  DeviceBuffer<T> d_rows(d_x ? size_t(rows * H) : 0, stream);  // [N·k, H] the terms' input gradients
  d_rows.zero(stream);
  T* d_terms_in = d_x ? d_rows.data() : nullptr;
  terms_backward(d_terms_in, d_gate.data(), s.x.data(), experts.gate_terms, at, H, I, stream);
  terms_backward(d_terms_in, d_up.data(), s.x.data(), experts.up_terms, at, H, I, stream);
  if (!d_x) return;
  T* d_base = d_mixed.data();  // [N,I] the base gate's, then up's, output gradient (d_mixed is spent)
  for (const auto& [d_rows_of, W] : {std::pair{&d_gate, experts.gate}, std::pair{&d_up, experts.up}}) {
    combine_rows<<<unsigned(N), kThreads, 0, stream>>>(d_base, d_rows_of->data(), s.row_of.data(), nullptr, k, I, false);
    UPCYCLE_CUDA_LAUNCHED("lora_moe combine");
    matmul_backward<T>(d_x, nullptr, nullptr, d_base, nullptr, W, N, H, I, stream);
  }
  combine_rows<<<unsigned(N), kThreads, 0, stream>>>(d_x, d_rows.data(), s.row_of.data(), nullptr, k, H, true);
  UPCYCLE_CUDA_LAUNCHED("lora_moe combine");
}

template void lora_moe_forward(float*, LoraMoeSaved<float>&, const float*, const int32_t*, const float*,
                               const LoraExperts<float>&, const ops::MoeShape&, cudaStream_t);
template void lora_moe_forward(bf16*, LoraMoeSaved<bf16>&, const bf16*, const int32_t*, const float*,
                               const LoraExperts<bf16>&, const ops::MoeShape&, cudaStream_t);
template void lora_moe_backward(float*, float*, const float*, const float*, const LoraExperts<float>&,
                                const LoraMoeSaved<float>&, const ops::MoeShape&, cudaStream_t);
template void lora_moe_backward(bf16*, float*, const bf16*, const float*, const LoraExperts<bf16>&,
                                const LoraMoeSaved<bf16>&, const ops::MoeShape&, cudaStream_t);

}  // namespace upcycle::cuda
