#include "genetic/lora_expand.hpp"

#include <algorithm>
#include <stdexcept>
#include <string>

#include <spdlog/spdlog.h>

#include "core/progress.hpp"
#include "core/random.hpp"

namespace upcycle::genetic {

std::optional<LoraChild> parse_lora_child(std::string_view name) {
  if (name == "svd") return LoraChild::Svd;
  if (name == "concat") return LoraChild::Concat;
  return std::nullopt;
}

namespace {

constexpr const char* kModuleNames[kLoraFfnModules] = {"gate_proj", "up_proj", "down_proj"};

// The name of a (layer, module): the key of a child's random streams there.
std::string term_key(int layer, int module) {
  return "layers." + std::to_string(layer) + ".mlp." + kModuleNames[module];
}

// Adds to gram the layers' inner products of expert i's terms with expert j's.
void add_inner(Gram& gram, const LoraFfnPool& p, const LoraTerms& x, size_t i, const LoraTerms& y, size_t j) {
  for (int l = 0; l < p.layers; ++l)
    for (int m = 0; m < kLoraFfnModules; ++m) {
      const auto [out, in] = p.shapes[size_t(m)];
      const size_t t = size_t(l * kLoraFfnModules + m);
      gram.add(l, i, j, merge::delta_inner(x[t].view(), y[t].view(), out, in));
    }
}

// Child `r`'s term t of parents' terms x and y: concatenated, or merged densely and refactored.
// `zeros` (at least out·in) is the merge's base: the parents are deltas.
merge::LowRankFactors child_term(const LoraFfnPool& p, const ExpertRecipe& r, const merge::LowRankFactors& x,
                                 const merge::LowRankFactors& y, int layer, int module, const merge::Options& how,
                                 LoraChild child, std::span<const float> zeros) {
  const auto [out, in] = p.shapes[size_t(module)];
  const std::vector<merge::LowRankView> parents = {x.view(), y.view()};
  const std::vector<double> weights = {r.weight_a, r.weight_b};
  if (child == LoraChild::Concat) return merge::concat_deltas(parents, weights, out, in);
  const std::vector<float> dx = merge::dense_delta(parents[0], out, in), dy = merge::dense_delta(parents[1], out, in);
  std::vector<float> merged(dx.size());
  merge::Options o = how;
  o.weights = weights;
  o.seed = r.seed;
  const std::vector<std::span<const float>> inputs = {dx, dy};
  const std::string key = term_key(layer, module);
  merge::merge_tensor(merged, inputs, zeros.first(dx.size()), o, key);
  return merge::sketch_delta(merged, out, in, p.rank, 1.0, Rng::stream(r.seed, key).next());
}

// The candidates' terms ([candidate][term]) and each one's largest discarded share, every
// (candidate, term) made in parallel: each alone on its thread, so the same bits for any count.
std::vector<LoraTerms> make_children(const LoraFfnPool& p, const std::vector<LoraTerms>& pool, const Pool& candidates,
                                     const merge::Options& how, LoraChild child, std::vector<double>& discarded) {
  const size_t terms = size_t(p.layers * kLoraFfnModules);
  std::vector<LoraTerms> out(candidates.size(), LoraTerms(terms));
  const int64_t n = int64_t(candidates.size() * terms);
  int64_t largest = 0;
  for (const auto& [out, in] : p.shapes) largest = std::max(largest, out * in);
  const std::vector<float> zeros(child == LoraChild::Svd ? size_t(largest) : 0, 0.0f);  // shared by the threads
#pragma omp parallel for schedule(dynamic)
  for (int64_t i = 0; i < n; ++i) {
    const size_t c = size_t(i) / terms, t = size_t(i) % terms;
    const ExpertRecipe& r = candidates[c];
    out[c][t] = child_term(p, r, pool[size_t(r.parent_a)][t], pool[size_t(r.parent_b)][t], int(t) / kLoraFfnModules,
                           int(t) % kLoraFfnModules, how, child, zeros);
  }
  discarded.assign(candidates.size(), 0.0);
  for (size_t c = 0; c < candidates.size(); ++c)
    for (const auto& term : out[c]) discarded[c] = std::max(discarded[c], term.discarded);
  return out;
}

void check(const LoraFfnPool& p, const ExpansionOptions& o, LoraChild child) {
  if (o.experts < 1 || o.candidates < 1 || o.distant_pairs < 1)
    throw std::invalid_argument("expand_lora_pool: experts, candidates and distant_pairs must be positive");
  if (o.fitness != Fitness::Weights) throw std::invalid_argument("expand_lora_pool: the fitness is in weights alone");
  if (o.experts > int(p.experts.size()) && p.experts.size() < 2)
    throw std::invalid_argument("expand_lora_pool: growing the pool needs two adapters or more");
  if (child == LoraChild::Concat && o.merge.method != merge::Method::Linear)
    throw std::invalid_argument("expand_lora_pool: concatenated children are linear merges");
  if (child == LoraChild::Svd && p.rank < 1) throw std::invalid_argument("expand_lora_pool: no rank for the children");
  for (const LoraTerms& e : p.experts) {
    if (e.size() != size_t(p.layers * kLoraFfnModules)) throw std::invalid_argument("expand_lora_pool: a term per (layer, module)");
    for (size_t t = 0; t < e.size(); ++t) {
      const auto [out, in] = p.shapes[t % kLoraFfnModules];
      if (e[t].a.size() != size_t(e[t].rank * in) || e[t].b.size() != size_t(out * e[t].rank))
        throw std::invalid_argument("expand_lora_pool: a term not of its module's shape");
    }
  }
}

}  // namespace

LoraExpansion expand_lora_pool(const LoraFfnPool& p, const ExpansionOptions& o, LoraChild child) {
  check(p, o, child);
  const size_t K = p.experts.size();
  LoraExpansion out;
  for (size_t k = 0; k < K; ++k) out.pool.push_back({int(k)});
  Gram gram(p.layers);
  gram.resize(K);
  for (size_t i = 0; i < K; ++i)
    for (size_t j = 0; j <= i; ++j) add_inner(gram, p, p.experts[i], i, p.experts[j], j);
  out.before = gram.matrix(o.distance);
  if (o.experts <= int(K)) {
    out.pool = choose_farthest(out.before, o.experts);
    out.after = submatrix(out.before, out.pool);
    for (const ExpertRecipe& r : out.pool) out.experts.push_back(p.experts[size_t(r.checkpoint)]);
    out.discarded.assign(out.pool.size(), 0.0);
    return out;
  }
  out.experts = p.experts;
  out.discarded.assign(K, 0.0);
  const int rounds = o.experts - int(K);
  Progress progress("expert search over adapters", uint64_t(rounds), "rounds", o.progress);
  for (int round = 0; round < rounds; ++round) {
    const size_t n = out.pool.size();
    const Pool candidates = draw_candidates(gram.matrix(o.distance), o, round);
    std::vector<double> discarded;
    std::vector<LoraTerms> children = make_children(p, out.experts, candidates, o.merge, child, discarded);
    Gram trial = gram;
    trial.resize(n + candidates.size());
    for (size_t c = 0; c < candidates.size(); ++c) {
      for (size_t j = 0; j < n; ++j) add_inner(trial, p, children[c], n + c, out.experts[j], j);
      add_inner(trial, p, children[c], n + c, children[c], n + c);
    }
    const auto [best, best_div] = best_candidate(trial.matrix(o.distance), n, candidates.size());
    gram = trial.with_kept(n, n + best);
    out.pool.push_back(candidates[best]);
    out.experts.push_back(std::move(children[best]));
    out.discarded.push_back(discarded[best]);
    spdlog::info("expansion round {}/{}: expert {} = {}{}; pool diversity mean {:.4f}, min {:.4f}", round + 1, rounds, n,
                 describe(candidates[best]),
                 child == LoraChild::Svd ? fmt::format(", refactored to rank {} ({:.2f}% of a term's energy dropped at most)",
                                                       p.rank, 100 * discarded[best])
                                         : "",
                 best_div.mean, best_div.min);
    progress.advance(1);
  }
  progress.finish();
  out.after = gram.matrix(o.distance);
  return out;
}

}  // namespace upcycle::genetic
