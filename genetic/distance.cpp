#include "genetic/distance.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>

#include "core/simd.hpp"

namespace upcycle::genetic {

std::optional<Distance> parse_distance(std::string_view name) {
  if (name == "cosine") return Distance::Cosine;
  if (name == "l2") return Distance::L2;
  return std::nullopt;
}

const char* distance_name(Distance d) { return d == Distance::Cosine ? "cosine" : "l2"; }

namespace {

constexpr size_t kLanes = 8;
using Lanes = float __attribute__((vector_size(kLanes * sizeof(float))));  // 2 SSE, 1 AVX register

// out[g] = Σ a[i]·b[g][i] for i < n and g < G: float products in kLanes lanes, then the lanes and
// the tail added in double. The G sums run side by side, so a is read once and no sum waits on
// another's additions; each is still its own sequence of lane additions (the same bits as alone).
template <size_t G>
inline void block_dots(const float* a, const float* const* b, size_t n, double* out) {
  Lanes acc[G] = {};
  size_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    Lanes x, y;  // unaligned loads
    std::memcpy(&x, a + i, sizeof x);
    for (size_t g = 0; g < G; ++g) {
      std::memcpy(&y, b[g] + i, sizeof y);
      acc[g] += x * y;
    }
  }
  for (size_t g = 0; g < G; ++g) {
    double s = 0;
    for (size_t j = 0; j < kLanes; ++j) s += acc[g][j];
    for (size_t t = i; t < n; ++t) s += double(a[t]) * b[g][t];
    out[g] = s;
  }
}

// out[j] = Σ a[i]·b[j][i] for j < m, four at a time.
inline void block_dots(const float* a, const float* const* b, size_t m, size_t n, double* out) {
  size_t j = 0;
  for (; j + 4 <= m; j += 4) block_dots<4>(a, b + j, n, out + j);
  switch (m - j) {
    case 3: return block_dots<3>(a, b + j, n, out + j);
    case 2: return block_dots<2>(a, b + j, n, out + j);
    case 1: return block_dots<1>(a, b + j, n, out + j);
    default: return;
  }
}

}  // namespace

size_t dot_blocks(size_t elements) { return (elements + kDotBlock - 1) / kDotBlock; }

UPCYCLE_SIMD_CLONES
void delta(std::span<const float> x, std::span<const float> base, std::span<float> out) {
  if (x.size() != base.size() || out.size() != x.size()) throw std::invalid_argument("delta: lengths differ");
  for (size_t i = 0; i < x.size(); ++i) out[i] = x[i] - base[i];
}

UPCYCLE_SIMD_CLONES
void delta_dot_blocks(std::span<const float> x, std::span<const float> base,
                      std::span<const std::span<const float>> other_deltas, std::span<double> partial, size_t stride) {
  const size_t m = other_deltas.size(), blocks = dot_blocks(x.size());
  bool fits = base.size() == x.size() && m < stride && (blocks == 0 || (blocks - 1) * stride + m < partial.size());
  for (const auto& o : other_deltas) fits = fits && o.size() == x.size();
  if (!fits) throw std::invalid_argument("delta_dot_blocks: lengths differ, or the partial sums do not fit");
  float d[kDotBlock];
  std::vector<const float*> with_self(m + 1, d);  // the others' deltas at this block, then d itself
  for (size_t blk = 0; blk < blocks; ++blk) {
    const size_t begin = blk * kDotBlock, n = std::min(x.size() - begin, kDotBlock);
    const float* b = base.data() + begin;
    for (size_t i = 0; i < n; ++i) d[i] = x[begin + i] - b[i];
    for (size_t j = 0; j < m; ++j) with_self[j] = other_deltas[j].data() + begin;
    block_dots(d, with_self.data(), m + 1, n, &partial[blk * stride]);
  }
}

void Gram::resize(size_t n) {
  for (auto& g : layers_) {
    std::vector<double> next(n * n, 0.0);
    for (size_t i = 0; i < std::min(n, n_); ++i)
      for (size_t j = 0; j < std::min(n, n_); ++j) next[i * n + j] = g[i * n_ + j];
    g = std::move(next);
  }
  n_ = n;
}

void Gram::add(int layer, size_t i, size_t j, double v) {
  auto& g = layers_[size_t(layer)];
  g[i * n_ + j] += v;
  if (i != j) g[j * n_ + i] += v;
}

Gram Gram::with_kept(size_t n, size_t kept) const {
  Gram out(int(layers_.size()));
  out.resize(n + 1);
  for (int l = 0; l < int(layers_.size()); ++l) {
    for (size_t i = 0; i < n; ++i)
      for (size_t j = 0; j <= i; ++j) out.add(l, i, j, get(l, i, j));
    for (size_t j = 0; j < n; ++j) out.add(l, n, j, get(l, kept, j));
    out.add(l, n, n, get(l, kept, kept));
  }
  return out;
}

double Gram::distance(size_t i, size_t j, Distance d) const {
  if (i == j) return 0;
  double sum = 0;
  for (int l = 0; l < int(layers_.size()); ++l) {
    const double ii = get(l, i, i), jj = get(l, j, j), ij = get(l, i, j);
    if (d == Distance::L2) {
      sum += std::sqrt(std::max(0.0, ii + jj - 2 * ij));
    } else if (ii <= 0 || jj <= 0) {
      sum += (ii <= 0 && jj <= 0) ? 0.0 : 1.0;
    } else {
      sum += 1.0 - std::clamp(ij / std::sqrt(ii * jj), -1.0, 1.0);
    }
  }
  return sum / double(layers_.size());
}

std::vector<std::vector<double>> Gram::matrix(Distance d) const {
  std::vector<std::vector<double>> m(n_, std::vector<double>(n_, 0.0));
  for (size_t i = 0; i < n_; ++i)
    for (size_t j = 0; j < n_; ++j) m[i][j] = distance(i, j, d);
  return m;
}

std::vector<std::vector<double>> function_distances(const std::vector<std::vector<double>>& losses) {
  const size_t E = losses.size();
  std::vector<std::vector<double>> d(E, std::vector<double>(E, 0.0));
  for (size_t i = 0; i < E; ++i)
    for (size_t j = i + 1; j < E; ++j) {
      if (losses[i].size() != losses[j].size()) throw std::invalid_argument("function_distances: experts scored on different samples");
      double sum = 0;
      int64_t n = 0;
      for (size_t s = 0; s < losses[i].size(); ++s)
        if (std::isfinite(losses[i][s]) && std::isfinite(losses[j][s])) sum += std::fabs(losses[i][s] - losses[j][s]), ++n;
      d[i][j] = d[j][i] = n ? sum / double(n) : 0.0;
    }
  return d;
}

Diversity diversity(const std::vector<std::vector<double>>& dist) {
  Diversity out;
  double sum = 0, min = std::numeric_limits<double>::infinity();
  size_t pairs = 0;
  for (size_t i = 0; i < dist.size(); ++i)
    for (size_t j = i + 1; j < dist.size(); ++j) {
      sum += dist[i][j];
      min = std::min(min, dist[i][j]);
      ++pairs;
    }
  if (pairs) out = {sum / double(pairs), min};
  return out;
}

}  // namespace upcycle::genetic
