#include "genetic/search_steps.hpp"

#include <algorithm>

#include "core/random.hpp"

namespace upcycle::genetic {

Pool draw_candidates(const Distances& dist, const ExpansionOptions& o, int round) {
  std::vector<std::pair<int, int>> pairs;
  for (int i = 0; i < int(dist.size()); ++i)
    for (int j = i + 1; j < int(dist.size()); ++j) pairs.emplace_back(i, j);
  // Most distant first; ties by index so the order is fixed.
  std::stable_sort(pairs.begin(), pairs.end(),
                   [&](auto a, auto b) { return dist[size_t(a.first)][size_t(a.second)] > dist[size_t(b.first)][size_t(b.second)]; });
  const size_t choose_from =
      o.parents == ParentChoice::Distant ? std::min(pairs.size(), size_t(o.distant_pairs)) : pairs.size();
  Rng rng = Rng::stream(o.seed, "expansion round " + std::to_string(round));
  Pool out;
  for (int c = 0; c < o.candidates; ++c) {
    const auto [a, b] = pairs[rng.below(choose_from)];
    const double w = rng.uniform();
    out.push_back({-1, a, b, w, 1.0 - w, rng.next()});
  }
  return out;
}

Pool choose_farthest(const Distances& dist, int experts) {
  const size_t k = dist.size();
  std::vector<size_t> chosen;
  if (experts == 1 || k == 1) {
    chosen = {0};
  } else {
    size_t bi = 0, bj = 1;
    for (size_t i = 0; i < k; ++i)
      for (size_t j = i + 1; j < k; ++j)
        if (dist[i][j] > dist[bi][bj]) bi = i, bj = j;
    chosen = {bi, bj};
  }
  while (chosen.size() < size_t(experts)) {
    size_t best = k;
    double best_min = -1;
    for (size_t c = 0; c < k; ++c) {
      if (std::find(chosen.begin(), chosen.end(), c) != chosen.end()) continue;
      double m = 1e300;
      for (size_t s : chosen) m = std::min(m, dist[c][s]);
      if (m > best_min) best = c, best_min = m;
    }
    chosen.push_back(best);
  }
  std::sort(chosen.begin(), chosen.end());
  Pool pool;
  for (size_t c : chosen) pool.push_back({int(c)});
  return pool;
}

Distances submatrix(const Distances& m, const Pool& pool) {
  Distances out(pool.size(), std::vector<double>(pool.size()));
  for (size_t i = 0; i < pool.size(); ++i)
    for (size_t j = 0; j < pool.size(); ++j) out[i][j] = m[size_t(pool[i].checkpoint)][size_t(pool[j].checkpoint)];
  return out;
}

std::pair<size_t, Diversity> best_candidate(const Distances& all, size_t n, size_t candidates) {
  size_t best = 0;
  Diversity best_div;
  for (size_t c = 0; c < candidates; ++c) {
    std::vector<size_t> members(n);  // the pool's distances plus the candidate's own row
    for (size_t i = 0; i < n; ++i) members[i] = i;
    members.push_back(n + c);
    Distances m(n + 1, std::vector<double>(n + 1));
    for (size_t i = 0; i <= n; ++i)
      for (size_t j = 0; j <= n; ++j) m[i][j] = all[members[i]][members[j]];
    const Diversity d = diversity(m);
    if (c == 0 || d.score() > best_div.score()) best = c, best_div = d;
  }
  return {best, best_div};
}

}  // namespace upcycle::genetic
