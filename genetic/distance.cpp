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

constexpr size_t kBlock = 4096, kLanes = 8;

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

size_t block_count(size_t n) { return (n + kBlock - 1) / kBlock; }

}  // namespace

std::vector<double> delta_dots(std::span<const float> x, std::span<const float> base,
                               std::span<const std::span<const float>> others) {
  bool same = base.size() == x.size();
  for (const auto& o : others) same = same && o.size() == x.size();
  if (!same) throw std::invalid_argument("delta_dots: lengths differ");
  const size_t m = others.size(), blocks = block_count(x.size());
  std::vector<double> partial(blocks * (m + 1));  // [blocks, m + 1]
#pragma omp parallel
  {
    std::vector<float> d(kBlock), e(kBlock);
#pragma omp for schedule(static)
    for (size_t blk = 0; blk < blocks; ++blk) {
      const size_t begin = blk * kBlock, n = std::min(x.size() - begin, kBlock);
      const float* b = base.data() + begin;
      for (size_t i = 0; i < n; ++i) d[i] = x[begin + i] - b[i];
      double* row = &partial[blk * (m + 1)];
      for (size_t j = 0; j < m; ++j) {
        const float* o = others[j].data() + begin;
        for (size_t i = 0; i < n; ++i) e[i] = o[i] - b[i];
        row[j] = block_dot(d.data(), e.data(), n);
      }
      row[m] = block_dot(d.data(), d.data(), n);
    }
  }
  std::vector<double> sum(m + 1, 0.0);
  for (size_t blk = 0; blk < blocks; ++blk)
    for (size_t j = 0; j <= m; ++j) sum[j] += partial[blk * (m + 1) + j];
  return sum;
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
