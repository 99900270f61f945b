#include "merge/low_rank.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include <Eigen/Dense>
#include <Eigen/SVD>

#include "core/random.hpp"

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

namespace {

void check_truncation(const char* what, int64_t out, int64_t in, int64_t rank, double scale) {
  if (rank < 1 || rank > std::min(out, in) || scale == 0)
    throw std::invalid_argument(std::string(what) + ": rank " + std::to_string(rank) + " of a [" +
                                std::to_string(out) + ", " + std::to_string(in) + "] delta, scale " +
                                std::to_string(scale));
}

// U·diag(σ)·Vᵀ (U [out, n], V [in, n], σ descending) kept to its first `rank` singular values (the
// missing ones zero) as factors of `scale`: B = U_r·Σ_r / scale, A = V_rᵀ.
LowRankFactors kept_factors(const Eigen::MatrixXd& u, const Eigen::VectorXd& sigma, const Eigen::MatrixXd& v,
                            int64_t rank, double scale) {
  const int64_t n = std::min<int64_t>(rank, sigma.size());
  const double total = sigma.squaredNorm();
  LowRankFactors f;
  f.rank = rank;
  f.scale = scale;
  f.discarded = total > 0 ? sigma.tail(sigma.size() - n).squaredNorm() / total : 0.0;
  Rows b = Rows::Zero(u.rows(), rank), a = Rows::Zero(rank, v.rows());
  b.leftCols(n) = u.leftCols(n) * sigma.head(n).asDiagonal() / scale;  // [out, rank]
  a.topRows(n) = v.leftCols(n).transpose();                            // [rank, in]
  f.b.resize(size_t(b.size()));
  f.a.resize(size_t(a.size()));
  Eigen::Map<RowsF>(f.b.data(), b.rows(), rank) = b.cast<float>();
  Eigen::Map<RowsF>(f.a.data(), rank, a.cols()) = a.cast<float>();
  return f;
}

}  // namespace

LowRankFactors truncate_delta(std::span<const float> dw, int64_t out, int64_t in, int64_t rank, double scale) {
  check_truncation("truncate_delta", out, in, rank, scale);
  if (dw.size() != size_t(out * in))
    throw std::invalid_argument("truncate_delta: " + std::to_string(dw.size()) + " values for a [" +
                                std::to_string(out) + ", " + std::to_string(in) + "] delta");
  const Eigen::BDCSVD<Eigen::MatrixXd> svd(widened(dw, out, in), Eigen::ComputeThinU | Eigen::ComputeThinV);
  return kept_factors(svd.matrixU(), svd.singularValues(), svd.matrixV(), rank, scale);
}

LowRankFactors sketch_delta(std::span<const float> dw, int64_t out, int64_t in, int64_t rank, double scale,
                            uint64_t seed) {
  check_truncation("sketch_delta", out, in, rank, scale);
  if (dw.size() != size_t(out * in))
    throw std::invalid_argument("sketch_delta: " + std::to_string(dw.size()) + " values for a [" + std::to_string(out) +
                                ", " + std::to_string(in) + "] delta");
  constexpr int64_t kOversample = 10, kPowerIterations = 2;
  const int64_t k = std::min(rank + kOversample, std::min(out, in));
  const Eigen::Map<const RowsF> w(dw.data(), out, in);
  RowsF omega(in, k);  // Gaussian test matrix
  Rng rng = Rng::stream(seed, "sketch");
  for (int64_t i = 0; i < omega.size(); ++i) omega.data()[i] = float(rng.normal());
  // An orthonormal basis of the columns of m [rows, k], in f32 for the large products.
  auto orthonormal = [](const RowsF& m) -> RowsF {
    const Eigen::HouseholderQR<Eigen::MatrixXd> qr(m.cast<double>());
    return (qr.householderQ() * Eigen::MatrixXd::Identity(m.rows(), m.cols())).cast<float>();
  };
  RowsF q = orthonormal(w * omega);  // [out, k]
  for (int64_t i = 0; i < kPowerIterations; ++i) q = orthonormal(w * orthonormal(w.transpose() * q));
  const Eigen::MatrixXd small = (q.transpose() * w).cast<double>();  // [k, in]
  const Eigen::JacobiSVD<Eigen::MatrixXd> svd(small, Eigen::ComputeThinU | Eigen::ComputeThinV);
  LowRankFactors f = kept_factors(q.cast<double>() * svd.matrixU(), svd.singularValues(), svd.matrixV(), rank, scale);
  // The share of ‖dW‖² the factors leave out, rather than of the sketch's.
  const double total = Eigen::Map<const Eigen::ArrayXf>(dw.data(), Eigen::Index(dw.size())).cast<double>().square().sum();
  const int64_t kept = std::min<int64_t>(rank, svd.singularValues().size());
  f.discarded = total > 0 ? std::clamp(1.0 - svd.singularValues().head(kept).squaredNorm() / total, 0.0, 1.0) : 0.0;
  return f;
}

LowRankFactors truncate_sum(std::span<const LowRankView> terms, std::span<const double> weights, int64_t out,
                            int64_t in, int64_t rank, double scale) {
  check_truncation("truncate_sum", out, in, rank, scale);
  const LowRankFactors sum = concat_deltas(terms, weights, out, in);  // scale 1, rank R
  const int64_t R = sum.rank;
  // dW = B·A = Q_b·R_b·(Q_a·R_a)ᵀ = Q_b·(R_b·R_aᵀ)·Q_aᵀ, with thin QRs of B [out, R] and Aᵀ [in, R].
  const Eigen::HouseholderQR<Eigen::MatrixXd> qb(widened(sum.b, out, R)), qa(widened(sum.a, R, in).transpose());
  const int64_t kb = std::min(out, R), ka = std::min(in, R);
  const Eigen::MatrixXd q_b = qb.householderQ() * Eigen::MatrixXd::Identity(out, kb);
  const Eigen::MatrixXd q_a = qa.householderQ() * Eigen::MatrixXd::Identity(in, ka);
  const Eigen::MatrixXd r_b = qb.matrixQR().topRows(kb).triangularView<Eigen::Upper>();  // [kb, R]
  const Eigen::MatrixXd r_a = qa.matrixQR().topRows(ka).triangularView<Eigen::Upper>();  // [ka, R]
  const Eigen::JacobiSVD<Eigen::MatrixXd> svd(r_b * r_a.transpose(), Eigen::ComputeThinU | Eigen::ComputeThinV);
  return kept_factors(q_b * svd.matrixU(), svd.singularValues(), q_a * svd.matrixV(), rank, scale);
}

}  // namespace upcycle::merge
