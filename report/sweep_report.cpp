#include "report/sweep_report.hpp"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <tuple>

#include <fmt/format.h>

#include "core/json_file.hpp"
#include "core/staged_path.hpp"
#include "report/plot.hpp"
#include "report/repeats.hpp"

namespace upcycle {

namespace {

namespace fs = std::filesystem;

// arm → data size → the metric over repeats.
using Table = std::map<std::string, std::map<int64_t, MeanInterval>>;

Table table(const std::vector<RepeatRow>& rows, double MethodResult::*metric) {
  std::map<std::string, std::map<int64_t, std::vector<double>>> values;
  for (const RepeatRow& r : rows) values[arm_name(r.result)][r.data].push_back(r.result.*metric);
  Table t;
  for (const auto& [a, by_data] : values)
    for (const auto& [d, v] : by_data) t[a][d] = mean_interval(v);
  return t;
}

std::string plot(const Table& t, const std::string& title, const std::string& y_label, bool log_y) {
  LinePlot p{title, "training samples", y_label, {}, true, log_y, true};
  for (const auto& [a, by_data] : t) {
    Series s{a, {}, {}};
    for (const auto& [d, st] : by_data) s.x.push_back(double(d)), s.y.push_back(st.mean);
    p.series.push_back(std::move(s));
  }
  return line_plot_svg(p);
}

std::string markdown_table(const Table& t, const std::set<int64_t>& sizes, int digits, double scale) {
  std::string md = "| method |";
  for (int64_t d : sizes) md += fmt::format(" {} samples |", d);
  md += "\n|---|";
  for (size_t i = 0; i < sizes.size(); ++i) md += "---:|";
  md += "\n";
  for (const auto& [a, by_data] : t) {
    md += "| " + a + " |";
    for (int64_t d : sizes) {
      const auto it = by_data.find(d);
      if (it == by_data.end()) { md += " |"; continue; }
      md += " " + mean_with_interval(it->second, digits, scale) + " |";
    }
    md += "\n";
  }
  return md;
}

// UpIT's exact match at the largest data size by expert count (means; the pairs above carry the
// intervals).
std::string upit_by_experts(const Table& exact, const std::set<int64_t>& sizes, const std::set<int>& experts) {
  const int64_t largest = sizes.empty() ? 0 : *sizes.rbegin();
  std::string trend;
  for (int k : experts) {
    const auto it = exact.find(fmt::format("upit E={}", k));
    if (it != exact.end() && it->second.count(largest))
      trend += fmt::format("{}{} experts {:.1f}%", trend.empty() ? "" : ", ", k, 100 * it->second.at(largest).mean);
  }
  return trend.empty() ? "" : fmt::format("- UpIT at {} samples by expert count (means): {}.\n", largest, trend);
}

// Per expert count: sparse upcycling's best exact match over the data sizes, and the smallest size
// at which UpIT's mean reaches it, with both intervals (whether they overlap says whether the
// reach is more than noise).
std::string data_efficiency(const Table& exact, const std::set<int>& experts) {
  std::string md;
  for (int k : experts) {
    const auto sparse = exact.find(fmt::format("sparse E={}", k)), upit = exact.find(fmt::format("upit E={}", k));
    if (sparse == exact.end() || upit == exact.end()) continue;
    const auto best = std::max_element(sparse->second.begin(), sparse->second.end(),
                                       [](const auto& a, const auto& b) { return a.second.mean < b.second.mean; });
    md += fmt::format("| {} | {} at {} |", k, mean_with_interval(best->second, 1, 100), best->first);
    const auto reach = std::find_if(upit->second.begin(), upit->second.end(),
                                    [&](const auto& d) { return d.second.mean >= best->second.mean; });
    if (reach == upit->second.end()) {
      md += " not reached |  |  |\n";
      continue;
    }
    const bool apart = reach->second.n > 1 && best->second.n > 1 &&
                       (reach->second.low > best->second.high || reach->second.high < best->second.low);
    md += fmt::format(" {} | {} | {} |\n", reach->first, mean_with_interval(reach->second, 1, 100),
                      reach->second.n < 2 ? "one repeat: no interval" : apart ? "no (UpIT above)" : "yes: within noise");
  }
  if (md.empty()) return {};
  return "\n## Data efficiency\n\nThe smallest training-data size at which UpIT's mean exact match reaches sparse upcycling's "
         "best (means [95% CI over repeats]):\n\n| experts | sparse's best (%) at samples | UpIT reaches it at | UpIT there (%) "
         "| intervals overlap |\n|---:|---:|---:|---:|---|\n" + md;
}

}  // namespace

void write_sweep_report(const fs::path& dir, const std::vector<RepeatRow>& rows, const std::string& setup) {
  std::set<int64_t> sizes;
  std::set<int> experts;
  for (const RepeatRow& r : rows) {
    sizes.insert(r.data);
    if (r.result.method != "dense") experts.insert(r.result.experts);
  }
  const Table exact = table(rows, &MethodResult::exact), loss = table(rows, &MethodResult::loss);
  fs::create_directories(dir / "plots");
  replace_text_file(dir / "plots" / "exact.svg", plot(exact, "Exact match against training data", "exact match", false));
  replace_text_file(dir / "plots" / "loss.svg", plot(loss, "Eval loss against training data", "eval loss", true));
  replace_text_file(dir / "sweep.csv", rows_csv(rows));
  replace_text_file(dir / "summary.csv", summary_csv(rows));
  const std::vector<MethodPair> ps = method_pairs(rows);
  replace_text_file(dir / "pairs.csv", pairs_csv(ps));
  std::string md = "# upcycle sweep\n\n" + setup + "\n\n## Exact match (%, mean [95% CI over repeats])\n\n" +
                   markdown_table(exact, sizes, 1, 100) + "\n## Eval loss\n\n" + markdown_table(loss, sizes, 4, 1) +
                   "\n## What it shows\n\nPaired differences over repeats (the same seed on both sides; pairs.csv, "
                   "summary.csv):\n\n" + pair_sentences(ps, true) + upit_by_experts(exact, sizes, experts) +
                   data_efficiency(exact, experts) +
                   "\n![exact match](plots/exact.svg)\n\n![eval loss](plots/loss.svg)\n\nEvery cell is a row of sweep.csv; "
                   "each cell's folder holds its models, training metrics and evaluations.\n";
  replace_text_file(dir / "report.md", md);
}

}  // namespace upcycle
