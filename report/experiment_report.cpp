#include "report/experiment_report.hpp"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "core/json_file.hpp"
#include "core/staged_path.hpp"
#include "report/plot.hpp"
#include "report/statistics.hpp"

namespace upcycle {

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

std::vector<json> read_metrics(const fs::path& file) {
  std::vector<json> lines;
  std::ifstream in(file);
  for (std::string line; std::getline(in, line);) {
    json j = json::parse(line, nullptr, false);
    if (!j.is_discarded() && j.is_object() && j.contains("loss")) lines.push_back(std::move(j));
  }
  return lines;
}

fs::path metrics_of(const MethodResult& m) { return m.dir / "tuned" / "metrics.jsonl"; }

// Training loss against step, a moving mean over `window` steps (single steps are noisy).
Series loss_series(const std::string& name, const fs::path& metrics, size_t window) {
  Series s{name, {}, {}};
  const std::vector<json> lines = read_metrics(metrics);
  double sum = 0;
  for (size_t i = 0; i < lines.size(); ++i) {
    sum += lines[i]["loss"].get<double>();
    if (i >= window) sum -= lines[i - window]["loss"].get<double>();
    s.x.push_back(lines[i]["step"].get<double>());
    s.y.push_back(sum / double(std::min(i + 1, window)));
  }
  return s;
}

std::string loss_plot(const ExperimentReport& r) {
  LinePlot p{"Training loss (moving mean of 10 steps)", "step", "loss", {}, false, true, false};
  if (!r.base_dir.empty()) p.series.push_back(loss_series("base", r.base_dir / "metrics.jsonl", 10));
  p.series.push_back(loss_series("dense run (checkpoints)", r.dense_dir / "metrics.jsonl", 10));
  for (const MethodResult& m : r.results) p.series.push_back(loss_series(m.method, metrics_of(m), 10));
  return line_plot_svg(p);
}

Heatmap matrix_map(const std::string& title, const std::string& axis, const std::vector<std::vector<double>>& v) {
  Heatmap h{title, axis, axis, {}, {}, v, true};
  for (size_t i = 0; i < v.size(); ++i) h.row_names.push_back(std::to_string(i));
  h.col_names = h.row_names;
  return h;
}

std::vector<std::vector<double>> to_matrix(const json& j) { return j.get<std::vector<std::vector<double>>>(); }

std::string load_plot(const ExperimentReport& r) {
  std::vector<Heatmap> maps;
  for (const MethodResult& m : r.results) {
    const auto load = final_expert_load(metrics_of(m));
    if (load.empty()) continue;
    Heatmap h{m.method, "expert", "layer", {}, {}, load, true};
    for (size_t l = 0; l < load.size(); ++l) h.row_names.push_back(std::to_string(l));
    for (size_t e = 0; e < load[0].size(); ++e) h.col_names.push_back(std::to_string(e));
    maps.push_back(std::move(h));
  }
  return maps.empty() ? std::string() : heatmaps_svg(maps, "Expert load per layer (share of routed tokens, end of tuning)");
}

// UpIT's convert report: the expert distances before and after the expansion.
std::string distance_plot(const ExperimentReport& r) {
  for (const MethodResult& m : r.results) {
    const fs::path file = m.dir / "init" / "upcycle_convert.json";
    if (m.method != "upit" || !fs::exists(file)) continue;
    const json j = read_json_file(file);
    if (!j.contains("distances_before") || !j.contains("distances_after")) continue;
    return heatmaps_svg({matrix_map("checkpoints", "expert", to_matrix(j["distances_before"])),
                         matrix_map("experts after expansion", "expert", to_matrix(j["distances_after"]))},
                        "UpIT: cosine distances between experts' FFN deltas");
  }
  return {};
}

std::vector<std::string> all_tasks(const ExperimentReport& r) {
  std::set<std::string> tasks;
  for (const MethodResult& m : r.results)
    for (const auto& [t, acc] : m.exact_by_task) tasks.insert(t);
  return {tasks.begin(), tasks.end()};
}

std::string csv(const ExperimentReport& r) {
  const auto tasks = all_tasks(r);
  const auto sets = heldout_names(r.results);
  std::string out = "method,experts,total_params,active_params,eval_loss,eval_ppl,exact,seconds";
  for (const auto& h : sets) out += ",exact_heldout_" + h;
  for (const auto& t : tasks) out += ",exact_" + t;
  out += "\n";
  for (const MethodResult& m : r.results) {
    out += fmt::format("{},{},{},{},{:.6f},{:.6f},{:.6f},{:.1f}", m.method, m.experts, m.total_params, m.active_params,
                       m.loss, m.ppl, m.exact, m.seconds);
    for (const auto& h : sets) out += m.heldout_exact.count(h) ? fmt::format(",{:.6f}", m.heldout_exact.at(h)) : ",";
    for (const auto& t : tasks) out += m.exact_by_task.count(t) ? fmt::format(",{:.6f}", m.exact_by_task.at(t)) : ",";
    out += "\n";
  }
  return out;
}

std::string millions(int64_t n) { return fmt::format("{:.2f} M", double(n) / 1e6); }

std::string markdown(const ExperimentReport& r, bool has_load, bool has_distances) {
  std::string md = "# " + r.title + "\n\n" + r.setup + "\n\n";
  const auto sets = heldout_names(r.results);
  md += "| method | experts | total params | active params | eval loss | exact match |";
  for (const auto& h : sets) md += " held-out " + h + " |";
  md += " wall time |\n|---|---:|---:|---:|---:|---:|";
  for (size_t i = 0; i < sets.size(); ++i) md += "---:|";
  md += "---:|\n";
  for (const MethodResult& m : r.results) {
    md += fmt::format("| {} | {} | {} | {} | {:.4f} | {:.1f}% |", m.method, m.experts, millions(m.total_params),
                      millions(m.active_params), m.loss, 100 * m.exact);
    for (const auto& h : sets) md += m.heldout_exact.count(h) ? fmt::format(" {:.1f}% |", 100 * m.heldout_exact.at(h)) : " |";
    md += fmt::format(" {:.0f} s |\n", m.seconds);
  }
  if (!r.base_dir.empty()) md += fmt::format("\nThe base tuning took {:.0f} s.", r.base_seconds);
  md += fmt::format("\nThe shared dense run (its checkpoints feed every method) took {:.0f} s.\n", r.dense_seconds);
  md += "\n## What the table shows\n\n" + findings(r) + "\n";
  const auto tasks = all_tasks(r);
  if (!tasks.empty()) {
    md += "\n## Exact match per task\n\n| task |";
    for (const MethodResult& m : r.results) md += " " + m.method + " |";
    md += "\n|---|";
    for (size_t i = 0; i < r.results.size(); ++i) md += "---:|";
    md += "\n";
    for (const auto& t : tasks) {
      md += "| " + t + " |";
      for (const MethodResult& m : r.results)
        md += m.exact_by_task.count(t) ? fmt::format(" {:.0f}% |", 100 * m.exact_by_task.at(t)) : " |";
      md += "\n";
    }
  }
  md += "\n## Plots\n\n![training loss](plots/loss.svg)\n";
  if (has_load) md += "\n![expert load](plots/expert_load.svg)\n";
  if (has_distances) md += "\n![expert distances](plots/distances.svg)\n";
  md += "\nEvery number here is in metrics.csv; each method's folder holds its model, its training\n"
        "metrics (tuned/metrics.jsonl) and its evaluations (eval-*.json).\n";
  return md;
}

const MethodResult* find(const ExperimentReport& r, const std::string& method) {
  for (const MethodResult& m : r.results)
    if (m.method == method) return &m;
  return nullptr;
}

// How far the busiest and the idlest expert are from an even share, over the layers.
std::string balance_words(const MethodResult& m) {
  const auto load = final_expert_load(metrics_of(m));
  if (load.empty()) return {};
  double most = 0, least = 1;
  for (const auto& layer : load)
    for (double share : layer) most = std::max(most, share), least = std::min(least, share);
  const double even = 1.0 / double(load[0].size());
  std::string s = fmt::format("{}: the busiest expert takes {:.1f}x an even share, the idlest {:.2f}x", m.method,
                              most / even, least / even);
  if (least < 0.1 * even) s += " (some experts are nearly unused: a sign of router collapse)";
  return s + ".";
}

// The converted model's quality before any tuning shows in the first step's loss.
std::string start_end_words(const MethodResult& m) {
  const std::vector<json> lines = read_metrics(metrics_of(m));
  if (lines.empty()) return m.method + ": no training metrics";
  const size_t tail = std::max<size_t>(1, lines.size() / 10);
  double end = 0;
  for (size_t i = lines.size() - tail; i < lines.size(); ++i) end += lines[i]["loss"].get<double>() / double(tail);
  return fmt::format("{}: {:.4f} -> {:.4f}", m.method, lines.front()["loss"].get<double>(), end);
}

// What in the runs explains UpIT not leading: how the converted models start, router collapse,
// the test set's resolution.
std::string reasons(const MethodResult& sparse, const MethodResult& upit) {
  std::string out;
  const std::vector<json> s = read_metrics(metrics_of(sparse)), u = read_metrics(metrics_of(upit));
  if (!s.empty() && !u.empty() && u.front()["loss"].get<double>() > s.front()["loss"].get<double>())
    out += fmt::format(" UpIT's converted model starts worse (first-step loss {:.4f} against sparse upcycling's {:.4f}): its "
                       "experts include the dense run's early checkpoints, weaker models rather than differently skilled ones "
                       "(the paper's checkpoints come from tuning a strong pretrained model);",
                       u.front()["loss"].get<double>(), s.front()["loss"].get<double>());
  for (const MethodResult* m : {&sparse, &upit}) {
    const auto load = final_expert_load(metrics_of(*m));
    double least = 1;
    for (const auto& layer : load)
      for (double share : layer) least = std::min(least, share);
    if (!load.empty() && least < 0.1 / double(load[0].size()))
      out += fmt::format(" {}'s routers collapse onto a few experts (one gets under a tenth of an even share), so few "
                         "experts train;", m->method);
  }
  out += fmt::format(" one test sample is {:.2f} points of exact match.",
                     100.0 / double(std::max<int64_t>(1, upit.exact_total)));
  return out;
}

}  // namespace

