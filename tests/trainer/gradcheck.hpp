// What the op tests share: seeded inputs, central finite differences and error measures.
//
// Every gradient check follows one recipe. The scalar loss is the op's output projected on a
// fixed random tensor R, loss = Σ out ⊙ R, so the op's backward, fed d_out = R, must give
// d loss / d input. The numeric side is the central difference
//   g_i = (loss(x + h·e_i) − loss(x − h·e_i)) / 2h,   h = 1e-5, in double,
// whose truncation error is O(h²) ≈ 1e-10 and rounding error about 1e-16·|loss|/h, both far
// below the 1e-6 tolerance. Gradient buffers start from random values (GradBuffer), so each
// check also proves that backward adds into its gradients rather than overwriting them.
#pragma once
#include <cstdint>
#include <functional>
#include <type_traits>
#include <vector>

namespace upcycle::test {

using Vec = std::vector<double>;

// n seeded values in [-scale, scale), never all zero; fp32-exact, so the float and the double
// runs of an op start from identical inputs.
Vec random_vec(size_t n, uint64_t seed, double scale = 1.0);

template <class T>
std::vector<T> as(const Vec& v) {
  return std::vector<T>(v.begin(), v.end());
}
template <class T>
Vec widen(const std::vector<T>& v) {
  return Vec(v.begin(), v.end());
}
// Tags to call a generic forward lambda in either precision: forward(kFloat), forward(kDouble).
inline constexpr std::type_identity<float> kFloat{};
inline constexpr std::type_identity<double> kDouble{};

// The central difference of loss() with respect to every element of x; x is perturbed in place
// and restored.
Vec numeric_gradient(Vec& x, const std::function<double()>& loss, double h = 1e-5);

// max_i |a_i − b_i| / max_i |b_i|: the error relative to the reference's own scale, so that
// elements near zero neither hide an error nor inflate the ratio.
double relative_error(const Vec& a, const Vec& b);

double dot(const Vec& a, const Vec& b);

// A gradient buffer filled with random values before backward runs; added() is what backward
// added on top of them.
struct GradBuffer {
  GradBuffer(size_t n, uint64_t seed);
  double* data() { return value.data(); }
  Vec added() const;
  Vec start, value;
};

// CHECKs analytic against numeric within tol (relative_error), naming the gradient on failure.
void check_gradient(const char* name, const Vec& analytic, const Vec& numeric, double tol = 1e-6);

}  // namespace upcycle::test
