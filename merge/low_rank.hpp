// LoRA deltas dW = s·B·A [out, in] (A [r, in], B [out, r]) merged without materialising them where
// linear algebra allows, as UpIT over adapters needs: inner products and distances from r1 x r2
// products, linear merges as one term of the summed rank (exact), and any other child (a DARE
// child, made on the dense dW by merge()) brought back to rank r by a truncated SVD that reports
// the energy it discards.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

namespace upcycle::merge {

// One delta's factors, read in place; `scale` is the adapter's s (alpha/r, or alpha/sqrt(r)).
struct LowRankView {
  std::span<const float> a, b;  // A [rank, in], B [out, rank], row-major
  int64_t rank = 0;
  double scale = 1;
};

struct LowRankFactors {
  std::vector<float> a, b;  // A [rank, in], B [out, rank]
  int64_t rank = 0;
  double scale = 1;
  // truncate_delta: the share of ‖dW‖²_F the dropped singular values held, in [0, 1].
  double discarded = 0;
  LowRankView view() const { return {a, b, rank, scale}; }
};

// ⟨dW_x, dW_y⟩_F = s_x·s_y·tr((B_xᵀB_y)(A_y A_xᵀ)), in double: O((out + in)·r_x·r_y), never out·in.
// std::invalid_argument when a span's size is not its shape's.
double delta_inner(const LowRankView& x, const LowRankView& y, int64_t out, int64_t in);
// ‖dW_x − dW_y‖_F, and dW_x·dW_y / (‖dW_x‖·‖dW_y‖) (0 when either is zero), from the inner products.
double delta_l2_distance(const LowRankView& x, const LowRankView& y, int64_t out, int64_t in);
double delta_cosine(const LowRankView& x, const LowRankView& y, int64_t out, int64_t in);

// Σ_k w_k·dW_k as one term of rank Σ r_k, exactly: A stacks the A_k, B places w_k·s_k·B_k side by
// side, scale 1.
LowRankFactors concat_deltas(std::span<const LowRankView> terms, std::span<const double> weights, int64_t out,
                             int64_t in);

// dW = s·B·A densely [out, in], f32 (to merge what is not linear, a DARE child).
std::vector<float> dense_delta(const LowRankView& x, int64_t out, int64_t in);

// The best rank-`rank` approximation of a dense dW [out, in] (Eckart–Young, by Eigen's BDCSVD) as
// factors for an adapter of scale `scale`: B = U_r·Σ_r / scale, A = V_rᵀ, so that scale·B·A is it;
// `discarded` the share of ‖dW‖² in the singular values beyond `rank`. std::invalid_argument for
// a rank outside [1, min(out, in)] or a zero scale.
LowRankFactors truncate_delta(std::span<const float> dw, int64_t out, int64_t in, int64_t rank, double scale);

// The same by a randomized range finder (Halko, Martinsson and Tropp 2011): Q, an orthonormal
// basis of dW·Ω (Ω [in, rank + 10] Gaussian from `seed`) refined by two power iterations, and the
// SVD of the small Qᵀ·dW, in O(out·in·rank) where the full SVD is O(out·in·min(out, in)): what a
// search that refactors every candidate child can afford (a 4096 x 11008 delta: a tenth of a
// second, against minutes). `discarded` is exact for the factors returned (1 − their ‖·‖² /
// ‖dW‖²: they are an orthogonal projection of dW); within a few percent of the optimum's when
// the spectrum falls off beyond `rank`. The same bits for a fixed seed and thread count.
LowRankFactors sketch_delta(std::span<const float> dw, int64_t out, int64_t in, int64_t rank, double scale,
                            uint64_t seed);

// The same for Σ_k w_k·dW_k from the factors alone (a linear merge brought back to rank `rank`,
// such as the mean of adapters' terms): the summed term's B [out, R] and Aᵀ [in, R] (R = Σ r_k)
// are reduced by QR to an R x R core whose SVD is the sum's, O((out + in)·R²), never out·in.
// Ranks above the sum's own are zero-padded (exact). std::invalid_argument as concat_deltas, or
// for a rank outside [1, min(out, in)] or a zero scale.
LowRankFactors truncate_sum(std::span<const LowRankView> terms, std::span<const double> weights, int64_t out,
                            int64_t in, int64_t rank, double scale);

}  // namespace upcycle::merge
