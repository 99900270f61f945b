#include "report/statistics.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

#include <boost/math/distributions/students_t.hpp>

#include "core/random.hpp"

namespace upcycle {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

}  // namespace

MeanInterval mean_interval(const std::vector<double>& v, double level) {
  MeanInterval m;
  m.n = int(v.size());
  for (double x : v) m.mean += x;
  m.mean /= double(std::max<size_t>(1, v.size()));
  if (m.n < 2) {
    m.low = m.high = kNaN;
    return m;
  }
  for (double x : v) m.sd += (x - m.mean) * (x - m.mean);
  m.sd = std::sqrt(m.sd / double(m.n - 1));
  const boost::math::students_t t(double(m.n - 1));
  const double half = boost::math::quantile(t, (1 + level) / 2) * m.sd / std::sqrt(double(m.n));
  m.low = m.mean - half;
  m.high = m.mean + half;
  return m;
}

PairedDifference paired_difference(const std::vector<double>& a, const std::vector<double>& b, double level) {
  if (a.size() != b.size()) throw std::invalid_argument("paired_difference: the two sides differ in length");
  std::vector<double> d(a.size());
  for (size_t i = 0; i < a.size(); ++i) d[i] = a[i] - b[i];
  const MeanInterval m = mean_interval(d, level);
  PairedDifference p{m.n, m.mean, m.low, m.high, kNaN, false};
  if (m.n < 2) return p;
  if (m.sd == 0) {
    p.p_value = m.mean == 0 ? 1.0 : 0.0;
    p.significant = m.mean != 0;
    return p;
  }
  const boost::math::students_t t(double(m.n - 1));
  const double stat = m.mean / (m.sd / std::sqrt(double(m.n)));
  p.p_value = 2 * boost::math::cdf(boost::math::complement(t, std::fabs(stat)));
  p.significant = p.low > 0 || p.high < 0;
  return p;
}

PairedDifference paired_bootstrap(const std::vector<double>& a, const std::vector<double>& b, int resamples, uint64_t seed,
                                  double level) {
  if (a.size() != b.size() || a.empty() || resamples < 1)
    throw std::invalid_argument("paired_bootstrap: the two sides must be non-empty and of one length");
  const size_t n = a.size();
  std::vector<double> d(n), means(static_cast<size_t>(resamples));
  double mean = 0;
  for (size_t i = 0; i < n; ++i) mean += (d[i] = a[i] - b[i]);
  mean /= double(n);
  Rng rng = Rng::stream(seed, "paired bootstrap");
  int at_most_0 = 0, at_least_0 = 0;
  for (double& m : means) {
    double sum = 0;
    for (size_t i = 0; i < n; ++i) sum += d[size_t(rng.next() % n)];
    m = sum / double(n);
    at_most_0 += m <= 0;
    at_least_0 += m >= 0;
  }
  std::sort(means.begin(), means.end());
  auto percentile = [&](double q) { return means[std::min(means.size() - 1, size_t(q * double(means.size())))]; };
  PairedDifference p{int(n), mean, percentile((1 - level) / 2), percentile((1 + level) / 2), 0, false};
  p.p_value = std::min(1.0, 2.0 * double(std::min(at_most_0, at_least_0)) / double(resamples));
  p.significant = p.low > 0 || p.high < 0;
  return p;
}

}  // namespace upcycle
