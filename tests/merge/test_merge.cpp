// Merge operators: hand-computed cases for every method, DARE's randomness (rates, expectation,
// reproducibility, independence from threads), SLERP's geometry, and the argument checks.
#include <doctest/doctest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <set>
#include <stdexcept>

#include "merge/merge.hpp"
#include "tests/common/fixtures.hpp"

using namespace upcycle;
using namespace upcycle::merge;
using Vec = std::vector<float>;

namespace {

Vec merged(const Options& o, const std::vector<Vec>& inputs, const Vec& base = {}, std::string_view key = "w") {
  const std::vector<std::span<const float>> spans(inputs.begin(), inputs.end());
  Vec out(inputs.at(0).size());
  merge_tensor(out, spans, base, o, key);
  return out;
}

Options options(Method m, std::vector<double> weights = {}) {
  Options o;
  o.method = m;
  o.weights = std::move(weights);
  return o;
}

bool same_bits(const Vec& a, const Vec& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

void check_near(const Vec& got, const std::vector<double>& want, double eps = 1e-6) {
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    CAPTURE(i);
    CHECK(got[i] == doctest::Approx(want[i]).epsilon(eps));
  }
}

// The message merge_tensor throws with, or "" when it does not throw.
std::string error_of(const Options& o, const std::vector<Vec>& inputs, const Vec& base, size_t out_size) {
  const std::vector<std::span<const float>> spans(inputs.begin(), inputs.end());
  Vec out(out_size);
  try {
    merge_tensor(out, spans, base, o, "layer.7");
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "";
}

// Restores the OpenMP thread count a test changed.
struct ThreadCount {
  int saved = omp_get_max_threads();
  ~ThreadCount() { omp_set_num_threads(saved); }
};

}  // namespace

TEST_CASE("merge: the registry's names") {
  for (const MethodInfo& m : kMethods) CHECK(parse_method(m.name) == m.method);
  CHECK(method_names() == "linear, task_arithmetic, ties, dare, dare_ties, slerp");
  CHECK_FALSE(parse_method("DARE").has_value());
  CHECK_FALSE(parse_method("").has_value());
}

// Each row's facts against what its method does: the options that change its output, whether a
// base counts, whether only the weights' ratio does, how many inputs it takes.
TEST_CASE("merge: each method reads what its registry row says") {
  const size_t n = 4000;
  const Vec base = test::random_values(n, 30), other_base = test::random_values(n, 33);
  const std::vector<Vec> x = {test::random_values(n, 31), test::random_values(n, 32)};
  for (const MethodInfo& m : kMethods) {
    CAPTURE(m.name);
    Options o = options(m.method, {1, 3});
    o.seed = 3;
    const Vec b = m.needs_base ? base : Vec{};
    const Vec plain = merged(o, x, b);
    auto changes = [&](void (*edit)(Options&)) {
      Options e = o;
      edit(e);
      return !same_bits(merged(e, x, b), plain);
    };
    CHECK(changes([](Options& e) { e.density = 0.2; }) == m.params.density);
    CHECK(changes([](Options& e) { e.drop_rate = 0.2; }) == m.params.drop_rate);
    CHECK(changes([](Options& e) { e.seed = 4; }) == m.params.drop_rate);  // the seed draws DARE's masks
    CHECK(changes([](Options& e) { e.lambda = 0.5; }) == m.params.lambda);
    CHECK(same_bits(merged(o, x, other_base), merged(o, x, base)) == !m.needs_base);
    o.weights = {2, 6};
    if (m.normalised) CHECK(same_bits(merged(o, x, b), plain));  // ties is scale-free too: its disjoint mean
    o.weights = {1, -1};
    CHECK((error_of(o, x, b, n).find("sum to 0") != std::string::npos) == m.normalised);
    o.weights = {};
    CHECK(error_of(o, {x[0], x[1], x[0]}, b, n).empty() == (m.inputs == 0));
  }
}

TEST_CASE("merge: linear is the normalised weighted mean") {
  const std::vector<Vec> x = {{1, 2, -4, 0}, {3, -2, 0, 8}};
  // Weights 1 and 3 normalise to 1/4 and 3/4: (1 + 9)/4, (2 - 6)/4, -4/4, 24/4.
  CHECK(merged(options(Method::Linear, {1, 3}), x) == Vec{2.5f, -1, -1, 6});
  CHECK(merged(options(Method::Linear, {2, 6}), x) == Vec{2.5f, -1, -1, 6});  // only the ratio counts
  CHECK(merged(options(Method::Linear), x) == Vec{2, 0, -2, 4});              // no weights: the plain mean
  CHECK(merged(options(Method::Linear), {{5, -3}}) == Vec{5, -3});           // one input: itself
}

TEST_CASE("merge: task arithmetic adds the scaled, weighted deltas to the base") {
  const Vec base = {1, 1, 1, 1};
  const std::vector<Vec> x = {{2, 0, 1, 5}, {3, 3, -1, 1}};  // deltas {1, -1, 0, 4}, {2, 2, -2, 0}
  Options o = options(Method::TaskArithmetic, {1, 0.5});
  o.lambda = 0.5;
  // Σ w d = {1 + 1, -1 + 1, 0 - 1, 4 + 0} = {2, 0, -1, 4}; base + 0.5 of that:
  CHECK(merged(o, x, base) == Vec{2, 1, 0.5f, 3});
  o.weights = {};
  o.lambda = 1;
  CHECK(merged(o, x, base) == Vec{4, 2, -1, 5});  // weights 1: the deltas' plain sum, not their mean
}

namespace {
// Three inputs, six elements, base 1, weights {1, 1, 2}. Their deltas:
//   d0 = { 4,  -3,   2,    1,  -5,   0.5 }
//   d1 = {-2,   6,  -1,    3,   2,   0.25}
//   d2 = { 1,  -1,   1, -0.5, 2.5,  -0.5 }
const Vec kTiesBase = {1, 1, 1, 1, 1, 1};
const std::vector<Vec> kTiesInputs = {{5, -2, 3, 2, -4, 1.5f}, {-1, 7, 0, 4, 3, 1.25f}, {2, 0, 2, 0.5f, 3.5f, 0.5f}};
}  // namespace

TEST_CASE("merge: ties trims by magnitude, elects signs and takes the disjoint mean") {
  Options o = options(Method::Ties, {1, 1, 2});
  o.density = 0.5;  // keep round(0.5 * 6) = 3 elements of each delta
  o.lambda = 0.5;
  // Trimmed: d0 keeps |-5|, |4|, |-3|: { 4, -3, 0,  0, -5, 0}
  //          d1 keeps |6|, |3| and one of the tied |2|s, the first by index (0, not 4):
  //                                   {-2,  6, 0,  3,  0, 0}
  //          d2 keeps |2.5| and two of the three tied |1|s, indices 0 and 1 (not 2):
  //                                   { 1, -1, 0,  0, 2.5, 0}
  // Element 0: Σ w d = 4 - 2 + 2 = 4 > 0; d0 and d2 agree: (1·4 + 2·1) / (1 + 2) = 2.
  // Element 1: Σ w d = -3 + 6 - 2 = 1 > 0; only d1 agrees: 6.
  // Element 2: everything trimmed (d2's tie lost by index): base.
  // Element 3: only d1 survives: 3.
  // Element 4: Σ w d = -5 + 0 + 2·2.5 = 0: no sign wins, nobody agrees: base.
  // Element 5: everything trimmed: base.
  // out = 1 + 0.5 · {2, 6, 0, 3, 0, 0}
  CHECK(merged(o, kTiesInputs, kTiesBase) == Vec{2, 4, 1, 2.5f, 1, 1});
}

TEST_CASE("merge: ties with density 1 keeps every delta, dare_ties with p = 0 is the same merge") {
  Options o = options(Method::Ties, {1, 1, 2});
  o.density = 1;
  o.lambda = 0.5;
  // Element 0: (4, -2, 1): Σ = 4 > 0, d0 and d2 agree: (4 + 2) / 3 = 2.
  // Element 1: (-3, 6, -1): Σ = 1 > 0, d1: 6.
  // Element 2: (2, -1, 1): Σ = 3 > 0, d0 and d2: (2 + 2) / 3 = 4/3.
  // Element 3: (1, 3, -0.5): Σ = 3 > 0, d0 and d1: (1 + 3) / 2 = 2.
  // Element 4: (-5, 2, 2.5): Σ = 2 > 0, d1 and d2: (2 + 5) / 3 = 7/3.
  // Element 5: (0.5, 0.25, -0.5): Σ = -0.25 < 0, d2: -0.5.
  const Vec ties = merged(o, kTiesInputs, kTiesBase);
  check_near(ties, {2, 4, 1 + 2.0 / 3, 2, 1 + 7.0 / 6, 0.75});
  o.method = Method::DareTies;
  o.drop_rate = 0;
  o.density = 0.1;  // dare_ties does not trim by magnitude
  CHECK(same_bits(merged(o, kTiesInputs, kTiesBase), ties));
}

TEST_CASE("merge: ties keeps exactly round(density * n) elements, ties at the threshold by index") {
  // One input, weight 1, λ 1: the output minus the base is the trimmed delta itself.
  const size_t n = 1000;
  Vec base = test::random_values(n, 1), x(n), coarse(n);
  const Vec r = test::random_values(n, 2);
  for (size_t i = 0; i < n; ++i) {
    x[i] = base[i] + r[i];
    coarse[i] = base[i] + std::round(r[i] * 2);  // deltas in {-2, -1, 0, 1, 2}: many ties
  }
  for (const Vec* input : {&x, &coarse})
    for (double density : {0.3, 0.5, 0.0015, 0.0004, 1.0}) {  // 0.0004: round(0.4) = 0 survive
      CAPTURE(density);
      Options o = options(Method::Ties);
      o.density = density;
      const Vec out = merged(o, {*input}, base);
      // Reference: indices by decreasing |delta|, equal ones in index order; the first k survive.
      std::vector<size_t> order(n);
      std::iota(order.begin(), order.end(), 0);
      auto mag = [&](size_t i) { return std::fabs((*input)[i] - base[i]); };
      std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return mag(a) > mag(b); });
      const size_t k = size_t(std::llround(density * n));
      std::vector<bool> kept(n, false);
      for (size_t j = 0; j < k; ++j) kept[order[j]] = true;
      for (size_t i = 0; i < n; ++i) {
        CAPTURE(i);
        REQUIRE(out[i] == (kept[i] ? (*input)[i] : base[i]));
      }
    }
}

