#include "report/repeats.hpp"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <tuple>

#include <fmt/format.h>

namespace upcycle {

namespace {

// A metric of the rows: its name in summary.csv and pairs.csv (a column of the rows' CSV), the
// field, and how sentences write a difference of it.
struct Metric {
  const char* name;
  double MethodResult::*field;
  const char* words;  // "points exact match"
  double scale;       // 100 for shares, written in points
  int digits;         // decimals of a difference in the sentences
};
const Metric kMetrics[] = {{"exact", &MethodResult::exact, "points exact match", 100, 1},
                           {"eval_loss", &MethodResult::loss, "eval loss (lower is better)", 1, 4}};

// A number for the CSVs: empty where there is none (NaN: one repeat has no interval).
std::string number(double v) { return std::isnan(v) ? "" : fmt::format("{:.6f}", v); }

template <class Names>
std::vector<std::string> names_of(const std::vector<RepeatRow>& rows, Names names) {
  std::set<std::string> all;
  for (const RepeatRow& r : rows)
    for (const auto& [name, value] : names(r.result)) all.insert(name);
  return {all.begin(), all.end()};
}

// The arms' results at each data size by repeat: (data, method, experts) → repeat → result.
using ByArm = std::map<std::tuple<int64_t, std::string, int>, std::map<int, const MethodResult*>>;

ByArm by_arm(const std::vector<RepeatRow>& rows) {
  ByArm out;
  for (const RepeatRow& r : rows) out[{r.data, r.result.method, r.result.experts}][r.repeat] = &r.result;
  return out;
}

// a ranked before b, both at one expert count unless b is dense, and one of them a reference:
// UpIT against everything, everything against sparse upcycling and dense (the ablations and
// baselines are not compared among themselves).
bool compared(const std::string& method_a, int experts_a, const std::string& method_b, int experts_b) {
  const int ra = pair_rank(method_a), rb = pair_rank(method_b);
  if (ra > rb || (ra == rb && method_a >= method_b)) return false;
  if (method_a != "upit" && method_b != "sparse" && method_b != "dense") return false;
  return method_b == "dense" || experts_a == experts_b;
}

MethodPair pair_of(const Metric& m, const std::map<int, const MethodResult*>& ra, const std::map<int, const MethodResult*>& rb,
                   int64_t data) {
  std::vector<double> va, vb;
  for (const auto& [repeat, result] : ra)
    if (rb.count(repeat)) va.push_back(result->*m.field), vb.push_back(rb.at(repeat)->*m.field);
  MethodPair p{m.name, *ra.begin()->second, *rb.begin()->second, data, paired_difference(va, vb), false};
  const auto& sa = p.a.exact_by_sample;
  const auto& sb = p.b.exact_by_sample;
  if (va.size() == 1 && m.field == &MethodResult::exact && !sa.empty() && sa.size() == sb.size()) {
    p.d = paired_bootstrap(sa, sb);
    p.bootstrap = true;
  }
  return p;
}

// Holm's step-down adjustment of the p values of one metric's pairs, in place.
void adjust_holm(std::vector<MethodPair>& pairs, const std::string& metric) {
  std::vector<MethodPair*> tested;
  for (MethodPair& p : pairs)
    if (p.metric == metric && !std::isnan(p.d.p_value)) tested.push_back(&p);
  std::sort(tested.begin(), tested.end(), [](auto a, auto b) { return a->d.p_value < b->d.p_value; });
  double running = 0;
  for (size_t i = 0; i < tested.size(); ++i) {
    running = std::max(running, std::min(1.0, double(tested.size() - i) * tested[i]->d.p_value));
    tested[i]->p_holm = running;
  }
}

const Metric& metric_named(const std::string& name) {
  for (const Metric& m : kMetrics)
    if (name == m.name) return m;
  throw std::invalid_argument("unknown metric " + name);
}

}  // namespace

std::string arm_name(const MethodResult& m) {
  return m.method == "dense" ? "dense" : fmt::format("{} E={}", m.method, m.experts);
}

std::string mean_with_interval(const MeanInterval& m, int digits, double scale) {
  std::string s = fmt::format("{:.{}f}", scale * m.mean, digits);
  if (m.n > 1) s += fmt::format(" [{:.{}f}, {:.{}f}]", scale * m.low, digits, scale * m.high, digits);
  return s;
}

std::vector<std::string> heldout_set_names(const std::vector<RepeatRow>& rows) {
  return names_of(rows, [](const MethodResult& m) -> auto& { return m.heldout_exact; });
}

std::vector<std::string> task_names(const std::vector<RepeatRow>& rows) {
  return names_of(rows, [](const MethodResult& m) -> auto& { return m.exact_by_task; });
}

std::string rows_csv(const std::vector<RepeatRow>& rows) {
  const auto sets = heldout_set_names(rows);
  const auto tasks = task_names(rows);
  std::string out = "data,repeat,seed,method,experts,total_params,active_params,start_loss,eval_loss,eval_ppl,exact,seconds";
  for (const auto& h : sets) out += ",exact_heldout_" + h;
  for (const auto& t : tasks) out += ",exact_" + t;
  out += "\n";
  auto cell = [](const std::map<std::string, double>& by, const std::string& key) {
    return by.count(key) ? fmt::format(",{:.6f}", by.at(key)) : std::string(",");
  };
  for (const RepeatRow& r : rows) {
    const MethodResult& m = r.result;
    out += fmt::format("{},{},{},{},{},{},{},{},{:.6f},{:.6f},{:.6f},{:.1f}", r.data, r.repeat, r.seed, m.method, m.experts,
                       m.total_params, m.active_params, number(m.start_loss), m.loss, m.ppl, m.exact, m.seconds);
    for (const auto& h : sets) out += cell(m.heldout_exact, h);
    for (const auto& t : tasks) out += cell(m.exact_by_task, t);
    out += "\n";
  }
  return out;
}

std::string summary_csv(const std::vector<RepeatRow>& rows) {
  std::string out = "metric,method,experts,data,n,mean,sd,ci_low,ci_high\n";
  for (const Metric& m : kMetrics)
    for (const auto& [key, by_repeat] : by_arm(rows)) {
      const auto& [data, method, experts] = key;
      std::vector<double> v;
      for (const auto& [repeat, result] : by_repeat) v.push_back(result->*m.field);
      const MeanInterval s = mean_interval(v);
      out += fmt::format("{},{},{},{},{},{},{},{},{}\n", m.name, method, experts, data, s.n, number(s.mean),
                         s.n > 1 ? number(s.sd) : "", number(s.low), number(s.high));
    }
  return out;
}

std::vector<MethodPair> method_pairs(const std::vector<RepeatRow>& rows) {
  const ByArm arms = by_arm(rows);
  std::vector<MethodPair> out;
  for (const Metric& m : kMetrics)
    for (const auto& [ka, ra] : arms)
      for (const auto& [kb, rb] : arms) {
        const auto& [data_a, method_a, experts_a] = ka;
        const auto& [data_b, method_b, experts_b] = kb;
        if (data_a != data_b || !compared(method_a, experts_a, method_b, experts_b)) continue;
        bool shared = false;
        for (const auto& [repeat, result] : ra) shared = shared || rb.count(repeat);
        if (shared) out.push_back(pair_of(m, ra, rb, data_a));
      }
  for (const Metric& m : kMetrics) adjust_holm(out, m.name);
  return out;
}

std::string pairs_csv(const std::vector<MethodPair>& ps) {
  std::string out = "metric,method_a,method_b,experts,data,n,mean_diff,ci_low,ci_high,p_value,significant,interval,p_holm\n";
  for (const MethodPair& p : ps)
    out += fmt::format("{},{},{},{},{},{},{},{},{},{},{},{},{}\n", p.metric, p.a.method, p.b.method, p.a.experts, p.data,
                       p.d.n, number(p.d.mean_diff), number(p.d.low), number(p.d.high), number(p.d.p_value),
                       p.d.significant ? 1 : 0, p.bootstrap ? "bootstrap" : "t", number(p.p_holm));
  return out;
}

std::string pair_sentences(const std::vector<MethodPair>& ps, bool with_data) {
  std::string words;
  int tested = 0;
  for (const MethodPair& p : ps) tested += !std::isnan(p.d.p_value);
  if (tested > 1)
    words += fmt::format("{} comparisons with a p value: at 95% each, about {:.1f} would show a difference by chance alone "
                         "if no method differed, so each difference also says whether it survives Holm's correction "
                         "over its metric's comparisons.\n\n",
                         tested, 0.05 * tested);
  for (const MethodPair& p : ps) {
    const Metric& m = metric_named(p.metric);
    const double k = m.scale;
    auto signed_value = [&](double v) { return fmt::format("{:+.{}f}", k * v, m.digits); };
    const std::string what =
        (with_data ? fmt::format("- {} samples, ", p.data) : std::string("- ")) + arm_name(p.a) + " − " + arm_name(p.b);
    if (std::isnan(p.d.low)) {
      words += fmt::format("{}: {} {} in one run: no interval, so no claim (run --repeats 3 or more).\n", what,
                           signed_value(p.d.mean_diff), m.words);
      continue;
    }
    const std::string over =
        p.bootstrap ? fmt::format("by a paired bootstrap over the {} test samples (2,000 resamples; one run, so it covers "
                                  "the test set's noise, not run-to-run variation)",
                                  p.d.n)
                    : fmt::format("{} repeats, p = {:.3g}", p.d.n, p.d.p_value);
    const std::string numbers = fmt::format("{} {}, 95% CI [{}, {}], {}", signed_value(p.d.mean_diff), m.words,
                                            signed_value(p.d.low), signed_value(p.d.high), over);
    if (!p.d.significant) {
      words += fmt::format("{}: no significant difference ({}).\n", what, numbers);
      continue;
    }
    const bool survives = std::isnan(p.p_holm) || p.p_holm < 0.05;
    words += fmt::format("{}: {}{}.\n", what, numbers,
                         survives ? "" : fmt::format(" (not significant after Holm's correction: p = {:.3g})", p.p_holm));
  }
  return words;
}

}  // namespace upcycle
