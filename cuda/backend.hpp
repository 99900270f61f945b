// The GPU backend of the transformer (the interface trainer/cpu_backend.hpp describes): device
// buffers, activations and the weights the forward reads stored as T (bf16 for training, float
// for the checks against the CPU), per-row statistics, router values and weight gradients in
// fp32, and the ops of cuda/ops. Everything runs on the default stream, in order; the host
// waits only where a value comes back (losses, the routing counts).
#pragma once
#include <cstdint>
#include <type_traits>
#include <vector>

#include "cuda/ops/adamw.hpp"
#include "cuda/ops/attention.hpp"
#include "cuda/ops/cross_entropy.hpp"
#include "cuda/ops/elementwise.hpp"
#include "cuda/ops/embedding.hpp"
#include "cuda/ops/matmul.hpp"
#include "cuda/ops/moe.hpp"
#include "cuda/ops/rmsnorm.hpp"
#include "cuda/ops/rope.hpp"
#include "cuda/ops/router.hpp"
#include "cuda/ops/sigmoid_gate.hpp"
#include "cuda/ops/swiglu.hpp"
#include "cuda/runtime.hpp"
#include "trainer/model_math.hpp"
#include "trainer/parameters.hpp"
#include "trainer/weights.hpp"

namespace upcycle::cuda {

template <class T>
using DeviceWeights = WeightsOf<DeviceBuffer<T>>;

// Host values to the device as T (rounded to nearest even for bf16), complete on return.
template <class T>
DeviceBuffer<T> to_device(const std::vector<float>& host);
// Host weights to the device as T, tensor by tensor (an empty tensor stays empty), and back.
template <class T>
DeviceWeights<T> upload(Weights<float>& host, const ModelConfig& config);
template <class T>
Weights<float> download(DeviceWeights<T>& device, const ModelConfig& config);
// fp32 zeros shaped like `host`, the frozen parts left empty: gradient buffers, moments.
DeviceWeights<float> zeros_like(Weights<float>& host, const ModelConfig& config, const PartSet& frozen = {});

template <class T>
struct Backend : BufferWeightOps<Backend<T>> {
  using Act = T;
  using Stat = float;
  using Grad = float;
  template <class U>
  using Vec = DeviceBuffer<U>;
  using Weight = Vec<T>;
  using GradTensor = Vec<float>;
  using Experts = ExpertPointers<T>;
  using Rope = RopeTable;
  using MoeSaved = cuda::MoeSaved<T>;

  static DeviceWeights<T> load(const Checkpoint& ckpt) {
    Weights<float> host = load_weights<float>(ckpt);
    return cuda::upload<T>(host, ckpt.config());
  }
  static Rope rope_table(int64_t head_dim, int64_t max_positions, double theta, const ops::RopeScaling& scaling) {
    return Rope(ops::RopeTable<float>(head_dim, max_positions, theta, scaling));
  }

  template <class U>
  static Vec<U> zeros(size_t n) {
    Vec<U> v(n);
    v.zero();
    return v;
  }
  template <class U>
  static Vec<U> upload(const std::vector<U>& host) {
    Vec<U> v;
    v.upload(host);
    return v;
  }
  template <class U>
  static std::vector<U> download(const Vec<U>& v) {
    return v.download();
  }
  template <class U>
  static void copy(U* dst, const U* src, int64_t n) {
    if (n > 0) UPCYCLE_CUDA(cudaMemcpyAsync(dst, src, size_t(n) * sizeof(U), cudaMemcpyDeviceToDevice));
  }

