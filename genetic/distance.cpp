#include "genetic/distance.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

namespace upcycle::genetic {

std::optional<Distance> parse_distance(std::string_view name) {
  if (name == "cosine") return Distance::Cosine;
  if (name == "l2") return Distance::L2;
  return std::nullopt;
}

const char* distance_name(Distance d) { return d == Distance::Cosine ? "cosine" : "l2"; }

namespace {

constexpr size_t kLanes = 8;

// Σ a[i]·b[i] for i < n: float products in kLanes lanes, the lanes and the tail added in double.
double block_dot(const float* a, const float* b, size_t n) {
  float lane[kLanes] = {};
  size_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (size_t j = 0; j < kLanes; ++j) lane[j] += a[i + j] * b[i + j];
  double s = 0;
  for (float v : lane) s += v;
  for (; i < n; ++i) s += double(a[i]) * b[i];
  return s;
}

}  // namespace

size_t dot_blocks(size_t elements) { return (elements + kDotBlock - 1) / kDotBlock; }

void delta_dot_blocks(std::span<const float> x, std::span<const float> base,
                      std::span<const std::span<const float>> others, std::span<double> partial, size_t stride) {
  const size_t m = others.size(), blocks = dot_blocks(x.size());
  bool fits = base.size() == x.size() && m < stride && (blocks == 0 || (blocks - 1) * stride + m < partial.size());
  for (const auto& o : others) fits = fits && o.size() == x.size();
  if (!fits) throw std::invalid_argument("delta_dot_blocks: lengths differ, or the partial sums do not fit");
  float d[kDotBlock], e[kDotBlock];
  for (size_t blk = 0; blk < blocks; ++blk) {
    const size_t begin = blk * kDotBlock, n = std::min(x.size() - begin, kDotBlock);
    const float* b = base.data() + begin;
    for (size_t i = 0; i < n; ++i) d[i] = x[begin + i] - b[i];
    double* row = &partial[blk * stride];
    for (size_t j = 0; j < m; ++j) {
      const float* o = others[j].data() + begin;
      for (size_t i = 0; i < n; ++i) e[i] = o[i] - b[i];
      row[j] = block_dot(d, e, n);
    }
    row[m] = block_dot(d, d, n);
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
