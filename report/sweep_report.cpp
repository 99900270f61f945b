#include "report/sweep_report.hpp"

#include <cmath>
#include <map>
#include <set>

#include <fmt/format.h>

#include "core/json_file.hpp"
#include "core/staged_path.hpp"
#include "report/experiment_report.hpp"
#include "report/plot.hpp"

namespace upcycle {

namespace {

namespace fs = std::filesystem;

// A line of the plots and tables: a method at an expert count ("dense", "upit E=8").
std::string arm(const MethodResult& m) { return m.method == "dense" ? "dense" : fmt::format("{} E={}", m.method, m.experts); }

struct Stats {
  double mean = 0, sd = 0;
  int n = 0;
};

Stats stats(const std::vector<double>& v) {
  Stats s;
  s.n = int(v.size());
  for (double x : v) s.mean += x / double(v.size());
  for (double x : v) s.sd += (x - s.mean) * (x - s.mean);
  s.sd = v.size() > 1 ? std::sqrt(s.sd / double(v.size() - 1)) : 0.0;
  return s;
}

// arm → data size → the metric over repeats.
using Table = std::map<std::string, std::map<int64_t, Stats>>;

Table table(const std::vector<SweepRow>& rows, double MethodResult::*metric) {
  std::map<std::string, std::map<int64_t, std::vector<double>>> values;
  for (const SweepRow& r : rows) values[arm(r.result)][r.data].push_back(r.result.*metric);
  Table t;
  for (const auto& [a, by_data] : values)
    for (const auto& [d, v] : by_data) t[a][d] = stats(v);
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

std::string markdown_table(const Table& t, const std::set<int64_t>& sizes, const char* format, double scale) {
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
      md += " " + fmt::format(fmt::runtime(format), scale * it->second.mean);
      if (it->second.n > 1) md += " ± " + fmt::format(fmt::runtime(format), scale * it->second.sd);
      md += " |";
    }
    md += "\n";
  }
  return md;
}

// Per data size, the paper's shape at the largest expert count (UpIT >= sparse > dense by exact
// match), and whether UpIT's exact match grows with its experts at the largest data size.
std::string findings(const Table& exact, const std::set<int64_t>& sizes, const std::set<int>& experts) {
  std::string words;
  if (experts.empty()) return words;
  const int e = *experts.rbegin();
  const std::string upit = fmt::format("upit E={}", e), sparse = fmt::format("sparse E={}", e);
  auto mean = [&](const std::string& a, int64_t d) -> std::optional<double> {
    const auto it = exact.find(a);
    if (it == exact.end() || !it->second.count(d)) return std::nullopt;
    return it->second.at(d).mean;
  };
  for (int64_t d : sizes) {
    const auto u = mean(upit, d), s = mean(sparse, d), dn = mean("dense", d);
    if (!u || !s || !dn) continue;
    const bool shape = *u >= *s && *s > *dn;
    words += fmt::format("- {} samples, {} experts: upit {:.1f}%, sparse {:.1f}%, dense {:.1f}%: {}.\n", d, e, 100 * *u,
                         100 * *s, 100 * *dn, shape ? "the paper's shape (UpIT >= sparse > dense)" : "not the paper's shape");
  }
  const int64_t largest = sizes.empty() ? 0 : *sizes.rbegin();
  std::string trend;
  for (int k : experts)
    if (const auto u = mean(fmt::format("upit E={}", k), largest)) trend += fmt::format("{}{} experts {:.1f}%", trend.empty() ? "" : ", ", k, 100 * *u);
  if (!trend.empty()) words += fmt::format("- UpIT at {} samples by expert count: {}.\n", largest, trend);
  return words;
}

std::string csv(const std::vector<SweepRow>& rows) {
  std::vector<MethodResult> results;
  for (const SweepRow& r : rows) results.push_back(r.result);
  const auto sets = heldout_names(results);
  std::string out = "data,repeat,method,experts,total_params,active_params,eval_loss,eval_ppl,exact,seconds";
  for (const auto& h : sets) out += ",exact_heldout_" + h;
  out += "\n";
  for (const SweepRow& r : rows) {
    const MethodResult& m = r.result;
    out += fmt::format("{},{},{},{},{},{},{:.6f},{:.6f},{:.6f},{:.1f}", r.data, r.repeat, m.method, m.experts,
                       m.total_params, m.active_params, m.loss, m.ppl, m.exact, m.seconds);
    for (const auto& h : sets) out += m.heldout_exact.count(h) ? fmt::format(",{:.6f}", m.heldout_exact.at(h)) : ",";
    out += "\n";
  }
  return out;
}

}  // namespace

void write_sweep_report(const fs::path& dir, const std::vector<SweepRow>& rows, const std::string& setup) {
  std::set<int64_t> sizes;
  std::set<int> experts;
  for (const SweepRow& r : rows) {
    sizes.insert(r.data);
    if (r.result.method != "dense") experts.insert(r.result.experts);
  }
  const Table exact = table(rows, &MethodResult::exact), loss = table(rows, &MethodResult::loss);
  fs::create_directories(dir / "plots");
  replace_text_file(dir / "plots" / "exact.svg", plot(exact, "Exact match against training data", "exact match", false));
  replace_text_file(dir / "plots" / "loss.svg", plot(loss, "Eval loss against training data", "eval loss", true));
  replace_text_file(dir / "sweep.csv", csv(rows));
  std::string md = "# upcycle sweep\n\n" + setup + "\n\n## Exact match (%, mean" + (rows.size() > 1 ? " ± sd over repeats" : "") +
                   ")\n\n" + markdown_table(exact, sizes, "{:.1f}", 100) + "\n## Eval loss\n\n" +
                   markdown_table(loss, sizes, "{:.4f}", 1) + "\n## What it shows\n\n" + findings(exact, sizes, experts) +
                   "\n![exact match](plots/exact.svg)\n\n![eval loss](plots/loss.svg)\n\nEvery cell is a row of sweep.csv; "
                   "each cell's folder holds its models, training metrics and evaluations.\n";
  replace_text_file(dir / "report.md", md);
}

}  // namespace upcycle
