#include "router/assign.hpp"

#include <cmath>
#include <limits>

#include "core/random.hpp"
#include "trainer/batches.hpp"

namespace upcycle::router {

ModelConfig dense_config(const ModelConfig& c, const std::string& name) {
  if (!c.is_moe()) throw std::invalid_argument("dense_config: not an MoE");
  nlohmann::ordered_json j = c.to_json();
  j["model_type"] = c.qk_norm()                     ? "qwen3"
                    : c.model_type == "qwen2_moe"     ? "qwen2"
                    : c.sliding_window                ? "mistral"
                                                      : "llama";
  j["intermediate_size"] = c.expert_intermediate_size();
  for (const char* key : {"num_local_experts", "num_experts_per_tok", "router_aux_loss_coef", "architectures", "num_experts",
                          "moe_intermediate_size", "shared_expert_intermediate_size", "norm_topk_prob", "decoder_sparse_step", "mlp_only_layers"})
    j.erase(key);
  return ModelConfig::from_json(j, name);
}

EngineSpec dense_model_with(const ModelConfig& c, const Weights<float>& w, std::vector<Ffn> ffn, std::string name) {
  return {dense_config(c, name), dense_weights_with(w, std::move(ffn)), name, {}};
}

EngineSpec expert_dense_model(const ModelConfig& c, const Weights<float>& w, int expert) {
  if (!c.is_moe() || expert < 0 || expert >= c.num_local_experts)
    throw std::invalid_argument("expert_dense_model: not an expert of an MoE model");
  const std::string name = "<expert " + std::to_string(expert) + "'s dense model>";
  return {dense_config(c, name), expert_dense_weights(w, expert), name, {}};
}

std::vector<double> seed_losses(Engine& dense, const TokenizedData& seed, int64_t seq_len, int64_t batch_tokens,
                                const std::function<void()>& progress) {
  std::vector<double> loss(seed.samples.size(), std::numeric_limits<double>::infinity());
  LossOptions per_sample;
  per_sample.per_sequence = true;
  for_each_micro_batch(seed, seq_len, batch_tokens, [&](const MicroBatch& mb) {
    const LossReport r = dense.loss(mb.batch, mb.targets, per_sample);
    for (size_t i = 0; i < mb.samples.size(); ++i) {
      if (r.sequence_tokens[i] > 0) loss[mb.samples[i]] = r.sequence_ce_sum[i] / double(r.sequence_tokens[i]);
      if (progress) progress();
    }
  });
  return loss;
}

Assignment assign_by_loss(int E, const ExpertEngines& dense, const TokenizedData& seed, int64_t seq_len,
                          int64_t batch_tokens, const std::function<void()>& progress) {
  const size_t S = seed.samples.size();
  Assignment a;
  a.loss.assign(S, std::vector<double>(size_t(E)));
  for (int e = 0; e < E; ++e) {
    const std::vector<double> loss = seed_losses(*dense(e), seed, seq_len, batch_tokens, progress);
    for (size_t s = 0; s < S; ++s) a.loss[s][size_t(e)] = loss[s];
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

std::vector<std::vector<double>> losses_by_expert(const Assignment& a) {
  std::vector<std::vector<double>> out(a.counts.size());
  for (const auto& loss : a.loss)
    for (size_t e = 0; e < out.size(); ++e) out[e].push_back(loss[e]);
  return out;
}

}  // namespace upcycle::router
