#include "tests/trainer/gradcheck.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>

#include "tests/common/fixtures.hpp"

namespace upcycle::test {

Vec random_vec(size_t n, uint64_t seed, double scale) {
  Vec v = widen(random_values(n, seed));
  for (double& x : v) x *= scale;
  return v;
}

Vec numeric_gradient(Vec& x, const std::function<double()>& loss, double h) {
  Vec g(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double saved = x[i];
    x[i] = saved + h;
    const double plus = loss();
    x[i] = saved - h;
    const double minus = loss();
    x[i] = saved;
    g[i] = (plus - minus) / (2 * h);
  }
  return g;
}

double relative_error(const Vec& a, const Vec& b) {
  REQUIRE(a.size() == b.size());
  double err = 0, scale = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    err = std::max(err, std::abs(a[i] - b[i]));
    scale = std::max(scale, std::abs(b[i]));
  }
  return scale > 0 ? err / scale : err;
}

double dot(const Vec& a, const Vec& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

GradBuffer::GradBuffer(size_t n, uint64_t seed) : start(random_vec(n, seed)), value(start) {}

Vec GradBuffer::added() const {
  Vec d(value.size());
  for (size_t i = 0; i < d.size(); ++i) d[i] = value[i] - start[i];
  return d;
}

void check_gradient(const char* name, const Vec& analytic, const Vec& numeric, double tol) {
  // A gradient that is zero everywhere would pass any relative test against itself.
  REQUIRE_MESSAGE(std::any_of(numeric.begin(), numeric.end(), [](double g) { return std::abs(g) > 1e-8; }), name);
  const double err = relative_error(analytic, numeric);
  CHECK_MESSAGE(err < tol, name << ": relative error " << err);
}

}  // namespace upcycle::test
