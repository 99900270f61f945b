#include "genetic/expand.hpp"

#include <algorithm>
#include <stdexcept>
#include <string>

#include <omp.h>
#include <spdlog/spdlog.h>

#include "core/progress.hpp"
#include "core/random.hpp"
#include "genetic/search_steps.hpp"

namespace upcycle::genetic {

std::optional<ParentChoice> parse_parent_choice(std::string_view name) {
  if (name == "distant") return ParentChoice::Distant;
  if (name == "random") return ParentChoice::Random;
  return std::nullopt;
}

std::optional<Fitness> parse_fitness(std::string_view name) {
  if (name == "weights") return Fitness::Weights;
  if (name == "function") return Fitness::Function;
  return std::nullopt;
}

const char* fitness_name(Fitness f) { return f == Fitness::Weights ? "weights" : "function"; }

namespace {

// What one thread works with: a block of the pool, and room for deltas (the pool members') and a
// candidate child's block.
struct Worker {
  PoolBlock block;
  std::vector<std::vector<float>> deltas;
  std::vector<float> child;

  std::span<float> room(std::vector<float>& v) const {
    if (v.size() < block.size()) v.resize(block.size());
    return std::span(v).first(block.size());
  }
  // The deltas of pool members 0..n-1 over this block.
  std::vector<std::span<const float>> pool_deltas(size_t n) {
    deltas.resize(std::max(deltas.size(), n));
    std::vector<std::span<const float>> out;
    for (size_t j = 0; j < n; ++j) {
      const std::span<float> d = room(deltas[j]);
      delta(block.expert(j), block.base(), d);
      out.push_back(d);
    }
    return out;
  }
};

// The dot blocks measured of a tensor of n elements: all of them, or ⌈sample_elements / kDotBlock⌉
// when sampling applies (element-wise child merges: ties and slerp make a child only whole).
uint64_t measured_dot_blocks(uint64_t n, const ExpansionOptions& o) {
  const uint64_t dots = dot_blocks(size_t(n));
  if (o.sample_elements == 0 || !merge::method_info(o.merge.method).by_element) return dots;
  return std::min(dots, (o.sample_elements + kDotBlock - 1) / kDotBlock);
}

// The parts of a (layer, role) the distances are measured on, in order: every block; or the
// measured_dot_blocks drawn from the seed (the same in every round), consecutive ones joined into
// parts of at most a block. Inner products are multiplied by `scale` (elements / elements
// measured), so that a sample's sums estimate the whole tensor's: L2 keeps its units, and gate,
// up and down keep their weights in a layer's sum.
struct Measured {
  std::vector<std::pair<uint64_t, uint64_t>> parts;  // (first element, elements)
  double scale = 1;
};

Measured measured_parts(const PoolTensor& t, const ExpansionOptions& o, int layer, Role role) {
  Measured m;
  const uint64_t n = t.numel(), block = t.block_elements();
  const uint64_t dots = dot_blocks(size_t(n)), k = measured_dot_blocks(n, o);
  if (k == dots) {
    for (uint64_t first = 0; first < n; first += block) m.parts.emplace_back(first, std::min(block, n - first));
    return m;
  }
  std::vector<uint64_t> order(dots);
  for (uint64_t i = 0; i < dots; ++i) order[i] = i;
  Rng rng = Rng::stream(o.seed, "search sample " + FfnSource::key(layer, role));
  for (uint64_t i = 0; i < k; ++i) std::swap(order[i], order[i + rng.below(dots - i)]);  // the first k: a random subset
  std::sort(order.begin(), order.begin() + ptrdiff_t(k));
  uint64_t measured = 0;
  for (uint64_t i = 0; i < k; ++i) {
    const uint64_t first = order[i] * kDotBlock, size = std::min<uint64_t>(kDotBlock, n - first);
    auto& last = m.parts.empty() ? m.parts.emplace_back(first, 0) : m.parts.back();
    if (last.first + last.second != first || last.second + size > block) m.parts.emplace_back(first, 0);
    m.parts.back().second += size;
    measured += size;
  }
  m.scale = double(n) / double(measured);
  return m;
}

// Sums over the measured parts of a (layer, role) `values` partial sums per dot block, which
// body(worker, partial) writes for the worker's part ([dot blocks of the part, values]). Parts
// run in parallel a wave at a time, and their sums are added in order: the same bits for any
// thread count, with memory of a few blocks per thread. Returns the sums times m.scale.
template <class Body>
std::vector<double> sum_over_parts(const PoolTensor& t, const Measured& m, size_t values, Body&& body) {
  const int threads = omp_get_max_threads();
  std::vector<Worker> workers;
  for (int i = 0; i < threads; ++i) workers.push_back({PoolBlock(t), {}, {}});
  const uint64_t parts = m.parts.size(), wave = 8 * uint64_t(threads);
  const size_t rows = dot_blocks(t.block_elements()), per_part = rows * values;
  std::vector<double> partial(size_t(std::min(wave, parts)) * per_part), sum(values, 0.0);
  for (uint64_t w0 = 0; w0 < parts; w0 += wave) {
    const int64_t n = int64_t(std::min(wave, parts - w0));
    // One part alone runs on this thread, so the merge inside may use them all (ties, slerp).
#pragma omp parallel for schedule(static) if (n > 1)
    for (int64_t i = 0; i < n; ++i) {
      Worker& w = workers[size_t(omp_get_thread_num())];
      const auto [first, size] = m.parts[w0 + uint64_t(i)];
      w.block.seek(first, size);
      body(w, std::span(partial).subspan(size_t(i) * per_part, per_part));
    }
    for (int64_t i = 0; i < n; ++i) {
      const size_t used = dot_blocks(size_t(m.parts[w0 + uint64_t(i)].second));
      for (size_t r = 0; r < used; ++r)
        for (size_t v = 0; v < values; ++v) sum[v] += partial[size_t(i) * per_part + r * values + v];
    }
  }
  for (double& v : sum) v *= m.scale;
  return sum;
}

// Adds to gram the inner products of the candidates' deltas (experts n.. of the grown gram) with
// the pool's and their own: one pass over every FFN tensor, no delta stored.
void measure(const FfnSource& source, const Pool& pool, const Pool& candidates, const ExpansionOptions& o,
             Gram& gram, Progress& progress) {
  const size_t n = pool.size(), values = candidates.size() * (n + 1);  // [candidate, pool member or itself]
  for (int l = 0; l < source.layers(); ++l)
    for (Role role : kFfnRoles) {
      const PoolTensor tensor(source, pool, l, role, o.merge, o.block_elements);
      const Measured m = measured_parts(tensor, o, l, role);
      const std::vector<double> dots = sum_over_parts(tensor, m, values, [&](Worker& w, std::span<double> partial) {
        const std::vector<std::span<const float>> others = w.pool_deltas(n);
        const std::span<float> child = w.room(w.child);
        for (size_t c = 0; c < candidates.size(); ++c) {
          w.block.child(candidates[c], child);
          delta_dot_blocks(child, w.block.base(), others, partial.subspan(c * (n + 1)), values);
        }
      });
      for (size_t c = 0; c < candidates.size(); ++c)
        for (size_t j = 0; j <= n; ++j) gram.add(l, n + c, j < n ? j : n + c, dots[c * (n + 1) + j]);
      progress.advance(1);
    }
}

// The K checkpoints' inner products: the pass before any round.
Gram checkpoint_gram(const FfnSource& source, const Pool& pool, const ExpansionOptions& o, Progress& progress) {
  const size_t k = pool.size(), values = k * (k + 1) / 2;  // (i, j <= i) at i(i + 1)/2 + j
  Gram gram(source.layers());
  gram.resize(k);
  for (int l = 0; l < source.layers(); ++l)
    for (Role role : kFfnRoles) {
      const PoolTensor tensor(source, pool, l, role, o.merge, o.block_elements);
      const Measured m = measured_parts(tensor, o, l, role);
      const std::vector<double> dots = sum_over_parts(tensor, m, values, [&](Worker& w, std::span<double> partial) {
        const std::vector<std::span<const float>> deltas = w.pool_deltas(k);
        for (size_t i = 0; i < k; ++i)
          delta_dot_blocks(w.block.expert(i), w.block.base(), std::span(deltas).first(i), partial.subspan(i * (i + 1) / 2), values);
      });
      for (size_t i = 0; i < k; ++i)
        for (size_t j = 0; j <= i; ++j) gram.add(l, i, j, dots[i * (i + 1) / 2 + j]);
      progress.advance(1);
    }
  return gram;
}

}  // namespace

Expansion expand_pool(const FfnSource& source, const ExpansionOptions& o) {
  if (o.experts < 1 || o.candidates < 1 || o.distant_pairs < 1)
    throw std::invalid_argument("expand_pool: experts, candidates and distant_pairs must be positive");
  if (o.block_elements == 0 || o.block_elements % kDotBlock)
    throw std::invalid_argument("expand_pool: block_elements must be a positive multiple of kDotBlock");
  const bool by_function = o.fitness == Fitness::Function;
  if (by_function && !o.seed_losses) throw std::invalid_argument("expand_pool: the fitness in function needs seed_losses");
  const int K = int(source.size());
  if (o.experts > K && K < 2) throw std::invalid_argument("expand_pool: growing the pool needs two checkpoints or more");
  const int rounds = std::max(0, o.experts - K);
  // In function the scoring of the seed data takes the time, so its progress is the one shown.
  Progress progress("expert search", uint64_t(1 + rounds) * uint64_t(source.layers()) * 3, "tensors", o.progress && !by_function);
  Progress scoring("expert search: scoring the seed data", by_function ? uint64_t(K + rounds * o.candidates) : 0, "experts",
                   o.progress && by_function);

  const uint64_t numel = source.tensor(0, 0, Role::Gate).numel(), sampled = measured_dot_blocks(numel, o);
  if (sampled < dot_blocks(size_t(numel)))
    spdlog::info("expert search: distances estimated on {} of the {} elements of each FFN tensor (seeded blocks)",
                 sampled * kDotBlock, numel);
  Expansion out;
  for (int k = 0; k < K; ++k) out.pool.push_back({k});
  Gram gram = checkpoint_gram(source, out.pool, o, progress);
  out.before = gram.matrix(o.distance);
  std::vector<std::vector<double>> losses;  // [pool member][seed sample], in function only
  if (by_function) {
    for (int k = 0; k < K; ++k, scoring.advance(1)) losses.push_back(o.seed_losses(out.pool, size_t(k)));
    out.function_before = function_distances(losses);
  }
  const auto& before = by_function ? out.function_before : out.before;  // what the search maximises
  if (o.experts <= K) {
    out.pool = choose_farthest(before, o.experts);
    out.after = submatrix(out.before, out.pool);
    if (by_function) out.function_after = submatrix(out.function_before, out.pool);
    progress.finish();
    scoring.finish();
    return out;
  }
  for (int round = 0; round < rounds; ++round) {
    const size_t n = out.pool.size();
    const Pool candidates = draw_candidates(by_function ? function_distances(losses) : gram.matrix(o.distance), o, round);
    Gram trial = gram;
    trial.resize(n + candidates.size());
    measure(source, out.pool, candidates, o, trial, progress);
    // The distances among the pool and the candidates: [n + candidates][n + candidates].
    std::vector<std::vector<double>> all;
    if (by_function) {
      std::vector<std::vector<double>> with = losses;
      for (const auto& c : candidates) {
        Pool grown = out.pool;
        grown.push_back(c);
        with.push_back(o.seed_losses(grown, n));
        scoring.advance(1);
      }
      all = function_distances(with);
      losses = std::move(with);  // the winner's row is kept below, the others dropped
    } else {
      all = trial.matrix(o.distance);
    }
    const auto [best, best_div] = best_candidate(all, n, candidates.size());
    // Keep the winner's row: move it to index n, then drop the other candidates.
    gram = trial.with_kept(n, n + best);
    if (by_function) {
      std::swap(losses[n], losses[n + best]);
      losses.resize(n + 1);
    }
    out.pool.push_back(candidates[best]);
    spdlog::info("expansion round {}/{}: expert {} = {}; pool diversity in {} mean {:.4f}, min {:.4f}", round + 1, rounds, n,
                 describe(candidates[best]), fitness_name(o.fitness), best_div.mean, best_div.min);
  }
  progress.finish();
  scoring.finish();
  out.after = gram.matrix(o.distance);
  if (by_function) out.function_after = function_distances(losses);
  return out;
}

}  // namespace upcycle::genetic