TEST_CASE("merge: dare with p = 0 is task arithmetic, bit for bit") {
  const size_t n = 10000;
  const Vec base = test::random_values(n, 3);
  const std::vector<Vec> x = {test::random_values(n, 4), test::random_values(n, 5)};
  Options o = options(Method::TaskArithmetic, {0.3, 0.7});
  o.lambda = 0.8;
  const Vec ta = merged(o, x, base);
  o.method = Method::Dare;
  o.drop_rate = 0;
  CHECK(same_bits(merged(o, x, base), ta));
}

TEST_CASE("merge: dare keeps or drops each delta element, rescaled by 1/(1-p)") {
  const size_t n = 400;
  const Vec base = test::random_values(n, 6);
  const std::vector<Vec> x = {test::random_values(n, 7), test::random_values(n, 8)};
  Options o = options(Method::Dare, {0.25, 0.75});
  o.drop_rate = 0.3;
  o.lambda = 2;
  const Vec out = merged(o, x, base);
  std::set<int> seen;  // which of the four keep/drop patterns occurred
  for (size_t i = 0; i < n; ++i) {
    CAPTURE(i);
    const double d0 = double(x[0][i]) - base[i], d1 = double(x[1][i]) - base[i];
    int match = -1;
    for (int pattern = 0; pattern < 4; ++pattern) {
      const double want = base[i] + 2 * (0.25 * (pattern & 1) * d0 + 0.75 * (pattern >> 1) * d1) / 0.7;
      if (std::fabs(out[i] - want) <= 1e-5) match = pattern;
    }
    REQUIRE(match >= 0);
    seen.insert(match);
  }
  CHECK(seen.size() == 4);
}

