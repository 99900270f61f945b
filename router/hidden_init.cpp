#include "router/hidden_init.hpp"

#include <cmath>
#include <stdexcept>

#include "trainer/batches.hpp"

namespace upcycle::router {

namespace {

// Σ of the router inputs over the tokens of samples, under `model`, in passes of batch_tokens: [L][H].
void accumulate(Engine& model, const TokenizedData& seed, const std::vector<size_t>& samples, int64_t seq_len,
                int64_t batch_tokens, std::vector<std::vector<double>>& sum) {
  const int64_t H = model.config().hidden_size;
  for_each_micro_batch(seed, samples, seq_len, batch_tokens, [&](const MicroBatch& mb) {
    const auto inputs = model.ffn_inputs(mb.batch);  // [L][N, H]
    for (size_t l = 0; l < inputs.size(); ++l)
      for (size_t i = 0; i < inputs[l].size(); ++i) sum[l][i % size_t(H)] += inputs[l][i];
  });
}

}  // namespace

std::vector<std::vector<float>> hidden_state_routers(const ModelConfig& c, const ExpertEngines& dense_model,
                                                     const TokenizedData& seed, const std::vector<int32_t>& assignment,
                                                     int64_t seq_len, int64_t batch_tokens) {
  const int64_t E = c.num_local_experts, H = c.hidden_size, L = c.num_hidden_layers;
  if (assignment.size() != seed.samples.size()) throw std::invalid_argument("hidden_state_routers: one expert per sample");
  std::vector<std::vector<float>> routers(size_t(L), std::vector<float>(size_t(E * H)));
  for (int64_t e = 0; e < E; ++e) {
    std::vector<size_t> mine;
    for (size_t s = 0; s < assignment.size(); ++s)
      if (assignment[s] == e) mine.push_back(s);
    if (mine.empty())
      for (size_t s = 0; s < seed.samples.size(); ++s) mine.push_back(s);
    const auto dense = dense_model(int(e));
    std::vector<std::vector<double>> sum(size_t(L), std::vector<double>(size_t(H), 0.0));
    accumulate(*dense, seed, mine, seq_len, batch_tokens, sum);  // the mean's direction is the sum's
    for (int64_t l = 0; l < L; ++l) {
      double norm = 0;
      for (double v : sum[size_t(l)]) norm += v * v;
      norm = std::sqrt(norm);
      for (int64_t h = 0; h < H; ++h)
        routers[size_t(l)][size_t(e * H + h)] = norm > 0 ? float(sum[size_t(l)][size_t(h)] / norm) : 0.0f;
    }
  }
  return routers;
}

}  // namespace upcycle::router
