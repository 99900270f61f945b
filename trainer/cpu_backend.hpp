// The CPU backend of the transformer: the reference ops of trainer/ops over std::vector
// buffers. A backend B gives the model (trainer/model.hpp) its buffer type B::Vec<U>, its
// storage types (Act for activations and the weights the forward reads, Stat for per-row
// statistics and router values, Grad for weight gradients), its Weight (one tensor of the
// weights: a buffer of Act here) and Experts (a layer's experts as its moe ops take them), the
// rope table and the MoE's saved state, every op under the name and argument order of
// trainer/ops, and the ops on weights (linear_forward, linear_backward, embedding_lookup:
// BufferWeightOps for buffers). cuda/backend.hpp is the GPU's, trainer/stored_backend.hpp the
// CPU's over weights in their stored dtype; here every type is T and the ops are trainer/ops
// themselves.
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

#include "core/checkpoint.hpp"
#include "trainer/buffer.hpp"
#include "trainer/ops/attention.hpp"
#include "trainer/ops/attention_cached.hpp"
#include "trainer/ops/cross_entropy.hpp"
#include "trainer/ops/embedding.hpp"
#include "trainer/ops/matmul.hpp"
#include "trainer/ops/moe.hpp"
#include "trainer/ops/rmsnorm.hpp"
#include "trainer/ops/rope.hpp"
#include "trainer/ops/router.hpp"
#include "trainer/ops/router_losses.hpp"
#include "trainer/ops/sigmoid_gate.hpp"
#include "trainer/ops/swiglu.hpp"
#include "trainer/model_math.hpp"
#include "trainer/weights.hpp"

namespace upcycle {

template <class T>
struct CpuBackend : BufferWeightOps<CpuBackend<T>> {
  using Act = T;
  using Stat = T;
  using Grad = T;
  template <class U>
  using Vec = Buffer<U>;              // sized unset (trainer/buffer.hpp)
  using Weight = std::vector<T>;      // one tensor of the weights the model reads
  using GradTensor = std::vector<T>;  // one weight's gradient
  using Experts = ExpertPointers<T>;  // a layer's experts as moe_forward takes them
  using Rope = ops::RopeTable<T>;
  using MoeSaved = ops::MoeSaved<T>;

  static WeightsOf<Weight> load(const Checkpoint& ckpt) { return load_weights<T>(ckpt); }
  static Rope rope_table(int64_t head_dim, int64_t max_positions, double theta, const ops::RopeScaling& scaling) {
    return Rope(head_dim, max_positions, theta, scaling);
  }

  // Buffers: zero-filled, from and to host vectors, copies.
  template <class U>
  static Vec<U> zeros(size_t n) {
    return Vec<U>(n, U(0));
  }
  template <class U>
  static Vec<U> upload(const std::vector<U>& host) {
    return Vec<U>(host.begin(), host.end());
  }
  template <class U>
  static std::vector<U> download(const Vec<U>& v) {
    return std::vector<U>(v.begin(), v.end());
  }
  template <class U>
  static void copy(U* dst, const U* src, int64_t n) {
    std::copy_n(src, n, dst);
  }
  // a[i] += b[i]
  static void add_into(T* a, const T* b, int64_t n) {
    for (int64_t i = 0; i < n; ++i) a[i] += b[i];
  }

  static constexpr auto embedding_forward = ops::embedding_forward<T>;
  static constexpr auto embedding_backward = ops::embedding_backward<T>;
  static constexpr auto rmsnorm_forward = ops::rmsnorm_forward<T>;
  static constexpr auto rmsnorm_backward = ops::rmsnorm_backward<T>;
  static constexpr auto matmul_forward = ops::matmul_forward<T>;
  static constexpr auto matmul_backward = ops::matmul_backward<T>;
  // The router's linear layer: logits in Stat (the same as Act here).
  static constexpr auto router_logits = ops::matmul_forward<T>;
  static void router_logits_backward(T* d_in, T* d_W, const T* d_out, const T* in, const T* W, int64_t N, int64_t I,
                                     int64_t O) {
    ops::matmul_backward<T>(d_in, d_W, nullptr, d_out, in, W, N, I, O);
  }
  static constexpr auto rope_forward = ops::rope_forward<T>;
  static constexpr auto rope_backward = ops::rope_backward<T>;
  // max_seqlen sizes the GPU's grid; the CPU splits work by sequence and needs none.
  static void attention_forward(T* out, T* lse, const T* q, const T* k, const T* v, const int32_t* cu_seqlens,
                                int64_t n_seqs, int64_t /*max_seqlen*/, const ops::AttentionShape& shape) {
    ops::attention_forward(out, lse, q, k, v, cu_seqlens, n_seqs, shape);
  }
  static void attention_backward(T* d_q, T* d_k, T* d_v, const T* d_out, const T* q, const T* k, const T* v,
                                 const T* out, const T* lse, const int32_t* cu_seqlens, int64_t n_seqs,
                                 int64_t /*max_seqlen*/, const ops::AttentionShape& shape) {
    ops::attention_backward(d_q, d_k, d_v, d_out, q, k, v, out, lse, cu_seqlens, n_seqs, shape);
  }
  static constexpr auto attention_cached = ops::attention_cached<T>;
  static constexpr auto swiglu_forward = ops::swiglu_forward<T>;
  static constexpr auto swiglu_backward = ops::swiglu_backward<T>;
  static constexpr auto router_forward = ops::router_forward<T>;
  static constexpr auto router_backward = ops::router_backward<T>;
  static constexpr auto sigmoid_gate_forward = ops::sigmoid_gate_forward<T, T>;
  static constexpr auto sigmoid_gate_backward = ops::sigmoid_gate_backward<T, T>;
  static constexpr auto moe_forward = ops::moe_forward<T>;
  static constexpr auto moe_backward = ops::moe_backward<T>;
  static constexpr auto cross_entropy_forward = ops::cross_entropy_forward<T>;
  static constexpr auto cross_entropy_backward = ops::cross_entropy_backward<T>;
  static constexpr auto load_balancing_loss_forward = ops::load_balancing_loss_forward<T>;
  static constexpr auto load_balancing_loss_backward = ops::load_balancing_loss_backward<T>;
  static constexpr auto router_z_loss_forward = ops::router_z_loss_forward<T>;
  static constexpr auto router_z_loss_backward = ops::router_z_loss_backward<T>;
  static constexpr auto router_bce_loss_forward = ops::router_bce_loss_forward<T>;
  static constexpr auto router_bce_loss_backward = ops::router_bce_loss_backward<T>;
};

}  // namespace upcycle
