#include "report/sweep_report.hpp"

#include <cmath>
#include <map>
#include <set>
#include <tuple>

#include <fmt/format.h>

#include "core/json_file.hpp"
#include "core/staged_path.hpp"
#include "report/experiment_report.hpp"
#include "report/plot.hpp"
#include "report/statistics.hpp"

namespace upcycle {

namespace {

namespace fs = std::filesystem;

// A line of the plots and tables: a method at an expert count ("dense", "upit E=8").
std::string arm(const MethodResult& m) { return m.method == "dense" ? "dense" : fmt::format("{} E={}", m.method, m.experts); }

// A metric of the rows: its name in summary.csv and pairs.csv (sweep.csv's column), the field, and
// how the report writes a value and a difference of it.
struct Metric {
  const char* name;
  double MethodResult::*field;
  const char* words;  // "points exact match"
  double scale;       // 100 for shares, written in points
};
const Metric kMetrics[] = {{"exact", &MethodResult::exact, "points exact match", 100},
                           {"eval_loss", &MethodResult::loss, "eval loss (lower is better)", 1}};

// arm → data size → the metric over repeats.
using Table = std::map<std::string, std::map<int64_t, MeanInterval>>;

Table table(const std::vector<SweepRow>& rows, double MethodResult::*metric) {
  std::map<std::string, std::map<int64_t, std::vector<double>>> values;
  for (const SweepRow& r : rows) values[arm(r.result)][r.data].push_back(r.result.*metric);
  Table t;
  for (const auto& [a, by_data] : values)
    for (const auto& [d, v] : by_data) t[a][d] = mean_interval(v);
  return t;
}

// A number for the CSVs: empty where there is none (NaN: one repeat has no interval).
std::string number(double v) { return std::isnan(v) ? "" : fmt::format("{:.6f}", v); }

// One line per metric, arm and data size: n, mean, sd and the 95% interval over repeats.
std::string summary_csv(const std::vector<SweepRow>& rows) {
  std::string out = "metric,method,experts,data,n,mean,sd,ci_low,ci_high\n";
  for (const Metric& m : kMetrics) {
    std::map<std::tuple<std::string, int, int64_t>, std::vector<double>> values;
    for (const SweepRow& r : rows) values[{r.result.method, r.result.experts, r.data}].push_back(r.result.*m.field);
    for (const auto& [key, v] : values) {
      const auto& [method, experts, data] = key;
      const MeanInterval s = mean_interval(v);
      out += fmt::format("{},{},{},{},{},{},{},{},{}\n", m.name, method, experts, data, s.n, number(s.mean),
                         s.n > 1 ? number(s.sd) : "", number(s.low), number(s.high));
    }
  }
  return out;
}

struct Pair {
  const Metric* metric;
  MethodResult a, b;  // a's and b's arm (method, experts)
  int64_t data;
  PairedDifference d;
};

// Every pair of arms at a data size that shares an expert count (or has dense as b), paired by
// repeat: the same seed on both sides.
std::vector<Pair> pairs(const std::vector<SweepRow>& rows) {
  std::map<std::tuple<int64_t, std::string, int>, std::map<int, const MethodResult*>> by_arm;
  for (const SweepRow& r : rows) by_arm[{r.data, r.result.method, r.result.experts}][r.repeat] = &r.result;
  std::vector<Pair> out;
  for (const Metric& m : kMetrics)
    for (const auto& [ka, ra] : by_arm)
      for (const auto& [kb, rb] : by_arm) {
        const auto& [data_a, method_a, experts_a] = ka;
        const auto& [data_b, method_b, experts_b] = kb;
        if (data_a != data_b || pair_rank(method_a) > pair_rank(method_b) || (pair_rank(method_a) == pair_rank(method_b) && method_a >= method_b) ||
            (method_b != "dense" && experts_a != experts_b))
          continue;
        std::vector<double> va, vb;
        for (const auto& [repeat, result] : ra)
          if (rb.count(repeat)) va.push_back(result->*m.field), vb.push_back(rb.at(repeat)->*m.field);
        if (va.empty()) continue;
        out.push_back({&m, *ra.begin()->second, *rb.begin()->second, data_a, paired_difference(va, vb)});
      }
  return out;
}

std::string pairs_csv(const std::vector<Pair>& ps) {
  std::string out = "metric,method_a,method_b,experts,data,n,mean_diff,ci_low,ci_high,p_value,significant\n";
  for (const Pair& p : ps)
    out += fmt::format("{},{},{},{},{},{},{},{},{},{},{}\n", p.metric->name, p.a.method, p.b.method, p.a.experts, p.data, p.d.n,
                       number(p.d.mean_diff), number(p.d.low), number(p.d.high), number(p.d.p_value), p.d.significant ? 1 : 0);
  return out;
}

// A sentence per pair, from its interval alone: the difference with its interval where the
// interval excludes 0, "no significant difference" where it covers 0, and no claim from one run.
std::string findings(const std::vector<Pair>& ps) {
  std::string words;
  for (const Pair& p : ps) {
    const double k = p.metric->scale;
    const std::string what = fmt::format("- {} samples, {} − {}", p.data, arm(p.a), arm(p.b));
    if (p.d.n < 2) {
      words += fmt::format("{}: {:+.4g} {} in {} run: no interval, so no claim (run --repeats 3 or more).\n", what,
                           k * p.d.mean_diff, p.metric->words, p.d.n);
      continue;
    }
    const std::string numbers = fmt::format("{:+.4g} {}, 95% CI [{:+.4g}, {:+.4g}], {} repeats, p = {:.3g}", k * p.d.mean_diff,
                                            p.metric->words, k * p.d.low, k * p.d.high, p.d.n, p.d.p_value);
    words += p.d.significant ? fmt::format("{}: {}.\n", what, numbers)
                             : fmt::format("{}: no significant difference ({}).\n", what, numbers);
  }
  return words;
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
      if (it->second.n > 1)
        md += " [" + fmt::format(fmt::runtime(format), scale * it->second.low) + ", " +
              fmt::format(fmt::runtime(format), scale * it->second.high) + "]";
      md += " |";
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
  replace_text_file(dir / "summary.csv", summary_csv(rows));
  const std::vector<Pair> ps = pairs(rows);
  replace_text_file(dir / "pairs.csv", pairs_csv(ps));
  std::string md = "# upcycle sweep\n\n" + setup + "\n\n## Exact match (%, mean [95% CI over repeats])\n\n" +
                   markdown_table(exact, sizes, "{:.1f}", 100) + "\n## Eval loss\n\n" + markdown_table(loss, sizes, "{:.4f}", 1) +
                   "\n## What it shows\n\nPaired differences over repeats (the same seed on both sides; pairs.csv, "
                   "summary.csv):\n\n" + findings(ps) + upit_by_experts(exact, sizes, experts) +
                   "\n![exact match](plots/exact.svg)\n\n![eval loss](plots/loss.svg)\n\nEvery cell is a row of sweep.csv; "
                   "each cell's folder holds its models, training metrics and evaluations.\n";
  replace_text_file(dir / "report.md", md);
}

}  // namespace upcycle
