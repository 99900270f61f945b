#include "report/experiment_report.hpp"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <optional>
#include <set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "core/json_file.hpp"
#include "core/staged_path.hpp"
#include "report/plot.hpp"
#include "report/upit_findings.hpp"

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

std::string loss_plot(const ExperimentReport& r, const std::vector<MethodResult>& results) {
  LinePlot p{"Training loss (moving mean of 10 steps)", "step", "loss", {}, false, true, false};
  if (!r.base_dir.empty()) p.series.push_back(loss_series("base", r.base_dir / "metrics.jsonl", 10));
  p.series.push_back(loss_series("dense run (checkpoints)", r.dense_dir / "metrics.jsonl", 10));
  for (const MethodResult& m : results) p.series.push_back(loss_series(m.method, metrics_of(m), 10));
  return line_plot_svg(p);
}

Heatmap matrix_map(const std::string& title, const std::string& axis, const std::vector<std::vector<double>>& v) {
  Heatmap h{title, axis, axis, {}, {}, v, true};
  for (size_t i = 0; i < v.size(); ++i) h.row_names.push_back(std::to_string(i));
  h.col_names = h.row_names;
  return h;
}

std::vector<std::vector<double>> to_matrix(const json& j) { return j.get<std::vector<std::vector<double>>>(); }

std::string load_plot(const std::vector<MethodResult>& results) {
  std::vector<Heatmap> maps;
  for (const MethodResult& m : results) {
    const auto load = final_expert_load(metrics_of(m));
    if (load.empty()) continue;
    Heatmap h{m.method, "expert", "layer", {}, {}, load, true};
    for (size_t l = 0; l < load.size(); ++l) h.row_names.push_back(std::to_string(l));
    for (size_t e = 0; e < load[0].size(); ++e) h.col_names.push_back(std::to_string(e));
    maps.push_back(std::move(h));
  }
  return maps.empty() ? std::string() : heatmaps_svg(maps, "Expert load per layer (share of routed tokens, end of tuning)");
}

// Which experts each task's reply tokens go to in a method's tuned MoE (eval-routing.json), a
// heatmap per layer of task x expert (the paper's Figure 5); empty when it was not measured.
std::string task_routing_plot(const MethodResult& m) {
  const fs::path file = m.dir / "eval-routing.json";
  if (!fs::exists(file)) return {};
  const json tasks = read_json_file(file).at("tasks");
  std::vector<Heatmap> maps;
  for (const auto& [task, layers] : tasks.items())
    for (size_t l = 0; l < layers.size(); ++l) {
      if (maps.size() <= l) {
        maps.push_back({fmt::format("layer {}", l), "expert", "task", {}, {}, {}, false});
        for (size_t e = 0; e < layers[l].size(); ++e) maps[l].col_names.push_back(std::to_string(e));
      }
      maps[l].row_names.push_back(task);
      maps[l].values.push_back(layers[l].get<std::vector<double>>());
    }
  if (maps.empty()) return {};
  return heatmaps_svg(maps, m.method + ": share of each task's reply tokens routed to each expert (test set, after tuning)");
}

