// Intervals over repeats: Student-t intervals and paired t-tests against values computed by hand,
// and a sweep report whose intervals are recomputed from its own CSV rows.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <sstream>

#include "report/repeats.hpp"
#include "report/statistics.hpp"
#include "report/sweep_report.hpp"
#include "tests/common/fixtures.hpp"

using namespace upcycle;
using namespace upcycle::test;

namespace {

std::vector<std::vector<std::string>> read_csv(const fs::path& file) {
  std::vector<std::vector<std::string>> rows;
  std::stringstream in(read_file(file));
  for (std::string line; std::getline(in, line);) {
    std::vector<std::string> cells;
    std::stringstream l(line);
    for (std::string cell; std::getline(l, cell, ',');) cells.push_back(cell);
    if (!line.empty() && line.back() == ',') cells.push_back("");
    rows.push_back(cells);
  }
  return rows;
}

}  // namespace

TEST_CASE("statistics: Student-t intervals for small n") {
  // t quantiles 0.975: df 1 12.7062, df 2 4.30265, df 4 2.77645 (tables).
  const MeanInterval two = mean_interval({1.0, 3.0});  // mean 2, sd √2, half 12.7062 · √2/√2
  CHECK(two.mean == 2.0);
  CHECK(two.sd == doctest::Approx(std::sqrt(2.0)));
  CHECK(two.high - two.mean == doctest::Approx(12.7062).epsilon(1e-5));
  const MeanInterval three = mean_interval({1.0, 2.0, 3.0});  // sd 1, half 4.30265 / √3
  CHECK(three.high - 2.0 == doctest::Approx(4.30265 / std::sqrt(3.0)).epsilon(1e-5));
  CHECK(three.low == doctest::Approx(2.0 - 4.30265 / std::sqrt(3.0)).epsilon(1e-5));
  const MeanInterval five = mean_interval({2, 4, 4, 5, 7});  // mean 4.4, sd √3.3
  CHECK(five.high - five.mean == doctest::Approx(2.77645 * std::sqrt(3.3) / std::sqrt(5.0)).epsilon(1e-5));
  const MeanInterval one = mean_interval({0.7});
  CHECK(one.mean == 0.7);
  CHECK(std::isnan(one.low));
  CHECK(std::isnan(one.high));
}

TEST_CASE("statistics: a paired difference computed by hand") {
  // Differences 0.02, 0.03, 0.01, 0.04: mean 0.025, sd 0.0129099, t = 0.025 / (0.0129099 / 2)
  // = 3.87298 on 3 df: two-sided p 0.030466, interval 0.025 ± 3.18245 · 0.0064550.
  const PairedDifference d = paired_difference({0.52, 0.53, 0.51, 0.54}, {0.50, 0.50, 0.50, 0.50});
  CHECK(d.n == 4);
  CHECK(d.mean_diff == doctest::Approx(0.025));
  CHECK(d.low == doctest::Approx(0.025 - 3.18245 * 0.0064550).epsilon(1e-4));
  CHECK(d.high == doctest::Approx(0.025 + 3.18245 * 0.0064550).epsilon(1e-4));
  CHECK(d.p_value == doctest::Approx(0.030466).epsilon(1e-3));
  CHECK(d.significant);
  // Differences that straddle 0: not significant.
  const PairedDifference none = paired_difference({0.52, 0.48, 0.51}, {0.50, 0.50, 0.50});
  CHECK(none.low < 0);
  CHECK(none.high > 0);
  CHECK_FALSE(none.significant);
  CHECK(none.p_value > 0.05);
  // One pair: no interval, no claim.
  const PairedDifference one = paired_difference({0.9}, {0.1});
  CHECK(std::isnan(one.p_value));
  CHECK_FALSE(one.significant);
  CHECK_THROWS_AS(paired_difference({1, 2}, {1}), std::invalid_argument);
}

