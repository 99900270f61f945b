// What the LoRA tests compare against: the merged weight W + scale·B·A, and the gradients of A
// and B that follow from the merged weight's by the chain rule.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

namespace upcycle::test {

// max_i |got_i − want_i| / max_i |want_i|
double max_relative_error(std::span<const float> got, std::span<const float> want);

// W + scale·B·A, with W [O,I], A [r,I], B [O,r].
std::vector<float> merged(std::vector<float> W, const std::vector<float>& A, const std::vector<float>& B, float scale,
                          int64_t I, int64_t O, int64_t r);

// The gradients of A [r,I] and B [O,r] that W_eff = W + scale·B·A gives from W's, d_W [O,I]:
// scale·Bᵀ·d_W and scale·d_W·Aᵀ, added into d_A and d_B.
void chain_rule(std::vector<float>& d_A, std::vector<float>& d_B, const std::vector<float>& d_W,
                const std::vector<float>& A, const std::vector<float>& B, float scale, int64_t I, int64_t O, int64_t r);

}  // namespace upcycle::test
