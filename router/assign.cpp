#include "router/assign.hpp"

#include <cmath>
#include <limits>

#include "core/random.hpp"
#include "trainer/batches.hpp"

namespace upcycle::router {

EngineSpec expert_dense_model(const ModelConfig& c, const Weights<float>& w, int expert) {
  if (!c.is_moe() || expert < 0 || expert >= c.num_local_experts)
    throw std::invalid_argument("expert_dense_model: not an expert of an MoE model");
  nlohmann::ordered_json j = c.to_json();
  j["model_type"] = c.sliding_window ? "mistral" : "llama";
  for (const char* key : {"num_local_experts", "num_experts_per_tok", "router_aux_loss_coef", "architectures"}) j.erase(key);
  Weights<float> d;
  d.embedding = w.embedding;
  d.final_norm = w.final_norm;
  d.lm_head = w.lm_head;
  for (const LayerWeights<float>& l : w.layers) {
    LayerWeights<float> x = l;
    x.router.clear();
    x.gate = l.expert_gate[size_t(expert)];
    x.up = l.expert_up[size_t(expert)];
    x.down = l.expert_down[size_t(expert)];
    x.expert_gate.clear();
    x.expert_up.clear();
    x.expert_down.clear();
    d.layers.push_back(std::move(x));
  }
  const std::string name = "<expert " + std::to_string(expert) + "'s dense model>";
  return {ModelConfig::from_json(j, name), std::move(d), name, {}};
}

Assignment assign_by_loss(const ModelConfig& config, const Weights<float>& moe, EngineFactory make,
                          const TokenizedData& seed, int64_t seq_len, const std::function<void()>& progress) {
  const int E = int(config.num_local_experts);
  const size_t S = seed.samples.size();
  Assignment a;
  a.loss.assign(S, std::vector<double>(size_t(E), std::numeric_limits<double>::infinity()));
  for (int e = 0; e < E; ++e) {
    const auto dense = make(expert_dense_model(config, moe, e));
    for (size_t s = 0; s < S; ++s) {
      const size_t one[] = {s};
      const MicroBatch mb = make_micro_batch(seed, one, seq_len);
      if (mb.counted > 0) a.loss[s][size_t(e)] = dense->loss(mb.batch, mb.targets).ce();
      if (progress) progress();
    }
  }
  a.counts.assign(size_t(E), 0);
  for (size_t s = 0; s < S; ++s) {
    int best = 0;
    for (int e = 1; e < E; ++e)
      if (a.loss[s][size_t(e)] < a.loss[s][size_t(best)]) best = e;
    a.expert.push_back(best);
    ++a.counts[size_t(best)];
  }
  return a;
}

void assign_at_random(Assignment& a, uint64_t seed) {
  const size_t E = a.counts.size();
  Rng rng = Rng::stream(seed, "random seed assignment");
  a.counts.assign(E, 0);
  for (int32_t& e : a.expert) ++a.counts[size_t(e = int32_t(rng.below(E)))];
}

std::vector<std::vector<double>> loss_distances(const Assignment& a) {
  const size_t E = a.counts.size();
  std::vector<std::vector<double>> d(E, std::vector<double>(E, 0.0));
  for (size_t i = 0; i < E; ++i)
    for (size_t j = i + 1; j < E; ++j) {
      double sum = 0;
      int64_t n = 0;
      for (const auto& loss : a.loss)
        if (std::isfinite(loss[i]) && std::isfinite(loss[j])) sum += std::fabs(loss[i] - loss[j]), ++n;
      d[i][j] = d[j][i] = n ? sum / double(n) : 0.0;
    }
  return d;
}

}  // namespace upcycle::router