TEST_CASE("statistics: a paired bootstrap over test samples, seeded") {
  const std::vector<double> ones(50, 1.0), zeros(50, 0.0);
  const PairedDifference all = paired_bootstrap(ones, zeros);
  CHECK(all.mean_diff == 1.0);
  CHECK(all.low == 1.0);
  CHECK(all.high == 1.0);
  CHECK(all.p_value == 0.0);
  CHECK(all.significant);
  // Ten samples a gets right and b wrong, ten the other way: no difference.
  std::vector<double> a(40, 1.0), b(40, 1.0);
  for (int i = 0; i < 10; ++i) b[size_t(i)] = 0, a[size_t(10 + i)] = 0;
  const PairedDifference even = paired_bootstrap(a, b, 2000, 7);
  CHECK(even.mean_diff == 0.0);
  CHECK(even.low < 0);
  CHECK(even.high > 0);
  CHECK_FALSE(even.significant);
  CHECK(even.p_value > 0.5);
  // A seed gives the same interval; the normal approximation's half width is 1.96 · sd / √n.
  const PairedDifference again = paired_bootstrap(a, b, 2000, 7);
  CHECK(again.low == even.low);
  CHECK(again.high == even.high);
  CHECK(even.high == doctest::Approx(1.96 * std::sqrt(0.5 - 0.0) / std::sqrt(40.0) * std::sqrt(39.0 / 40.0)).epsilon(0.25));
  CHECK_THROWS_AS(paired_bootstrap({}, {}), std::invalid_argument);
}

TEST_CASE("statistics: a sweep report's intervals are recomputed from its CSV rows") {
  ScratchDir dir;
  // upit beats sparse by 2 to 4 points in every repeat; sparse and dense differ by noise.
  const double upit[] = {0.62, 0.60, 0.63}, sparse[] = {0.59, 0.58, 0.59}, dense[] = {0.58, 0.59, 0.585};
  std::vector<RepeatRow> rows;
  for (int r = 0; r < 3; ++r)
    for (auto [method, experts, exact] : {std::tuple{"upit", 4, upit[r]}, {"sparse", 4, sparse[r]}, {"dense", 1, dense[r]}}) {
      MethodResult m;
      m.method = method;
      m.experts = experts;
      m.exact = exact;
      m.loss = 1.0 - exact;
      rows.push_back({100, r, uint64_t(r), m});
    }
  write_sweep_report(dir.path(), rows, "test");

  // summary.csv from sweep.csv's rows (read back by column name): metric,method,experts,data,n,
  // mean,sd,ci_low,ci_high.
  const auto sweep = read_csv(dir / "sweep.csv");
  auto column = [&](const char* name) {
    return size_t(std::find(sweep[0].begin(), sweep[0].end(), name) - sweep[0].begin());
  };
  REQUIRE(column("exact") < sweep[0].size());
  REQUIRE(sweep[0][2] == "seed");
  std::map<std::string, std::vector<double>> exact;
  for (size_t i = 1; i < sweep.size(); ++i) exact[sweep[i][column("method")]].push_back(std::stod(sweep[i][column("exact")]));
  REQUIRE(exact.at("upit").size() == 3);
  int checked = 0;
  for (const auto& s : read_csv(dir / "summary.csv")) {
    if (s[0] != "exact") continue;
    const MeanInterval want = mean_interval(exact.at(s[1]));
    CHECK(std::stoi(s[4]) == 3);
    CHECK(std::stod(s[5]) == doctest::Approx(want.mean).epsilon(1e-6));
    CHECK(std::stod(s[7]) == doctest::Approx(want.low).epsilon(1e-6));
    CHECK(std::stod(s[8]) == doctest::Approx(want.high).epsilon(1e-6));
    ++checked;
  }
  CHECK(checked == 3);
  // pairs.csv: metric,method_a,method_b,experts,data,n,mean_diff,ci_low,ci_high,p_value,significant.
  std::map<std::string, std::vector<std::string>> by_pair;
  for (const auto& p : read_csv(dir / "pairs.csv"))
    if (p[0] == "exact") by_pair[p[1] + "-" + p[2]] = p;
  REQUIRE(by_pair.size() == 3);
  const auto& us = by_pair.at("upit-sparse");
  const PairedDifference want = paired_difference(exact.at("upit"), exact.at("sparse"));
  CHECK(std::stod(us[6]) == doctest::Approx(want.mean_diff).epsilon(1e-6));
  CHECK(std::stod(us[7]) == doctest::Approx(want.low).epsilon(1e-6));
  CHECK(std::stod(us[8]) == doctest::Approx(want.high).epsilon(1e-6));
  CHECK(us[10] == (want.significant ? "1" : "0"));
  CHECK(by_pair.at("sparse-dense")[10] == "0");
  // The report's words follow the intervals: no "paper's shape" read from means.
  const std::string md = read_file(dir / "report.md");
  CHECK(md.find("upit E=4 − sparse E=4: +") != std::string::npos);
  CHECK(md.find("sparse E=4 − dense: no significant difference") != std::string::npos);
  CHECK(md.find("paper's shape") == std::string::npos);
}

