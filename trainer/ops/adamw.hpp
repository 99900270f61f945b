// The optimizer: AdamW on fp32 master weights (torch.optim.AdamW's update), and the global
// gradient norm with clipping (torch.nn.utils.clip_grad_norm_).
#pragma once
#include <cstdint>
#include <span>

namespace upcycle::ops {

struct AdamWConfig {
  double lr = 1e-5;
  double beta1 = 0.9, beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
  bool bf16_moments = false;  // m and v held in bf16 (adamw_step_bf16_moments): 12 bytes a parameter, not 16
};

// One step on a tensor of n elements, at step t >= 1 (the bias corrections' exponent):
//   param ← param·(1 − lr·weight_decay)          only when `decay` (the caller's rule: weight
//                                                   matrices decay, norms and biases usually not)
//   m ← β1·m + (1 − β1)·g,   v ← β2·v + (1 − β2)·g²
//   param ← param − lr · (m / (1 − β1^t)) / (sqrt(v / (1 − β2^t)) + eps)
// g is grad[i]·grad_scale (clip_scale's; the clipping fused into this pass, with the bits of
// scaling the gradient first). With bf16_copy (float only): bf16_copy[i] ← param[i] rounded to
// bf16 in the same pass, the copy that bf16 training's products read.
template <class T>
void adamw_step(T* param, const T* grad, T* m, T* v, int64_t n, const AdamWConfig& config, int64_t t, bool decay,
                T grad_scale = T(1), uint16_t* bf16_copy = nullptr);

// adamw_step with m and v held in bf16 (half their memory) and read widened to f32: the same
// update, each moment rounded back stochastically, up with probability the fraction of the bf16
// step it lies above the lower value. Rounding to nearest would lose v's steps whenever they are
// under half of bf16's 2⁻⁸ relative spacing (1 − β2 = 0.001 of v, so v could never decay); the
// stochastic rounding keeps them in expectation. The draws are a function of (seed, element)
// alone: the same bits for every thread count. The caller varies `seed` per tensor and step.
void adamw_step_bf16_moments(float* param, const float* grad, uint16_t* m, uint16_t* v, int64_t n,
                             const AdamWConfig& config, int64_t t, bool decay, float grad_scale, uint16_t* bf16_copy,
                             uint64_t seed);

// sqrt of the sum of squares over every element of every tensor, accumulated in double, in an
// order that does not depend on the thread count.
template <class T>
double global_norm(std::span<const std::span<const T>> tensors);

// Gradient clipping as PyTorch's clip_grad_norm_: the gradients' scale for a global norm `norm`,
// max_norm / (norm + 1e-6) where norm exceeds max_norm, else 1.
double clip_scale(double norm, double max_norm);

}  // namespace upcycle::ops