// UpIT's convert report: the expert distances before and after the expansion.
std::string distance_plot(const std::vector<MethodResult>& results) {
  for (const MethodResult& m : results) {
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

// The methods in the order the first repeat ran them, each with its results over the repeats.
using PerMethod = std::vector<std::pair<std::string, std::vector<const MethodResult*>>>;

PerMethod per_method(const ExperimentReport& r) {
  PerMethod out;
  for (const RepeatRow& row : r.rows) {
    auto it = std::find_if(out.begin(), out.end(), [&](const auto& m) { return m.first == row.result.method; });
    if (it == out.end()) it = out.insert(out.end(), {row.result.method, {}});
    it->second.push_back(&row.result);
  }
  return out;
}

// The first repeat's results, for the plots and the curves.
std::vector<MethodResult> first_repeat(const ExperimentReport& r) {
  std::vector<MethodResult> out;
  for (const RepeatRow& row : r.rows)
    if (row.repeat == r.rows.front().repeat) out.push_back(row.result);
  return out;
}

template <class Get>
MeanInterval over(const std::vector<const MethodResult*>& ms, Get get) {
  std::vector<double> v;
  for (const MethodResult* m : ms) v.push_back(get(*m));
  return mean_interval(v);
}

std::string millions(int64_t n) { return fmt::format("{:.2f} M", double(n) / 1e6); }

std::string results_table(const ExperimentReport& r) {
  const auto sets = heldout_set_names(r.rows);
  std::string md = "| method | experts | total params | active params | loss before tuning | eval loss | exact match (%) |";
  for (const auto& h : sets) md += " held-out " + h + " (%) |";
  md += " wall time per repeat |\n|---|---:|---:|---:|---:|---:|---:|";
  for (size_t i = 0; i < sets.size(); ++i) md += "---:|";
  md += "---:|\n";
  for (const auto& [method, ms] : per_method(r)) {
    const MethodResult& m = *ms.front();
    md += fmt::format("| {} | {} | {} | {} | {} | {} | {} |", method, m.experts, millions(m.total_params),
                      millions(m.active_params), mean_with_interval(over(ms, [](auto& x) { return x.start_loss; }), 4, 1),
                      mean_with_interval(over(ms, [](auto& x) { return x.loss; }), 4, 1),
                      mean_with_interval(over(ms, [](auto& x) { return x.exact; }), 1, 100));
    for (const auto& h : sets)
      md += " " + mean_with_interval(over(ms, [&](auto& x) { return x.heldout_exact.count(h) ? x.heldout_exact.at(h) : NAN; }),
                                     1, 100) + " |";
    md += fmt::format(" {:.0f} s |\n", over(ms, [](auto& x) { return x.seconds; }).mean);
  }
  return md;
}

std::string task_table(const ExperimentReport& r) {
  const auto tasks = task_names(r.rows);
  if (tasks.empty()) return {};
  const PerMethod methods = per_method(r);
  std::string md = "\n## Exact match per task (%, mean over repeats)\n\n| task |";
  for (const auto& [method, ms] : methods) md += " " + method + " |";
  md += "\n|---|";
  for (size_t i = 0; i < methods.size(); ++i) md += "---:|";
  md += "\n";
  for (const auto& t : tasks) {
    md += "| " + t + " |";
    for (const auto& [method, ms] : methods)
      md += fmt::format(" {:.0f} |", 100 * over(ms, [&](auto& x) { return x.exact_by_task.count(t) ? x.exact_by_task.at(t) : NAN; }).mean);
    md += "\n";
  }
  return md;
}

// Each layer's idlest and busiest expert relative to an even share over the last tenth of tuning,
// the extremes over the repeats.
std::string balance_words(const std::string& method, const std::vector<const MethodResult*>& ms) {
  std::vector<double> idlest, busiest;  // [L]
  for (const MethodResult* m : ms) {
    const auto load = final_expert_load(metrics_of(*m));
    for (size_t l = 0; l < load.size(); ++l) {
      const double even = 1.0 / double(load[l].size());
      const auto [lo, hi] = std::minmax_element(load[l].begin(), load[l].end());
      if (idlest.size() <= l) idlest.push_back(1e9), busiest.push_back(0);
      idlest[l] = std::min(idlest[l], *lo / even);
      busiest[l] = std::max(busiest[l], *hi / even);
    }
  }
  if (idlest.empty()) return {};
  std::string per_layer;
  for (size_t l = 0; l < idlest.size(); ++l) per_layer += fmt::format("{}{:.2f}/{:.2f}", l ? ", " : "", idlest[l], busiest[l]);
  const double least = *std::min_element(idlest.begin(), idlest.end());
  std::string s = fmt::format("- {}: each layer's idlest/busiest expert over the last tenth of tuning, relative to an even share "
                              "(the extremes over {} repeat{}): {}",
                              method, ms.size(), ms.size() > 1 ? "s" : "", per_layer);
  if (least < 0.1) s += " (some experts are nearly unused: router collapse)";
  return s + ".\n";
}

// The test loss of what each tuning starts from: the converted MoEs against the dense run's final
// model (sparse upcycling's copies compute it exactly), paired by repeat.
std::string start_words(const ExperimentReport& r) {
  const PerMethod methods = per_method(r);
  const auto dense = std::find_if(methods.begin(), methods.end(), [](const auto& m) { return m.first == "dense"; });
  if (dense == methods.end() || std::isnan(dense->second.front()->start_loss)) return {};
  std::string s = fmt::format("Test loss before each method's tuning: the dense run's final model {}",
                              mean_with_interval(over(dense->second, [](auto& x) { return x.start_loss; }), 4, 1));
  std::optional<PairedDifference> upit;
  for (const auto& [method, ms] : methods) {
    if (method == "dense" || ms.size() != dense->second.size()) continue;
    std::vector<double> a, b;
    for (size_t i = 0; i < ms.size(); ++i) a.push_back(ms[i]->start_loss), b.push_back(dense->second[i]->start_loss);
    const PairedDifference d = paired_difference(a, b);
    s += fmt::format("; {}'s converted model {:+.4f}", method, d.mean_diff);
    if (d.n > 1) s += fmt::format(" [{:+.4f}, {:+.4f}]{}", d.low, d.high, d.significant ? "" : " (no significant difference)");
    if (method == "upit") upit = d;
  }
  s += " against it.";
  if (upit && upit->mean_diff > 0 && (upit->significant || upit->n == 1))
    s += fmt::format(" UpIT's converted model starts worse than the dense model its experts came from{}; the ablations "
                     "upit-no-router, upit-random-seed, upit-no-expand and upit-shared-final (`upcycle sweep --methods`) "
                     "isolate the router pre-optimisation, its seed assignment, the expansion and the merged shared weights.",
                     upit->n == 1 ? " in this one run (no interval)" : "");
  return s + "\n";
}

// The converted model's quality before any tuning also shows in the first step's loss.
std::string start_end_words(const MethodResult& m) {
  const std::vector<json> lines = read_metrics(metrics_of(m));
  if (lines.empty()) return m.method + ": no training metrics";
  const size_t tail = std::max<size_t>(1, lines.size() / 10);
  double end = 0;
  for (size_t i = lines.size() - tail; i < lines.size(); ++i) end += lines[i]["loss"].get<double>() / double(tail);
  return fmt::format("{}: {:.4f} -> {:.4f}", m.method, lines.front()["loss"].get<double>(), end);
}

// Words on what the results show: each pair of methods' differences with their intervals (a claim
// only where the interval excludes 0), every method's test loss before its tuning against the
// dense run's final model, UpIT's experts, where each tuning starts and ends, and how balanced
// each MoE's experts are.
std::string findings(const ExperimentReport& r, const std::vector<MethodPair>& pairs) {
  const int repeats = int(per_method(r).front().second.size());
  std::string words = repeats > 1 ? fmt::format("Paired differences over the {} repeats (the same seed on both sides; pairs.csv):\n\n", repeats)
                                  : "Paired differences of one run (pairs.csv):\n\n";
  words += pair_sentences(pairs, false);
  const std::string start = start_words(r);
  if (!start.empty()) words += "\n" + start;
  std::vector<fs::path> upit_conversions;
  for (const RepeatRow& row : r.rows)
    if (row.result.method == "upit") upit_conversions.push_back(row.result.dir / "init");
  const std::string pool = upit_pool_findings(upit_conversions);
  if (!pool.empty()) words += "\nUpIT's experts, measured:\n\n" + pool;
  words += "\nWhere each tuning starts and ends in the first repeat (training loss of its first step, mean of its last tenth):";
  for (const MethodResult& m : first_repeat(r)) words += "\n- " + start_end_words(m);
  words += "\n\nExpert load:\n\n";
  for (const auto& [method, ms] : per_method(r)) words += balance_words(method, ms);
  return words;
}

std::string markdown(const ExperimentReport& r, const std::vector<MethodPair>& pairs, bool has_load, bool has_distances,
                     const std::vector<std::string>& routing_plots) {
  const int repeats = int(per_method(r).front().second.size());
  std::string md = "# " + r.title + "\n\n" + r.setup + "\n\n";
  md += fmt::format("## Results ({} repeat{}; mean{})\n\n", repeats, repeats > 1 ? "s" : "",
                    repeats > 1 ? " [95% CI over repeats]" : "");
  md += results_table(r);
  if (!r.base_dir.empty()) md += fmt::format("\nThe base tuning (shared by the repeats) took {:.0f} s.", r.base_seconds);
  md += fmt::format("\nThe dense runs (each repeat's checkpoints feed its methods) took {:.0f} s in all.\n", r.dense_seconds);
  md += "\n## What the runs show\n\n" + findings(r, pairs) + task_table(r);
  md += "\n## Plots (first repeat)\n\n![training loss](plots/loss.svg)\n";
  if (has_load) md += "\n![expert load](plots/expert_load.svg)\n";
  if (has_distances) md += "\n![expert distances](plots/distances.svg)\n";
  for (const std::string& method : routing_plots) md += "\n![" + method + ": routing by task](plots/routing-" + method + ".svg)\n";
  md += "\nEvery number here is in metrics.csv (a row per repeat and method), summary.csv and pairs.csv; each\n"
        "repeat's folder holds its dense run and a folder per method with its model, its training metrics\n"
        "(tuned/metrics.jsonl) and its evaluations (eval-*.json).\n";
  return md;
}

}  // namespace

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


void write_experiment_report(const fs::path& dir, const ExperimentReport& r) {
  fs::create_directories(dir / "plots");
  const std::vector<MethodResult> first = first_repeat(r);
  replace_text_file(dir / "plots" / "loss.svg", loss_plot(r, first));
  const std::string load = load_plot(first), distances = distance_plot(first);
  if (!load.empty()) replace_text_file(dir / "plots" / "expert_load.svg", load);
  if (!distances.empty()) replace_text_file(dir / "plots" / "distances.svg", distances);
  replace_text_file(dir / "metrics.csv", rows_csv(r.rows));
  replace_text_file(dir / "summary.csv", summary_csv(r.rows));
  const std::vector<MethodPair> pairs = method_pairs(r.rows);
  replace_text_file(dir / "pairs.csv", pairs_csv(pairs));
  std::vector<std::string> routing_plots;  // the methods with one
  for (const MethodResult& m : first) {
    const std::string svg = task_routing_plot(m);
    if (svg.empty()) continue;
    replace_text_file(dir / "plots" / ("routing-" + m.method + ".svg"), svg);
    routing_plots.push_back(m.method);
  }
  replace_text_file(dir / "report.md", markdown(r, pairs, !load.empty(), !distances.empty(), routing_plots));
}

}  // namespace upcycle
