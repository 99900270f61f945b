#include "merge/low_rank.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include <Eigen/Dense>
#include <Eigen/SVD>

namespace upcycle::merge {

namespace {

using Rows = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using RowsF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

void check_shape(const LowRankView& x, int64_t out, int64_t in) {
  if (x.rank < 1 || x.a.size() != size_t(x.rank * in) || x.b.size() != size_t(out * x.rank))
    throw std::invalid_argument("low-rank delta: A has " + std::to_string(x.a.size()) + " values and B " +
                                std::to_string(x.b.size()) + ", not rank " + std::to_string(x.rank) + " of [" +
                                std::to_string(out) + ", " + std::to_string(in) + "]");
}

Rows widened(std::span<const float> v, int64_t rows, int64_t cols) {
  return Eigen::Map<const RowsF>(v.data(), rows, cols).cast<double>();
}

}  // namespace

double delta_inner(const LowRankView& x, const LowRankView& y, int64_t out, int64_t in) {
  check_shape(x, out, in);
  check_shape(y, out, in);
  const Rows bb = widened(x.b, out, x.rank).transpose() * widened(y.b, out, y.rank);  // [r_x, r_y]
  const Rows aa = widened(y.a, y.rank, in) * widened(x.a, x.rank, in).transpose();   // [r_y, r_x]
  return x.scale * y.scale * (bb * aa).trace();
}

double delta_l2_distance(const LowRankView& x, const LowRankView& y, int64_t out, int64_t in) {
  const double squared = delta_inner(x, x, out, in) + delta_inner(y, y, out, in) - 2 * delta_inner(x, y, out, in);
  return std::sqrt(std::max(0.0, squared));  // rounding may take an equal pair just below 0
}

double delta_cosine(const LowRankView& x, const LowRankView& y, int64_t out, int64_t in) {
  const double norms = std::sqrt(delta_inner(x, x, out, in) * delta_inner(y, y, out, in));
  return norms > 0 ? delta_inner(x, y, out, in) / norms : 0.0;
}

LowRankFactors concat_deltas(std::span<const LowRankView> terms, std::span<const double> weights, int64_t out,
                             int64_t in) {
  if (terms.empty() || terms.size() != weights.size())
    throw std::invalid_argument("concat_deltas: one weight per term, at least one term");
  LowRankFactors f;
  for (const LowRankView& t : terms) {
    check_shape(t, out, in);
    f.rank += t.rank;
  }
  f.a.reserve(size_t(f.rank * in));
  f.b.assign(size_t(out * f.rank), 0.0f);
  int64_t col = 0;
  for (size_t k = 0; k < terms.size(); ++k) {
    const LowRankView& t = terms[k];
    f.a.insert(f.a.end(), t.a.begin(), t.a.end());
    const float w = float(weights[k] * t.scale);
    for (int64_t o = 0; o < out; ++o)
      for (int64_t j = 0; j < t.rank; ++j) f.b[size_t(o * f.rank + col + j)] = w * t.b[size_t(o * t.rank + j)];
    col += t.rank;
  }
  return f;
}

std::vector<float> dense_delta(const LowRankView& x, int64_t out, int64_t in) {
  check_shape(x, out, in);
  std::vector<float> dw(size_t(out * in));
  const Eigen::Map<const RowsF> a(x.a.data(), x.rank, in), b(x.b.data(), out, x.rank);
  Eigen::Map<RowsF>(dw.data(), out, in).noalias() = float(x.scale) * (b * a);
  return dw;
}

LowRankFactors truncate_delta(std::span<const float> dw, int64_t out, int64_t in, int64_t rank, double scale) {
  if (rank < 1 || rank > std::min(out, in) || scale == 0 || dw.size() != size_t(out * in))
    throw std::invalid_argument("truncate_delta: rank " + std::to_string(rank) + " of a [" + std::to_string(out) +
                                ", " + std::to_string(in) + "] delta of " + std::to_string(dw.size()) +
                                " values, scale " + std::to_string(scale));
  const Rows m = widened(dw, out, in);
  const Eigen::BDCSVD<Eigen::MatrixXd> svd(m, Eigen::ComputeThinU | Eigen::ComputeThinV);
  const Eigen::VectorXd& sigma = svd.singularValues();  // descending
  const double total = sigma.squaredNorm();
  LowRankFactors f;
  f.rank = rank;
  f.scale = scale;
  f.discarded = total > 0 ? sigma.tail(sigma.size() - rank).squaredNorm() / total : 0.0;
  const Rows b = svd.matrixU().leftCols(rank) * sigma.head(rank).asDiagonal() / scale;  // [out, rank]
  const Rows a = svd.matrixV().leftCols(rank).transpose();                            // [rank, in]
  f.b.resize(size_t(out * rank));
  f.a.resize(size_t(rank * in));
  Eigen::Map<RowsF>(f.b.data(), out, rank) = b.cast<float>();
  Eigen::Map<RowsF>(f.a.data(), rank, in) = a.cast<float>();
  return f;
}

}  // namespace upcycle::merge
