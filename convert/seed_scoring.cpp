#include "convert/seed_scoring.hpp"

#include <algorithm>

#include "router/assign.hpp"

namespace upcycle {

namespace {

// The assembly of the K checkpoints, one expert each: the shared weights every pool gets.
std::unique_ptr<Checkpoint> checkpoints_moe(const pool::FfnSource& source, AssemblyOptions assembly) {
  pool::Pool checkpoints;
  for (size_t k = 0; k < source.size(); ++k) checkpoints.push_back({int(k)});
  assembly.top_k = std::min(assembly.top_k, int(source.size()));
  return assemble_moe(source, checkpoints, assembly);
}

}  // namespace

SeedScorer::SeedScorer(const pool::FfnSource& source, const AssemblyOptions& assembly, EngineFactory engine,
                       const TokenizedData& seed, int64_t seq_len, int64_t batch_tokens)
    : source_(source), child_merge_(assembly.child_merge), engine_(engine), seed_(seed), seq_len_(seq_len), batch_tokens_(batch_tokens) {
  const std::unique_ptr<Checkpoint> moe = checkpoints_moe(source, assembly);
  config_ = moe->config();
  shared_ = load_weights<float>(*moe);
  for (LayerWeights<float>& l : shared_.layers) {
    l.expert_gate.clear();
    l.expert_up.clear();
    l.expert_down.clear();
  }
}

std::vector<double> SeedScorer::operator()(const pool::Pool& pool, size_t e) const {
  std::vector<router::Ffn> ffn;
  for (int l = 0; l < source_.layers(); ++l) {
    const auto make = [&](Role role) { return pool::whole_expert(pool::PoolTensor(source_, pool, l, role, child_merge_), e); };
    ffn.push_back({make(Role::Gate), make(Role::Up), make(Role::Down)});
  }
  const auto dense = engine_(router::dense_model_with(config_, shared_, std::move(ffn), "<" + pool::describe(pool.at(e)) + ">"));
  return router::seed_losses(*dense, seed_, seq_len_, batch_tokens_);
}

}  // namespace upcycle