TEST_CASE("merge: dare_ties elects signs over DARE's rescaled survivors") {
  const size_t n = 400;
  const Vec base = test::random_values(n, 23);
  const std::vector<Vec> x = {test::random_values(n, 24), test::random_values(n, 25)};
  Options o = options(Method::Dare, {0.25, 0.75});
  o.drop_rate = 0.3;
  o.lambda = 1.5;
  o.seed = 5;
  const Vec dare = merged(o, x, base);
  o.method = Method::DareTies;
  const Vec out = merged(o, x, base);
  const double w[2] = {0.25, 0.75};
  bool some_disagree = false;
  for (size_t i = 0; i < n; ++i) {
    CAPTURE(i);
    // Which deltas survived, read off DARE's output (the same masks): its four candidates.
    const double d[2] = {double(x[0][i]) - base[i], double(x[1][i]) - base[i]};
    int pattern = -1;
    for (int q = 0; q < 4; ++q)
      if (std::fabs(dare[i] - (base[i] + 1.5 * (w[0] * (q & 1) * d[0] + w[1] * (q >> 1) * d[1]) / 0.7)) <= 1e-5)
        pattern = q;
    REQUIRE(pattern >= 0);
    double s[2], elect = 0, num = 0, den = 0;
    for (int k = 0; k < 2; ++k) {
      s[k] = (pattern >> k & 1) ? d[k] / 0.7 : 0.0;
      elect += w[k] * s[k];
    }
    for (int k = 0; k < 2; ++k)
      if (s[k] != 0 && (s[k] > 0) == (elect > 0)) num += w[k] * s[k], den += w[k];
    some_disagree |= pattern == 3 && (d[0] > 0) != (d[1] > 0);
    CHECK(out[i] == doctest::Approx(base[i] + (den != 0 ? 1.5 * num / den : 0)).epsilon(1e-5));
  }
  CHECK(some_disagree);  // the sign election was exercised
}

