#include "report/upit_findings.hpp"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/json_file.hpp"
#include "report/statistics.hpp"

namespace upcycle {

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// One conversion's figures.
struct PoolFigures {
  double checkpoint_weights = 0, checkpoint_function = 0;  // mean over pairs of checkpoints
  double child_weights = 0, child_function = 0;            // mean over (child, parent) pairs; NaN: no children
  double top_share = 0;                                    // the seed share of the expert that scores most samples best
  std::string counts;                                      // "checkpoint 0: 3, ..."
  std::vector<double> checkpoint_loss;                     // each checkpoint's mean seed loss, in checkpoint order
};

double at(const json& m, size_t i, size_t j) { return m.at(i).at(j).get<double>(); }

PoolFigures figures(const json& j) {
  const json& pool = j.at("pool");
  const json& weights = j.at("distances_after");
  const json& function = j.at("seed_loss_distances");
  PoolFigures f;
  std::vector<size_t> checkpoints;
  for (size_t e = 0; e < pool.size(); ++e)
    if (pool[e].contains("checkpoint")) checkpoints.push_back(e);
  int pairs = 0;
  for (size_t a = 0; a < checkpoints.size(); ++a)
    for (size_t b = a + 1; b < checkpoints.size(); ++b, ++pairs) {
      f.checkpoint_weights += at(weights, checkpoints[a], checkpoints[b]);
      f.checkpoint_function += at(function, checkpoints[a], checkpoints[b]);
    }
  f.checkpoint_weights /= std::max(1, pairs);
  f.checkpoint_function /= std::max(1, pairs);
  int links = 0;
  for (size_t e = 0; e < pool.size(); ++e)
    if (pool[e].contains("parents"))
      for (const json& parent : pool[e]["parents"]) {
        f.child_weights += at(weights, e, parent.get<size_t>());
        f.child_function += at(function, e, parent.get<size_t>());
        ++links;
      }
  f.child_weights = links ? f.child_weights / links : NAN;
  f.child_function = links ? f.child_function / links : NAN;
  const json& counts = j.contains("seed_per_expert_lowest_loss") ? j["seed_per_expert_lowest_loss"] : j.at("seed_per_expert");
  int64_t total = 0, top = 0;
  for (size_t e = 0; e < counts.size(); ++e) {
    const int64_t c = counts[e].get<int64_t>();
    total += c;
    top = std::max(top, c);
    f.counts += fmt::format("{}{} {}", e ? ", " : "", pool.at(e).at("describe").get<std::string>(), c);
  }
  f.top_share = total ? double(top) / double(total) : 0.0;
  if (j.contains("seed_mean_loss"))
    for (size_t e : checkpoints) f.checkpoint_loss.push_back(j["seed_mean_loss"].at(e).get<double>());
  return f;
}

// "0.123" for one repeat, "0.123 (0.100-0.150 over 3 repeats)" for several.
std::string spread(const std::vector<double>& v, const char* format) {
  const auto [lo, hi] = std::minmax_element(v.begin(), v.end());
  const std::string mean = fmt::format(fmt::runtime(format), mean_interval(v).mean);
  if (v.size() < 2) return mean;
  return mean + " (" + fmt::format(fmt::runtime(format), *lo) + "–" + fmt::format(fmt::runtime(format), *hi) +
         fmt::format(" over {} repeats)", v.size());
}

}  // namespace

std::string upit_pool_findings(const std::vector<fs::path>& converted) {
  std::vector<PoolFigures> all;
  for (const fs::path& dir : converted) {
    const fs::path file = dir / "upcycle_convert.json";
    if (!fs::exists(file)) continue;
    const json j = read_json_file(file);
    if (j.contains("seed_loss_distances") && j.contains("distances_after") && j.contains("pool")) all.push_back(figures(j));
  }
  if (all.empty()) return {};
  auto column = [&](double PoolFigures::*field) {
    std::vector<double> v;
    for (const PoolFigures& f : all) v.push_back(f.*field);
    return v;
  };
  std::string md = fmt::format("- Seed samples by the expert that scores each best (first repeat): {}.", all[0].counts);
  const std::vector<double> top = column(&PoolFigures::top_share);
  md += fmt::format(" The busiest expert takes {} of them", spread(top, "{:.2f}"));
  md += *std::min_element(top.begin(), top.end()) > 0.9
            ? ": nearly every sample goes to one expert, so the router pre-optimisation has little to learn.\n"
            : ".\n";
  if (const auto& loss = all[0].checkpoint_loss; loss.size() > 1) {
    std::string list;
    for (size_t i = 0; i < loss.size(); ++i) list += fmt::format("{}{:.4f}", i ? ", " : "", loss[i]);
    const bool later_better = std::is_sorted(loss.rbegin(), loss.rend()) && loss.front() > loss.back();
    md += fmt::format("- The checkpoints' mean seed loss, earliest first (first repeat): {}{}.\n", list,
                      later_better ? ": each later checkpoint scores the seed data better" : "");
  }
  md += fmt::format("- Between the checkpoints: cosine distance {} of the FFN deltas, and {} mean gap in seed loss per sample "
                    "(nats per token).\n",
                    spread(column(&PoolFigures::checkpoint_weights), "{:.3f}"),
                    spread(column(&PoolFigures::checkpoint_function), "{:.4f}"));
  if (std::isnan(all[0].child_weights)) return md;
  const std::vector<double> cw = column(&PoolFigures::child_weights), cf = column(&PoolFigures::child_function);
  md += fmt::format("- Between the search's children and their parents: cosine distance {} and a seed-loss gap of {}.",
                    spread(cw, "{:.3f}"), spread(cf, "{:.4f}"));
  const double mean_cw = mean_interval(cw).mean, mean_cf = mean_interval(cf).mean;
  if (mean_cw > mean_interval(column(&PoolFigures::checkpoint_weights)).mean &&
      mean_cf < mean_interval(column(&PoolFigures::checkpoint_function)).mean)
    md += " The children are farther from their parents in weights than the checkpoints are from each other, yet closer "
          "in function: the weight-space diversity the search adds is mostly DARE's random drop, not a difference in what "
          "the experts do.";
  return md + "\n";
}

}  // namespace upcycle
