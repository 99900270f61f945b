// Distances between experts from their FFN deltas (expert − base): inner products summed over a
// layer's gate, up and down tensors give that layer's distance; the experts' distance is the mean
// over layers. And distances in function: how differently two experts score the seed data.
#pragma once
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

namespace upcycle::genetic {

enum class Distance { Cosine, L2 };
std::optional<Distance> parse_distance(std::string_view name);  // "cosine", "l2"
const char* distance_name(Distance d);

// out = x − base: an expert's delta.
void delta(std::span<const float> x, std::span<const float> base, std::span<float> out);

// The inner products of x's delta (x − base, made on the fly) with the deltas of others and with
// itself: {⟨x − base, other_deltas[j]⟩ for each j, then ⟨x − base, x − base⟩}, as partial sums per
// kDotBlock elements: float products in 8 lanes, each block's lanes added in double.
// partial[b · stride + j] gets block b's sum for value j (j ≤ m). Adding the blocks' sums in
// order gives the same bits however a tensor is cut into parts (at multiples of kDotBlock), for
// any thread count and CPU.
inline constexpr size_t kDotBlock = 4096;
size_t dot_blocks(size_t elements);  // ⌈elements / kDotBlock⌉
void delta_dot_blocks(std::span<const float> x, std::span<const float> base,
                      std::span<const std::span<const float>> other_deltas, std::span<double> partial, size_t stride);

// Per layer, the inner products of the experts' deltas: symmetric [n, n] each.
class Gram {
 public:
  explicit Gram(int layers) : layers_(size_t(layers)) {}
  size_t size() const { return n_; }
  void resize(size_t n);  // keeps the entries of the first min(n, size()) experts
  double get(int layer, size_t i, size_t j) const { return layers_[size_t(layer)][i * n_ + j]; }
  void add(int layer, size_t i, size_t j, double v);  // to (i, j) and, off the diagonal, (j, i)
  // Experts 0..n-1 and expert `kept` (>= n) as expert n: a search round's pool and its winner.
  Gram with_kept(size_t n, size_t kept) const;
  // Mean over layers of 1 − cos (cosine; 0 when both deltas are 0, 1 when one is) or of ‖d_i − d_j‖ (L2).
  double distance(size_t i, size_t j, Distance d) const;
  std::vector<std::vector<double>> matrix(Distance d) const;

 private:
  std::vector<std::vector<double>> layers_;
  size_t n_ = 0;
};

// Distances in function between experts, each given by its loss on every seed sample ([E][S], mean
// loss per counted token; +inf where a sample has none): [E][E], the mean over samples finite
// under both of |loss_i − loss_j|; 0 on the diagonal and where no sample is finite under both.
std::vector<std::vector<double>> function_distances(const std::vector<std::vector<double>>& losses);

// Mean and minimum of the off-diagonal entries of a distance matrix (0 for fewer than 2 experts).
struct Diversity {
  double mean = 0, min = 0;
  double score() const { return mean + min; }  // what the search maximises
};
Diversity diversity(const std::vector<std::vector<double>>& distances);

}  // namespace upcycle::genetic