TEST_CASE("merge: dare drops a fraction p of the elements") {
  const size_t n = 1'000'000;
  const Vec base(n, 0.0f), ones(n, 1.0f);
  for (double p : {0.3, 0.9}) {
    CAPTURE(p);
    Options o = options(Method::Dare);
    o.drop_rate = p;
    const Vec out = merged(o, {ones}, base);
    const float survivor = float(1 / (1 - p));
    size_t kept = 0;
    for (float v : out) {
      REQUIRE((v == 0 || v == survivor));
      kept += v != 0;
    }
    CHECK(std::fabs(double(kept) / n - (1 - p)) < 0.005);
  }
}

TEST_CASE("merge: dare's expectation over seeds is task arithmetic") {
  const size_t n = 64, seeds = 4000;
  const Vec base = test::random_values(n, 9);
  const std::vector<Vec> x = {test::random_values(n, 10), test::random_values(n, 11)};
  Options o = options(Method::TaskArithmetic, {0.4, 0.6});
  const Vec ta = merged(o, x, base);
  o.method = Method::Dare;
  o.drop_rate = 0.5;
  std::vector<double> mean(n, 0.0);
  double one_seed_error = 0;
  for (uint64_t seed = 0; seed < seeds; ++seed) {
    o.seed = seed;
    const Vec out = merged(o, x, base);
    for (size_t i = 0; i < n; ++i) mean[i] += double(out[i]) / seeds;
    if (seed == 0)
      for (size_t i = 0; i < n; ++i) one_seed_error = std::max(one_seed_error, std::fabs(double(out[i]) - ta[i]));
  }
  // With p = 0.5 a term w·m·d/(1-p) has standard deviation |w d| <= 1.2 (|d| <= 2), so one draw's
  // is at most 1.5 and the mean of 4000 draws' at most 0.024: 0.1 is over 4 sigma. One seed
  // alone is far off.
  double worst = 0;
  for (size_t i = 0; i < n; ++i) worst = std::max(worst, std::fabs(mean[i] - ta[i]));
  CHECK(worst < 0.1);
  CHECK(one_seed_error > 0.3);
}

TEST_CASE("merge: dare's masks depend on seed, key and input alone") {
  const size_t n = 5000;
  const Vec base = test::random_values(n, 12);
  const std::vector<Vec> x = {test::random_values(n, 13), test::random_values(n, 14)};
  Options o = options(Method::Dare, {0.5, 0.5});
  o.seed = 42;
  const Vec a = merged(o, x, base, "layers.3.up");
  CHECK(same_bits(merged(o, x, base, "layers.3.up"), a));
  CHECK_FALSE(same_bits(merged(o, x, base, "layers.3.down"), a));
  o.seed = 43;
  CHECK_FALSE(same_bits(merged(o, x, base, "layers.3.up"), a));

  // Two identical inputs s from a zero base, weights 1, p = 0.5: out = 2·(m0 + m1)·s with masks
  // m_k in {0, 1}. Had both inputs drawn the same mask, 2s (one kept) could never appear.
  o.weights = {};
  const Vec s = test::random_values(n, 15);
  const Vec out = merged(o, {s, s}, Vec(n, 0.0f));
  size_t one_kept = 0;
  for (size_t i = 0; i < n; ++i) one_kept += out[i] == 2 * s[i];
  CHECK(one_kept > n / 4);
}