  // The ops under trainer/ops' names; each passes its arguments on to the cuda:: op for T.
  static constexpr auto add_into = [](const auto&... a) { cuda::add_into<T>(a...); };
  static constexpr auto embedding_forward = [](const auto&... a) { cuda::embedding_forward<T>(a...); };
  static constexpr auto embedding_backward = [](const auto&... a) { cuda::embedding_backward<T>(a...); };
  static constexpr auto rmsnorm_forward = [](const auto&... a) { cuda::rmsnorm_forward<T>(a...); };
  static constexpr auto rmsnorm_backward = [](const auto&... a) { cuda::rmsnorm_backward<T>(a...); };
  static constexpr auto matmul_forward = [](const auto&... a) { cuda::matmul_forward<T, T>(a...); };
  static constexpr auto matmul_backward = [](const auto&... a) { cuda::matmul_backward<T>(a...); };
  // The router's logits come out of the GEMM in fp32.
  static constexpr auto router_logits = [](const auto&... a) { cuda::matmul_forward<T, float>(a...); };
  static void router_logits_backward(T* d_in, float* d_W, const float* d_out, const T* in, const T* W, int64_t N,
                                     int64_t I, int64_t O) {
    if constexpr (std::is_same_v<T, float>) {
      cuda::matmul_backward<T>(d_in, d_W, nullptr, d_out, in, W, N, I, O);
    } else {
      DeviceBuffer<T> d_out_t(size_t(N * O));  // [N,E]: small, the GEMM wants one input type
      cuda::cast<T, float>(d_out_t.data(), d_out, N * O);
      cuda::matmul_backward<T>(d_in, d_W, nullptr, d_out_t.data(), in, W, N, I, O);
    }
  }
  static constexpr auto rope_forward = [](const auto&... a) { cuda::rope_forward<T>(a...); };
  static constexpr auto rope_backward = [](const auto&... a) { cuda::rope_backward<T>(a...); };
  static constexpr auto attention_forward = [](const auto&... a) { cuda::attention_forward<T>(a...); };
  static constexpr auto attention_backward = [](const auto&... a) { cuda::attention_backward<T>(a...); };
  static constexpr auto attention_cached = [](const auto&... a) { cuda::attention_cached<T>(a...); };
  static constexpr auto swiglu_forward = [](const auto&... a) { cuda::swiglu_forward<T>(a...); };
  static constexpr auto swiglu_backward = [](const auto&... a) { cuda::swiglu_backward<T>(a...); };
  static constexpr auto router_forward = [](const auto&... a) { cuda::router_forward(a...); };
  static constexpr auto router_backward = [](const auto&... a) { cuda::router_backward(a...); };
  // The shared expert's gate: rows of T, the gate's logits in fp32 (as the router's).
  static constexpr auto sigmoid_gate_forward = [](const auto&... a) { cuda::sigmoid_gate_forward<T>(a...); };
  static constexpr auto sigmoid_gate_backward = [](const auto&... a) { cuda::sigmoid_gate_backward<T>(a...); };
  static void moe_forward(T* out, MoeSaved& saved, const T* x, const int32_t* idx, const float* w,
                          const ExpertWeights<T>& experts, const ops::MoeShape& shape) {
    cuda::moe_forward<T>(out, saved, x, idx, w, experts, shape);
  }
  static void moe_backward(T* d_x, float* d_w, const ops::ExpertGrads<float>& g, const T* d_out, const float* w,
                           const ExpertWeights<T>& experts, const MoeSaved& saved, const ops::MoeShape& shape) {
    cuda::moe_backward<T>(d_x, d_w, ExpertGrads{g.gate, g.up, g.down}, d_out, w, experts, saved, shape);
  }
  static constexpr auto cross_entropy_forward = [](const auto&... a) { return cuda::cross_entropy_forward<T>(a...); };
  static constexpr auto cross_entropy_backward = [](const auto&... a) { cuda::cross_entropy_backward<T>(a...); };
  static constexpr auto load_balancing_loss_forward = [](const auto&... a) { return cuda::load_balancing_loss_forward(a...); };
  static constexpr auto load_balancing_loss_backward = [](const auto&... a) { cuda::load_balancing_loss_backward(a...); };
  static constexpr auto router_z_loss_forward = [](const auto&... a) { return cuda::router_z_loss_forward(a...); };
  static constexpr auto router_z_loss_backward = [](const auto&... a) { cuda::router_z_loss_backward(a...); };
  static constexpr auto router_bce_loss_forward = [](const auto&... a) { return cuda::router_bce_loss_forward(a...); };
  static constexpr auto router_bce_loss_backward = [](const auto&... a) { cuda::router_bce_loss_backward(a...); };
};

}  // namespace upcycle::cuda