TEST_CASE("statistics: with one repeat, exact match pairs come from a bootstrap over test samples, loss pairs make no claim") {
  std::vector<RepeatRow> rows;
  for (auto [method, experts, right] : {std::tuple{"upit", 4, 30}, {"dense", 1, 10}}) {
    MethodResult m;
    m.method = method;
    m.experts = experts;
    for (int i = 0; i < 40; ++i) m.exact_by_sample.push_back(i < right ? 1 : 0);
    m.exact = right / 40.0;
    m.loss = 1.0;
    rows.push_back({100, 0, 0, m});
  }
  const std::vector<MethodPair> ps = method_pairs(rows);
  REQUIRE(ps.size() == 2);
  const MethodPair& exact = ps[0].metric == "exact" ? ps[0] : ps[1];
  const MethodPair& loss = ps[0].metric == "exact" ? ps[1] : ps[0];
  CHECK(exact.bootstrap);
  CHECK(exact.d.n == 40);  // over the test samples, not repeats
  CHECK(exact.d.mean_diff == doctest::Approx(0.5));
  CHECK(exact.d.significant);
  const PairedDifference want = paired_bootstrap(rows[0].result.exact_by_sample, rows[1].result.exact_by_sample);
  CHECK(exact.d.low == want.low);
  CHECK(!loss.bootstrap);
  CHECK(std::isnan(loss.d.low));
  const std::string csv = pairs_csv(ps);
  CHECK(csv.find(",1,bootstrap,") != std::string::npos);
  const std::string words = pair_sentences(ps, false);
  CHECK(words.find("upit E=4 − dense: +50.0 points exact match, 95% CI [") != std::string::npos);
  CHECK(words.find("by a paired bootstrap over the 40 test samples") != std::string::npos);
  CHECK(words.find("in one run: no interval, so no claim") != std::string::npos);
}

TEST_CASE("statistics: Holm's correction over a report's comparisons, by hand") {
  // Three methods, four repeats: upit ahead of sparse by a steady 2 points, dense by noise.
  const double upit[] = {0.62, 0.60, 0.63, 0.61}, sparse[] = {0.60, 0.585, 0.61, 0.585}, dense[] = {0.58, 0.61, 0.60, 0.57};
  std::vector<RepeatRow> rows;
  for (int r = 0; r < 4; ++r)
    for (auto [method, experts, exact] : {std::tuple{"upit", 4, upit[r]}, {"sparse", 4, sparse[r]}, {"dense", 1, dense[r]}}) {
      MethodResult m;
      m.method = method;
      m.experts = experts;
      m.exact = exact;
      m.loss = 1.0;  // the same everywhere: no loss difference has a p value below 1
      rows.push_back({100, r, uint64_t(r), m});
    }
  const std::vector<MethodPair> ps = method_pairs(rows);
  std::vector<double> p;  // the exact-match pairs' raw p values, ascending
  for (const MethodPair& x : ps)
    if (x.metric == "exact") p.push_back(x.d.p_value);
  REQUIRE(p.size() == 3);
  std::sort(p.begin(), p.end());
  const double want[] = {std::min(1.0, 3 * p[0]), std::max(std::min(1.0, 3 * p[0]), std::min(1.0, 2 * p[1])),
                         std::max({std::min(1.0, 3 * p[0]), std::min(1.0, 2 * p[1]), std::min(1.0, p[2])})};
  for (const MethodPair& x : ps) {
    if (x.metric != "exact") continue;
    const size_t rank = size_t(std::find(p.begin(), p.end(), x.d.p_value) - p.begin());
    CHECK(x.p_holm == doctest::Approx(want[rank]).epsilon(1e-12));
    CHECK(x.p_holm >= x.d.p_value);
  }
  const std::string words = pair_sentences(ps, false);
  CHECK(words.rfind("6 comparisons with a p value: at 95% each, about 0.3 would show a difference by chance alone", 0) == 0);
  CHECK(pairs_csv(ps).rfind("metric,method_a,method_b,experts,data,n,mean_diff,ci_low,ci_high,p_value,significant,interval,p_holm\n", 0) == 0);
}