std::vector<std::string> heldout_names(const std::vector<MethodResult>& results) {
  std::set<std::string> names;
  for (const MethodResult& m : results)
    for (const auto& [name, acc] : m.heldout_exact) names.insert(name);
  return {names.begin(), names.end()};
}

std::vector<std::vector<double>> final_expert_load(const fs::path& metrics) {
  std::vector<json> lines;
  for (json& j : read_metrics(metrics))
    if (j.contains("expert_load")) lines.push_back(std::move(j));
  if (lines.empty()) return {};
  const size_t tail = std::max<size_t>(1, lines.size() / 10);
  std::vector<std::vector<double>> mean;
  for (size_t i = lines.size() - tail; i < lines.size(); ++i) {
    const auto load = to_matrix(lines[i]["expert_load"]);
    if (mean.empty()) mean.assign(load.size(), std::vector<double>(load.empty() ? 0 : load[0].size(), 0.0));
    for (size_t l = 0; l < load.size() && l < mean.size(); ++l)
      for (size_t e = 0; e < load[l].size() && e < mean[l].size(); ++e) mean[l][e] += load[l][e] / double(tail);
  }
  return mean;
}

// Exact match of each pair of methods (a − b, UpIT first, dense last) over the test samples: a
// paired bootstrap, marked as one run's, whose sentence follows its interval alone.
std::string pair_words(const ExperimentReport& r) {
  std::vector<const MethodResult*> ms;
  for (const MethodResult& m : r.results)
    if (m.exact_by_sample.size() == size_t(m.exact_total) && m.exact_total > 0) ms.push_back(&m);
  std::stable_sort(ms.begin(), ms.end(), [](auto a, auto b) { return pair_rank(a->method) < pair_rank(b->method); });
  std::string words;
  for (size_t i = 0; i < ms.size(); ++i)
    for (size_t j = i + 1; j < ms.size(); ++j) {
      if (ms[i]->exact_by_sample.size() != ms[j]->exact_by_sample.size()) continue;
      const PairedDifference d = paired_bootstrap(ms[i]->exact_by_sample, ms[j]->exact_by_sample);
      const std::string numbers =
          fmt::format("{:+.1f} points exact match, 95% CI [{:+.1f}, {:+.1f}] by a paired bootstrap over the {} test samples "
                      "(2,000 resamples; one run, so it covers the test set's noise, not run-to-run variation)",
                      100 * d.mean_diff, 100 * d.low, 100 * d.high, d.n);
      words += fmt::format("- {} − {}: {}.\n", ms[i]->method, ms[j]->method,
                           d.significant ? numbers : "no significant difference (" + numbers + ")");
    }
  return words;
}