TEST_CASE("merge: every method gives the same bits on 1 and 2 threads") {
  ThreadCount restore;
  const size_t n = 100'003;  // many chunks and a ragged last one
  const Vec base = test::random_values(n, 16);
  const std::vector<Vec> x = {test::random_values(n, 17), test::random_values(n, 18), test::random_values(n, 19)};
  for (const MethodInfo& info : kMethods) {
    const Method m = info.method;
    const std::string method(info.name);
    CAPTURE(method);
    Options o = options(m);
    o.seed = 7;
    o.density = 0.4;
    const std::vector<Vec> in = m == Method::Slerp ? std::vector<Vec>{x[0], x[1]} : x;
    const Vec b = info.needs_base ? base : Vec{};
    omp_set_num_threads(1);
    const Vec one = merged(o, in, b);
    omp_set_num_threads(2);
    const Vec two = merged(o, in, b);
    CHECK(same_bits(one, two));
  }
}

TEST_CASE("merge: the element-wise methods merge a tensor part by part to the same bits, ties and slerp refuse parts") {
  const size_t n = 20'011;  // parts of odd sizes and offsets, not lined up with the kernels' chunks or DARE's draws
  const Vec base = test::random_values(n, 26);
  const std::vector<Vec> x = {test::random_values(n, 27), test::random_values(n, 28)};
  for (const MethodInfo& info : kMethods) {
    const Method m = info.method;
    const std::string method(info.name);
    CAPTURE(method);
    Options o = options(m, {0.3, 0.7});
    o.seed = 11;
    const Vec b = info.needs_base ? base : Vec{};
    const Vec whole = merged(o, x, b);
    Vec parts(n);
    std::string refused;
    for (size_t first = 0; first < n; first += 6'001) {
      const size_t len = std::min<size_t>(6'001, n - first);
      auto part = [&](const Vec& v) { return std::span<const float>(v).subspan(first, len); };
      const std::span<const float> in[] = {part(x[0]), part(x[1])};
      try {
        merge_tensor(std::span(parts).subspan(first, len), in, b.empty() ? std::span<const float>() : part(b), o, "w", first);
      } catch (const std::invalid_argument& e) {
        refused = e.what();
        break;
      }
    }
    if (info.by_element) {
      CHECK(refused.empty());
      CHECK(same_bits(parts, whole));
    } else {
      CHECK(refused.find("whole tensors only") != std::string::npos);
    }
  }
}

TEST_CASE("merge: out may be one of the inputs or the base") {
  const size_t n = 5000;
  const Vec base = test::random_values(n, 20);
  const std::vector<Vec> x = {test::random_values(n, 21), test::random_values(n, 22)};
  for (Method m : {Method::Linear, Method::Ties, Method::Dare, Method::DareTies, Method::Slerp}) {
    const MethodInfo& info = method_info(m);
    CAPTURE(info.name);
    const Options o = options(m, {0.3, 0.7});
    const Vec b = info.needs_base ? base : Vec{};
    const Vec want = merged(o, x, b);
    std::vector<Vec> in = x;  // merge into input 1
    const std::vector<std::span<const float>> spans(in.begin(), in.end());
    merge_tensor(in[1], spans, b, o, "w");
    CHECK(same_bits(in[1], want));
    if (info.needs_base) {  // merge into the base
      Vec into = base;
      merge_tensor(into, std::vector<std::span<const float>>(x.begin(), x.end()), into, o, "w");
      CHECK(same_bits(into, want));
    }
  }
}

TEST_CASE("merge: slerp interpolates along the arc") {
  const Vec x0 = {1, 2, 3}, x1 = {-1, 0.5f, 2};
  CHECK(merged(options(Method::Slerp, {1, 0}), {x0, x1}) == x0);  // t = 0
  CHECK(merged(options(Method::Slerp, {0, 3}), {x0, x1}) == x1);  // t = 1

  // Orthogonal unit vectors, t = 0.5: Ω = 90°, both coefficients sin 45° / sin 90° = 1/√2, so
  // the result (x0 + x1)/√2 has norm 1, where the linear mean would have norm 1/√2.
  const Vec u = {0.6f, 0.8f, 0}, v = {-0.8f, 0.6f, 0};
  const double r = 1 / std::sqrt(2.0);
  check_near(merged(options(Method::Slerp), {u, v}), {(0.6 - 0.8) * r, (0.8 + 0.6) * r, 0}, 1e-6);

  // Orthogonal, different norms, t = 1/3 (weights 2 and 1): sin 60° · x0 + sin 30° · x1.
  check_near(merged(options(Method::Slerp, {2, 1}), {{1, 0}, {0, 2}}), {std::sqrt(3.0) / 2, 1});
}

TEST_CASE("merge: slerp falls back to linear for parallel or zero tensors") {
  const Vec x = {1, 2, 3};
  // Parallel (cos Ω = 1), t = 0.25: 0.75·x + 0.25·2x = 1.25x.
  check_near(merged(options(Method::Slerp, {3, 1}), {x, {2, 4, 6}}), {1.25, 2.5, 3.75});
  // Antiparallel (cos Ω = -1), t = 0.5: the mean, 0.
  check_near(merged(options(Method::Slerp), {x, {-1, -2, -3}}), {0, 0, 0});
  // A zero tensor has no direction: 0.5·x.
  check_near(merged(options(Method::Slerp), {x, {0, 0, 0}}), {0.5, 1, 1.5});
}

TEST_CASE("merge: invalid arguments are rejected with the reason") {
  const Vec a = {1, 2, 3}, b = {4, 5, 6}, base = {0, 0, 0};
  auto rejects = [](const std::string& message, const std::string& reason) {
    CAPTURE(message);
    CHECK(message.find(reason) != std::string::npos);
    CHECK(message.find("layer.7") != std::string::npos);  // names the tensor
  };
  rejects(error_of(options(Method::Linear), {a, {1, 2}}, {}, 3), "input 1 has 2 elements");
  rejects(error_of(options(Method::Linear), {a, b}, {}, 4), "input 0 has 3 elements");
  rejects(error_of(options(Method::TaskArithmetic), {a, b}, {0, 0}, 3), "the base has 2 elements");
  rejects(error_of(options(Method::Linear), {}, {}, 3), "no inputs");
  for (Method m : {Method::TaskArithmetic, Method::Ties, Method::Dare, Method::DareTies})
    rejects(error_of(options(m), {a, b}, {}, 3), "needs a base");
  rejects(error_of(options(Method::Slerp), {a, b, a}, {}, 3), "exactly 2 inputs");
  rejects(error_of(options(Method::Slerp), {a}, {}, 3), "exactly 2 inputs");
  rejects(error_of(options(Method::Linear, {1, -1}), {a, b}, {}, 3), "sum to 0");
  rejects(error_of(options(Method::Slerp, {0, 0}), {a, b}, {}, 3), "sum to 0");
  rejects(error_of(options(Method::Linear, {1, 2, 3}), {a, b}, {}, 3), "3 weights for 2 inputs");
  rejects(error_of(options(Method::Dare, {1, NAN}), {a, b}, base, 3), "not finite");

  Options o = options(Method::Ties);
  for (double density : {0.0, -0.5, 1.5, double(NAN)}) {
    o.density = density;
    rejects(error_of(o, {a, b}, base, 3), "density");
  }
  for (Method m : {Method::Dare, Method::DareTies}) {
    o = options(m);
    for (double p : {1.0, -0.1, double(NAN)}) {
      o.drop_rate = p;
      rejects(error_of(o, {a, b}, base, 3), "drop_rate");
    }
  }
  o = options(Method::TaskArithmetic);
  o.lambda = INFINITY;
  rejects(error_of(o, {a, b}, base, 3), "lambda");

  // Options a method does not use are not checked; a zero weight sum is fine for deltas.
  o = options(Method::Linear);
  o.density = 0;
  o.drop_rate = 1;
  CHECK(error_of(o, {a, b}, {}, 3).empty());
  CHECK(error_of(options(Method::TaskArithmetic, {1, -1}), {a, b}, base, 3).empty());
}