std::string findings(const ExperimentReport& r) {
  std::vector<const MethodResult*> by_exact;
  for (const MethodResult& m : r.results) by_exact.push_back(&m);
  std::stable_sort(by_exact.begin(), by_exact.end(), [](auto a, auto b) { return a->exact > b->exact; });
  std::string words = "By exact match: ";
  for (size_t i = 0; i < by_exact.size(); ++i)
    words += fmt::format("{}{} {:.1f}%", i ? ", then " : "", by_exact[i]->method, 100 * by_exact[i]->exact);
  auto by_loss = by_exact;
  std::stable_sort(by_loss.begin(), by_loss.end(), [](auto a, auto b) { return a->loss < b->loss; });
  words += ". By eval loss: ";
  for (size_t i = 0; i < by_loss.size(); ++i)
    words += fmt::format("{}{} {:.4f}", i ? ", then " : "", by_loss[i]->method, by_loss[i]->loss);
  words += ".\n\n";
  words += pair_words(r);
  const MethodResult *sparse = find(r, "sparse"), *upit = find(r, "upit");
  if (sparse && upit) words += "\nWhat the runs show about UpIT against sparse upcycling:" + reasons(*sparse, *upit) + "\n";
  words += "\nWhere each tuning starts and ends (training loss of its first step, mean of its last tenth):";
  for (const MethodResult& m : r.results) words += "\n- " + start_end_words(m);
  for (const MethodResult& m : r.results) {
    const std::string b = balance_words(m);
    if (!b.empty()) words += "\n- " + b;
  }
  return words + "\n";
}

void write_experiment_report(const fs::path& dir, const ExperimentReport& r) {
  fs::create_directories(dir / "plots");
  replace_text_file(dir / "plots" / "loss.svg", loss_plot(r));
  const std::string load = load_plot(r), distances = distance_plot(r);
  if (!load.empty()) replace_text_file(dir / "plots" / "expert_load.svg", load);
  if (!distances.empty()) replace_text_file(dir / "plots" / "distances.svg", distances);
  replace_text_file(dir / "metrics.csv", csv(r));
  replace_text_file(dir / "report.md", markdown(r, !load.empty(), !distances.empty()));
}

}  // namespace upcycle
